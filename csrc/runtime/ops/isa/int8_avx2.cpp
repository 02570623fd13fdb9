// AVX2 loops of the int8 operators (ops_int8_isa.h) for x86 without AVX-512 VNNI: the int8
// GEMM of convolutions and FULLY_CONNECTED with both operands widened to int16 and multiplied
// by vpmaddwd (two products summed straight into int32: exact, no vpmaddubsw saturation), then
// TFLite's requantization (Q31 multiplier, double rounding) on 8 lanes, so the bits equal the
// portable loop's. Where every channel's requantization has the float form (FloatRequant in
// ops_int8_isa.h) one fused multiply-add per 8 values replaces the integer steps, which take
// over for a vector only when one of its lanes lands near a rounding boundary.
//
// Consumes: int8 rows and weights packed by pack_gemm_s8 (16-channel panels, k in pairs); int8
// NHWC images and depthwise weights; float or int8 values for QUANTIZE / DEQUANTIZE.
// Produces: int8 rows, images and values; float values (DEQUANTIZE).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/kernels.h"
#include "runtime/ops/ops_int8.h"
#include "runtime/ops/ops_int8_isa.h"

namespace ep {
namespace rt {
namespace avx2 {

namespace {

// MR rows of the int8 GEMM's tile, NR channels; AP slots per pair in its interleaved rows (MR
// rounded up to 8, so eight rows are widened and transposed at once)
constexpr int MR = 6, NR = 16, AP = 8;

// The per-channel constants of mbqm for 8 channels (as the AVX-512 file's Rq16)
struct Rq8 {
  __m256i mult, mult_odd, left, right, mask, half_mask;
};

inline Rq8 rq8(__m256i m, __m256i s) {
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
  Rq8 r;
  r.mult = m;
  r.mult_odd = _mm256_srli_epi64(m, 32);
  r.left = _mm256_max_epi32(s, zero);
  r.right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
  r.mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, r.right), one);
  r.half_mask = _mm256_srai_epi32(r.mask, 1);
  return r;
}
inline Rq8 rq8(const int32_t* mult, const int32_t* shift) {
  return rq8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mult)),
             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shift)));
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

// The float form of the requantization for 8 channels (FloatRequant's scale, pos, neg)
struct Rqf8 {
  __m256 scale, pos, neg;
};
inline Rqf8 rqf8(const FloatRequant& fr, int64_t c0) {
  return Rqf8{_mm256_loadu_ps(fr.scale + c0), _mm256_loadu_ps(fr.pos + c0),
              _mm256_loadu_ps(fr.neg + c0)};
}
// V = round(float(x) * scale + (pos or neg by x's sign)) for 8 sums. A lane whose V mod 65536 is
// below 16 (near a rounding boundary, or V out of int32 range: the conversion gives 0x80000000)
// is flagged: *flag, started at no_flags(), keeps the lanes' least V & 0xFFF0 (one min a vector,
// where a compare and an or took two), so a flagged lane leaves a 0. The result is V's high half,
// arithmetic-shifted.
inline __m256i no_flags() { return _mm256_set1_epi32(-1); }
inline __m256i rq_float8(__m256i x, const Rqf8& f, __m256i* flag) {
  // blendv takes neg where the sign bit of x, read as a float lane, is set: where x < 0
  const __m256 add = _mm256_blendv_ps(f.pos, f.neg, _mm256_castsi256_ps(x));
  const __m256i v = _mm256_cvtps_epi32(_mm256_fmadd_ps(_mm256_cvtepi32_ps(x), f.scale, add));
  *flag = _mm256_min_epu32(*flag, _mm256_and_si256(v, _mm256_set1_epi32(0xFFF0)));
  return _mm256_srai_epi32(v, 16);
}
inline bool none_flagged(__m256i flag) {
  const __m256i zero = _mm256_cmpeq_epi32(flag, _mm256_setzero_si256());
  return _mm256_testz_si256(zero, zero) != 0;
}

// Two vectors of 8 int32 (each inside int16) as 16 saturated int8 in order a | b
inline __m128i bytes16(__m256i a, __m256i b) {
  const __m256i s16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
  return _mm_packs_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
}
// 8 int32 (each inside int16) as 8 saturated int8 in the low half
inline __m128i bytes8(__m256i v) {
  const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_packs_epi16(s16, s16);
}

