// AVX-512 VNNI int8 GEMM: vpdpbusd (u8 x s8 -> int32, four products per lane, no intermediate
// saturation) on an 8x32 register tile. The activations are the unsigned operand: each strip of 8
// rows is copied flipped (x ^ 0x80 = x + 128) into a small buffer, and the offset, 128 * the
// column's weight sum, comes off the bias in each tile. Each row's k-quad is broadcast by a load
// of its own and meets the signed weights, packed in 32-column panels of k-quads. This replaced
// the opposite roles (weights flipped on load, activations broadcast by vpdpbusd itself, the
// offset taken from per-row sums): the row sums and the weight flips cost more than the separate
// broadcasts and the strip copy on every shape measured (docs/kernels.md, "int8 GEMM with the
// activations unsigned"). Built with AVX-512 (+VNNI) flags for this file only.
//
// Consumes: GemmS8Args (a, bp with tile 32 / k-group 4, bias, colsum, scale). Produces: y int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {

#include "kernels/avx512/store_s8.h"

constexpr int NR = 32, MR = 8, KG = 4;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// What the epilogue of a tile needs: requantization constants and, per column of the call, the
// bias, weight sum and scale, read under the tile's column masks.
struct Out {
  const int32_t *bias, *colsum;
  const float* scale;
  int8_t* y;
  int64_t ldy;
  __m512i zp16, lo8, hi8;  // the zero point as int16 lanes; the output's bounds as int8 lanes
};

// An R x (16 H) tile over `quads` k-quads, requantized and stored to y rows [r0, r0 + R),
// columns [j0, j0 + w). Row r's quads are the flipped bytes at xs + r * kq. H = 1 computes only the
// first 16 columns of the panel (a panel with at most 16 real columns: half the work for layers
// of 16 or fewer output channels). The accumulators never leave registers: on small-K layers a
// round trip through memory between products and requantization cost a fifth.
template <int R, int H>
void tile(const uint8_t* xs, int64_t kq, const int8_t* bp, int64_t quads, const Out& o, int64_t r0,
          int64_t j0, int w) {
  // the columns of the tile's two vectors: bias and scale are read under them, so the call's
  // arrays need no padding to whole panels
  const __mmask16 m0 = w >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << w) - 1);
  const __mmask16 m1 = w >= 32   ? __mmask16(0xFFFF)
                       : w <= 16 ? __mmask16(0)
                                 : __mmask16((1u << (w - 16)) - 1);
  __m512i acc[R][H];
#pragma GCC unroll 2
  for (int h = 0; h < H; ++h) {
    // the bias less the flipped activations' offset, 128 * the column's weight sum
    const __mmask16 m = h ? m1 : m0;
    const __m512i sum = _mm512_maskz_loadu_epi32(m, o.colsum + j0 + 16 * h);
    const __m512i bias = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, o.bias + j0 + 16 * h),
                                          _mm512_slli_epi32(sum, 7));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][h] = bias;
  }
#pragma GCC unroll 4
  for (int64_t q = 0; q < quads; ++q) {
    __m512i b[H];
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) b[h] = _mm512_loadu_si512(bp + q * NR * KG + 64 * h);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      __builtin_memcpy(&quad, xs + r * kq + q * KG, 4);
      const __m512i xv = _mm512_set1_epi32(quad);
      // as inline asm the accumulator stays one register across the loop: with the intrinsic,
      // GCC copies every accumulator of a tile through another register on each iteration
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h)
        __asm__("vpdpbusd %2, %1, %0" : "+v"(acc[r][h]) : "v"(xv), "v"(b[h]));
    }
  }
  // The results four vectors at a time (s8x4): two rows of 32 columns, or four rows of 16.
  __m512i v[R][H];
