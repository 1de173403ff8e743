// OpenMP schedule shared by the five ops, per-ISA (no include guard, see cpu_multiversion.h).
//
// Row mode (n >= threads): each thread takes whole rows; scan, finish and post of a row run back to back while the
// row is in cache. Chunk mode (n < threads, e.g. batch 1): each row is cut into `parts` contiguous chunk ranges that
// threads scan in parallel, then rows are finished, then post runs per part again.
// Chunk statistics are written per chunk and combined in chunk order by `finish`, and top-k parts are merged exactly,
// so the result of a row never depends on the thread count or on the split (KERNEL_SPEC §3, batch invariance).
//
//   scan(r, c_begin, c_end, ChunkStats* row_stats, Scratch& s)   reads chunks [c_begin, c_end) of row r
//   finish(r, ChunkStats* row_stats, Scratch* parts, nparts)     combines them and writes the row's small outputs
//   post(r, c_begin, c_end, Scratch& s)                          optional second pass over the row's own output
template <class Scratch, class Scan, class Finish, class Post>
void run_rows(int64_t n, int64_t n_chunks, int threads, const Scratch& proto, Scan scan, Finish finish, Post post) {
#if defined(_OPENMP)
  if (omp_in_parallel()) threads = 1;
#else
  threads = 1;
#endif
  if (n >= threads || n_chunks == 1 || threads <= 1) {
    // Guided: large blocks of consecutive rows first, so that each thread writes its own address range (threads
    // that fault in pages under one page table contend on its lock), then smaller ones, so that rows of unequal cost
    // (masked_transition) still balance and no thread waits long at the end.
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      Scratch s = proto;
      std::vector<ChunkStats> st(n_chunks);
#pragma omp for schedule(guided)
      for (int64_t r = 0; r < n; ++r) {
        scan(r, 0, n_chunks, st.data(), s);
        finish(r, st.data(), &s, 1);
        post(r, 0, n_chunks, s);
      }
    }
    return;
  }
  const int64_t parts = std::min<int64_t>(n_chunks, (threads + n - 1) / n);
  std::vector<ChunkStats> st(n * n_chunks);
  std::vector<Scratch> sc(n * parts, proto);
  auto range = [&](int64_t p, int64_t* b, int64_t* e) {
    *b = p * n_chunks / parts;
    *e = (p + 1) * n_chunks / parts;
  };
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < n * parts; ++item) {
      const int64_t r = item / parts;
      int64_t b, e;
      range(item % parts, &b, &e);
      scan(r, b, e, st.data() + r * n_chunks, sc[item]);
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) finish(r, st.data() + r * n_chunks, sc.data() + r * parts, parts);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < n * parts; ++item) {
      int64_t b, e;
      range(item % parts, &b, &e);
      post(item / parts, b, e, sc[item]);
    }
  }
}

struct NoPost {
  template <class S>
  void operator()(int64_t, int64_t, int64_t, S&) const {}
};

// Scratch of one thread (row mode) or one row part (chunk mode).
struct alignas(64) ChunkBuffer {
  float buf[kChunk + kMaxW];
};
