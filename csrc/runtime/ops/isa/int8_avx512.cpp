// AVX-512 (VNNI) loops of the int8 operators (ops_int8_isa.h): vpdpbusd on uint8 activations
// (int8 ^ 0x80; the 128 * row sum is folded into the bias) and int8 weights, then TFLite's
// requantization 16 channels at a time: in float where that provably gives its bits, else with
// 64-bit products, so the bits equal the portable loop.
//
// Consumes: packed weights and uint8 rows. Produces: int8 rows.
#include <immintrin.h>

#include <algorithm>
#include <type_traits>

#include "runtime/ops/ops_int8_isa.h"
#include "runtime/ops/isa/exp_avx512.h"

namespace ep {
namespace rt {
namespace avx512 {

namespace {

// The per-channel constants of mbqm, derived once per block of 16 channels: the loops below
// store int8 results between requantizations, and a byte store may alias the multiplier arrays,
// so without this the compiler reloads and re-derives them for every vector.
struct Rq16 {
  __m512i mult, mult_odd, left, right, mask, half_mask;
};

inline Rq16 rq16(__m512i mult, __m512i shift) {
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  Rq16 r;
  r.mult = mult;
  r.mult_odd = _mm512_srli_epi64(mult, 32);
  r.left = _mm512_max_epi32(shift, zero);
  r.right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
  r.mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, r.right), one);
  r.half_mask = _mm512_srai_epi32(r.mask, 1);
  return r;
}

// TFLite's MultiplyByQuantizedMultiplier on 16 lanes: x << max(shift, 0), the rounding doubling
// high multiply, then the rounding division by 2^max(-shift, 0). The high multiply's nudge
// (2^30 for a product >= 0, 1 - 2^30 below) followed by a division truncating towards zero
// equals floor((p + 2^30) / 2^31) for every product p, so each half is an add and a shift. The
// multiplier is never INT32_MIN (it is positive), so no lane saturates and every result fits
// 32 bits: the odd lanes keep theirs in the high half of (p + 2^30) << 1.
inline __m512i mbqm(__m512i x, const Rq16& r) {
  x = _mm512_sllv_epi32(x, r.left);
  const __m512i half = _mm512_set1_epi64(int64_t(1) << 30);
  const __m512i even = _mm512_srai_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, r.mult), half), 31);
  const __m512i odd = _mm512_slli_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), r.mult_odd), half), 1);
  const __m512i h = _mm512_mask_blend_epi32(0xAAAA, even, odd);
  const __m512i rem = _mm512_and_si512(h, r.mask);
  const __m512i thr = _mm512_add_epi32(r.half_mask, _mm512_srli_epi32(h, 31));
  const __m512i q = _mm512_srav_epi32(h, r.right);
  return _mm512_mask_add_epi32(q, _mm512_cmpgt_epi32_mask(rem, thr), q, _mm512_set1_epi32(1));
}

// The float form of mbqm plus the zero point (FloatRequant in ops_int8_isa.h) on 16 lanes: V from
// one fused multiply-add and a rounding conversion, whose high 16 bits are the result (the caller
// takes them with a word permute). Lanes with V mod 65536 below 16 are cleared in *ok; the
// caller redoes those vectors with mbqm. A W past int32 converts to INT32_MIN, whose low half is
// 0, so such lanes (outputs far beyond the int8 range) are redone too and need no cap.
struct Rqf16 {
  __m512 scale, pos, neg;
};
// W (float) for 16 sums: the fused multiply-add with pos or neg by the sum's sign
inline __m512 rq_sum(__m512i x, const Rqf16& f) {
  const __mmask16 negative = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), f.scale,
                         _mm512_mask_blend_ps(negative, f.pos, f.neg));
}
// V from W, rounded to nearest; lanes with V mod 65536 below 16 cleared in *ok
inline __m512i rq_round(__m512 w, __mmask16* ok) {
  const __m512i v = _mm512_cvt_roundps_epi32(w, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  *ok = _mm512_mask_test_epi32_mask(*ok, v, _mm512_set1_epi32(0xFFF0));
  return v;
}
inline __m512i rq_float_v(__m512i x, const Rqf16& f, __mmask16* ok) {
  return rq_round(rq_sum(x, f), ok);
}
// The same with W clamped to [vlo, vhi] (65536 * lo or hi + 32768: high halves lo and hi, never
// flagged), so V's high half is already inside the activation's range.
inline __m512i rq_float_v(__m512i x, const Rqf16& f, __m512 vlo, __m512 vhi, __mmask16* ok) {
  return rq_round(_mm512_max_ps(_mm512_min_ps(rq_sum(x, f), vhi), vlo), ok);
}
inline Rqf16 rqf16(const FloatRequant& fr, int64_t c0) {
  return Rqf16{_mm512_loadu_ps(fr.scale + c0), _mm512_loadu_ps(fr.pos + c0),
               _mm512_loadu_ps(fr.neg + c0)};
}
// The high halves of four V vectors as 64 saturated bytes, in order v0 | v1 | v2 | v3: a word
// permute takes the high halves of two vectors in order, the byte pack interleaves the two word
// vectors by 128-bit lanes, and a qword permute restores the order.
inline __m512i high_bytes(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const __m512i odd =
      _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                       25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512i bytes = _mm512_packs_epi16(_mm512_permutex2var_epi16(v0, odd, v1),
                                           _mm512_permutex2var_epi16(v2, odd, v3));
  return _mm512_permutexvar_epi64(_mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0), bytes);
}

#include "kernels/avx512/s8_groups.h"
#include "kernels/avx512/store_s8.h"

// acc += the 4-byte dot products of u8 x and s8 w per lane. As inline asm the accumulator is
// one register across the loop: with the intrinsic, GCC copies every accumulator of a tile
// through another register on each iteration, which costs dispatch slots in the GEMM's inner loop.
inline __m512i dpbusd(__m512i acc, __m512i x, __m512i w) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
  return acc;
}

