// Host launchers of the CUDA kernels (defined in the .cu files of this folder, bound to Python
// by bindings.cpp). Pointers and the stream arrive as integers; the return value is a
// cudaError_t (0 = success). No CUDA or pybind11 headers here, so either compiler can read it.
#pragma once
#include <cstdint>

namespace auggen {
namespace cuda {

using ptr_t = uintptr_t;

const char* error_string(int err);
int driver_version();   // CUDA version the installed driver supports (12040 = 12.4), 0: none
int runtime_version();  // CUDA runtime version this module was built with
bool sync_enabled();    // AUGGEN_CUDA_SYNC=1: launchers synchronise and return the kernel's error

int mp_silu_fwd(int dt, ptr_t x, ptr_t y, int64_t n, ptr_t stream);
int mp_silu_bwd(int dt, ptr_t g, ptr_t x, ptr_t gx, int64_t n, ptr_t stream);
int mp_sum_fwd(int dt, ptr_t a, ptr_t b, ptr_t y, int64_t n, float t, bool clamp, float clip,
               ptr_t stream);
int mp_sum_bwd(int dt, ptr_t g, ptr_t a, ptr_t b, ptr_t ga, ptr_t gb, int64_t n, float t,
               bool clamp, float clip, ptr_t stream);
int pixel_norm_fwd(int dt, ptr_t x, ptr_t y, ptr_t z, int64_t outer, int64_t c, int64_t inner,
                   float eps, ptr_t stream);
int pixel_norm_bwd(int dt, ptr_t x, ptr_t gy, ptr_t gz, ptr_t gx, int64_t outer, int64_t c,
                   int64_t inner, float eps, ptr_t stream);
int modulated_mp_silu_fwd(int dt, ptr_t y, ptr_t c, ptr_t out, int64_t n, int64_t s1, int64_t ch,
                          int64_t s2, ptr_t stream);
int modulated_mp_silu_bwd(int dt, ptr_t g, ptr_t y, ptr_t c, ptr_t gy, ptr_t gc, int64_t n,
                          int64_t s1, int64_t ch, int64_t s2, ptr_t stream);

}  // namespace cuda
}  // namespace auggen
