// AVX-512 VNNI sparse int8 (1x4 blocks): per block, one broadcast of its 4 weights and one
// vpdpbusd per 16 columns of packed X (u8 via x ^ 0x80, removed exactly through 128 * rowsum).
// NV = 4 vectors (64 columns) per pass. Built with AVX-512 (+VNNI) flags for this file only.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {

#include "kernels/spmm_s8_tail.h"

template <int NV>
void pass(const SpmmS8Args& p, int64_t n0) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const __m512i zp = _mm512_set1_epi32(p.zp_out);
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  const int8_t* xb = p.xq + n0 * 4;
  for (int64_t m = 0; m < p.m; ++m) {
    __m512i acc[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_si512();
    const int32_t count = p.nnz[m];
    for (int32_t i = 0; i < count; ++i) {
      const int8_t* x = xb + int64_t(quad[i]) * p.ldx * 4;
      const __m512i wb = _mm512_set1_epi32(w[i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j)
        acc[j] =
            _mm512_dpbusd_epi32(acc[j], _mm512_xor_si512(_mm512_loadu_si512(x + 64 * j), flip), wb);
    }
    quad += count;
    w += count;
    const __m512i bias = _mm512_set1_epi32(p.bias[m] - 128 * p.rowsum[m]);
    const __m512 scale = _mm512_set1_ps(p.scale[m]);
    int8_t* y = p.y + m * p.ldy + n0;
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[j], bias)), scale);
      f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
      const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 16 * j), _mm512_cvtepi32_epi8(q));
    }
  }
}

// spmm_s8_dot_scalar with 16-block gathers: the quads of 16 blocks gathered as 32-bit words,
// made unsigned (x ^ 0x80) for vpdpbusd, and the 128 * (sum of the weights) this adds taken back
// from a second vpdpbusd of ones against the weights. Rows shorter than 16 blocks take the scalar
// form, which costs less than a masked gather and two reductions.
int32_t dot_gather(const int32_t* quad, const int32_t* w, int32_t count, const int8_t* xq,
                   int64_t ldx, int64_t n) {
  if (count < 16) return spmm_s8_dot_scalar(quad, w, count, xq, ldx, n);
  const __m512i flip = _mm512_set1_epi8(char(0x80)), ones = _mm512_set1_epi8(1);
  const __m512i s = _mm512_set1_epi32(int32_t(ldx)), off = _mm512_set1_epi32(int32_t(n));
  const auto idx = [&](__m512i q) {
    return ldx == 1 ? _mm512_add_epi32(q, off) : _mm512_add_epi32(_mm512_mullo_epi32(q, s), off);
  };
  __m512i acc = _mm512_setzero_si512(), wsum = _mm512_setzero_si512();
  int32_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512i g = _mm512_i32gather_epi32(idx(_mm512_loadu_si512(quad + i)), xq, 4);
    const __m512i wv = _mm512_loadu_si512(w + i);
    acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(g, flip), wv);
    wsum = _mm512_dpbusd_epi32(wsum, ones, wv);
  }
  if (i < count) {
    const __mmask16 k = __mmask16((1u << (count - i)) - 1);
    const __m512i c = idx(_mm512_maskz_loadu_epi32(k, quad + i));
    const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, c, xq, 4);
    const __m512i wv = _mm512_maskz_loadu_epi32(k, w + i);  // zero weights: no contribution
    acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(g, flip), wv);
    wsum = _mm512_dpbusd_epi32(wsum, ones, wv);
  }
  return _mm512_reduce_add_epi32(_mm512_sub_epi32(acc, _mm512_slli_epi32(wsum, 7)));
}

}  // namespace

void spmm_s8(const SpmmS8Args& p) {
  int64_t n0 = 0;
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  for (; n0 + 64 <= p.n; n0 += 64) pass<4>(p, n0);
  for (; n0 + 16 <= p.n; n0 += 16) pass<1>(p, n0);
  // gathers only where no vector pass ran (N < 16: FC layers at batch 1, X a few compact rows);
  // a wide X's leftover columns sit 64+ bytes apart and every lane would miss L1. Integer sums
  // are exact, so the choice changes no bit.
  if (p.n < 16)
    spmm_s8_tail(p, n0, dot_gather);
  else
    spmm_s8_tail(p, n0);
}

}  // namespace ep::avx512
