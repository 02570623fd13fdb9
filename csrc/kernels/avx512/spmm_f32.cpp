// AVX-512 sparse fp32 SpMM (16 floats per vector): the loops of spmm_f32_impl.h over zmm ops.
// Built with AVX-512 flags for this file only.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <immintrin.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::avx512 {

namespace {
#include "kernels/spmm_f32_dot.h"

struct O {
  using V = __m512;
  static constexpr int Regs = 32;
  static constexpr int W = 16;
  // b1 walks the delta stream instead of building an offset table per call (spmm_f32_impl.h):
  // measured 5-9% faster on 3072x768x128, the same on 256x256x784
  static constexpr bool WalkDeltas = true;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  using Q = __m512;  // 4 weights in each 128-bit lane; lane<L> broadcasts weight L in-lane
  static Q quad(const float* p) { return _mm512_broadcast_f32x4(_mm_loadu_ps(p)); }
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  template <int L>
  static V lane(Q q) {
    return _mm512_permute_ps(q, L * 0x55);
  }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V clamp(V v, V lo, V hi) { return _mm512_min_ps(_mm512_max_ps(v, lo), hi); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // sum_i w[i] * x[ch[i] * ldx] with 16-lane gathers (spmm_f32_impl.h, spmm_dot); rows shorter
  // than a vector take the scalar loop, which costs less than a masked gather and a reduction
  static float dot(const float* w, const int32_t* ch, int32_t count, const float* x, int64_t ldx) {
    if (count < W) return spmm_dot_scalar(w, ch, count, x, ldx);
    const __m512i s = _mm512_set1_epi32(int32_t(ldx));
    const auto idx = [&](__m512i c) { return ldx == 1 ? c : _mm512_mullo_epi32(c, s); };
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int32_t i = 0;
    for (; i + 2 * W <= count; i += 2 * W) {
      const __m512i c0 = idx(_mm512_loadu_si512(ch + i)), c1 = idx(_mm512_loadu_si512(ch + i + W));
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_i32gather_ps(c0, x, 4), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + W), _mm512_i32gather_ps(c1, x, 4), a1);
    }
    if (i + W <= count) {
      const __m512i c0 = idx(_mm512_loadu_si512(ch + i));
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_i32gather_ps(c0, x, 4), a0);
      i += W;
    }
    if (i < count) {
      const __mmask16 k = __mmask16((1u << (count - i)) - 1);
      const __m512i c0 = idx(_mm512_maskz_loadu_epi32(k, ch + i));
      const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, c0, x, 4);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, w + i), g, a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
};
#include "kernels/spmm_f32_impl.h"

// One column through the row groups (kernels.h pack_sparse_f32_groups): per window of 32 input
// channels, X's 32 floats in two registers; per slot, the 16 rows' inputs picked by one permute
// of their byte indices and one fused multiply-add. Two accumulators alternate slots (each FMA
// waits on its accumulator's last); a row's sum is its bias plus both, in this order.
void column_groups(const SpmmF32Args& p) {
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const int64_t windows = (p.k + kGroupWindowF32 - 1) / kGroupWindowF32;
  const auto lanes = [](int64_t n) {
    return __mmask16(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
  };
  const auto index = [](const uint8_t* q) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  };
  const int32_t* slots = p.gslots;
  const uint8_t* idx = p.gidx;
  const float* w = p.gw;
  for (int64_t g0 = 0; g0 < p.m; g0 += kGroupRows) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t v = 0; v < windows; ++v) {
      const int32_t count = *slots++;
      if (!count) continue;
      const int64_t c0 = v * kGroupWindowF32;
      const __m512 t0 = _mm512_maskz_loadu_ps(lanes(p.k - c0), p.x + c0);
      const __m512 t1 = _mm512_maskz_loadu_ps(lanes(p.k - c0 - 16), p.x + c0 + 16);
      int32_t j = 0;
      for (; j + 2 <= count; j += 2, idx += 32, w += 32) {
        acc0 =
            _mm512_fmadd_ps(_mm512_loadu_ps(w), _mm512_permutex2var_ps(t0, index(idx), t1), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16),
                               _mm512_permutex2var_ps(t0, index(idx + 16), t1), acc1);
      }
      if (j < count) {
        acc0 =
            _mm512_fmadd_ps(_mm512_loadu_ps(w), _mm512_permutex2var_ps(t0, index(idx), t1), acc0);
        idx += 16, w += 16;
      }
    }
    const __m512 sum = _mm512_add_ps(_mm512_loadu_ps(p.gbias + g0), _mm512_add_ps(acc0, acc1));
    _mm512_mask_storeu_ps(p.y + g0, lanes(p.m - g0), _mm512_min_ps(_mm512_max_ps(sum, lo), hi));
  }
}
}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) {
  if (p.n == 1 && p.gslots && !p.octets && p.ldx == 1 && p.ldy == 1 && p.k > 0)
    return column_groups(p);
  spmm_driver<O>(p, 1);
}
void spmm_f32_b4(const SpmmF32Args& p) { spmm_driver<O>(p, 4); }

}  // namespace ep::avx512
