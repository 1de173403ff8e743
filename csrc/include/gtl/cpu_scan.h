// The one read of a chunk (KERNEL_SPEC §3, CHUNK = 1024 tokens): pass 1 loads logits (and bias) in their own dtype,
// forms z = logits + gamma * bias in fp32 into a buffer in L1 and tracks max / NaN; the remaining statistics are
// passes over that buffer. Per-ISA (no include guard, see cpu_multiversion.h).
//
// Scores are kept as z, and the temperature enters only as d = (z - max) / T <= 0 (computed as in Temper): the
// same ordering as s = z / T, and no overflow for tiny T. Greedy rows never form d.

struct Pass1 {
  float mz;
  bool nan;
};

// Guided score of W tokens. gamma * bias is fused with the add where FMA exists; a float64 bias is combined in
// float64 like the reference and rounded once.
template <class T, class B>
GTL_VI vf score(const T* x, const B* b, float g) {
  const vf xv = load(x);
  if constexpr (std::is_same_v<B, NoBias>) {
    return xv;
  } else if constexpr (std::is_same_v<B, double>) {
    const vd z = __builtin_convertvector(xv, vd) + static_cast<double>(g) * load(b);
    return __builtin_convertvector(z, vf);
  } else {
    return fmadd(splat(g), load(b), xv);
  }
}

// Software prefetch of the cache lines one chunk ahead of x[i, i + W): the next chunk of the row (or the start of
// the next row, which the drivers read next; a prefetch past the tensor never faults). Without it pass 1 waits on
// memory while the core idles, then the exponentials of the chunk run while memory idles; with it the lines of
// chunk c + 1 arrive while the exponentials of chunk c run (docs/CPU_BACKEND.md, "Roofline": at V = 30522 the scan
// went from 2.4x to 1.9x the streaming read in fp32, from 1.9x to 1.5x in bf16). One prefetch per 64-byte line.
template <class T>
GTL_VI void prefetch_next_chunk(const T* x, int64_t i) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));  // elements per cache line
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(x) + static_cast<uintptr_t>(i + kChunk) * sizeof(T);
  if constexpr (kLine <= W) {
    for (int64_t j = 0; j < W; j += kLine)
      _mm_prefetch(reinterpret_cast<const char*>(ahead + j * sizeof(T)), _MM_HINT_T0);
  } else {
    if (i % kLine == 0) _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
  }
}

// z of `len` (<= kChunk) tokens into buf, padded with -inf to a multiple of W; returns the max (NaN ignored) and
// whether a NaN occurred. Signature shared by every (logits dtype, bias dtype) instantiation.
using Pass1Fn = Pass1 (*)(const void* x, const void* b, float g, int64_t len, float* buf);

template <class T, class B>
static Pass1 pass1(const void* xv, const void* bv, float g, int64_t len, float* buf) {
  const T* x = static_cast<const T*>(xv);
  const B* b = static_cast<const B*>(bv);
  constexpr bool kGuided = !std::is_same_v<B, NoBias>;  // b is null otherwise: no pointer arithmetic on it
  vf m = splat(-kInf);
  vi nan = {};
  int64_t i = 0;
  for (; i + W <= len; i += W) {
    prefetch_next_chunk(x, i);
    if constexpr (kGuided) prefetch_next_chunk(b, i);
    const vf z = score<T, B>(x + i, kGuided ? b + i : b, g);
    store(buf + i, z);
    m = vmax(z, m);
    nan |= z != z;
  }
  if (i < len) {  // the same vector arithmetic on a zero-padded copy of the tail
    const int64_t rem = len - i;
    T xt[W] = {};
    B bt[W] = {};
    std::memcpy(xt, x + i, rem * sizeof(T));
    if constexpr (kGuided) std::memcpy(bt, b + i, rem * sizeof(B));
    vf z = score<T, B>(xt, bt, g);
    z = iota() < static_cast<int32_t>(rem) ? z : splat(-kInf);
    store(buf + i, z);
    m = vmax(z, m);
    nan |= z != z;
  }
  return {hmax(m), mask_bits(nan) != 0};
}

