// gtl::confidence for the CPU dispatch key (KERNEL_SPEC §2 `confidence`, §4): the argmax and a planner score
// (max_prob, margin or neg_entropy) of the guided distribution, in one read of each row (gtl/cpu_confidence.h).
#include "glue.h"
#include "gtl/confidence_kind.h"

#define GTL_CPU_OP_BODY "gtl/cpu_confidence.h"
#include "gtl/cpu_multiversion.h"

namespace {

std::tuple<at::Tensor, at::Tensor> confidence_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                                                  const at::Tensor& gamma, const at::Tensor& temperature,
                                                  c10::string_view kind) {
  constexpr const char* op = "gtl::confidence";
  gtl::cpu::ScoreTensors keep;
  gtl::cpu::ConfidenceArgs a;
  a.s = gtl::cpu::score_args(op, logits, bias, gamma, temperature, &keep);
  TORCH_CHECK_VALUE(gtl::parse_confidence_kind(std::string_view(kind.data(), kind.size()), &a.kind), op,
                    ": kind must be one of ", gtl::kConfidenceKindList, ", got '", kind, "'");
  at::Tensor argmax = at::empty({a.s.n}, logits.options().dtype(at::kLong));
  at::Tensor score = at::empty({a.s.n}, logits.options().dtype(at::kFloat));
  a.argmax = argmax.data_ptr<int64_t>();
  a.score = score.data_ptr<float>();
  if (a.s.n > 0) GTL_CPU_DISPATCH(confidence_batch, a);
  return {argmax, score};
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("confidence", &confidence_cpu); }
