// Accuracy check of the CPU backend's vector math (gtl/cpu_vec.h), for every instruction set this machine runs:
//   vexp  against float64 exp on x in [ln(FLT_MIN), 0]         (the only inputs the kernels give it),
//   vlog  against float64 log on positive normal floats,
//   exponential(w0, w1) (E = -ln U) against the float64 formula of reference.exponential64 (relative error),
//   log E as the token race uses it (absolute error, the quantity compared with fp32 scores),
//   philox_w01 against philox.h bit for bit.
// Not part of the extension (setup.py builds csrc/cpu/*.cpp only); tests/test_cpu_backend.py compiles and runs it:
//   g++ -std=c++20 -O2 -Icsrc/include tests/cpp/vec_accuracy.cc -o vec_accuracy && ./vec_accuracy [stride]
// `stride` (default 1: every float) thins the sweeps. Output: one line per (ISA, function) with the maximum error.
#include <cstdio>
#include <random>

#include "gtl/cpu_common.h"

#pragma GCC diagnostic ignored "-Wpsabi"

#define GTL_ACCURACY_BODY                                                                                          \
  void eval_exp(const float* x, float* y, int64_t n) {                                                             \
    for (int64_t i = 0; i + W <= n; i += W) store(y + i, vexp(load(x + i)));                                       \
  }                                                                                                                \
  void eval_log(const float* x, float* y, int64_t n) {                                                             \
    for (int64_t i = 0; i + W <= n; i += W) store(y + i, vlog(load(x + i)));                                       \
  }                                                                                                                \
  void eval_e(const uint32_t* w0, const uint32_t* w1, float* e, float* loge, int64_t n) {                          \
    for (int64_t i = 0; i + W <= n; i += W) {                                                                      \
      vu a, b;                                                                                                     \
      std::memcpy(&a, w0 + i, sizeof a);                                                                           \
      std::memcpy(&b, w1 + i, sizeof b);                                                                           \
      const vf ev = exponential(a, b);                                                                             \
      store(e + i, ev);                                                                                            \
      store(loge + i, vlog(ev));                                                                                   \
    }                                                                                                              \
  }                                                                                                                \
  void eval_philox(const uint32_t* ctr, uint64_t offset, uint32_t stream, uint64_t seed, uint32_t* w0, uint32_t* w1, \
                   int64_t n) {                                                                                    \
    const gtl::cpu::PhiloxKeys key(seed);                                                                          \
    int64_t i = 0;                                                                                                 \
    for (; i + 2 * W <= n; i += 2 * W) { /* two interleaved chains, as the token race runs them */                 \
      vu a[2], x[2], y[2];                                                                                         \
      std::memcpy(a, ctr + i, sizeof a);                                                                           \
      philox_w01<2>(a, offset, stream, key, x, y);                                                                 \
      std::memcpy(w0 + i, x, sizeof x);                                                                            \
      std::memcpy(w1 + i, y, sizeof y);                                                                            \
    }                                                                                                              \
    for (; i + W <= n; i += W) { /* and one */                                                                     \
      vu a, x, y;                                                                                                  \
      std::memcpy(&a, ctr + i, sizeof a);                                                                          \
      philox_w01<1>(&a, offset, stream, key, &x, &y);                                                              \
      std::memcpy(w0 + i, &x, sizeof x);                                                                           \
      std::memcpy(w1 + i, &y, sizeof y);                                                                           \
    }                                                                                                              \
  }

namespace gtl::cpu {
#define GTL_ISA 1
namespace generic {
#include "gtl/cpu_vec.h"
GTL_ACCURACY_BODY
}  // namespace generic
#undef GTL_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#define GTL_ISA 2
namespace avx2 {
#include "gtl/cpu_vec.h"
GTL_ACCURACY_BODY
}  // namespace avx2
#undef GTL_ISA
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi,bmi2,popcnt")
#define GTL_ISA 3
namespace avx512 {
#include "gtl/cpu_vec.h"
GTL_ACCURACY_BODY
}  // namespace avx512
#undef GTL_ISA
#pragma GCC pop_options
}  // namespace gtl::cpu

using namespace gtl::cpu;