// 8 rows of 8 int32 transposed: r[i] lane j becomes r[j] lane i
inline void transpose8x8(__m256i (&r)[8]) {
  __m256i t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

// R rows x 16 channels (H = 2) or the first 8 of them (H = 1): acc[r][h] = sum over k of x[r, k]
// * W[16 p + 8 h + i, k] per lane i. ap holds the rows' int16 pairs interleaved, ap[q * AP + r] =
// (x[r][2q], x[r][2q + 1]).
template <int R, int H>
inline void tile(const int32_t* ap, const int8_t* bp, int64_t pairs, __m256i (&acc)[MR][2]) {
  __m256i c[R][H];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) c[r][h] = _mm256_setzero_si256();
  for (int64_t q = 0; q < pairs; ++q) {
    __m256i b[H];
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h)
      b[h] = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(bp + q * 32 + 16 * h)));
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256i a = _mm256_set1_epi32(ap[q * AP + r]);
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h) c[r][h] = _mm256_add_epi32(c[r][h], _mm256_madd_epi16(a, b[h]));
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) acc[r][0] = c[r][0], acc[r][1] = c[r][H - 1];
}

using TileFn = void (*)(const int32_t*, const int8_t*, int64_t, __m256i (&)[MR][2]);
constexpr TileFn kTile[2][MR + 1] = {
    {nullptr, tile<1, 1>, tile<2, 1>, tile<3, 1>, tile<4, 1>, tile<5, 1>, tile<6, 1>},
    {nullptr, tile<1, 2>, tile<2, 2>, tile<3, 2>, tile<4, 2>, tile<5, 2>, tile<6, 2>}};

// Rows [r0, r0 + R) of x (K int8 each, stride ldx) as the tile reads them: ap[q * AP + r] =
// x[r][2q] | x[r][2q + 1] << 16 (each as int16), 0 past K and for rows R .. AP. Eight rows of 16
// bytes at a time are widened and transposed as 8 x 8 pairs.
void pair_strip(const int8_t* x, int64_t ldx, int R, int64_t k, int32_t* ap) {
  const int64_t pairs = (k + 1) / 2;
  int64_t q0 = 0;
  for (; 2 * q0 + 16 <= k; q0 += 8) {
    __m256i t[AP];
#pragma GCC unroll 8
    for (int r = 0; r < AP; ++r)
      t[r] = r < R ? _mm256_cvtepi8_epi16(
                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + r * ldx + 2 * q0)))
                   : _mm256_setzero_si256();
    transpose8x8(t);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      _mm256_store_si256(reinterpret_cast<__m256i*>(ap + (q0 + i) * AP), t[i]);
  }
  for (int64_t q = q0; q < pairs; ++q)
    for (int r = 0; r < AP; ++r) {
      const int16_t lo = r < R ? int16_t(x[r * ldx + 2 * q]) : 0;
      const int16_t hi = r < R && 2 * q + 1 < k ? int16_t(x[r * ldx + 2 * q + 1]) : 0;
      ap[q * AP + r] = int32_t(uint32_t(uint16_t(lo)) | (uint32_t(uint16_t(hi)) << 16));
    }
}

}  // namespace

void qgemm_rows(const QGemmAvx2Args& a) {
  const int64_t pairs = (a.k + 1) / 2;
  int32_t* ap = static_cast<int32_t*>(thread_scratch(3, size_t(pairs) * AP * sizeof(int32_t)));
  const __m256i zp = _mm256_set1_epi32(a.zp_out);
  const __m128i lo8 = _mm_set1_epi8(int8_t(a.lo)), hi8 = _mm_set1_epi8(int8_t(a.hi));
  __m256i acc[MR][2];
  // Channels are taken in blocks of at most ~192 KB of packed weights, so a block stays in L2
  // while every row strip streams past it (each strip's pairs are re-made per block: cheap).
  const int64_t panel_bytes = int64_t(NR) * 2 * pairs;
  const int64_t block = std::max<int64_t>(1, 196608 / std::max<int64_t>(panel_bytes, 1)) * NR;
  for (int64_t jb = 0; jb < a.m; jb += block)
    for (int64_t r0 = 0; r0 < a.n; r0 += MR) {
      const int R = int(std::min<int64_t>(MR, a.n - r0));
      pair_strip(a.x + r0 * a.ldx, a.ldx, R, a.k, ap);
      for (int64_t j0 = jb; j0 < std::min(a.m, jb + block); j0 += NR) {
        const int64_t w = std::min<int64_t>(NR, a.m - j0);
        // a last panel of at most 8 channels multiplies only its first half (the second half's
        // sums and constants repeat the first's; those bytes are never stored)
        const int H = w > 8 ? 2 : 1, h1 = (H - 1) * 8;
        kTile[H - 1][R](ap, a.wp + j0 * 2 * pairs, pairs, acc);
        const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + j0));
        const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + j0 + h1));
        __m128i bytes[MR];
        bool done = false;
        if (a.fr) {  // all R rows in float unless a lane of any of them is flagged
          const Rqf8 f0 = rqf8(*a.fr, j0), f1 = rqf8(*a.fr, j0 + h1);
          __m256i flag = no_flags();
          for (int r = 0; r < R; ++r)
            bytes[r] = bytes16(rq_float8(_mm256_add_epi32(acc[r][0], b0), f0, &flag),
                               rq_float8(_mm256_add_epi32(acc[r][1], b1), f1, &flag));
          done = none_flagged(flag);
        }
        if (!done) {
          const Rq8 q0 = rq8(a.mult + j0, a.shift + j0),
                    q1 = rq8(a.mult + j0 + h1, a.shift + j0 + h1);
          const auto one = [&](__m256i v, __m256i b, const Rq8& q) {
            return _mm256_add_epi32(mbqm(_mm256_add_epi32(v, b), q), zp);
          };
          for (int r = 0; r < R; ++r)
            bytes[r] = bytes16(one(acc[r][0], b0, q0), one(acc[r][1], b1, q1));
        }
        for (int r = 0; r < R; ++r) {
          // the activation range, on the saturated bytes (it lies inside int8, so saturating
          // first changes nothing)
          const __m128i v = _mm_min_epi8(_mm_max_epi8(bytes[r], lo8), hi8);
          int8_t* y = a.y + (r0 + r) * a.ldy + j0;
          if (w == NR) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(y), v);
          } else {
            alignas(16) int8_t tmp[NR];
            _mm_store_si128(reinterpret_cast<__m128i*>(tmp), v);
            std::memcpy(y, tmp, size_t(w));
          }
        }
      }
    }
}

