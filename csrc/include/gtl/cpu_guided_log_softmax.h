// guided_log_softmax (KERNEL_SPEC §2), per-ISA batch function (no include guard, see cpu_multiversion.h).
// One read of the input: the scan stores z while it computes the chunk statistics, the post pass writes
// (z - max) / T - log(sum). When a thread owns a whole row (n >= threads), z goes to a per-thread row buffer that
// stays in L2 and the output is written once, by the post pass (measured: less user time than storing z in the
// output and rewriting it; non-temporal stores were slower still, as the fresh output pages are faulted in anyway).
// When a row is split across threads, z is stored in the output row itself and rewritten in place.

struct GlsmScratch {
  ChunkBuffer b;
  std::vector<float> row;  // z of the current row (whole-row mode only), padded to whole chunks
};

// out[i] = f(src[i .. i + W), i) for i in [b, e); the tail goes through a padded copy, so src is never read past e.
template <class F>
GTL_VI void map_row(float* out, const float* src, int64_t b, int64_t e, F f) {
  int64_t i = b;
  for (; i + W <= e; i += W) store(out + i, f(load(src + i), i));
  if (i < e) {
    float t[W] = {};
    std::memcpy(t, src + i, (e - i) * sizeof(float));
    store(t, f(load(t), i));
    std::memcpy(out + i, t, (e - i) * sizeof(float));
  }
}

// Maps the whole pages of [begin, end) writable in one system call, instead of one page fault per 4 KiB page as the
// row is written (a fresh output of N x V floats is not yet backed by memory). Best effort: errors are ignored.
GTL_VI void prefault(float* begin, float* end) {
#if defined(MADV_POPULATE_WRITE)
  const uintptr_t page = 4096, b = (reinterpret_cast<uintptr_t>(begin) + page - 1) & ~(page - 1),
                  e = reinterpret_cast<uintptr_t>(end) & ~(page - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_WRITE);
#else
  (void)begin;
  (void)end;
#endif
}

static void guided_log_softmax_batch(const GlsmArgs& a) {
  const ScoreArgs& sa = a.s;
  const int64_t v = sa.v, n_chunks = (v + kChunk - 1) / kChunk;
  const Pass1Fn guided = sa.bias ? select_pass1(sa.logits_dtype, sa.bias_dtype, true) : nullptr;
  const Pass1Fn unguided = select_pass1(sa.logits_dtype, sa.bias_dtype, false);
  std::vector<RowDist> dist(sa.n);
  std::vector<Temper> tp(sa.n);
  auto whole_row = [&](int64_t cb, int64_t ce) { return cb == 0 && ce == n_chunks; };

  auto scan = [&](int64_t r, int64_t cb, int64_t ce, ChunkStats* st, GlsmScratch& s) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    if (rs.mode == RowMode::kInvalid) return;
    const ScanNeeds need = needs_of(rs.mode);
    float* out = a.out + r * v;
    if (whole_row(cb, ce) && s.row.empty()) s.row.assign(n_chunks * kChunk + kMaxW, 0.f);
    for (int64_t c = cb; c < ce; ++c) {
      // Whole rows: into the row buffer. Split rows: full chunks straight into the output, the last one through the
      // padded chunk buffer.
      float* dst = whole_row(cb, ce) ? s.row.data() + c * kChunk
                   : (c + 1) * kChunk <= v ? out + c * kChunk
                                           : s.b.buf;
      int64_t len;
      const Pass1 p = load_chunk(rs, c, v, dst, &len);
      if (dst == s.b.buf) std::memcpy(out + c * kChunk, s.b.buf, len * sizeof(float));
      chunk_stats(dst, len, p, rs.tp, need, &st[c]);
    }
  };

  auto finish = [&](int64_t r, ChunkStats* st, GlsmScratch*, int64_t) {
    const RowScan rs = make_row_scan(sa, r, guided, unguided);
    dist[r] = row_dist(st, n_chunks, rs);
    tp[r] = rs.tp;
  };

  auto post = [&](int64_t r, int64_t cb, int64_t ce, GlsmScratch& s) {
    const RowDist& d = dist[r];
    float* out = a.out + r * v;
    const bool own = whole_row(cb, ce) && !s.row.empty();
    const float* src = own ? s.row.data() : out;
    const int64_t b = cb * kChunk, e = std::min(ce * kChunk, v);
    if (own) prefault(out + b, out + e);
    if (d.invalid) {
      map_row(out, src, b, e, [](vf, int64_t) { return splat(kNaN); });
    } else if (d.mode == RowMode::kGreedy) {  // the T -> 0 limit: the point mass on the first maximum
      const int32_t am = static_cast<int32_t>(d.argmax);
      map_row(out, src, b, e, [&](vf, int64_t i) {
        return iota() + static_cast<int32_t>(i) == am ? splat(0.f) : splat(-kInf);
      });
    } else if (d.inf_mode) {  // the +inf tokens share the mass equally
      const vf lp = splat(-d.log_s);
      map_row(out, src, b, e, [&](vf z, int64_t) { return z == splat(kInf) ? lp : splat(-kInf); });
    } else {
      const vf mz = splat(d.mz), pre = splat(tp[r].pre), inv = splat(tp[r].inv), ls = splat(d.log_s);
      map_row(out, src, b, e, [&](vf z, int64_t) { return (z - mz) * pre * inv - ls; });
    }
  };
  run_rows(sa.n, n_chunks, sa.threads, GlsmScratch{}, scan, finish, post);
}
