// CUDA kernels: modulated_mp_silu = mp_silu(y * c), forward and backward, on the
// (N, S1, C, S2) view with c[n * C + ch]. Backward writes dy and reduces dc in one pass:
// S2 > 1 (NCHW): one warp per (n, ch) over its spatial positions, shuffle reduction;
// S2 == 1 (NHWC): one thread per (n, ch) walking S1, adjacent threads on adjacent channels.
#include "common.cuh"

namespace auggen {
namespace cuda {
namespace {

constexpr int kWarps = kThreads / 32;

template <typename T, bool AL>
__global__ void fwd_k(const T* y, const T* c, T* o, int64_t total, int64_t S1, int64_t C,
                      int64_t S2) {
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
       i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x * kVec) {
    float v[kVec];
    load4<AL>(y, i, total, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int64_t e = i + k < total ? i + k : i;
      const float cv = to_float(c[(e / (S1 * C * S2)) * C + (e / S2) % C]);
      v[k] = mp_silu_value(v[k] * cv);
    }
    store4<AL>(o, i, total, v);
  }
}

template <typename T>
__device__ __forceinline__ float bwd_one(const T* g, const T* y, T* gy, int64_t k, float cv) {
  const float yv = to_float(y[k]);
  const float gz = to_float(g[k]) * mp_silu_grad(yv * cv);
  gy[k] = from_float<T>(gz * cv);
  return gz * yv;
}

template <typename T>
__global__ void bwd_warp_k(const T* g, const T* y, const T* c, T* gy, T* gc, int64_t N,
                           int64_t S1, int64_t C, int64_t S2) {
  const int64_t nc = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (nc >= N * C) return;
  const int64_t n = nc / C, ch = nc % C;
  const float cv = to_float(c[nc]);
  float acc = 0.0f;
  for (int64_t s = lane; s < S1 * S2; s += 32)
    acc += bwd_one(g, y, gy, ((n * S1 + s / S2) * C + ch) * S2 + s % S2, cv);
  acc = warp_sum(acc);
  if (lane == 0) gc[nc] = from_float<T>(acc);
}

template <typename T>
__global__ void bwd_thread_k(const T* g, const T* y, const T* c, T* gy, T* gc, int64_t N,
                             int64_t S1, int64_t C) {
  const int64_t nc = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (nc >= N * C) return;
  const int64_t n = nc / C, ch = nc % C;
  const float cv = to_float(c[nc]);
  float acc = 0.0f;
  for (int64_t s1 = 0; s1 < S1; ++s1) acc += bwd_one(g, y, gy, (n * S1 + s1) * C + ch, cv);
  gc[nc] = from_float<T>(acc);
}

}  // namespace

int modulated_mp_silu_fwd(int dt, ptr_t y, ptr_t c, ptr_t o, int64_t n, int64_t s1, int64_t ch,
                          int64_t s2, ptr_t stream) {
  const int64_t total = n * s1 * ch * s2;
  AUGGEN_CUDA_DISPATCH(dt, {
    const unsigned grid = blocks_for(total, static_cast<int64_t>(kThreads) * kVec);
    if (packs_aligned<scalar_t>({y, o}))
      fwd_k<scalar_t, true><<<grid, kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(o), total, s1, ch, s2);
    else
      fwd_k<scalar_t, false><<<grid, kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(o), total, s1, ch, s2);
  });
}

int modulated_mp_silu_bwd(int dt, ptr_t g, ptr_t y, ptr_t c, ptr_t gy, ptr_t gc, int64_t n,
                          int64_t s1, int64_t ch, int64_t s2, ptr_t stream) {
  AUGGEN_CUDA_DISPATCH(dt, {
    if (s2 > 1)
      bwd_warp_k<scalar_t><<<blocks_for(n * ch, kWarps), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(g), in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(gy),
          out<scalar_t>(gc), n, s1, ch, s2);
    else
      bwd_thread_k<scalar_t><<<blocks_for(n * ch, kThreads), kThreads, 0,
                               as_stream(stream)>>>(in<scalar_t>(g), in<scalar_t>(y),
                                                    in<scalar_t>(c), out<scalar_t>(gy),
                                                    out<scalar_t>(gc), n, s1, ch);
  });
}

}  // namespace cuda
}  // namespace auggen
