// NEON dotprod int8 GEMM (ARMv8.2+: Cortex-A76, Neoverse-N1, A78AE): sdot accumulates four
// int8 products into each int32 lane in one instruction. Same packing and 4x4 tile loops as the
// NEON path (neon/gemm_s8_impl.h).
// Built with -march=armv8.2-a+dotprod for this file only: dispatch runs it only on asimddp CPUs.
//
// Consumes: GemmS8Args (a, bp with tile 4 / k-group 16, bias, scale). Produces: y int8.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon_dotprod {

namespace {

struct S {
  static int32x4_t step(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
};
#include "kernels/neon/gemm_s8_impl.h"

}  // namespace

void gemm_s8(const GemmS8Args& p) { gemm_s8_driver<S>(p); }

}  // namespace ep::neon_dotprod
