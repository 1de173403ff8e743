// The gtl_kernels._C_cuda extension module. It holds no function: loading it runs the TORCH_LIBRARY_IMPL blocks of
// csrc/cuda/<op>.cpp, which register the CUDA kernels for the schemas of gtl_kernels/_library.py. A plain Python C API
// module, as csrc/ops.cpp (KERNEL_SPEC §5): it needs nothing of torch or pybind11, whose headers would only slow the
// build.
#include <Python.h>

namespace {

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C_cuda", "gtl_kernels CUDA kernels (registered for the CUDA key)", -1, nullptr, nullptr,
    nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C_cuda() { return PyModule_Create(&module); }
