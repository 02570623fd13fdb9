// Reference sparse int8 (1x4 blocks, kernels.h SpmmS8Args): integer sums over the block stream
// and requant_s8. The oracle the SIMD paths match bit for bit.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include "kernels/kernels.h"

namespace ep::reference {

void spmm_s8(const SpmmS8Args& p) {
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t count = p.nnz[m];
    for (int64_t n = 0; n < p.n; ++n) {
      int32_t acc = p.bias[m];
      for (int32_t i = 0; i < count; ++i) {
        const int8_t* x = p.xq + (int64_t(quad[i]) * p.ldx + n) * 4;
        for (int t = 0; t < 4; ++t)
          acc += int32_t(x[t]) * int32_t(int8_t(uint32_t(w[i]) >> (8 * t)));
      }
      p.y[m * p.ldy + n] = requant_s8(acc, p.scale[m], p.zp_out, p.lo, p.hi);
    }
    quad += count;
    w += count;
  }
}

}  // namespace ep::reference
