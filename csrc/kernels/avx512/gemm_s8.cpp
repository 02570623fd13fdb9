// AVX-512 VNNI int8 GEMM: vpdpbusd (u8 x s8 -> int32, four products per lane, no intermediate
// saturation) on an 8x32 register tile. vpdpbusd can broadcast only its signed operand from
// memory, so the activations take that role (one instruction per row and k-quad, broadcast
// included) and the weights are made unsigned (w ^ 0x80 = w + 128, on load); the offset is removed
// exactly with 128 * (sum of the row's activations, summed once per call). Weights packed in
// 32-column panels of k-quads; activations read in place when K is a multiple of 4 (no copy: on
// small-K layers a copy per row strip cost as much as the products). Built with AVX-512 (+VNNI)
// flags for this file only.
//
// Consumes: GemmS8Args (a, bp with tile 32 / k-group 4, bias, scale). Produces: y int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {

#include "kernels/avx512/store_s8.h"

constexpr int NR = 32, MR = 8, KG = 4;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// What the epilogue of a tile needs: requantization constants and, per column of the call, the
// bias and scale (read under the tile's column masks).
struct Out {
  const int32_t* rowsum;
  const int32_t* bias;
  const float* scale;
  int8_t* y;
  int64_t ldy;
  __m512 lo, hi;
  __m512i zp;
};

// An R x (16 H) tile over `quads` k-quads, requantized and stored to y rows [r0, r0 + R),
// columns [j0, j0 + w). Row r's quad q is the int32 at rows[r] + q * QS bytes: QS = 4 reads A in
// place (depth a multiple of 4), QS = 4 * MR reads the row-interleaved copy. H = 1 computes only
// the first 16 columns of the panel (a panel with at most 16 real columns: half the work for
// layers of 16 or fewer output channels). The accumulators never leave registers: on small-K
// layers a round trip through memory between products and requantization cost a fifth.
template <int R, int H, int QS>
void tile(const char* const* rows, const int8_t* bp, int64_t quads, const Out& o, int64_t r0,
          int64_t j0, int w) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  // the columns of the tile's two vectors: bias and scale are read under them, so the call's
  // arrays need no padding to whole panels
  const __mmask16 m0 = w >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << w) - 1);
  const __mmask16 m1 = w >= 32   ? __mmask16(0xFFFF)
                       : w <= 16 ? __mmask16(0)
                                 : __mmask16((1u << (w - 16)) - 1);
  __m512i acc[R][2];
  const char* rp[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    // the weights' +128 offset and the bias, in the accumulator from the start
    const __m512i off = _mm512_set1_epi32(-128 * o.rowsum[r0 + r]);
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h)
      acc[r][h] =
          _mm512_add_epi32(off, _mm512_maskz_loadu_epi32(h ? m1 : m0, o.bias + j0 + 16 * h));
    rp[r] = rows[r];
  }
#pragma GCC unroll 4
  for (int64_t q = 0; q < quads; ++q) {
    __m512i b[H];
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h)
      b[h] = _mm512_xor_si512(_mm512_loadu_si512(bp + q * NR * KG + 64 * h), flip);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h)
        // the activation quad broadcast straight from memory ({1to16}): GCC does not fold
        // _mm512_set1_epi32 into vpdpbusd by itself, and the separate broadcast costs a uop per row
        __asm__("vpdpbusd %2%{1to16%}, %1, %0"
                : "+v"(acc[r][h])
                : "v"(b[h]), "m"(*reinterpret_cast<const int32_t*>(rp[r] + q * QS)));
  }
#pragma GCC unroll 2
  for (int h = 0; h < H; ++h) {
    const __m512 sc = _mm512_maskz_loadu_ps(h ? m1 : m0, o.scale + j0 + 16 * h);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][h]), sc);
      f = _mm512_min_ps(_mm512_max_ps(f, o.lo), o.hi);
      const __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(f), o.zp);  // MXCSR: nearest even
      store_s8(o.y + (r0 + r) * o.ldy + j0 + 16 * h, h ? m1 : m0, v);
    }
  }
}

using TileFn = void (*)(const char* const*, const int8_t*, int64_t, const Out&, int64_t, int64_t,
                        int);
