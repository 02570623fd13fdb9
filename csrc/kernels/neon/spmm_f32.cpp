// NEON sparse fp32 SpMM over the XNNPACK-style stream (kernels.h), vectorised across N:
// each nonzero weight is broadcast once and multiplied into V vectors of 8 columns of its input
// row. V = 8 (32 columns) keeps 8 independent FMA chains, enough to hide the FMA latency;
// narrower passes and a scalar loop take the N tail. The 4-channel block variant reuses every
// loaded X vector for 4 output channels. Baseline AArch64.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <arm_neon.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace ep::neon {

namespace {

constexpr int W = 4;  // floats per vector

template <int V>
void pass_b1(const SpmmF32Args& p, int64_t n0) {
  const float32x4_t lo = vdupq_n_f32(p.lo), hi = vdupq_n_f32(p.hi);
  const float* v = p.values;
  const int32_t* d = p.deltas;
  const float* x = p.x + n0;
  for (int64_t m = 0; m < p.m; ++m) {
    float32x4_t acc[V];
    const float32x4_t bias = vld1q_dup_f32(v++);
#pragma GCC unroll 8
    for (int j = 0; j < V; ++j) acc[j] = bias;
    const int32_t count = p.nnz[m];
    for (int32_t i = 0; i < count; ++i) {
      x += int64_t(d[i]) * p.ldx;
      const float32x4_t w = vld1q_dup_f32(v + i);
#pragma GCC unroll 8
      for (int j = 0; j < V; ++j) acc[j] = vfmaq_f32(acc[j], w, vld1q_f32(x + j * W));
    }
    v += count;
    d += count;
    float* y = p.y + m * p.ldy + n0;
#pragma GCC unroll 8
    for (int j = 0; j < V; ++j)
      vst1q_f32(y + j * W, vminq_f32(vmaxq_f32(acc[j], lo), hi));
  }
}

template <int V>
void pass_b4(const SpmmF32Args& p, int64_t n0) {
  const float32x4_t lo = vdupq_n_f32(p.lo), hi = vdupq_n_f32(p.hi);
  const float* v = p.values;
  const int32_t* d = p.deltas;
  const float* x = p.x + n0;
  for (int64_t m = 0, b = 0; m < p.m; m += 4, ++b) {
    float32x4_t acc[4][V];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const float32x4_t bias = vld1q_dup_f32(v + r);
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) acc[r][j] = bias;
    }
    v += 4;
    const int32_t count = p.nnz[b];
    for (int32_t i = 0; i < count; ++i) {
      x += int64_t(d[i]) * p.ldx;
      float32x4_t xv[V];
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) xv[j] = vld1q_f32(x + j * W);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const float32x4_t w = vld1q_dup_f32(v + 4 * i + r);
#pragma GCC unroll 4
        for (int j = 0; j < V; ++j) acc[r][j] = vfmaq_f32(acc[r][j], w, xv[j]);
      }
    }
    v += 4 * int64_t(count);
    d += count;
    const int rows = int(std::min<int64_t>(4, p.m - m));
    for (int r = 0; r < rows; ++r) {
      float* y = p.y + (m + r) * p.ldy + n0;
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j)
        vst1q_f32(y + j * W, vminq_f32(vmaxq_f32(acc[r][j], lo), hi));
    }
  }
}

// Columns [n0, n) that no vector pass covers.
void tail(const SpmmF32Args& p, int block, int64_t n0) {
  if (n0 >= p.n) return;
  const float* v = p.values;
  const int32_t* d = p.deltas;
  int64_t chan = 0;
  for (int64_t m = 0, b = 0; m < p.m; m += block, ++b) {
    const int32_t count = p.nnz[b];
    for (int r = 0; r < block && m + r < p.m; ++r)
      for (int64_t n = n0; n < p.n; ++n) {
        float acc = v[r];
        int64_t c = chan;
        for (int32_t i = 0; i < count; ++i) {
          c += d[i];
          acc += v[block + i * block + r] * p.x[c * p.ldx + n];
        }
        p.y[(m + r) * p.ldy + n] = std::min(std::max(acc, p.lo), p.hi);
      }
    for (int32_t i = 0; i < count; ++i) chan += d[i];
    v += block + int64_t(count) * block;
    d += count;
  }
}

}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) {
  int64_t n0 = 0;
  for (; n0 + 8 * W <= p.n; n0 += 8 * W) pass_b1<8>(p, n0);
  if (n0 + 4 * W <= p.n) pass_b1<4>(p, n0), n0 += 4 * W;
  if (n0 + 2 * W <= p.n) pass_b1<2>(p, n0), n0 += 2 * W;
  if (n0 + W <= p.n) pass_b1<1>(p, n0), n0 += W;
  tail(p, 1, n0);
}

void spmm_f32_b4(const SpmmF32Args& p) {
  int64_t n0 = 0;
  for (; n0 + 4 * W <= p.n; n0 += 4 * W) pass_b4<4>(p, n0);
  if (n0 + 2 * W <= p.n) pass_b4<2>(p, n0), n0 += 2 * W;
  if (n0 + W <= p.n) pass_b4<1>(p, n0), n0 += W;
  tail(p, 4, n0);
}

}  // namespace ep::neon
