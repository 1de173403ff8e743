// gtl::guided_log_softmax for the CUDA dispatch key (KERNEL_SPEC §2 `guided_log_softmax`, §4: invalid rows NaN, +inf
// tokens share the mass, T = 0 a point mass).
#include "glue.h"

namespace gtl::cuda {

at::Tensor guided_log_softmax_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                   const at::Tensor& gamma, const at::Tensor& temperature) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("guided_log_softmax", logits, bias, gamma, temperature);
  at::Tensor out = output(logits.sizes(), logits, &p.out_values);
  launch(Op::kGuidedLogSoftmax, &launch_guided_log_softmax, p, logits);
  return out;
}

}  // namespace gtl::cuda

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("guided_log_softmax", &gtl::cuda::guided_log_softmax_cuda); }
