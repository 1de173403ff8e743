// gtl::masked_transition for the CPU dispatch key (KERNEL_SPEC §2 `masked_transition`, §3, §4): one reverse step of
// absorbing diffusion. Unmasked positions are copied and positions that stay masked are decided from their own
// uniform; neither reads its logits row. The others draw as `sample` does, with mask_id excluded (gtl/cpu_draw.h); on
// the candidate path (index) the columns are candidates and those whose id is mask_id are excluded.
#include "glue.h"

#define GTL_CPU_OP_BODY "gtl/cpu_draw.h"
#include "gtl/cpu_multiversion.h"

namespace {

at::Tensor masked_transition_cpu(const at::Tensor& x_t, const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& gamma, const at::Tensor& temperature, int64_t top_k,
                                 const at::Tensor& stay_prob, int64_t mask_id, const at::Tensor& seeds,
                                 const at::Tensor& offset, const std::optional<at::Tensor>& index) {
  constexpr const char* op = "gtl::masked_transition";
  gtl::cpu::ScoreTensors keep;
  gtl::cpu::DrawArgs a;
  a.s = gtl::cpu::score_args(op, logits, bias, gamma, temperature, &keep);
  TORCH_CHECK(top_k >= 0, op, ": top_k must be >= 0, got ", top_k);
  const at::Tensor idx = gtl::cpu::candidate_index(index, op, &a);
  // On the candidate path mask_id is a token id of the full vocabulary, not a column.
  TORCH_CHECK(mask_id >= 0 && (idx.defined() || mask_id < a.s.v), op, ": mask_id must be in [0, ", a.s.v - 1,
              "], got ", mask_id);
  a.top_k = top_k;
  a.mask_id = mask_id;
  const at::Tensor xt = gtl::cpu::per_row(x_t, op, "x_t", a.s.n, at::kLong);
  const at::Tensor stay = gtl::cpu::per_row(stay_prob, op, "stay_prob", a.s.n, at::kFloat);
  const at::Tensor keys = gtl::cpu::per_row(seeds, op, "seeds", a.s.n, at::kLong);
  a.x_t = xt.data_ptr<int64_t>();
  a.stay_prob = stay.data_ptr<float>();
  a.seeds = keys.data_ptr<int64_t>();
  a.offset = gtl::cpu::offset_of(offset, op);
  at::Tensor out = at::empty({a.s.n}, x_t.options().dtype(at::kLong));
  a.out = out.data_ptr<int64_t>();
  if (a.s.n > 0) GTL_CPU_DISPATCH(draw_batch, a);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("masked_transition", &masked_transition_cpu); }