template <int H, int QS>
constexpr TileFn kTiles[MR + 1] = {nullptr,        tile<1, H, QS>, tile<2, H, QS>,
                                   tile<3, H, QS>, tile<4, H, QS>, tile<5, H, QS>,
                                   tile<6, H, QS>, tile<7, H, QS>, tile<8, H, QS>};

// The sum of each row's activations (for the weights' +128 offset), 64 bytes at a time.
void row_sums(const int8_t* a, int64_t lda, int64_t rows, int64_t depth, int32_t* out) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* x = a + r * lda;
    __m512i s = _mm512_setzero_si512();
    for (int64_t k = 0; k < depth; k += 64) {
      const int64_t left = depth - k;
      const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
      s = _mm512_dpbusd_epi32(s, ones, _mm512_maskz_loadu_epi8(m, x + k));
    }
    out[r] = _mm512_reduce_add_epi32(s);
  }
}

// Rows [r0, r0 + MR) of A as s8 quads, row-interleaved: ap[q * MR + r] = bytes x[r][4q..4q+3],
// the last quad zero padded (used when depth is not a multiple of 4: in place, a row's last quad
// would read past it).
void pack_strip(const GemmS8Args& p, int64_t r0, int R, int64_t quads, int32_t* ap) {
  const int64_t full = p.depth / KG;
  for (int r = 0; r < MR; ++r) {
    const int8_t* x = p.a + (r0 + r) * p.lda;
    if (r >= R) {
      for (int64_t q = 0; q < quads; ++q) ap[q * MR + r] = 0;
      continue;
    }
    for (int64_t q = 0; q < full; ++q) {
      uint32_t v;
      __builtin_memcpy(&v, x + q * KG, 4);
      ap[q * MR + r] = int32_t(v);
    }
    if (full < quads) {
      uint32_t v = 0;
      for (int64_t k = full * KG; k < p.depth; ++k)
        v |= uint32_t(uint8_t(x[k])) << (8 * (k - full * KG));
      ap[full * MR + r] = int32_t(v);
    }
  }
}

}  // namespace

void gemm_s8(const GemmS8Args& p) {
  if (p.rows <= 0 || p.cols <= 0) return;
  const int64_t quads = (p.depth + KG - 1) / KG;
  const bool in_place = p.depth % KG == 0;
  int32_t* ap =
      in_place ? nullptr
               : static_cast<int32_t*>(thread_scratch(1, size_t(quads) * MR * sizeof(int32_t)));
  // per call: each row's activation sum
  int32_t* rowsum = static_cast<int32_t*>(thread_scratch(2, size_t(p.rows) * 4));
  row_sums(p.a, p.lda, p.rows, p.depth, rowsum);
  const Out o{rowsum,
              p.bias,
              p.scale,
              p.y,
              p.ldy,
              _mm512_set1_ps(p.lo),
              _mm512_set1_ps(p.hi),
              _mm512_set1_epi32(p.zp_out)};
  const char* rows[MR];
  // Panels are taken in blocks of at most ~256 KB of packed weights, so a block stays in L2
  // while every row strip streams past it (A is read in place, or its strip re-packed per block).
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  const int64_t panel_bytes = int64_t(NR) * KG * quads;
  const int64_t block_cols = imin(p.cols, (262144 / (panel_bytes > 0 ? panel_bytes : 1) + 1) * NR);
  for (int64_t jb = 0; jb < p.cols; jb += block_cols) {
    const int64_t jend = imin(p.cols, jb + block_cols);
    for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
      const int R = int(imin(MR, p.rows - r0));
      if (in_place) {
        for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const char*>(p.a + (r0 + r) * p.lda);
      } else {
        pack_strip(p, r0, R, quads, ap);
        for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const char*>(ap + r);
      }
      for (int64_t j0 = jb; j0 < jend; j0 += NR) {
        const int w = int(imin(NR, p.cols - j0));
        const TileFn fn = w <= 16 ? (in_place ? kTiles<1, KG>[R] : kTiles<1, KG * MR>[R])
                                  : (in_place ? kTiles<2, KG>[R] : kTiles<2, KG * MR>[R]);
        fn(rows, p.bp + (j0 / NR) * NR * KG * quads, quads, o, r0, j0, w);
      }
    }
  }
}

}  // namespace ep::avx512
