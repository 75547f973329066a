// Winograd F(4x4, 3x3) transforms for a 3x3, stride-1, padding-1 convolution on channels-last
// (NHWC) fp32 tensors (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016). The convolution is  y = A^T [ (G g G^T) . (B^T d B) ] A  per 4x4 output tile; the
// 36 products over channels are one batched GEMM, which the caller runs (torch.bmm / MKL):
//
//   V[p][t][c] = (B^T d_t B)[p]   input transform   (wino_input_fwd)
//   M[p]       = V[p] @ U[p]      U[p][c][k] = (G g_kc G^T)[p], (36, C, K), from Python
//   y_t        = A^T M_t A        output transform  (wino_output_fwd)
//
// p = 6 * row + col indexes the 6x6 transform domain, t = (n * tiles_h + ty) * tiles_w + tx the
// tiles. Tile t reads input rows 4 ty - 1 ... 4 ty + 4 (zero outside the image) and writes
// output rows 4 ty ... 4 ty + 3 (clipped at the border). The backward passes are the exact
// adjoints of the two transforms (wino_output_bwd: gy -> dM; wino_input_bwd: dV -> dx), so
// autograd through the GEMM gives dx and dU, and dw follows from U's einsum.
//
// Every transform works on a block of channels at a time, innermost, so the compiler
// vectorises it (8 fp32 lanes with AVX2).
#include <algorithm>
#include <cstring>

#include "auggen/cpu_kernels.h"
#include "parallel.h"

