// gtl::philox for the CPU dispatch key: Random123 Philox-4x32-10 words for given keys and counters (KERNEL_SPEC §3),
// so that the tests can check every backend's generator bit for bit.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "gtl/philox.h"

namespace {

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

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("philox", &philox_cpu); }