#pragma GCC unroll 2
  for (int h = 0; h < H; ++h) {
    const __m512 sc = _mm512_maskz_loadu_ps(h ? m1 : m0, o.scale + j0 + 16 * h);
    if (_mm512_cmp_ps_mask(sc, _mm512_set1_ps(1.0f), _CMP_NLT_UQ)) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) v[r][h] = scale_round(acc[r][h], sc, true);
    } else {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) v[r][h] = scale_round(acc[r][h], sc, false);
    }
  }
  int8_t* const y = o.y + r0 * o.ldy + j0;
  if (H == 2) {
    const __mmask32 m = w >= 32 ? ~__mmask32(0) : (__mmask32(1) << w) - 1;
#pragma GCC unroll 4
    for (int r = 0; r < R; r += 2) {
      const int r1 = r + 1 < R ? r + 1 : r;
      const __m512i b = s8x4(v[r][0], v[r][H - 1], v[r1][0], v[r1][H - 1], o.zp16, o.lo8, o.hi8);
      if (r + 1 < R && w == 32 && o.ldy == 32) {  // two whole rows, contiguous: one store
        _mm512_storeu_si512(y + r * 32, b);
        continue;
      }
      _mm256_mask_storeu_epi8(y + r * o.ldy, m, _mm512_castsi512_si256(b));
      if (r + 1 < R) _mm256_mask_storeu_epi8(y + r1 * o.ldy, m, _mm512_extracti64x4_epi64(b, 1));
    }
  } else {
#pragma GCC unroll 2
    for (int r = 0; r < R; r += 4) {
      const int r1 = r + 1 < R ? r + 1 : r, r2 = r + 2 < R ? r + 2 : r, r3 = r + 3 < R ? r + 3 : r;
      const __m512i b = s8x4(v[r][0], v[r1][0], v[r2][0], v[r3][0], o.zp16, o.lo8, o.hi8);
      if (r + 3 < R && w == 16 && o.ldy == 16) {  // four whole rows, contiguous: one store
        _mm512_storeu_si512(y + r * 16, b);
        continue;
      }
      _mm_mask_storeu_epi8(y + r * o.ldy, m0, _mm512_castsi512_si128(b));
      if (r + 1 < R) _mm_mask_storeu_epi8(y + r1 * o.ldy, m0, _mm512_extracti32x4_epi32(b, 1));
      if (r + 2 < R) _mm_mask_storeu_epi8(y + r2 * o.ldy, m0, _mm512_extracti32x4_epi32(b, 2));
      if (r + 3 < R) _mm_mask_storeu_epi8(y + r3 * o.ldy, m0, _mm512_extracti32x4_epi32(b, 3));
    }
  }
}

using TileFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, const Out&, int64_t,
                        int64_t, int);
template <int H>
constexpr TileFn kTiles[MR + 1] = {nullptr,    tile<1, H>, tile<2, H>, tile<3, H>, tile<4, H>,
                                   tile<5, H>, tile<6, H>, tile<7, H>, tile<8, H>};

// Rows [r0, r0 + R) of A flipped to uint8 (x ^ 0x80) at a row stride of kq (the depth rounded up
// to whole quads; the bytes past the depth meet zero weights, whatever they hold). One flat pass
// when A's rows are kq apart already.
void flip_strip(const GemmS8Args& p, int64_t r0, int R, int64_t kq, uint8_t* xs) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const auto pass = [&](const int8_t* src, uint8_t* dst, int64_t n) {
    for (int64_t k = 0; k < n; k += 64) {
      const int64_t left = n - k;
      const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
      _mm512_mask_storeu_epi8(dst + k, m,
                              _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + k), flip));
    }
  };
  if (p.lda == kq && p.depth == kq) return pass(p.a + r0 * kq, xs, R * kq);
  for (int r = 0; r < R; ++r) pass(p.a + (r0 + r) * p.lda, xs + r * kq, p.depth);
}

}  // namespace

void gemm_s8(const GemmS8Args& p) {
  if (p.rows <= 0 || p.cols <= 0) return;
  const int64_t quads = (p.depth + KG - 1) / KG, kq = quads * KG;
  // one strip's flipped rows
  uint8_t* xs = static_cast<uint8_t*>(thread_scratch(1, size_t(MR * kq)));
  const Out o{p.bias,
              p.colsum,
              p.scale,
              p.y,
              p.ldy,
              _mm512_set1_epi16(int16_t(p.zp_out)),
              s8_bound(p.lo, p.zp_out),
              s8_bound(p.hi, p.zp_out)};
  // Panels are taken in blocks of at most ~256 KB of packed weights, so a block stays in L2
  // while every row strip streams past it (each strip flipped again per block).
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  const int64_t panel_bytes = int64_t(NR) * KG * quads;
  const int64_t block_cols = imin(p.cols, (262144 / (panel_bytes > 0 ? panel_bytes : 1) + 1) * NR);
  for (int64_t jb = 0; jb < p.cols; jb += block_cols) {
    const int64_t jend = imin(p.cols, jb + block_cols);
    for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
      const int R = int(imin(MR, p.rows - r0));
      flip_strip(p, r0, R, kq, xs);
      for (int64_t j0 = jb; j0 < jend; j0 += NR) {
        const int w = int(imin(NR, p.cols - j0));
        const TileFn fn = w <= 16 ? kTiles<1>[R] : kTiles<2>[R];
        fn(xs, kq, p.bp + (j0 / NR) * NR * KG * quads, quads, o, r0, j0, w);
      }
    }
  }
}

}  // namespace ep::avx512
