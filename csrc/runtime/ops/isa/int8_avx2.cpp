// AVX2 loops of the int8 operators (ops_int8_isa.h) for x86 without AVX-512 VNNI: the int8
// GEMM of convolutions and FULLY_CONNECTED with both operands widened to int16 and multiplied
// by vpmaddwd (two products summed straight into int32: exact, no vpmaddubsw saturation), then
// TFLite's requantization (Q31 multiplier, double rounding) on 8 lanes, so the bits equal the
// portable loop's.
//
// Consumes: int8 rows and weights packed by pack_gemm_s8 (16-channel panels, k in pairs).
// Produces: int8 rows.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/kernels.h"
#include "runtime/ops/ops_int8.h"
#include "runtime/ops/ops_int8_isa.h"

namespace ep {
namespace rt {
namespace avx2 {

namespace {

constexpr int MR = 6, NR = 16;

// The per-channel constants of mbqm for 8 channels (as the AVX-512 file's Rq16)
struct Rq8 {
  __m256i mult, mult_odd, left, right, mask, half_mask;
};

inline Rq8 rq8(const int32_t* mult, const int32_t* shift) {
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
  const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mult));
  const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shift));
  Rq8 r;
  r.mult = m;
  r.mult_odd = _mm256_srli_epi64(m, 32);
  r.left = _mm256_max_epi32(s, zero);
  r.right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
  r.mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, r.right), one);
  r.half_mask = _mm256_srai_epi32(r.mask, 1);
  return r;
}

// TFLite's MultiplyByQuantizedMultiplier on 8 lanes. The high multiply's nudge then truncation
// equals floor((p + 2^30) / 2^31) for every product p (the AVX-512 file says why); AVX2 has no
// 64-bit arithmetic shift, so each lane takes the high half of (p + 2^30) << 1 instead, which is
// that floor as long as it fits 32 bits (it does: the multiplier is positive, below 2^31).
inline __m256i mbqm(__m256i x, const Rq8& r) {
  x = _mm256_sllv_epi32(x, r.left);
  const __m256i half = _mm256_set1_epi64x(int64_t(1) << 30);
  const __m256i even = _mm256_srli_epi64(
      _mm256_slli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, r.mult), half), 1), 32);
  const __m256i odd = _mm256_slli_epi64(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), r.mult_odd), half), 1);
  const __m256i h = _mm256_blend_epi32(even, odd, 0xAA);
  const __m256i rem = _mm256_and_si256(h, r.mask);
  const __m256i thr = _mm256_add_epi32(r.half_mask, _mm256_srli_epi32(h, 31));
  const __m256i q = _mm256_srav_epi32(h, r.right);
  // rem > thr adds one: the compare gives -1 there
  return _mm256_sub_epi32(q, _mm256_cmpgt_epi32(rem, thr));
}

// R rows x 16 channels: acc[r][h] = sum over k of x[r, k] * W[16 p + 8 h + i, k] per lane i.
// ap holds the rows' int16 pairs interleaved, ap[q * MR + r] = (x[r][2q], x[r][2q + 1]).
template <int R>
inline void tile(const int32_t* ap, const int8_t* bp, int64_t pairs, __m256i (&acc)[MR][2]) {
  __m256i c[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
  for (int64_t q = 0; q < pairs; ++q) {
    const __m256i b0 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bp + q * 32)));
    const __m256i b1 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bp + q * 32 + 16)));
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256i a = _mm256_set1_epi32(ap[q * MR + r]);
      c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(a, b0));
      c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(a, b1));
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) acc[r][0] = c[r][0], acc[r][1] = c[r][1];
}

using TileFn = void (*)(const int32_t*, const int8_t*, int64_t, __m256i (&)[MR][2]);
constexpr TileFn kTile[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

}  // namespace

