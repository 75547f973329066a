// CPU kernel entry points. Each kernel source in csrc/cpu/kernels/ is compiled twice
// (baseline x86-64-v2 and AVX2+FMA) into namespaces cpu_base / cpu_avx2; csrc/cpu/ops_cpu.cpp
// picks one at run time. Pointers are raw storage of `dtype` (auggen::DType) laid out densely.
//
// Reductions see the tensor as (outer, C, inner) contiguous: element (o, c, i) sits at
// (o * C + c) * inner + i. Modulation sees y as (N, S1, C, S2) with c[n * C + ch].
#pragma once
#include <cstdint>

#define AUGGEN_DECLARE_CPU_KERNELS(NS)                                                         \
  namespace auggen {                                                                           \
  namespace NS {                                                                               \
  void mp_silu_fwd(int dtype, const void* x, void* y, int64_t n);                              \
  void mp_silu_bwd(int dtype, const void* g, const void* x, void* gx, int64_t n);              \
  void mp_sum_fwd(int dtype, const void* a, const void* b, void* y, int64_t n, float t,        \
                  bool clamp, float clip);                                                     \
  void mp_sum_bwd(int dtype, const void* g, const void* a, const void* b, void* ga, void* gb,  \
                  int64_t n, float t, bool clamp, float clip);                                 \
  void pixel_norm_fwd(int dtype, const void* x, void* y, void* z, int64_t outer, int64_t c,    \
                      int64_t inner, float eps);                                               \
  void pixel_norm_bwd(int dtype, const void* x, const void* gy, const void* gz, void* gx,      \
                      int64_t outer, int64_t c, int64_t inner, float eps);                     \
  void modulated_mp_silu_fwd(int dtype, const void* y, const void* c, void* out, int64_t n,    \
                             int64_t s1, int64_t ch, int64_t s2);                              \
  void modulated_mp_silu_bwd(int dtype, const void* g, const void* y, const void* c, void* gy, \
                             void* gc, int64_t n, int64_t s1, int64_t ch, int64_t s2);         \
  void wino_input_fwd(const float* x, float* v, int64_t n, int64_t h, int64_t w, int64_t c,   \
                      int64_t t0, int64_t t1);                                                 \
  void wino_input_bwd(const float* dv, float* dx, int64_t n, int64_t h, int64_t w, int64_t c, \
                      int64_t t0, int64_t t1);                                                 \
  void wino_output_fwd(const float* m, float* y, int64_t n, int64_t h, int64_t w, int64_t k,  \
                       int64_t t0, int64_t t1);                                                \
  void wino_output_bwd(const float* gy, float* dm, int64_t n, int64_t h, int64_t w,           \
                       int64_t k, int64_t t0, int64_t t1);                                     \
  }                                                                                            \
  }

AUGGEN_DECLARE_CPU_KERNELS(cpu_base)
AUGGEN_DECLARE_CPU_KERNELS(cpu_avx2)
