// The gtl ops for the CPU dispatch key (KERNEL_SPEC §2-§4): per op, the checks of its normalized arguments
// (glue.h), its outputs, and the call of its torch-free kernel (kernels.h, csrc/cpu/<op>.cpp). The only file of the
// CPU extension that includes torch's headers besides glue.h: they take about 10 s to compile per file.
#include <ATen/ops/empty_like.h>

#include "glue.h"
#include "gtl/confidence_kind.h"
#include "gtl/philox.h"
#include "kernels.h"

namespace {

// §2 `sample`: one draw per row and its log-probability.
std::tuple<at::Tensor, at::Tensor> sample_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                                              const at::Tensor& gamma, const at::Tensor& temperature, int64_t top_k,
                                              const at::Tensor& seeds, const at::Tensor& offset,
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
  if (a.s.n > 0) gtl::cpu::run_draw(a);
  return {out, logprob};
}

// §2 `masked_transition`: one reverse step of absorbing diffusion. On the candidate path (index) the columns are
// candidates and those whose id is mask_id are excluded.
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
  if (a.s.n > 0) gtl::cpu::run_draw(a);
  return out;
}

// §2 `guided_log_softmax`: fp32 log_softmax((logits + gamma * bias) / T).
at::Tensor guided_log_softmax_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                                  const at::Tensor& gamma, const at::Tensor& temperature) {
  constexpr const char* op = "gtl::guided_log_softmax";
  gtl::cpu::ScoreTensors keep;
  gtl::cpu::GlsmArgs a;
  a.s = gtl::cpu::score_args(op, logits, bias, gamma, temperature, &keep);
  at::Tensor out = at::empty({a.s.n, a.s.v}, logits.options().dtype(at::kFloat));
  a.out = out.data_ptr<float>();
  if (a.s.n > 0) gtl::cpu::run_guided_log_softmax(a);
  return out;
}

// §2 `topk_log_softmax`: the k most probable tokens and their log-probabilities.
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
  if (a.s.n > 0 && k > 0) gtl::cpu::run_topk_log_softmax(a);
  return {values, ids};
}

// §2 `confidence`: the argmax and a planner score (max_prob, margin or neg_entropy).
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
  if (a.s.n > 0) gtl::cpu::run_confidence(a);
  return {argmax, score};
}

// §3: Random123 Philox-4x32-10 words for given keys and counters, so that the tests can check every backend's
// generator bit for bit.
at::Tensor philox_cpu(const at::Tensor& key, const at::Tensor& counter) {
  TORCH_CHECK(key.scalar_type() == at::kLong && counter.scalar_type() == at::kLong, "philox: key and counter must be int64");
  TORCH_CHECK(counter.dim() == key.dim() + 1 && counter.size(-1) == 4, "philox: counter must be key.shape + (4,)");
  TORCH_CHECK(counter.sizes().slice(0, key.dim()) == key.sizes(), "philox: counter must be key.shape + (4,)");
  const at::Tensor k = key.contiguous(), c = counter.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t* kp = k.data_ptr<int64_t>();
  const int64_t* cp = c.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, k.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t seed = static_cast<uint64_t>(kp[i]);
      const gtl::Philox4 r =
          gtl::philox4x32_10(static_cast<uint32_t>(cp[4 * i]), static_cast<uint32_t>(cp[4 * i + 1]),
                             static_cast<uint32_t>(cp[4 * i + 2]), static_cast<uint32_t>(cp[4 * i + 3]),
                             static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
      for (int j = 0; j < 4; ++j) op[4 * i + j] = r.w[j];
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CPU, m) {
  m.impl("sample", &sample_cpu);
  m.impl("masked_transition", &masked_transition_cpu);
  m.impl("guided_log_softmax", &guided_log_softmax_cpu);
  m.impl("topk_log_softmax", &topk_log_softmax_cpu);
  m.impl("confidence", &confidence_cpu);
  m.impl("philox", &philox_cpu);
}
