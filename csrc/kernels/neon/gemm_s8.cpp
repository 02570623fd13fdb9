// NEON int8 GEMM for ARMv8.0 cores without dotprod (Cortex-A57/A72): smull + smlal2 form two
// int8 products in int16 (safe: weights are in [-127, 127], so |2 * 128 * 127| < 32768) and
// sadalp accumulates pairs into int32. 4x4 tile of per-(row, column) accumulators over 16-byte
// k chunks, reduced across lanes at the end. Baseline AArch64, no extra flags.
//
// Consumes: GemmS8Args (a, bp with tile 4 / k-group 16, bias, scale). Produces: y int8.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon {

namespace {

constexpr int NR = 4, MR = 4, KG = 16;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

inline int32x4_t step(int32x4_t acc, int8x16_t a, int8x16_t b) {
  int16x8_t prod = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  prod = vmlal_high_s8(prod, a, b);
  return vpadalq_s16(acc, prod);
}

}  // namespace

void gemm_s8(const GemmS8Args& p) {
  const int64_t groups = (p.depth + KG - 1) / KG, kpad = groups * KG;
  int8_t* ap = static_cast<int8_t*>(thread_scratch(1, size_t(kpad) * MR));
  for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
    const int R = int(imin(MR, p.rows - r0));
    for (int r = 0; r < MR; ++r)
      for (int64_t k = 0; k < kpad; ++k) ap[r * kpad + k] = r < R && k < p.depth ? p.a[(r0 + r) * p.lda + k] : 0;
    for (int64_t j0 = 0; j0 < p.cols; j0 += NR) {
      const int w = int(imin(NR, p.cols - j0));
      const int8_t* bp = p.bp + (j0 / NR) * NR * kpad;
      int32x4_t acc[MR][NR];
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NR; ++j) acc[r][j] = vdupq_n_s32(0);
      for (int64_t g = 0; g < groups; ++g) {
        int8x16_t a[MR], b[NR];
        for (int r = 0; r < MR; ++r) a[r] = vld1q_s8(ap + r * kpad + g * KG);
        for (int j = 0; j < NR; ++j) b[j] = vld1q_s8(bp + (g * NR + j) * KG);
        for (int r = 0; r < MR; ++r)
          for (int j = 0; j < NR; ++j) acc[r][j] = step(acc[r][j], a[r], b[j]);
      }
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < w; ++j)
          p.y[(r0 + r) * p.ldy + j0 + j] =
              requant_s8(vaddvq_s32(acc[r][j]) + p.bias[j0 + j], p.scale[j0 + j], p.zp_out, p.lo, p.hi);
    }
  }
}

}  // namespace ep::neon
