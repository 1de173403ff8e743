// gtl::philox for the CUDA dispatch key: Philox4x32-10 words for given keys and counters (KERNEL_SPEC §3), so that
// the tests can check every backend's generator bit for bit.
#include <ATen/ops/empty_like.h>

#include "glue.h"

namespace {

at::Tensor philox_cuda(const at::Tensor& key, const at::Tensor& counter) {
  TORCH_CHECK(key.scalar_type() == at::kLong && counter.scalar_type() == at::kLong, "philox: key and counter must be int64");
  TORCH_CHECK(counter.dim() == key.dim() + 1 && counter.size(-1) == 4, "philox: counter must be key.shape + (4,)");
  TORCH_CHECK(counter.sizes().slice(0, key.dim()) == key.sizes(), "philox: counter must be key.shape + (4,)");
  const c10::cuda::CUDAGuard guard(key.device());
  const at::Tensor k = key.contiguous(), c = counter.contiguous();
  at::Tensor out = at::empty_like(c);
  C10_CUDA_CHECK(gtl::launch_philox(k.data_ptr<int64_t>(), c.data_ptr<int64_t>(), out.data_ptr<int64_t>(), k.numel(),
                                    at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("philox", &philox_cuda); }
