// sample and masked_transition (KERNEL_SPEC §2, §3), per-ISA batch functions (no include guard, see
// cpu_multiversion.h). One read of each row: chunk statistics and, with top_k, the candidate buffer; then the chunk
// race and, without top_k, a re-read of the one chosen chunk for the token race.

struct DrawScratch {
  ChunkBuffer b;
  TopK sel;
  std::vector<Cand> merged;
  std::vector<float> cz;     // candidates of the chosen chunk, padded for the vector race
  std::vector<uint32_t> cid;
  std::vector<double> masses;  // chunk log-masses of the row, for the log-probability of the drawn token
};

// What happens to a row, decided before anything of it is read.
struct DrawRow {
  RowScan s;
  bool read = false;    // the row's scores are needed
  int64_t fixed = -1;   // the output when they are not
  bool topk = false;    // the allowed set is restricted to the top_k scores
};

static inline DrawRow draw_row(const DrawArgs& a, int64_t r, Pass1Fn guided, Pass1Fn unguided) {
  DrawRow d;
  if (a.x_t) {  // masked_transition: copy unmasked positions; stay masked iff U(0, stream 1) < stay_prob
    if (a.x_t[r] != a.mask_id) {
      d.fixed = a.x_t[r];
      return d;
    }
    const uint64_t seed = static_cast<uint64_t>(a.seeds[r]);
    if (uniform64(random_bits64(seed, 0u, a.offset, kStreamStay)) < static_cast<double>(a.stay_prob[r])) {
      d.fixed = a.mask_id;
      return d;
    }
  }
  d.s = make_row_scan(a.s, r, guided, unguided);
  if (d.s.mode == RowMode::kInvalid) return d;  // fixed = -1
  if (a.x_t) {
    d.s.excl = a.mask_id;
    if (a.index) d.s.excl_ids = a.index + r * a.index_stride;
  }
  d.read = true;
  d.topk = a.top_k > 0 && a.top_k < a.s.v && d.s.mode == RowMode::kTempered;
  return d;
}

// log(sum_c exp(m_c)) of chunk log-masses, in float64 (the normalizer of the log-probability of the drawn token).
static inline double log_total(const std::vector<double>& m) {
  double top = -std::numeric_limits<double>::infinity();
  for (double x : m) top = std::max(top, x);
  double sum = 0.0;
  for (double x : m) sum += std::exp(x - top);
  return top + std::log(sum);
}

// Race among the top-k candidates: allowed = the +inf ones if any, else all of them. *lp: log-probability of the
// winner among the allowed candidates.
static inline int64_t topk_race(DrawScratch& s, const DrawRow& d, uint64_t seed, uint64_t offset, double* lp) {
  std::vector<Cand>& cand = s.merged;
  if (cand.empty()) return -1;
  const bool inf_mode = std::any_of(cand.begin(), cand.end(), [](Cand c) { return cand_z(c) == kInf; });
  if (inf_mode) {
    cand.erase(std::remove_if(cand.begin(), cand.end(), [](Cand c) { return cand_z(c) != kInf; }), cand.end());
  }
  // Chunk race (cand is in id order, so each chunk's candidates are contiguous) over the chunks the candidates fall in.
  double best = -std::numeric_limits<double>::infinity();
  size_t best_b = 0, best_e = 0;
  float best_mz = 0.f;
  std::vector<double>& masses = s.masses;
  masses.clear();
  for (size_t b = 0; b < cand.size();) {
    const int64_t c = cand_id(cand[b]) / kChunk;
    size_t e = b;
    float mz = -kInf;
    while (e < cand.size() && cand_id(cand[e]) / kChunk == c) mz = std::max(mz, cand_z(cand[e++]));
    double m;
    if (inf_mode) {
      m = std::log(static_cast<double>(e - b));
    } else {
      double sum = 0.0;
      for (size_t i = b; i < e; ++i) sum += std::exp((static_cast<double>(cand_z(cand[i])) - mz) / d.s.t);
      m = static_cast<double>(mz) / d.s.t + std::log(sum);
    }
    masses.push_back(m);
    const double key = m - chunk_race_log_e(seed, offset, c);
    if (key > best) {
      best = key;
      best_b = b;
      best_e = e;
      best_mz = mz;
    }
    b = e;
  }
  const int64_t n = static_cast<int64_t>(best_e - best_b);
  s.cz.assign(padded(n), -kInf);
  s.cid.assign(padded(n), 0u);
  for (int64_t i = 0; i < n; ++i) {
    s.cz[i] = cand_z(cand[best_b + i]);
    s.cid[i] = cand_id(cand[best_b + i]);
  }
  const RaceRow rr{PhiloxKeys(seed), offset, best_mz, d.s.tp, inf_mode};
  const int64_t pos = token_race(s.cz.data(), s.cid.data(), 0u, n, rr);
  if (pos < 0) return -1;
  *lp = inf_mode ? -std::log(static_cast<double>(cand.size())) : s.cz[pos] / d.s.t - log_total(masses);
  return s.cid[pos];
}

