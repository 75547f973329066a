// pixel_norm (EDM2 normalize along one dim) and its fused mp_silu epilogue, forward and
// backward, on the canonical (outer, C, inner) view. Norms accumulate in fp32.
//   inner == 1: one task per block of rows, each row contiguous over C.
//   inner  > 1: one task per (outer, tile of kTile columns); per-column sums live in a
//               small fp32 array, so every pass streams contiguous rows of the tile.
// Backward: dx = s g - k x with g = dy + dz * mp_silu'(n) (pixel_norm_grad_coeff gives k).
// The optional outputs / gradients are template flags so the inner loops stay branch-free.
#include "auggen/cpu_kernels.h"
#include "auggen/half.h"
#include "parallel.h"

namespace auggen {
namespace AUGGEN_CPU_NS {
namespace {

constexpr int64_t kTile = 256;

template <typename T, bool GY, bool GZ>
inline float grad_n(const T* __restrict gy, const T* __restrict gz, int64_t k, float n) {
  float g = 0.0f;
  if constexpr (GY) g += to_float(gy[k]);
  if constexpr (GZ) g += to_float(gz[k]) * mp_silu_grad(n);
  return g;
}

// One row of C contiguous elements.
template <typename T, bool Z>
void fwd_row(const T* __restrict x, T* __restrict y, T* __restrict z, int64_t C, float eps) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t c = 0; c < C; ++c) ss += to_float(x[c]) * to_float(x[c]);
  const float s = pixel_norm_scale(ss, C, eps);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const float n = to_float(x[c]) * s;
    y[c] = from_float<T>(n);
    if constexpr (Z) z[c] = from_float<T>(mp_silu_value(n));
  }
}

// A tile of w <= kTile columns; element (c, i) at c * inner + i from the tile start.
template <typename T, bool Z>
void fwd_tile(const T* __restrict x, T* __restrict y, T* __restrict z, int64_t C, int64_t inner,
              int64_t w, float eps) {
  float sc[kTile];
  for (int64_t i = 0; i < w; ++i) sc[i] = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict xr = x + c * inner;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) sc[i] += to_float(xr[i]) * to_float(xr[i]);
  }
  for (int64_t i = 0; i < w; ++i) sc[i] = pixel_norm_scale(sc[i], C, eps);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t off = c * inner;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const float n = to_float(x[off + i]) * sc[i];
      y[off + i] = from_float<T>(n);
      if constexpr (Z) z[off + i] = from_float<T>(mp_silu_value(n));
    }
  }
}

template <typename T, bool GY, bool GZ>
void bwd_row(const T* __restrict x, const T* __restrict gy, const T* __restrict gz,
             T* __restrict gx, int64_t C, float eps) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t c = 0; c < C; ++c) ss += to_float(x[c]) * to_float(x[c]);
  const float s = pixel_norm_scale(ss, C, eps);
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t c = 0; c < C; ++c) {
    const float xv = to_float(x[c]);
    dot += grad_n<T, GY, GZ>(gy, gz, c, xv * s) * xv;
  }
  const float k = pixel_norm_grad_coeff(ss, dot, C, eps);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const float xv = to_float(x[c]);
    gx[c] = from_float<T>(s * grad_n<T, GY, GZ>(gy, gz, c, xv * s) - k * xv);
  }
}

template <typename T, bool GY, bool GZ>
void bwd_tile(const T* __restrict x, const T* __restrict gy, const T* __restrict gz,
              T* __restrict gx, int64_t C, int64_t inner, int64_t w, float eps) {
  float ss[kTile], dot[kTile], sc[kTile];
  for (int64_t i = 0; i < w; ++i) ss[i] = dot[i] = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict xr = x + c * inner;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) ss[i] += to_float(xr[i]) * to_float(xr[i]);
  }
  for (int64_t i = 0; i < w; ++i) sc[i] = pixel_norm_scale(ss[i], C, eps);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t off = c * inner;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const float xv = to_float(x[off + i]);
      dot[i] += grad_n<T, GY, GZ>(gy, gz, off + i, xv * sc[i]) * xv;
    }
  }
  for (int64_t i = 0; i < w; ++i) dot[i] = pixel_norm_grad_coeff(ss[i], dot[i], C, eps);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t off = c * inner;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const float xv = to_float(x[off + i]);
      const float g = grad_n<T, GY, GZ>(gy, gz, off + i, xv * sc[i]);
      gx[off + i] = from_float<T>(sc[i] * g - dot[i] * xv);
    }
  }
}