namespace auggen {
namespace AUGGEN_CPU_NS {
namespace {

#define AUGGEN_INLINE inline __attribute__((always_inline))

constexpr int kCB = 32;  // channels per block: 6 x 6 x 32 floats = 4.5 KB of scratch

// A block of tiles [t0, t1) of an (n, h, w, c) image batch; its transform-domain matrix is
// (36, t1 - t0, c), row t - t0.
struct Tile {
  int64_t n, ty, tx;  // image, tile row, tile column
};

struct Geometry {
  int64_t n, h, w, c, th, tw, t0, t1;
  int64_t tiles() const { return t1 - t0; }
  Tile at(int64_t t) const {  // tile t of the block
    const int64_t tg = t0 + t;
    return {tg / (th * tw), tg / tw % th, tg % tw};
  }
};

// out[i] = (B^T in)[i] for six rows of cb channels; `in` and `out` rows are kCB apart.
AUGGEN_INLINE void bt6(const float* in, int64_t is, float* out, int64_t os, int cb) {
#pragma omp simd
  for (int c = 0; c < cb; ++c) {
    const float d0 = in[c], d1 = in[is + c], d2 = in[2 * is + c], d3 = in[3 * is + c],
                d4 = in[4 * is + c], d5 = in[5 * is + c];
    out[c] = 4.f * d0 - 5.f * d2 + d4;
    out[os + c] = -4.f * (d1 + d2) + d3 + d4;
    out[2 * os + c] = 4.f * (d1 - d2) - d3 + d4;
    out[3 * os + c] = 2.f * (d3 - d1) - d2 + d4;
    out[4 * os + c] = 2.f * (d1 - d3) - d2 + d4;
    out[5 * os + c] = 4.f * d1 - 5.f * d3 + d5;
  }
}

// out[a] = (B in)[a], the adjoint of bt6.
AUGGEN_INLINE void b6(const float* in, int64_t is, float* out, int64_t os, int cb) {
#pragma omp simd
  for (int c = 0; c < cb; ++c) {
    const float v0 = in[c], v1 = in[is + c], v2 = in[2 * is + c], v3 = in[3 * is + c],
                v4 = in[4 * is + c], v5 = in[5 * is + c];
    out[c] = 4.f * v0;
    out[os + c] = 4.f * (v2 - v1) + 2.f * (v4 - v3) + 4.f * v5;
    out[2 * os + c] = -5.f * v0 - 4.f * (v1 + v2) - v3 - v4;
    out[3 * os + c] = v1 - v2 + 2.f * (v3 - v4) - 5.f * v5;
    out[4 * os + c] = v0 + v1 + v2 + v3 + v4;
    out[5 * os + c] = v5;
  }
}

// out[i] = (A^T in)[i], four rows from six.
AUGGEN_INLINE void at6(const float* in, int64_t is, float* out, int64_t os, int cb) {
#pragma omp simd
  for (int c = 0; c < cb; ++c) {
    const float m0 = in[c], m1 = in[is + c], m2 = in[2 * is + c], m3 = in[3 * is + c],
                m4 = in[4 * is + c], m5 = in[5 * is + c];
    const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    out[c] = m0 + s12 + s34;
    out[os + c] = d12 + 2.f * d34;
    out[2 * os + c] = s12 + 4.f * s34;
    out[3 * os + c] = d12 + 8.f * d34 + m5;
  }
}

// out[i] = (A in)[i], six rows from four: the adjoint of at6.
AUGGEN_INLINE void a4(const float* in, int64_t is, float* out, int64_t os, int cb) {
#pragma omp simd
  for (int c = 0; c < cb; ++c) {
    const float g0 = in[c], g1 = in[is + c], g2 = in[2 * is + c], g3 = in[3 * is + c];
    out[c] = g0;
    out[os + c] = g0 + g1 + g2 + g3;
    out[2 * os + c] = g0 - g1 + g2 - g3;
    out[3 * os + c] = g0 + 2.f * g1 + 4.f * g2 + 8.f * g3;
    out[4 * os + c] = g0 - 2.f * g1 + 4.f * g2 - 8.f * g3;
    out[5 * os + c] = g3;
  }
}

// Applies the 1-D transform f (IN -> OUT points) along the columns, then the rows, of the
// IN x IN block in d (row-major, kCB floats apart); the OUT x OUT result ends in d.
template <int IN, int OUT, typename F>
AUGGEN_INLINE void transform2d(F f, float* d, float* r, int cb) {
  for (int col = 0; col < IN; ++col) f(d + col * kCB, IN * kCB, r + col * kCB, IN * kCB, cb);
  for (int row = 0; row < OUT; ++row) f(r + row * IN * kCB, kCB, d + row * OUT * kCB, kCB, cb);
}

// Copies cb floats (CB when the block width is a compile-time constant, else cb).
template <int CB>
AUGGEN_INLINE void copy(float* __restrict dst, const float* __restrict src, int cb) {
  std::memcpy(dst, src, sizeof(float) * (CB ? CB : cb));
}

// d[(a * S + b) * kCB ...] = pixel (y0 + a, x0 + b) of image n, channels [c0, c0 + cb); zero
// outside the image.
template <int CB, int S>
AUGGEN_INLINE void load_patch(const float* img, const Geometry& g, int64_t n, int64_t y0,
                              int64_t x0, int64_t c0, int cb, float* d) {
  for (int a = 0; a < S; ++a)
    for (int b = 0; b < S; ++b) {
      const int64_t iy = y0 + a, ix = x0 + b;
      float* dst = d + (a * S + b) * kCB;
      if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w)
        std::memset(dst, 0, sizeof(float) * cb);
      else
        copy<CB>(dst, img + ((n * g.h + iy) * g.w + ix) * g.c + c0, cb);
    }
}

// Tile t's 36 rows of a (36, tiles, c) matrix <-> d.
template <int CB>
AUGGEN_INLINE void load_rows(const float* mat, const Geometry& g, int64_t t, int64_t c0, int cb,
                             float* d) {
  for (int p = 0; p < 36; ++p) copy<CB>(d + p * kCB, mat + (p * g.tiles() + t) * g.c + c0, cb);
}

template <int CB>
AUGGEN_INLINE void store_rows(float* mat, const Geometry& g, int64_t t, int64_t c0, int cb,
                              const float* d) {
  for (int p = 0; p < 36; ++p) copy<CB>(mat + (p * g.tiles() + t) * g.c + c0, d + p * kCB, cb);
}

// One tile and one block of channels [c0, c0 + cb) of each transform. CB > 0 is the full block
// width as a constant (the loops unroll and the copies become vector moves); CB = 0 handles
// the last, narrower block. d and r are scratch of 36 * kCB floats.

template <int CB>
void tile_input_fwd(const float* x, float* v, const Geometry& g, int64_t t, int64_t c0, int cb,
                    float* d, float* r) {
  const auto [n, ty, tx] = g.at(t);
  cb = CB ? CB : cb;
  load_patch<CB, 6>(x, g, n, 4 * ty - 1, 4 * tx - 1, c0, cb, d);
  transform2d<6, 6>(bt6, d, r, cb);
  store_rows<CB>(v, g, t, c0, cb, d);
}

template <int CB>
void tile_input_bwd(const float* dv, float* dx, const Geometry& g, int64_t t, int64_t c0, int cb,
                    float* d, float* r) {
  const auto [n, ty, tx] = g.at(t);
  cb = CB ? CB : cb;
  load_rows<CB>(dv, g, t, c0, cb, d);
  transform2d<6, 6>(b6, d, r, cb);
  for (int a = 0; a < 6; ++a) {  // the adjoint of load_patch: add, skipping the padding
    const int64_t iy = 4 * ty + a - 1;
    if (iy < 0 || iy >= g.h) continue;
    for (int b = 0; b < 6; ++b) {
      const int64_t ix = 4 * tx + b - 1;
      if (ix < 0 || ix >= g.w) continue;
      float* __restrict dst = dx + ((n * g.h + iy) * g.w + ix) * g.c + c0;
      const float* __restrict src = d + (a * 6 + b) * kCB;
#pragma omp simd
      for (int c = 0; c < cb; ++c) dst[c] += src[c];
    }
  }
}

template <int CB>
void tile_output_fwd(const float* m, float* y, const Geometry& g, int64_t t, int64_t c0, int cb,
                     float* d, float* r) {
  const auto [n, ty, tx] = g.at(t);
  cb = CB ? CB : cb;
  load_rows<CB>(m, g, t, c0, cb, d);
  transform2d<6, 4>(at6, d, r, cb);
  for (int i = 0; i < 4 && 4 * ty + i < g.h; ++i)  // clipped at the image's border
    for (int j = 0; j < 4 && 4 * tx + j < g.w; ++j)
      copy<CB>(y + ((n * g.h + 4 * ty + i) * g.w + 4 * tx + j) * g.c + c0, d + (i * 4 + j) * kCB,
               cb);
}

template <int CB>
void tile_output_bwd(const float* gy, float* dm, const Geometry& g, int64_t t, int64_t c0, int cb,
                     float* d, float* r) {
  const auto [n, ty, tx] = g.at(t);
  cb = CB ? CB : cb;
  load_patch<CB, 4>(gy, g, n, 4 * ty, 4 * tx, c0, cb, d);
  transform2d<4, 6>(a4, d, r, cb);
  store_rows<CB>(dm, g, t, c0, cb, d);
}

using TileFn = void (*)(const float*, float*, const Geometry&, int64_t, int64_t, int, float*,
                        float*);

// Runs a tile transform over tiles [lo, hi) of the block, every channel block.
AUGGEN_INLINE void run_tiles(TileFn full, TileFn rest, const float* in, float* out,
                             const Geometry& g, int64_t lo, int64_t hi) {
  alignas(64) float d[36 * kCB], r[36 * kCB];
  for (int64_t t = lo; t < hi; ++t)
    for (int64_t c0 = 0; c0 < g.c; c0 += kCB) {
      if (g.c - c0 >= kCB)
        full(in, out, g, t, c0, kCB, d, r);
      else
        rest(in, out, g, t, c0, static_cast<int>(g.c - c0), d, r);
    }
}

// Runs a tile transform over every tile of the block, in parallel tasks of about kGrain
// floats of transform-domain data each.
void each_tile(TileFn full, TileFn rest, const float* in, float* out, const Geometry& g) {
  const int64_t grain = std::max<int64_t>(1, kGrain / (36 * g.c));
  parallel_chunks(g.tiles(), grain,
                  [&](int64_t lo, int64_t hi) { run_tiles(full, rest, in, out, g, lo, hi); });
}

Geometry geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t t0, int64_t t1) {
  return {n, h, w, c, (h + 3) / 4, (w + 3) / 4, t0, t1};
}

}  // namespace

