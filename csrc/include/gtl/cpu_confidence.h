// confidence (KERNEL_SPEC §2), per-ISA batch function (no include guard, see cpu_multiversion.h): planner scores
// of the guided distribution p from one read of each row. With the row max mz, S = sum exp(d), d = (z - mz) / T:
//   max_prob = p1 = 1 / S;   margin = p1 - p2 = -expm1(d2) / S;   neg_entropy = sum p log p = (sum e^d d) / S - log S.

struct ConfidenceScratch {
  ChunkBuffer b;
};

static inline double confidence_score(const RowDist& d, ConfidenceKind kind, double t) {
  if (d.mode == RowMode::kGreedy) return kind == ConfidenceKind::kNegEntropy ? 0.0 : 1.0;  // point mass
  if (d.inf_mode) {  // n equal +inf tokens
    const double n = static_cast<double>(d.ninf);
    if (kind == ConfidenceKind::kMaxProb) return 1.0 / n;
    if (kind == ConfidenceKind::kMargin) return d.ninf >= 2 ? 0.0 : 1.0;
    return -std::log(n);
  }
  if (kind == ConfidenceKind::kMaxProb) return 1.0 / d.s;
  if (kind == ConfidenceKind::kMargin) {
    // No second token: p2 = 0. (Not through d2: (-inf - mz) / T is -inf / inf = NaN at T = +inf.)
    if (!(d.z2 > -kInf)) return 1.0 / d.s;
    const double d2 = (static_cast<double>(d.z2) - d.mz) / t;
    return -std::expm1(d2) / d.s;
  }
  return d.w / d.s - std::log(d.s);
}

static void confidence_batch(const ConfidenceArgs& a) {
  const ScoreArgs& sa = a.s;
  const int64_t v = sa.v, n_chunks = (v + kChunk - 1) / kChunk;
  const Pass1Fn guided = sa.bias ? select_pass1(sa.logits_dtype, sa.bias_dtype, true) : nullptr;
  const Pass1Fn unguided = select_pass1(sa.logits_dtype, sa.bias_dtype, false);

  auto scan = [&](int64_t r, int64_t cb, int64_t ce, ChunkStats* st, ConfidenceScratch& s) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    if (rs.mode == RowMode::kInvalid) return;
    ScanNeeds need = needs_of(rs.mode);
    need.argmax = true;
    need.entropy = need.sum && a.kind == ConfidenceKind::kNegEntropy;
    need.second = need.sum && a.kind == ConfidenceKind::kMargin;
    for (int64_t c = cb; c < ce; ++c) {
      int64_t len;
      const Pass1 p = load_chunk(rs, c, v, s.b.buf, &len);
      chunk_stats(s.b.buf, len, p, rs.tp, need, &st[c]);
    }
  };

  auto finish = [&](int64_t r, ChunkStats* st, ConfidenceScratch*, int64_t) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    const RowDist d = row_dist(st, n_chunks, rs);
    if (d.invalid) {
      a.argmax[r] = -1;
      a.score[r] = kNaN;
      return;
    }
    a.argmax[r] = d.argmax;
    a.score[r] = static_cast<float>(confidence_score(d, a.kind, rs.t));
  };
  run_rows(sa.n, n_chunks, sa.threads, ConfidenceScratch{}, scan, finish, NoPost{});
}
