// Vector layer of the CPU backend, compiled once per instruction set by cpu_multiversion.h (no include guard).
// GCC vector extensions give the arithmetic; intrinsics only where the extensions have no spelling (32x32->64-bit
// multiply, movemask, fp16 conversion, FMA). Everything is always-inline: no vector crosses a call boundary.
//
// Accuracy (measured by tests/cpp/vec_accuracy.cc over every float in the domain, see docs/CPU_BACKEND.md):
//   vexp(x), x <= 0: Cephes expf (Moshier) with a degree-5 polynomial on |r| <= ln2/2; returns 0 below ln(FLT_MIN).
//   vlog(x), x a positive normal float: Cephes logf with a degree-8 polynomial on [sqrt(1/2) - 1, sqrt(2) - 1].
//   Both are within a few ulp of the correctly rounded result (the table in the docs gives the measured maxima).

#if GTL_ISA >= 3
constexpr int W = 16;
#elif GTL_ISA == 2
constexpr int W = 8;
#else
constexpr int W = 4;
#endif

#define GTL_VI static inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
typedef uint32_t vu __attribute__((vector_size(4 * W)));
typedef uint64_t vq __attribute__((vector_size(4 * W)));  // W/2 64-bit lanes over the same bytes
typedef double vd __attribute__((vector_size(8 * W)));
typedef uint16_t vh __attribute__((vector_size(2 * W)));

// Broadcasts by intrinsic: g++ 12 compiled the lane loop of a run-time value into one masked broadcast per lane
// (16 on AVX-512) inside the top-k filter.
GTL_VI vf splat(float x) {
#if GTL_ISA >= 3
  return (vf)_mm512_set1_ps(x);
#elif GTL_ISA == 2
  return (vf)_mm256_set1_ps(x);
#else
  return (vf)_mm_set1_ps(x);
#endif
}
GTL_VI vu splat_u(uint32_t x) {
#if GTL_ISA >= 3
  return (vu)_mm512_set1_epi32(static_cast<int>(x));
#elif GTL_ISA == 2
  return (vu)_mm256_set1_epi32(static_cast<int>(x));
#else
  return (vu)_mm_set1_epi32(static_cast<int>(x));
#endif
}
GTL_VI vi iota() {
  vi r;
  for (int i = 0; i < W; ++i) r[i] = i;
  return r;
}

// ---- loads and stores (unaligned) -----------------------------------------------------------------------------------

GTL_VI vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GTL_VI void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
GTL_VI vu load_u(const uint32_t* p) {
  vu v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

GTL_VI vf load(const bf16_t* p) {  // bf16 is the top half of a float
  vh h;
  std::memcpy(&h, p, sizeof h);
  return (vf)(__builtin_convertvector(h, vu) << 16);
}

GTL_VI vf half_bits_to_float(vu h) {  // IEEE binary16 -> binary32, exact (zeros, subnormals, inf, NaN)
  const vu sign = (h & 0x8000u) << 16;
  const vu em = h & 0x7FFFu;
  const vu normal = (em << 13) + ((127u - 15u) << 23);
  const vu special = (em << 13) | 0x7F800000u;
  const vu sub = (vu)(__builtin_convertvector((vi)em, vf) * splat(0x1p-24f));
  const vu bits = em >= 0x7C00u ? special : (em < 0x400u ? sub : normal);
  return (vf)(bits | sign);
}

GTL_VI vf load(const f16_t* p) {
#if GTL_ISA >= 3
  // The zero-masked form: the plain one passes an "undefined" vector that g++ 12 -Wall reports as uninitialized.
  return (vf)_mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif GTL_ISA == 2
  return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  vh h;
  std::memcpy(&h, p, sizeof h);
  return half_bits_to_float(__builtin_convertvector(h, vu));
#endif
}

GTL_VI vd load(const double* p) {
  vd v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// ---- arithmetic helpers ---------------------------------------------------------------------------------------------

GTL_VI vf fmadd(vf a, vf b, vf c) {  // a * b + c, fused where the ISA has FMA (-ffp-contract=off elsewhere)
#if GTL_ISA >= 3
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif GTL_ISA == 2
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
GTL_VI vf fnmadd(vf a, vf b, vf c) {  // c - a * b
#if GTL_ISA >= 3
  return (vf)_mm512_fnmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif GTL_ISA == 2
  return (vf)_mm256_fnmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return c - a * b;
#endif
}

GTL_VI vf vmax(vf a, vf b) { return a > b ? a : b; }  // keeps b when a is NaN

// Bit i set iff lane i of the comparison mask is true.
GTL_VI uint32_t mask_bits(vi m) {
#if GTL_ISA >= 3
  return _mm512_movepi32_mask((__m512i)m);
#elif GTL_ISA == 2
  return static_cast<uint32_t>(_mm256_movemask_ps((__m256)m));
#else
  return static_cast<uint32_t>(_mm_movemask_ps((__m128)m));
#endif
}

// Lane indices for compressing 8 lanes by a bit mask (AVX2 has no compress instruction): entry m packs, 3 bits each
// from bit 0, the lanes whose bit is set in m, in lane order.
struct Compress8 {
  uint32_t idx[256];
  constexpr Compress8() : idx() {
    for (uint32_t m = 0; m < 256; ++m) {
      uint32_t packed = 0, slot = 0;
      for (uint32_t lane = 0; lane < 8; ++lane)
        if (m >> lane & 1u) packed |= lane << (3 * slot++);
      idx[m] = packed;
    }
  }
};
static constexpr Compress8 kCompress8{};  // internal linkage: addressed directly, not through the GOT

// Writes the lanes of a and b whose bit is set in `bits` to the front of pa and pb, in lane order, and returns how
// many. Whole vectors are stored: pa and pb need W writable slots.
GTL_VI int compress_store2(uint32_t* pa, vu a, uint32_t* pb, vu b, uint32_t bits) {
#if GTL_ISA >= 3
  _mm512_storeu_si512(pa, _mm512_maskz_compress_epi32(static_cast<__mmask16>(bits), (__m512i)a));
  _mm512_storeu_si512(pb, _mm512_maskz_compress_epi32(static_cast<__mmask16>(bits), (__m512i)b));
#elif GTL_ISA == 2
  const __m256i idx = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kCompress8.idx[bits])),
                                        _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21));  // lane j reads bits 3j..3j+2
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(pa), _mm256_permutevar8x32_epi32((__m256i)a, idx));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(pb), _mm256_permutevar8x32_epi32((__m256i)b, idx));
#else
  int m = 0;
  for (int j = 0; j < W; ++j) {
    pa[m] = a[j];
    pb[m] = b[j];
    m += (bits >> j) & 1u;
  }
  return m;