// R rows x B blocks of 16 channels (B <= 4), the blocks starting at channel block b, requantized
// with the integer steps or (F) in float. The results are packed to bytes four vectors at a time
// (saturating packs, then one dword permute) and stored row by row, masked past channel m.
template <int R, int B, bool F, bool S>
void tile(const QGemmVnniArgs& a, int64_t r0, int64_t b) {
  const int64_t groups = a.kp / 4, kp = a.kp, c0 = b * 16;
  const int8_t* const w = a.w + b * groups * 64;
  const uint8_t* const x = a.x + r0 * kp;
  __m512i acc[R][B];
#pragma GCC unroll 4
  for (int h = 0; h < B; ++h) {
    const __m512i bias = _mm512_loadu_si512(a.bias + c0 + 16 * h);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      acc[r][h] = a.row_bias ? _mm512_add_epi32(bias, _mm512_set1_epi32(a.row_bias[r0 + r])) : bias;
  }
  const __m512i sign = _mm512_set1_epi32(int32_t(0x80808080u));
  for (int64_t q = 0; q < groups; ++q) {
    __m512i wv[B];
#pragma GCC unroll 4
    for (int h = 0; h < B; ++h) wv[h] = _mm512_loadu_si512(w + (h * groups + q) * 64);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t v;
      __builtin_memcpy(&v, x + r * kp + q * 4, 4);
      // S: int8 rows, made uint8 here (4 bytes ^ 0x80 each) instead of in a copy
      const __m512i xb = S ? _mm512_xor_si512(_mm512_set1_epi32(v), sign) : _mm512_set1_epi32(v);
#pragma GCC unroll 4
      for (int h = 0; h < B; ++h) acc[r][h] = dpbusd(acc[r][h], xb, wv[h]);
    }
  }
  const __m512i zp = _mm512_set1_epi32(a.zp_out);
  const __m512i lo = _mm512_set1_epi8(int8_t(a.lo)), hi = _mm512_set1_epi8(int8_t(a.hi));
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  const int64_t left = a.m - c0;
  const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
  // F: the float requantization (a.fr), the integer steps for the rare groups it flags
  Rq16 rq[F ? 1 : B];
  Rqf16 rf[F ? B : 1];
  const auto integer = [&](int h) {
    return rq16(_mm512_loadu_si512(a.mult + c0 + 16 * h),
                _mm512_loadu_si512(a.shift + c0 + 16 * h));
  };
  for (int h = 0; h < B; ++h) {
    if constexpr (F)
      rf[h] = rqf16(*a.fr, c0 + 16 * h);
    else
      rq[h] = integer(h);
  }
  int8_t* const y = a.y + r0 * a.ldy + c0;
  const int64_t ldy = a.ldy;
  // Four vectors of results become one vector of 64 bytes, v0 | v1 | v2 | v3, clamped to the
  // activation's range. The four are one row's blocks (3-4 blocks; a missing fourth, h < 0, is
  // filler), two rows' (2 blocks) or four rows' (1 block), so no pack works on filler.
  // Integer steps: lane i of the saturating packs holds dwords [v0_i, v1_i, v2_i, v3_i], and
  // `order` restores v0 | v1 | v2 | v3.
  const auto rq_of = [&](int h) {
    if constexpr (F)
      return integer(h);
    else
      return rq[h];
  };
  // the accumulators come by value and the blocks h as constants once the loops below unroll,
  // so the accumulators stay in registers
  const auto integer_bytes = [&](__m512i a0, __m512i a1, __m512i a2, __m512i a3, int h0, int h1,
                                 int h2, int h3) {
    const auto one = [&](__m512i v, int h) {
      return h < 0 ? zp : _mm512_add_epi32(mbqm(v, rq_of(h)), zp);
    };
    const __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(one(a0, h0), one(a1, h1)),
                                             _mm512_packs_epi32(one(a2, h2), one(a3, h3)));
    return _mm512_permutexvar_epi32(order, bytes);
  };
  const auto group = [&](__m512i a0, __m512i a1, __m512i a2, __m512i a3, int h0, int h1, int h2,
                         int h3) {
    __m512i bytes;
    if constexpr (F) {
      __mmask16 ok = 0xFFFF;
      const auto wide = [&](__m512i v, int h) {
        return h < 0 ? _mm512_set1_epi32(0x8000) : rq_float_v(v, rf[h], &ok);
      };
      const __m512i v0 = wide(a0, h0), v1 = wide(a1, h1), v2 = wide(a2, h2), v3 = wide(a3, h3);
      bytes = __builtin_expect(ok == 0xFFFF, 1) ? high_bytes(v0, v1, v2, v3)
                                                : integer_bytes(a0, a1, a2, a3, h0, h1, h2, h3);
    } else {
      bytes = integer_bytes(a0, a1, a2, a3, h0, h1, h2, h3);
    }
    return _mm512_min_epi8(_mm512_max_epi8(bytes, lo), hi);
  };
  if constexpr (B == 1 && R % 4 == 0) {
    const __mmask16 m16 = __mmask16(m);
#pragma GCC unroll 8
    for (int r = 0; r < R; r += 4) {
      const __m512i bytes =
          group(acc[r][0], acc[r + 1][0], acc[r + 2][0], acc[r + 3][0], 0, 0, 0, 0);
      int8_t* const yr = y + r * ldy;
      if (ldy == 16 && m16 == 0xFFFF) {  // four whole rows back to back
        _mm512_storeu_si512(yr, bytes);
        continue;
      }
      _mm_mask_storeu_epi8(yr, m16, _mm512_castsi512_si128(bytes));
      _mm_mask_storeu_epi8(yr + ldy, m16, _mm512_extracti32x4_epi32(bytes, 1));
      _mm_mask_storeu_epi8(yr + 2 * ldy, m16, _mm512_extracti32x4_epi32(bytes, 2));
      _mm_mask_storeu_epi8(yr + 3 * ldy, m16, _mm512_extracti32x4_epi32(bytes, 3));
    }
  } else if constexpr (B == 2 && R % 2 == 0) {
    const __mmask32 m32 = __mmask32(m);
#pragma GCC unroll 8
    for (int r = 0; r < R; r += 2) {
      const __m512i bytes = group(acc[r][0], acc[r][1], acc[r + 1][0], acc[r + 1][1], 0, 1, 0, 1);
      int8_t* const yr = y + r * ldy;
      _mm256_mask_storeu_epi8(yr, m32, _mm512_castsi512_si256(bytes));
      _mm256_mask_storeu_epi8(yr + ldy, m32, _mm512_extracti64x4_epi64(bytes, 1));
    }
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      constexpr int h1 = B > 1 ? 1 : -1, h2 = B > 2 ? 2 : -1, h3 = B > 3 ? 3 : -1;
      const __m512i bytes = group(acc[r][0], acc[r][std::max(h1, 0)], acc[r][std::max(h2, 0)],
                                  acc[r][std::max(h3, 0)], 0, h1, h2, h3);
      _mm512_mask_storeu_epi8(y + r * ldy, m, bytes);
    }
  }
}

// One tile of R rows across every channel block. vpdpbusd's latency is several cycles, so a tile
// keeps 8 to 16 independent sums in flight where the rows allow: 8 rows of 1 or 2 blocks, 4 rows
// of 3 or 4 (the wide tiles also load each weight vector once for more rows).
template <int R, bool F, bool S>
void tile_row(const QGemmVnniArgs& a, int64_t r0, int64_t blocks) {
  constexpr int Rw = R > 4 ? 4 : R;  // rows of the 3- and 4-block tiles
  int64_t b = 0;
  for (; b + 4 <= blocks; b += 4)
    for (int r = 0; r < R; r += Rw) tile<Rw, 4, F, S>(a, r0 + r, b);
  switch (blocks - b) {
    case 3:
      for (int r = 0; r < R; r += Rw) tile<Rw, 3, F, S>(a, r0 + r, b);
      return;
    case 2:
      return tile<R, 2, F, S>(a, r0, b);
    case 1:
      return tile<R, 1, F, S>(a, r0, b);
    default:
      return;
  }
}

template <bool F, bool S>
void qgemm_rows(const QGemmVnniArgs& a) {
  const int64_t blocks = (a.m + 15) / 16;
  int64_t r = 0;
  for (; r + 8 <= a.n; r += 8) tile_row<8, F, S>(a, r, blocks);
  for (; r + 4 <= a.n; r += 4) tile_row<4, F, S>(a, r, blocks);
  for (; r < a.n; ++r) tile_row<1, F, S>(a, r, blocks);
}

}  // namespace

void qgemm_vnni(const QGemmVnniArgs& a) {
  if (a.signed_x)
    a.fr ? qgemm_rows<true, true>(a) : qgemm_rows<false, true>(a);
  else
    a.fr ? qgemm_rows<true, false>(a) : qgemm_rows<false, false>(a);
}