namespace {

// 16 rows of 16 bytes transposed in place: a[i] byte j becomes a[j] byte i. Four rounds of the
// same interleave of rows i and i + 8 (each round sorts one more bit of the column index into
// the row index) give the transpose of a 16 x 16 matrix.
inline void transpose16x16(__m128i (&a)[16]) {
  for (int round = 0; round < 4; ++round) {
    __m128i b[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      b[2 * i] = _mm_unpacklo_epi8(a[i], a[i + 8]);
      b[2 * i + 1] = _mm_unpackhi_epi8(a[i], a[i + 8]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = b[i];
  }
}

// V vectors of 8 rows of one output channel: the sums over its blocks, requantized with the
// channel's constants, as V * 8 bytes in row order at out
template <int V>
inline void spmm_channel(const QSpmmAvx2Args& a, int64_t j, const int32_t* quad, const int32_t* w,
                         int32_t blocks, int8_t* out) {
  __m256i acc[V];
  const __m256i bias = _mm256_set1_epi32(a.bias[j]);
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) acc[v] = bias;
  const int64_t ldn = a.ldn;
  for (int32_t e = 0; e < blocks; ++e) {
    const int32_t* p = a.xp + int64_t(quad[e]) * 2 * ldn;
    const __m256i w01 = _mm256_set1_epi32(w[2 * e]), w23 = _mm256_set1_epi32(w[2 * e + 1]);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const __m256i x01 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 8 * v));
      const __m256i x23 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + ldn + 8 * v));
      acc[v] = _mm256_add_epi32(
          acc[v], _mm256_add_epi32(_mm256_madd_epi16(x01, w01), _mm256_madd_epi16(x23, w23)));
    }
  }
  __m256i r[V];
  bool done = false;
  if (a.fr) {
    const Rqf8 f{_mm256_set1_ps(a.fr->scale[j]), _mm256_set1_ps(a.fr->pos[j]),
                 _mm256_set1_ps(a.fr->neg[j])};
    __m256i flag = no_flags();
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) r[v] = rq_float8(acc[v], f, &flag);
    done = none_flagged(flag);
  }
  if (!done) {
    const Rq8 q = rq8(_mm256_set1_epi32(a.mult[j]), _mm256_set1_epi32(a.shift[j]));
    const __m256i zp = _mm256_set1_epi32(a.zp_out);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) r[v] = _mm256_add_epi32(mbqm(acc[v], q), zp);
  }
  const __m128i lo = _mm_set1_epi8(int8_t(a.lo)), hi = _mm_set1_epi8(int8_t(a.hi));
#pragma GCC unroll 2
  for (int v = 0; v < V; v += 2) {  // 16 bytes a store (past V * 8: padding of the buffer)
    const __m128i b = v + 1 < V ? bytes16(r[v], r[std::min(v + 1, V - 1)]) : bytes8(r[v]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 * v),
                     _mm_min_epi8(_mm_max_epi8(b, lo), hi));
  }
}

