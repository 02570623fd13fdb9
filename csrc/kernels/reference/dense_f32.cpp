// Reference dense fp32 kernel: plain loops over the unpacked B. The oracle for every other path
// and the fallback on CPUs without a SIMD path.
//
// Consumes: DenseF32Args (reads a, b, bias). Produces: y.
#include <algorithm>

#include "kernels/kernels.h"

namespace ep::reference {

void dense_f32(const DenseF32Args& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t j = 0; j < p.cols; ++j) {
      // double accumulation keeps the oracle well inside the 1e-5 tolerance of the SIMD paths
      double acc = p.bias ? p.bias[p.bias_per_row ? r : j] : 0.0;
      const float* a = p.a + r * p.lda;
      const float* b = p.b + j * p.b_sm;
      for (int64_t k = 0; k < p.depth; ++k) {
        const int64_t ak = p.a_seg > 0 ? k / p.a_seg * p.a_seg_stride + k % p.a_seg : k;
        acc += double(a[ak]) * double(b[k * p.b_sk]);
      }
      p.y[r * p.ldy + j] = std::min(std::max(float(acc), p.lo), p.hi);
    }
  }
}

}  // namespace ep::reference