// The drawn column of a row that is read, or -1 (KERNEL_SPEC §4: NaN score, nothing allowed), and in *lp its
// log-probability under the distribution it was drawn from (KERNEL_SPEC §2 `sample`): z / T - log sum_c exp(M_c)
// from the chunk statistics the race already holds, 0 for greedy rows; no further read of the row.
static inline int64_t draw_column(const DrawArgs& a, int64_t r, const DrawRow& d, const ChunkStats* st,
                                  int64_t n_chunks, DrawScratch* parts, int64_t nparts, double* lp) {
  float mz = -kInf;
  int64_t ninf = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    if (st[c].nan) return -1;
    mz = std::max(mz, st[c].mz);
    ninf += st[c].ninf;
  }
  if (!(mz > -kInf)) return -1;
  if (d.s.mode == RowMode::kGreedy) {  // first maximum of logits + gamma * bias
    *lp = 0.0;
    for (int64_t c = 0; c < n_chunks; ++c)
      if (st[c].mz == mz) return c * kChunk + st[c].arg;
  }
  const uint64_t seed = static_cast<uint64_t>(a.seeds[r]);
  DrawScratch& s = parts[0];
  if (d.topk) {
    s.merged.clear();
    for (int64_t p = 0; p < nparts; ++p) parts[p].sel.append_to(s.merged);
    select_best(s.merged, a.top_k, s.sel.scratch);  // parts cover ascending chunk ranges: merged is in id order
    return topk_race(s, d, seed, a.offset, lp);
  }
  const int64_t c = chunk_race(st, n_chunks, ninf > 0, d.s.t, seed, a.offset);
  if (c < 0) return -1;
  int64_t len;
  load_chunk(d.s, c, a.s.v, s.b.buf, &len);
  const RaceRow rr{PhiloxKeys(seed), a.offset, st[c].mz, d.s.tp, ninf > 0};
  const int64_t pos = token_race(s.b.buf, nullptr, static_cast<uint32_t>(c * kChunk), padded(len), rr);
  if (pos < 0) return -1;
  if (a.logprob) {
    if (ninf > 0) {
      *lp = -std::log(static_cast<double>(ninf));
    } else {
      std::vector<double>& m = s.masses;
      m.clear();
      for (int64_t k = 0; k < n_chunks; ++k)
        if (st[k].mz > -kInf) m.push_back(static_cast<double>(st[k].mz) / d.s.t + std::log(static_cast<double>(st[k].sum)));
      *lp = s.b.buf[pos] / d.s.t - log_total(m);
    }
  }
  return c * kChunk + pos;
}

// Shared by sample and masked_transition (masked_transition sets a.x_t).
static void draw_batch(const DrawArgs& a) {
  const ScoreArgs& sa = a.s;
  const int64_t n_chunks = (sa.v + kChunk - 1) / kChunk;
  const Pass1Fn guided = sa.bias ? select_pass1(sa.logits_dtype, sa.bias_dtype, true) : nullptr;
  const Pass1Fn unguided = select_pass1(sa.logits_dtype, sa.bias_dtype, false);
  DrawScratch proto;
  if (a.top_k > 0) proto.sel.reset(std::min<int64_t>(a.top_k, sa.v));

  auto scan = [&](int64_t r, int64_t cb, int64_t ce, ChunkStats* st, DrawScratch& s) {
    const DrawRow d = draw_row(a, r, guided, unguided);
    if (!d.read) return;
    ScanNeeds need = needs_of(d.s.mode);
    need.sum = need.sum && !d.topk;  // a top-k row's masses come from its candidates
    if (d.topk) s.sel.reset(a.top_k);
    for (int64_t c = cb; c < ce; ++c) {
      int64_t len;
      const Pass1 p = load_chunk(d.s, c, sa.v, s.b.buf, &len);
      chunk_stats(s.b.buf, len, p, d.s.tp, need, &st[c]);
      if (d.topk && !p.nan) topk_offer(s.b.buf, padded(len), static_cast<uint32_t>(c * kChunk), &s.sel);
    }
  };

  auto finish = [&](int64_t r, ChunkStats* st, DrawScratch* parts, int64_t nparts) {
    const DrawRow d = draw_row(a, r, guided, unguided);
    int64_t token = d.fixed;
    double lp = std::numeric_limits<double>::quiet_NaN();
    if (d.read) {
      token = draw_column(a, r, d, st, n_chunks, parts, nparts, &lp);
      if (token < 0) lp = std::numeric_limits<double>::quiet_NaN();
      if (a.index && token >= 0) token = a.index[r * a.index_stride + token];  // candidate path: column -> token id
    }
    a.out[r] = token;
    if (a.logprob) a.logprob[r] = static_cast<float>(lp);
  };
  run_rows(sa.n, n_chunks, sa.threads, proto, scan, finish, NoPost{});
}