void qgemm_rows(const QGemmAvx2Args& a) {
  const int64_t pairs = (a.k + 1) / 2, full = a.k / 2;
  int32_t* ap = static_cast<int32_t*>(thread_scratch(3, size_t(pairs) * MR * sizeof(int32_t)));
  const __m256i zp = _mm256_set1_epi32(a.zp_out);
  const __m256i lo = _mm256_set1_epi32(a.lo), hi = _mm256_set1_epi32(a.hi);
  __m256i acc[MR][2];
  // Channels are taken in blocks of at most ~192 KB of packed weights, so a block stays in L2
  // while every row strip streams past it (each strip's pairs are re-made per block: cheap).
  const int64_t panel_bytes = int64_t(NR) * 2 * pairs;
  const int64_t block = std::max<int64_t>(1, 196608 / std::max<int64_t>(panel_bytes, 1)) * NR;
  for (int64_t jb = 0; jb < a.m; jb += block)
    for (int64_t r0 = 0; r0 < a.n; r0 += MR) {
      const int R = int(std::min<int64_t>(MR, a.n - r0));
      for (int r = 0; r < MR; ++r) {
        const int8_t* x = a.x + (r0 + r) * a.ldx;
        if (r >= R) {
          for (int64_t q = 0; q < pairs; ++q) ap[q * MR + r] = 0;
          continue;
        }
        for (int64_t q = 0; q < full; ++q)
          ap[q * MR + r] = int32_t(uint32_t(uint16_t(int16_t(x[2 * q]))) |
                                   (uint32_t(uint16_t(int16_t(x[2 * q + 1]))) << 16));
        if (full < pairs) ap[full * MR + r] = int32_t(uint32_t(uint16_t(int16_t(x[2 * full]))));
      }
      for (int64_t j0 = jb; j0 < std::min(a.m, jb + block); j0 += NR) {
        const int64_t w = std::min<int64_t>(NR, a.m - j0);
        kTile[R](ap, a.wp + j0 * 2 * pairs, pairs, acc);
        const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + j0));
        const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + j0 + 8));
        const Rq8 q0 = rq8(a.mult + j0, a.shift + j0), q1 = rq8(a.mult + j0 + 8, a.shift + j0 + 8);
        for (int r = 0; r < R; ++r) {
          const auto one = [&](__m256i v, __m256i b, const Rq8& q) {
            const __m256i s = _mm256_add_epi32(mbqm(_mm256_add_epi32(v, b), q), zp);
            return _mm256_min_epi32(_mm256_max_epi32(s, lo), hi);
          };
          // both halves are inside [lo, hi] (int8), so the saturating packs change nothing;
          // the qword permute restores channel order after packs_epi32's per-lane interleave
          const __m256i s16 = _mm256_permute4x64_epi64(
              _mm256_packs_epi32(one(acc[r][0], b0, q0), one(acc[r][1], b1, q1)), 0xD8);
          const __m128i bytes =
              _mm_packs_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
          int8_t* y = a.y + (r0 + r) * a.ldy + j0;
          if (w == NR) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(y), bytes);
          } else {
            alignas(16) int8_t tmp[NR];
            _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
            std::memcpy(y, tmp, size_t(w));
          }
        }
      }
    }
}

namespace {

// Elementwise int8 ADD (mul = false) or MUL over n values, the portable loop's arithmetic; the
// last n % 8 values through a zero-padded copy
template <bool Mul>
void binary(const QAddArgs& a) {
  const __m256i za = _mm256_set1_epi32(a.za), zb = _mm256_set1_epi32(a.zb);
  const __m256i zy = _mm256_set1_epi32(a.zy), lo = _mm256_set1_epi32(a.lo),
                hi = _mm256_set1_epi32(a.hi);
  const int32_t m1[8] = {a.m1, a.m1, a.m1, a.m1, a.m1, a.m1, a.m1, a.m1};
  const int32_t s1[8] = {a.s1, a.s1, a.s1, a.s1, a.s1, a.s1, a.s1, a.s1};
  const int32_t m2[8] = {a.m2, a.m2, a.m2, a.m2, a.m2, a.m2, a.m2, a.m2};
  const int32_t s2[8] = {a.s2, a.s2, a.s2, a.s2, a.s2, a.s2, a.s2, a.s2};
  const int32_t om[8] = {a.om, a.om, a.om, a.om, a.om, a.om, a.om, a.om};
  const int32_t os[8] = {a.os, a.os, a.os, a.os, a.os, a.os, a.os, a.os};
  const Rq8 r1 = rq8(m1, s1), r2 = rq8(m2, s2), ro = rq8(om, os);
  const auto eight = [&](const int8_t* pa, const int8_t* pb, int8_t* py) {
    const __m256i x1 = _mm256_sub_epi32(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pa))), za);
    const __m256i x2 = _mm256_sub_epi32(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pb))), zb);
    __m256i v;
    if constexpr (Mul) {  // |x1 x2| <= 255 * 255: the 32-bit product is exact
      v = mbqm(_mm256_mullo_epi32(x1, x2), ro);
    } else {
      v = mbqm(_mm256_add_epi32(mbqm(_mm256_slli_epi32(x1, 20), r1),
                                mbqm(_mm256_slli_epi32(x2, 20), r2)),
               ro);
    }
    v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, zy), lo), hi);
    const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(py), _mm_packs_epi16(s16, s16));
  };
  int64_t i = 0;
  for (; i + 8 <= a.n; i += 8) eight(a.a + i, a.b + i, a.y + i);
  if (i < a.n) {
    int8_t ta[8] = {0}, tb[8] = {0}, ty[8];
    std::memcpy(ta, a.a + i, size_t(a.n - i));
    std::memcpy(tb, a.b + i, size_t(a.n - i));
    eight(ta, tb, ty);
    std::memcpy(a.y + i, ty, size_t(a.n - i));
  }
}

}  // namespace