namespace {

// Output channel j's results for the chunk's rows, NV vectors of 16 rows, each lane with its int8
// result in byte 2 and already inside [lo, hi] (the float form clamped at vlo / vhi = 65536 * lo
// or hi + 32768, whose high halves are lo and hi and which no lane flags; the integer steps' result
// q is put there as q << 16 | 0x8000).
// The results of NV vectors of channel j's sums (spmm_channel's form)
template <int NV>
inline void spmm_requant(const QSpmmVnniArgs& a, int64_t j, const __m512i* acc, __m512 vlo,
                         __m512 vhi, __m512i* res) {
  if (a.fr) {
    const Rqf16 f{_mm512_set1_ps(a.fr->scale[j]), _mm512_set1_ps(a.fr->pos[j]),
                  _mm512_set1_ps(a.fr->neg[j])};
    __mmask16 ok = 0xFFFF;
#pragma GCC unroll 4
    for (int t = 0; t < NV; ++t) res[t] = rq_float_v(acc[t], f, vlo, vhi, &ok);
    if (__builtin_expect(ok == 0xFFFF, 1)) return;
  }
  const Rq16 rq = rq16(_mm512_set1_epi32(a.mult[j]), _mm512_set1_epi32(a.shift[j]));
  const __m512i zp = _mm512_set1_epi32(a.zp_out), lo = _mm512_set1_epi32(a.lo),
                hi = _mm512_set1_epi32(a.hi);
  for (int t = 0; t < NV; ++t) {
    const __m512i v = mbqm(acc[t], rq);
    const __m512i q = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
    res[t] = _mm512_or_si512(_mm512_slli_epi32(q, 16), _mm512_set1_epi32(0x8000));
  }
}

template <int NV>
inline void spmm_channel(const QSpmmVnniArgs& a, int64_t j, const int32_t*& quad, const int32_t*& w,
                         __m512 vlo, __m512 vhi, __m512i* res) {
  const __m512i bias = _mm512_set1_epi32(a.bias[j]);
  if (a.nnz[j] == 0) {  // a pruned channel: its bias on every row, requantized once
    spmm_requant<1>(a, j, &bias, vlo, vhi, res);
#pragma GCC unroll 4
    for (int t = 1; t < NV; ++t) res[t] = res[0];
    return;
  }
  __m512i acc[NV];
  for (int t = 0; t < NV; ++t) acc[t] = bias;
  for (int32_t e = 0; e < a.nnz[j]; ++e, ++quad, ++w) {
    const __m512i wb = _mm512_set1_epi32(*w);
    const uint8_t* base = a.xq + int64_t(*quad) * a.ldn * 4;
#pragma GCC unroll 4
    for (int t = 0; t < NV; ++t)
      acc[t] = _mm512_dpbusd_epi32(acc[t], _mm512_loadu_si512(base + 64 * t), wb);
  }
  spmm_requant<NV>(a, j, acc, vlo, vhi, res);
}

// Byte 2 of each lane of v0..v3 as bytes 0..3 of one lane: four channels' results per row
inline __m512i byte2_of_four(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const __m512i lo = _mm512_mask_blend_epi8(__mmask64(0x2222222222222222ull),
                                            _mm512_srli_epi32(v0, 16), _mm512_srli_epi32(v1, 8));
  const __m512i hi =
      _mm512_mask_blend_epi8(__mmask64(0x8888888888888888ull), v2, _mm512_slli_epi32(v3, 8));
  return _mm512_mask_blend_epi16(__mmask32(0xAAAAAAAAu), lo, hi);
}

// Blocks of 16 output channels: each channel's results come with rows as lanes; four channels
// make one dword per row, and a 4x4 dword transpose inside each 128-bit lane turns the four
// groups into rows of 16 channels, stored 16 bytes at a time.
template <int NV>
void spmm_rows(const QSpmmVnniArgs& a) {
  const int32_t* quad = a.quad;
  const int32_t* w = a.w;
  const __m512 vlo = _mm512_set1_ps(65536.0f * float(a.lo) + 32768.0f);
  const __m512 vhi = _mm512_set1_ps(65536.0f * float(a.hi) + 32768.0f);
  const __m512i none = _mm512_set1_epi32(0x8000);
  for (int64_t j0 = 0; j0 < a.m; j0 += 16) {
    const int64_t left = a.m - j0;
    const __mmask16 cm = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512i d[4][NV];  // [group of 4 channels][vector of 16 rows]
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      __m512i v[4][NV];
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        if (j0 + 4 * g + c < a.m) {
          spmm_channel<NV>(a, j0 + 4 * g + c, quad, w, vlo, vhi, v[c]);
        } else {
          for (int t = 0; t < NV; ++t) v[c][t] = none;
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < NV; ++t) d[g][t] = byte2_of_four(v[0][t], v[1][t], v[2][t], v[3][t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < NV; ++t) {
      const __m512i t0 = _mm512_unpacklo_epi32(d[0][t], d[1][t]);
      const __m512i t1 = _mm512_unpackhi_epi32(d[0][t], d[1][t]);
      const __m512i t2 = _mm512_unpacklo_epi32(d[2][t], d[3][t]);
      const __m512i t3 = _mm512_unpackhi_epi32(d[2][t], d[3][t]);
      // r[k] holds rows 16 t + 4 l + k in its 128-bit lanes l
      const __m512i r[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2),
                            _mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)};
      int8_t* const y = a.y + j0 + 16 * t * a.ldy;
      const int64_t rows = a.n - 16 * t;
      const auto put = [&](int l, int k, __m128i v) {
        if (4 * l + k < rows) _mm_mask_storeu_epi8(y + (4 * l + k) * a.ldy, cm, v);
      };
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        put(0, k, _mm512_castsi512_si128(r[k]));
        put(1, k, _mm512_extracti32x4_epi32(r[k], 1));
        put(2, k, _mm512_extracti32x4_epi32(r[k], 2));
        put(3, k, _mm512_extracti32x4_epi32(r[k], 3));
      }
    }
  }
}

}  // namespace

namespace {
// v[i] lane j -> v[j] lane i for 16 vectors of 16 dwords: pairs of dwords, pairs of qwords, then a
// 4x4 transpose of the 128-bit lanes
inline void transpose16x16_epi32(__m512i* v) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4 i + c] lane L: column 4 L + c of rows 4 i .. 4 i + 3
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i a = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i b = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i e = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i f = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
    v[c] = _mm512_shuffle_i32x4(a, e, _MM_SHUFFLE(2, 0, 2, 0));
    v[4 + c] = _mm512_shuffle_i32x4(a, e, _MM_SHUFFLE(3, 1, 3, 1));
    v[8 + c] = _mm512_shuffle_i32x4(b, f, _MM_SHUFFLE(2, 0, 2, 0));
    v[12 + c] = _mm512_shuffle_i32x4(b, f, _MM_SHUFFLE(3, 1, 3, 1));
  }
}
}  // namespace

void quad_rows(const int8_t* x, int64_t ldx, int64_t n, int64_t k, int64_t ldn, uint32_t* xq) {
  const int64_t quads = (k + 3) / 4;
  const __m512i sign = _mm512_set1_epi32(int32_t(0x80808080u));
  for (int64_t r0 = 0; r0 < n; r0 += 16) {
    const int64_t rows = std::min<int64_t>(16, n - r0);
    for (int64_t q0 = 0; q0 < quads; q0 += 16) {
      const int64_t bytes = k - 4 * q0;
      const __mmask64 bm = bytes >= 64 ? ~__mmask64(0) : (__mmask64(1) << bytes) - 1;
      __m512i v[16];
      for (int i = 0; i < 16; ++i)
        v[i] = i < rows ? _mm512_maskz_loadu_epi8(bm, x + (r0 + i) * ldx + 4 * q0)
                        : _mm512_setzero_si512();
      transpose16x16_epi32(v);
      const int64_t count = std::min<int64_t>(16, quads - q0);
      for (int i = 0; i < count; ++i)
        _mm512_storeu_si512(xq + (q0 + i) * ldn + r0, _mm512_xor_si512(v[i], sign));
    }
  }
}

void qspmm_vnni(const QSpmmVnniArgs& a) {
  switch ((a.n + 15) / 16) {
    case 1:
      return spmm_rows<1>(a);
    case 2:
      return spmm_rows<2>(a);
    case 3:
      return spmm_rows<3>(a);
    default:
      return spmm_rows<4>(a);
  }
}

// Per group of 16 channels: its sums (s8_group_sums), then the 16 requantized together as the
// depthwise lanes are.
void qspmv_groups(const QSpmvGroupArgs& a) {
  const __m512i lo = _mm512_set1_epi32(a.lo), hi = _mm512_set1_epi32(a.hi);
  const int64_t windows = ((a.k + 3) / 4 + 31) / 32;
  const int32_t* slots = a.gslots;
  const uint8_t* quad = a.gquad;
  const int32_t* w = a.gw;
  for (int64_t c0 = 0; c0 < a.m; c0 += 16) {
    const __m512i acc =
        s8_group_sums(a.x, a.k, windows, slots, quad, w, _mm512_loadu_si512(a.bias + c0));
    const int64_t left = a.m - c0;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    if (a.fr) {
      __mmask16 ok = 0xFFFF;
      const __m512i v = rq_float_v(acc, rqf16(*a.fr, c0), &ok);
      if (__builtin_expect(ok == 0xFFFF, 1)) {
        store_s8(a.y + c0, m, _mm512_min_epi32(_mm512_max_epi32(_mm512_srai_epi32(v, 16), lo), hi));
        continue;
      }
    }
    const Rq16 rq = rq16(_mm512_loadu_si512(a.mult + c0), _mm512_loadu_si512(a.shift + c0));
    const __m512i v = _mm512_add_epi32(mbqm(acc, rq), _mm512_set1_epi32(a.zp_out));
    store_s8(a.y + c0, m, _mm512_min_epi32(_mm512_max_epi32(v, lo), hi));
  }
}

