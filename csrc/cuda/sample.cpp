// gtl::sample for the CUDA dispatch key (KERNEL_SPEC §2 `sample`, §3: the two-level exponential race, the top-k
// restriction, the candidate index).
#include "glue.h"

namespace {

using namespace gtl::cuda;

// (tokens int64 [N], logprob float32 [N]): the log-probability of each drawn token comes from the same kernels, out
// of the race's own statistics (KERNEL_SPEC §2 `sample`).
std::tuple<at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                               const at::Tensor& gamma, const at::Tensor& temperature, int64_t top_k,
                                               const at::Tensor& seeds, const at::Tensor& offset,
                                               const c10::optional<at::Tensor>& index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("sample", logits, bias, gamma, temperature);
  TORCH_CHECK(top_k >= 0, "sample: top_k must be >= 0, got ", top_k);
  set_rng("sample", p, logits, seeds, offset);
  p.top_k = top_k >= p.v ? 0 : top_k;
  set_index("sample", p, logits, index);
  at::Tensor out = output({p.n}, logits, &p.out_ids);
  at::Tensor logprob = output({p.n}, logits, &p.out_logprob);
  launch(Op::kSample, &launch_sample, p, logits);
  return {out, logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("sample", &sample_cuda); }
