// Torch glue of the gtl_kernels._C_cuda extension: checks the normalized arguments (gtl_kernels/_library.py),
// allocates outputs and the launch plan's workspace, launches on the current stream without any host sync (seeds and
// offset stay on the device: graph-capturable) and registers the kernels for the CUDA dispatch key of the schemas
// defined in gtl_kernels/_library.py. The kernels themselves are torch-free (csrc/cuda/*.cu, gtl/cuda_*.cuh).
//
// csrc/cuda/tests/emu_backend.py mirrors this file for the host checks; keep the two in step.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "gtl/confidence_kind.h"
#include "launchers.h"

namespace {

using gtl::cuda::DType;
using gtl::cuda::Op;
using gtl::cuda::Problem;

DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    case at::kDouble: return DType::kFloat64;
    default: return DType::kNone;
  }
}

void check_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& logits) {
  TORCH_CHECK(t.device() == logits.device(), op, ": ", name, " is on ", t.device(), " but logits are on ",
              logits.device());
}

// A per-row vector: 1-D of N elements of `dtype`, any stride (0 for a broadcast scalar).
void check_per_row(const char* op, const char* name, const at::Tensor& t, const at::Tensor& logits,
                   at::ScalarType dtype) {
  check_device(op, name, t, logits);
  TORCH_CHECK(t.scalar_type() == dtype && t.dim() == 1 && t.size(0) == logits.size(0), op, ": ", name, " must be ",
              c10::toString(dtype), " [", logits.size(0), "], got ", t.scalar_type(), " ", t.sizes());
}

// Rows with unit stride along the vocabulary (any stride between rows, 0 included).
void check_rows(const char* op, const char* name, const at::Tensor& t, const at::Tensor& logits) {
  check_device(op, name, t, logits);
  TORCH_CHECK(t.sizes() == logits.sizes(), op, ": ", name, " must have the shape of logits ", logits.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, op, ": ", name, " rows must have unit stride");
}

Problem scores_problem(const char* op, const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                       const at::Tensor& gamma, const at::Tensor& temperature) {
  TORCH_CHECK(logits.is_cuda(), op, ": logits must be a CUDA tensor");
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be [N, V], got ", logits.sizes());
  const DType ld = dtype_of(logits.scalar_type());
  TORCH_CHECK(ld == DType::kFloat32 || ld == DType::kBFloat16 || ld == DType::kFloat16, op,
              ": logits must be float32, bfloat16 or float16, got ", logits.scalar_type());
  check_rows(op, "logits", logits, logits);
  check_per_row(op, "gamma", gamma, logits, at::kFloat);
  check_per_row(op, "temperature", temperature, logits, at::kFloat);
  Problem p;
  p.logits = logits.data_ptr();
  p.logits_stride = logits.stride(0);
  p.logits_dtype = ld;
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    check_rows(op, "bias", b, logits);
    p.bias_dtype = dtype_of(b.scalar_type());
    TORCH_CHECK(p.bias_dtype != DType::kNone, op, ": bias must be a float tensor, got ", b.scalar_type());
    p.bias = b.data_ptr();
    p.bias_stride = b.stride(0);
  }
  p.gamma = gamma.data_ptr<float>();
  p.gamma_stride = gamma.stride(0);
  p.temperature = temperature.data_ptr<float>();
  p.temperature_stride = temperature.stride(0);
  p.n = logits.size(0);
  p.v = logits.size(1);
  return p;
}

void set_rng(const char* op, Problem& p, const at::Tensor& logits, const at::Tensor& seeds, const at::Tensor& offset) {
  check_per_row(op, "seeds", seeds, logits, at::kLong);
  check_device(op, "offset", offset, logits);
  TORCH_CHECK(offset.scalar_type() == at::kLong && offset.numel() == 1, op, ": offset must be a one-element int64 tensor");
  p.seeds = seeds.data_ptr<int64_t>();
  p.seeds_stride = seeds.stride(0);
  p.offset = offset.data_ptr<int64_t>();  // read by the kernel: no host sync
}

// The candidate path's index (sample, masked_transition): int64 token ids of the shape of logits, or none.
void set_index(const char* op, Problem& p, const at::Tensor& logits, const c10::optional<at::Tensor>& index) {
  if (!index.has_value() || !index->defined()) return;
  check_rows(op, "index", *index, logits);
  TORCH_CHECK(index->scalar_type() == at::kLong, op, ": index must be int64, got ", index->scalar_type());
  p.index = index->data_ptr<int64_t>();
  p.index_stride = index->stride(0);
}

int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Allocates the plan's workspace (if any) into `p` and returns it (kept alive until the launch is enqueued; the
// caching allocator orders its reuse on the current stream).
at::Tensor workspace(Op op, Problem& p, const at::Tensor& logits, int sms) {
  const gtl::cuda::Plan plan = gtl::cuda::make_plan(op, p, sms);
  if (plan.workspace_bytes == 0) return at::Tensor();
  at::Tensor ws = at::empty({static_cast<int64_t>(plan.workspace_bytes)}, logits.options().dtype(at::kByte));
  p.workspace = ws.data_ptr();
  return ws;
}