namespace {

struct DwLanes {  // one block of 16 channels: its mask and per-channel constants
  __mmask16 m;
  bool fl;  // the float requantization (rf), else the integer steps
  __m512i bias;
  Rq16 rq;
  Rqf16 rf;
};

// The 16 results of one vector as int32 lanes inside [lo, hi]
inline __m512i dw_result(const QDwRowArgs& a, const DwLanes& l, __m512i acc) {
  const __m512i lo = _mm512_set1_epi32(a.lo), hi = _mm512_set1_epi32(a.hi);
  if (l.fl) {
    __mmask16 ok = 0xFFFF;
    const __m512i v = rq_float_v(acc, l.rf, &ok);
    if (__builtin_expect(ok == 0xFFFF, 1))
      return _mm512_min_epi32(_mm512_max_epi32(_mm512_srai_epi32(v, 16), lo), hi);
  }
  const __m512i v = _mm512_add_epi32(mbqm(acc, l.rq), _mm512_set1_epi32(a.zp_out));
  return _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
}

inline void dw_store(const QDwRowArgs& a, const DwLanes& l, __m512i acc, int8_t* y) {
  store_s8(y, l.m, dw_result(a, l, acc));
}

// Four vectors of results at y0, y0 + step, y0 + 2 step, y0 + 3 step: with the float
// requantization and no lane flagged, packed to bytes together and stored as four 16-byte pieces.
inline void dw_store4(const QDwRowArgs& a, const DwLanes& l, const __m512i* acc, int8_t* y0,
                      int64_t step) {
  if (l.fl) {
    __mmask16 ok = 0xFFFF;
    const __m512i v0 = rq_float_v(acc[0], l.rf, &ok), v1 = rq_float_v(acc[1], l.rf, &ok);
    const __m512i v2 = rq_float_v(acc[2], l.rf, &ok), v3 = rq_float_v(acc[3], l.rf, &ok);
    if (__builtin_expect(ok == 0xFFFF, 1)) {
      const __m512i bytes = _mm512_min_epi8(
          _mm512_max_epi8(high_bytes(v0, v1, v2, v3), _mm512_set1_epi8(int8_t(a.lo))),
          _mm512_set1_epi8(int8_t(a.hi)));
      _mm_mask_storeu_epi8(y0, l.m, _mm512_castsi512_si128(bytes));
      _mm_mask_storeu_epi8(y0 + step, l.m, _mm512_extracti32x4_epi32(bytes, 1));
      _mm_mask_storeu_epi8(y0 + 2 * step, l.m, _mm512_extracti32x4_epi32(bytes, 2));
      _mm_mask_storeu_epi8(y0 + 3 * step, l.m, _mm512_extracti32x4_epi32(bytes, 3));
      return;
    }
  }
  for (int p = 0; p < 4; ++p) dw_store(a, l, acc[p], y0 + p * step);
}

// 16 int8 as int32 lanes; a whole block of 16 channels (FULL) loads without a mask, which lets
// the load fold into the sign extension
template <bool FULL>
inline __m512i load_s8x16(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi8_epi32(FULL ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                   : _mm_maskz_loadu_epi8(m, p));
}

// (x - zp) * w + acc: |x - zp| <= 255 fits the low int16 half and the weight's high half is 0,
// so the pair multiply-add is the exact 32-bit product (one uop, unlike vpmulld)
inline __m512i dw_tap(__m512i acc, const int8_t* x, __mmask16 m, __m512i zin, __m512i w) {
  const __m512i xv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, x));
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_sub_epi32(xv, zin), w));
}

// The same tap walk as the fp32 dw_pixel_channels in vec_impl.h on purpose: int8 accumulates in
// int32 lanes with zero points and requantizes, so the loop bodies share nothing but the bounds.
// Pixels whose taps may leave the input check every tap.
inline void dw_pixel_checked(const QDwRowArgs& a, const DwLanes& l, int64_t c0, int64_t ox) {
  const __m512i zin = _mm512_set1_epi32(a.zp_in);
  __m512i acc = l.bias;
  for (int64_t ky = 0; ky < a.kh; ++ky) {
    const int64_t iy = a.oy * a.sh - a.pt + ky * a.dh;
    if (iy < 0 || iy >= a.h) continue;
    for (int64_t kx = 0; kx < a.kw; ++kx) {
      const int64_t ix = ox * a.sw - a.pl + kx * a.dw;
      if (ix < 0 || ix >= a.w) continue;
      const __m512i wv = _mm512_maskz_loadu_epi32(l.m, a.wt + (ky * a.kw + kx) * a.c + c0);
      acc = dw_tap(acc, a.x + (iy * a.w + ix) * a.c + c0, l.m, zin, wv);
    }
  }
  dw_store(a, l, acc, a.y + ox * a.c + c0);
}

// Pixels [x0, x1) of rows [oy, oy + rows) whose taps all lie inside the row range: no column
// checks, and with the kernel size known at compile time (KH > 0) the weights stay in registers
// across the pixels and rows. Every tap of the row's valid kernel rows is inside, so the zero
// point's share, zp * sum(w), comes off the bias once per row pattern and each tap is x * w: with
// VNNI one vpdpwssd (the high int16 half of the weight lane is 0, so the pair sum is the single
// product).
template <int KH, int KW, bool VNNI, bool FULL>
void dw_interior(const QDwRowArgs& a, const DwLanes& lanes, int64_t c0, int64_t x0, int64_t x1) {
  // A copy whose address never escapes: through the reference, the compiler would reload the
  // mask and constants after every int8 store (a byte store may alias them).
  const DwLanes l = lanes;
  const int64_t kh = KH > 0 ? KH : a.kh, kw = KH > 0 ? KW : a.kw;
  const __m512i zin = _mm512_set1_epi32(a.zp_in);
  __m512i w[KH > 0 ? KH * KW : 1];
  if (KH > 0)
    for (int t = 0; t < KH * KW; ++t) w[t] = _mm512_maskz_loadu_epi32(l.m, a.wt + t * a.c + c0);
  auto weight = [&](int64_t ky, int64_t kx) {
    return KH > 0 ? w[ky * kw + kx]
                  : _mm512_maskz_loadu_epi32(l.m, a.wt + (ky * kw + kx) * a.c + c0);
  };
  // Fields of `a` are copied to locals first: the int8 output stores may alias anything, and the
  // compiler would reload them after every store.
  const int64_t c = a.c, step = a.sw * c, tap = a.dw * c, oy0 = a.oy, oy1 = a.oy + a.rows;
  const int64_t sh = a.sh, pt = a.pt, dh = a.dh, h = a.h, wc = a.w * c, yrow = a.ow * c;
  const int64_t sw = a.sw, pl = a.pl;
  const int8_t* const x = a.x;
  int8_t* const y0 = a.y;
  const __mmask16 m = l.m;
  // the bias less the zero point's share of the kernel rows inside: all of them (most rows), or
  // those of one row near the top or bottom
  const auto bias_of = [&](auto inside) {
    __m512i b = l.bias;
    for (int64_t ky = 0; ky < kh; ++ky)
      if (inside(ky))
        for (int64_t kx = 0; kx < kw; ++kx)
          b = _mm512_sub_epi32(b, _mm512_madd_epi16(zin, weight(ky, kx)));
    return b;
  };
  const __m512i bias_all = bias_of([](int64_t) { return true; });
  auto tap_in = [&](const int8_t* p) { return load_s8x16<FULL>(p, m); };
  auto madd = [&](__m512i acc, __m512i xv, __m512i wv) {
    return VNNI ? _mm512_dpwssd_epi32(acc, xv, wv)
                : _mm512_add_epi32(acc, _mm512_madd_epi16(xv, wv));
  };
  constexpr int P = 4;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    int8_t* const y = y0 + (oy - oy0) * yrow;
    // The valid kernel rows once (row offsets from the pixel's column), then P pixels at a
    // time: P independent accumulator chains, each tap's weight loaded once for all of them.
    const auto inside = [&](int64_t ky) {
      const int64_t iy = oy * sh - pt + ky * dh;
      return iy >= 0 && iy < h;
    };
    int64_t rows[KH > 0 ? KH : 16];
    int64_t nrows = 0;
    bool every = true;
    for (int64_t ky = 0; ky < kh; ++ky) {
      every = every && inside(ky);
      if (ky < 16 && inside(ky)) rows[nrows++] = ky;
    }
    const __m512i bias = every ? bias_all : bias_of(inside);
    auto row_base = [&](int64_t ky) { return (oy * sh - pt + ky * dh) * wc; };
    int64_t ox = x0;
    // Rows with every kernel row inside, dilation 1 and stride 1 or 2 (nearly every depthwise
    // layer): the kernel rows, columns and pixels unrolled, so the weights stay in registers and
    // every tap's address is a row pointer plus a multiple of c.
    if constexpr (KH > 0) {
      const auto lean = [&](auto stride) {
        constexpr int64_t S = decltype(stride)::value;
        for (; ox + P <= x1; ox += P) {
          __m512i acc[P];
          for (int p = 0; p < P; ++p) acc[p] = bias;
          const int8_t* r = x + (oy * sh - pt) * wc + (ox * S - pl) * c + c0;
#pragma GCC unroll 5
          for (int ky = 0; ky < KH; ++ky, r += wc)
#pragma GCC unroll 5
            for (int kx = 0; kx < KW; ++kx)
#pragma GCC unroll 4
              for (int p = 0; p < P; ++p)
                acc[p] = madd(acc[p], tap_in(r + (S * p + kx) * c), w[ky * KW + kx]);
          dw_store4(a, l, acc, y + ox * c + c0, c);
        }
      };
      if (every && dh == 1 && tap == c && sw == 1) lean(std::integral_constant<int64_t, 1>());
      if (every && dh == 1 && tap == c && sw == 2) lean(std::integral_constant<int64_t, 2>());
    }
    if (kh <= 16) {
      for (; ox + P <= x1; ox += P) {
        __m512i acc[P];
        for (int p = 0; p < P; ++p) acc[p] = bias;
        const int8_t* base = x + (ox * sw - pl) * c + c0;
        for (int64_t r = 0; r < nrows; ++r) {
          const int64_t ky = rows[r];
          const int8_t* row = base + row_base(ky);
          for (int64_t kx = 0; kx < kw; ++kx) {
            const __m512i wv = weight(ky, kx);
            for (int p = 0; p < P; ++p)
              acc[p] = madd(acc[p], tap_in(row + p * step + kx * tap), wv);
          }
        }
        static_assert(P == 4, "dw_store4 stores four pixels");
        dw_store4(a, l, acc, y + ox * c + c0, c);
      }
    }
    for (; ox < x1; ++ox) {
      __m512i acc = bias;
      const int8_t* base = x + (ox * sw - pl) * c + c0;
      for (int64_t ky = 0; ky < kh; ++ky) {
        const int64_t iy = oy * sh - pt + ky * dh;
        if (iy < 0 || iy >= h) continue;
        const int8_t* row = base + iy * wc;
        for (int64_t kx = 0; kx < kw; ++kx) acc = madd(acc, tap_in(row + kx * tap), weight(ky, kx));
      }
      dw_store(a, l, acc, y + ox * c + c0);
    }
  }
}

