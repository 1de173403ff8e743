// gtl::topk_log_softmax for the CPU dispatch key (KERNEL_SPEC §2 `topk_log_softmax`, §4): the k most probable tokens
// of the guided distribution and their log-probabilities, in one read of each row (gtl/cpu_topk_log_softmax.h).
#include "glue.h"

#define GTL_CPU_OP_BODY "gtl/cpu_topk_log_softmax.h"
#include "gtl/cpu_multiversion.h"

namespace {

std::tuple<at::Tensor, at::Tensor> topk_log_softmax_cpu(const at::Tensor& logits, int64_t k,
                                                        const std::optional<at::Tensor>& bias, const at::Tensor& gamma,
                                                        const at::Tensor& temperature) {
  constexpr const char* op = "gtl::topk_log_softmax";
  gtl::cpu::ScoreTensors keep;
  gtl::cpu::TopkArgs a;
  a.s = gtl::cpu::score_args(op, logits, bias, gamma, temperature, &keep);
  TORCH_CHECK(k >= 0 && k <= a.s.v, op, ": k must be in [0, ", a.s.v, "], got ", k);
  a.k = k;
  at::Tensor values = at::empty({a.s.n, k}, logits.options().dtype(at::kFloat));
  at::Tensor ids = at::empty({a.s.n, k}, logits.options().dtype(at::kLong));
  a.values = values.data_ptr<float>();
  a.ids = ids.data_ptr<int64_t>();
  if (a.s.n > 0 && k > 0) GTL_CPU_DISPATCH(topk_log_softmax_batch, a);
  return {values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("topk_log_softmax", &topk_log_softmax_cpu); }