template <class T>
static Pass1Fn pass1_for_bias(DType b) {
  switch (b) {
    case DType::kF32:
      return &pass1<T, float>;
    case DType::kBF16:
      return &pass1<T, bf16_t>;
    case DType::kF16:
      return &pass1<T, f16_t>;
    default:
      return &pass1<T, double>;
  }
}

// The pass-1 function for (logits dtype, bias dtype); `guided` false selects the no-bias version.
static inline Pass1Fn select_pass1(DType x, DType b, bool guided) {
  switch (x) {
    case DType::kBF16:
      return guided ? pass1_for_bias<bf16_t>(b) : &pass1<bf16_t, NoBias>;
    case DType::kF16:
      return guided ? pass1_for_bias<f16_t>(b) : &pass1<f16_t, NoBias>;
    default:
      return guided ? pass1_for_bias<float>(b) : &pass1<float, NoBias>;
  }
}

// Max / NaN of a padded buffer (after a rewrite of some entries).
GTL_VI Pass1 rescan(const float* buf, int64_t len) {
  vf m = splat(-kInf);
  vi nan = {};
  for (int64_t i = 0; i < len; i += W) {
    const vf z = load(buf + i);
    m = vmax(z, m);
    nan |= z != z;
  }
  return {hmax(m), mask_bits(nan) != 0};
}

GTL_VI int64_t padded(int64_t len) { return (len + W - 1) / W * W; }

// First position of `value` in the buffer, -1 if absent.
GTL_VI int64_t find_first(const float* buf, int64_t len, float value) {
  const vf v = splat(value);
  for (int64_t i = 0; i < len; i += W) {
    const uint32_t bits = mask_bits(load(buf + i) == v);
    if (bits) return i + __builtin_ctz(bits);
  }
  return -1;
}

GTL_VI int32_t count_equal(const float* buf, int64_t len, float value) {
  const vf v = splat(value);
  int32_t n = 0;
  for (int64_t i = 0; i < len; i += W) n += __builtin_popcount(mask_bits(load(buf + i) == v));
  return n;
}

// Per-row constants of the scan.
struct RowScan {
  const char* x = nullptr;  // row start
  const char* b = nullptr;  // nullptr: unguided row
  int64_t x_esize = 4, b_esize = 4;
  float g = 0.f;
  Temper tp;                   // d = ((z - max) * tp.pre) * tp.inv
  bool flat = false;           // T = +inf
  double t = 1.f;  // the temperature in float64, for chunk log-masses M = max / T + log(sum) (1 for greedy rows)
  RowMode mode = RowMode::kTempered;
  int64_t excl = -1;  // a token removed from the allowed set (masked_transition's mask_id), or -1
  const int64_t* excl_ids = nullptr;  // candidate path of masked_transition: the row's index; columns holding excl
                                      // (then a token id, not a column) are removed
  Pass1Fn pass1 = nullptr;
};

static inline RowScan make_row_scan(const ScoreArgs& a, int64_t r, Pass1Fn guided, Pass1Fn unguided) {
  RowScan s;
  s.x = static_cast<const char*>(a.logits) + r * a.logits_stride * dtype_size(a.logits_dtype);
  s.x_esize = dtype_size(a.logits_dtype);
  s.g = a.gamma[r];
  const bool use_bias = a.bias != nullptr && s.g != 0.f;  // gamma == 0 ignores the bias entirely (reference.py)
  if (use_bias) {
    s.b = static_cast<const char*>(a.bias) + r * a.bias_stride * dtype_size(a.bias_dtype);
    s.b_esize = dtype_size(a.bias_dtype);
  }
  s.pass1 = use_bias ? guided : unguided;
  const float t = a.temperature[r];
  s.mode = row_mode(t);
  s.tp = temper_of(t);
  s.flat = t == kInf;
  s.t = s.mode == RowMode::kTempered ? static_cast<double>(t) : 1.0;
  return s;
}