// The edge columns [0, x0) and [x1, ow) of rows [oy, oy + rows) of a KH x KW kernel, with its
// weights in registers: a tap left or right of the input takes the zero point as its value, so
// zp * w cancels that tap's share of the bias correction (TFLite's padding, an offset-free zero).
// A function of its own, so the interior loop keeps its registers.
template <int KH, int KW, bool VNNI, bool FULL>
__attribute__((noinline)) void dw_edges(const QDwRowArgs& a, const DwLanes& lanes, int64_t c0,
                                        int64_t x0, int64_t x1) {
  const DwLanes l = lanes;  // as in dw_interior
  const __mmask16 m = l.m;
  const __m512i zin = _mm512_set1_epi32(a.zp_in);
  const int64_t c = a.c;
  __m512i w[KH * KW];
  for (int t = 0; t < KH * KW; ++t) w[t] = _mm512_maskz_loadu_epi32(m, a.wt + t * c + c0);
  for (int64_t oy = a.oy; oy < a.oy + a.rows; ++oy) {
    int8_t* const y = a.y + (oy - a.oy) * a.ow * c;
    bool valid[KH];
    __m512i bias = l.bias;
    for (int ky = 0; ky < KH; ++ky) {
      const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
      valid[ky] = iy >= 0 && iy < a.h;
      if (valid[ky])
        for (int kx = 0; kx < KW; ++kx)
          bias = _mm512_sub_epi32(bias, _mm512_madd_epi16(zin, w[ky * KW + kx]));
    }
    const auto pixel = [&](int64_t px) {
      __m512i acc = bias;
      const int64_t ix0 = px * a.sw - a.pl;
      for (int ky = 0; ky < KH; ++ky) {
        if (!valid[ky]) continue;
        const int8_t* row = a.x + (oy * a.sh - a.pt + ky * a.dh) * a.w * c + c0;
        for (int kx = 0; kx < KW; ++kx) {
          const int64_t ix = ix0 + kx * a.dw;
          const __m512i xv = ix >= 0 && ix < a.w ? load_s8x16<FULL>(row + ix * c, m) : zin;
          acc = VNNI ? _mm512_dpwssd_epi32(acc, xv, w[ky * KW + kx])
                     : _mm512_add_epi32(acc, _mm512_madd_epi16(xv, w[ky * KW + kx]));
        }
      }
      dw_store(a, l, acc, y + px * c + c0);
    };
    for (int64_t px = 0; px < x0; ++px) pixel(px);
    for (int64_t px = x1; px < a.ow; ++px) pixel(px);
  }
}

// One block of 16 channels of the rows: interior, then edges
template <bool VNNI, bool FULL>
void dw_block(const QDwRowArgs& a, const DwLanes& l, int64_t c0, int64_t x0, int64_t x1) {
  const bool edges = x0 > 0 || x1 < a.ow;
  if (a.kh == 3 && a.kw == 3) {
    dw_interior<3, 3, VNNI, FULL>(a, l, c0, x0, x1);
    if (edges) dw_edges<3, 3, VNNI, FULL>(a, l, c0, x0, x1);
    return;
  }
  if (a.kh == 5 && a.kw == 5) {
    dw_interior<5, 5, VNNI, FULL>(a, l, c0, x0, x1);
    if (edges) dw_edges<5, 5, VNNI, FULL>(a, l, c0, x0, x1);
    return;
  }
  dw_interior<0, 0, VNNI, false>(a, l, c0, x0, x1);
  for (int64_t oy = a.oy; oy < a.oy + a.rows; ++oy) {
    QDwRowArgs row = a;
    row.oy = oy, row.rows = 1, row.y = a.y + (oy - a.oy) * a.ow * a.c;
    for (int64_t ox = 0; ox < x0; ++ox) dw_pixel_checked(row, l, c0, ox);
    for (int64_t ox = x1; ox < a.ow; ++ox) dw_pixel_checked(row, l, c0, ox);
  }
}

}  // namespace