#endif
  return __builtin_popcount(bits);
}

GTL_VI float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
GTL_VI float hsum(vf v) {  // fixed pairwise order, so the result does not depend on anything but the lanes
  for (int w = W / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) v[i] += v[i + w];
  return v[0];
}

// ---- exp and log (Cephes single precision, vectorized) --------------------------------------------------------------

constexpr float kExpLow = -87.33654475f;  // ln(FLT_MIN): exp is 0 below (subnormal results are not needed)

GTL_VI vf vexp(vf x) {  // for x <= 0 (and -inf); exp(x) = 2^n e^r with n = round(x / ln 2)
  const vf xc = x < splat(kExpLow) ? splat(kExpLow) : x;
  const vf t = fmadd(xc, splat(1.44269504088896341f), splat(12582912.0f));  // 1.5 * 2^23: round to nearest integer
  const vf n = t - splat(12582912.0f);
  vf r = fnmadd(n, splat(0.693359375f), xc);  // ln 2 in two parts (Cody-Waite): n * 0.693359375 is exact
  r = fnmadd(n, splat(-2.12194440e-4f), r);
  vf p = fmadd(splat(1.9875691500e-4f), r, splat(1.3981999507e-3f));
  p = fmadd(p, r, splat(8.3334519073e-3f));
  p = fmadd(p, r, splat(4.1665795894e-2f));
  p = fmadd(p, r, splat(1.6666665459e-1f));
  p = fmadd(p, r, splat(5.0000001201e-1f));
  p = fmadd(p, r * r, r) + splat(1.f);
  const vi pow2n = (((vi)t - 0x4B400000) + 127) << 23;  // the integer n sits in the low mantissa bits of t
  const vf y = p * (vf)pow2n;
  return x < splat(kExpLow) ? splat(0.f) : y;
}

GTL_VI vf vlog(vf x) {  // x a positive normal float
  const vi bits = (vi)x;
  const vi e = (bits >> 23) - 126;                           // x = m * 2^e, m in [0.5, 1)
  vf m = (vf)((bits & 0x007FFFFF) | 0x3F000000);
  const vi small = m < splat(0.707106781186547524f);           // renormalize to [sqrt(1/2), sqrt(2))
  const vf ef = __builtin_convertvector(e + small, vf);       // small is -1 where true
  m = (small ? m + m : m) - splat(1.f);                        // exact
  const vf z = m * m;
  vf y = fmadd(splat(7.0376836292e-2f), m, splat(-1.1514610310e-1f));
  y = fmadd(y, m, splat(1.1676998740e-1f));
  y = fmadd(y, m, splat(-1.2420140846e-1f));
  y = fmadd(y, m, splat(1.4249322787e-1f));
  y = fmadd(y, m, splat(-1.6668057665e-1f));
  y = fmadd(y, m, splat(2.0000714765e-1f));
  y = fmadd(y, m, splat(-2.4999993993e-1f));
  y = fmadd(y, m, splat(3.3333331174e-1f));
  y = y * m * z;
  y = fmadd(ef, splat(-2.12194440e-4f), y);
  y = fnmadd(splat(0.5f), z, y);
  return fmadd(ef, splat(0.693359375f), m + y);
}

