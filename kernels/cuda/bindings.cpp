// pybind11 module auggen._C_cuda: thin bindings of the CUDA launchers (compiled by g++, so
// nvcc never sees pybind11). Each function returns a cudaError_t code; auggen.ops raises
// RuntimeError for a non-zero code with error_string(code).
#include <pybind11/pybind11.h>

#include "launchers.h"

namespace py = pybind11;
namespace ac = auggen::cuda;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "AugGen CUDA kernels (raw-pointer launchers, called from auggen.ops)";
  m.def("error_string", &ac::error_string);
  m.def("driver_version", &ac::driver_version);
  m.def("runtime_version", &ac::runtime_version);
  m.def("sync_enabled", &ac::sync_enabled);
  m.def("mp_silu_fwd", &ac::mp_silu_fwd);
  m.def("mp_silu_bwd", &ac::mp_silu_bwd);
  m.def("mp_sum_fwd", &ac::mp_sum_fwd);
  m.def("mp_sum_bwd", &ac::mp_sum_bwd);
  m.def("pixel_norm_fwd", &ac::pixel_norm_fwd);
  m.def("pixel_norm_bwd", &ac::pixel_norm_bwd);
  m.def("modulated_mp_silu_fwd", &ac::modulated_mp_silu_fwd);
  m.def("modulated_mp_silu_bwd", &ac::modulated_mp_silu_bwd);
}