// Reads chunk c of the row into buf (length through len_out, buffer padded to a multiple of W); the excluded token
// (or, on the candidate path, every column whose id is the excluded token) becomes -inf.
GTL_VI Pass1 load_chunk(const RowScan& row, int64_t c, int64_t v, float* buf, int64_t* len_out) {
  const int64_t c0 = c * kChunk, len = std::min<int64_t>(kChunk, v - c0);
  *len_out = len;
  Pass1 p = row.pass1(row.x + c0 * row.x_esize, row.b ? row.b + c0 * row.b_esize : nullptr, row.g, len, buf);
  if (row.excl_ids) {
    bool hit = false;
    for (int64_t i = 0; i < len; ++i) {
      if (row.excl_ids[c0 + i] == row.excl) {
        buf[i] = -kInf;
        hit = true;
      }
    }
    if (hit) p = rescan(buf, padded(len));
  } else if (row.excl >= c0 && row.excl < c0 + len) {
    buf[row.excl - c0] = -kInf;
    p = rescan(buf, padded(len));
  }
  return p;
}

// Statistics of a loaded chunk (see ChunkStats). Greedy rows skip the exponentials.
GTL_VI void chunk_stats(const float* buf, int64_t len, Pass1 p, Temper tp, const ScanNeeds& need, ChunkStats* st) {
  *st = ChunkStats{};
  st->mz = p.mz;
  if (p.nan) {
    st->nan = 1;
    return;
  }
  const int64_t plen = padded(len);
  if (p.mz == kInf) st->ninf = count_equal(buf, plen, kInf);
  if (need.argmax || need.second) st->arg = static_cast<int32_t>(find_first(buf, plen, p.mz));
  if (need.second && st->arg >= 0) {
    vf m = splat(-kInf);
    for (int64_t i = 0; i < plen; i += W) {
      vf z = load(buf + i);
      z = iota() + static_cast<int32_t>(i) == st->arg ? splat(-kInf) : z;
      m = vmax(z, m);
    }
    st->z2 = hmax(m);
  }
  if (!need.sum || !(p.mz > -kInf && p.mz < kInf)) return;
  const vf mz = splat(p.mz), pre = splat(tp.pre), inv = splat(tp.inv);
  vf sum = {}, w = {};
  auto accumulate = [&](auto temper) {
    for (int64_t i = 0; i < plen; i += W) {
      const vf d = temper(load(buf + i) - mz);
      const vf e = vexp(d);
      sum += e;
      if (need.entropy) w += e * (d < splat(-100.f) ? splat(-100.f) : d);  // e == 0 there; avoids 0 * -inf
    }
  };
  // T = 1 skips the two multiplies by 1 (the same bits; docs/CPU_BACKEND.md, "Roofline")
  if (tp.unit())
    accumulate([](vf x) __attribute__((always_inline)) { return x; });
  else
    accumulate([&](vf x) __attribute__((always_inline)) { return x * pre * inv; });
  st->sum = hsum(sum);
  st->w = hsum(w);
}

// Cuts the candidate buffer back when it is full (TopK::cut_due), keeping id order, and raises the threshold to the
// lowest kept score: at least k kept entries rank above any later token with z <= thr.
GTL_VI void topk_cut(TopK* t) {
  uint32_t edge;
  int64_t rank;
  if (!t->cut_due(&edge, &rank)) return;
  uint32_t* keys = t->key.data();
  uint32_t* ids = t->id.data();
  const int64_t n = t->n;
  int64_t m = 0;
  if (rank < 0) {  // about half the keys are kept, at random: compress, no branch per key
    const vu e = splat_u(edge);
    for (int64_t i = 0; i < n; i += W) {  // in place: lanes are stored at m <= i, over lanes already loaded
      const vu kv = load_u(keys + i), iv = load_u(ids + i);
      uint32_t bits = mask_bits((vi)(kv >= e));
      if (n - i < W) bits &= (1u << (n - i)) - 1u;  // the buffer has kMaxW slots of slack past n
      m += compress_store2(keys + m, kv, ids + m, iv, bits);
    }
  } else {
    for (int64_t i = 0; i < n; ++i)
      if (keys[i] > edge || (keys[i] == edge && rank-- > 0)) {
        keys[m] = keys[i];
        ids[m++] = ids[i];
      }
  }
  uint32_t mn = ~0u;
  for (int64_t i = 0; i < m; ++i) mn = std::min(mn, keys[i]);
  t->n = m;
  t->thr = key_z(mn);
}

