// Helpers shared by the CUDA kernels: 4-wide vector loads/stores, warp sums, dtype dispatch.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "auggen/half.h"
#include "auggen/mp_math.h"
#include "launchers.h"

namespace auggen {
namespace cuda {

constexpr int kVec = 4;
constexpr int kThreads = 256;

template <typename T>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Loads elements i..i+3 (zeros past n) as fp32; ALIGNED: one vector load for a full pack.
template <bool ALIGNED, typename T>
__device__ __forceinline__ void load4(const T* p, int64_t i, int64_t n, float (&v)[kVec]) {
  if (ALIGNED && i + kVec <= n) {
    const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = to_float(pk.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = i + k < n ? to_float(p[i + k]) : 0.0f;
  }
}

template <bool ALIGNED, typename T>
__device__ __forceinline__ void store4(T* p, int64_t i, int64_t n, const float (&v)[kVec]) {
  if (ALIGNED && i + kVec <= n) {
    Pack<T> pk;
#pragma unroll
    for (int k = 0; k < kVec; ++k) pk.v[k] = from_float<T>(v[k]);
    *reinterpret_cast<Pack<T>*>(p + i) = pk;
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      if (i + k < n) p[i + k] = from_float<T>(v[k]);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// True when every non-null pointer allows Pack<T> loads.
template <typename T>
inline bool packs_aligned(std::initializer_list<ptr_t> ptrs) {
  for (ptr_t p : ptrs)
    if (p % sizeof(Pack<T>) != 0) return false;
  return true;
}

// Blocks covering `work` items; grid-stride kernels would cope with fewer, the one-row-per-warp
// kernels need them all (gridDim.x may go up to 2^31 - 1).
inline unsigned blocks_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(
      std::min<int64_t>((work + per_block - 1) / per_block, int64_t{0x7fffffff}));
}

template <typename T>
const T* in(ptr_t p) {
  return reinterpret_cast<const T*>(p);
}

template <typename T>
T* out(ptr_t p) {
  return reinterpret_cast<T*>(p);
}

inline cudaStream_t as_stream(ptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// AUGGEN_CUDA_SYNC=1 (read once): every launcher waits for its kernel to finish.
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("AUGGEN_CUDA_SYNC");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// The error a launch left: its own (bad configuration; error 35, a driver older than this
// module's runtime), and with AUGGEN_CUDA_SYNC=1 also the kernel's (an illegal address...),
// so a fault is reported by the op that made it, not by whatever torch op syncs next.
inline int finish_launch(ptr_t stream) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || !sync_after_launch()) return static_cast<int>(err);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  err = cudaStreamIsCapturing(as_stream(stream), &capture);
  if (err == cudaSuccess && capture == cudaStreamCaptureStatusNone)  // no sync inside a graph
    err = cudaStreamSynchronize(as_stream(stream));
  return static_cast<int>(err);
}

}  // namespace cuda
}  // namespace auggen

// Runs BODY with scalar_t bound to dtype code DT, then returns finish_launch(STREAM); unknown
// codes return cudaErrorInvalidValue.
#define AUGGEN_CUDA_DISPATCH(DT, STREAM, ...)                                 \
  do {                                                                        \
    if ((DT) < ::auggen::kFloat32 || (DT) > ::auggen::kBFloat16)              \
      return static_cast<int>(cudaErrorInvalidValue);                         \
    AUGGEN_DISPATCH_DTYPE(DT, __VA_ARGS__);                                   \
    return ::auggen::cuda::finish_launch(STREAM);                             \
  } while (0)
