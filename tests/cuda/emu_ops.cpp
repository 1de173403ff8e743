// The CUDA kernels of gtl/cuda_ops.cuh run on the host through cuda_emu.h, behind a C ABI for ctypes
// (tests/cuda/emu_backend.py). Buffers come from emu_alloc: each ends against an inaccessible page, so a kernel
// that reads or writes past the end of an input, output or workspace faults here as it would under compute-sanitizer.
#include "cuda_emu.h"
// clang-format off
#include "gtl/cuda_ops.cuh"
// clang-format on

#include <cstddef>
#include <map>

namespace {

struct Mapping {
  char* base;
  size_t bytes;
};

std::map<void*, Mapping>& mappings() {
  static std::map<void*, Mapping> m;
  return m;
}

}  // namespace

extern "C" {

// `bytes` of memory whose last byte (aligned = 0) or last 16-byte block (aligned = 1) touches a guard page.
void* gtl_emu_alloc(size_t bytes, int aligned) {
  const size_t page = 4096, span = aligned ? (bytes + 15) / 16 * 16 : bytes;
  const size_t data_pages = (span + page - 1) / page, total = (data_pages + 2) * page;
  void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(m);
  mprotect(base, page, PROT_NONE);
  mprotect(base + (data_pages + 1) * page, page, PROT_NONE);
  char* p = base + (data_pages + 1) * page - span;
  mappings()[p] = Mapping{base, total};
  return p;
}

void gtl_emu_free(void* p) {
  auto it = mappings().find(p);
  if (it == mappings().end()) return;
  munmap(it->second.base, it->second.bytes);
  mappings().erase(it);
}

// Field offsets of gtl::cuda::Problem, for the ctypes mirror to check its layout against.
int gtl_emu_problem_layout(int64_t* out, int capacity) {
  using gtl::cuda::Problem;
  const int64_t offsets[] = {
      offsetof(Problem, logits),    offsetof(Problem, logits_stride),      offsetof(Problem, logits_dtype),
      offsetof(Problem, bias),      offsetof(Problem, bias_stride),        offsetof(Problem, bias_dtype),
      offsetof(Problem, gamma),     offsetof(Problem, gamma_stride),       offsetof(Problem, temperature),
      offsetof(Problem, temperature_stride), offsetof(Problem, n),         offsetof(Problem, v),
      offsetof(Problem, seeds),     offsetof(Problem, seeds_stride),       offsetof(Problem, offset),
      offsetof(Problem, top_k),     offsetof(Problem, index),              offsetof(Problem, index_stride),
      offsetof(Problem, x_t),       offsetof(Problem, x_t_stride),         offsetof(Problem, stay_prob),
      offsetof(Problem, stay_prob_stride), offsetof(Problem, mask_id),     offsetof(Problem, k),
      offsetof(Problem, kind),      offsetof(Problem, out_values),         offsetof(Problem, out_ids),
      offsetof(Problem, out_logprob), offsetof(Problem, workspace),        sizeof(Problem)};
  const int n = static_cast<int>(sizeof(offsets) / sizeof(offsets[0]));
  for (int i = 0; i < n && i < capacity; ++i) out[i] = offsets[i];
  return n;
}

// Runs op `op` (gtl::cuda::Op) on `p` as launch_op would on a GPU with `num_sms` multiprocessors; returns the
// path taken (0 row, 1 split). The workspace is poisoned with NaN bytes.
int gtl_emu_run(int op, const gtl::cuda::Problem* problem, int num_sms) {
  using namespace gtl::cuda;
  Problem p = *problem;
  const Op kind = static_cast<Op>(op);
  const Plan plan = make_plan(kind, p, num_sms);
  void* ws = nullptr;
  if (plan.workspace_bytes > 0) {
    ws = gtl_emu_alloc(plan.workspace_bytes, 1);
    std::memset(ws, 0xff, plan.workspace_bytes);
    p.workspace = ws;
  }
  emu::Launcher launch;
  switch (kind) {
    case Op::kGuidedLogSoftmax: run_op<Op::kGuidedLogSoftmax>(p, plan, launch); break;
    case Op::kSample: run_op<Op::kSample>(p, plan, launch); break;
    case Op::kMaskedTransition: run_op<Op::kMaskedTransition>(p, plan, launch); break;
    case Op::kTopkLogSoftmax: run_op<Op::kTopkLogSoftmax>(p, plan, launch); break;
    case Op::kConfidence: run_op<Op::kConfidence>(p, plan, launch); break;
  }
  if (ws) gtl_emu_free(ws);
  return plan.split ? 1 : 0;
}

// The device helpers, for unit checks against float64.
float gtl_emu_neg_log2_exponential(uint64_t x) { return gtl::cuda::neg_log2_exponential(x); }
uint32_t gtl_emu_ordered_key(float x) { return gtl::cuda::ordered_key(x); }
float gtl_emu_key_to_float(uint32_t k) { return gtl::cuda::key_to_float(k); }
int gtl_emu_temperature_mode(float t) { return gtl::cuda::temperature_mode(t); }
float gtl_emu_f16_to_float(uint16_t h) { return gtl::cuda::to_float(gtl::cuda::f16{h}); }

}  // extern "C"
