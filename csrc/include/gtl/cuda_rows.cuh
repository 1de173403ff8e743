// One row of scores (KERNEL_SPEC §1), its 1024-token chunk statistics and their fixed-order reduction (KERNEL_SPEC §3).
//
// Layout: a chunk is read by one warp. Lane l holds kGroups groups of kVec consecutive tokens (one 16-byte vector of
// the logits dtype): group j covers chunk positions (j * 32 + l) * kVec + [0, kVec). The layout is fixed by token
// position, so the statistics of a chunk are the same bits whichever warp, block or kernel computes them, and
// whether the row is read with vector loads (16-byte aligned row) or scalar loads (any other alignment): only the
// load instructions differ, never the arithmetic.
#pragma once

#include <type_traits>

#include "gtl/cuda_common.cuh"

namespace gtl {
namespace cuda {

template <class TL>
struct Layout {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(TL));  // tokens per 16-byte vector
  static constexpr int kGroups = static_cast<int>(kChunk) / (32 * kVec);
  static constexpr int kPerLane = static_cast<int>(kChunk) / 32;
};

GTL_DEV int64_t row_offset(int64_t r, int64_t stride) { return r * stride; }  // int64 everywhere (KERNEL_SPEC §4)

// ------------------------------------------------------------------------------------------------------------------
// Loads
// ------------------------------------------------------------------------------------------------------------------

GTL_DEV float load_scalar(const float* p) { return __ldg(p); }
GTL_DEV float load_scalar(const double* p) { return static_cast<float>(__ldg(p)); }
GTL_DEV float load_scalar(const bf16* p) { return to_float(bf16{__ldg(reinterpret_cast<const unsigned short*>(p))}); }
GTL_DEV float load_scalar(const f16* p) { return to_float(f16{__ldg(reinterpret_cast<const unsigned short*>(p))}); }

// N consecutive elements as floats: 16-byte (or 8-byte) vector loads when `vec` (the caller checked the alignment),
// element loads otherwise.
template <class T, int N>
GTL_DEV void load_group(const T* p, bool vec, float (&out)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  static_assert(kBytes % 8 == 0, "groups are whole 8-byte words");
  if (vec) {
    if constexpr (kBytes >= 16) {
      union {
        uint4 u[kBytes / 16];
        T t[N];
      } r;
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) r.u[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = to_float(r.t[i]);
    } else {
      union {
        uint2 u;
        T t[N];
      } r;
      r.u = __ldg(reinterpret_cast<const uint2*>(p));
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = to_float(r.t[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = load_scalar(p + i);
  }
}

GTL_DEV int dtype_size(DType t) { return t == DType::kFloat64 ? 8 : t == DType::kFloat32 ? 4 : 2; }

GTL_DEV bool aligned_to(const void* p, int bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

// ------------------------------------------------------------------------------------------------------------------
// A row: pointers, its per-row parameters and the filters that shrink its allowed set (KERNEL_SPEC §3)
// ------------------------------------------------------------------------------------------------------------------

template <class TL>
struct RowCtx {
  const TL* logits = nullptr;  // start of the row
  const void* bias = nullptr;  // start of the row; null without bias or when gamma == 0 (the bias is then not read)
  DType bias_dtype = DType::kNone;
  float gamma = 0.f;
  float k2 = 0.f;  // log2(e) / T, see log2_scale()
  int mode = kModeInvalid;
  int64_t v = 0;
  bool logits_vec = false;  // 16-byte aligned row: vector loads
  bool bias_vec = false;
  int64_t mask_id = -1;  // masked_transition: this column is excluded (it is never drawn)
  // masked_transition's candidate path: the row's ids (index); the columns whose id is mask_id (then a token id of the
  // full vocabulary, not a column) are excluded instead
  const int64_t* excl_ids = nullptr;
  bool thresholded = false;  // top-k restriction: allowed iff key64(select_key(z), v) >= threshold
  uint64_t threshold = 0;
};

template <class TL>
GTL_DEV RowCtx<TL> make_row(const Problem& p, int64_t r) {
  RowCtx<TL> row;
  row.v = p.v;
  row.logits = static_cast<const TL*>(p.logits) + row_offset(r, p.logits_stride);
  row.logits_vec = aligned_to(row.logits, 16);
  row.gamma = p.gamma[row_offset(r, p.gamma_stride)];
  const float t = p.temperature[row_offset(r, p.temperature_stride)];
  row.mode = temperature_mode(t);
  row.k2 = row.mode == kModeSample ? log2_scale(t) : 0.f;
  // gamma == 0 ignores the bias entirely, so a NaN or -inf bias cannot poison an unguided row (reference.py)
  if (p.bias != nullptr && row.gamma != 0.f) {
    row.bias_dtype = p.bias_dtype;
    const int size = dtype_size(p.bias_dtype);
    row.bias = static_cast<const char*>(p.bias) + row_offset(r, p.bias_stride) * size;
    const int group_bytes = Layout<TL>::kVec * size;
    row.bias_vec = aligned_to(row.bias, group_bytes < 16 ? group_bytes : 16);
  }
  return row;
}

// Key of a score for the top-k restriction of sampling: NaN sorts above everything, so a NaN row is never hidden by
// the restriction and stays invalid.
GTL_HD uint32_t select_key(float z) { return is_nan(z) ? 0xffffffffu : ordered_key(z); }

struct NoBias {};

// Calls f(TB{}) with the storage type of the row's bias (NoBias without one): the dtype switch runs once per chunk
// or token, never inside the per-element loops.
template <class TL, class F>
GTL_DEV void with_bias_type(const RowCtx<TL>& row, F&& f) {
  if (row.bias == nullptr) return f(NoBias{});
  switch (row.bias_dtype) {
    case DType::kFloat32: return f(float{});
    case DType::kBFloat16: return f(bf16{});
    case DType::kFloat16: return f(f16{});
    default: return f(double{});
  }
}

// z = logits + gamma * bias in fp32 with one rounding (KERNEL_SPEC §1; the temperature is applied later, in log2
// units, relative to a maximum, so that T -> 0 cannot overflow).
GTL_DEV float guided(float logit, float gamma, float b) { return fmaf(gamma, b, logit); }

// The allowed-set filters of one token: mask_id (or a candidate whose id is mask_id) and the top-k threshold give
// -inf ("not allowed").
template <class TL>
GTL_DEV float filter_z(const RowCtx<TL>& row, int64_t v, float z) {
  if (row.excl_ids != nullptr ? __ldg(row.excl_ids + v) == row.mask_id : v == row.mask_id) return -kInf;
  if (row.thresholded && key64(select_key(z), v) < row.threshold) return -kInf;
  return z;
}

template <class TL, class TB>
GTL_DEV float load_z_typed(const RowCtx<TL>& row, int64_t v) {
  float z = load_scalar(row.logits + v);
  if constexpr (!std::is_same<TB, NoBias>::value) z = guided(z, row.gamma, load_scalar(static_cast<const TB*>(row.bias) + v));
  return filter_z(row, v, z);
}

// Score of one token, filtered (v < row.v).
template <class TL>
GTL_DEV float load_z(const RowCtx<TL>& row, int64_t v) {
  float z = 0.f;
  with_bias_type(row, [&](auto tag) { z = load_z_typed<TL, decltype(tag)>(row, v); });
  return z;
}

// One group of kVec tokens starting at v0: group loads when the whole group lies in the row, guarded element loads
// (and -inf) past the row end. `fill` is the value of a missing element.
template <class T, int N>
GTL_DEV void load_group_guarded(const T* row_ptr, int64_t v0, int64_t v, bool vec, float fill, float (&out)[N]) {
  if (v0 + N <= v) {
    load_group<T, N>(row_ptr + v0, vec, out);
  } else {
#pragma unroll
    for (int e = 0; e < N; ++e) out[e] = v0 + e < v ? load_scalar(row_ptr + v0 + e) : fill;
  }
}

template <class TL, class TB>
GTL_DEV void load_chunk_typed(const RowCtx<TL>& row, int64_t c, int lane, float (&z)[Layout<TL>::kPerLane]) {
  constexpr int kVec = Layout<TL>::kVec, kGroups = Layout<TL>::kGroups;
  constexpr bool kBias = !std::is_same<TB, NoBias>::value;
  const int64_t base = c * kChunk;
  // Every load of the chunk is issued before the first use: kGroups 16-byte loads (and the bias's) in flight.
  float l[kGroups][kVec];
#pragma unroll
  for (int j = 0; j < kGroups; ++j)
    load_group_guarded<TL, kVec>(row.logits, base + (j * 32 + lane) * kVec, row.v, row.logits_vec, -kInf, l[j]);
  if constexpr (kBias) {
    // The bias is read in phases of at most 64 bytes per lane: a wider dtype than the logits' would otherwise need up
    // to 64 more registers for loads in flight, and every bias dtype shares the kernel (its register count is the
    // maximum over them). The logits' loads are all in flight already.
    constexpr int kGroupBytes = kVec * static_cast<int>(sizeof(TB));
    constexpr int kPer = kGroupBytes >= 64 ? 1 : (64 / kGroupBytes < kGroups ? 64 / kGroupBytes : kGroups);
    constexpr int kPhases = kGroups / kPer;
    const TB* bias = static_cast<const TB*>(row.bias);
#pragma unroll
    for (int ph = 0; ph < kPhases; ++ph) {
      float b[kPer][kVec];
#pragma unroll
      for (int q = 0; q < kPer; ++q)
        load_group_guarded<TB, kVec>(bias, base + ((ph * kPer + q) * 32 + lane) * kVec, row.v, row.bias_vec, 0.f, b[q]);
#pragma unroll
      for (int q = 0; q < kPer; ++q)
#pragma unroll
        for (int e = 0; e < kVec; ++e) z[(ph * kPer + q) * kVec + e] = guided(l[ph * kPer + q][e], row.gamma, b[q][e]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kGroups; ++j)
#pragma unroll
      for (int e = 0; e < kVec; ++e) z[j * kVec + e] = l[j][e];
  }
  // Filters and the row end, in registers (uniform branches: taken by the mask's chunk, every chunk of the candidate
  // path's masked rows, top-k rows, the last chunk).
  const bool partial = base + kChunk > row.v;
  if (partial || row.thresholded || row.excl_ids != nullptr || (row.mask_id >= base && row.mask_id < base + kChunk)) {
#pragma unroll
    for (int j = 0; j < kGroups; ++j)
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const int64_t v = base + (j * 32 + lane) * kVec + e;
        z[j * kVec + e] = v < row.v ? filter_z(row, v, z[j * kVec + e]) : -kInf;
      }
  }
}

// The lane's tokens of chunk c (layout above); tokens past the row end and filtered tokens read as -inf.
template <class TL>
GTL_DEV void load_chunk(const RowCtx<TL>& row, int64_t c, int lane, float (&z)[Layout<TL>::kPerLane]) {
  with_bias_type(row, [&](auto tag) { load_chunk_typed<TL, decltype(tag)>(row, c, lane, z); });
}

// Chunk position of the lane's i-th token (i = j * kVec + e).
template <class TL>
GTL_HD int lane_position(int lane, int i) {
  constexpr int kVec = Layout<TL>::kVec;
  return ((i / kVec) * 32 + lane) * kVec + (i % kVec);
}

// ------------------------------------------------------------------------------------------------------------------
// Chunk statistics (one warp; see ChunkStats in cuda_problem.h)
// ------------------------------------------------------------------------------------------------------------------

// want_argmax: greedy rows and confidence. want_sum: rows sampled at T > 0 (log-sum-exp, race masses).
template <class TL, bool kSecond, bool kEntropy>
GTL_DEV ChunkStats chunk_stats(const RowCtx<TL>& row, int64_t c, int lane, bool want_argmax, bool want_sum) {
  constexpr int kN = Layout<TL>::kPerLane;
  float z[kN];
  load_chunk(row, c, lane, z);
  // The chunk maximum first (exact, order-free), then every exponential relative to it: one exp2 per token.
  float m = -kInf;
#pragma unroll
  for (int i = 0; i < kN; ++i) m = fmaxf(m, z[i]);  // fmaxf ignores NaN; NaN is detected below
  m = warp_max(m);
  ChunkStats st{m, 0.f, 0.f, -kInf, -1, 0u};
  if (!(m > -kInf && m < kInf)) {
    // No finite maximum: a +inf token, or nothing above -inf. Rare; count exactly.
    uint32_t n_inf = 0;
    bool nan = false;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      n_inf += z[i] == kInf ? 1u : 0u;
      nan = nan || is_nan(z[i]);
    }
    n_inf = warp_sum_u32(n_inf);
    st.flags = (__any_sync(kFullMask, nan) ? 1u : 0u) | (n_inf << 1);
  } else if (want_sum) {
    const float k2 = row.k2;
    float s = 0.f, t = 0.f;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const float d = log2_weight(z[i], m, k2);  // -inf for -inf tokens, NaN for NaN
      const float e = exp2f(d);
      s += e;
      if constexpr (kEntropy) t += e > 0.f ? e * d : 0.f;
    }
    st.s = warp_sum(s);
    if constexpr (kEntropy) st.t = warp_sum(t);
    st.flags = is_nan(st.s) ? 1u : 0u;  // every term lies in [0, 1]: only a NaN score makes the sum NaN
  } else {
    bool nan = false;
#pragma unroll
    for (int i = 0; i < kN; ++i) nan = nan || is_nan(z[i]);
    st.flags = __any_sync(kFullMask, nan) ? 1u : 0u;
  }
  if (want_argmax && m > -kInf) {
    int pos = 0x7fffffff;
#pragma unroll
    for (int i = kN - 1; i >= 0; --i)
      if (z[i] == m) pos = lane_position<TL>(lane, i);  // the lane's tokens ascend with i: keep the first
    st.argmax = warp_min_i32(pos);
  }
  if constexpr (kSecond) {
    if (m > -kInf) {
      uint32_t n_max = 0;
      float below = -kInf;
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        n_max += z[i] == m ? 1u : 0u;
        below = fmaxf(below, z[i] < m ? z[i] : -kInf);
      }
      n_max = warp_sum_u32(n_max);
      below = warp_max(below);
      st.m2 = n_max >= 2 ? m : below;
    }
  }
  return st;
}

// ------------------------------------------------------------------------------------------------------------------
// Row statistics: the chunk statistics combined in a fixed order (thread t takes chunks t, t + kThreads, ... in
// ascending order; then the fixed block tree), identical for the row and split paths.
// ------------------------------------------------------------------------------------------------------------------

struct RowStats {
  float m;          // max z over the allowed tokens (+inf / -inf as in ChunkStats)
  float s;          // sum over allowed finite tokens of exp2((z - m) * k2)   (m finite, want_sum)
  float d;          // sum of exp2(x) * x, x = (z - m) * k2                   (entropy)
  float m2;         // second largest z                                       (margin)
  int64_t argmax;   // first token with z == m, or -1                         (want_argmax)
  uint32_t n_inf;   // allowed +inf tokens
  bool nan;
};

union Scratch {
  float f[kWarps];
  uint32_t u[kWarps];
  int i[kWarps];
  KeyId k[kWarps];
};

template <bool kSecond, bool kEntropy>
GTL_DEV RowStats reduce_row(const ChunkStats* cs, int64_t n_chunks, float k2, bool want_argmax, bool want_sum,
                            Scratch& sc) {
  const int tid = threadIdx.x;
  float m = -kInf;
  uint32_t nan = 0, n_inf = 0;
  for (int64_t c = tid; c < n_chunks; c += kThreads) {
    const ChunkStats st = cs[c];
    m = fmaxf(m, st.m);
    nan |= st.flags & 1u;
    n_inf += st.flags >> 1;
  }
  RowStats rs;
  rs.m = block_max(m, sc.f);
  rs.nan = block_sum_u32(nan, sc.u) != 0;
  rs.n_inf = block_sum_u32(n_inf, sc.u);
  rs.s = 0.f;
  rs.d = 0.f;
  rs.m2 = -kInf;
  rs.argmax = -1;
  if (want_argmax && rs.m > -kInf) {
    int first = 0x7fffffff;
    for (int64_t c = tid; c < n_chunks; c += kThreads)
      if (cs[c].m == rs.m && first == 0x7fffffff) first = static_cast<int>(c);
    first = block_min_i32(first, sc.i);
    rs.argmax = static_cast<int64_t>(first) * kChunk + cs[first].argmax;
  }
  if (want_sum && rs.m > -kInf && rs.m < kInf) {
    float s = 0.f, d = 0.f;
    for (int64_t c = tid; c < n_chunks; c += kThreads) {
      const ChunkStats st = cs[c];
      if (!(st.m > -kInf)) continue;  // no allowed finite token in the chunk
      const float delta = log2_weight(st.m, rs.m, k2);
      const float w = exp2f(delta);
      s += w * st.s;
      if constexpr (kEntropy) d += w > 0.f ? w * (st.t + delta * st.s) : 0.f;
    }
    rs.s = block_sum(s, sc.f);
    if constexpr (kEntropy) rs.d = block_sum(d, sc.f);
  }
  if constexpr (kSecond) {
    if (rs.m > -kInf) {
      uint32_t n_max = 0;
      float below = -kInf;
      for (int64_t c = tid; c < n_chunks; c += kThreads) {
        const ChunkStats st = cs[c];
        n_max += st.m == rs.m ? 1u : 0u;
        below = fmaxf(below, st.m < rs.m ? st.m : -kInf);
        below = fmaxf(below, st.m2);
      }
      n_max = block_sum_u32(n_max, sc.u);
      below = block_max(below, sc.f);
      rs.m2 = n_max >= 2 ? rs.m : below;
    }
  }
  return rs;
}

// Row validity (KERNEL_SPEC §4): a NaN score, no allowed score above -inf, or an invalid temperature.
GTL_HD bool row_valid(const RowStats& rs) { return !rs.nan && rs.m > -kInf; }

}  // namespace cuda
}  // namespace gtl
