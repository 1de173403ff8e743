// Roofline of the CPU backend's scan (docs/CPU_BACKEND.md, "Roofline"): each part of the per-element work timed
// alone, on the AVX-512 path, with the headers the extension compiles (csrc/include/gtl), so that the limit of the
// design on a machine is a measured number of elements per second rather than a guess.
//
//   g++ -std=c++20 -O3 -fopenmp -ffp-contract=off -Icsrc/include benchmarks/cpu_roofline.cc -o /tmp/cpu_roofline
//   (add -DROOF_ISA=2 for the AVX2 path, on a machine without AVX-512)
//   /tmp/cpu_roofline [N V threads reps]          # default 1024 30522 2 15
//
// Every line is the median over `reps` rounds; each round runs every kernel once, back to back (so load from other
// processes hits all of them alike), over the same number of elements (N * V), on `threads` OpenMP threads that
// split the rows statically. Times are CPU time of the threads (CLOCK_THREAD_CPUTIME_ID, summed over threads): on a
// machine shared with other work they measure the work, where wall time would measure the share of the cores this
// process got. Columns: elements per CPU-second (one core's rate), CPU ns per element, the ratio to the streaming
// read of fp32 (`read max`, what torch.amax does) from the per-round ratios, GB per CPU-second for the kernels that
// read memory, and the wall-clock Gelem/s of all threads together.
//
// Kernels from memory (the [N, V] logits, fp32 or bf16): `read max` (the floor: one vector max per W elements),
// `pass1` (the backend's pass 1: z to the 4 KiB chunk buffer, max, NaN flag, prefetch of the next chunk), `scan`
// (pass 1 + the chunk's log-sum-exp statistics: what sample / masked_transition / confidence max_prob do per chunk),
// at T = 1 (which skips the temperature's two multiplies) and at T = 0.7, and the scan with pass 1 as it was before
// the prefetch.
// Kernels on one L1-resident chunk buffer (no memory traffic), N * V / 1024 times: `stats` (chunk_stats with the sum
// of exponentials: d = (z - max) * pre * inv, vexp, add), `vexp` (the exponential and the add alone), `max+sum, no
// exp` (the same loop with the exponential removed), `token race` (Philox4x32-10, E = -ln U, log, key, per token:
// done for one chunk per row), and candidate exponentials (see below).
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtl/cpu_common.h"
#include "gtl/cpu_select.h"

