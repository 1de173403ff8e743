// The gtl_kernels._C extension module, with one function, build_info(). The op schemas are defined once, in
// gtl_kernels/_library.py (SCHEMAS); this library only registers kernels for them, per dispatch key, in
// csrc/cpu/register.cpp (CPU) and csrc/cuda/*.cpp (CUDA, in gtl_kernels._C_cuda). The dispatcher accepts a kernel before
// its schema, so the extension may load before or after the Python definitions.
//
// The Python C API and torch/version.h only: through torch/extension.h this file took 60 s of the build's 110 s to
// compile, through pybind11 13 s.
#include <Python.h>
#include <torch/version.h>

#include <string>

namespace {

// std::to_string, not an ostringstream: on one GPU machine (g++ 13.3, torch 2.11+cu130) an int inserted into a stream
// by this extension crashed in the locale's number formatting at import (2026-12-04); to_string needs no locale.
std::string build_info() {
  std::string s = "gtl_kernels._C (C++" + std::to_string(__cplusplus / 100 % 100) + ", ";
#if defined(__clang__)
  s += "clang " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__);
#elif defined(__GNUC__)
  s += "g++ " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#endif
#if defined(_OPENMP)
  s += ", OpenMP " + std::to_string(_OPENMP);
#endif
  return s + ", torch " + std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + ")";
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