void wino_input_fwd(const float* __restrict x, float* __restrict v, int64_t n, int64_t h,
                    int64_t w, int64_t c, int64_t t0, int64_t t1) {
  each_tile(tile_input_fwd<kCB>, tile_input_fwd<0>, x, v, geometry(n, h, w, c, t0, t1));
}

void wino_input_bwd(const float* __restrict dv, float* __restrict dx, int64_t n, int64_t h,
                    int64_t w, int64_t c, int64_t t0, int64_t t1) {
  // Adds each tile's B dV B^T into dx (which the caller zeroes once). Tiles overlap their
  // neighbours by two rows/columns: a task owns whole tile rows, and rows of one parity run
  // together (rows two apart never overlap), so no two threads add to one pixel.
  const Geometry g = geometry(n, h, w, c, t0, t1);
  const int64_t r_lo = g.t0 / g.tw, r_hi = (g.t1 + g.tw - 1) / g.tw;
  for (int parity = 0; parity < 2; ++parity) {
    const int64_t first = r_lo + ((r_lo & 1) != parity), count = (r_hi - first + 1) / 2;
    parallel_chunks(count, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t row = first + 2 * lo; row < first + 2 * hi; row += 2) {
        const int64_t tlo = std::max(row * g.tw, g.t0), thi = std::min((row + 1) * g.tw, g.t1);
        run_tiles(tile_input_bwd<kCB>, tile_input_bwd<0>, dv, dx, g, tlo - g.t0, thi - g.t0);
      }
    });
  }
}

void wino_output_fwd(const float* __restrict m, float* __restrict y, int64_t n, int64_t h,
                     int64_t w, int64_t k, int64_t t0, int64_t t1) {
  each_tile(tile_output_fwd<kCB>, tile_output_fwd<0>, m, y, geometry(n, h, w, k, t0, t1));
}

void wino_output_bwd(const float* __restrict gy, float* __restrict dm, int64_t n, int64_t h,
                     int64_t w, int64_t k, int64_t t0, int64_t t1) {
  each_tile(tile_output_bwd<kCB>, tile_output_bwd<0>, gy, dm, geometry(n, h, w, k, t0, t1));
}

}  // namespace AUGGEN_CPU_NS
}  // namespace auggen
