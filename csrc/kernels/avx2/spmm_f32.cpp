// AVX2+FMA sparse fp32 SpMM (8 floats per vector): the loops of spmm_f32_impl.h over ymm ops.
// Built with -mavx2 -mfma for this file only.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx2 {

namespace {
struct O {
  using V = __m256;
  static constexpr int Regs = 16;
  static constexpr int W = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  using Q = __m256;  // 4 weights in each 128-bit lane; lane<L> broadcasts weight L in-lane
  static Q quad(const float* p) { return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p)); }
  template <int L>
  static V lane(Q q) {
    return _mm256_permute_ps(q, L * 0x55);
  }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V clamp(V v, V lo, V hi) { return _mm256_min_ps(_mm256_max_ps(v, lo), hi); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};
#include "kernels/spmm_f32_impl.h"
}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) { spmm_driver<O>(p, 1); }
void spmm_f32_b4(const SpmmF32Args& p) { spmm_driver<O>(p, 4); }

}  // namespace ep::avx2