// A speculative top-k threshold (docs/CPU_BACKEND.md, "Top-k"): the r-th largest score of a strided sample of
// kSpecSample tokens of the row, with r the expected number of sampled tokens among the row's best k plus three
// standard deviations and 2. Started from it, the candidate buffer admits about r / kSpecSample of the row, with
// no flood of early tokens and no cuts while the threshold climbs. Exactness never rests on it: a row that ends
// with fewer than k tokens above it (probability below ~1e-3 when the row's order is unrelated to the stride) is
// scanned again without it. -inf (no speculation) where it would not pay (speculation_pays), for rows whose scores
// the buffer does not hold as read (T = +inf, an excluded token), and for rows with fewer than r finite sampled
// scores or a NaN among them.
constexpr int64_t kSpecSample = 512;

// The rank r of the threshold within the sample (the expected number of sampled tokens among the best k, plus three
// standard deviations and 2).
GTL_VI int64_t spec_rank(int64_t v, int64_t k) {
  const double mean = static_cast<double>(kSpecSample) * static_cast<double>(k) / static_cast<double>(v);
  return static_cast<int64_t>(std::ceil(mean + 3.0 * std::sqrt(mean) + 2.0));
}

// Speculate when the threshold admits fewer tokens (v r / kSpecSample) than a buffer whose threshold climbs as the
// row is read takes in on a row in random order (k (1 + ln(v / k)): the j-th token enters with probability k / j),
// and at most an eighth of the row: k >= 48 at V = 30522, 79 at 50257, 202 at 128256 (docs/CPU_BACKEND.md, "Top-k").
GTL_VI bool speculation_pays(int64_t v, int64_t k) {
  if (v < 16 * kSpecSample || k < 1) return false;
  const int64_t r = spec_rank(v, k);
  const double admitted = static_cast<double>(v) * static_cast<double>(r) / kSpecSample;
  return r <= kSpecSample / 8 && admitted < static_cast<double>(k) * (1.0 + std::log(static_cast<double>(v) / k));
}

// The token of sample i: the middle of the i-th of kSpecSample equal strides of the row.
GTL_VI int64_t sampled_token(int64_t i, int64_t v) {
  const int64_t stride = v / kSpecSample;
  return i * stride + stride / 2;
}

template <int64_t E>
GTL_VI void gather_strided(unsigned char* dst, const char* src, int64_t v) {
  for (int64_t i = 0; i < kSpecSample; ++i) std::memcpy(dst + i * E, src + sampled_token(i, v) * E, E);
}

GTL_VI void gather_sample(unsigned char* dst, const char* src, int64_t esize, int64_t v) {
  if (esize == 2) gather_strided<2>(dst, src, v);
  else if (esize == 4) gather_strided<4>(dst, src, v);
  else gather_strided<8>(dst, src, v);
}

// Prefetches the sampled tokens of a row (the next one, while this one is scanned): the sample touches a quarter of
// the row's cache lines, one load each, and waiting on them took ~10% of topk_log_softmax at k = 512.
GTL_VI void prefetch_sample(const RowScan& rs, int64_t v) {
  for (int64_t i = 0; i < kSpecSample; ++i) {
    const int64_t j = sampled_token(i, v);
    _mm_prefetch(rs.x + j * rs.x_esize, _MM_HINT_T1);
    if (rs.b) _mm_prefetch(rs.b + j * rs.b_esize, _MM_HINT_T1);
  }
}