// ---- Philox4x32-10 on W counters (bit-identical to philox.h) and E = -ln U (KERNEL_SPEC §3) ------------------------

GTL_VI vq mul_even(vq a, vq b) {  // 32x32 -> 64-bit products of the even 32-bit lanes
#if GTL_ISA >= 3
  return (vq)_mm512_maskz_mul_epu32(0xFF, (__m512i)a, (__m512i)b);  // zero-masked: see load(const f16_t*)
#elif GTL_ISA == 2
  return (vq)_mm256_mul_epu32((__m256i)a, (__m256i)b);
#else
  return (vq)_mm_mul_epu32((__m128i)a, (__m128i)b);
#endif
}

GTL_VI void mulhilo(vu a, uint32_t m, vu* hi, vu* lo) {
  const vq mm = (vq)splat_u(m);
  const vq pe = mul_even((vq)a, mm);        // lanes 0, 2, ...
  const vq po = mul_even((vq)a >> 32, mm);  // lanes 1, 3, ...
  *hi = (vu)((pe >> 32) | (po & 0xFFFFFFFF00000000ull));
  *lo = (vu)((pe & 0xFFFFFFFFull) | (po << 32));
}

// Words 0 and 1 of Philox4x32-10 at counters (a[j], offset_lo, offset_hi, stream), for K vectors of counters at once:
// a round is a chain of dependent multiplies, so one vector at a time leaves the multiply ports waiting on latency;
// K independent chains interleaved round by round fill them (docs/CPU_BACKEND.md, "Roofline").
template <int K>
GTL_VI void philox_w01(const vu* a, uint64_t offset, uint32_t stream, const PhiloxKeys& key, vu* w0, vu* w1) {
  vu c0[K], c1[K], c2[K], c3[K];
  for (int j = 0; j < K; ++j) {
    c0[j] = a[j];
    c1[j] = splat_u(static_cast<uint32_t>(offset));
    c2[j] = splat_u(static_cast<uint32_t>(offset >> 32));
    c3[j] = splat_u(stream);
  }
  for (int r = 0; r < 10; ++r) {
    for (int j = 0; j < K; ++j) {
      vu hi0, lo0, hi1, lo1;
      mulhilo(c0[j], 0xD2511F53u, &hi0, &lo0);
      mulhilo(c2[j], 0xCD9E8D57u, &hi1, &lo1);
      const vu n0 = hi1 ^ c1[j] ^ key.k0[r], n2 = hi0 ^ c3[j] ^ key.k1[r];
      c0[j] = n0;
      c1[j] = lo1;
      c2[j] = n2;
      c3[j] = lo0;
    }
  }
  for (int j = 0; j < K; ++j) {
    w0[j] = c0[j];
    w1[j] = c1[j];
  }
}

GTL_VI vf u32_to_float(vu w) {  // correctly rounded: two exact conversions, one rounding add
  return __builtin_convertvector((vi)(w >> 16), vf) * splat(65536.f) + __builtin_convertvector((vi)(w & 0xFFFFu), vf);
}

// E = -ln U for x = (w0 << 32) | w1, U = (x + 0.5) / 2^64, in float32 with a few ulp of relative error everywhere:
// U <= 1/2: E = -ln U with U formed from both words (relative error 2^-24 even for U ~ 2^-64);
// U > 1/2: E = -log1p(-c) with the exact complement c = (~x + 0.5) / 2^64, by log1p(y) = log(1 + y) * y / ((1 + y) - 1)
// (Goldberg), and E = c when 1 - c rounds to 1.
GTL_VI vf exponential(vu w0, vu w1) {
  const vi low = (vi)w0 >= 0;
  const vu a0 = low ? w0 : ~w0, a1 = low ? w1 : ~w1;
  const vf q = (u32_to_float(a0) + (u32_to_float(a1) + splat(0.5f)) * splat(0x1p-32f)) * splat(0x1p-32f);  // U or c
  const vf u = splat(1.f) - q;
  const vf l = vlog(low ? q : u);
  const vf e_high = u == splat(1.f) ? q : l * q / (u - splat(1.f));
  return low ? -l : e_high;
}
