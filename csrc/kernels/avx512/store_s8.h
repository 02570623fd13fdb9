// Storing int8 results from int32 lanes, shared by the kernel tier's and the runtime's AVX-512 int8
// files; included inside their namespace (immintrin.h first).
//
// int32 lanes (already inside [-128, 127]) to 16 int8 at y, under mask m. Compilers fuse the
// conversion and the store into vpmovdb with a memory operand, which AMD Zen 4/5 run as a slow
// microcoded sequence (most of the runtime's depthwise row time went there); the empty asm keeps
// the conversion in a register, and the store is a plain (masked) vmovdqu8.
// (no includes: this file is included inside a namespace)
inline void store_s8(int8_t* y, __mmask16 m, __m512i v) {
  __m128i b = _mm512_cvtepi32_epi8(v);
  __asm__("" : "+v"(b));
  _mm_mask_storeu_epi8(y, m, b);
}

// round(acc * scale) as int32 (MXCSR: nearest even). cap: the product capped at 2^16 first, for
// scales of 1 or more, where a product past int32 would convert to INT32_MIN (from 2^16 up every
// value saturates s8x4's packs alike; a NaN product still converts to INT32_MIN, as the portable
// requant_s8's does). Below 1, |acc * scale| < 2^31 for every int32 sum, so the cap (a twentieth of
// a 16-channel GEMM call) is left out.
inline __m512i scale_round(__m512i acc, __m512 scale, bool cap) {
  const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
  return _mm512_cvtps_epi32(cap ? _mm512_min_ps(_mm512_set1_ps(65536.0f), f) : f);
}

// The int8 lanes of an output bound as requant_s8 meets it (lo or hi): round(b) + zp.
inline __m512i s8_bound(float b, int32_t zp) {
  const float v = __builtin_nearbyintf(b) + float(zp);
  return _mm512_set1_epi8(char(v < -128.0f ? -128 : v > 127.0f ? 127 : int(v)));
}

// Four vectors of scale_round results as 64 bytes in order a | b | c | d, each plus the zero point
// (zp16: int16 lanes) and clamped to [lo8, hi8] (s8_bound). The packs saturate (int32 -> int16,
// + zp, -> int8), all monotone, so the final clamp gives clamp(round(f) + zp, lo, hi): requant_s8's
// float clamp before rounding, since rounding is monotone too (for bounds inside int8, the kernels'
// contract). The packs interleave 128-bit lanes (lane L holds a, b, c, d's elements 4L..4L+3); one
// dword permute restores the order. Per vector this is about half the instructions of converting
// and storing each one alone.
inline __m512i s8x4(__m512i a, __m512i b, __m512i c, __m512i d, __m512i zp16, __m512i lo8,
                    __m512i hi8) {
  const __m512i ab = _mm512_adds_epi16(_mm512_packs_epi32(a, b), zp16);
  const __m512i cd = _mm512_adds_epi16(_mm512_packs_epi32(c, d), zp16);
  const __m512i v = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(ab, cd), lo8), hi8);
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_epi32(order, v);
}
