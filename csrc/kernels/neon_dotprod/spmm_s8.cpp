// NEON dotprod sparse int8 (1x4 blocks): one sdot per 4 columns of packed X multiplies the 4
// activations of each column by the block's 4 weights into that column's int32 lane.
// NV = 4 (16 columns) per pass. Built with -march=armv8.2-a+dotprod for this file only.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon_dotprod {

namespace {

#include "kernels/spmm_s8_tail.h"

template <int NV>
void pass(const SpmmS8Args& p, int64_t n0) {
  const float32x4_t lo = vdupq_n_f32(p.lo), hi = vdupq_n_f32(p.hi);
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  const int8_t* xb = p.xq + n0 * 4;
  for (int64_t m = 0; m < p.m; ++m) {
    int32x4_t acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = vdupq_n_s32(0);
    const int32_t count = p.nnz[m];
    for (int32_t i = 0; i < count; ++i) {
      const int8_t* x = xb + int64_t(quad[i]) * p.ldx * 4;
      const int8x16_t wv = vreinterpretq_s8_s32(vdupq_n_s32(w[i]));
      for (int j = 0; j < NV; ++j) {
        acc[j] = vdotq_s32(acc[j], vld1q_s8(x + 16 * j), wv);
      }
    }
    quad += count;
    w += count;
    const int32x4_t bias = vdupq_n_s32(p.bias[m]);
    const float32x4_t scale = vdupq_n_f32(p.scale[m]);
    int8_t* y = p.y + m * p.ldy + n0;
    for (int j = 0; j < NV; ++j) {
      const int32x4_t s = vaddq_s32(acc[j], bias);
      float32x4_t f = vmulq_f32(vcvtq_f32_s32(s), scale);
      f = vminq_f32(vmaxq_f32(f, lo), hi);
      const int32x4_t q = vaddq_s32(vcvtnq_s32_f32(f), vdupq_n_s32(p.zp_out));  // nearest even
      int32_t out[4];
      vst1q_s32(out, q);
      for (int c = 0; c < 4; ++c) y[4 * j + c] = int8_t(out[c]);
    }
  }
}

}  // namespace

void spmm_s8(const SpmmS8Args& p) {
  int64_t n0 = 0;
  for (; n0 + 16 <= p.n; n0 += 16) pass<4>(p, n0);
  for (; n0 + 4 <= p.n; n0 += 4) pass<1>(p, n0);
  spmm_s8_tail(p, n0);
}

}  // namespace ep::neon_dotprod
