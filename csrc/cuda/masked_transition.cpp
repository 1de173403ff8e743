// gtl::masked_transition for the CUDA dispatch key (KERNEL_SPEC §2 `masked_transition`, §3: the stay decision
// U(0, stream 1) < stay_prob, then the race without mask_id; on the candidate path, without the columns whose id is
// mask_id).
#include "glue.h"

namespace {

using namespace gtl::cuda;

at::Tensor masked_transition_cuda(const at::Tensor& x_t, const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                  const at::Tensor& gamma, const at::Tensor& temperature, int64_t top_k,
                                  const at::Tensor& stay_prob, int64_t mask_id, const at::Tensor& seeds,
                                  const at::Tensor& offset, const c10::optional<at::Tensor>& index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("masked_transition", logits, bias, gamma, temperature);
  TORCH_CHECK(top_k >= 0, "masked_transition: top_k must be >= 0, got ", top_k);
  set_index("masked_transition", p, logits, index);
  // On the candidate path mask_id is a token id of the full vocabulary, not a column.
  TORCH_CHECK(mask_id >= 0 && (p.index != nullptr || mask_id < p.v), "masked_transition: mask_id must be in [0, ",
              p.v, "), got ", mask_id);
  check_per_row("masked_transition", "x_t", x_t, logits, at::kLong);
  check_per_row("masked_transition", "stay_prob", stay_prob, logits, at::kFloat);
  set_rng("masked_transition", p, logits, seeds, offset);
  p.top_k = top_k >= p.v ? 0 : top_k;
  p.x_t = x_t.data_ptr<int64_t>();
  p.x_t_stride = x_t.stride(0);
  p.stay_prob = stay_prob.data_ptr<float>();
  p.stay_prob_stride = stay_prob.stride(0);
  p.mask_id = mask_id;
  // p.out_logprob stays null: masked_transition returns the tokens only (its schema, gtl_kernels/_library.py)
  at::Tensor out = output({p.n}, logits, &p.out_ids);
  launch(Op::kMaskedTransition, &launch_masked_transition, p, logits);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) { m.impl("masked_transition", &masked_transition_cuda); }
