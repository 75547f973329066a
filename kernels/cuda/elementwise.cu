// CUDA kernels: mp_silu and mp_sum(+clamp), forward and backward. Grid-stride loops over packs
// of 4 elements (one 16-byte load for fp32 when the pointers allow it), fp32 math.
#include "common.cuh"

namespace auggen {
namespace cuda {
namespace {

#define AUGGEN_PACK_LOOP(n)                                                          \
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; \
       i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x * kVec)

template <typename T, bool AL>
__global__ void mp_silu_fwd_k(const T* x, T* y, int64_t n) {
  AUGGEN_PACK_LOOP(n) {
    float v[kVec];
    load4<AL>(x, i, n, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = mp_silu_value(v[k]);
    store4<AL>(y, i, n, v);
  }
}

template <typename T, bool AL>
__global__ void mp_silu_bwd_k(const T* g, const T* x, T* gx, int64_t n) {
  AUGGEN_PACK_LOOP(n) {
    float gv[kVec], xv[kVec];
    load4<AL>(g, i, n, gv);
    load4<AL>(x, i, n, xv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) gv[k] *= mp_silu_grad(xv[k]);
    store4<AL>(gx, i, n, gv);
  }
}

template <typename T, bool AL>
__global__ void mp_sum_fwd_k(const T* a, const T* b, T* y, int64_t n, float ca, float cb,
                             bool clamp, float clip) {
  AUGGEN_PACK_LOOP(n) {
    float av[kVec], bv[kVec];
    load4<AL>(a, i, n, av);
    load4<AL>(b, i, n, bv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float v = ca * av[k] + cb * bv[k];
      av[k] = clamp ? clamp_keep_nan(v, clip) : v;
    }
    store4<AL>(y, i, n, av);
  }
}

template <typename T, bool AL>
__global__ void mp_sum_bwd_k(const T* g, const T* a, const T* b, T* ga, T* gb, int64_t n,
                             float ca, float cb, bool clamp, float clip) {
  AUGGEN_PACK_LOOP(n) {
    float gv[kVec], outa[kVec], outb[kVec];
    load4<AL>(g, i, n, gv);
    if (clamp) {
      float av[kVec], bv[kVec];
      load4<AL>(a, i, n, av);
      load4<AL>(b, i, n, bv);
#pragma unroll
      for (int k = 0; k < kVec; ++k) gv[k] *= clamp_grad_mask(ca * av[k] + cb * bv[k], clip);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      outa[k] = ca * gv[k];
      outb[k] = cb * gv[k];
    }
    store4<AL>(ga, i, n, outa);
    store4<AL>(gb, i, n, outb);
  }
}

// Launches KERNEL<scalar_t, aligned> over n elements.
#define AUGGEN_LAUNCH_PACKED(KERNEL, aligned, n, stream, ...)                                  \
  do {                                                                                         \
    const unsigned grid = blocks_for((n), static_cast<int64_t>(kThreads) * kVec);              \
    if (aligned)                                                                               \
      KERNEL<scalar_t, true><<<grid, kThreads, 0, as_stream(stream)>>>(__VA_ARGS__);           \
    else                                                                                       \
      KERNEL<scalar_t, false><<<grid, kThreads, 0, as_stream(stream)>>>(__VA_ARGS__);          \
  } while (0)

}  // namespace

const char* error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

int driver_version() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess ? v : 0;  // 0: no driver
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);  // the runtime linked in (statically): the toolkit built with
  return v;
}

bool sync_enabled() { return sync_after_launch(); }

int mp_silu_fwd(int dt, ptr_t x, ptr_t y, int64_t n, ptr_t stream) {
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    const bool al = packs_aligned<scalar_t>({x, y});
    AUGGEN_LAUNCH_PACKED(mp_silu_fwd_k, al, n, stream, in<scalar_t>(x), out<scalar_t>(y), n);
  });
}

int mp_silu_bwd(int dt, ptr_t g, ptr_t x, ptr_t gx, int64_t n, ptr_t stream) {
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    const bool al = packs_aligned<scalar_t>({g, x, gx});
    AUGGEN_LAUNCH_PACKED(mp_silu_bwd_k, al, n, stream, in<scalar_t>(g), in<scalar_t>(x),
                         out<scalar_t>(gx), n);
  });
}

int mp_sum_fwd(int dt, ptr_t a, ptr_t b, ptr_t y, int64_t n, float t, bool clamp, float clip,
               ptr_t stream) {
  float ca, cb;
  mp_sum_coeffs(t, &ca, &cb);
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    const bool al = packs_aligned<scalar_t>({a, b, y});
    AUGGEN_LAUNCH_PACKED(mp_sum_fwd_k, al, n, stream, in<scalar_t>(a), in<scalar_t>(b),
                         out<scalar_t>(y), n, ca, cb, clamp, clip);
  });
}

int mp_sum_bwd(int dt, ptr_t g, ptr_t a, ptr_t b, ptr_t ga, ptr_t gb, int64_t n, float t,
               bool clamp, float clip, ptr_t stream) {
  float ca, cb;
  mp_sum_coeffs(t, &ca, &cb);
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    const bool al = packs_aligned<scalar_t>({g, a, b, ga, gb});
    AUGGEN_LAUNCH_PACKED(mp_sum_bwd_k, al, n, stream, in<scalar_t>(g), in<scalar_t>(a),
                         in<scalar_t>(b), out<scalar_t>(ga), out<scalar_t>(gb), n, ca, cb, clamp,
                         clip);
  });
}

}  // namespace cuda
}  // namespace auggen
