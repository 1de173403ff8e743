// topk_log_softmax (KERNEL_SPEC §2), per-ISA batch function (no include guard, see cpu_multiversion.h).
// One read of each row: the chunk statistics give log(sum), the candidate buffer (TopK) the k best scores.
// Output order is that of the reference: log-probability descending, ties toward the lower id; rows with fewer than
// k tokens of positive probability are completed with the lowest remaining ids at -inf.

struct TopkScratch {
  ChunkBuffer b;
  TopK sel;
  float spec = -kInf;  // the speculative threshold this part started from (speculative_threshold)
  std::vector<Cand> merged;
};

// Writes P (token, log-probability) pairs, already in output order, then the lowest ids not in P at -inf.
// Entries whose log-probability rounds to -inf join the -inf tail, ordered by id like the reference's stable sort.
static inline void write_topk_row(std::vector<Cand>& p, int64_t k, float* values, int64_t* ids) {
  while (!p.empty() && cand_z(p.back()) == -kInf) p.pop_back();
  const int64_t np = std::min<int64_t>(static_cast<int64_t>(p.size()), k);
  for (int64_t j = 0; j < np; ++j) {
    values[j] = cand_z(p[j]);
    ids[j] = cand_id(p[j]);
  }
  if (np == k) return;
  std::sort(p.begin(), p.begin() + np, [](Cand x, Cand y) { return cand_id(x) < cand_id(y); });
  int64_t j = np, q = 0;
  for (int64_t id = 0; j < k; ++id) {
    if (q < np && cand_id(p[q]) == id) {
      ++q;
      continue;
    }
    values[j] = -kInf;
    ids[j++] = id;
  }
}

static void topk_log_softmax_batch(const TopkArgs& a) {
  const ScoreArgs& sa = a.s;
  const int64_t v = sa.v, k = a.k, n_chunks = (v + kChunk - 1) / kChunk;
  const Pass1Fn guided = sa.bias ? select_pass1(sa.logits_dtype, sa.bias_dtype, true) : nullptr;
  const Pass1Fn unguided = select_pass1(sa.logits_dtype, sa.bias_dtype, false);
  TopkScratch proto;
  proto.sel.reset(k);
  // speculation (cpu_scan.h, speculative_threshold) depends on (v, k) only: its rank, 0 where it does not pay
  const int64_t spec_r = speculation_pays(v, k) ? spec_rank(v, k) : 0;
  const bool spec_dense = spec_r > 0 && speculation_dense(spec_r);

  auto scan_part = [&](int64_t r, int64_t cb, int64_t ce, ChunkStats* st, TopkScratch& s, bool speculate) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    if (rs.mode == RowMode::kInvalid) return;
    const ScanNeeds need = needs_of(rs.mode);
    s.sel.reset(k);
    speculate = speculate && spec_r > 0;
    if (speculate && r + 1 < sa.n) prefetch_sample(make_row_scan(sa, r + 1, guided, unguided), v);
    s.spec = speculate ? speculative_threshold(rs, v, spec_r) : -kInf;
    s.sel.thr = s.spec;
    s.sel.dense = s.spec > -kInf && spec_dense;
    for (int64_t c = cb; c < ce; ++c) {
      int64_t len;
      const Pass1 p = load_chunk(rs, c, v, s.b.buf, &len);
      chunk_stats(s.b.buf, len, p, rs.tp, need, &st[c]);
      if (!need.sum || p.nan) continue;
      if (rs.flat) {  // T = inf: finite tokens share one fp32 log-probability, so the reference orders them by id
        for (int64_t i = 0; i < len; ++i) s.b.buf[i] = std::isfinite(s.b.buf[i]) ? 0.f : s.b.buf[i];
      }
      topk_offer(s.b.buf, padded(len), static_cast<uint32_t>(c * kChunk), &s.sel);
    }
  };
  auto scan = [&](int64_t r, int64_t cb, int64_t ce, ChunkStats* st, TopkScratch& s) {
    scan_part(r, cb, ce, st, s, true);
  };

  auto finish = [&](int64_t r, ChunkStats* st, TopkScratch* parts, int64_t nparts) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    const RowDist d = row_dist(st, n_chunks, rs);
    float* values = a.values + r * k;
    int64_t* ids = a.ids + r * k;
    if (d.invalid) {
      std::fill(values, values + k, kNaN);
      std::fill(ids, ids + k, int64_t{-1});
      return;
    }
    std::vector<Cand>& p = parts[0].merged;
    p.clear();
    if (d.mode == RowMode::kGreedy) {
      p.push_back(make_cand(0.f, static_cast<uint32_t>(d.argmax)));
    } else {
      int64_t got = 0;
      for (int64_t q = 0; q < nparts; ++q) got += parts[q].sel.n;
      if (got < k && parts[0].spec > -kInf) {  // the speculative threshold was too high: scan the row again without
        scan_part(r, 0, n_chunks, st, parts[0], false);
        nparts = 1;
      }
      for (int64_t q = 0; q < nparts; ++q) parts[q].sel.append_to(p);
      select_best(p, k, parts[0].sel.scratch);  // in id order: parts cover ascending chunk ranges
      if (d.inf_mode) {  // the +inf tokens (the best candidates) share the mass
        size_t keep = 0;
        for (const Cand c : p)
          if (cand_z(c) == kInf) p[keep++] = make_cand(-d.log_s, cand_id(c));
        p.resize(keep);
      } else {
        const float mz = d.mz, pre = rs.tp.pre, inv = rs.tp.inv, ls = d.log_s;
        for (Cand& c : p) c = make_cand((cand_z(c) - mz) * pre * inv - ls, cand_id(c));  // as guided_log_softmax does
      }
      sort_best_first(p, parts[0].sel.scratch);  // p is still in id order: ties of the rounded values go to the lower id
    }
    write_topk_row(p, k, values, ids);
  };
  run_rows(sa.n, n_chunks, sa.threads, proto, scan, finish, NoPost{});
}
