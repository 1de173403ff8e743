// The two-level exponential race of KERNEL_SPEC §3, per-ISA (no include guard, see cpu_multiversion.h).
//   chunk level: c* = argmax_c (M_c - ln E(c, stream 2)), in float64 from per-chunk statistics (a few per row);
//   token level: v* = argmax_{v in S, chunk(v) = c*} (s_v - ln E(v, stream 0)), vectorized over the chosen chunk.
// Ties go to the lower chunk / token id.

struct RaceRow {
  PhiloxKeys key;
  uint64_t offset;
  float mz;      // reference score of the chunk: keys use d = (z - mz) / T, a shift common to the whole race
  Temper tp;
  bool inf_mode;  // the row holds +inf scores: only they take part, with equal scores
};

// Winner among n entries (z padded with -inf to a multiple of W): its position, or -1 if no entry is allowed.
// ids: the token counter of each entry, or nullptr for id0 + position.
// Two vectors per step, their Philox chains interleaved (philox_w01); lanes are still visited in id order, so ties
// go to the lower position exactly as one vector at a time would.
GTL_VI int64_t token_race(const float* z, const uint32_t* ids, uint32_t id0, int64_t n, const RaceRow& rr) {
  constexpr int K = 2;
  vf best = splat(-kInf);
  vi best_i = {};
  const vf mz = splat(rr.mz), pre = splat(rr.tp.pre), inv = splat(rr.tp.inv);
  int k = K;
  for (int64_t i = 0; i < n; i += k * W) {
    k = n - i >= K * W ? K : 1;  // the last steps take one vector (n need not be a multiple of W; z is padded)
    vf zv[K];
    bool any = false;
    for (int j = 0; j < k; ++j) {
      zv[j] = load(z + i + j * W);
      any |= mask_bits(zv[j] > splat(-kInf)) != 0;
    }
    if (!any) continue;  // nothing allowed here (e.g. padding of a candidate list)
    vu a[K], w0[K], w1[K];
    for (int j = 0; j < k; ++j) {
      if (ids) {
        std::memcpy(&a[j], ids + i + j * W, sizeof(vu));
      } else {
        a[j] = splat_u(id0 + static_cast<uint32_t>(i + j * W)) + (vu)iota();
      }
    }
    if (k == K) {
      philox_w01<K>(a, rr.offset, kStreamToken, rr.key, w0, w1);
    } else {
      philox_w01<1>(a, rr.offset, kStreamToken, rr.key, w0, w1);
    }
    for (int j = 0; j < k; ++j) {
      const vf log_e = vlog(exponential(w0[j], w1[j]));
      vf key = (zv[j] - mz) * pre * inv - log_e;
      if (rr.inf_mode) key = zv[j] == splat(kInf) ? splat(0.f) - log_e : splat(-kInf);
      const vi better = key > best;
      best = better ? key : best;
      best_i = better ? iota() + static_cast<int32_t>(i + j * W) : best_i;
    }
  }
  float top = -kInf;
  int64_t pos = -1;
  for (int l = 0; l < W; ++l) {
    if (best[l] > top || (best[l] == top && top > -kInf && best_i[l] < pos)) {
      top = best[l];
      pos = best_i[l];
    }
  }
  return pos;
}

// Chunk race from per-chunk statistics; returns c* or -1 when no chunk meets the allowed set.
// inf_mode: chunks are weighted by their number of +inf tokens (M_c = ln n_c).
GTL_VI int64_t chunk_race(const ChunkStats* st, int64_t n_chunks, bool inf_mode, double t, uint64_t seed,
                          uint64_t offset) {
  double best = -std::numeric_limits<double>::infinity();
  int64_t best_c = -1;
  for (int64_t c = 0; c < n_chunks; ++c) {
    double m;
    if (inf_mode) {
      if (st[c].ninf == 0) continue;
      m = std::log(static_cast<double>(st[c].ninf));
    } else {
      if (!(st[c].mz > -kInf)) continue;
      m = static_cast<double>(st[c].mz) / t + std::log(static_cast<double>(st[c].sum));
    }
    const double key = m - chunk_race_log_e(seed, offset, c);
    if (key > best) {
      best = key;
      best_c = c;
    }
  }
  return best_c;
}