template <int V>
void spmm_rows(const QSpmmAvx2Args& a) {
  // 16 channels' results in channel-major order (32 bytes per channel, rows in order), then
  // transposed 16 rows at a time into the output rows
  alignas(16) int8_t buf[16 * 32] = {};
  const int32_t* quad = a.quad;
  const int32_t* w = a.w;
  for (int64_t j0 = 0; j0 < a.m; j0 += 16) {
    const int64_t width = std::min<int64_t>(16, a.m - j0);
    for (int64_t jj = 0; jj < width; ++jj) {
      const int32_t blocks = a.nnz[j0 + jj];
      spmm_channel<V>(a, j0 + jj, quad, w, blocks, buf + jj * 32);
      quad += blocks, w += 2 * blocks;
    }
    for (int64_t r0 = 0; r0 < a.n; r0 += 16) {
      __m128i t[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)  // channels past width: whatever the buffer holds, not stored
        t[i] = _mm_load_si128(reinterpret_cast<const __m128i*>(buf + i * 32 + r0));
      transpose16x16(t);
      for (int64_t r = 0; r < std::min<int64_t>(16, a.n - r0); ++r) {
        int8_t* y = a.y + (r0 + r) * a.ldy + j0;
        if (width == 16) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(y), t[r]);
        } else {
          alignas(16) int8_t tmp[16];
          _mm_store_si128(reinterpret_cast<__m128i*>(tmp), t[r]);
          std::memcpy(y, tmp, size_t(width));
        }
      }
    }
  }
}

}  // namespace

void qspmm_rows(const QSpmmAvx2Args& a) {
  switch ((a.n + 7) / 8) {
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

void pack_kn_s8(const int8_t* b, int64_t ldb, int64_t k, int64_t n, int8_t* out, int32_t* colsum) {
  const int64_t kq = (k + 1) / 2, full = n / 16 * 16;
  for (int64_t p0 = 0; p0 < full; p0 += 16) {
    int8_t* o = out + p0 / 16 * kq * 32;
    // the sums in int16 for 64 pairs of rows at a time (at most 128 * 128 in magnitude), then
    // added into int32
    __m256i s16 = _mm256_setzero_si256(), lo = s16, hi = s16;
    const auto flush = [&] {
      lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s16)));
      hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s16, 1)));
      s16 = _mm256_setzero_si256();
    };
    for (int64_t q = 0; q < kq; ++q) {
      const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * q * ldb + p0));
      const __m128i r1 =
          2 * q + 1 < k
              ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (2 * q + 1) * ldb + p0))
              : _mm_setzero_si128();
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + q * 32), _mm_unpacklo_epi8(r0, r1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + q * 32 + 16), _mm_unpackhi_epi8(r0, r1));
      s16 = _mm256_add_epi16(s16,
                             _mm256_add_epi16(_mm256_cvtepi8_epi16(r0), _mm256_cvtepi8_epi16(r1)));
      if (q % 64 == 63) flush();
    }
    flush();
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + p0), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + p0 + 8), hi);
  }
  if (full == n) return;
  int8_t* o = out + full / 16 * kq * 32;  // the last, partial panel
  for (int64_t q = 0; q < kq; ++q)
    for (int64_t j = 0; j < 16; ++j)
      for (int64_t t = 0; t < 2; ++t) {
        const int64_t c = full + j, kk = 2 * q + t;
        o[(q * 16 + j) * 2 + t] = c < n && kk < k ? b[kk * ldb + c] : int8_t(0);
      }
  for (int64_t c = full; c < n; ++c) {
    int32_t sum = 0;
    for (int64_t kk = 0; kk < k; ++kk) sum += b[kk * ldb + c];
    colsum[c] = sum;
  }
}

void pair_rows(const int8_t* x, int64_t ldx, int64_t n, int64_t k, int64_t ldn, int32_t* xp) {
  const int64_t pairs = (k + 3) / 4 * 2;
  int64_t q0 = 0;
  if (n == ldn && n % 8 == 0)  // 8 rows x 8 pairs (16 bytes of each row) at a time
    for (; 2 * q0 + 16 <= k; q0 += 8)
      for (int64_t r0 = 0; r0 < n; r0 += 8) {
        __m256i t[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
          t[i] = _mm256_cvtepi8_epi16(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + (r0 + i) * ldx + 2 * q0)));
        transpose8x8(t);
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
          _mm256_store_si256(reinterpret_cast<__m256i*>(xp + (q0 + i) * ldn + r0), t[i]);
      }
  for (int64_t q = q0; q < pairs; ++q)
    for (int64_t r = 0; r < ldn; ++r) {
      const int64_t c = 2 * q;
      const int16_t lo = r < n && c < k ? int16_t(x[r * ldx + c]) : 0;
      const int16_t hi = r < n && c + 1 < k ? int16_t(x[r * ldx + c + 1]) : 0;
      xp[q * ldn + r] = int32_t(uint32_t(uint16_t(lo)) | (uint32_t(uint16_t(hi)) << 16));
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

// One block of 8 channels of a depthwise layer: its per-channel constants
struct DwLanes8 {
  __m256i bias;
  Rq8 rq;
  bool fl;  // the float requantization (rf), else the integer steps
  Rqf8 rf;
  __m256i zp_out;
  __m128i lo, hi;  // the activation range as bytes
};

// 8 int8 at p as int32 lanes
inline __m256i load8(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// acc + x * w per lane: x (int8, sign-extended) fits the low int16 half and the weight's high
// half is 0, so the pair multiply-add is the exact 32-bit product
inline __m256i madd_tap(__m256i acc, __m256i x, __m256i w) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w));
}

