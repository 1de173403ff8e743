// The five ops as CUDA kernels (KERNEL_SPEC §2–§4): per-op finishes, the kernels of the row and split paths, and
// the dispatch that launches them through a Launcher policy (`<<<>>>` on the GPU, tests/cuda/cuda_emu.h on the
// host), so the GPU build and the host checks run the same launch plan.
#pragma once

#include <type_traits>

#include "gtl/cuda_rows.cuh"
#include "gtl/cuda_select.cuh"

namespace gtl {
namespace cuda {

// Device views of the split-path workspace (see Plan).
struct Work {
  ChunkStats* stats;   // [n, chunks]
  RowSelect* select;   // [n]
  int64_t chunks;
};

// What an op computes, by op and variant (sample/masked_transition: 1 = top-k restricted; confidence: the kind).
template <Op kOp, int kVariant>
struct Traits {
  static constexpr bool kRace = kOp == Op::kSample || kOp == Op::kMaskedTransition;
  static constexpr bool kSelect = kRace && kVariant == 1;
  static constexpr bool kTopk = kOp == Op::kTopkLogSoftmax;
  static constexpr bool kSecond = kOp == Op::kConfidence && kVariant == static_cast<int>(ConfidenceKind::kMargin);
  static constexpr bool kEntropy = kOp == Op::kConfidence && kVariant == static_cast<int>(ConfidenceKind::kNegEntropy);
  static constexpr bool kAlwaysArgmax = kOp == Op::kConfidence;
};

// ------------------------------------------------------------------------------------------------------------------
// Row prologue: parameters, the masked-transition decision (KERNEL_SPEC §2: unmasked rows are copied and a row that
// stays masked is decided by U(0, stream 1) < stay_prob before the token; neither reads its logits)
// ------------------------------------------------------------------------------------------------------------------

struct Rng {
  uint64_t seed = 0, offset = 0;
};

template <class TL, Op kOp>
GTL_DEV bool prepare_row(const Problem& p, int64_t r, RowCtx<TL>& row, Rng& rng, int64_t& decided) {
  row = make_row<TL>(p, r);
  if constexpr (kOp == Op::kSample || kOp == Op::kMaskedTransition) {
    rng.seed = static_cast<uint64_t>(p.seeds[row_offset(r, p.seeds_stride)]);
    rng.offset = static_cast<uint64_t>(*p.offset);  // device scalar: no host sync, graph-capturable
  }
  if constexpr (kOp == Op::kMaskedTransition) {
    row.mask_id = p.mask_id;
    if (p.index != nullptr) row.excl_ids = p.index + row_offset(r, p.index_stride);  // the candidate path
    const int64_t x = p.x_t[row_offset(r, p.x_t_stride)];
    if (x != p.mask_id) {
      decided = x;
      return false;
    }
    // The reference's float64 uniform, compared with the float32 stay_prob widened to double: the same decision.
    const double u = uniform64(random_bits64(rng.seed, 0u, rng.offset, kStreamStay));
    if (u < static_cast<double>(p.stay_prob[row_offset(r, p.stay_prob_stride)])) {
      decided = p.mask_id;
      return false;
    }
  }
  return true;
}

template <Op kOp>
GTL_HD bool wants_argmax(int mode) {
  return mode == kModeGreedy || Traits<kOp, 0>::kAlwaysArgmax;
}

// ------------------------------------------------------------------------------------------------------------------
// Output form of guided_log_softmax / topk_log_softmax (KERNEL_SPEC §2, §4)
// ------------------------------------------------------------------------------------------------------------------

enum FormMode : int { kFormInvalid = 0, kFormGreedy = 1, kFormPosInf = 2, kFormNormal = 3 };

struct OutForm {
  int mode;
  float m, k2, log2s, inf_value;
  int64_t argmax;
};

GTL_DEV OutForm make_form(int row_mode, const RowStats& rs, float k2) {
  OutForm f{kFormInvalid, 0.f, k2, 0.f, 0.f, -1};
  if (row_mode == kModeInvalid || !row_valid(rs)) return f;
  if (row_mode == kModeGreedy) {
    f.mode = kFormGreedy;  // the T -> 0 point mass on the first maximum
    f.argmax = rs.argmax;
  } else if (rs.m == kInf) {
    f.mode = kFormPosInf;  // +inf tokens share the mass equally
    f.inf_value = 0.f - logf(static_cast<float>(rs.n_inf));
  } else {
    f.mode = kFormNormal;
    f.m = rs.m;
    f.log2s = log2f(rs.s);
  }
  return f;
}

// log p(v) = (z - m) / T - ln S, evaluated in log2 units: ((z - m) * k2 - log2 S) * ln 2.
GTL_HD float out_value(const OutForm& f, float z, int64_t v) {
  switch (f.mode) {
    case kFormNormal: return (log2_weight(z, f.m, f.k2) - f.log2s) * kLn2;
    case kFormPosInf: return z == kInf ? f.inf_value : -kInf;
    case kFormGreedy: return v == f.argmax ? 0.f : -kInf;
    default: return NAN;
  }
}

// guided_log_softmax: one warp writes chunk c of the row (vector stores when the output row is 16-byte aligned).
template <class TL>
GTL_DEV void write_chunk(const RowCtx<TL>& row, const OutForm& f, int64_t c, int lane, float* out_row) {
  constexpr int kVec = Layout<TL>::kVec, kN = Layout<TL>::kPerLane;
  float z[kN];
  if (f.mode == kFormInvalid) {
#pragma unroll
    for (int i = 0; i < kN; ++i) z[i] = 0.f;  // not read: the row is NaN whatever its scores
  } else {
    load_chunk(row, c, lane, z);
  }
  const int64_t base = c * kChunk;
  const bool vec = base + kChunk <= row.v && aligned_to(out_row, 16);
#pragma unroll
  for (int j = 0; j < Layout<TL>::kGroups; ++j) {
    const int64_t v0 = base + (j * 32 + lane) * kVec;
    float o[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) o[e] = out_value(f, z[j * kVec + e], v0 + e);
    if (vec) {
#pragma unroll
      for (int q = 0; q < kVec / 4; ++q)
        reinterpret_cast<float4*>(out_row + v0)[q] = make_float4(o[4 * q], o[4 * q + 1], o[4 * q + 2], o[4 * q + 3]);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e)
        if (v0 + e < row.v) out_row[v0 + e] = o[e];
    }
  }
}

// ------------------------------------------------------------------------------------------------------------------
// The two-level exponential race (KERNEL_SPEC §3)
// ------------------------------------------------------------------------------------------------------------------

// Chunk race over the chunk statistics, then the token race inside the chosen chunk (re-read: at most 1024 scores).
// Keys are in log2 units relative to the row maximum: chunk  (m_c - m) * k2 + log2 s_c - log2 E(c, stream 2),
// token  (z - m) * k2 - log2 E(v, stream 0); with +inf tokens the masses are log2 (count) and 0. The argmax is
// exact with ties toward the lower index, so the result does not depend on how chunks or tokens meet threads.
// `row` must be valid and sampled (T > 0).
//
// The drawn token (`id`, every thread) and, in the one thread that raced it (`mine`), its log2 weight `d` =
// (z - m) * k2 (0 with +inf tokens): what sample's log-probability needs besides the row statistics, kept from the
// token race instead of re-read.
struct Drawn {
  int64_t id;
  float d;
  bool mine;
};

template <class TL>
GTL_DEV Drawn race(const RowCtx<TL>& row, const ChunkStats* cs, int64_t n_chunks, const RowStats& rs, const Rng& rng,
                   Scratch& sc) {
  const int tid = threadIdx.x;
  const bool pos_inf = rs.m == kInf;
  KeyId best = key_id_none();
  for (int64_t c = tid; c < n_chunks; c += kThreads) {
    const ChunkStats st = cs[c];
    float mass;
    if (pos_inf) {
      const uint32_t n = st.flags >> 1;
      if (n == 0) continue;
      mass = log2f(static_cast<float>(n));
    } else {
      if (!(st.m > -kInf)) continue;
      mass = log2_weight(st.m, rs.m, row.k2) + log2f(st.s);
    }
    const KeyId cand{mass + neg_log2_exponential(random_bits64(rng.seed, static_cast<uint32_t>(c), rng.offset, kStreamChunk)), c};
    if (beats(cand, best)) best = cand;
  }
  const int64_t chosen = block_best(best, sc.k).id;
  KeyId tok = key_id_none();
  float tok_d = 0.f;
  for (int i = tid; i < kChunk; i += kThreads) {
    const int64_t v = chosen * kChunk + i;
    if (v >= row.v) break;
    const float z = load_z(row, v);
    const bool allowed = pos_inf ? z == kInf : (z > -kInf && z < kInf);
    if (!allowed) continue;
    const float d = pos_inf ? 0.f : log2_weight(z, rs.m, row.k2);
    const KeyId cand{d + neg_log2_exponential(random_bits64(rng.seed, static_cast<uint32_t>(v), rng.offset, kStreamToken)), v};
    if (beats(cand, tok)) {
      tok = cand;
      tok_d = d;
    }
  }
  const int64_t won = block_best(tok, sc.k).id;
  return Drawn{won, tok_d, tok.id == won};  // token v is raced by thread v % kThreads only: one thread is `mine`
}

// ------------------------------------------------------------------------------------------------------------------
// Top-k selection sources
// ------------------------------------------------------------------------------------------------------------------

// Calls visit(key64(key_of(z, v), v)) for every token of the row; warp w reads chunks w, w + kWarps, ...
template <class TL, class KeyOf, class Visit>
GTL_DEV void for_each_row_key(const RowCtx<TL>& row, KeyOf key_of, Visit& visit) {
  constexpr int kN = Layout<TL>::kPerLane;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_chunks = ceil_div(row.v, kChunk);
  for (int64_t c = warp; c < n_chunks; c += kWarps) {
    float z[kN];
    load_chunk(row, c, lane, z);
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const int64_t v = c * kChunk + lane_position<TL>(lane, i);
      if (v < row.v) visit(key64(key_of(z[i], v), v));
    }
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Shared memory of a row block
// ------------------------------------------------------------------------------------------------------------------

struct NoSelect {};

template <bool kStatsInSmem, bool kSelectSmem, bool kGather>
struct RowSmem {
  union {
    ChunkStats cs[kStatsInSmem ? kRowMaxChunks : 1];
    typename std::conditional<kSelectSmem, SelectSmem<kGather>, NoSelect>::type sel;
  } u;
  Scratch sc;
};

// ------------------------------------------------------------------------------------------------------------------
// One row, by one block: the shared body of the row path (kFromWs = false: statistics computed here) and of the split
// path's finish (kFromWs = true: statistics read from the workspace)
// ------------------------------------------------------------------------------------------------------------------

template <class TL, Op kOp, int kVariant, bool kFromWs, class Smem>
GTL_DEV void process_row(const Problem& p, const Work& w, int64_t r, Smem& sm) {
  using Tr = Traits<kOp, kVariant>;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t n_chunks = ceil_div(p.v, kChunk);
  RowCtx<TL> row;
  Rng rng;
  int64_t decided = -1;
  if (!prepare_row<TL, kOp>(p, r, row, rng, decided)) {
    if (tid == 0) p.out_ids[r] = decided;
    return;
  }
  if constexpr (kOp != Op::kGuidedLogSoftmax) {
    if (row.mode == kModeInvalid) {  // negative or NaN temperature: invalid without reading the row
      if constexpr (Tr::kTopk) {
        for (int64_t i = tid; i < p.k; i += kThreads) {
          p.out_values[r * p.k + i] = NAN;
          p.out_ids[r * p.k + i] = -1;
        }
      } else if (tid == 0) {
        p.out_ids[r] = -1;
        if constexpr (kOp == Op::kConfidence) p.out_values[r] = NAN;
        if constexpr (kOp == Op::kSample) p.out_logprob[r] = NAN;
      }
      return;
    }
  }
  if constexpr (Tr::kSelect) {
    if (row.mode == kModeSample) {
      if constexpr (kFromWs) {
        row.threshold = w.select[r].threshold;
      } else {
        auto source = [&](auto& visit) {
          for_each_row_key(row, [](float z, int64_t) { return select_key(z); }, visit);
        };
        row.threshold = block_select<false>(source, static_cast<uint32_t>(p.top_k), sm.u.sel);
        __syncthreads();  // the selection's shared memory becomes the chunk statistics
      }
      row.thresholded = true;
    }
  }
  const bool want_argmax = wants_argmax<kOp>(row.mode);
  const bool want_sum = row.mode == kModeSample;
  const ChunkStats* cs;
  if constexpr (kFromWs) {
    cs = w.stats + r * w.chunks;
  } else {
    if (row.mode != kModeInvalid) {
      for (int64_t c = warp; c < n_chunks; c += kWarps) {
        const ChunkStats st = chunk_stats<TL, Tr::kSecond, Tr::kEntropy>(row, c, lane, want_argmax, want_sum);
        if (lane == 0) sm.u.cs[c] = st;
      }
    }
    __syncthreads();
    cs = sm.u.cs;
  }
  RowStats rs{-kInf, 0.f, 0.f, -kInf, -1, 0u, false};
  if (row.mode != kModeInvalid)  // only guided_log_softmax gets here with an invalid temperature
    rs = reduce_row<Tr::kSecond, Tr::kEntropy>(cs, n_chunks, row.k2, want_argmax, want_sum, sm.sc);
  const bool valid = row.mode != kModeInvalid && row_valid(rs);

  if constexpr (kOp == Op::kGuidedLogSoftmax) {
    const OutForm f = make_form(row.mode, rs, row.k2);
    float* out_row = p.out_values + r * p.v;
    // Split path: block y writes chunks [y * kWarps, (y + 1) * kWarps); row path: one block writes them all.
    const int64_t first = kFromWs ? static_cast<int64_t>(blockIdx.y) * kWarps : 0;
    const int64_t last = kFromWs ? (first + kWarps < n_chunks ? first + kWarps : n_chunks) : n_chunks;
    for (int64_t c = first + warp; c < last; c += kWarps) write_chunk(row, f, c, lane, out_row);
  } else if constexpr (Tr::kRace) {
    int64_t token = -1;
    Drawn drawn{-1, 0.f, false};
    if (valid) {
      if (row.mode == kModeGreedy) {
        token = rs.argmax;
      } else {
        drawn = race(row, cs, n_chunks, rs, rng, sm.sc);
        token = drawn.id;
      }
    }
    if constexpr (kOp == Op::kSample) {
      // KERNEL_SPEC §2 `sample`: the log-probability of the drawn token under the distribution it was drawn from,
      // from what the race already holds (no further read of the row): the row statistics m, S (the chunk masses
      // M_c combined, over the allowed set: the top-k threshold and the filters applied) and the winner's log2
      // weight d = (z - m) * k2, so log p = (d - log2 S) * ln 2, guided_log_softmax's formula (out_value). +inf
      // tokens share the mass: -ln(count). Greedy rows: a point mass, 0. Invalid rows: NaN. On the candidate path
      // the distribution is over the columns. The thread that raced the winner writes it (no extra barrier).
      const bool normal = valid && row.mode == kModeSample && rs.m < kInf;
      if (normal) {
        if (drawn.mine) p.out_logprob[r] = (drawn.d - log2f(rs.s)) * kLn2;
      } else if (tid == 0) {
        p.out_logprob[r] = !valid || token < 0 ? NAN
                           : row.mode == kModeGreedy ? 0.f
                                                     : 0.f - logf(static_cast<float>(rs.n_inf));
      }
    }
    if (tid == 0) {
      // the candidate path: the drawn column's id (rows decided without a draw returned above)
      if (p.index != nullptr && token >= 0) token = p.index[row_offset(r, p.index_stride) + token];
      p.out_ids[r] = token;
    }
  } else if constexpr (kOp == Op::kConfidence) {
    if (tid == 0) {
      float score = NAN;
      if (valid) {
        if (row.mode == kModeGreedy) {
          score = Tr::kEntropy ? 0.f : 1.f;  // point mass: p1 = 1, p2 = 0, sum p log p = 0
        } else if (rs.m == kInf) {
          const float n = static_cast<float>(rs.n_inf);
          score = Tr::kEntropy ? 0.f - logf(n) : Tr::kSecond ? (rs.n_inf >= 2 ? 0.f : 1.f) : 1.f / n;
        } else if (Tr::kEntropy) {
          score = (rs.d / rs.s - log2f(rs.s)) * kLn2;  // sum p ln p = ln 2 * (D / S - log2 S)
        } else if (Tr::kSecond) {
          score = (1.f - exp2f(log2_weight(rs.m2, rs.m, row.k2))) / rs.s;  // p1 - p2, p1 = 1 / S
        } else {
          score = 1.f / rs.s;
        }
      }
      p.out_ids[r] = valid ? rs.argmax : -1;
      p.out_values[r] = score;
    }
  } else if constexpr (Tr::kTopk) {
    float* values = p.out_values + r * p.k;
    int64_t* ids = p.out_ids + r * p.k;
    const OutForm f = make_form(row.mode, rs, row.k2);
    if (f.mode == kFormInvalid) {
      for (int64_t i = tid; i < p.k; i += kThreads) {
        values[i] = NAN;
        ids[i] = -1;
      }
    } else if (f.mode == kFormGreedy) {
      // 0 at the greedy token, then the -inf tokens in id order (the reference's stable descending sort).
      for (int64_t i = tid; i < p.k; i += kThreads) {
        const int64_t id = i == 0 ? f.argmax : (i - 1 < f.argmax ? i - 1 : i);
        values[i] = i == 0 ? 0.f : -kInf;
        ids[i] = id;
      }
    } else {
      // Select on the written value itself, so the order (ties toward the lower id) is the order of the values we
      // return, exactly.
      auto source = [&](auto& visit) {
        for_each_row_key(row, [&](float z, int64_t v) { return ordered_key(out_value(f, z, v)); }, visit);
      };
      __syncthreads();  // the selection's shared memory overlays the chunk statistics read above
      block_select<true>(source, static_cast<uint32_t>(p.k), sm.u.sel);
      block_sort_desc(sm.u.sel.out, static_cast<uint32_t>(p.k));
      for (int64_t i = tid; i < p.k; i += kThreads) {
        const uint64_t key = sm.u.sel.out[i];
        values[i] = key_to_float(static_cast<uint32_t>(key >> 32));
        ids[i] = key64_id(key);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Kernels
// ------------------------------------------------------------------------------------------------------------------

// Row path (kFromWs = false) and split-path finish (kFromWs = true). Grid: rows in x (looped beyond the grid), and for
// guided_log_softmax's split finish, chunk groups of kWarps in y.
template <class TL, Op kOp, int kVariant, bool kFromWs>
__global__ void __launch_bounds__(kThreads, 2) row_kernel(Problem p, Work w) {
  using Tr = Traits<kOp, kVariant>;
  constexpr bool kSelectSmem = Tr::kTopk || (Tr::kSelect && !kFromWs);
  __shared__ RowSmem<!kFromWs, kSelectSmem, Tr::kTopk> sm;
  for (int64_t r = blockIdx.x; r < p.n; r += gridDim.x) {
    process_row<TL, kOp, kVariant, kFromWs>(p, w, r, sm);
    __syncthreads();  // the next row reuses the shared memory
  }
}

// Split path, stage 1: one warp per chunk, kStatsWarps chunks per block in x, rows in y (looped beyond 65535).
// Register budget 168 (3 blocks of 4 warps per multiprocessor): at 128 the sampling variants spill a few bytes.
template <class TL, Op kOp, int kVariant>
__global__ void __launch_bounds__(kStatsWarps * 32, 3) stats_kernel(Problem p, Work w) {
  using Tr = Traits<kOp, kVariant>;
  const int lane = threadIdx.x & 31;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kStatsWarps + (threadIdx.x >> 5);
  if (c >= w.chunks) return;  // whole warps: the warp-level code below never meets a partial warp
  for (int64_t r = blockIdx.y; r < p.n; r += gridDim.y) {
    RowCtx<TL> row;
    Rng rng;
    int64_t decided;
    if (!prepare_row<TL, kOp>(p, r, row, rng, decided) || row.mode == kModeInvalid) continue;
    if constexpr (Tr::kSelect) {
      if (row.mode == kModeSample) {
        row.threshold = w.select[r].threshold;
        row.thresholded = true;
      }
    }
    const ChunkStats st =
        chunk_stats<TL, Tr::kSecond, Tr::kEntropy>(row, c, lane, wants_argmax<kOp>(row.mode), row.mode == kModeSample);
    if (lane == 0) w.stats[r * w.chunks + c] = st;
  }
}

// Split path, top-k sampling: the threshold of every sampled row (one block per row; the split path serves small
// batches, so occupancy matters less than a spill-free register budget).
template <class TL, Op kOp>
__global__ void __launch_bounds__(kThreads, 1) select_kernel(Problem p, Work w) {
  __shared__ SelectSmem<false> sm;
  for (int64_t r = blockIdx.x; r < p.n; r += gridDim.x) {
    RowCtx<TL> row;
    Rng rng;
    int64_t decided;
    if (!prepare_row<TL, kOp>(p, r, row, rng, decided) || row.mode != kModeSample) continue;
    auto source = [&](auto& visit) {
      for_each_row_key(row, [](float z, int64_t) { return select_key(z); }, visit);
    };
    const uint64_t threshold = block_select<false>(source, static_cast<uint32_t>(p.top_k), sm);
    if (threadIdx.x == 0) w.select[r].threshold = threshold;
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Dispatch
// ------------------------------------------------------------------------------------------------------------------

template <class TL, Op kOp, int kVariant, class Launcher>
void run_typed(const Problem& p, const Plan& plan, Launcher& launch) {
  using Tr = Traits<kOp, kVariant>;
  Work w{nullptr, nullptr, plan.chunks};
  if (plan.split) {
    w.stats = static_cast<ChunkStats*>(p.workspace);
    w.select = reinterpret_cast<RowSelect*>(static_cast<char*>(p.workspace) + plan.stats_bytes);
  }
  const int64_t kMaxGridX = 0x7fffffff, kMaxGridY = 65535;
  const unsigned rows_x = static_cast<unsigned>(p.n < kMaxGridX ? p.n : kMaxGridX);
  if (!plan.split) {
    launch(row_kernel<TL, kOp, kVariant, false>, dim3(rows_x), dim3(kThreads), p, w);
    return;
  }
  if constexpr (Tr::kSelect) launch(select_kernel<TL, kOp>, dim3(rows_x), dim3(kThreads), p, w);
  const unsigned rows_y = static_cast<unsigned>(p.n < kMaxGridY ? p.n : kMaxGridY);
  launch(stats_kernel<TL, kOp, kVariant>, dim3(static_cast<unsigned>(ceil_div(plan.chunks, kStatsWarps)), rows_y),
         dim3(kStatsWarps * 32), p, w);
  launch(row_kernel<TL, kOp, kVariant, true>, dim3(rows_x, static_cast<unsigned>(plan.write_blocks)), dim3(kThreads), p,
         w);
}

template <Op kOp, int kVariant, class Launcher>
void run_variant(const Problem& p, const Plan& plan, Launcher& launch) {
  switch (p.logits_dtype) {
    case DType::kBFloat16: run_typed<bf16, kOp, kVariant>(p, plan, launch); break;
    case DType::kFloat16: run_typed<f16, kOp, kVariant>(p, plan, launch); break;
    default: run_typed<float, kOp, kVariant>(p, plan, launch); break;
  }
}

// Runs op kOp on `p` with `plan` = make_plan(kOp, p, num_sms) (the caller sized p.workspace from the same plan).
template <Op kOp, class Launcher>
void run_op(const Problem& p, const Plan& plan, Launcher& launch) {
  if (p.n == 0 || p.v == 0) return;
  if constexpr (kOp == Op::kSample || kOp == Op::kMaskedTransition) {
    if (p.top_k > 0)
      run_variant<kOp, 1>(p, plan, launch);
    else
      run_variant<kOp, 0>(p, plan, launch);
  } else if constexpr (kOp == Op::kConfidence) {
    switch (p.kind) {
      case ConfidenceKind::kMargin: run_variant<kOp, static_cast<int>(ConfidenceKind::kMargin)>(p, plan, launch); break;
      case ConfidenceKind::kNegEntropy:
        run_variant<kOp, static_cast<int>(ConfidenceKind::kNegEntropy)>(p, plan, launch);
        break;
      default: run_variant<kOp, static_cast<int>(ConfidenceKind::kMaxProb)>(p, plan, launch); break;
    }
  } else {
    run_variant<kOp, 0>(p, plan, launch);
  }
}

#if defined(__CUDACC__)
// Launch policy of the GPU build: every launch on `stream`, the first error kept.
struct CudaLauncher {
  cudaStream_t stream;
  cudaError_t error = cudaSuccess;
  template <class... Params, class... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
    if (error != cudaSuccess) return;
    kernel<<<grid, block, 0, stream>>>(args...);
    error = cudaGetLastError();
  }
};

template <Op kOp>
cudaError_t launch_op(const Problem& p, int num_sms, cudaStream_t stream) {
  CudaLauncher launch{stream};
  run_op<kOp>(p, make_plan(kOp, p, num_sms), launch);
  return launch.error;
}
#endif

}  // namespace cuda
}  // namespace gtl