namespace {

// Narrow planes (where the edge columns, each tap checked, cost as much as the interior): the
// band's input rows of one 16-channel block are first copied into `tile`, tw columns of 16 bytes
// per row, with the zero point left, right, above and below the input (TFLite's offset-free
// padding: zp * w cancels that tap's share of the bias correction). Every pixel is then an
// interior one, four at a time, each tap at a fixed offset from the row.
template <int K, bool VNNI>
void dw_tile(const QDwRowArgs& a, const DwLanes& lanes, int64_t c0, int8_t* tile, int64_t tw) {
  const DwLanes l = lanes;  // as in dw_interior
  const int64_t rows_in = a.rows + K - 1, c = a.c, ow = a.ow;
  const __m128i zin8 = _mm_set1_epi8(int8_t(a.zp_in));
  for (int64_t r = 0; r < rows_in; ++r) {
    const int64_t iy = a.oy - a.pt + r;
    int8_t* t = tile + r * tw * 16;
    const bool row_in = iy >= 0 && iy < a.h;
    for (int64_t col = 0; col < tw; ++col) {
      const int64_t ix = col - a.pl;
      const __m128i v = row_in && ix >= 0 && ix < a.w
                            ? _mm_maskz_loadu_epi8(l.m, a.x + (iy * a.w + ix) * c + c0)
                            : zin8;
      _mm_store_si128(reinterpret_cast<__m128i*>(t + col * 16), v);
    }
  }
  const __m512i zin = _mm512_set1_epi32(a.zp_in);
  __m512i w[K * K];
  __m512i bias = l.bias;
  for (int t = 0; t < K * K; ++t) {
    w[t] = _mm512_maskz_loadu_epi32(l.m, a.wt + t * c + c0);
    bias = _mm512_sub_epi32(bias, _mm512_madd_epi16(zin, w[t]));
  }
  const auto tap = [&](const int8_t* p) {
    return _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
  };
  for (int64_t oy = 0; oy < a.rows; ++oy) {
    const int8_t* const row = tile + oy * tw * 16;
    int8_t* const y = a.y + oy * ow * c + c0;
    for (int64_t ox = 0; ox < ow; ox += 4) {
      __m512i acc[4] = {bias, bias, bias, bias};
      const int8_t* r = row + ox * 16;
#pragma GCC unroll 5
      for (int ky = 0; ky < K; ++ky, r += tw * 16)
#pragma GCC unroll 5
        for (int kx = 0; kx < K; ++kx)
#pragma GCC unroll 4
          for (int p = 0; p < 4; ++p) {
            const __m512i xv = tap(r + (p + kx) * 16);
            acc[p] = VNNI ? _mm512_dpwssd_epi32(acc[p], xv, w[ky * K + kx])
                          : _mm512_add_epi32(acc[p], _mm512_madd_epi16(xv, w[ky * K + kx]));
          }
      if (ox + 4 <= ow) {
        dw_store4(a, l, acc, y + ox * c, c);
      } else {
        for (int64_t p = 0; p < ow - ox; ++p) dw_store(a, l, acc[p], y + (ox + p) * c);
      }
    }
  }
}

// The tile's width in 16-byte columns for dw_tile, or 0 where the layer does not take that path:
// a 3x3 or 5x5 kernel, stride 1, no dilation, output rows of at most 8 (3x3) or 32 (5x5) pixels,
// and the band's tile within kTileBytes. For 3x3 at 14 pixels the copy already cost more than the
// two edge pixels (22.6 -> 26.5 us, 576 channels), and at stride 2 more than the edges of a 7x7
// output (9.4 -> 12.8 us); a 7x7 output went from 14.1 to 11.7 us (960 channels). A 5x5 kernel
// has twice the edge columns: 672 channels at 14x14 103 -> 65 us, 240 at 28x28 95 -> 81.
constexpr int64_t kTileBytes = 16384;
int64_t tile_width(const QDwRowArgs& a) {
  if (a.kh != a.kw || (a.kh != 3 && a.kh != 5) || a.sh != 1 || a.sw != 1 || a.dh != 1 ||
      a.dw != 1 || a.ow > (a.kh == 5 ? 32 : 8))
    return 0;
  const int64_t tw = (a.ow + 3) / 4 * 4 - 1 + a.kw;
  const int64_t rows_in = a.rows + a.kh - 1;
  return rows_in * tw * 16 <= kTileBytes ? tw : 0;
}

}  // namespace

void qdw_rows(const QDwRowArgs& a) {
  // output columns whose taps ox * sw - pl + kx * dw all lie in [0, w)
  const int64_t reach = a.w - 1 + a.pl - (a.kw - 1) * a.dw;
  const int64_t x0 = std::min(a.ow, (a.pl + a.sw - 1) / a.sw);
  const int64_t x1 = std::max(x0, std::min(a.ow, reach < 0 ? 0 : reach / a.sw + 1));
  const int64_t tw = tile_width(a);
  alignas(64) int8_t tile[kTileBytes];
  for (int64_t c0 = 0; c0 < a.c; c0 += 16) {
    const int64_t left = a.c - c0;
    DwLanes l;
    l.m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    l.bias = _mm512_maskz_loadu_epi32(l.m, a.bias + c0);
    l.rq = rq16(_mm512_maskz_loadu_epi32(l.m, a.mult + c0),
                _mm512_maskz_loadu_epi32(l.m, a.shift + c0));
    l.fl = a.fr != nullptr;
    if (l.fl) l.rf = rqf16(*a.fr, c0);
    if (tw > 0) {
      if (a.vnni)
        a.kh == 3 ? dw_tile<3, true>(a, l, c0, tile, tw) : dw_tile<5, true>(a, l, c0, tile, tw);
      else
        a.kh == 3 ? dw_tile<3, false>(a, l, c0, tile, tw) : dw_tile<5, false>(a, l, c0, tile, tw);
      continue;
    }
    const bool full = l.m == 0xFFFF;
    if (a.vnni)
      full ? dw_block<true, true>(a, l, c0, x0, x1) : dw_block<true, false>(a, l, c0, x0, x1);
    else
      full ? dw_block<false, true>(a, l, c0, x0, x1) : dw_block<false, false>(a, l, c0, x0, x1);
  }
}

void qadd(const QAddArgs& a) {
  const __m512i za = _mm512_set1_epi32(a.za), zb = _mm512_set1_epi32(a.zb),
                zy = _mm512_set1_epi32(a.zy), lo = _mm512_set1_epi32(a.lo),
                hi = _mm512_set1_epi32(a.hi);
  const Rq16 r1 = rq16(_mm512_set1_epi32(a.m1), _mm512_set1_epi32(a.s1));
  const Rq16 r2 = rq16(_mm512_set1_epi32(a.m2), _mm512_set1_epi32(a.s2));
  const Rq16 ro = rq16(_mm512_set1_epi32(a.om), _mm512_set1_epi32(a.os));
  for (int64_t i = 0; i < a.n; i += 16) {
    const int64_t left = a.n - i;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const __m512i x1 = _mm512_slli_epi32(
        _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a.a + i)), za), 20);
    const __m512i x2 = _mm512_slli_epi32(
        _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a.b + i)), zb), 20);
    __m512i v = mbqm(_mm512_add_epi32(mbqm(x1, r1), mbqm(x2, r2)), ro);
    v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zy), lo), hi);
    store_s8(a.y + i, m, v);
  }
}

namespace {

// Each byte of x as the int32 entry uint8(x) of a table held as four byte planes: four vectors
// of 16 int32, out[k] lane l (128-bit) = the entries of bytes 16 l + 4 k .. 16 l + 4 k + 3
// (the order unpacking the planes gives)
__attribute__((target("avx512vbmi"))) inline void plane_lookup(__m512i x, const uint8_t* planes,
                                                               __m512i* out) {
  const __mmask64 negative = _mm512_movepi8_mask(x);  // entries 128..255
  __m512i p[4];
  for (int k = 0; k < 4; ++k) {
    const uint8_t* t = planes + 256 * k;
    const __m512i low =
        _mm512_permutex2var_epi8(_mm512_loadu_si512(t), x, _mm512_loadu_si512(t + 64));
    const __m512i high =
        _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), x, _mm512_loadu_si512(t + 192));
    p[k] = _mm512_mask_blend_epi8(negative, low, high);
  }
  const __m512i w01lo = _mm512_unpacklo_epi8(p[0], p[1]), w01hi = _mm512_unpackhi_epi8(p[0], p[1]);
  const __m512i w23lo = _mm512_unpacklo_epi8(p[2], p[3]), w23hi = _mm512_unpackhi_epi8(p[2], p[3]);
  out[0] = _mm512_unpacklo_epi16(w01lo, w23lo);
  out[1] = _mm512_unpackhi_epi16(w01lo, w23lo);
  out[2] = _mm512_unpacklo_epi16(w01hi, w23hi);
  out[3] = _mm512_unpackhi_epi16(w01hi, w23hi);
}

}  // namespace

__attribute__((target("avx512vbmi"))) void qadd_tables(const QAddArgs& a) {
  const Rqf16 f{_mm512_set1_ps(a.fo[0]), _mm512_set1_ps(a.fo[1]), _mm512_set1_ps(a.fo[2])};
  const Rq16 ro = rq16(_mm512_set1_epi32(a.om), _mm512_set1_epi32(a.os));
  const __m512i zy = _mm512_set1_epi32(a.zy), lo = _mm512_set1_epi8(int8_t(a.lo)),
                hi = _mm512_set1_epi8(int8_t(a.hi));
  const __m512i int16_min = _mm512_set1_epi32(-32768), int16_max = _mm512_set1_epi32(32767);
  // high_bytes puts out[k] lane l's elements 16 l + 4 k + t at byte 16 k + 4 l + t; byte e of
  // `back` names where element e went
  static const struct Order {
    alignas(64) uint8_t at[64];
    Order() {
      for (int e = 0; e < 64; ++e) at[e] = uint8_t(16 * ((e % 16) / 4) + 4 * (e / 16) + e % 4);
    }
  } order;
  const __m512i back = _mm512_load_si512(order.at);
  for (int64_t i = 0; i < a.n; i += 64) {
    const int64_t left = a.n - i;
    const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    __m512i fa[4], fb[4], v[4];
    plane_lookup(_mm512_maskz_loadu_epi8(m, a.a + i), a.ta, fa);
    plane_lookup(_mm512_maskz_loadu_epi8(m, a.b + i), a.tb, fb);
    __mmask16 ok = 0xFFFF;
    for (int k = 0; k < 4; ++k) v[k] = rq_float_v(_mm512_add_epi32(fa[k], fb[k]), f, &ok);
    if (__builtin_expect(ok != 0xFFFF, 0))
      for (int k = 0; k < 4; ++k) {  // the integer steps, put in V's high half
        const __m512i q = _mm512_add_epi32(mbqm(_mm512_add_epi32(fa[k], fb[k]), ro), zy);
        v[k] = _mm512_or_si512(
            _mm512_slli_epi32(_mm512_min_epi32(_mm512_max_epi32(q, int16_min), int16_max), 16),
            _mm512_set1_epi32(0x8000));
      }
    const __m512i bytes = _mm512_permutexvar_epi8(back, high_bytes(v[0], v[1], v[2], v[3]));
    _mm512_mask_storeu_epi8(a.y + i, m, _mm512_min_epi8(_mm512_max_epi8(bytes, lo), hi));
  }
}