// The integer steps for one vector of sums: requantized, zero point added (not yet clamped)
inline __m256i dw_integer(const DwLanes8& l, __m256i acc) {
  return _mm256_add_epi32(mbqm(acc, l.rq), l.zp_out);
}

// P (1 or an even number) pixels' 8 channels: requantized, clamped and stored as 8 bytes each at
// y, y + step, ...
template <int P>
inline void dw_store(const DwLanes8& l, const __m256i* acc, int8_t* y, int64_t step) {
  static_assert(P == 1 || P % 2 == 0, "pixels are packed in pairs");
  constexpr int B = (P + 1) / 2;
  __m128i b[B];
  const auto pack = [&](auto&& one) {
#pragma GCC unroll 4
    for (int i = 0; i < B; ++i) {
      if constexpr (P == 1)
        b[i] = bytes8(one(acc[0]));
      else
        b[i] = bytes16(one(acc[2 * i]), one(acc[2 * i + 1]));
    }
  };
  bool done = false;
  if (l.fl) {
    __m256i flag = no_flags();
    pack([&](__m256i v) { return rq_float8(v, l.rf, &flag); });
    done = none_flagged(flag);
  }
  if (!done) pack([&](__m256i v) { return dw_integer(l, v); });
#pragma GCC unroll 4
  for (int i = 0; i < B; ++i) {
    const __m128i v = _mm_min_epi8(_mm_max_epi8(b[i], l.lo), l.hi);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(y + 2 * i * step), v);
    if constexpr (P > 1)
      // the high 8 bytes moved down and stored as the low ones: _mm_storeh_pd stores through a
      // double*, undefined behaviour at the int8 rows' unaligned addresses
      _mm_storel_epi64(reinterpret_cast<__m128i*>(y + (2 * i + 1) * step), _mm_srli_si128(v, 8));
  }
}

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

// A pixel whose taps may leave the input: every tap checked, the zero point taken off each
inline void dw_pixel_checked(const QDwRowArgs& a, const DwLanes8& l, int64_t c0, int64_t oy,
                             int64_t ox, int8_t* y) {
  const __m256i zin = _mm256_set1_epi32(a.zp_in);
  __m256i acc = l.bias;
  each_tap(a, oy, ox, [&](int64_t xi, int64_t wi) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.wt + wi + c0));
    acc = madd_tap(acc, _mm256_sub_epi32(load8(a.x + xi + c0), zin), wv);
  });
  dw_store<1>(l, &acc, y, 0);
}

// 8 int8 at p and 8 at p + next as int32 lanes each holding a pair of int16: (p[i], p[next + i])
inline __m256i load8_pair(const int8_t* p, int64_t next) {
  return _mm256_cvtepi8_epi16(
      _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + next))));
}

// P pixels (stride S, KW taps per kernel row) of one block of 8 channels over kernel rows
// [0, rows): acc[p] = bias + sum of x * w. x points at the first row's input column of pixel 0
// (channel c0); wb at the block's weights of that row, [rows][KW] vectors of 8 (each weight an
// int16 in the low half of its lane); wp at the same rows' weights in vertical pairs, vector
// [ky][kx] holding the weights of rows ky and ky + 1 as int16 pairs.
// - Rows go two at a time: one vpmaddwd multiplies a column's pixels of both rows (interleaved
//   as int16 pairs) by both rows' weights and sums them, so a 3x3 kernel takes 6 multiply-adds
//   and 6 adds per pixel instead of 9 and 9 (the adds compete with the multiplies for the vector
//   ports on AVX2 hosts). An odd last row goes alone.
// - Each input column is loaded once and serves every (pixel, tap) that reads it, and the
//   weights are memory operands: the loop holds only the P sums.
// - The column pointer moves by one column per load and is opaque to the compiler: otherwise it
//   hoists one offset per (row, column) out of the pixel loop and spills them, and every load
//   waits on a reload.
template <int KW, int S, int P>
inline void dw_lean(const int8_t* x, int64_t c, int64_t wc, int64_t rows, const __m256i* wb,
                    const __m256i* wp, __m256i bias, __m256i (&acc)[P]) {
  constexpr int NC = S * (P - 1) + KW;
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) acc[p] = bias;
  int64_t ky = 0;
  for (; ky + 2 <= rows; ky += 2, x += 2 * wc, wp += 2 * KW) {
    const int8_t* q = x;
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) {
      const __m256i col = load8_pair(q, wc);
      q += c;
      asm("" : "+r"(q));
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const int kx = j - S * p;
        if (kx >= 0 && kx < KW)
          acc[p] = _mm256_add_epi32(acc[p], _mm256_madd_epi16(col, _mm256_load_si256(wp + kx)));
      }
    }
  }
  if (ky < rows) {
    wb += ky * KW;
    const int8_t* q = x;
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) {
      const __m256i col = load8(q);
      q += c;
      asm("" : "+r"(q));
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const int kx = j - S * p;
        if (kx >= 0 && kx < KW) acc[p] = madd_tap(acc[p], col, _mm256_load_si256(wb + kx));
      }
    }
  }
}

