// AVX2 sparse int8 (1x4 blocks), exact: 32 bytes of packed X (8 columns x 4 channels) are
// widened to int16 and multiplied by the block's weights with vpmaddwd, leaving two int32
// partial sums per column that are folded (hadd) once per output. No vpmaddubsw saturation.
// NV = 2 (16 columns) per pass. Built with -mavx2 -mfma for this file only.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx2 {

namespace {

#include "kernels/spmm_s8_tail.h"

template <int NV>
void pass(const SpmmS8Args& p, int64_t n0) {
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  const __m256i zp = _mm256_set1_epi32(p.zp_out);
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  const int8_t* xb = p.xq + n0 * 4;
  alignas(32) int32_t out[8];
  for (int64_t m = 0; m < p.m; ++m) {
    __m256i acc[NV][2];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_si256();
    const int32_t count = p.nnz[m];
    for (int32_t i = 0; i < count; ++i) {
      const int8_t* x = xb + int64_t(quad[i]) * p.ldx * 4;
      // the 4 weights as int16, repeated: (w0 w1 w2 w3) per 64 bits
      const __m256i wv = _mm256_cvtepi8_epi16(_mm_set1_epi32(w[i]));
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const __m128i* xv = reinterpret_cast<const __m128i*>(x + 32 * j);
        acc[j][0] = _mm256_add_epi32(
            acc[j][0], _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(xv)), wv));
        acc[j][1] = _mm256_add_epi32(
            acc[j][1], _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(xv + 1)), wv));
      }
    }
    quad += count;
    w += count;
    const __m256i bias = _mm256_set1_epi32(p.bias[m]);
    const __m256 scale = _mm256_set1_ps(p.scale[m]);
    int8_t* y = p.y + m * p.ldy + n0;
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      // acc[j][0] = columns 0-3 as (t01, t23) pairs, acc[j][1] = columns 4-7; hadd interleaves
      // 128-bit halves, the permute restores column order.
      const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[j][0], acc[j][1]), 0xD8);
      __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s, bias)), scale);
      f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out),
                         _mm256_add_epi32(_mm256_cvtps_epi32(f), zp));
      for (int c = 0; c < 8; ++c) y[8 * j + c] = int8_t(out[c]);
    }
  }
}

// The 32-bit words x[q[j] * ldx + n] of 8 blocks, by 8 scalar loads inserted into two xmm
// registers: on Zen 1 vpgatherdd takes about twice as long (the fp32 dot's measurement,
// spmm_f32.cpp; both are bound by the load ports elsewhere).
inline __m256i words_at(const int8_t* xq, const int32_t* q, int64_t ldx, int64_t n) {
  int32_t v[8];
  for (int j = 0; j < 8; ++j) __builtin_memcpy(&v[j], xq + 4 * (int64_t(q[j]) * ldx + n), 4);
  __m128i lo = _mm_cvtsi32_si128(v[0]), hi = _mm_cvtsi32_si128(v[4]);
  lo = _mm_insert_epi32(lo, v[1], 1), hi = _mm_insert_epi32(hi, v[5], 1);
  lo = _mm_insert_epi32(lo, v[2], 2), hi = _mm_insert_epi32(hi, v[6], 2);
  lo = _mm_insert_epi32(lo, v[3], 3), hi = _mm_insert_epi32(hi, v[7], 3);
  return _mm256_set_m128i(hi, lo);
}

// spmm_s8_dot_scalar 8 blocks at a time: the quads of 8 blocks as 32-bit words (words_at),
// widened to int16 with their weights and multiplied with vpmaddwd (exact, as the passes above).
// Rows shorter than 8 blocks, and the last count % 8 blocks, take the scalar form.
int32_t dot_words(const int32_t* quad, const int32_t* w, int32_t count, const int8_t* xq,
                  int64_t ldx, int64_t n) {
  if (count < 8) return spmm_s8_dot_scalar(quad, w, count, xq, ldx, n);
  __m256i acc = _mm256_setzero_si256();
  int32_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256i g = words_at(xq, quad + i, ldx, n);
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    acc =
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(g)),
                                                _mm256_cvtepi8_epi16(_mm256_castsi256_si128(wv))));
    acc = _mm256_add_epi32(
        acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(g, 1)),
                               _mm256_cvtepi8_epi16(_mm256_extracti128_si256(wv, 1))));
  }
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
  return _mm_cvtsi128_si32(h) + spmm_s8_dot_scalar(quad + i, w + i, count - i, xq, ldx, n);
}

}  // namespace

void spmm_s8(const SpmmS8Args& p) {
  int64_t n0 = 0;
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  for (; n0 + 16 <= p.n; n0 += 16) pass<2>(p, n0);
  for (; n0 + 8 <= p.n; n0 += 8) pass<1>(p, n0);
  // word loads only where no vector pass ran (N < 8: FC layers at batch 1, X a few compact rows);
  // a wide X's leftover columns sit 64+ bytes apart and every lane would miss L1. Integer sums
  // are exact, so the choice changes no bit.
  if (p.n < 8)
    spmm_s8_tail(p, n0, dot_words);
  else
    spmm_s8_tail(p, n0);
}

}  // namespace ep::avx2
