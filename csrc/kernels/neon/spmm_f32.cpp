// NEON sparse fp32 SpMM (4 floats per vector): the loops of spmm_f32_impl.h over q registers.
// Baseline AArch64, no extra flags.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <arm_neon.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::neon {

namespace {
#include "kernels/spmm_f32_dot.h"

struct O {
  using V = float32x4_t;
  static constexpr int Regs = 32;
  static constexpr int W = 4;
  static V load(const float* p) { return vld1q_f32(p); }
  static V bcast(const float* p) { return vld1q_dup_f32(p); }
  using Q = float32x4_t;  // 4 weights; lane<L> broadcasts weight L
  static Q quad(const float* p) { return vld1q_f32(p); }
  template <int L>
  static V lane(Q q) {
    return vdupq_laneq_f32(q, L);
  }
  static V set1(float f) { return vdupq_n_f32(f); }
  static V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static V clamp(V v, V lo, V hi) { return vminq_f32(vmaxq_f32(v, lo), hi); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
};
#include "kernels/spmm_f32_impl.h"
}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) { spmm_driver<O>(p, 1); }
void spmm_f32_b4(const SpmmF32Args& p) { spmm_driver<O>(p, 4); }

}  // namespace ep::neon
