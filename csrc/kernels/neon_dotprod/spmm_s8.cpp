// NEON dotprod sparse int8 (1x4 blocks): one sdot per 4 columns of packed X multiplies the 4
// activations of each column by the block's 4 weights into that column's int32 lane.
// The pass loops are neon/spmm_s8_impl.h, shared with the NEON path. Built with
// -march=armv8.2-a+dotprod for this file only.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon_dotprod {

namespace {

#include "kernels/spmm_s8_tail.h"

struct A {
  using Acc = int32x4_t;
  static Acc zero() { return vdupq_n_s32(0); }
  static Acc step(Acc acc, int8x16_t xv, int8x16_t wv) { return vdotq_s32(acc, xv, wv); }
  static int32x4_t fold(Acc acc) { return acc; }
};
#include "kernels/neon/spmm_s8_impl.h"

}  // namespace

void spmm_s8(const SpmmS8Args& p) { spmm_s8_driver<A>(p); }

}  // namespace ep::neon_dotprod