void qadd(const QAddArgs& a) { binary<false>(a); }
void qmul(const QAddArgs& a) { binary<true>(a); }

namespace {

// f(x offset, weight offset) of each tap of output pixel (oy, ox) that lies inside the input, in
// kernel row-major order (the offsets of channel 0; taps outside add nothing, as TFLite skips them)
template <class F>
inline void each_tap(const QDwRowArgs& a, int64_t oy, int64_t ox, F&& f) {
  for (int64_t ky = 0; ky < a.kh; ++ky) {
    const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
    if (iy < 0 || iy >= a.h) continue;
    for (int64_t kx = 0; kx < a.kw; ++kx) {
      const int64_t ix = ox * a.sw - a.pl + kx * a.dw;
      if (ix < 0 || ix >= a.w) continue;
      f((iy * a.w + ix) * a.c, (ky * a.kw + kx) * a.c);
    }
  }
}

}  // namespace

void qdw_rows(const QDwRowArgs& a) {
  const __m256i zin = _mm256_set1_epi32(a.zp_in), zp = _mm256_set1_epi32(a.zp_out);
  const __m256i lo = _mm256_set1_epi32(a.lo), hi = _mm256_set1_epi32(a.hi);
  const int64_t c = a.c, full = c / 8 * 8;
  for (int64_t i = 0; i < a.rows; ++i) {
    const int64_t oy = a.oy + i;
    int8_t* yr = a.y + i * a.ow * c;
    for (int64_t ox = 0; ox < a.ow; ++ox) {
      int8_t* yp = yr + ox * c;
      for (int64_t c0 = 0; c0 < full; c0 += 8) {
        // (x - zp_in) fits int16 and each weight sits in the low half of its lane with 0 above,
        // so vpmaddwd gives the exact product per lane
        __m256i acc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + c0));
        each_tap(a, oy, ox, [&](int64_t xi, int64_t wi) {
          const __m128i xb = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.x + xi + c0));
          const __m256i xv = _mm256_sub_epi32(_mm256_cvtepi8_epi32(xb), zin);
          const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.wt + wi + c0));
          acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
        });
        const Rq8 q = rq8(a.mult + c0, a.shift + c0);
        const __m256i v =
            _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(mbqm(acc, q), zp), lo), hi);
        const __m128i s16 =
            _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(yp + c0), _mm_packs_epi16(s16, s16));
      }
      for (int64_t ch = full; ch < c; ++ch) {  // the last c % 8 channels, as the portable loop
        int32_t s = a.bias[ch];
        each_tap(a, oy, ox, [&](int64_t xi, int64_t wi) {
          s += (int32_t(a.x[xi + ch]) - a.zp_in) * int32_t(int16_t(a.wt[wi + ch]));
        });
        const int32_t v = multiply_by_quantized_multiplier(s, a.mult[ch], a.shift[ch]) + a.zp_out;
        yp[ch] = int8_t(std::min(a.hi, std::max(a.lo, v)));
      }
    }
  }
}

}  // namespace avx2
}  // namespace rt
}  // namespace ep
