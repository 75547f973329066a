// CPU kernels for auggen.ops (placeholder registration; kernels are added per op family).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_cpu_ops(py::module_& m) {
  m.def("has_openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
}