// The threshold of a row of v tokens from the r-th largest sampled score (r = spec_rank(v, k), for (v, k) where
// speculation_pays), or -inf for a row the buffer does not hold as read.
GTL_VI float speculative_threshold(const RowScan& rs, int64_t v, int64_t r) {
  if (rs.mode != RowMode::kTempered || rs.flat || rs.excl >= 0 || rs.excl_ids) return -kInf;
  alignas(64) unsigned char xs[kSpecSample * 8];
  alignas(64) unsigned char bs[kSpecSample * 8];
  alignas(64) float z[kSpecSample + kMaxW];
  gather_sample(xs, rs.x, rs.x_esize, v);
  if (rs.b) gather_sample(bs, rs.b, rs.b_esize, v);
  // pass 1 itself forms the sampled scores: the same arithmetic as the scan, whatever the dtypes
  if (rs.pass1(xs, rs.b ? bs : nullptr, rs.g, kSpecSample, z).nan) return -kInf;
  // the r best, descending, by insertion (r <= 64): after the first few dozen scores almost every one fails the first
  // comparison, where std::nth_element on 512 scores took a sixth of the op's k-dependent time
  float best[kSpecSample / 8];
  int64_t m = 0;
  for (int64_t i = 0; i < kSpecSample; ++i) {
    const float x = z[i];
    if (m == r && !(x > best[r - 1])) continue;
    int64_t j = m < r ? m++ : r - 1;
    for (; j > 0 && best[j - 1] < x; --j) best[j] = best[j - 1];
    best[j] = x;
  }
  return best[r - 1];
}

// Whether the filter should run branch-free from a speculative threshold of rank r: the expected share of vectors
// with a lane above it, 1 - (1 - r / kSpecSample)^W, exceeds ~1/5.
GTL_VI bool speculation_dense(int64_t r) {
  return 1.0 - std::pow(1.0 - static_cast<double>(r) / kSpecSample, W) > 0.2;
}

// Appends the chunk's scores above the current top-k threshold (see TopK, cpu_select.h); ids start at id0.
// No branch per token: a vector with a passing score is compressed whole (while the threshold is still low, a branch
// per token mispredicts at random). A vector with none is skipped, which the predictor learns once the threshold is
// high; compressing every vector instead measured 1.6x slower at k = 1 (docs/CPU_BACKEND.md).
template <bool kDense>
GTL_VI int64_t topk_filter(const float* buf, int64_t plen, uint32_t id0, float threshold, int64_t n, uint32_t* keys,
                           uint32_t* ids) {
  const vf thr = splat(threshold);
  for (int64_t i = 0; i < plen; i += W) {
    const vf z = load(buf + i);
    const uint32_t bits = mask_bits(z > thr);
    if (!kDense && !bits) continue;
    const vu u = (vu)(z + splat(0.f));  // -0 -> +0: equal scores tie on the id
    const vu key = u ^ ((vu)((vi)u >> 31) | splat_u(0x80000000u));  // z_key on every lane
    const vu id = (vu)iota() + splat_u(id0 + static_cast<uint32_t>(i));
    n += compress_store2(keys + n, key, ids + n, id, bits);
  }
  return n;
}

// TopK::dense (set by the scan from the speculative threshold's expected admission rate) selects the loop without
// the branch: near half the vectors passing, the branch mispredicts at random and cost ~1/4 of topk_log_softmax at
// k = 512 (docs/CPU_BACKEND.md, "Top-k").
GTL_VI void topk_offer(const float* buf, int64_t plen, uint32_t id0, TopK* t) {
  t->n = t->dense ? topk_filter<true>(buf, plen, id0, t->thr, t->n, t->key.data(), t->id.data())
                  : topk_filter<false>(buf, plen, id0, t->thr, t->n, t->key.data(), t->id.data());
  topk_cut(t);
}