void im2col_pixels_s8(const int8_t* x, int64_t row_bytes, int64_t kh, int64_t len, int64_t step,
                      int64_t n, int8_t* dst, int64_t ldc) {
  const __mmask64 m = (len >= 64 ? ~__mmask64(0) : (__mmask64(1) << len) - 1);
  for (int64_t p = 0; p < n; ++p, x += step, dst += ldc) {
    const uint32_t zero = 0;
    __builtin_memcpy(dst + ldc - 4, &zero, 4);
    for (int64_t ky = 0; ky < kh; ++ky)
      _mm512_mask_storeu_epi8(dst + ky * len, m, _mm512_maskz_loadu_epi8(m, x + ky * row_bytes));
  }
}

void column_sums_s8(const int8_t* x, int64_t n, int64_t cols, int32_t* out) {
  for (int64_t j = 0; j < cols; j += 64) {
    const int64_t left = cols - j;
    const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    __m512i total[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};
    for (int64_t r0 = 0; r0 < n; r0 += 256) {  // 256 values of |x| <= 128 fit int16
      __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
      const int64_t r1 = std::min(n, r0 + 256);
      for (int64_t r = r0; r < r1; ++r) {
        const __m512i v = _mm512_maskz_loadu_epi8(m, x + r * cols + j);
        lo = _mm512_add_epi16(lo, _mm512_cvtepi8_epi16(_mm512_castsi512_si256(v)));
        hi = _mm512_add_epi16(hi, _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(v, 1)));
      }
      total[0] = _mm512_add_epi32(total[0], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(lo)));
      total[1] =
          _mm512_add_epi32(total[1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(lo, 1)));
      total[2] = _mm512_add_epi32(total[2], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(hi)));
      total[3] =
          _mm512_add_epi32(total[3], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(hi, 1)));
    }
    for (int k = 0; k < 4; ++k) {
      const int64_t c = left - 16 * k;
      if (c <= 0) break;
      _mm512_mask_storeu_epi32(out + j + 16 * k,
                               c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << c) - 1), total[k]);
    }
  }
}

void pack_kn_vnni(const int8_t* b, int64_t k, int64_t n, int64_t kp, int8_t* out,
                  int32_t* col_sums) {
  const int64_t groups = kp / 4;
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t cols = std::min<int64_t>(16, n - j0);
    const __mmask16 m = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
    int8_t* const blk = out + j0 / 16 * groups * 64;
    __m512i sum = _mm512_setzero_si512();
    for (int64_t q = 0; q < groups; ++q) {
      __m128i r[4];
      for (int t = 0; t < 4; ++t) {
        const int64_t kk = 4 * q + t;
        r[t] = kk < k ? _mm_maskz_loadu_epi8(m, b + kk * n + j0) : _mm_setzero_si128();
      }
      // dword j of the block = B[4q .. 4q + 3, j0 + j]: bytes of rows 0|1 and 2|3 interleaved,
      // then their byte pairs
      const __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
      const __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
      __m512i v = _mm512_castsi128_si512(_mm_unpacklo_epi16(lo01, lo23));
      v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(lo01, lo23), 1);
      v = _mm512_inserti32x4(v, _mm_unpacklo_epi16(hi01, hi23), 2);
      v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(hi01, hi23), 3);
      _mm512_storeu_si512(blk + q * 64, v);
      sum = dpbusd(sum, ones, v);  // 1 * each signed byte: the four values' sum per column
    }
    _mm512_mask_storeu_epi32(col_sums + j0, m, sum);
  }
}

void row_sums_u8(const int8_t* x, int64_t rows, int64_t k, int64_t ld, int32_t* out) {
  const __m512i sign = _mm512_set1_epi8(int8_t(0x80)), zero = _mm512_setzero_si512();
  const int64_t tail = k % 64;
  const __mmask64 mt = tail ? (__mmask64(1) << tail) - 1 : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* xr = x + r * ld;
    __m512i acc = zero;  // sums of eight bytes per 64-bit lane
    int64_t kk = 0;
    for (; kk + 64 <= k; kk += 64)
      acc = _mm512_add_epi64(
          acc, _mm512_sad_epu8(_mm512_xor_si512(_mm512_loadu_si512(xr + kk), sign), zero));
    if (tail) {
      const __m512i v =
          _mm512_maskz_mov_epi8(mt, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mt, xr + kk), sign));
      acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, zero));
    }
    out[r] = int32_t(_mm512_reduce_add_epi64(acc));
  }
}

namespace {

// QUANTIZE's float -> int8 steps on 16 lanes (TFLite's AffineQuantize, as QQuantize's portable
// loop): x / scale, NaN to 0, clamped to +-1e9, rounded half away from zero by truncation and
// the fraction, plus the zero point, saturated to int8 (the int32 lanes, for store_s8)
struct Quantize16 {
  __m512 s, big = _mm512_set1_ps(1e9f), nbig = _mm512_set1_ps(-1e9f);
  __m512 half = _mm512_set1_ps(0.5f), nhalf = _mm512_set1_ps(-0.5f);
  __m512i one = _mm512_set1_epi32(1), zp, lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
  Quantize16(float scale, int32_t zout) : s(_mm512_set1_ps(scale)), zp(_mm512_set1_epi32(zout)) {}
  __m512i operator()(__m512 x) const {
    __m512 v = _mm512_div_ps(x, s);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
    v = _mm512_min_ps(_mm512_max_ps(v, nbig), big);
    __m512i t = _mm512_cvttps_epi32(v);
    const __m512 frac = _mm512_sub_ps(v, _mm512_cvtepi32_ps(t));
    t = _mm512_mask_add_epi32(t, _mm512_cmp_ps_mask(frac, half, _CMP_GE_OQ), t, one);
    t = _mm512_mask_sub_epi32(t, _mm512_cmp_ps_mask(frac, nhalf, _CMP_LE_OQ), t, one);
    return _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(t, zp), lo), hi);
  }
};

// R rows of the fused softmax at once: each row's maximum and sum is one chain of dependent
// operations in j order (the order softmax_row uses), so R rows interleaved keep R chains in
// flight instead of waiting on one (a row of 128 values is 8 vectors, too few to hide a chain).
template <int R>
void softmax_rows_block(const QSoftmaxRowsArgs& a, int64_t r0) {
  const int64_t n = a.n, full = n / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (n - full)) - 1);
  const __m512 s_in = _mm512_set1_ps(a.s_in), scale = _mm512_set1_ps(a.scale);
  const __m512 beta = _mm512_set1_ps(a.beta);
  const __m512i z_in = _mm512_set1_epi32(a.z_in);
  const int8_t* x[R];
  const float* b[R];
  float* buf[R];
  __m512 mx[R], m[R], sum[R], inv[R];
#pragma GCC unroll 4
  for (int k = 0; k < R; ++k) {
    x[k] = a.x + (r0 + k) * n;
    b[k] = a.bias ? a.bias + a.bias_off[r0 + k] : nullptr;
    buf[k] = a.buf + k * n;
    mx[k] = _mm512_set1_ps(-__builtin_inff());
    sum[k] = _mm512_setzero_ps();
  }
  // DEQUANTIZE, MUL, ADD
  const auto scores = [&](int k, int64_t j, __mmask16 mk) {
    const __m512i q =
        _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mk, x[k] + j)), z_in);
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), s_in);
    if (a.scaled) v = _mm512_mul_ps(v, scale);
    if (b[k])
      v = _mm512_add_ps(
          v, a.bias_step ? _mm512_maskz_loadu_ps(mk, b[k] + j) : _mm512_set1_ps(b[k][0]));
    return v;
  };
  for (int64_t j = 0; j < full; j += 16)
