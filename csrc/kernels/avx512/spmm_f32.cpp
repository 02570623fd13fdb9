// AVX-512 sparse fp32 SpMM (16 floats per vector): the loops of spmm_f32_impl.h over zmm ops.
// Built with AVX-512 flags for this file only.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {
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
  template <int L>
  static V lane(Q q) {
    return _mm512_permute_ps(q, L * 0x55);
  }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V clamp(V v, V lo, V hi) { return _mm512_min_ps(_mm512_max_ps(v, lo), hi); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};
#include "kernels/spmm_f32_impl.h"
}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) { spmm_driver<O>(p, 1); }
void spmm_f32_b4(const SpmmF32Args& p) { spmm_driver<O>(p, 4); }

}  // namespace ep::avx512
