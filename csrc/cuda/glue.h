// Torch glue shared by the CUDA op files: checks of the normalized arguments (gtl_kernels/_library.py), their
// translation into the torch-free Problem of gtl/cuda_problem.h, and the ending every op shares. Launches go on the
// current stream without any host sync (seeds and offset stay on the device), so every op is graph-capturable.
//
// tests/cuda/emu_backend.py mirrors these checks and the op files (csrc/cuda/<op>.cpp) for the host checks; keep them
// in step.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>  // the light ATen headers instead of torch/extension.h, as in csrc/cpu/glue.h

#include "launchers.h"

namespace gtl::cuda {

inline DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    case at::kDouble: return DType::kFloat64;
    default: return DType::kNone;
  }
}

inline void check_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& logits) {
  TORCH_CHECK(t.device() == logits.device(), op, ": ", name, " is on ", t.device(), " but logits are on ",
              logits.device());
}

// A per-row vector: 1-D of N elements of `dtype`, any stride (0 for a broadcast scalar).
inline void check_per_row(const char* op, const char* name, const at::Tensor& t, const at::Tensor& logits,
                          at::ScalarType dtype) {
  check_device(op, name, t, logits);
  TORCH_CHECK(t.scalar_type() == dtype && t.dim() == 1 && t.size(0) == logits.size(0), op, ": ", name, " must be ",
              c10::toString(dtype), " [", logits.size(0), "], got ", t.scalar_type(), " ", t.sizes());
}

// Rows with unit stride along the vocabulary (any stride between rows, 0 included).
inline void check_rows(const char* op, const char* name, const at::Tensor& t, const at::Tensor& logits) {
  check_device(op, name, t, logits);
  TORCH_CHECK(t.sizes() == logits.sizes(), op, ": ", name, " must have the shape of logits ", logits.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, op, ": ", name, " rows must have unit stride");
}

inline Problem scores_problem(const char* op, const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
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

inline void set_rng(const char* op, Problem& p, const at::Tensor& logits, const at::Tensor& seeds,
                    const at::Tensor& offset) {
  check_per_row(op, "seeds", seeds, logits, at::kLong);
  check_device(op, "offset", offset, logits);
  TORCH_CHECK(offset.scalar_type() == at::kLong && offset.numel() == 1, op, ": offset must be a one-element int64 tensor");
  p.seeds = seeds.data_ptr<int64_t>();
  p.seeds_stride = seeds.stride(0);
  p.offset = offset.data_ptr<int64_t>();  // read by the kernel: no host sync
}

// The candidate path's index (sample, masked_transition): int64 token ids of the shape of logits, or none.
inline void set_index(const char* op, Problem& p, const at::Tensor& logits, const c10::optional<at::Tensor>& index) {
  if (!index.has_value() || !index->defined()) return;
  check_rows(op, "index", *index, logits);
  TORCH_CHECK(index->scalar_type() == at::kLong, op, ": index must be int64, got ", index->scalar_type());
  p.index = index->data_ptr<int64_t>();
  p.index_stride = index->stride(0);
}

inline int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Allocates the plan's workspace (if any) into `p` and returns it (kept alive until the launch is enqueued; the
// caching allocator orders its reuse on the current stream).
inline at::Tensor workspace(Op op, Problem& p, const at::Tensor& logits, int sms) {
  const Plan plan = make_plan(op, p, sms);
  if (plan.workspace_bytes == 0) return at::Tensor();
  at::Tensor ws = at::empty({static_cast<int64_t>(plan.workspace_bytes)}, logits.options().dtype(at::kByte));
  p.workspace = ws.data_ptr();
  return ws;
}

// An output on the device of logits, with `*slot` (one of Problem's out_* fields) pointing at it: the slot's type
// fixes the dtype, so an output cannot be allocated as one type and written as another.
template <class T>
at::Tensor output(at::IntArrayRef shape, const at::Tensor& logits, T** slot) {
  at::Tensor t = at::empty(shape, logits.options().dtype(c10::CppTypeToScalarType<T>::value));
  *slot = t.data_ptr<T>();
  return t;
}

using Launcher = cudaError_t (*)(const Problem&, int, cudaStream_t);

// The ending every op shares once its outputs are allocated: without rows there is nothing to launch; otherwise the
// workspace of `op`'s plan, then `launcher` (`op`'s, launchers.h) on the current stream, its launch error raised.
// The workspace is planned with the multiprocessor count the launcher is given, so the launcher's plan fits it.
inline void launch(Op op, Launcher launcher, Problem& p, const at::Tensor& logits) {
  if (p.n == 0) return;
  const int sms = num_sms();
  const at::Tensor ws = workspace(op, p, logits, sms);
  C10_CUDA_CHECK(launcher(p, sms, at::cuda::getCurrentCUDAStream()));
}

// Also the fallback of topk_log_softmax for k > kTopkMax (csrc/cuda/topk_log_softmax.cpp).
at::Tensor guided_log_softmax_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& bias,
                                   const at::Tensor& gamma, const at::Tensor& temperature);

}  // namespace gtl::cuda