// Runs row(base, ...) or tile(base, w, ...) over the (outer, C, inner) view in parallel.
template <typename RowFn, typename TileFn>
void for_each_slab(int64_t outer, int64_t C, int64_t inner, RowFn row, TileFn tile) {
  if (inner == 1) {
    parallel_chunks(outer, kGrain / C + 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) row(r * C);
    });
    return;
  }
  const int64_t tiles = (inner + kTile - 1) / kTile;
  parallel_chunks(outer * tiles, std::max<int64_t>(1, kGrain / (C * kTile)), [&](int64_t b,
                                                                               int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t o = task / tiles, i0 = (task % tiles) * kTile;
      tile(o * C * inner + i0, std::min(kTile, inner - i0));
    }
  });
}

template <typename T, bool Z>
void fwd_t(const T* x, T* y, T* z, int64_t outer, int64_t C, int64_t inner, float eps) {
  for_each_slab(
      outer, C, inner,
      [&](int64_t base) { fwd_row<T, Z>(x + base, y + base, z + base, C, eps); },
      [&](int64_t base, int64_t w) {
        fwd_tile<T, Z>(x + base, y + base, z + base, C, inner, w, eps);
      });
}

template <typename T, bool GY, bool GZ>
void bwd_t(const T* x, const T* gy, const T* gz, T* gx, int64_t outer, int64_t C, int64_t inner,
           float eps) {
  for_each_slab(
      outer, C, inner,
      [&](int64_t base) { bwd_row<T, GY, GZ>(x + base, gy + base, gz + base, gx + base, C, eps); },
      [&](int64_t base, int64_t w) {
        bwd_tile<T, GY, GZ>(x + base, gy + base, gz + base, gx + base, C, inner, w, eps);
      });
}

}  // namespace

void pixel_norm_fwd(int dtype, const void* x, void* y, void* z, int64_t outer, int64_t c,
                    int64_t inner, float eps) {
  AUGGEN_DISPATCH_DTYPE(dtype, {
    auto xp = static_cast<const scalar_t*>(x);
    auto yp = static_cast<scalar_t*>(y);
    auto zp = static_cast<scalar_t*>(z);
    if (zp)
      fwd_t<scalar_t, true>(xp, yp, zp, outer, c, inner, eps);
    else
      fwd_t<scalar_t, false>(xp, yp, zp, outer, c, inner, eps);
  });
}

void pixel_norm_bwd(int dtype, const void* x, const void* gy, const void* gz, void* gx,
                    int64_t outer, int64_t c, int64_t inner, float eps) {
  AUGGEN_DISPATCH_DTYPE(dtype, {
    auto xp = static_cast<const scalar_t*>(x);
    auto gyp = static_cast<const scalar_t*>(gy);
    auto gzp = static_cast<const scalar_t*>(gz);
    auto gxp = static_cast<scalar_t*>(gx);
    if (gyp && gzp)
      bwd_t<scalar_t, true, true>(xp, gyp, gzp, gxp, outer, c, inner, eps);
    else if (gyp)
      bwd_t<scalar_t, true, false>(xp, gyp, gzp, gxp, outer, c, inner, eps);
    else if (gzp)
      bwd_t<scalar_t, false, true>(xp, gyp, gzp, gxp, outer, c, inner, eps);
    else
      bwd_t<scalar_t, false, false>(xp, gyp, gzp, gxp, outer, c, inner, eps);
  });
}

}  // namespace AUGGEN_CPU_NS
}  // namespace auggen
