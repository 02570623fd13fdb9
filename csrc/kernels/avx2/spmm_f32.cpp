// AVX2+FMA sparse fp32 SpMM over the XNNPACK-style stream (kernels.h), vectorised across N:
// each nonzero weight is broadcast once and multiplied into V vectors of 8 columns of its input
// row. V = 8 (64 columns) keeps 8 independent FMA chains, enough to hide the FMA latency;
// narrower passes and a scalar loop take the N tail. The 4-channel block variant reuses every
// loaded X vector for 4 output channels. Built with -mavx2 -mfma for this file only.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace ep::avx2 {

namespace {

constexpr int W = 8;  // floats per vector

template <int V>
void pass_b1(const SpmmF32Args& p, int64_t n0) {
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  const float* v = p.values;
  const int32_t* d = p.deltas;
  const float* x = p.x + n0;
  for (int64_t m = 0; m < p.m; ++m) {
    __m256 acc[V];
    const __m256 bias = _mm256_broadcast_ss(v++);
#pragma GCC unroll 8
    for (int j = 0; j < V; ++j) acc[j] = bias;
    const int32_t count = p.nnz[m];
    for (int32_t i = 0; i < count; ++i) {
      x += int64_t(d[i]) * p.ldx;
      const __m256 w = _mm256_broadcast_ss(v + i);
#pragma GCC unroll 8
      for (int j = 0; j < V; ++j) acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + j * W), acc[j]);
    }
    v += count;
    d += count;
    float* y = p.y + m * p.ldy + n0;
#pragma GCC unroll 8
    for (int j = 0; j < V; ++j)
      _mm256_storeu_ps(y + j * W, _mm256_min_ps(_mm256_max_ps(acc[j], lo), hi));
  }
}

template <int V>
void pass_b4(const SpmmF32Args& p, int64_t n0) {
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  const float* v = p.values;
  const int32_t* d = p.deltas;
  const float* x = p.x + n0;
  for (int64_t m = 0, b = 0; m < p.m; m += 4, ++b) {
    __m256 acc[4][V];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m256 bias = _mm256_broadcast_ss(v + r);
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) acc[r][j] = bias;
    }
    v += 4;
    const int32_t count = p.nnz[b];
    for (int32_t i = 0; i < count; ++i) {
      x += int64_t(d[i]) * p.ldx;
      __m256 xv[V];
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) xv[j] = _mm256_loadu_ps(x + j * W);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m256 w = _mm256_broadcast_ss(v + 4 * i + r);
#pragma GCC unroll 4
        for (int j = 0; j < V; ++j) acc[r][j] = _mm256_fmadd_ps(w, xv[j], acc[r][j]);
      }
    }
    v += 4 * int64_t(count);
    d += count;
    const int rows = int(std::min<int64_t>(4, p.m - m));
    for (int r = 0; r < rows; ++r) {
      float* y = p.y + (m + r) * p.ldy + n0;
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j)
        _mm256_storeu_ps(y + j * W, _mm256_min_ps(_mm256_max_ps(acc[r][j], lo), hi));
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
  for (; n0 + 2 * W <= p.n; n0 += 2 * W) pass_b4<2>(p, n0);
  if (n0 + W <= p.n) pass_b4<1>(p, n0), n0 += W;
  tail(p, 4, n0);
}

}  // namespace ep::avx2
