// The argument block of the CUDA kernels and the host-side launch plan (KERNEL_SPEC §2–§4). Plain C++ without CUDA
// or torch types: the torch glue (csrc/cuda/*.cpp, compiled by the host compiler) fills a Problem and sizes the
// workspace with make_plan(); the kernels (gtl/cuda_*.cuh, compiled by nvcc) read it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gtl/confidence_kind.h"
#include "gtl/philox.h"  // kChunk and the stream numbers of the two-level race (KERNEL_SPEC §3)

namespace gtl {
namespace cuda {

enum class DType : int32_t { kNone = 0, kFloat32 = 1, kBFloat16 = 2, kFloat16 = 3, kFloat64 = 4 };
enum class Op : int32_t { kGuidedLogSoftmax = 0, kSample = 1, kMaskedTransition = 2, kTopkLogSoftmax = 3, kConfidence = 4 };
using gtl::ConfidenceKind;  // gtl/confidence_kind.h

constexpr int kThreads = 256;          // every block-level kernel: the fixed reduction trees depend on it
constexpr int kWarps = kThreads / 32;  // warps of a row block
constexpr int kStatsWarps = 4;         // warps per block of the split statistics kernel (one chunk per warp)
constexpr int64_t kRowMaxChunks = 256;  // the one-block-per-row path keeps this many chunk statistics in shared memory
constexpr int64_t kTopkMax = 1024;     // topk_log_softmax gathers and sorts up to this many tokens in shared memory

// Statistics of one 1024-token chunk of one row (KERNEL_SPEC §3), computed by one warp in a fixed lane layout, so a
// row's result never depends on which block, kernel or launch configuration produced them.
//   m       max of z over the allowed tokens (+inf if one is +inf, -inf if none; NaN is ignored here)
//   s       sum of exp2((z - m) * k2) over the allowed finite tokens (valid when m is finite)
//   t       sum of exp2(d) * d, d = (z - m) * k2 (entropy; only computed for confidence/neg_entropy)
//   m2      second largest z, counting a repeated maximum twice (only for confidence/margin)
//   argmax  position in the chunk of the first z == m, or -1 (only when requested)
//   flags   bit 0: a NaN score; bits 1..: number of allowed +inf tokens
struct ChunkStats {
  float m, s, t, m2;
  int32_t argmax;
  uint32_t flags;
};

// Result of the top-k selection of one row for sample/masked_transition (KERNEL_SPEC §3 "allowed set"): a token v
// with score z is among the top_k iff key64(select_key(z), v) >= threshold (ordered by z, then by lower id; NaN sorts
// first so that a NaN row stays visibly invalid after the restriction).
struct RowSelect {
  uint64_t threshold;
};

// Normalized arguments (gtl_kernels/_library.py): rows of `logits` have unit stride; per-row vectors may have any
// stride (0 for a broadcast scalar). Unused fields stay null/zero.
struct Problem {
  // scores s = (logits + gamma * bias) / temperature (KERNEL_SPEC §1)
  const void* logits = nullptr;
  int64_t logits_stride = 0;
  DType logits_dtype = DType::kFloat32;
  const void* bias = nullptr;
  int64_t bias_stride = 0;
  DType bias_dtype = DType::kNone;
  const float* gamma = nullptr;
  int64_t gamma_stride = 0;
  const float* temperature = nullptr;
  int64_t temperature_stride = 0;
  int64_t n = 0;  // rows
  int64_t v = 0;  // vocabulary (or candidate columns)
  // randomness (KERNEL_SPEC §3)
  const int64_t* seeds = nullptr;
  int64_t seeds_stride = 0;
  const int64_t* offset = nullptr;  // int64 0-dim device tensor, read in the kernel (graph capture)
  int64_t top_k = 0;                // 0: no restriction (normalized: 0 when top_k >= v)
  const int64_t* index = nullptr;   // candidate path (sample, masked_transition): [n, v] token ids
  int64_t index_stride = 0;
  // masked_transition
  const int64_t* x_t = nullptr;
  int64_t x_t_stride = 0;
  const float* stay_prob = nullptr;
  int64_t stay_prob_stride = 0;
  int64_t mask_id = -1;
  // topk_log_softmax
  int64_t k = 0;
  // confidence
  ConfidenceKind kind = ConfidenceKind::kMaxProb;
  // outputs (contiguous, allocated by the glue)
  float* out_values = nullptr;  // guided_log_softmax [n, v]; topk values [n, k]; confidence scores [n]
  int64_t* out_ids = nullptr;   // sample/masked [n]; topk ids [n, k]; confidence argmax [n]
  // sample [n] (required there): the log-probability of the drawn token under the distribution it was drawn from
  // (KERNEL_SPEC §2 `sample`); null for masked_transition, whose schema returns the tokens only
  float* out_logprob = nullptr;
  // workspace (split path), carved by the launcher from one device buffer of Plan::workspace_bytes
  void* workspace = nullptr;
};

// How a call runs (KERNEL_SPEC §3 "batch invariance": both paths compute every chunk's statistics with the same warp
// code and reduce them with the same fixed block tree, so the choice never changes a result):
//   row path    one block of kThreads per row: chunk statistics in shared memory, then the op's finish;
//   split path  small batches (and very long rows): one warp per chunk over many blocks writes the statistics to a
//               global workspace, then one block per row (a row's chunks for guided_log_softmax's write) finishes.
struct Plan {
  bool split = false;
  int64_t chunks = 0;
  int64_t write_blocks = 1;  // guided_log_softmax, split path: blocks per row of the write kernel
  size_t stats_bytes = 0;    // workspace: ChunkStats [n, chunks]
  size_t select_bytes = 0;   // workspace: RowSelect [n] (top-k sampling on the split path)
  size_t workspace_bytes = 0;
};

GTL_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }  // host and device (philox.h)

inline Plan make_plan(Op op, const Problem& p, int num_sms) {
  Plan plan;
  plan.chunks = ceil_div(p.v, kChunk);
  if (p.n == 0 || p.v == 0) return plan;
  // The split path pays a second launch and a workspace round trip; it wins when too few rows exist to fill the
  // GPU with one block each (at least two resident blocks per multiprocessor), and it is the only path for rows
  // whose chunk statistics do not fit in shared memory.
  const bool few_rows = p.n < 2 * static_cast<int64_t>(num_sms > 0 ? num_sms : 1);
  plan.split = plan.chunks > kRowMaxChunks || (few_rows && plan.chunks > 1);
  if (!plan.split) return plan;
  plan.write_blocks = op == Op::kGuidedLogSoftmax ? ceil_div(plan.chunks, kWarps) : 1;
  const auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  plan.stats_bytes = align(static_cast<size_t>(p.n) * static_cast<size_t>(plan.chunks) * sizeof(ChunkStats));
  const bool selects = (op == Op::kSample || op == Op::kMaskedTransition) && p.top_k > 0;
  plan.select_bytes = selects ? align(static_cast<size_t>(p.n) * sizeof(RowSelect)) : 0;
  plan.workspace_bytes = plan.stats_bytes + plan.select_bytes;
  return plan;
}

}  // namespace cuda
}  // namespace gtl