// Rows [oy, oy + rows) of one block of 8 channels. Columns [x0, x1) have every tap inside the
// row's columns; there the zero point's share, zp * sum(w) over the kernel rows inside, comes off
// the bias once per row and each tap is x * w. With the kernel size known at compile time
// (KH > 0), dilation 1 and stride 1 or 2 (nearly every depthwise layer), dw_lean takes 4 pixels
// at a time over the kernel rows inside the image, and the other columns take their taps inside
// with the zero point off each; otherwise those columns check every tap.
template <int KH, int KW>
void dw_block(const QDwRowArgs& a, const DwLanes8& lanes, int64_t c0, int64_t x0, int64_t x1) {
  // A copy whose address never escapes: through the reference, the compiler would reload the
  // constants after every int8 store (a byte store may alias them). The fields of `a` used in the
  // loops are locals for the same reason.
  const DwLanes8 l = lanes;
  const int64_t kh = KH > 0 ? KH : a.kh, kw = KH > 0 ? KW : a.kw;
  const int64_t c = a.c, h = a.h, wc = a.w * c, sh = a.sh, sw = a.sw, dh = a.dh, pt = a.pt;
  const int64_t pl = a.pl, step = sw * c, tap = a.dw * c, yrow = a.ow * c;
  const int8_t* const x = a.x;
  const int32_t* const wt = a.wt + c0;
  const __m256i zin = _mm256_set1_epi32(a.zp_in);
  auto weight = [&](int64_t ky, int64_t kx) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + (ky * kw + kx) * c));
  };
  // the block's weights as [KH][KW] vectors and in vertical pairs, for dw_lean
  __m256i wb[KH > 0 ? KH * KW : 1], wp[KH > 1 ? (KH - 1) * KW : 1];
  if constexpr (KH > 0) {
    for (int t = 0; t < KH * KW; ++t) wb[t] = weight(t / KW, t % KW);
    for (int t = 0; t + KW < KH * KW; ++t)
      wp[t] = _mm256_or_si256(wb[t], _mm256_slli_epi32(wb[t + KW], 16));
  }
  constexpr int P = 4;
  // the bias less the zero point's share over the kernel rows inside [bias_ky0, bias_ky1)
  __m256i bias = l.bias;
  int64_t bias_ky0 = -1, bias_ky1 = -1;
  for (int64_t oy = a.oy; oy < a.oy + a.rows; ++oy) {
    int8_t* const y = a.y + (oy - a.oy) * yrow + c0;
    bool edges = false;  // the columns outside [x0, x1) are done
    const auto inside = [&](int64_t ky) {
      const int64_t iy = oy * sh - pt + ky * dh;
      return iy >= 0 && iy < h;
    };
    // the kernel rows inside, [ky0, ky1) (inside(ky) is monotonic at either end)
    int64_t ky0 = 0, ky1 = kh;
    while (ky0 < kh && !inside(ky0)) ++ky0;
    while (ky1 > ky0 && !inside(ky1 - 1)) --ky1;
    if (ky0 != bias_ky0 || ky1 != bias_ky1) {  // rows between the first and last repeat it
      bias = l.bias;
      for (int64_t ky = ky0; ky < ky1; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx)
          bias = _mm256_sub_epi32(bias, _mm256_madd_epi16(zin, weight(ky, kx)));
      bias_ky0 = ky0, bias_ky1 = ky1;
    }
    int64_t ox = x0;
    if constexpr (KH > 0) {
      const auto lean = [&](auto stride) {
        constexpr int S = decltype(stride)::value;
        if (ky1 <= ky0) return;
        const int8_t* r = x + (oy * sh - pt + ky0) * wc + c0;
        const __m256i* w = wb + ky0 * KW;
        const __m256i* w2 = wp + ky0 * KW;
        // the columns whose taps leave the row: the taps inside, the zero point off each
        const auto edge = [&](int64_t ox) {
          const int64_t ix = ox * S - pl, kx0 = std::max<int64_t>(0, -ix);
          const int64_t kx1 = std::min<int64_t>(KW, a.w - ix);
          __m256i acc = l.bias;
          for (int64_t ky = 0; ky < ky1 - ky0; ++ky)
            for (int64_t kx = kx0; kx < kx1; ++kx)
              acc = madd_tap(acc, _mm256_sub_epi32(load8(r + ky * wc + (ix + kx) * c), zin),
                             _mm256_load_si256(w + ky * KW + kx));
          dw_store<1>(l, &acc, y + ox * c, 0);
        };
        for (int64_t e = 0; e < x0; ++e) edge(e);
        for (int64_t e = x1; e < a.ow; ++e) edge(e);
        edges = true;
        for (; ox + P <= x1; ox += P) {
          __m256i acc[P];
          dw_lean<KW, S, P>(r + (ox * S - pl) * c, c, wc, ky1 - ky0, w, w2, bias, acc);
          dw_store<P>(l, acc, y + ox * c, c);
        }
        for (; ox < x1; ++ox) {
          __m256i acc[1];
          dw_lean<KW, S, 1>(r + (ox * S - pl) * c, c, wc, ky1 - ky0, w, w2, bias, acc);
          dw_store<1>(l, acc, y + ox * c, 0);
        }
      };
      if (dh == 1 && tap == c && sw == 1) lean(std::integral_constant<int, 1>());
      if (dh == 1 && tap == c && sw == 2) lean(std::integral_constant<int, 2>());
    }
    if (!edges) {
      for (int64_t e = 0; e < x0; ++e) dw_pixel_checked(a, l, c0, oy, e, y + e * c);
      for (int64_t e = x1; e < a.ow; ++e) dw_pixel_checked(a, l, c0, oy, e, y + e * c);
    }
    for (; ox + P <= x1; ox += P) {
      __m256i acc[P];
      for (int p = 0; p < P; ++p) acc[p] = bias;
      const int8_t* base = x + (ox * sw - pl) * c + c0;
      for (int64_t ky = 0; ky < kh; ++ky) {
        if (!inside(ky)) continue;
        const int8_t* row = base + (oy * sh - pt + ky * dh) * wc;
        for (int64_t kx = 0; kx < kw; ++kx) {
          const __m256i wv = weight(ky, kx);
          for (int p = 0; p < P; ++p)
            acc[p] = madd_tap(acc[p], load8(row + p * step + kx * tap), wv);
        }
      }
      dw_store<P>(l, acc, y + ox * c, c);
    }
    for (; ox < x1; ++ox) {
      __m256i acc = bias;
      const int8_t* base = x + (ox * sw - pl) * c + c0;
      for (int64_t ky = 0; ky < kh; ++ky) {
        if (!inside(ky)) continue;
        const int8_t* row = base + (oy * sh - pt + ky * dh) * wc;
        for (int64_t kx = 0; kx < kw; ++kx)
          acc = madd_tap(acc, load8(row + kx * tap), weight(ky, kx));
      }
      dw_store<1>(l, &acc, y + ox * c, 0);
    }
  }
}

}  // namespace

