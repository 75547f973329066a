// CUDA kernels: pixel_norm (+ fused mp_silu), forward and backward, on the (outer, C, inner)
// view. inner == 1: one warp per contiguous row (coalesced over C, shuffle reduction).
// inner > 1 (NCHW): one block per (o, tile of 32 columns): lanes take adjacent columns
// (coalesced), the 8 warps split C, and per-column sums meet in shared memory. Each thread
// keeps kUnroll independent loads in flight; the block's tile (32 x C) is re-read from L2.
// Backward: dx = s g - k x, g = dn + ds * mp_silu'(n), k from pixel_norm_grad_coeff; without
// ds the dot g.x does not depend on s, so it is summed in the same pass as ||x||^2.
#include "common.cuh"

namespace auggen {
namespace cuda {
namespace {

constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;

template <typename T>
__device__ __forceinline__ float grad_n(const T* __restrict__ gy, const T* __restrict__ gz,
                                        int64_t k, float n) {
  float g = gy ? to_float(gy[k]) : 0.0f;
  if (gz) g += to_float(gz[k]) * mp_silu_grad(n);
  return g;
}

// Sum of squares of one row, reduced over the warp (every lane gets the total).
template <typename T>
__device__ __forceinline__ float row_sumsq(const T* __restrict__ x, int64_t base, int64_t C,
                                           int lane) {
  float ss = 0.0f;
#pragma unroll kUnroll
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_float(x[base + c]);
    ss += v * v;
  }
  return warp_sum(ss);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_rows_k(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ z, int64_t rows,
               int64_t C, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t base = r * C;
  const float s = pixel_norm_scale(row_sumsq(x, base, C, lane), C, eps);
#pragma unroll kUnroll
  for (int64_t c = lane; c < C; c += 32) {
    const float n = to_float(x[base + c]) * s;
    y[base + c] = from_float<T>(n);
    if (z) z[base + c] = from_float<T>(mp_silu_value(n));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_rows_k(const T* __restrict__ x, const T* __restrict__ gy, const T* __restrict__ gz,
               T* __restrict__ gx, int64_t rows, int64_t C, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t base = r * C;
  const float ss = row_sumsq(x, base, C, lane);
  const float s = pixel_norm_scale(ss, C, eps);
  float dot = 0.0f;
#pragma unroll kUnroll
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_float(x[base + c]);
    dot += grad_n(gy, gz, base + c, v * s) * v;
  }
  const float k = pixel_norm_grad_coeff(ss, warp_sum(dot), C, eps);
#pragma unroll kUnroll
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_float(x[base + c]);
    gx[base + c] = from_float<T>(s * grad_n(gy, gz, base + c, v * s) - k * v);
  }
}

// Column tiles: block b owns columns i0..i0+31 of slab o, with o = b / tiles.
struct Tile {
  int64_t base;  // offset of (o, c = 0, i = i0 + lane)
  bool ok;       // this lane's column exists
};

__device__ __forceinline__ Tile column_tile(int64_t C, int64_t inner, int64_t tiles) {
  const int64_t o = blockIdx.x / tiles;
  const int64_t i = (blockIdx.x % tiles) * 32 + threadIdx.x % 32;
  return {o * C * inner + i, i < inner};
}

// Sums over the block's warps for each lane's column: every thread gets its column's total.
template <int K>
__device__ __forceinline__ void column_sums(float (&v)[K]) {
  __shared__ float part[K][kWarps][33];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < K; ++k) part[k][warp][lane] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) t += part[k][w][lane];
    v[k] = t;
  }
  __syncthreads();  // the buffer may be reused by the next call
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_cols_k(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ z, int64_t C,
               int64_t inner, int64_t tiles, float eps) {
  const Tile t = column_tile(C, inner, tiles);
  const int warp = threadIdx.x / 32;
  float ss[1] = {0.0f};
  if (t.ok) {
#pragma unroll kUnroll
    for (int64_t c = warp; c < C; c += kWarps) {
      const float v = to_float(x[t.base + c * inner]);
      ss[0] += v * v;
    }
  }
  column_sums(ss);
  if (!t.ok) return;
  const float s = pixel_norm_scale(ss[0], C, eps);
#pragma unroll kUnroll
  for (int64_t c = warp; c < C; c += kWarps) {
    const int64_t k = t.base + c * inner;
    const float n = to_float(x[k]) * s;
    y[k] = from_float<T>(n);
    if (z) z[k] = from_float<T>(mp_silu_value(n));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_cols_k(const T* __restrict__ x, const T* __restrict__ gy, const T* __restrict__ gz,
               T* __restrict__ gx, int64_t C, int64_t inner, int64_t tiles, float eps) {
  const Tile t = column_tile(C, inner, tiles);
  const int warp = threadIdx.x / 32;
  float acc[2] = {0.0f, 0.0f};  // ||x||^2, and g.x when g does not depend on s (no gz)
  if (t.ok) {
#pragma unroll kUnroll
    for (int64_t c = warp; c < C; c += kWarps) {
      const int64_t k = t.base + c * inner;
      const float v = to_float(x[k]);
      acc[0] += v * v;
      if (!gz) acc[1] += grad_n(gy, gz, k, 0.0f) * v;
    }
  }
  column_sums(acc);
  const float s = pixel_norm_scale(acc[0], C, eps);
  if (gz) {  // mp_silu'(x s) needs s: one more pass for the dot product
    float dot[1] = {0.0f};
    if (t.ok) {
#pragma unroll kUnroll
      for (int64_t c = warp; c < C; c += kWarps) {
        const int64_t k = t.base + c * inner;
        const float v = to_float(x[k]);
        dot[0] += grad_n(gy, gz, k, v * s) * v;
      }
    }
    column_sums(dot);
    acc[1] = dot[0];
  }
  if (!t.ok) return;
  const float kc = pixel_norm_grad_coeff(acc[0], acc[1], C, eps);
#pragma unroll kUnroll
  for (int64_t c = warp; c < C; c += kWarps) {
    const int64_t k = t.base + c * inner;
    const float v = to_float(x[k]);
    gx[k] = from_float<T>(s * grad_n(gy, gz, k, v * s) - kc * v);
  }
}

}  // namespace

int pixel_norm_fwd(int dt, ptr_t x, ptr_t y, ptr_t z, int64_t outer, int64_t c, int64_t inner,
                   float eps, ptr_t stream) {
  const int64_t tiles = (inner + 31) / 32;
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    if (inner == 1)
      fwd_rows_k<scalar_t><<<blocks_for(outer, kWarps), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(x), out<scalar_t>(y), out<scalar_t>(z), outer, c, eps);
    else
      fwd_cols_k<scalar_t><<<blocks_for(outer * tiles, 1), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(x), out<scalar_t>(y), out<scalar_t>(z), c, inner, tiles, eps);
  });
}

int pixel_norm_bwd(int dt, ptr_t x, ptr_t gy, ptr_t gz, ptr_t gx, int64_t outer, int64_t c,
                   int64_t inner, float eps, ptr_t stream) {
  const int64_t tiles = (inner + 31) / 32;
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    if (inner == 1)
      bwd_rows_k<scalar_t><<<blocks_for(outer, kWarps), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(x), in<scalar_t>(gy), in<scalar_t>(gz), out<scalar_t>(gx), outer, c, eps);
    else
      bwd_cols_k<scalar_t><<<blocks_for(outer * tiles, 1), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(x), in<scalar_t>(gy), in<scalar_t>(gz), out<scalar_t>(gx), c, inner,
          tiles, eps);
  });
}

}  // namespace cuda
}  // namespace auggen
