// pybind11 bindings of the CPU kernels: pointers arrive as integers (tensor.data_ptr()),
// with a dtype code and sizes. The AVX2+FMA build of the kernels is used when the CPU has it.
#include <pybind11/pybind11.h>

#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdexcept>
#include <string>

#include "auggen/cpu_kernels.h"

namespace py = pybind11;

namespace {

bool cpu_supports_avx2() {
#if !defined(AUGGEN_NO_AVX2_BUILD)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
#else
  return false;
#endif
}

// set_isa("base") forces the baseline kernels (tests cover both builds on AVX2 machines).
bool g_force_base = false;

bool cpu_has_avx2() { return !g_force_base && cpu_supports_avx2(); }

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// Calls NAME from the ISA-specific namespace chosen at run time, without the GIL.
#if defined(AUGGEN_NO_AVX2_BUILD)
#define AUGGEN_CALL(NAME, ...)             \
  do {                                     \
    py::gil_scoped_release nogil;          \
    auggen::cpu_base::NAME(__VA_ARGS__);   \
  } while (0)
#else
#define AUGGEN_CALL(NAME, ...)             \
  do {                                     \
    py::gil_scoped_release nogil;          \
    if (cpu_has_avx2())                    \
      auggen::cpu_avx2::NAME(__VA_ARGS__); \
    else                                   \
      auggen::cpu_base::NAME(__VA_ARGS__); \
  } while (0)
#endif

}  // namespace

void register_cpu_ops(py::module_& m) {
  m.def("has_openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  m.def(
      "set_num_threads",
      [](int n) {
#ifdef _OPENMP
        if (n > 0 && n != omp_get_max_threads()) omp_set_num_threads(n);
#endif
      },
      "Threads of the kernels' OpenMP pool (auggen.ops keeps it equal to torch's).");
  m.def("isa", []() { return cpu_has_avx2() ? "avx2" : "base"; });
  m.def(
      "set_isa",
      [](const std::string& isa) {
        if (isa != "base" && isa != "auto")
          throw std::invalid_argument("isa must be 'base' or 'auto', got '" + isa + "'");
        g_force_base = isa == "base";
      },
      "Choose the kernel build: 'base' (x86-64-v2) or 'auto' (AVX2+FMA when the CPU has it).");

  m.def("mp_silu_fwd", [](int dt, uintptr_t x, uintptr_t y, int64_t n) {
    AUGGEN_CALL(mp_silu_fwd, dt, ptr<const void>(x), ptr<void>(y), n);
  });
  m.def("mp_silu_bwd", [](int dt, uintptr_t g, uintptr_t x, uintptr_t gx, int64_t n) {
    AUGGEN_CALL(mp_silu_bwd, dt, ptr<const void>(g), ptr<const void>(x), ptr<void>(gx), n);
  });
  m.def("mp_sum_fwd", [](int dt, uintptr_t a, uintptr_t b, uintptr_t y, int64_t n, float t,
                         bool clamp, float clip) {
    AUGGEN_CALL(mp_sum_fwd, dt, ptr<const void>(a), ptr<const void>(b), ptr<void>(y), n, t, clamp,
                clip);
  });
  m.def("mp_sum_bwd", [](int dt, uintptr_t g, uintptr_t a, uintptr_t b, uintptr_t ga,
                         uintptr_t gb, int64_t n, float t, bool clamp, float clip) {
    AUGGEN_CALL(mp_sum_bwd, dt, ptr<const void>(g), ptr<const void>(a), ptr<const void>(b),
                ptr<void>(ga), ptr<void>(gb), n, t, clamp, clip);
  });
  m.def("pixel_norm_fwd", [](int dt, uintptr_t x, uintptr_t y, uintptr_t z, int64_t outer,
                             int64_t c, int64_t inner, float eps) {
    AUGGEN_CALL(pixel_norm_fwd, dt, ptr<const void>(x), ptr<void>(y), ptr<void>(z), outer, c,
                inner, eps);
  });
  m.def("pixel_norm_bwd", [](int dt, uintptr_t x, uintptr_t gy, uintptr_t gz, uintptr_t gx,
                             int64_t outer, int64_t c, int64_t inner, float eps) {
    AUGGEN_CALL(pixel_norm_bwd, dt, ptr<const void>(x), ptr<const void>(gy), ptr<const void>(gz),
                ptr<void>(gx), outer, c, inner, eps);
  });
  m.def("modulated_mp_silu_fwd", [](int dt, uintptr_t y, uintptr_t c, uintptr_t out, int64_t n,
                                    int64_t s1, int64_t ch, int64_t s2) {
    AUGGEN_CALL(modulated_mp_silu_fwd, dt, ptr<const void>(y), ptr<const void>(c),
                ptr<void>(out), n, s1, ch, s2);
  });
  m.def("modulated_mp_silu_bwd", [](int dt, uintptr_t g, uintptr_t y, uintptr_t c, uintptr_t gy,
                                    uintptr_t gc, int64_t n, int64_t s1, int64_t ch,
                                    int64_t s2) {
    AUGGEN_CALL(modulated_mp_silu_bwd, dt, ptr<const void>(g), ptr<const void>(y),
                ptr<const void>(c), ptr<void>(gy), ptr<void>(gc), n, s1, ch, s2);
  });

  // Winograd F(4x4, 3x3) transforms (fp32, NHWC <-> (36, tiles, C)); see kernels/winograd.cpp.
#define AUGGEN_DEF_WINOGRAD(NAME)                                                                 \
  m.def(#NAME, [](uintptr_t in, uintptr_t out, int64_t n, int64_t h, int64_t w, int64_t c,      \
                  int64_t t0, int64_t t1) {                                                     \
    AUGGEN_CALL(NAME, ptr<const float>(in), ptr<float>(out), n, h, w, c, t0, t1);               \
  })
  AUGGEN_DEF_WINOGRAD(wino_input_fwd);
  AUGGEN_DEF_WINOGRAD(wino_input_bwd);
  AUGGEN_DEF_WINOGRAD(wino_output_fwd);
  AUGGEN_DEF_WINOGRAD(wino_output_bwd);
#undef AUGGEN_DEF_WINOGRAD
}
