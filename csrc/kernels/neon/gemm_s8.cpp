// NEON int8 GEMM for ARMv8.0 cores without dotprod (Cortex-A57/A72): smull + smlal2 form two
// int8 products in int16 (safe: weights are in [-127, 127], so |2 * 128 * 127| < 32768) and
// sadalp accumulates pairs into int32. The 4x4 tile loops are neon/gemm_s8_impl.h (shared with
// the dotprod path). Baseline AArch64, no extra flags.
//
// Consumes: GemmS8Args (a, bp with tile 4 / k-group 16, bias, scale). Produces: y int8.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon {

namespace {

struct S {
  static int32x4_t step(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t prod = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    prod = vmlal_high_s8(prod, a, b);
    return vpadalq_s16(acc, prod);
  }
};
#include "kernels/neon/gemm_s8_impl.h"

}  // namespace

void gemm_s8(const GemmS8Args& p) { gemm_s8_driver<S>(p); }

}  // namespace ep::neon
