// The gtl_kernels._C extension: the CPU Philox op and build_info() through pybind11. The op schemas are defined once,
// in gtl_kernels/_library.py (SCHEMAS); this library only registers kernels for them, per dispatch key, in
// csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cpp (CUDA, in gtl_kernels._C_cuda). The dispatcher accepts a kernel before
// its schema, so the extension may load before or after the Python definitions.
#include <torch/extension.h>
#include <torch/library.h>

#include <sstream>

#include "gtl/philox.h"

namespace {

// Random123 Philox words for given keys and counters; lets the tests check every backend's generator bit for bit.
at::Tensor philox_cpu(const at::Tensor& key, const at::Tensor& counter) {
  TORCH_CHECK(key.scalar_type() == at::kLong && counter.scalar_type() == at::kLong, "philox: key and counter must be int64");
  TORCH_CHECK(counter.dim() == key.dim() + 1 && counter.size(-1) == 4, "philox: counter must be key.shape + (4,)");
  TORCH_CHECK(counter.sizes().slice(0, key.dim()) == key.sizes(), "philox: counter must be key.shape + (4,)");
  const at::Tensor k = key.contiguous(), c = counter.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t* kp = k.data_ptr<int64_t>();
  const int64_t* cp = c.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, k.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t seed = static_cast<uint64_t>(kp[i]);
      const gtl::Philox4 r =
          gtl::philox4x32_10(static_cast<uint32_t>(cp[4 * i]), static_cast<uint32_t>(cp[4 * i + 1]),
                             static_cast<uint32_t>(cp[4 * i + 2]), static_cast<uint32_t>(cp[4 * i + 3]),
                             static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
      for (int j = 0; j < 4; ++j) op[4 * i + j] = r.w[j];
    }
  });
  return out;
}

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

}  // namespace


TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("philox", &philox_cpu); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gtl_kernels native extension: ops are registered with torch.library in namespace gtl";
  m.def("build_info", &build_info, "compiler and flags this extension was built with");
}
