// Reference sparse fp32 SpMM over the packed stream (kernels.h): one scalar loop per output.
// The oracle for the SIMD SpMM paths.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <algorithm>

#include "kernels/kernels.h"

namespace ep::reference {

namespace {

void spmm(const SpmmF32Args& p, int block) {
  const float* v = p.values;
  const int32_t* d = p.deltas;
  const int32_t* nz = p.nnz;
  int64_t chan = 0;  // the input channel the stream's pointer is at
  for (int64_t r0 = 0; r0 < p.m; r0 += block) {
    const int32_t count = *nz++;
    const float* bias = v;
    v += block;
    const float* w = v;
    const int32_t* dd = d;
    for (int r = 0; r < block && r0 + r < p.m; ++r) {
      for (int64_t n = 0; n < p.n; ++n) {
        double acc = bias[r];
        int64_t c = chan;
        for (int32_t i = 0; i < count; ++i) {
          c += dd[i];
          acc += double(w[i * block + r]) * double(p.x[c * p.ldx + n]);
        }
        p.y[(r0 + r) * p.ldy + n] = std::min(std::max(float(acc), p.lo), p.hi);
      }
    }
    for (int32_t i = 0; i < count; ++i) chan += d[i];
    v += int64_t(count) * block;
    d += count;
  }
}

}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) { spmm(p, 1); }
void spmm_f32_b4(const SpmmF32Args& p) { spmm(p, 4); }

}  // namespace ep::reference