at::Tensor guided_log_softmax_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                   const at::Tensor& gamma, const at::Tensor& temperature) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("guided_log_softmax", logits, bias, gamma, temperature);
  at::Tensor out = at::empty(logits.sizes(), logits.options().dtype(at::kFloat));
  if (p.n == 0) return out;
  p.out_values = out.data_ptr<float>();
  const int sms = num_sms();
  const at::Tensor ws = workspace(Op::kGuidedLogSoftmax, p, logits, sms);
  C10_CUDA_CHECK(gtl::cuda::launch_guided_log_softmax(p, sms, at::cuda::getCurrentCUDAStream()));
  return out;
}

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
  at::Tensor out = at::empty({p.n}, logits.options().dtype(at::kLong));
  at::Tensor logprob = at::empty({p.n}, logits.options().dtype(at::kFloat));
  if (p.n == 0) return {out, logprob};
  p.out_ids = out.data_ptr<int64_t>();
  p.out_logprob = logprob.data_ptr<float>();
  const int sms = num_sms();
  const at::Tensor ws = workspace(Op::kSample, p, logits, sms);
  C10_CUDA_CHECK(gtl::cuda::launch_sample(p, sms, at::cuda::getCurrentCUDAStream()));
  return {out, logprob};
}

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
  at::Tensor out = at::empty({p.n}, logits.options().dtype(at::kLong));
  if (p.n == 0) return out;
  p.out_ids = out.data_ptr<int64_t>();
  const int sms = num_sms();
  const at::Tensor ws = workspace(Op::kMaskedTransition, p, logits, sms);
  C10_CUDA_CHECK(gtl::cuda::launch_masked_transition(p, sms, at::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> topk_log_softmax_cuda(const at::Tensor& logits, int64_t k,
                                                        const c10::optional<at::Tensor>& bias, const at::Tensor& gamma,
                                                        const at::Tensor& temperature) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("topk_log_softmax", logits, bias, gamma, temperature);
  TORCH_CHECK(k >= 0 && k <= p.v, "topk_log_softmax: k must be in [0, ", p.v, "], got ", k);
  if (k > gtl::cuda::kTopkMax) {
    // Beyond the kernel's shared-memory sort: the op's own log-probabilities, then a stable descending sort (the
    // reference's definition of the order; NaN rows sort as -inf and get ids -1).
    const at::Tensor logp = guided_log_softmax_cuda(logits, bias, gamma, temperature);
    const at::Tensor nan_row = logp.narrow(1, 0, 1).isnan();
    const at::Tensor keys = logp.masked_fill(logp.isnan(), -INFINITY);
    const at::Tensor order = std::get<1>(at::sort(keys, /*stable=*/true, /*dim=*/1, /*descending=*/true)).narrow(1, 0, k);
    return {logp.gather(1, order), order.masked_fill(nan_row, -1)};
  }
  at::Tensor values = at::empty({p.n, k}, logits.options().dtype(at::kFloat));
  at::Tensor ids = at::empty({p.n, k}, logits.options().dtype(at::kLong));
  if (p.n == 0 || k == 0) return {values, ids};
  p.k = k;
  p.out_values = values.data_ptr<float>();
  p.out_ids = ids.data_ptr<int64_t>();
  const int sms = num_sms();
  const at::Tensor ws = workspace(Op::kTopkLogSoftmax, p, logits, sms);
  C10_CUDA_CHECK(gtl::cuda::launch_topk_log_softmax(p, sms, at::cuda::getCurrentCUDAStream()));
  return {values, ids};
}

std::tuple<at::Tensor, at::Tensor> confidence_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                                  const at::Tensor& gamma, const at::Tensor& temperature,
                                                  c10::string_view kind) {
  const c10::cuda::CUDAGuard guard(logits.device());
  Problem p = scores_problem("confidence", logits, bias, gamma, temperature);
  TORCH_CHECK_VALUE(gtl::parse_confidence_kind(std::string_view(kind.data(), kind.size()), &p.kind),
                    "confidence: kind must be one of ", gtl::kConfidenceKindList, ", got '", kind, "'");
  at::Tensor ids = at::empty({p.n}, logits.options().dtype(at::kLong));
  at::Tensor scores = at::empty({p.n}, logits.options().dtype(at::kFloat));
  if (p.n == 0) return {ids, scores};
  p.out_ids = ids.data_ptr<int64_t>();
  p.out_values = scores.data_ptr<float>();
  const int sms = num_sms();
  const at::Tensor ws = workspace(Op::kConfidence, p, logits, sms);
  C10_CUDA_CHECK(gtl::cuda::launch_confidence(p, sms, at::cuda::getCurrentCUDAStream()));
  return {ids, scores};
}

at::Tensor philox_cuda(const at::Tensor& key, const at::Tensor& counter) {
  TORCH_CHECK(key.scalar_type() == at::kLong && counter.scalar_type() == at::kLong, "philox: key and counter must be int64");
  TORCH_CHECK(counter.dim() == key.dim() + 1 && counter.size(-1) == 4, "philox: counter must be key.shape + (4,)");
  TORCH_CHECK(counter.sizes().slice(0, key.dim()) == key.sizes(), "philox: counter must be key.shape + (4,)");
  const c10::cuda::CUDAGuard guard(key.device());
  const at::Tensor k = key.contiguous(), c = counter.contiguous();
  at::Tensor out = at::empty_like(c);
  C10_CUDA_CHECK(gtl::launch_philox(k.data_ptr<int64_t>(), c.data_ptr<int64_t>(), out.data_ptr<int64_t>(), k.numel(),
                                    at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gtl, CUDA, m) {
  m.impl("guided_log_softmax", &guided_log_softmax_cuda);
  m.impl("sample", &sample_cuda);
  m.impl("masked_transition", &masked_transition_cuda);
  m.impl("topk_log_softmax", &topk_log_softmax_cuda);
  m.impl("confidence", &confidence_cuda);
  m.impl("philox", &philox_cuda);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "gtl_kernels CUDA kernels (registered for the CUDA key)"; }
