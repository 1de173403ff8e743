// guided_log_softmax (KERNEL_SPEC §2), per-ISA batch function (no include guard, see cpu_multiversion.h).
// The scan writes z into the output row while it computes the chunk statistics (the one read of the input); the
// post pass turns the row, still in cache, into log-probabilities: (z - max) / T - log(sum).

struct GlsmScratch {
  ChunkBuffer b;
};

static void guided_log_softmax_batch(const GlsmArgs& a) {
  const ScoreArgs& sa = a.s;
  const int64_t v = sa.v, n_chunks = (v + kChunk - 1) / kChunk;
  const Pass1Fn guided = sa.bias ? select_pass1(sa.logits_dtype, sa.bias_dtype, true) : nullptr;
  const Pass1Fn unguided = select_pass1(sa.logits_dtype, sa.bias_dtype, false);
  std::vector<RowDist> dist(sa.n);
  std::vector<float> inv_t(sa.n);

  auto scan = [&](int64_t r, int64_t cb, int64_t ce, ChunkStats* st, GlsmScratch& s) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    if (rs.mode == RowMode::kInvalid) return;
    ScanNeeds need;
    need.sum = rs.mode == RowMode::kTempered;
    need.argmax = rs.mode == RowMode::kGreedy;
    float* out = a.out + r * v;
    for (int64_t c = cb; c < ce; ++c) {
      int64_t len;
      const Pass1 p = load_chunk(rs, c, v, s.b.buf, &len);
      std::memcpy(out + c * kChunk, s.b.buf, len * sizeof(float));
      chunk_stats(s.b.buf, len, p, rs.inv_t, need, &st[c]);
    }
  };

  auto finish = [&](int64_t r, ChunkStats* st, GlsmScratch*, int64_t) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    dist[r] = row_dist(st, n_chunks, rs);
    inv_t[r] = rs.inv_t;
  };

  auto post = [&](int64_t r, int64_t cb, int64_t ce, GlsmScratch&) {
    const RowDist& d = dist[r];
    float* out = a.out + r * v;
    const int64_t b = cb * kChunk, e = std::min(ce * kChunk, v);
    if (d.invalid) {
      std::fill(out + b, out + e, kNaN);
    } else if (d.mode == RowMode::kGreedy) {  // the T -> 0 limit: the point mass on the first maximum
      std::fill(out + b, out + e, -kInf);
      if (d.argmax >= b && d.argmax < e) out[d.argmax] = 0.f;
    } else if (d.inf_mode) {  // the +inf tokens share the mass equally
      const float lp = -d.log_s;
      for (int64_t i = b; i < e; ++i) out[i] = out[i] == kInf ? lp : -kInf;
    } else {
      const float mz = d.mz, it = inv_t[r], ls = d.log_s;
      const vf mzv = splat(mz), itv = splat(it), lsv = splat(ls);
      int64_t i = b;
      for (; i + W <= e; i += W) store(out + i, (load(out + i) - mzv) * itv - lsv);
      for (; i < e; ++i) out[i] = (out[i] - mz) * it - ls;  // the same three roundings as the vector lanes
    }
  };
  run_rows(sa.n, n_chunks, sa.threads, GlsmScratch{}, scan, finish, post);
}
