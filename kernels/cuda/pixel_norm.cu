// CUDA kernels: pixel_norm (+ fused mp_silu), forward and backward, on the (outer, C, inner)
// view. inner == 1: one warp per contiguous row (coalesced over C, shuffle reduction).
// inner > 1: one thread per (o, i) column, adjacent threads read adjacent i (coalesced).
// Backward: dx = s g - k x, g = dn + ds * mp_silu'(n), k from pixel_norm_grad_coeff.
#include "common.cuh"

namespace auggen {
namespace cuda {
namespace {

constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ float grad_n(const T* gy, const T* gz, int64_t k, float n) {
  float g = gy ? to_float(gy[k]) : 0.0f;
  if (gz) g += to_float(gz[k]) * mp_silu_grad(n);
  return g;
}

// Sum of squares of one row, reduced over the warp (every lane gets the total).
template <typename T>
__device__ __forceinline__ float row_sumsq(const T* x, int64_t base, int64_t C, int lane) {
  float ss = 0.0f;
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_float(x[base + c]);
    ss += v * v;
  }
  return warp_sum(ss);
}

// Sum of squares of one strided column x[base + c * inner], c < C.
template <typename T>
__device__ __forceinline__ float col_sumsq(const T* x, int64_t base, int64_t C, int64_t inner) {
  float ss = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const float v = to_float(x[base + c * inner]);
    ss += v * v;
  }
  return ss;
}

template <typename T>
__global__ void fwd_rows_k(const T* x, T* y, T* z, int64_t rows, int64_t C, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t base = r * C;
  const float s = pixel_norm_scale(row_sumsq(x, base, C, lane), C, eps);
  for (int64_t c = lane; c < C; c += 32) {
    const float n = to_float(x[base + c]) * s;
    y[base + c] = from_float<T>(n);
    if (z) z[base + c] = from_float<T>(mp_silu_value(n));
  }
}

template <typename T>
__global__ void fwd_cols_k(const T* x, T* y, T* z, int64_t outer, int64_t C, int64_t inner,
                           float eps) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= outer * inner) return;
  const int64_t base = (col / inner) * C * inner + col % inner;
  const float ss = col_sumsq(x, base, C, inner);
  const float s = pixel_norm_scale(ss, C, eps);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t k = base + c * inner;
    const float n = to_float(x[k]) * s;
    y[k] = from_float<T>(n);
    if (z) z[k] = from_float<T>(mp_silu_value(n));
  }
}

template <typename T>
__global__ void bwd_rows_k(const T* x, const T* gy, const T* gz, T* gx, int64_t rows, int64_t C,
                           float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t base = r * C;
  const float ss = row_sumsq(x, base, C, lane);
  const float s = pixel_norm_scale(ss, C, eps);
  float dot = 0.0f;
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_float(x[base + c]);
    dot += grad_n(gy, gz, base + c, v * s) * v;
  }
  const float k = pixel_norm_grad_coeff(ss, warp_sum(dot), C, eps);
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_float(x[base + c]);
    gx[base + c] = from_float<T>(s * grad_n(gy, gz, base + c, v * s) - k * v);
  }
}

template <typename T>
__global__ void bwd_cols_k(const T* x, const T* gy, const T* gz, T* gx, int64_t outer, int64_t C,
                           int64_t inner, float eps) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= outer * inner) return;
  const int64_t base = (col / inner) * C * inner + col % inner;
  const float ss = col_sumsq(x, base, C, inner);
  const float s = pixel_norm_scale(ss, C, eps);
  float dot = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t k = base + c * inner;
    const float v = to_float(x[k]);
    dot += grad_n(gy, gz, k, v * s) * v;
  }
  const float kc = pixel_norm_grad_coeff(ss, dot, C, eps);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t k = base + c * inner;
    const float v = to_float(x[k]);
    gx[k] = from_float<T>(s * grad_n(gy, gz, k, v * s) - kc * v);
  }
}

}  // namespace

int pixel_norm_fwd(int dt, ptr_t x, ptr_t y, ptr_t z, int64_t outer, int64_t c, int64_t inner,
                   float eps, ptr_t stream) {
  AUGGEN_CUDA_DISPATCH(dt, {
    if (inner == 1)
      fwd_rows_k<scalar_t><<<blocks_for(outer, kWarps), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(x), out<scalar_t>(y), out<scalar_t>(z), outer, c, eps);
    else
      fwd_cols_k<scalar_t><<<blocks_for(outer * inner, kThreads), kThreads, 0,
                             as_stream(stream)>>>(in<scalar_t>(x), out<scalar_t>(y),
                                                  out<scalar_t>(z), outer, c, inner, eps);
  });
}

int pixel_norm_bwd(int dt, ptr_t x, ptr_t gy, ptr_t gz, ptr_t gx, int64_t outer, int64_t c,
                   int64_t inner, float eps, ptr_t stream) {
  AUGGEN_CUDA_DISPATCH(dt, {
    if (inner == 1)
      bwd_rows_k<scalar_t><<<blocks_for(outer, kWarps), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(x), in<scalar_t>(gy), in<scalar_t>(gz), out<scalar_t>(gx), outer, c, eps);
    else
      bwd_cols_k<scalar_t><<<blocks_for(outer * inner, kThreads), kThreads, 0,
                             as_stream(stream)>>>(in<scalar_t>(x), in<scalar_t>(gy),
                                                  in<scalar_t>(gz), out<scalar_t>(gx), outer, c,
                                                  inner, eps);
  });
}

}  // namespace cuda
}  // namespace auggen
