// ISA-independent parts of the C++ CPU backend (KERNEL_SPEC §5 "cpu"): argument structs, per-chunk statistics, the
// runtime choice of instruction set and the scalar float64 exponential of the chunk race (the top-k candidate buffer
// is in cpu_select.h).
// Torch-free. The vectorized row kernels live in the per-ISA headers that cpu_multiversion.h compiles once per ISA.
#pragma once

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "gtl/confidence_kind.h"
#include "gtl/philox.h"

namespace gtl::cpu {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kMaxW = 16;  // widest vector (AVX-512, 16 floats); buffers are padded by this much

// ---------------------------------------------------------------------------------------------------------------------
// Instruction sets. One binary carries a baseline (SSE2, 4 lanes), an AVX2+FMA+F16C (8 lanes) and an AVX-512 (16 lanes)
// version of every row kernel and picks one at run time, so the default build needs no -march flag.
// GTL_CPU_ISA=generic|avx2|avx512 caps the choice (tests use it to check the baseline path).
// ---------------------------------------------------------------------------------------------------------------------

enum class Isa : int { kGeneric = 1, kAvx2 = 2, kAvx512 = 3 };

inline Isa detect_isa() {
  Isa best = Isa::kGeneric;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    best = Isa::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
      best = Isa::kAvx512;
    }
  }
  if (const char* cap = std::getenv("GTL_CPU_ISA")) {
    Isa want = best;
    if (!std::strcmp(cap, "generic")) want = Isa::kGeneric;
    if (!std::strcmp(cap, "avx2")) want = Isa::kAvx2;
    if (!std::strcmp(cap, "avx512")) want = Isa::kAvx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

inline Isa active_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

inline const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "generic";
}

// ---------------------------------------------------------------------------------------------------------------------
// Arguments (the normalized ones of reference.py): raw pointers, element strides between rows, dtypes.
// ---------------------------------------------------------------------------------------------------------------------

enum class DType : int { kF32 = 0, kBF16 = 1, kF16 = 2, kF64 = 3 };

struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};
struct NoBias {};  // pass-1 instantiation for rows without guidance (no bias, or gamma == 0)

inline int64_t dtype_size(DType t) { return t == DType::kF64 ? 8 : t == DType::kF32 ? 4 : 2; }

struct ScoreArgs {
  int64_t n = 0, v = 0;
  const void* logits = nullptr;
  int64_t logits_stride = 0;  // elements between rows (>= v: padded vocabularies are read in place)
  DType logits_dtype = DType::kF32;
  const void* bias = nullptr;  // nullptr: no guidance
  int64_t bias_stride = 0;
  DType bias_dtype = DType::kF32;
  const float* gamma = nullptr;        // [n]
  const float* temperature = nullptr;  // [n]
  int threads = 1;
};

struct DrawArgs {  // sample and masked_transition
  ScoreArgs s;
  int64_t top_k = 0;
  const int64_t* seeds = nullptr;  // [n] row keys
  uint64_t offset = 0;
  const int64_t* index = nullptr;  // candidate path: [n, v] token ids (row stride index_stride), or nullptr
  int64_t index_stride = 0;
  const int64_t* x_t = nullptr;  // masked_transition only: [n]
  const float* stay_prob = nullptr;
  int64_t mask_id = -1;
  int64_t* out = nullptr;  // [n]
  float* logprob = nullptr;  // sample only: [n] log-probability of the drawn token, or nullptr
};

struct GlsmArgs {  // guided_log_softmax
  ScoreArgs s;
  float* out = nullptr;  // [n, v] contiguous
};

struct TopkArgs {  // topk_log_softmax
  ScoreArgs s;
  int64_t k = 0;
  float* values = nullptr;  // [n, k]
  int64_t* ids = nullptr;   // [n, k]
};

using gtl::ConfidenceKind;  // gtl/confidence_kind.h

struct ConfidenceArgs {
  ScoreArgs s;
  ConfidenceKind kind = ConfidenceKind::kMaxProb;
  int64_t* argmax = nullptr;  // [n]
  float* score = nullptr;     // [n]
};

// ---------------------------------------------------------------------------------------------------------------------
// Per-chunk statistics (KERNEL_SPEC §3: chunks of kChunk = 1024 tokens by id). Kept per chunk and combined in chunk
// order, so a row's result does not depend on how its chunks were split across threads.
// ---------------------------------------------------------------------------------------------------------------------

