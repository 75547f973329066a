// pixel_norm (EDM2 normalize along one dim) and its fused mp_silu epilogue, forward and
// backward, on the canonical (outer, C, inner) view. Norms accumulate in fp32.
//   inner == 1: one task per block of rows, each row contiguous over C.
//   inner  > 1: one task per (outer, tile of kTile columns); per-column sums live in a
//               small fp32 array, so every pass streams contiguous rows of the tile.
#include "auggen/cpu_kernels.h"
#include "auggen/half.h"
#include "parallel.h"

namespace auggen {
namespace AUGGEN_CPU_NS {
namespace {

constexpr int64_t kTile = 256;

// Gradient seen by n = pixel_norm(x): gy + gz * mp_silu'(n) (either may be absent).
template <typename T>
inline float grad_n(const T* gy, const T* gz, int64_t k, float n) {
  float g = gy ? to_float(gy[k]) : 0.0f;
  if (gz) g += to_float(gz[k]) * mp_silu_grad(n);
  return g;
}

template <typename T>
void fwd_rows(const T* __restrict x, T* __restrict y, T* __restrict z, int64_t outer, int64_t C,
              float eps) {
  parallel_chunks(outer, kGrain / C + 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * C;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t c = 0; c < C; ++c) ss += to_float(xr[c]) * to_float(xr[c]);
      const float s = pixel_norm_scale(ss, C, eps);
      T* yr = y + r * C;
      if (z) {
        T* zr = z + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float n = to_float(xr[c]) * s;
          yr[c] = from_float<T>(n);
          zr[c] = from_float<T>(mp_silu_value(n));
        }
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yr[c] = from_float<T>(to_float(xr[c]) * s);
      }
    }
  });
}

template <typename T>
void fwd_tiles(const T* __restrict x, T* __restrict y, T* __restrict z, int64_t outer, int64_t C,
               int64_t inner, float eps) {
  const int64_t tiles = (inner + kTile - 1) / kTile;
  parallel_chunks(outer * tiles, 1, [&](int64_t b, int64_t e) {
    float acc[kTile];
    for (int64_t task = b; task < e; ++task) {
      const int64_t o = task / tiles, i0 = (task % tiles) * kTile;
      const int64_t w = std::min(kTile, inner - i0);
      const int64_t base = o * C * inner + i0;
      for (int64_t i = 0; i < w; ++i) acc[i] = 0.0f;
      for (int64_t c = 0; c < C; ++c) {
        const T* xr = x + base + c * inner;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) acc[i] += to_float(xr[i]) * to_float(xr[i]);
      }
      for (int64_t i = 0; i < w; ++i) acc[i] = pixel_norm_scale(acc[i], C, eps);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = base + c * inner;
        if (z) {
#pragma omp simd
          for (int64_t i = 0; i < w; ++i) {
            const float n = to_float(x[off + i]) * acc[i];
            y[off + i] = from_float<T>(n);
            z[off + i] = from_float<T>(mp_silu_value(n));
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < w; ++i) y[off + i] = from_float<T>(to_float(x[off + i]) * acc[i]);
        }
      }
    }
  });
}

template <typename T>
void bwd_rows(const T* __restrict x, const T* gy, const T* gz, T* __restrict gx, int64_t outer,
              int64_t C, float eps) {
  parallel_chunks(outer, kGrain / C + 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t base = r * C;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t c = 0; c < C; ++c) ss += to_float(x[base + c]) * to_float(x[base + c]);
      const float s = pixel_norm_scale(ss, C, eps);
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) {
        const float xv = to_float(x[base + c]);
        dot += grad_n(gy, gz, base + c, xv * s) * xv;
      }
      const float k = pixel_norm_grad_coeff(ss, dot, C, eps);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float xv = to_float(x[base + c]);
        gx[base + c] = from_float<T>(s * grad_n(gy, gz, base + c, xv * s) - k * xv);
      }
    }
  });
}

template <typename T>
void bwd_tiles(const T* __restrict x, const T* gy, const T* gz, T* __restrict gx, int64_t outer,
               int64_t C, int64_t inner, float eps) {
  const int64_t tiles = (inner + kTile - 1) / kTile;
  parallel_chunks(outer * tiles, 1, [&](int64_t b, int64_t e) {
    float ss[kTile], dot[kTile], sc[kTile];
    for (int64_t task = b; task < e; ++task) {
      const int64_t o = task / tiles, i0 = (task % tiles) * kTile;
      const int64_t w = std::min(kTile, inner - i0);
      const int64_t base = o * C * inner + i0;
      for (int64_t i = 0; i < w; ++i) ss[i] = dot[i] = 0.0f;
      for (int64_t c = 0; c < C; ++c) {
        const T* xr = x + base + c * inner;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) ss[i] += to_float(xr[i]) * to_float(xr[i]);
      }
      for (int64_t i = 0; i < w; ++i) sc[i] = pixel_norm_scale(ss[i], C, eps);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = base + c * inner;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) {
          const float xv = to_float(x[off + i]);
          dot[i] += grad_n(gy, gz, off + i, xv * sc[i]) * xv;
        }
      }
      for (int64_t i = 0; i < w; ++i) dot[i] = pixel_norm_grad_coeff(ss[i], dot[i], C, eps);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = base + c * inner;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) {
          const float xv = to_float(x[off + i]);
          gx[off + i] = from_float<T>(sc[i] * grad_n(gy, gz, off + i, xv * sc[i]) - dot[i] * xv);
        }
      }
    }
  });
}

}  // namespace

void pixel_norm_fwd(int dtype, const void* x, void* y, void* z, int64_t outer, int64_t c,
                    int64_t inner, float eps) {
  AUGGEN_DISPATCH_DTYPE(dtype, {
    auto xp = static_cast<const scalar_t*>(x);
    auto yp = static_cast<scalar_t*>(y);
    auto zp = static_cast<scalar_t*>(z);
    if (inner == 1)
      fwd_rows(xp, yp, zp, outer, c, eps);
    else
      fwd_tiles(xp, yp, zp, outer, c, inner, eps);
  });
}

void pixel_norm_bwd(int dtype, const void* x, const void* gy, const void* gz, void* gx,
                    int64_t outer, int64_t c, int64_t inner, float eps) {
  AUGGEN_DISPATCH_DTYPE(dtype, {
    auto xp = static_cast<const scalar_t*>(x);
    auto gyp = static_cast<const scalar_t*>(gy);
    auto gzp = static_cast<const scalar_t*>(gz);
    auto gxp = static_cast<scalar_t*>(gx);
    if (inner == 1)
      bwd_rows(xp, gyp, gzp, gxp, outer, c, eps);
    else
      bwd_tiles(xp, gyp, gzp, gxp, outer, c, inner, eps);
  });
}

}  // namespace AUGGEN_CPU_NS
}  // namespace auggen
