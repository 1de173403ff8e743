// Top-k candidates of a row (KERNEL_SPEC §1 order: higher z first, then lower id), ISA-free and torch-free.
//
// One pass over the row: scores above the buffer's threshold are appended in id order; when the buffer is full it is
// cut back to at least k entries by a radix histogram of their keys, and the threshold becomes the lowest kept score.
// Every step keeps the buffer in id order (tokens are scanned in id order, cuts and selections are stable), which
// is what makes the radix passes exact:
//  - a later token equal to the threshold ranks below every kept entry (equal or higher z, lower id), so the filter
//    is a strict >; NaN and -inf never enter;
//  - the best k by key are the first k of a stable sort by z alone, and a stable sort by z descending gives the
//    reference's order (ties toward the lower id) with no comparison of ids.
// Radix rather than std::nth_element / std::sort: a cut of 2k = 1024 keys is two linear passes instead of ~20
// branchy comparisons per key, and the final sort of k keys two to three counting passes (docs/CPU_BACKEND.md).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "gtl/cpu_common.h"

namespace gtl::cpu {

// A candidate is one 64-bit key: order-preserving bits of z above the complemented id, so that a larger key ranks
// first (higher z, then lower id).
using Cand = uint64_t;

// The order-preserving bits of z (topk_offer computes the same on a vector).
inline uint32_t z_key(float z) {
  uint32_t u;
  const float zz = z + 0.f;  // -0 -> +0: equal scores tie on the id
  std::memcpy(&u, &zz, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline Cand cand_of(uint32_t key, uint32_t id) {
  return (static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(~id);
}
inline Cand make_cand(float z, uint32_t id) { return cand_of(z_key(z), id); }
inline uint32_t cand_id(Cand c) { return ~static_cast<uint32_t>(c); }
inline uint32_t cand_key(Cand c) { return static_cast<uint32_t>(c >> 32); }  // the z part, order-preserving
inline float key_z(uint32_t u) {
  u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
  float z;
  std::memcpy(&z, &u, 4);
  return z;
}
inline float cand_z(Cand c) { return key_z(cand_key(c)); }

// Below this many entries, std::nth_element / std::sort beat the fixed cost of a histogram.
constexpr int64_t kRadixMin = 64;

struct SelectScratch {
  std::vector<uint32_t> keys;  // keys of the boundary bin between radix levels
  std::vector<Cand> tmp;       // the other half of the radix sort
  uint32_t hist[2048];
};

// The bits in which keys[0, n) differ: *top is the highest such bit (-1 when all keys are equal), *lo the smallest.
template <class Key>
inline void key_spread(const Key& key, int64_t n, int* top, uint32_t* lo) {
  uint32_t mn = ~0u, mx = 0u;
  for (int64_t i = 0; i < n; ++i) {
    mn = std::min(mn, key(i));
    mx = std::max(mx, key(i));
  }
  *lo = mn;
  *top = mn == mx ? -1 : 31 - __builtin_clz(mn ^ mx);
}
inline uint32_t common_prefix(uint32_t lo, int top) { return top == 31 ? 0u : (lo >> (top + 1)) << (top + 1); }

// Histogram of the `width` key bits starting at `shift` of keys[0, n) that equal `prefix` above them; returns the bin
// holding the need-th largest key (counting down from the top bin) and lowers *need by the keys of the bins above.
template <class Key>
inline uint32_t radix_level(const Key& key, int64_t n, int shift, int width, uint32_t prefix, int64_t* need,
                            uint32_t* hist) {
  const uint32_t bins = 1u << width, mask = bins - 1;
  const int above = shift + width;  // bits above this digit must equal the prefix's
  std::fill(hist, hist + bins, 0u);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = key(i);
    if (above >= 32 || (u >> above) == (prefix >> above)) ++hist[(u >> shift) & mask];
  }
  uint32_t b = mask;
  for (; b > 0 && static_cast<int64_t>(hist[b]) < *need; --b) *need -= hist[b];
  return b;
}

// The first radix level over keys[0, n) (n >= 1, 1 <= k <= n): up to 11 bits below the keys' common prefix. `prefix`
// holds the common bits and the bin of the k-th largest key, `shift` the lowest bit of that bin (0: the bin is one
// key value), `need` the rank of the k-th key within the bin, `count` the keys in it.
struct RadixLevel {
  uint32_t prefix;
  int shift;
  int64_t need;
  int64_t count;
};
template <class Key>
inline RadixLevel first_radix_level(const Key& key, int64_t n, int64_t k, uint32_t* hist) {
  int top;
  uint32_t lo;
  key_spread(key, n, &top, &lo);
  RadixLevel l{common_prefix(lo, top), 0, k, n};
  if (top >= 0) {
    l.shift = std::max(top - 10, 0);
    const uint32_t b = radix_level(key, n, l.shift, top - l.shift + 1, l.prefix, &l.need, hist);
    l.prefix |= b << l.shift;
    l.count = hist[b];
  }
  return l;
}

// The k-th largest key exactly, continuing from the first level `l`, and in *rank how many entries with that key are
// among the best k (the first ones: ids ascend). Later levels of 11 bits scan only the boundary bin's keys.
template <class Key>
inline uint32_t kth_key_from(const Key& key, int64_t n, RadixLevel l, SelectScratch& s, int64_t* rank) {
  std::vector<uint32_t>& g = s.keys;
  int shift = l.shift;
  g.clear();
  for (int64_t i = 0; i < n && shift > 0; ++i)
    if ((key(i) >> shift) == (l.prefix >> shift)) g.push_back(key(i));
  while (shift > 0) {
    const int next = std::max(shift - 11, 0);
    const uint32_t* gk = g.data();
    l.prefix |= radix_level([gk](int64_t i) { return gk[i]; }, static_cast<int64_t>(g.size()), next, shift - next,
                            l.prefix, &l.need, s.hist) << next;
    shift = next;
    size_t m = 0;
    for (const uint32_t u : g)
      if ((u >> shift) == (l.prefix >> shift)) g[m++] = u;
    g.resize(m);
  }
  *rank = l.need;
  return l.prefix;
}

// The k-th largest of keys[0, n) (1 <= k <= n), exactly, and in *rank how many entries with that key are among the
// best k.
template <class Key>
inline uint32_t kth_key(const Key& key, int64_t n, int64_t k, SelectScratch& s, int64_t* rank) {
  if (n < kRadixMin) {
    std::vector<uint32_t>& g = s.keys;
    g.resize(n);
    for (int64_t i = 0; i < n; ++i) g[i] = key(i);
    std::nth_element(g.begin(), g.begin() + (k - 1), g.end(), std::greater<uint32_t>());
    const uint32_t kth = g[k - 1];
    *rank = k - std::count_if(g.begin(), g.end(), [kth](uint32_t u) { return u > kth; });
    return kth;
  }
  return kth_key_from(key, n, first_radix_level(key, n, k, s.hist), s, rank);
}

// Keeps the best k entries of v, in id order (v is in id order).
inline void select_best(std::vector<Cand>& v, int64_t k, SelectScratch& s) {
  const int64_t n = static_cast<int64_t>(v.size());
  if (n <= k) return;
  if (k <= 0) {
    v.clear();
    return;
  }
  int64_t rank;
  const Cand* c = v.data();
  const uint32_t kth = kth_key([c](int64_t i) { return cand_key(c[i]); }, n, k, s, &rank);
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = cand_key(v[i]);
    if (u > kth || (u == kth && rank-- > 0)) v[m++] = v[i];
  }
  v.resize(m);
}

// Sorts v (in id order) best first: a stable LSD radix sort of the keys, descending, 8 bits a pass over the bits in
// which they differ, so ties keep the id order. Equal to std::sort with std::greater<Cand>.
inline void sort_best_first(std::vector<Cand>& v, SelectScratch& s) {
  const int64_t n = static_cast<int64_t>(v.size());
  if (n < kRadixMin) {
    std::sort(v.begin(), v.end(), std::greater<Cand>());
    return;
  }
  int top;
  uint32_t lo;
  const Cand* c = v.data();
  key_spread([c](int64_t i) { return cand_key(c[i]); }, n, &top, &lo);
  s.tmp.resize(n);
  Cand* a = v.data();
  Cand* b = s.tmp.data();
  for (int shift = 0; shift <= top; shift += 8) {
    uint32_t* h = s.hist;  // h[j]: first output slot of digit 255 - j (descending)
    std::fill(h, h + 257, 0u);
    for (int64_t i = 0; i < n; ++i) ++h[256 - ((cand_key(a[i]) >> shift) & 255u)];
    for (int j = 0; j < 256; ++j) h[j + 1] += h[j];
    for (int64_t i = 0; i < n; ++i) b[h[255 - ((cand_key(a[i]) >> shift) & 255u)]++] = a[i];
    std::swap(a, b);
  }
  if (a != v.data()) std::memcpy(v.data(), a, static_cast<size_t>(n) * sizeof(Cand));
}

// The candidate buffer of one row part: keys and ids in two arrays, so that the filter appends a vector's passing
// lanes with one compress and the cuts scan 4-byte keys.
struct TopK {
  int64_t k = 0;
  int64_t n = 0;     // live entries [0, n)
  int64_t full = 0;  // a cut happens when n reaches this
  float thr = -kInf;
  bool dense = false;  // the filter stores every vector (see topk_offer)
  std::vector<uint32_t> key, id;
  SelectScratch scratch;

  // Entries are appended a chunk at a time, and the filter writes whole vectors, so the buffer never holds more than
  // full + kChunk + kMaxW.
  void reset(int64_t k_) {
    k = k_;
    n = 0;
    thr = -kInf;
    dense = false;
    // 4k, not 2k: half as many cuts of twice as many keys (13% faster at k = 64, the same at k = 1, 8 and 512;
    // docs/CPU_BACKEND.md); k small: a cut after every few tokens would cost more than it saves
    full = std::max<int64_t>(4 * k, kRadixMin);
    const size_t cap = static_cast<size_t>(full + kChunk + kMaxW);
    if (key.size() < cap) {
      key.resize(cap);
      id.resize(cap);
    }
  }
  void append_to(std::vector<Cand>& out) const {
    for (int64_t i = 0; i < n; ++i) out.push_back(cand_of(key[i], id[i]));
  }

  // Amortized: a cut frees at least k / 2 slots. One radix level gives a bin edge with at least k keys at or above
  // it (*rank = -1: keep every key >= *edge); when the edge's bin holds too many keys to free that much (ties), the
  // exact k-th key is the edge instead (*rank: keep the keys above it and the first *rank equal to it). The per-ISA
  // topk_cut (cpu_scan.h) compacts.
  bool cut_due(uint32_t* edge, int64_t* rank) {
    if (n < full) return false;
    const uint32_t* kk = key.data();
    auto at = [kk](int64_t i) { return kk[i]; };
    const RadixLevel l = first_radix_level(at, n, k, scratch.hist);
    if (k - l.need + l.count <= k + k / 2) {  // the keys above the bin, and the bin
      *edge = l.prefix;
      *rank = -1;
    } else {
      *edge = kth_key_from(at, n, l, scratch, rank);
    }
    return true;
  }
};

}  // namespace gtl::cpu
