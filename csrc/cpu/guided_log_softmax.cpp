// gtl::guided_log_softmax for the CPU dispatch key (KERNEL_SPEC §2 `guided_log_softmax`, §4): fp32
// log_softmax((logits + gamma * bias) / T) with one read of the input (gtl/cpu_guided_log_softmax.h).
#include "glue.h"

#define GTL_CPU_OP_BODY "gtl/cpu_guided_log_softmax.h"
#include "gtl/cpu_multiversion.h"

namespace {

at::Tensor guided_log_softmax_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                                  const at::Tensor& gamma, const at::Tensor& temperature) {
  constexpr const char* op = "gtl::guided_log_softmax";
  gtl::cpu::ScoreTensors keep;
  gtl::cpu::GlsmArgs a;
  a.s = gtl::cpu::score_args(op, logits, bias, gamma, temperature, &keep);
  at::Tensor out = at::empty({a.s.n, a.s.v}, logits.options().dtype(at::kFloat));
  a.out = out.data_ptr<float>();
  if (a.s.n > 0) GTL_CPU_DISPATCH(guided_log_softmax_batch, a);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("guided_log_softmax", &guided_log_softmax_cpu); }
