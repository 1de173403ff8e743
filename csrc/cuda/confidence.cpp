// gtl::confidence for the CUDA dispatch key (KERNEL_SPEC §2 `confidence`): the argmax and a planner score (max_prob,
// margin or neg_entropy) of the guided distribution.
#include <string_view>

#include "glue.h"
#include "gtl/confidence_kind.h"

namespace {

using namespace gtl::cuda;

std::tuple<at::Tensor, at::Tensor> confidence_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                                  const at::Tensor& gamma, const at::Tensor& temperature,
                                                  c10::string_view kind) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("confidence", logits, bias, gamma, temperature);
  TORCH_CHECK_VALUE(gtl::parse_confidence_kind(std::string_view(kind.data(), kind.size()), &p.kind),
                    "confidence: kind must be one of ", gtl::kConfidenceKindList, ", got '", kind, "'");
  at::Tensor ids = output({p.n}, logits, &p.out_ids);
  at::Tensor scores = output({p.n}, logits, &p.out_values);
  launch(Op::kConfidence, &launch_confidence, p, logits);
  return {ids, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("confidence", &confidence_cuda); }