void qdw_rows(const QDwRowArgs& a) {
  // output columns whose taps ox * sw - pl + kx * dw all lie in [0, w)
  const int64_t reach = a.w - 1 + a.pl - (a.kw - 1) * a.dw;
  const int64_t x0 = std::min(a.ow, (a.pl + a.sw - 1) / a.sw);
  const int64_t x1 = std::max(x0, std::min(a.ow, reach < 0 ? 0 : reach / a.sw + 1));
  const int64_t c = a.c, full = c / 8 * 8;
  for (int64_t c0 = 0; c0 < full; c0 += 8) {
    DwLanes8 l;
    l.bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + c0));
    l.rq = rq8(a.mult + c0, a.shift + c0);
    l.fl = a.fr != nullptr;
    if (l.fl) l.rf = rqf8(*a.fr, c0);
    l.zp_out = _mm256_set1_epi32(a.zp_out);
    l.lo = _mm_set1_epi8(int8_t(a.lo)), l.hi = _mm_set1_epi8(int8_t(a.hi));
    if (a.kh == 3 && a.kw == 3)
      dw_block<3, 3>(a, l, c0, x0, x1);
    else if (a.kh == 5 && a.kw == 5)
      dw_block<5, 5>(a, l, c0, x0, x1);
    else
      dw_block<0, 0>(a, l, c0, x0, x1);
  }
  if (full == c) return;
  for (int64_t i = 0; i < a.rows; ++i) {  // the last c % 8 channels, as the portable loop
    const int64_t oy = a.oy + i;
    for (int64_t ox = 0; ox < a.ow; ++ox) {
      int8_t* yp = a.y + (i * a.ow + ox) * c;
      for (int64_t ch = full; ch < c; ++ch) {
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

namespace {

// TFLite's AffineQuantize on 8 lanes, as the portable quantize_row: x / scale, NaN to 0, capped
// at +-1e9, rounded half away from zero. The rounding adds the largest float below 0.5 with the
// value's sign, then truncates: the sum rounds (to nearest, ties to even) up to the next integer
// exactly when the value's fraction is at least one half (below 2^22 the sum is within a float's
// reach of that integer; from 2^22 on the values are multiples of 0.5 or integers, whose sums
// round the same way), so the result is the portable loop's, in 4 instructions where truncating,
// converting back and comparing the fraction took 7.
struct Quantize8 {
  __m256 s, big = _mm256_set1_ps(1e9f), nbig = _mm256_set1_ps(-1e9f);
  __m256 below_half = _mm256_set1_ps(0.49999997f), sign = _mm256_set1_ps(-0.0f);
  __m256i zp, lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
  Quantize8(float scale, int32_t zout) : s(_mm256_set1_ps(scale)), zp(_mm256_set1_epi32(zout)) {}
  __m256i operator()(__m256 x) const {
    __m256 v = _mm256_div_ps(x, s);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    v = _mm256_min_ps(_mm256_max_ps(v, nbig), big);
    const __m256 nudge = _mm256_or_ps(_mm256_and_ps(v, sign), below_half);
    const __m256i t = _mm256_cvttps_epi32(_mm256_add_ps(v, nudge));
    return _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(t, zp), lo), hi);
  }
};

}  // namespace

void quantize_f32(const float* x, int64_t n, float scale, int32_t zout, int8_t* y) {
  const Quantize8 quantize(scale, zout);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(y + i), bytes8(quantize(_mm256_loadu_ps(x + i))));
  if (i < n) {  // each value alone: a zero-padded copy gives the same bits
    float tx[8] = {0};
    int8_t ty[8];
    std::memcpy(tx, x + i, size_t(n - i) * sizeof(float));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(ty), bytes8(quantize(_mm256_loadu_ps(tx))));
    std::memcpy(y + i, ty, size_t(n - i));
  }
}

