// The gtl_kernels._C extension module, with one function, build_info(). The op schemas are defined once, in
// gtl_kernels/_library.py (SCHEMAS); this library only registers kernels for them, per dispatch key, in
// csrc/cpu/register.cpp (CPU) and csrc/cuda/*.cpp (CUDA, in gtl_kernels._C_cuda). The dispatcher accepts a kernel before
// its schema, so the extension may load before or after the Python definitions.
//
// The Python C API and torch/version.h only: through torch/extension.h this file took 60 s of the build's 110 s to
// compile, through pybind11 13 s.
#include <Python.h>
#include <torch/version.h>

#include <sstream>
#include <string>

namespace {

std::string build_info() {
  std::ostringstream s;
  s << "gtl_kernels._C (C++" << __cplusplus / 100 % 100 << ", "
#if defined(__clang__)
    << "clang " << __clang_major__ << "." << __clang_minor__
#elif defined(__GNUC__)
    << "g++ " << __GNUC__ << "." << __GNUC_MINOR__
#endif
#if defined(_OPENMP)
    << ", OpenMP " << _OPENMP
#endif
    << ", torch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << ")";
  return s.str();
}

PyObject* py_build_info(PyObject*, PyObject*) { return PyUnicode_FromString(build_info().c_str()); }

PyMethodDef methods[] = {
    {"build_info", py_build_info, METH_NOARGS, "compiler and flags this extension was built with"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C", "gtl_kernels native extension: ops are registered with torch.library in namespace gtl",
    -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C() { return PyModule_Create(&module); }
