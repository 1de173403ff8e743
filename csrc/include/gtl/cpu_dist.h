// The guided distribution of a row from its chunk statistics, combined in chunk order in float64 (per-ISA, no include
// guard, see cpu_multiversion.h). Used by guided_log_softmax, topk_log_softmax and confidence (KERNEL_SPEC §2).

struct RowDist {
  bool invalid = true;  // T < 0 or NaN, a NaN score, or no score above -inf (KERNEL_SPEC §4)
  bool inf_mode = false;  // +inf scores present (T > 0): they share the mass equally
  RowMode mode = RowMode::kInvalid;
  float mz = -kInf;     // max of z
  int64_t ninf = 0;     // number of +inf scores
  int64_t argmax = -1;  // first position of mz (when the scan looked for it)
  float z2 = -kInf;     // second largest z (when the scan looked for it)
  double s = 0.0;       // sum over tokens of exp((z - mz) / T)
  double w = 0.0;       // sum over tokens of exp(d) * d, d = (z - mz) / T
  float log_s = 0.f;    // log(s) rounded to float, the shift of every log-probability
};

static inline RowDist row_dist(const ChunkStats* st, int64_t n_chunks, const RowScan& rs) {
  RowDist d;
  d.mode = rs.mode;
  if (rs.mode == RowMode::kInvalid) return d;
  for (int64_t c = 0; c < n_chunks; ++c) {
    if (st[c].nan) return d;
    d.mz = std::max(d.mz, st[c].mz);
    d.ninf += st[c].ninf;
  }
  if (!(d.mz > -kInf)) return d;
  d.invalid = false;
  int64_t carg = -1;
  for (int64_t c = 0; c < n_chunks && carg < 0; ++c)
    if (st[c].mz == d.mz) carg = c;
  d.argmax = st[carg].arg < 0 ? -1 : carg * kChunk + st[carg].arg;
  d.z2 = st[carg].z2;
  for (int64_t c = 0; c < n_chunks; ++c)
    if (c != carg) d.z2 = std::max(d.z2, st[c].mz);
  if (rs.mode == RowMode::kGreedy) return d;
  d.inf_mode = d.ninf > 0;
  if (d.inf_mode) {
    d.s = static_cast<double>(d.ninf);
    d.log_s = static_cast<float>(std::log(d.s));
    return d;
  }
  for (int64_t c = 0; c < n_chunks; ++c) {
    if (!(st[c].mz > -kInf)) continue;
    const double delta = (static_cast<double>(st[c].mz) - d.mz) / rs.t;
    const double scale = std::exp(delta);
    d.s += st[c].sum * scale;
    d.w += scale * (st[c].w + delta * st[c].sum);
  }
  d.log_s = static_cast<float>(std::log(d.s));
  return d;
}
