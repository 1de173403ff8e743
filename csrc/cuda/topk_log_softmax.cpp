// gtl::topk_log_softmax for the CUDA dispatch key (KERNEL_SPEC §2 `topk_log_softmax`): radix select and bitonic sort,
// ties toward the lower id, up to kTopkMax tokens; beyond, this backend's guided_log_softmax and a stable sort.
#include <ATen/ops/sort.h>

#include <cmath>

#include "glue.h"

namespace {

using namespace gtl::cuda;

std::tuple<at::Tensor, at::Tensor> topk_log_softmax_cuda(const at::Tensor& logits, int64_t k,
                                                        const c10::optional<at::Tensor>& bias, const at::Tensor& gamma,
                                                        const at::Tensor& temperature) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("topk_log_softmax", logits, bias, gamma, temperature);
  TORCH_CHECK(k >= 0 && k <= p.v, "topk_log_softmax: k must be in [0, ", p.v, "], got ", k);
  if (k > kTopkMax) {
    // Beyond the kernel's shared-memory sort: the op's own log-probabilities, then a stable descending sort (the
    // reference's definition of the order; NaN rows sort as -inf and get ids -1).
    const at::Tensor logp = guided_log_softmax_cuda(logits, bias, gamma, temperature);
    const at::Tensor nan_row = logp.narrow(1, 0, 1).isnan();
    const at::Tensor keys = logp.masked_fill(logp.isnan(), -INFINITY);
    const at::Tensor order = std::get<1>(at::sort(keys, /*stable=*/true, /*dim=*/1, /*descending=*/true)).narrow(1, 0, k);
    return {logp.gather(1, order), order.masked_fill(nan_row, -1)};
  }
  at::Tensor values = output({p.n, k}, logits, &p.out_values);
  at::Tensor ids = output({p.n, k}, logits, &p.out_ids);
  p.k = k;
  if (k > 0) launch(Op::kTopkLogSoftmax, &launch_topk_log_softmax, p, logits);
  return {values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("topk_log_softmax", &topk_log_softmax_cuda); }
