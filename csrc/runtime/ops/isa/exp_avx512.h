// e^x on 16 lanes for the AVX-512 files (isa/avx512.cpp through vec_impl.h, isa/int8_avx512.cpp):
// one definition, so the float SOFTMAX and the int8 tier's fused softmax compute the same bits.
// Internal linkage in each including file (built with AVX-512 flags only).
#pragma once

#include <immintrin.h>

namespace ep {
namespace rt {
namespace {

// e^z on 16 lanes: z clamped to [-88, 88] (NaN passes: vmaxps and vminps keep their second
// operand), the reduction and polynomial of exp_approx, 2^k applied by vscalefps (no exponent
// arithmetic; below 2^-126 it gives the subnormal)
inline __m512 exp16(__m512 z) {
  const __m512 one = _mm512_set1_ps(1.0f);
  z = _mm512_max_ps(_mm512_set1_ps(-88.0f), _mm512_min_ps(_mm512_set1_ps(88.0f), z));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(z, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145752f), z);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, one);
  p = _mm512_fmadd_ps(p, r, one);
  return _mm512_scalef_ps(p, k);
}

// exp16, but exactly 0 below float's smallest normal (z < -87.33: a softmax's masked positions,
// whose score is the lowest float or -inf): exp16 gives subnormals there, and arithmetic on
// subnormals doubled the time of a padded sequence's attention on AMD Zen. NaN passes.
inline __m512 exp16_normal(__m512 z) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, _mm512_set1_ps(-87.33f), _CMP_NLT_UQ), exp16(z));
}

}  // namespace
}  // namespace rt
}  // namespace ep
