// Elementwise kernels: mp_silu and mp_sum (optionally clamped), forward and backward.
// One pass over memory, fp32 math, 16-bit types converted on load/store.
#include "auggen/cpu_kernels.h"
#include "auggen/half.h"
#include "parallel.h"

namespace auggen {
namespace AUGGEN_CPU_NS {
namespace {

template <typename T>
void mp_silu_fwd_t(const T* __restrict x, T* __restrict y, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) y[i] = from_float<T>(mp_silu_value(to_float(x[i])));
  });
}

template <typename T>
void mp_silu_bwd_t(const T* __restrict g, const T* __restrict x, T* __restrict gx, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i)
      gx[i] = from_float<T>(to_float(g[i]) * mp_silu_grad(to_float(x[i])));
  });
}

template <typename T>
void mp_sum_fwd_t(const T* __restrict a, const T* __restrict b, T* __restrict y, int64_t n,
                  float t, bool clamp, float clip) {
  float ca, cb;
  mp_sum_coeffs(t, &ca, &cb);
  parallel_chunks(n, kGrain, [&](int64_t lo, int64_t hi) {
    if (clamp) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i)
        y[i] = from_float<T>(clamp_keep_nan(ca * to_float(a[i]) + cb * to_float(b[i]), clip));
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i)
        y[i] = from_float<T>(ca * to_float(a[i]) + cb * to_float(b[i]));
    }
  });
}

template <typename T>
void mp_sum_bwd_t(const T* __restrict g, const T* __restrict a, const T* __restrict b,
                  T* __restrict ga, T* __restrict gb, int64_t n, float t, bool clamp, float clip) {
  float ca, cb;
  mp_sum_coeffs(t, &ca, &cb);
  parallel_chunks(n, kGrain, [&](int64_t lo, int64_t hi) {
    if (clamp) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) {
        const float v = ca * to_float(a[i]) + cb * to_float(b[i]);
        const float gv = to_float(g[i]) * clamp_grad_mask(v, clip);
        ga[i] = from_float<T>(ca * gv);
        gb[i] = from_float<T>(cb * gv);
      }
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) {
        const float gv = to_float(g[i]);
        ga[i] = from_float<T>(ca * gv);
        gb[i] = from_float<T>(cb * gv);
      }
    }
  });
}

}  // namespace

void mp_silu_fwd(int dtype, const void* x, void* y, int64_t n) {
  AUGGEN_DISPATCH_DTYPE(dtype, mp_silu_fwd_t(static_cast<const scalar_t*>(x),
                                             static_cast<scalar_t*>(y), n));
}

void mp_silu_bwd(int dtype, const void* g, const void* x, void* gx, int64_t n) {
  AUGGEN_DISPATCH_DTYPE(dtype, mp_silu_bwd_t(static_cast<const scalar_t*>(g),
                                             static_cast<const scalar_t*>(x),
                                             static_cast<scalar_t*>(gx), n));
}

void mp_sum_fwd(int dtype, const void* a, const void* b, void* y, int64_t n, float t, bool clamp,
                float clip) {
  AUGGEN_DISPATCH_DTYPE(dtype, mp_sum_fwd_t(static_cast<const scalar_t*>(a),
                                            static_cast<const scalar_t*>(b),
                                            static_cast<scalar_t*>(y), n, t, clamp, clip));
}

void mp_sum_bwd(int dtype, const void* g, const void* a, const void* b, void* ga, void* gb,
                int64_t n, float t, bool clamp, float clip) {
  AUGGEN_DISPATCH_DTYPE(
      dtype, mp_sum_bwd_t(static_cast<const scalar_t*>(g), static_cast<const scalar_t*>(a),
                          static_cast<const scalar_t*>(b), static_cast<scalar_t*>(ga),
                          static_cast<scalar_t*>(gb), n, t, clamp, clip));
}

}  // namespace AUGGEN_CPU_NS
}  // namespace auggen