#pragma GCC unroll 4
    for (int k = 0; k < R; ++k) {
      const __m512 v = scores(k, j, 0xFFFF);
      _mm512_storeu_ps(buf[k] + j, v);
      mx[k] = _mm512_max_ps(mx[k], v);
    }
  if (tail)
#pragma GCC unroll 4
    for (int k = 0; k < R; ++k) {
      const __m512 v = _mm512_maskz_mov_ps(tail, scores(k, full, tail));
      _mm512_mask_storeu_ps(buf[k] + full, tail, v);
      mx[k] = _mm512_mask_max_ps(mx[k], tail, mx[k], v);
    }
    // SOFTMAX as softmax_row: the exponentials and their sum, then the normalisation
#pragma GCC unroll 4
  for (int k = 0; k < R; ++k) m[k] = _mm512_set1_ps(_mm512_reduce_max_ps(mx[k]));
  for (int64_t j = 0; j < full; j += 16)
#pragma GCC unroll 4
    for (int k = 0; k < R; ++k) {
      const __m512 e =
          exp16_normal(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(buf[k] + j), m[k]), beta));
      _mm512_storeu_ps(buf[k] + j, e);
      sum[k] = _mm512_add_ps(sum[k], e);
    }
  if (tail)
#pragma GCC unroll 4
    for (int k = 0; k < R; ++k) {
      const __m512 z = _mm512_sub_ps(_mm512_maskz_loadu_ps(tail, buf[k] + full), m[k]);
      const __m512 e = exp16_normal(_mm512_mul_ps(z, beta));
      _mm512_mask_storeu_ps(buf[k] + full, tail, e);
      sum[k] = _mm512_mask_add_ps(sum[k], tail, sum[k], e);
    }
#pragma GCC unroll 4
  for (int k = 0; k < R; ++k) inv[k] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum[k]));
  // QUANTIZE's steps (quantize_f32) on each probability
  const Quantize16 quantize(a.s_out, a.z_out);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 mk = j < full ? __mmask16(0xFFFF) : tail;
#pragma GCC unroll 4
    for (int k = 0; k < R; ++k) {
      const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, buf[k] + j), inv[k]);
      store_s8(a.y + (r0 + k) * n + j, mk, quantize(p));
    }
  }
}

}  // namespace

void softmax_rows_s8(const QSoftmaxRowsArgs& a) {
  int64_t r = 0;
  for (; r + 4 <= a.rows; r += 4) softmax_rows_block<4>(a, r);
  for (; r < a.rows; ++r) softmax_rows_block<1>(a, r);
}

void max_pool_row_s8(const int8_t* x, int64_t h, int64_t w, int64_t c, int64_t fh, int64_t fw,
                     int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t oy, int64_t ow,
                     int8_t lo, int8_t hi, int8_t* y) {
  const int64_t y0 = oy * sh - pt;
  const int64_t ky0 = std::max<int64_t>(0, -y0), ky1 = std::min(fh, h - y0);
  const __m512i vlo = _mm512_set1_epi8(lo), vhi = _mm512_set1_epi8(hi);
  for (int64_t ox = 0; ox < ow; ++ox) {
    const int64_t x0 = ox * sw - pl;
    const int64_t kx0 = std::max<int64_t>(0, -x0), kx1 = std::min(fw, w - x0);
    for (int64_t c0 = 0; c0 < c; c0 += 64) {
      const int64_t left = c - c0;
      const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
      __m512i v = _mm512_set1_epi8(-128);
      for (int64_t ky = ky0; ky < ky1; ++ky)
        for (int64_t kx = kx0; kx < kx1; ++kx)
          v = _mm512_max_epi8(v,
                              _mm512_maskz_loadu_epi8(m, x + ((y0 + ky) * w + x0 + kx) * c + c0));
      _mm512_mask_storeu_epi8(y + ox * c + c0, m, _mm512_min_epi8(_mm512_max_epi8(v, vlo), vhi));
    }
  }
}

void qmul(const QAddArgs& a) {
  const __m512i za = _mm512_set1_epi32(a.za), zb = _mm512_set1_epi32(a.zb),
                zy = _mm512_set1_epi32(a.zy), lo = _mm512_set1_epi32(a.lo),
                hi = _mm512_set1_epi32(a.hi);
  const Rq16 ro = rq16(_mm512_set1_epi32(a.om), _mm512_set1_epi32(a.os));
  // |x1 x2| <= 255 * 255: the 32-bit product is exact
  const auto product = [&](const int8_t* pa, const int8_t* pb, __mmask16 m) {
    const __m512i x1 = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, pa)), za);
    const __m512i x2 = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, pb)), zb);
    return _mm512_mullo_epi32(x1, x2);
  };
  int64_t i = 0;
  if (a.fo) {  // 64 values at a time in the float form, a flagged group with the integer steps
    const Rqf16 f{_mm512_set1_ps(a.fo[0]), _mm512_set1_ps(a.fo[1]), _mm512_set1_ps(a.fo[2])};
    const __m512i lo8 = _mm512_set1_epi8(int8_t(a.lo)), hi8 = _mm512_set1_epi8(int8_t(a.hi));
    for (; i + 64 <= a.n; i += 64) {
      __m512i p[4], v[4];
      __mmask16 ok = 0xFFFF;
      for (int k = 0; k < 4; ++k) {
        p[k] = product(a.a + i + 16 * k, a.b + i + 16 * k, __mmask16(0xFFFF));
        v[k] = rq_float_v(p[k], f, &ok);
      }
      if (__builtin_expect(ok != 0xFFFF, 0))
        for (int k = 0; k < 4; ++k) {
          const __m512i q =
              _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(mbqm(p[k], ro), zy), lo), hi);
          v[k] = _mm512_or_si512(_mm512_slli_epi32(q, 16), _mm512_set1_epi32(0x8000));
        }
      const __m512i bytes = high_bytes(v[0], v[1], v[2], v[3]);
      _mm512_storeu_si512(a.y + i, _mm512_min_epi8(_mm512_max_epi8(bytes, lo8), hi8));
    }
  }
  for (; i < a.n; i += 16) {
    const int64_t left = a.n - i;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512i v = mbqm(product(a.a + i, a.b + i, m), ro);
    v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zy), lo), hi);
    store_s8(a.y + i, m, v);
  }
}

__attribute__((target("avx512vbmi"))) void lut_s8_vbmi(const int8_t* x, int64_t n,
                                                       const int8_t* lut, int8_t* y) {
  // the table by uint8 index: entries 0..127 (x >= 0) and 128..255 (x < 0)
  const __m512i t0 = _mm512_loadu_si512(lut), t1 = _mm512_loadu_si512(lut + 64),
                t2 = _mm512_loadu_si512(lut + 128), t3 = _mm512_loadu_si512(lut + 192);
  for (int64_t i = 0; i < n; i += 64) {
    const int64_t left = n - i;
    const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    const __m512i idx = _mm512_maskz_loadu_epi8(m, x + i);
    const __m512i low = _mm512_permutex2var_epi8(t0, idx, t1);
    const __m512i high = _mm512_permutex2var_epi8(t2, idx, t3);
    const __m512i r = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), low, high);
    _mm512_mask_storeu_epi8(y + i, m, r);
  }
}

// x / scale (an IEEE division, as the scalar loop), NaN to 0, clamped to +-1e9, truncated, then
// one step away from zero where the dropped fraction is at least a half: std::round's result
void quantize_f32(const float* x, int64_t n, float scale, int32_t zout, int8_t* y) {
  const Quantize16 quantize(scale, zout);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    store_s8(y + i, m, quantize(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

void dequantize_s8(const int8_t* x, int64_t n, float scale, int32_t zin, float* y) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512i zp = _mm512_set1_epi32(zin);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const __m512i v = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, x + i)), zp);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_cvtepi32_ps(v), s));
  }
}

}  // namespace avx512
}  // namespace rt
}  // namespace ep
