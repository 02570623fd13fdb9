// NEON sparse int8 (1x4 blocks) for ARMv8.0: 16 bytes of packed X (4 columns x 4 channels) times
// the block's weights with smull / smull2 (single products fit int16), pairwise-accumulated
// into int32 (sadalp) and folded once per output. The pass loops (NV = 4: 16 columns) are
// neon/spmm_s8_impl.h, shared with the dotprod path.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon {

namespace {

#include "kernels/spmm_s8_tail.h"

struct A {
  using Acc = int32x4x2_t;  // pairwise sums of the low / high 8 bytes
  static Acc zero() { return {{vdupq_n_s32(0), vdupq_n_s32(0)}}; }
  static Acc step(Acc acc, int8x16_t xv, int8x16_t wv) {
    acc.val[0] = vpadalq_s16(acc.val[0], vmull_s8(vget_low_s8(xv), vget_low_s8(wv)));
    acc.val[1] = vpadalq_s16(acc.val[1], vmull_high_s8(xv, wv));
    return acc;
  }
  static int32x4_t fold(Acc acc) { return vpaddq_s32(acc.val[0], acc.val[1]); }
};
#include "kernels/neon/spmm_s8_impl.h"

}  // namespace

void spmm_s8(const SpmmS8Args& p) { spmm_s8_driver<A>(p); }

}  // namespace ep::neon
