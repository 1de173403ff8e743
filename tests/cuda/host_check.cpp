// Host checks of the CUDA backend's device code (scripts/cuda_host_check.sh): the math helpers against long double,
// and the block-level radix select + bitonic sort run through the fiber emulation (cuda_emu.h) against std::sort.
// Needs only a C++17 compiler; exits non-zero on the first failed check.
#include "cuda_emu.h"
// clang-format off
#include "gtl/cuda_ops.cuh"
// clang-format on

#include <algorithm>
#include <cinttypes>
#include <random>

using namespace gtl::cuda;

namespace {

int failures = 0;

#define CHECK(cond, ...)                                           \
  do {                                                             \
    if (!(cond)) {                                                 \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                           \
      std::fprintf(stderr, "\n");                                  \
      ++failures;                                                  \
    }                                                              \
  } while (0)

// Random123 known-answer vectors of Philox4x32-10.
void check_philox() {
  struct Kat {
    uint32_t c[4], k[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}, {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& t : kats) {
    const gtl::Philox4 r = gtl::philox4x32_10(t.c[0], t.c[1], t.c[2], t.c[3], t.k[0], t.k[1]);
    for (int i = 0; i < 4; ++i) CHECK(r.w[i] == t.out[i], "philox word %d: %08x != %08x", i, r.w[i], t.out[i]);
  }
}

// -log2(E), E = -ln U, U = (x + 0.5) / 2^64, in long double (64-bit mantissa), using the exact complement near 1.
long double neg_log2_e_ref(uint64_t x) {
  long double e;
  if ((x >> 63) == 0) {
    e = -logl((static_cast<long double>(x) + 0.5L) * 0x1p-64L);
  } else {
    e = -log1pl(-(static_cast<long double>(~x) + 0.5L) * 0x1p-64L);
  }
  return -log2l(e);
}

void check_exponential() {
  std::mt19937_64 rng(7);
  std::vector<uint64_t> xs = {0, 1, 2, 1000, (uint64_t{1} << 62), (uint64_t{1} << 63) - 1, uint64_t{1} << 63,
                              (uint64_t{1} << 63) + 1, ~uint64_t{0} - 1000, ~uint64_t{0} - 1, ~uint64_t{0}};
  for (int i = 0; i < 200000; ++i) xs.push_back(rng());
  for (int i = 0; i < 2000; ++i) xs.push_back(rng() >> (i % 64));  // small U: the deep tail
  for (int i = 0; i < 2000; ++i) xs.push_back(~(rng() >> (i % 64)));  // U near 1
  for (int i = 0; i < 2000; ++i) xs.push_back((uint64_t{1} << 63) + (rng() >> 20) - (uint64_t{1} << 43));  // U ~ 1/2
  // Error relative to max(1, |key|): the float result itself rounds at 2^-24 relative.
  double worst = 0, worst_shared = 0;
  for (uint64_t x : xs) {
    const long double want = neg_log2_e_ref(x), scale = fmaxl(1.0L, fabsl(want));
    worst = std::max(worst, static_cast<double>(fabsl(neg_log2_exponential(x) - want) / scale));
    // philox.h's exponential64 (shared with the CPU backend), for the record
    const long double shared = -log2l(static_cast<long double>(gtl::exponential64(x)));
    worst_shared = std::max(worst_shared, static_cast<double>(fabsl(shared - want) / scale));
  }
  CHECK(worst < 4e-7, "neg_log2_exponential: max scaled error %.3g", worst);
  std::printf("neg_log2_exponential: max error %.3g x max(1, |key|) (philox.h exponential64 through -log2: %.3g)\n",
              worst, worst_shared);
  CHECK(neg_log2_exponential(0) < -5.49f && neg_log2_exponential(0) > -5.50f, "deepest tail key %f",
        neg_log2_exponential(0));
  CHECK(neg_log2_exponential(~uint64_t{0}) > 64.9f, "largest key %f", neg_log2_exponential(~uint64_t{0}));
}

void check_keys_and_modes() {
  const float denorm = 1e-40f;
  const float sorted[] = {-INFINITY, -FLT_MAX, -1.f, -FLT_MIN, -denorm, 0.f, denorm, FLT_MIN, 1.f, FLT_MAX, INFINITY};
  for (size_t i = 0; i + 1 < sizeof(sorted) / sizeof(sorted[0]); ++i)
    CHECK(ordered_key(sorted[i]) < ordered_key(sorted[i + 1]), "key order at %zu", i);
  CHECK(ordered_key(-0.f) == ordered_key(0.f), "-0 and +0 must tie");
  for (float x : sorted) CHECK(key_to_float(ordered_key(x)) == x, "key round trip %g", x);
  CHECK(select_key(NAN) == 0xffffffffu && select_key(-NAN) == 0xffffffffu, "NaN sorts first in top-k sampling");
  CHECK(key64(ordered_key(1.f), 5) > key64(ordered_key(1.f), 6), "ties toward the lower id");
  CHECK(key64_id(key64(ordered_key(2.f), 123456)) == 123456, "id round trip");

  CHECK(temperature_mode(1.f) == kModeSample && temperature_mode(INFINITY) == kModeSample, "sampled temperatures");
  CHECK(temperature_mode(0.f) == kModeGreedy && temperature_mode(-0.f) == kModeGreedy, "zero is greedy");
  CHECK(temperature_mode(denorm) == kModeGreedy, "positive subnormal is greedy");
  CHECK(temperature_mode(-denorm) == kModeInvalid && temperature_mode(-1.f) == kModeInvalid, "negative is invalid");
  CHECK(temperature_mode(NAN) == kModeInvalid && temperature_mode(-INFINITY) == kModeInvalid, "NaN/-inf invalid");
  // T = +inf: every finite token weighs 2^0, whatever its distance to the maximum; -inf stays -inf, NaN stays NaN
  const float k_inf = log2_scale(INFINITY);
  CHECK(k_inf == 0.f, "T = inf scales by 0");
  CHECK(log2_weight(1.5e-30f, 1e30f, k_inf) == 0.f && log2_weight(-3e38f, 3e38f, k_inf) == 0.f, "T = inf: equal weights");
  CHECK(log2_weight(-INFINITY, 1e30f, k_inf) == -INFINITY && is_nan(log2_weight(NAN, 1.f, k_inf)), "T = inf: -inf, NaN");
  CHECK(log2_weight(-INFINITY, 2.f, log2_scale(1.f)) == -INFINITY && is_nan(log2_weight(NAN, 1.f, log2_scale(1.f))),
        "T = 1: -inf, NaN");
  CHECK(log2_weight(1.f, 2.f, log2_scale(0.5f)) == -2.f * kLog2e, "T = 0.5: (z - m) / T in log2 units");

  const struct {
    uint16_t bits;
    float value;
  } halves[] = {{0x3c00, 1.f}, {0xc000, -2.f}, {0x7bff, 65504.f}, {0x0001, 0x1p-24f}, {0x8000, -0.f},
                {0x7c00, INFINITY}, {0xfc00, -INFINITY}, {0x3555, 0.333251953125f}};
  for (const auto& h : halves) CHECK(to_float(f16{h.bits}) == h.value, "f16 %04x -> %g", h.bits, to_float(f16{h.bits}));
  CHECK(is_nan(to_float(f16{0x7e00})), "f16 NaN");
  CHECK(to_float(bf16{0x3f80}) == 1.f && to_float(bf16{0xc0a0}) == -5.f, "bf16");
}

// --- radix select + bitonic sort, one block over keys in memory -------------------------------------------------

__global__ void __launch_bounds__(kThreads) select_test_kernel(const uint64_t* keys, uint32_t n, uint32_t k,
                                                                 uint64_t* threshold, uint64_t* out) {
  __shared__ SelectSmem<true> sm;
  auto source = [&](auto& visit) {
    for (uint32_t i = threadIdx.x; i < n; i += kThreads) visit(keys[i]);
  };
  const uint64_t lo = block_select<true>(source, k, sm);
  block_sort_desc(sm.out, k);
  for (uint32_t i = threadIdx.x; i < k; i += kThreads) out[i] = sm.out[i];
  if (threadIdx.x == 0) *threshold = lo;
}

void check_select() {
  std::mt19937_64 rng(11);
  struct Case {
    uint32_t n, k, distinct_values;
  } cases[] = {{1, 1, 1},       {7, 3, 2},        {3000, 5, 4},       {3000, 5, 3000},   {5000, 1024, 50},
               {20000, 1, 20000}, {20000, 1000, 7}, {20000, 1024, 1},   {50000, 64, 100000}, {4096, 1024, 3}};
  for (const Case& c : cases) {
    std::vector<uint64_t> keys(c.n);
    std::vector<float> vals(c.distinct_values);
    for (float& v : vals) v = static_cast<float>(static_cast<int64_t>(rng() % 2000001) - 1000000) * 1e-3f;
    for (uint32_t i = 0; i < c.n; ++i) keys[i] = key64(ordered_key(vals[rng() % c.distinct_values]), i);
    std::shuffle(keys.begin(), keys.end(), rng);
    std::vector<uint64_t> out(c.k), want(keys);
    uint64_t threshold = 0;
    emu::launch(select_test_kernel, dim3(1), dim3(kThreads), keys.data(), c.n, c.k, &threshold, out.data());
    std::sort(want.begin(), want.end(), std::greater<uint64_t>());
    const uint64_t next = c.k < c.n ? want[c.k] : 0;  // the largest key outside the top k
    want.resize(c.k);
    CHECK(out == want, "select n=%u k=%u distinct=%u: wrong top-k", c.n, c.k, c.distinct_values);
    // the top k are exactly the keys >= threshold
    CHECK(threshold <= want.back() && (c.k == c.n || next < threshold),
          "select n=%u k=%u: threshold %016" PRIx64 " not in (%016" PRIx64 ", %016" PRIx64 "]", c.n, c.k, threshold,
          next, want.back());
  }
}

}  // namespace

int main() {
  check_philox();
  check_exponential();
  check_keys_and_modes();
  check_select();
  if (failures) {
    std::fprintf(stderr, "host_check: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("host_check: all checks passed\n");
  return 0;
}
