// Torch glue of the gtl_kernels._C_cuda extension: checks arguments, allocates outputs, launches on the current
// stream and registers the kernels for the CUDA dispatch key of the schemas defined in csrc/ops.cpp.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "launchers.h"

namespace {

at::Tensor philox_cuda(const at::Tensor& key, const at::Tensor& counter) {
  TORCH_CHECK(key.scalar_type() == at::kLong && counter.scalar_type() == at::kLong, "philox: key and counter must be int64");
  TORCH_CHECK(counter.dim() == key.dim() + 1 && counter.size(-1) == 4, "philox: counter must be key.shape + (4,)");
  const c10::cuda::CUDAGuard guard(key.device());
  const at::Tensor k = key.contiguous(), c = counter.contiguous();
  at::Tensor out = at::empty_like(c);
  C10_CUDA_CHECK(gtl::launch_philox(k.data_ptr<int64_t>(), c.data_ptr<int64_t>(), out.data_ptr<int64_t>(), k.numel(),
                                    at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("philox", &philox_cuda); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "gtl_kernels CUDA kernels (registered for the CUDA key)"; }