#pragma GCC diagnostic ignored "-Wpsabi"
#ifndef ROOF_ISA  // 3: the AVX-512 path (16 lanes); 2: the AVX2 path (8 lanes), -DROOF_ISA=2
#define ROOF_ISA 3
#endif
#pragma GCC push_options
#if ROOF_ISA == 3
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi,bmi2,popcnt")
#define GTL_ISA 3
#else
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#define GTL_ISA 2
#endif
namespace gtl::cpu::roof {
#include "gtl/cpu_vec.h"
#include "gtl/cpu_scan.h"
#include "gtl/cpu_race.h"

// The exponential with 2^n applied by vscalefps instead of integer bit arithmetic (sub, shift, multiply): the same
// polynomial and the same rounding of every result (p * 2^n is exact or rounded once either way).
#if GTL_ISA == 3
GTL_VI vf vexp_scalef(vf x) {
  const vf xc = x < splat(kExpLow) ? splat(kExpLow) : x;
  const vf t = fmadd(xc, splat(1.44269504088896341f), splat(12582912.0f));
  const vf n = t - splat(12582912.0f);
  vf r = fnmadd(n, splat(0.693359375f), xc);
  r = fnmadd(n, splat(-2.12194440e-4f), r);
  vf p = fmadd(splat(1.9875691500e-4f), r, splat(1.3981999507e-3f));
  p = fmadd(p, r, splat(8.3334519073e-3f));
  p = fmadd(p, r, splat(4.1665795894e-2f));
  p = fmadd(p, r, splat(1.6666665459e-1f));
  p = fmadd(p, r, splat(5.0000001201e-1f));
  p = fmadd(p, r * r, r) + splat(1.f);
  const vf y = (vf)_mm512_maskz_scalef_ps(0xFFFF, (__m512)p, (__m512)n);
  return x < splat(kExpLow) ? splat(0.f) : y;
}
#endif

// A degree-3 polynomial on |r| <= ln2/2 (about 1e-4 relative error): a lower bound on what a cheaper polynomial
// could gain, not an accurate exponential.
GTL_VI vf vexp_deg3(vf x) {
  const vf xc = x < splat(kExpLow) ? splat(kExpLow) : x;
  const vf t = fmadd(xc, splat(1.44269504088896341f), splat(12582912.0f));
  const vf n = t - splat(12582912.0f);
  vf r = fnmadd(n, splat(0.693359375f), xc);
  r = fnmadd(n, splat(-2.12194440e-4f), r);
  vf p = fmadd(splat(1.6666665459e-1f), r, splat(5.0000001201e-1f));
  p = fmadd(p, r * r, r) + splat(1.f);
#if GTL_ISA == 3
  const vf y = (vf)_mm512_maskz_scalef_ps(0xFFFF, (__m512)p, (__m512)n);
#else
  const vf y = p * (vf)((((vi)t - 0x4B400000) + 127) << 23);  // 2^n as vexp makes it
#endif
  return x < splat(kExpLow) ? splat(0.f) : y;
}

// Out-of-line entry points (callers outside this target region cannot inline the always-inline helpers); one call
// per 1024 elements, as the backend calls pass 1 through a pointer once per chunk.
#define ROOF_FN static __attribute__((noinline))

template <vf (*Exp)(vf)>
ROOF_FN float sum_exp(const float* buf, float mz, Temper tp) {
  const vf m = splat(mz), pre = splat(tp.pre), inv = splat(tp.inv);
  vf sum = {};
  for (int64_t i = 0; i < kChunk; i += W) sum += Exp((load(buf + i) - m) * pre * inv);
  return hsum(sum);
}

template <vf (*Exp)(vf)>
ROOF_FN float sum_exp_t1(const float* buf, float mz) {  // temperature 1: no scaling of d
  const vf m = splat(mz);
  vf sum = {};
  for (int64_t i = 0; i < kChunk; i += W) sum += Exp(load(buf + i) - m);
  return hsum(sum);
}

ROOF_FN float exp_only(const float* buf) {
  vf sum = {};
  for (int64_t i = 0; i < kChunk; i += W) sum += vexp(load(buf + i));
  return hsum(sum);
}

ROOF_FN float max_sum_noexp(const float* buf, float mz, Temper tp) {
  const vf m = splat(mz), pre = splat(tp.pre), inv = splat(tp.inv);
  vf sum = {}, mx = splat(-kInf);
  for (int64_t i = 0; i < kChunk; i += W) {
    const vf z = load(buf + i);
    mx = vmax(z, mx);
    sum += (z - m) * pre * inv;
  }
  return hsum(sum) + hmax(mx);
}

// Pass 1 as it was before the prefetch of the next chunk (cpu_scan.h, prefetch_next_chunk): for the comparison.
template <class T>
ROOF_FN Pass1 pass1_no_prefetch(const void* xv, const void*, float, int64_t len, float* buf) {
  const T* x = static_cast<const T*>(xv);
  vf m = splat(-kInf);
  vi nan = {};
  int64_t i = 0;
  for (; i + W <= len; i += W) {
    const vf z = load(x + i);
    store(buf + i, z);
    m = vmax(z, m);
    nan |= z != z;
  }
  if (i < len) {
    const int64_t rem = len - i;
    T xt[W] = {};
    std::memcpy(xt, x + i, rem * sizeof(T));
    vf z = load(xt);
    z = iota() < static_cast<int32_t>(rem) ? z : splat(-kInf);
    store(buf + i, z);
    m = vmax(z, m);
    nan |= z != z;
  }
  return {hmax(m), mask_bits(nan) != 0};
}

ROOF_FN float stats_of(const float* buf, int64_t len, Pass1 p, Temper tp) {
  ScanNeeds need;
  need.sum = true;
  ChunkStats st;
  chunk_stats(buf, len, p, tp, need, &st);
  return st.sum;
}

ROOF_FN float race_chunk(const float* buf, const RaceRow& rr) {
  return static_cast<float>(token_race(buf, nullptr, 0u, kChunk, rr));
}

template <class T>
ROOF_FN float read_max(const T* x, int64_t v) {
  vf m = splat(-kInf);
  int64_t i = 0;
  for (; i + W <= v; i += W) m = vmax(load(x + i), m);
  float r = hmax(m);
  for (; i < v; ++i) {  // tail, one element at a time
    float f;
    if constexpr (std::is_same_v<T, float>) {
      f = x[i];
    } else {
      const uint32_t u = static_cast<uint32_t>(x[i].bits) << 16;
      std::memcpy(&f, &u, 4);
    }
    r = std::max(r, f);
  }
  return r;
}
}  // namespace gtl::cpu::roof
#undef GTL_ISA
#pragma GCC pop_options

