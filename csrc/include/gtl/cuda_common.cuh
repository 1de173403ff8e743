// Torch-free device building blocks of the CUDA backend: portability macros, the 16-bit float storage types, the
// order-preserving float keys used by top-k, the temperature classification, and warp/block reductions with a fixed
// combination order (KERNEL_SPEC §3 batch invariance: every reduction tree below depends only on the lane/thread
// layout, which is fixed by kThreads, never on the grid).
//
// Compiled by nvcc for the GPU, or by a host C++ compiler through tests/cuda/cuda_emu.h, which runs the same
// kernels on the CPU for the host checks (scripts/cuda_host_check.sh).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define GTL_HD __host__ __device__ __forceinline__
#define GTL_DEV __device__ __forceinline__
#elif defined(GTL_CUDA_EMULATION)
#define GTL_HD inline
#define GTL_DEV inline
#else
#error "gtl/cuda_*.cuh are compiled by nvcc, or on the host through tests/cuda/cuda_emu.h"
#endif

#include "gtl/cuda_problem.h"

namespace gtl {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLn2 = 0.693147180559945309f;
constexpr float kLog2e = 1.442695040888963407f;
constexpr float kInf = INFINITY;

// ------------------------------------------------------------------------------------------------------------------
// Bits and the 16-bit storage types (the kernels read bf16/fp16 directly, KERNEL_SPEC §1)
// ------------------------------------------------------------------------------------------------------------------

GTL_HD uint32_t f2u(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

GTL_HD float u2f(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// NaN tested on the bits: immune to any fast-math assumption of the compiler.
GTL_HD bool is_nan(float x) { return (f2u(x) & 0x7fffffffu) > 0x7f800000u; }

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

GTL_HD float to_float(float x) { return x; }
GTL_HD float to_float(double x) { return static_cast<float>(x); }
GTL_HD float to_float(bf16 x) { return u2f(static_cast<uint32_t>(x.bits) << 16); }
GTL_HD float to_float(f16 x) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(x.bits));
#else
  const uint32_t h = x.bits, sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return u2f(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    const float v = static_cast<float>(mantissa) * 0x1p-24f;  // zero or subnormal: exact
    return sign ? -v : v;
  }
  return u2f(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

// Order-preserving 32-bit key of a float: a < b  <=>  key(a) < key(b) for non-NaN values, and -0 == +0 (both
// compare equal as scores, so they must tie and be ordered by token id).
GTL_HD uint32_t ordered_key(float x) {
  uint32_t b = f2u(x);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

GTL_HD float key_to_float(uint32_t k) { return u2f((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// 64-bit selection key: the score's key, then the lower token id first (KERNEL_SPEC §3 ties toward the lower id).
GTL_HD uint64_t key64(uint32_t score_key, int64_t v) {
  return (static_cast<uint64_t>(score_key) << 32) | (0xffffffffu - static_cast<uint32_t>(v));
}
GTL_HD int64_t key64_id(uint64_t key) { return static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(key)); }

// ------------------------------------------------------------------------------------------------------------------
// Temperature (KERNEL_SPEC §2, §4): classified on the bits so that flush-to-zero cannot move a row between classes.
// ------------------------------------------------------------------------------------------------------------------

enum RowMode : int { kModeInvalid = 0, kModeGreedy = 1, kModeSample = 2, kModeSkip = 3 };

// NaN or negative (including -inf and negative subnormals): invalid row. +-0 and positive subnormals: greedy (the
// T -> 0 limit; 1/T would overflow). Otherwise sampled at T (T = +inf included).
GTL_HD int temperature_mode(float t) {
  const uint32_t b = f2u(t), mag = b & 0x7fffffffu;
  if (mag > 0x7f800000u) return kModeInvalid;
  if ((b >> 31) && mag != 0) return kModeInvalid;
  if (mag < 0x00800000u) return kModeGreedy;
  return kModeSample;
}

// Scale from a score difference to log2 units: (z - m) * k2 = (z - m) / T * log2(e). 0 at T = +inf (and where
// log2(e) / T underflows): every finite token then has the same weight, as in the reference.
GTL_HD float log2_scale(float t) { return kLog2e / t; }

// (z - m) * k2 in log2 units, for z <= m or z = -inf or NaN with m finite: -inf for a -inf token and NaN for NaN at
// every k2 >= 0. At k2 = 0 the product alone gives NaN for -inf tokens; a floor on k2 instead (1e-30 until
// 2026-12-04) scaled differences near 1e30 to O(1) and put unequal weights on a T = +inf row (found on an H200 by the
// fuzz test).
GTL_HD float log2_weight(float z, float m, float k2) {
  if (k2 > 0.f) return (z - m) * k2;
  return z > -kInf ? 0.f : z;  // -inf stays -inf, NaN stays NaN (the comparison is false for both)
}

// ------------------------------------------------------------------------------------------------------------------
// The exponential race (KERNEL_SPEC §3): -log2(E) for E = -ln U, U = (x + 0.5) / 2^64.
// ------------------------------------------------------------------------------------------------------------------

// U <= 1/2: E = -ln(U) with U formed directly as a float (float(x) carries a relative error <= 2^-24, i.e. <= 6e-8 in
// ln U, and |ln U| >= ln 2, so E keeps a small relative error; forming 64 ln 2 - ln(x + 0.5) instead would cancel
// near U = 1/2). U > 1/2: the complement 1 - U = (~x + 0.5) / 2^64 is exact in integers and E = -log1p(-(1 - U)).
// The race key of a candidate with log2-mass M is M - log2(E) = M + neg_log2_exponential(x).
GTL_HD float neg_log2_exponential(uint64_t x) {
  float e;
  if ((x >> 63) == 0) {
    const float u = static_cast<float>(x) * 0x1p-64f + 0x1p-65f;
    e = -logf(u);
  } else {
    const float c = static_cast<float>(~x) * 0x1p-64f + 0x1p-65f;
    e = -log1pf(-c);
  }
  return -log2f(e);
}

// ------------------------------------------------------------------------------------------------------------------
// Warp and block reductions with a fixed order. A xor butterfly gives every lane the same bits: at each level the two
// partners add the same two operands (a + b == b + a in IEEE arithmetic).
// ------------------------------------------------------------------------------------------------------------------

GTL_DEV float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
GTL_DEV float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
GTL_DEV uint32_t warp_sum_u32(uint32_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
GTL_DEV int warp_min_i32(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const int w = __shfl_xor_sync(kFullMask, v, o);
    v = w < v ? w : v;
  }
  return v;
}

// A race or argmax candidate: the larger key wins, ties go to the lower id (id = INT64_MAX marks "none").
struct KeyId {
  float key;
  int64_t id;
};
GTL_HD KeyId key_id_none() { return KeyId{-kInf, INT64_MAX}; }
GTL_HD bool beats(const KeyId& a, const KeyId& b) { return a.key > b.key || (a.key == b.key && a.id < b.id); }
GTL_DEV KeyId warp_best(KeyId a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    KeyId b;
    b.key = __shfl_xor_sync(kFullMask, a.key, o);
    b.id = __shfl_xor_sync(kFullMask, a.id, o);
    if (beats(b, a)) a = b;
  }
  return a;
}

// Block-level reductions over kThreads threads. `scratch` holds at least kWarps values of the type; every thread
// returns the result. Ends with a barrier, so the scratch can be reused right away.
template <class T, class Combine, class WarpReduce>
GTL_DEV T block_reduce(T v, T* scratch, Combine combine, WarpReduce warp_reduce) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = combine(r, scratch[w]);  // same order in every thread
  __syncthreads();
  return r;
}

GTL_DEV float block_max(float v, float* scratch) {
  return block_reduce(v, scratch, [](float a, float b) { return fmaxf(a, b); }, [](float x) { return warp_max(x); });
}
GTL_DEV float block_sum(float v, float* scratch) {
  return block_reduce(v, scratch, [](float a, float b) { return a + b; }, [](float x) { return warp_sum(x); });
}
GTL_DEV uint32_t block_sum_u32(uint32_t v, uint32_t* scratch) {
  return block_reduce(
      v, scratch, [](uint32_t a, uint32_t b) { return a + b; }, [](uint32_t x) { return warp_sum_u32(x); });
}
GTL_DEV int block_min_i32(int v, int* scratch) {
  return block_reduce(
      v, scratch, [](int a, int b) { return b < a ? b : a; }, [](int x) { return warp_min_i32(x); });
}
GTL_DEV KeyId block_best(KeyId v, KeyId* scratch) {
  return block_reduce(
      v, scratch, [](KeyId a, KeyId b) { return beats(b, a) ? b : a; }, [](KeyId x) { return warp_best(x); });
}

// Exclusive prefix sum over the block's threads (thread order), and the block total.
GTL_DEV uint32_t block_exclusive_scan(uint32_t v, uint32_t* scratch, uint32_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t w = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += w;
  }
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  uint32_t before = 0, all = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += scratch[w];
    all += scratch[w];
  }
  __syncthreads();
  *total = all;
  return before + incl - v;
}

}  // namespace cuda
}  // namespace gtl
