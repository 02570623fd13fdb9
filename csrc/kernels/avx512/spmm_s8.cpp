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

}  // namespace

void spmm_s8(const SpmmS8Args& p) {
  int64_t n0 = 0;
  for (; n0 + 64 <= p.n; n0 += 64) pass<4>(p, n0);
  for (; n0 + 16 <= p.n; n0 += 16) pass<1>(p, n0);
  spmm_s8_tail(p, n0);
}

}  // namespace ep::avx512
