// Reference int8 GEMM (TFLite spec, kernels.h): integer dot products on the unpacked weights
// and requant_s8. The oracle every int8 path must match bit for bit.
//
// Consumes: GemmS8Args (a, b, bias, scale). Produces: y int8.
#include "kernels/kernels.h"

namespace ep::reference {

void gemm_s8(const GemmS8Args& p) {
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t j = 0; j < p.cols; ++j) {
      int32_t acc = p.bias ? p.bias[j] : 0;
      const int8_t* a = p.a + r * p.lda;
      const int8_t* w = p.b + j * p.ldb;
      for (int64_t k = 0; k < p.depth; ++k) acc += int32_t(a[k]) * int32_t(w[k]);
      p.y[r * p.ldy + j] = requant_s8(acc, p.scale[j], p.zp_out, p.lo, p.hi);
    }
}

}  // namespace ep::reference