void lut_s8(const int8_t* x, int64_t n, const int8_t* lut, int8_t* y) {
  // The table as 16 rows of 16 bytes, each in both 128-bit lanes. For row h, x - 16h (wrapping)
  // plus 0x70 with unsigned saturation keeps x's low nibble with bit 7 clear where x's high nibble
  // is h and sets bit 7 elsewhere, where vpshufb gives 0: the 16 lookups or-ed give lut[x].
  __m256i rows[16];
  for (int h = 0; h < 16; ++h)
    rows[h] = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + 16 * h)));
  const __m256i bias = _mm256_set1_epi8(0x70);
  const auto lookup = [&](__m256i v) {
    __m256i r = _mm256_setzero_si256();
#pragma GCC unroll 16
    for (int h = 0; h < 16; ++h) {
      const __m256i t =
          _mm256_adds_epu8(_mm256_sub_epi8(v, _mm256_set1_epi8(int8_t(16 * h))), bias);
      r = _mm256_or_si256(r, _mm256_shuffle_epi8(rows[h], t));
    }
    return r;
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        lookup(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))));
  for (; i < n; ++i) y[i] = lut[uint8_t(x[i])];
}

void softmax_input_row(const int8_t* x, int64_t n, float scale, int32_t zin, const float* mul,
                       const float* bias, int64_t bias_step, float* y) {
  const __m256 s = _mm256_set1_ps(scale), m = _mm256_set1_ps(mul ? *mul : 1.0f);
  const __m256i zp = _mm256_set1_epi32(zin);
  // 8 values from p (bias from b): each step its own rounding, as the separate passes round them;
  // the empty asm keeps GCC from contracting a product and the following sum into one FMA
  const auto eight = [&](const int8_t* p, const float* b, float* q) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(load8(p), zp)), s);
    if (mul) v = _mm256_mul_ps(v, m);
    asm("" : "+x"(v));
    if (bias) v = _mm256_add_ps(v, bias_step ? _mm256_loadu_ps(b) : _mm256_set1_ps(*b));
    _mm256_storeu_ps(q, v);
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) eight(x + i, bias ? bias + i * bias_step : nullptr, y + i);
  if (i < n) {  // zero-padded copies give the same bits
    int8_t tx[8] = {0};
    float tb[8] = {0}, ty[8];
    std::memcpy(tx, x + i, size_t(n - i));
    if (bias && bias_step) std::memcpy(tb, bias + i, size_t(n - i) * sizeof(float));
    eight(tx, bias ? (bias_step ? tb : bias) : nullptr, ty);
    std::memcpy(y + i, ty, size_t(n - i) * sizeof(float));
  }
}

void dequantize_s8(const int8_t* x, int64_t n, float scale, int32_t zin, float* y) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i zp = _mm256_set1_epi32(zin);
  const auto eight = [&](const int8_t* p, float* q) {
    _mm256_storeu_ps(q, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(load8(p), zp)), s));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) eight(x + i, y + i);
  if (i < n) {
    int8_t tx[8] = {0};
    float ty[8];
    std::memcpy(tx, x + i, size_t(n - i));
    eight(tx, ty);
    std::memcpy(y + i, ty, size_t(n - i) * sizeof(float));
  }
}

}  // namespace avx2
}  // namespace rt
}  // namespace ep
