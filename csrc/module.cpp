// pybind11 module auggen._C: CPU kernels on raw pointers (no libtorch link, so the
// built module does not depend on the installed torch version).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_cpu_ops(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "AugGen CPU kernels (raw-pointer interface, called from auggen.ops)";
  m.attr("__version__") = "0.1.0";
  register_cpu_ops(m);
}
