// Torch glue of the CPU ops (register.cpp, the one CPU file that includes torch): checks of the normalized arguments (reference.py docstring) and their
// translation into the torch-free argument structs of gtl/cpu_common.h. The Python wrappers have already validated
// values; these checks guard the memory accesses when the ops are called directly through torch.ops.gtl.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>  // the light ATen headers above instead of ATen/ATen.h: register.cpp compiles ~2x faster

#include <optional>

#include "gtl/cpu_common.h"

namespace gtl::cpu {

inline DType dtype_of(const at::Tensor& t, const char* op, const char* name, bool allow_f64) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kF32;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kHalf:
      return DType::kF16;
    case at::kDouble:
      if (allow_f64) return DType::kF64;
      [[fallthrough]];
    default:
      TORCH_CHECK(false, op, ": ", name, " must be float32, bfloat16 or float16", allow_f64 ? " or float64" : "",
                  ", got ", t.scalar_type());
  }
}

// Rows with unit stride along the vocabulary (any row stride >= V, so padded vocabularies are read in place).
inline void check_rows(const at::Tensor& t, const char* op, const char* name, int64_t n, int64_t v) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == v, op, ": ", name, " must have shape [", n, ", ", v,
              "], got ", t.sizes());
  TORCH_CHECK(t.stride(1) == 1 || v == 1, op, ": ", name, " must have unit stride along the vocabulary");
  TORCH_CHECK(t.stride(0) >= 0, op, ": ", name, " must have a non-negative row stride");
}

// A per-row parameter as a contiguous [n] tensor of `type` (the caller keeps it alive).
inline at::Tensor per_row(const at::Tensor& t, const char* op, const char* name, int64_t n, at::ScalarType type) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == type, op, ": ", name, " must be ", type, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must have shape [", n, "], got ", t.sizes());
  return t.contiguous();
}

// Keeps the contiguous per-row tensors alive while the kernel reads them.
struct ScoreTensors {
  at::Tensor gamma, temperature;
};

inline ScoreArgs score_args(const char* op, const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                            const at::Tensor& gamma, const at::Tensor& temperature, ScoreTensors* keep) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be [N, V], got ", logits.sizes());
  ScoreArgs a;
  a.n = logits.size(0);
  a.v = logits.size(1);
  TORCH_CHECK(a.v >= 1, op, ": logits must have at least one column");
  TORCH_CHECK(a.v <= int64_t{0xFFFFFFFF}, op, ": V must fit the 32-bit Philox counter, got ", a.v);
  check_rows(logits, op, "logits", a.n, a.v);
  a.logits_dtype = dtype_of(logits, op, "logits", false);
  a.logits = logits.data_ptr();
  a.logits_stride = logits.stride(0);
  if (bias.has_value() && bias->defined()) {
    check_rows(*bias, op, "bias", a.n, a.v);
    a.bias_dtype = dtype_of(*bias, op, "bias", true);
    a.bias = bias->data_ptr();
    a.bias_stride = bias->stride(0);
  }
  keep->gamma = per_row(gamma, op, "gamma", a.n, at::kFloat);
  keep->temperature = per_row(temperature, op, "temperature", a.n, at::kFloat);
  a.gamma = keep->gamma.data_ptr<float>();
  a.temperature = keep->temperature.data_ptr<float>();
  a.threads = at::get_num_threads();
  return a;
}

// The candidate path's index (sample, masked_transition): int64 [n, v] token ids, or none. Returns the tensor to keep
// alive and sets a->index / a->index_stride.
inline at::Tensor candidate_index(const std::optional<at::Tensor>& index, const char* op, DrawArgs* a) {
  if (!index.has_value() || !index->defined()) return {};
  TORCH_CHECK(index->scalar_type() == at::kLong, op, ": index must be int64, got ", index->scalar_type());
  check_rows(*index, op, "index", a->s.n, a->s.v);
  a->index = index->data_ptr<int64_t>();
  a->index_stride = index->stride(0);
  return *index;
}

inline uint64_t offset_of(const at::Tensor& offset, const char* op) {
  TORCH_CHECK(offset.device().is_cpu() && offset.scalar_type() == at::kLong && offset.numel() == 1, op,
              ": offset must be a one-element int64 CPU tensor");
  return static_cast<uint64_t>(offset.item<int64_t>());
}

}  // namespace gtl::cpu
