// AVX2+FMA sparse fp32 SpMM (8 floats per vector): the loops of spmm_f32_impl.h over ymm ops.
// Built with -mavx2 -mfma for this file only.
//
// Consumes: SpmmF32Args. Produces: y[M, N].
#include <immintrin.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::avx2 {

namespace {
#include "kernels/spmm_f32_dot.h"

struct O {
  using V = __m256;
  static constexpr int Regs = 16;
  static constexpr int W = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  using Q = __m256;  // 4 weights in each 128-bit lane; lane<L> broadcasts weight L in-lane
  static Q quad(const float* p) { return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p)); }
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  template <int L>
  static V lane(Q q) {
    return _mm256_permute_ps(q, L * 0x55);
  }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V clamp(V v, V lo, V hi) { return _mm256_min_ps(_mm256_max_ps(v, lo), hi); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // sum_i w[i] * x[ch[i] * ldx], 8 entries per multiply-add from 8 scalar loads put together by
  // vinsertps, the indices read two per 64-bit load. Not vgatherdps: on Zen 1 it took 1.9 cycles
  // per entry against 1.0 for the separate loads (1280x960 GEMV at 90 %, 118 vs 61 us); the
  // loads keep any AVX2 core at its load ports' rate. Rows shorter than a vector, and the last
  // count % 8 entries, take the scalar loop.
  static __m128 quad_at(const float* x, const int32_t* c, int64_t ldx) {
    int64_t i[4];
    if (ldx == 1) {
      uint64_t a, b;
      __builtin_memcpy(&a, c, 8);
      __builtin_memcpy(&b, c + 2, 8);
      i[0] = int32_t(uint32_t(a)), i[1] = int32_t(a >> 32);
      i[2] = int32_t(uint32_t(b)), i[3] = int32_t(b >> 32);
    } else {
      for (int j = 0; j < 4; ++j) i[j] = c[j] * ldx;
    }
    __m128 v = _mm_load_ss(x + i[0]);
    v = _mm_insert_ps(v, _mm_load_ss(x + i[1]), 0x10);
    v = _mm_insert_ps(v, _mm_load_ss(x + i[2]), 0x20);
    return _mm_insert_ps(v, _mm_load_ss(x + i[3]), 0x30);
  }
  static V oct_at(const float* x, const int32_t* c, int64_t ldx) {
    return _mm256_set_m128(quad_at(x, c + 4, ldx), quad_at(x, c, ldx));
  }
  static float dot(const float* w, const int32_t* ch, int32_t count, const float* x, int64_t ldx) {
    if (count < W) return spmm_dot_scalar(w, ch, count, x, ldx);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 2 * W <= count; i += 2 * W) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), oct_at(x, ch + i, ldx), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + W), oct_at(x, ch + i + W, ldx), a1);
    }
    if (i + W <= count) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), oct_at(x, ch + i, ldx), a0);
      i += W;
    }
    const __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h) + spmm_dot_scalar(w + i, ch + i, count - i, x, ldx);
  }
};
#include "kernels/spmm_f32_impl.h"

// One column through the octets (kernels.h pack_sparse_f32_octets): per slot, X's 8 floats at
// its window in one register, the 8 rows' inputs picked by one vpermps of their byte indices
// and one fused multiply-add. Two accumulators alternate slots (each FMA waits on its
// accumulator's last); a row's sum is its bias plus both, in this order, as AVX-512's row groups.
void column_octets(const SpmmF32Args& p) {
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  alignas(32) float padded[8] = {};
  const float* x = p.x;
  if (p.k < 8) {  // one window: X zero-padded to a register
    for (int64_t i = 0; i < p.k; ++i) padded[i] = p.x[i];
    x = padded;
  }
  const auto pick = [&](const int32_t* base, const uint8_t* idx) {
    const __m256i lanes =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(idx)));
    return _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + *base), lanes);
  };
  const int32_t* slots = p.gslots;
  const int32_t* base = p.gbase;
  const uint8_t* idx = p.gidx;
  const float* w = p.gw;
  for (int64_t g0 = 0; g0 < p.m; g0 += 8) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const int32_t count = *slots++;
    int32_t j = 0;
    for (; j + 2 <= count; j += 2, base += 2, idx += 16, w += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(w), pick(base, idx), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8), pick(base + 1, idx + 8), acc1);
    }
    if (j < count) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(w), pick(base, idx), acc0);
      ++base, idx += 8, w += 8;
    }
    const __m256 sum = _mm256_add_ps(_mm256_loadu_ps(p.gbias + g0), _mm256_add_ps(acc0, acc1));
    const __m256 out = _mm256_min_ps(_mm256_max_ps(sum, lo), hi);
    if (g0 + 8 <= p.m) {
      _mm256_storeu_ps(p.y + g0, out);
    } else {
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      _mm256_maskstore_ps(p.y + g0, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(p.m - g0)), lane),
                          out);
    }
  }
}
}  // namespace

void spmm_f32_b1(const SpmmF32Args& p) {
  if (p.n == 1 && p.octets && p.gslots && p.ldx == 1 && p.ldy == 1 && p.k > 0)
    return column_octets(p);
  spmm_driver<O>(p, 1);
}
void spmm_f32_b4(const SpmmF32Args& p) { spmm_driver<O>(p, 4); }

}  // namespace ep::avx2
