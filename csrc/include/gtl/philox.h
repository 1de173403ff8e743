// Philox4x32-10 and the 64-bit uniforms of KERNEL_SPEC §3, shared by the C++ CPU and CUDA kernels.
// Torch-free: compiles with any C++17 compiler and with nvcc (host and device).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GTL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GTL_HOST_DEVICE inline
#endif

namespace gtl {

// Counter word 3 of every draw names its stream (KERNEL_SPEC §3).
enum Stream : uint32_t { kStreamToken = 0, kStreamStay = 1, kStreamChunk = 2, kStreamKey = 3 };  // Key: reference.derive_keys
constexpr int64_t kChunk = 1024;  // tokens per chunk of the two-level race

struct Philox4 {
  uint32_t w[4];
};

GTL_HOST_DEVICE void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  *lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
#endif
}

// Philox4x32 with 10 rounds (Random123). key = (k0, k1) = (low, high) words of a 64-bit seed.
GTL_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(c0, 0xD2511F53u, &hi0, &lo0);
    mulhilo32(c2, 0xCD9E8D57u, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The 64-bit integer x = (w0 << 32) | w1 of counter (a, offset_lo, offset_hi, stream) under key `seed`.
GTL_HOST_DEVICE uint64_t random_bits64(uint64_t seed, uint32_t a, uint64_t offset, uint32_t stream) {
  const Philox4 r = philox4x32_10(a, static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), stream,
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (static_cast<uint64_t>(r.w[0]) << 32) | r.w[1];
}

// U = (x + 0.5) / 2^64 as a float: only for comparisons against a probability (the stay decision).
GTL_HOST_DEVICE double uniform64(uint64_t x) { return (static_cast<double>(x) + 0.5) * 0x1p-64; }

// E = -ln U with small relative error over the whole range, in float32 (KERNEL_SPEC §3).
// U <= 1/2: E = -ln U directly (U = float(x) 2^-64 + 2^-65 keeps 24 bits of U however small, so E ~ 44 near 0 keeps
// its relative accuracy; subtracting ln(x) from 64 ln 2 instead would cancel near U = 1/2). U > 1/2: the complement
// 1 - U = (~x + 0.5) / 2^64 is exact in integers and E = -log1p(-(1 - U)), accurate down to E ~ 2^-65.
GTL_HOST_DEVICE float exponential64(uint64_t x) {
  if (x < (uint64_t{1} << 63)) {
    return -logf(static_cast<float>(x) * 0x1p-64f + 0x1p-65f);
  }
  const float complement = static_cast<float>(~x) * 0x1p-64f + 0x1p-65f;
  return -log1pf(-complement);
}

}  // namespace gtl
