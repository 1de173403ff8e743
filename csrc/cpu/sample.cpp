// gtl::sample for the CPU dispatch key (KERNEL_SPEC §2 `sample`, §3 randomness, §4 bad input): one draw per row by
// the two-level exponential race and its log-probability, in one read of each row (gtl/cpu_draw.h).
#include "glue.h"

#define GTL_CPU_OP_BODY "gtl/cpu_draw.h"
#include "gtl/cpu_multiversion.h"

namespace {

std::tuple<at::Tensor, at::Tensor> sample_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& bias, const at::Tensor& gamma,
                      const at::Tensor& temperature, int64_t top_k, const at::Tensor& seeds, const at::Tensor& offset,
                      const std::optional<at::Tensor>& index) {
  constexpr const char* op = "gtl::sample";
  gtl::cpu::ScoreTensors keep;
  gtl::cpu::DrawArgs a;
  a.s = gtl::cpu::score_args(op, logits, bias, gamma, temperature, &keep);
  TORCH_CHECK(top_k >= 0, op, ": top_k must be >= 0, got ", top_k);
  a.top_k = top_k;
  const at::Tensor keys = gtl::cpu::per_row(seeds, op, "seeds", a.s.n, at::kLong);
  a.seeds = keys.data_ptr<int64_t>();
  a.offset = gtl::cpu::offset_of(offset, op);
  const at::Tensor idx = gtl::cpu::candidate_index(index, op, &a);
  at::Tensor out = at::empty({a.s.n}, logits.options().dtype(at::kLong));
  at::Tensor logprob = at::empty({a.s.n}, logits.options().dtype(at::kFloat));
  a.out = out.data_ptr<int64_t>();
  a.logprob = logprob.data_ptr<float>();
  if (a.s.n > 0) GTL_CPU_DISPATCH(draw_batch, a);
  return {out, logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) { m.impl("sample", &sample_cpu); }
