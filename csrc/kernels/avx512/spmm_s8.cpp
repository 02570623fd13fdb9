// AVX-512 VNNI sparse int8 (1x4 blocks): per block, one broadcast of its 4 weights and one
// vpdpbusd per 16 columns of packed X (u8 via x ^ 0x80, removed exactly through 128 * rowsum).
// NV = 4 vectors (64 columns) per pass. Built with AVX-512 (+VNNI) flags for this file only.
//
// Consumes: SpmmS8Args. Produces: y[M, N] int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {

#include "kernels/avx512/s8_groups.h"
#include "kernels/avx512/store_s8.h"

// Columns [n0, n0 + 16 NV); with `tail` mask, the last vector's columns are those of `tail`
// (masked loads and stores: a narrow strip ends past its last column, so a whole vector could
// read past the packed X).
template <int NV>
void pass(const SpmmS8Args& p, int64_t n0, __mmask16 tail = 0xffff) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const __m512i zp16 = _mm512_set1_epi16(int16_t(p.zp_out));
  const __m512i lo8 = s8_bound(p.lo, p.zp_out), hi8 = s8_bound(p.hi, p.zp_out);
  // the strip's columns as bytes: NV vectors of 16
  const __mmask64 cols = NV == 4 && tail == 0xffff ? ~__mmask64(0)
                                                   : ((__mmask64(1) << (16 * (NV - 1))) - 1) |
                                                         (__mmask64(tail) << (16 * (NV - 1)));
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  const int8_t* xb = p.xq + n0 * 4;
  const auto load = [&](const int8_t* x, int j) {
    return _mm512_xor_si512(
        j + 1 < NV ? _mm512_loadu_si512(x + 64 * j) : _mm512_maskz_loadu_epi32(tail, x + 64 * j),
        flip);
  };
  // the NV vectors' results stored as bytes (s8x4 packs four vectors; the missing ones repeat
  // the first)
  const auto store = [&](int8_t* y, const __m512i* acc, float scale) {
    const __m512 sc = _mm512_set1_ps(scale);
    const bool cap = !(scale < 1.0f);
    __m512i v[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) v[j] = j < NV ? scale_round(acc[j], sc, cap) : v[0];
    _mm512_mask_storeu_epi8(y, cols, s8x4(v[0], v[1], v[2], v[3], zp16, lo8, hi8));
  };
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t count = p.nnz[m];
    const __m512i bias = _mm512_set1_epi32(p.bias[m] - 128 * p.rowsum[m]);
    int8_t* y = p.y + m * p.ldy + n0;
    if (count == 0) {  // a pruned channel: every column is its bias, requantized once
      const __m512i c[4] = {bias, bias, bias, bias};
      store(y, c, p.scale[m]);
      continue;
    }
    // two sets of accumulators, even and odd blocks: each vpdpbusd waits on its accumulator's
    // last, so one set ran at the instruction's latency, not its throughput
    __m512i acc[NV], odd[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[j] = bias, odd[j] = _mm512_setzero_si512();
    int32_t i = 0;
    for (; i + 2 <= count; i += 2) {
      const int8_t* x0 = xb + int64_t(quad[i]) * p.ldx * 4;
      const int8_t* x1 = xb + int64_t(quad[i + 1]) * p.ldx * 4;
      const __m512i w0 = _mm512_set1_epi32(w[i]), w1 = _mm512_set1_epi32(w[i + 1]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        acc[j] = _mm512_dpbusd_epi32(acc[j], load(x0, j), w0);
        odd[j] = _mm512_dpbusd_epi32(odd[j], load(x1, j), w1);
      }
    }
    if (i < count) {
      const int8_t* x0 = xb + int64_t(quad[i]) * p.ldx * 4;
      const __m512i w0 = _mm512_set1_epi32(w[i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], load(x0, j), w0);
    }
    if (count >= 2)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[j] = _mm512_add_epi32(acc[j], odd[j]);
    quad += count;
    w += count;
    store(y, acc, p.scale[m]);
  }
}

// One column through the channel groups (kernels.h pack_sparse_s8_groups; s8_group_sums): X's
// quads picked from registers by permutes (a gather instead cost ~20x a permute per slot here,
// Zen 5), then the 16 channels requantized together.
void column_groups(const SpmmS8Args& p) {
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const __m512i zp = _mm512_set1_epi32(p.zp_out);
  const int64_t windows = ((p.k + 3) / 4 + kGroupQuads - 1) / kGroupQuads;
  const auto lanes = [](int64_t n) {
    return __mmask16(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
  };
  const int32_t* slots = p.gslots;
  const uint8_t* quad = p.gquad;
  const int32_t* w = p.gw;
  for (int64_t g0 = 0; g0 < p.m; g0 += kGroupRows) {
    const __m512i acc = s8_group_sums(p.xq, p.k, windows, slots, quad, w, _mm512_setzero_si512());
    const __mmask16 k = lanes(p.m - g0);
    const __m512i bias =
        _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, p.bias + g0),
                         _mm512_slli_epi32(_mm512_maskz_loadu_epi32(k, p.rowsum + g0), 7));
    __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, bias));
    f = _mm512_mul_ps(f, _mm512_maskz_loadu_ps(k, p.scale + g0));
    f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
    store_s8(p.y + g0, k, _mm512_add_epi32(_mm512_cvtps_epi32(f), zp));
  }
}

}  // namespace

void spmm_s8(const SpmmS8Args& p) {
  if (p.n == 1 && p.gquad && p.ldx == 1 && p.ldy == 1) return column_groups(p);
  int64_t n0 = 0;
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  for (; n0 + 64 <= p.n; n0 += 64) pass<4>(p, n0);
  // The rest (1-63 columns: a 7x7 layer's 49, a narrow strip) in one masked pass: each block's
  // weights broadcast once for all of them, where a pass per 16 columns and a scalar dot per
  // leftover column each walked the whole block stream again (2-3x slower at N = 49).
  const int64_t rest = p.n - n0;
  if (rest <= 0) return;
  const int nv = int((rest + 15) / 16);
  const int64_t last = rest - 16 * (nv - 1);
  const __mmask16 tail = __mmask16(last >= 16 ? 0xffff : (1u << last) - 1);
  switch (nv) {
    case 1:
      return pass<1>(p, n0, tail);
    case 2:
      return pass<2>(p, n0, tail);
    case 3:
      return pass<3>(p, n0, tail);
    default:
      return pass<4>(p, n0, tail);
  }
}

}  // namespace ep::avx512
