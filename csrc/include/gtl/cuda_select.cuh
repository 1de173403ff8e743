// Top-k of one row by one block (KERNEL_SPEC §2 topk_log_softmax, §3 top_k restriction): an exact radix select on
// 64-bit keys key64(score key, id), so that ties at the k-th score go to the lower ids, followed for
// topk_log_softmax by a bitonic sort of the k survivors.
//
// Select. The k-th largest key T is found digit by digit from the top (11-bit digits: bits 63..53, 52..42, 41..31,
// 30..20, 19..9, 8..0). Each pass histograms the next digit of the keys still inside the current range [lo, hi]
// (2048 shared-memory counters) and narrows the range to the digit holding T. It stops as soon as every key left in
// the range belongs to the top k (then the top k are exactly the keys >= lo), at the latest after the sixth digit
// (a single key). A pass reads the row from global memory until the range holds at most kCacheCap keys; the next
// pass then copies them to shared memory and the later passes read only that copy. Gathering (topk_log_softmax)
// costs no extra pass except the last: keys above the new range are collected during the following pass.
// Typical rows settle after two digits (three reads of the row, the last from L2); a row of equal scores needs the
// id digits and more passes.
#pragma once

#include "gtl/cuda_common.cuh"

namespace gtl {
namespace cuda {

constexpr int kRadixBits = 11;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kCacheCap = 2048;

template <bool kGather>
struct SelectSmem {
  uint32_t hist[kRadixBins];
  uint64_t cache[kCacheCap];
  uint64_t out[kGather ? kTopkMax : 1];
  uint32_t scan[kWarps];
  uint32_t n_cache, n_out, digit, above, n_in;
};

GTL_HD int radix_shift(int round) { return round < 5 ? 64 - kRadixBits * (round + 1) : 0; }
GTL_HD int radix_width(int round) { return round < 5 ? kRadixBits : 64 - 5 * kRadixBits; }

// Returns the lower end `lo` of the final range: the top k keys are exactly those >= lo. With kGather, sm.out[0..k)
// holds them (unordered). `for_each_key(visit)` must call visit(key) once for every token of the row, from every
// thread of the block collectively (any distribution of tokens to threads). 1 <= k <= number of tokens.
template <bool kGather, class ForEachKey>
GTL_DEV uint64_t block_select(ForEachKey for_each_key, uint32_t k, SelectSmem<kGather>& sm) {
  const int tid = threadIdx.x;
  uint64_t lo = 0, hi = ~uint64_t{0}, hi_prev = ~uint64_t{0};
  uint32_t kk = k;
  bool cached = false, caching = false;
  if (tid == 0) {
    sm.n_cache = 0;
    sm.n_out = 0;
  }
  // Every key still in play, to visit: from the shared cache once it holds the range, else from the row.
  auto each_key = [&](auto visit) {
    if (cached) {
      const uint32_t n = sm.n_cache;
      for (uint32_t i = tid; i < n; i += kThreads) visit(sm.cache[i]);
    } else {
      for_each_key(visit);
    }
  };
  for (int round = 0;; ++round) {
    const int shift = radix_shift(round);
    const uint64_t digit_mask = (uint64_t{1} << radix_width(round)) - 1;
    for (int b = tid; b < kRadixBins; b += kThreads) sm.hist[b] = 0;
    __syncthreads();
    const bool cache_now = caching;
    auto visit = [&](uint64_t key) {
      if (key > hi) {
        // Above the range: in the top k. Collected once, in the pass after the one that put it above.
        if (kGather && key <= hi_prev) sm.out[atomicAdd(&sm.n_out, 1u)] = key;
        return;
      }
      if (key < lo) return;
      atomicAdd(&sm.hist[(key >> shift) & digit_mask], 1u);
      if (cache_now) sm.cache[atomicAdd(&sm.n_cache, 1u)] = key;
    };
    each_key(visit);
    __syncthreads();
    if (cache_now) {
      cached = true;
      caching = false;
    }
    // The digit holding the kk-th largest key of the range: thread t owns bins 2047 - 8t - [0, 8), from the top.
    constexpr int kPer = kRadixBins / kThreads;
    uint32_t h[kPer], local = 0;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      h[j] = sm.hist[kRadixBins - 1 - kPer * tid - j];
      local += h[j];
    }
    uint32_t total;
    const uint32_t before = block_exclusive_scan(local, sm.scan, &total);
    if (before < kk && kk <= before + local) {
      uint32_t cum = before;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        if (cum + h[j] >= kk) {
          sm.digit = static_cast<uint32_t>(kRadixBins - 1 - kPer * tid - j);
          sm.above = cum;
          sm.n_in = h[j];
          break;
        }
        cum += h[j];
      }
    }
    __syncthreads();
    const uint32_t digit = sm.digit, above = sm.above, n_in = sm.n_in;
    __syncthreads();
    hi_prev = hi;
    lo += static_cast<uint64_t>(digit) << shift;
    hi = lo + ((uint64_t{1} << shift) - 1);
    kk -= above;
    if (n_in == kk) break;
    if (!cached && n_in <= static_cast<uint32_t>(kCacheCap)) caching = true;
  }
  if (kGather) {
    // Everything in [lo, hi_prev] is in the top k and not collected yet.
    each_key([&](uint64_t key) {
      if (key >= lo && key <= hi_prev) sm.out[atomicAdd(&sm.n_out, 1u)] = key;
    });
    __syncthreads();
  }
  return lo;
}

// Sorts keys[0, n) descending in shared memory (n <= kTopkMax); keys[n, pow2) are filled with 0, below any real key.
GTL_DEV void block_sort_desc(uint64_t* keys, uint32_t n) {
  uint32_t size = 1;
  while (size < n) size <<= 1;
  for (uint32_t i = n + threadIdx.x; i < size; i += kThreads) keys[i] = 0;
  __syncthreads();
  for (uint32_t width = 2; width <= size; width <<= 1) {
    for (uint32_t stride = width >> 1; stride > 0; stride >>= 1) {
      for (uint32_t i = threadIdx.x; i < size / 2; i += kThreads) {
        const uint32_t a = 2 * i - (i & (stride - 1)), b = a + stride;
        const bool descending = (a & width) == 0;
        const uint64_t ka = keys[a], kb = keys[b];
        if ((ka < kb) == descending) {
          keys[a] = kb;
          keys[b] = ka;
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace cuda
}  // namespace gtl