struct ChunkStats {
  float mz = -kInf;  // max of z = logits + gamma * bias over the chunk (NaN ignored)
  float sum = 0.f;   // sum of exp((z - mz) / T) when mz is finite
  float w = 0.f;     // sum of exp(d) * d, d = (z - mz) / T (entropy)
  float z2 = -kInf;  // second largest z (the max again if it occurs twice)
  int32_t arg = -1;  // offset of the first z == mz in the chunk
  int32_t ninf = 0;  // number of z == +inf
  int32_t nan = 0;   // the chunk holds a NaN score
};

// What a chunk scan computes beyond max/NaN (each costs a pass over the chunk in L1).
struct ScanNeeds {
  bool sum = false;      // log-sum-exp (not for greedy rows)
  bool entropy = false;  // sum of p * log p
  bool argmax = false;   // first position of the max
  bool second = false;   // second largest score (margin)
};

// Row modes from the temperature (KERNEL_SPEC §1, §4): T < 0 or NaN makes the row invalid, T == 0 is greedy.
enum class RowMode : int { kInvalid, kGreedy, kTempered };

inline RowMode row_mode(float t) {
  if (!(t >= 0.f)) return RowMode::kInvalid;
  return t == 0.f ? RowMode::kGreedy : RowMode::kTempered;
}

// The chunk statistics a row needs by its mode: the log-sum-exp of a tempered row, the first max of a greedy one.
inline ScanNeeds needs_of(RowMode mode) {
  ScanNeeds n;
  n.sum = mode == RowMode::kTempered;
  n.argmax = mode == RowMode::kGreedy;
  return n;
}

// d = (z - max) / T is computed as ((z - max) * pre) * inv. For normal T: pre = 1, inv = 1/T. When 1/T overflows
// (subnormal T), pre = 2^64 (exact) and inv = 1/(T * 2^64), so d keeps the huge finite values of a float64 division
// instead of inf * 0. For T = +inf, inv = FLT_MIN rather than 0: every finite d is ~0 (equal probabilities, like
// z / DBL_MAX in the reference), -inf stays -inf, and sample's top-k still orders by z as the reference's tiny
// scores do. Greedy and invalid rows never use it.
struct Temper {
  float pre = 1.f, inv = 1.f;
  // T = 1 (and greedy rows): both factors are 1, whose multiplies are exact, so a loop may skip them and give the
  // same bits.
  bool unit() const { return pre == 1.f && inv == 1.f; }
};

inline Temper temper_of(float t) {
  Temper tp;
  if (row_mode(t) != RowMode::kTempered) return tp;
  if (t == kInf) {
    tp.inv = std::numeric_limits<float>::min();
  } else if (t < 1.f / std::numeric_limits<float>::max()) {
    tp.pre = 0x1p64f;
    tp.inv = 1.f / (t * 0x1p64f);
  } else {
    tp.inv = 1.f / t;
  }
  return tp;
}

// ---------------------------------------------------------------------------------------------------------------------
// Randomness (KERNEL_SPEC §3). Philox words come from philox.h; E = -ln U for the chunk race is computed in float64
// exactly as reference.exponential64 (a few chunks per row, so its cost does not matter).
// ---------------------------------------------------------------------------------------------------------------------

inline double exponential64_f64(uint64_t x) {
  const uint32_t w0 = static_cast<uint32_t>(x >> 32), w1 = static_cast<uint32_t>(x);
  if (w0 < 0x80000000u) {
    const double v = static_cast<double>(w0) * 4294967296.0 + static_cast<double>(w1) + 0.5;
    return 64.0 * 0.6931471805599453 - std::log(v);
  }
  const double c = static_cast<double>(~w0) * 4294967296.0 + static_cast<double>(~w1) + 0.5;
  return -std::log1p(-c * 0x1p-64);
}

inline double chunk_race_log_e(uint64_t seed, uint64_t offset, int64_t chunk) {
  return std::log(exponential64_f64(random_bits64(seed, static_cast<uint32_t>(chunk), offset, kStreamChunk)));
}

// Per-round Philox keys of a row (the key schedule does not depend on the counter).
struct PhiloxKeys {
  uint32_t k0[10], k1[10];
  explicit PhiloxKeys(uint64_t seed) {
    uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      k0[r] = a;
      k1[r] = b;
      a += 0x9E3779B9u;
      b += 0xBB67AE85u;
    }
  }
};

}  // namespace gtl::cpu