using namespace gtl;
using namespace gtl::cpu;

namespace {

volatile float g_sink;  // keeps every result alive

struct Kernel {
  std::string name;
  double bytes_per_elem;  // memory traffic per element (0: L1 only)
  std::function<void(int64_t r0, int64_t r1)> run;  // rows [r0, r1) (or their element count, for L1 kernels)
};

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int64_t v = argc > 2 ? std::atoll(argv[2]) : 30522;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 15;
#if ROOF_ISA == 3
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) {
    std::puts("cpu_roofline: this machine has no AVX-512; build the AVX2 path with -DROOF_ISA=2");
    return 1;
  }
#else
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::puts("cpu_roofline: this machine has no AVX2 + FMA");
    return 1;
  }
#endif
  std::printf("cpu_roofline: the %s path, %d lanes\n", ROOF_ISA == 3 ? "AVX-512" : "AVX2", ROOF_ISA == 3 ? 16 : 8);
  omp_set_num_threads(threads);
  std::vector<float> xf(n * v);
  std::vector<bf16_t> xb(n * v);
  {
    std::mt19937 gen(0);
    std::normal_distribution<float> dist(0.f, 3.f);
    for (int64_t i = 0; i < n * v; ++i) {
      xf[i] = dist(gen);
      const uint16_t h = to_bf16(xf[i]);
      std::memcpy(&xb[i], &h, 2);
    }
  }
  // One L1-resident chunk of real scores and its max, for the L1 kernels.
  alignas(64) float chunk[kChunk];
  std::copy(xf.begin(), xf.begin() + kChunk, chunk);
  const float cmax = *std::max_element(chunk, chunk + kChunk);
  alignas(64) float shifted[kChunk];  // d = z - max <= 0, the exponential's input
  for (int i = 0; i < kChunk; ++i) shifted[i] = chunk[i] - cmax;
  const Temper t1 = temper_of(1.f), t07 = temper_of(0.7f);
  const int64_t l1_iters_per_row = (v + kChunk - 1) / kChunk;  // chunk-sized L1 passes per row: same element count

  auto scan_rows = [&](const void* base, int64_t esize, roof::Pass1Fn p1, bool stats, Temper tp) {
    return [=](int64_t r0, int64_t r1) {
      alignas(64) float buf[kChunk];
      float acc = 0.f;
      for (int64_t r = r0; r < r1; ++r) {
        const char* row = static_cast<const char*>(base) + r * v * esize;
        for (int64_t c0 = 0; c0 < v; c0 += kChunk) {
          const int64_t len = std::min<int64_t>(kChunk, v - c0);
          const roof::Pass1 p = p1(row + c0 * esize, nullptr, 0.f, len, buf);
          if (stats) {
            acc += roof::stats_of(buf, len, p, tp);
          } else {
            acc += p.mz;
          }
        }
      }
      g_sink = acc;
    };
  };
  auto l1 = [&](std::function<float()> body) {
    return [=](int64_t r0, int64_t r1) {
      float acc = 0.f;
      for (int64_t i = 0; i < (r1 - r0) * l1_iters_per_row; ++i) acc += body();
      g_sink = acc;
    };
  };
  const PhiloxKeys key(0x1234567890ABCDEFull);
  roof::RaceRow rr{key, 7, cmax, t1, false};

  std::vector<Kernel> ks = {
      {"read max fp32 (floor)", 4, [&](int64_t r0, int64_t r1) {
         float a = 0.f;
         for (int64_t r = r0; r < r1; ++r) a += roof::read_max(xf.data() + r * v, v);
         g_sink = a;
       }},
      {"read max bf16 (floor)", 2, [&](int64_t r0, int64_t r1) {
         float a = 0.f;
         for (int64_t r = r0; r < r1; ++r) a += roof::read_max(xb.data() + r * v, v);
         g_sink = a;
       }},
      {"pass1 fp32", 4, scan_rows(xf.data(), 4, &roof::pass1<float, NoBias>, false, t1)},
      {"pass1 bf16", 2, scan_rows(xb.data(), 2, &roof::pass1<bf16_t, NoBias>, false, t1)},
      {"scan fp32 (pass1 + stats), T=1", 4, scan_rows(xf.data(), 4, &roof::pass1<float, NoBias>, true, t1)},
      {"scan bf16 (pass1 + stats), T=1", 2, scan_rows(xb.data(), 2, &roof::pass1<bf16_t, NoBias>, true, t1)},
      {"scan fp32, T=0.7 (the 2 muls)", 4, scan_rows(xf.data(), 4, &roof::pass1<float, NoBias>, true, t07)},
      {"scan bf16, T=0.7 (the 2 muls)", 2, scan_rows(xb.data(), 2, &roof::pass1<bf16_t, NoBias>, true, t07)},
      {"scan fp32 without the prefetch", 4, scan_rows(xf.data(), 4, &roof::pass1_no_prefetch<float>, true, t1)},
      {"scan bf16 without the prefetch", 2, scan_rows(xb.data(), 2, &roof::pass1_no_prefetch<bf16_t>, true, t1)},
      {"L1 stats: (z-max)*pre*inv, vexp, sum", 0, l1([&] { return roof::sum_exp<roof::vexp>(chunk, cmax, t07); })},
      {"L1 stats at T=1 without the 2 muls", 0, l1([&] { return roof::sum_exp_t1<roof::vexp>(chunk, cmax); })},
      {"L1 vexp + sum alone", 0, l1([&] { return roof::exp_only(shifted); })},
      {"L1 max + sum of d, no exp", 0, l1([&] { return roof::max_sum_noexp(chunk, cmax, t07); })},
#if ROOF_ISA == 3
      {"L1 stats, vexp by vscalefps", 0, l1([&] { return roof::sum_exp<roof::vexp_scalef>(chunk, cmax, t07); })},
#endif
      {"L1 stats, degree-3 exp (inexact)", 0, l1([&] { return roof::sum_exp<roof::vexp_deg3>(chunk, cmax, t07); })},
      {"L1 token race (Philox, -ln U, log)", 0, l1([&] {
         return roof::race_chunk(chunk, rr);
       })},
  };

  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
  };
  std::vector<std::vector<double>> secs(ks.size()), wall(ks.size());
  for (int rep = 0; rep < reps + 1; ++rep) {
    for (size_t k = 0; k < ks.size(); ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<double> cpu(threads, 0.0);
#pragma omp parallel num_threads(threads)
      {
        const int tid = omp_get_thread_num();
        const int64_t r0 = n * tid / threads, r1 = n * (tid + 1) / threads;
        const double c0 = cpu_now();
        ks[k].run(r0, r1);
        cpu[tid] = cpu_now() - c0;
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep == 0) continue;  // warm-up round (page faults, caches)
      double total = 0.0;
      for (double c : cpu) total += c;
      secs[k].push_back(total);
      wall[k].push_back(s);
    }
  }
  auto median = [](std::vector<double> x) {
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  // Ratios to the floor of the same dtype, per round (both sides saw the same load), then the median.
  auto ratio = [&](size_t k, size_t base) {
    std::vector<double> r;
    for (size_t i = 0; i < secs[k].size(); ++i) r.push_back(secs[k][i] / secs[base][i]);
    return median(r);
  };
  std::printf("# N=%lld V=%lld threads=%d reps=%d; medians; elements = N*V = %.3g\n", static_cast<long long>(n),
              static_cast<long long>(v), threads, reps, static_cast<double>(n * v));
  std::printf("%-40s %11s %8s %11s %9s %11s\n", "kernel", "Gelem/CPU-s", "ns/el", "x read fp32", "GB/CPU-s",
              "wall Gel/s");
  for (size_t k = 0; k < ks.size(); ++k) {
    const double s = median(secs[k]);
    const double ge = n * v / s / 1e9;
    std::printf("%-40s %11.3g %8.3g %11.3g", ks[k].name.c_str(), ge, 1.0 / ge, ratio(k, 0));
    if (ks[k].bytes_per_elem > 0) {
      std::printf(" %9.3g", ge * ks[k].bytes_per_elem);
    } else {
      std::printf(" %9s", "");
    }
    std::printf(" %11.3g\n", n * v / median(wall[k]) / 1e9);
  }
  return 0;
}
