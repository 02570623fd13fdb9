// AVX2+FMA sparse fp32 SpMM (8 floats per vector): the loops of spmm_f32_impl.h over ymm ops.
// Built with -mavx2 -mfma for this file only.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <immintrin.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::avx2 {

namespace {
#include "kernels/spmm_f32_dot.h"

struct O {
  using V = __m256;
  static constexpr int Regs = 16;
  static constexpr int W = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  using Q = __m256;  // 4 weights in each 128-bit lane; lane<L> broadcasts weight L in-lane
  static Q quad(const float* p) { return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p)); }
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  template <int L>
  static V lane(Q q) {
    return _mm256_permute_ps(q, L * 0x55);
  }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V clamp(V v, V lo, V hi) { return _mm256_min_ps(_mm256_max_ps(v, lo), hi); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // sum_i w[i] * x[ch[i] * ldx] with 8-lane gathers (spmm_f32_impl.h, spmm_dot); rows shorter
  // than a vector, and the last count % 8 entries, take the scalar loop
  static float dot(const float* w, const int32_t* ch, int32_t count, const float* x, int64_t ldx) {
    if (count < W) return spmm_dot_scalar(w, ch, count, x, ldx);
    const __m256i s = _mm256_set1_epi32(int32_t(ldx));
    const auto idx = [&](const int32_t* c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
      return ldx == 1 ? v : _mm256_mullo_epi32(v, s);
    };
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 2 * W <= count; i += 2 * W) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_i32gather_ps(x, idx(ch + i), 4), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + W), _mm256_i32gather_ps(x, idx(ch + i + W), 4),
                           a1);
    }
    if (i + W <= count) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_i32gather_ps(x, idx(ch + i), 4), a0);
      i += W;
    }
    const __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h) + spmm_dot_scalar(w + i, ch + i, count - i, x, ldx);
  }
};
#include "kernels/spmm_f32_impl.h"
}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) { spmm_driver<O>(p, 1); }
void spmm_f32_b4(const SpmmF32Args& p) { spmm_driver<O>(p, 4); }

}  // namespace ep::avx2