namespace {

struct Fns {
  const char* name;
  void (*exp)(const float*, float*, int64_t);
  void (*log)(const float*, float*, int64_t);
  void (*e)(const uint32_t*, const uint32_t*, float*, float*, int64_t);
  void (*philox)(const uint32_t*, uint64_t, uint32_t, uint64_t, uint32_t*, uint32_t*, int64_t);
};

double ulp_error(float got, double ref) {  // in units of the float spacing at ref
  if (got == ref) return 0.0;
  int e;
  std::frexp(ref, &e);
  const double ulp = std::ldexp(1.0, std::max(e - 24, -149));
  return std::fabs(got - ref) / ulp;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

constexpr int64_t kBlock = 1 << 16;

// Max ulp error of fn over the floats with bits in [lo, hi] (step `stride`), against ref in float64.
template <class Ref>
double sweep(void (*fn)(const float*, float*, int64_t), uint32_t lo, uint32_t hi, uint32_t stride, Ref ref,
             float* worst_x) {
  std::vector<float> x(kBlock), y(kBlock);
  double worst = 0.0;
  for (uint64_t start = lo; start <= hi; start += static_cast<uint64_t>(kBlock) * stride) {
    int64_t n = 0;
    for (uint64_t b = start; n < kBlock && b <= hi; b += stride) x[n++] = from_bits(static_cast<uint32_t>(b));
    const int64_t n_padded = (n + kMaxW - 1) / kMaxW * kMaxW;
    for (int64_t i = n; i < n_padded; ++i) x[i] = x[0];
    fn(x.data(), y.data(), n_padded);
    for (int64_t i = 0; i < n; ++i) {
      const double err = ulp_error(y[i], ref(static_cast<double>(x[i])));
      if (err > worst) {
        worst = err;
        *worst_x = x[i];
      }
    }
  }
  return worst;
}

void check(const Fns& f, uint32_t stride) {
  float wx = 0.f;
  // exp on [ln(FLT_MIN), 0]: negative floats from -0 up to the bits of kExpLow (results stay normal).
  const auto exp64 = [](double x) { return std::exp(x); };
  const double e_exp = sweep(f.exp, 0x80000000u, to_bits(generic::kExpLow), stride, exp64, &wx);
  std::printf("%-8s vexp   max %.3f ulp (at x = %.9g)\n", f.name, e_exp, wx);
  const double e_log = sweep(f.log, 0x00800000u, 0x7F7FFFFFu, stride, [](double x) { return std::log(x); }, &wx);
  std::printf("%-8s vlog   max %.3f ulp (at x = %.9g)\n", f.name, e_log, wx);

  // E and log E on random words plus the extremes of both halves.
  std::mt19937_64 rng(12345);
  const int64_t n = std::max<int64_t>(kMaxW, (int64_t{1} << 24) / stride / kMaxW * kMaxW);
  std::vector<uint32_t> w0(n), w1(n);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = rng();
    w0[i] = static_cast<uint32_t>(x >> 32);
    w1[i] = static_cast<uint32_t>(x);
  }
  const uint32_t edges[][2] = {{0u, 0u}, {0u, 1u}, {0u, 0xFFFFFFFFu}, {1u, 0u}, {0x7FFFFFFFu, 0xFFFFFFFFu},
                               {0x80000000u, 0u}, {0xFFFFFFFFu, 0xFFFFFFFFu}, {0xFFFFFFFFu, 0xFFFFFFFEu},
                               {0xFFFFFFFFu, 0u}, {0xFFFFFF00u, 0x12345678u}, {0xC0000000u, 0u}, {0x80000001u, 5u}};
  for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) && static_cast<int64_t>(i) < n; ++i) {
    w0[i] = edges[i][0];
    w1[i] = edges[i][1];
  }
  std::vector<float> e(n), loge(n);
  f.e(w0.data(), w1.data(), e.data(), loge.data(), n);
  double rel = 0.0, abs_log = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double ref = exponential64_f64((static_cast<uint64_t>(w0[i]) << 32) | w1[i]);
    rel = std::max(rel, std::fabs(e[i] - ref) / ref);
    abs_log = std::max(abs_log, std::fabs(loge[i] - std::log(ref)));
  }
  std::printf("%-8s E      max relative error %.3g (%.2f x 2^-24)\n", f.name, rel, rel * 0x1p24);
  std::printf("%-8s ln E   max absolute error %.3g\n", f.name, abs_log);

  // Philox words bit for bit.
  std::vector<uint32_t> ctr(n), p0(n), p1(n);
  for (int64_t i = 0; i < n; ++i) ctr[i] = static_cast<uint32_t>(rng());
  const uint64_t seed = 0xDEADBEEFCAFEF00Dull, offset = 0x0123456789ABCDEFull;
  f.philox(ctr.data(), offset, gtl::kStreamToken, seed, p0.data(), p1.data(), n);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = gtl::random_bits64(seed, ctr[i], offset, gtl::kStreamToken);
    bad += p0[i] != static_cast<uint32_t>(x >> 32) || p1[i] != static_cast<uint32_t>(x);
  }
  std::printf("%-8s philox mismatches %lld of %lld\n", f.name, static_cast<long long>(bad), static_cast<long long>(n));
}

}  // namespace

int main(int argc, char** argv) {
  const uint32_t stride = argc > 1 ? static_cast<uint32_t>(std::atoi(argv[1])) : 1u;
  const Isa best = detect_isa();
  check({"generic", generic::eval_exp, generic::eval_log, generic::eval_e, generic::eval_philox}, stride);
  if (best >= Isa::kAvx2) check({"avx2", avx2::eval_exp, avx2::eval_log, avx2::eval_e, avx2::eval_philox}, stride);
  if (best >= Isa::kAvx512)
    check({"avx512", avx512::eval_exp, avx512::eval_log, avx512::eval_e, avx512::eval_philox}, stride);
  return 0;
}
