// AVX-512 VNNI int8 GEMM: vpdpbusd (u8 x s8 -> int32, four products per lane, no intermediate
// saturation) on an 8x32 register tile. vpdpbusd can broadcast only its signed operand from
// memory, so the activations take that role (one instruction per row and k-quad, broadcast
// included) and the weights are made unsigned (w ^ 0x80 = w + 128, on load); the offset is removed
// exactly with 128 * (sum of the row's activations). Weights packed in 32-column panels of
// k-quads. Built with AVX-512 (+VNNI) flags for this file only.
//
// Consumes: GemmS8Args (a, bp with tile 32 / k-group 4, bias, scale). Produces: y int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {

constexpr int NR = 32, MR = 8, KG = 4;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <int R>
inline void tile(const int32_t* ap, const int8_t* bp, int64_t quads, __m512i out[MR][2]) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  // Local accumulators, written to `out` once at the end: accumulating through `out` would make
  // every vpdpbusd a load-modify-store (bp is a char pointer, so it may alias `out`).
  __m512i acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int64_t q = 0; q < quads; ++q) {
    const __m512i b0 = _mm512_xor_si512(_mm512_loadu_si512(bp + q * NR * KG), flip);
    const __m512i b1 = _mm512_xor_si512(_mm512_loadu_si512(bp + q * NR * KG + 64), flip);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      // the activation quad broadcast straight from memory ({1to16}): GCC does not fold
      // _mm512_set1_epi32 into vpdpbusd by itself, and the separate broadcast costs a uop per row
      __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc[r][0]) : "v"(b0), "m"(ap[q * MR + r]));
      __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc[r][1]) : "v"(b1), "m"(ap[q * MR + r]));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

using TileFn = void (*)(const int32_t*, const int8_t*, int64_t, __m512i (*)[2]);
constexpr TileFn kTile[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>,
                                  tile<5>, tile<6>, tile<7>, tile<8>};

}  // namespace

void gemm_s8(const GemmS8Args& p) {
  const int64_t quads = (p.depth + KG - 1) / KG;
  int32_t* ap = static_cast<int32_t*>(thread_scratch(1, size_t(quads) * MR * sizeof(int32_t)));
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const __m512i zp = _mm512_set1_epi32(p.zp_out);
  alignas(64) int32_t badj[NR];
  int32_t rowsum[MR];
  alignas(64) float scale[NR];
  __m512i acc[MR][2];
  // Panels are taken in blocks of at most ~256 KB of packed weights, so a block stays in L2
  // while every row strip streams past it (the A strip is re-packed per block: cheap).
  const int64_t panel_bytes = int64_t(NR) * KG * quads;
  const int64_t block_cols = imin(p.cols, (262144 / (panel_bytes > 0 ? panel_bytes : 1) + 1) * NR);
  for (int64_t jb = 0; jb < p.cols; jb += block_cols) {
    const int64_t jend = imin(p.cols, jb + block_cols);
    for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
      const int R = int(imin(MR, p.rows - r0));
      // A strip as s8 quads, row-interleaved: ap[q * MR + r] = bytes x[r][4q..4q+3] (a quad is 4
      // consecutive bytes of the row: one unaligned 32-bit load), plus each row's sum
      const int64_t full = p.depth / KG;
      for (int r = 0; r < MR; ++r) {
        const int8_t* x = p.a + (r0 + r) * p.lda;
        rowsum[r] = 0;
        if (r >= R) {
          for (int64_t q = 0; q < quads; ++q) ap[q * MR + r] = 0;
          continue;
        }
        int32_t sum = 0;
        for (int64_t k = 0; k < p.depth; ++k) sum += x[k];
        rowsum[r] = sum;
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
      for (int64_t j0 = jb; j0 < jend; j0 += NR) {
        const int w = int(imin(NR, p.cols - j0));
        for (int j = 0; j < NR; ++j) {
          badj[j] = j < w ? p.bias[j0 + j] : 0;
          scale[j] = j < w ? p.scale[j0 + j] : 0.0f;
        }
        kTile[R](ap, p.bp + (j0 / NR) * NR * KG * quads, quads, acc);
        const __mmask16 m0 = w >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << w) - 1);
        const __mmask16 m1 = w >= 32   ? __mmask16(0xFFFF)
                             : w <= 16 ? __mmask16(0)
                                       : __mmask16((1u << (w - 16)) - 1);
        for (int r = 0; r < R; ++r)
          for (int h = 0; h < 2; ++h) {
            const __m512i off = _mm512_set1_epi32(-128 * rowsum[r]);
            const __m512i v = _mm512_add_epi32(_mm512_add_epi32(acc[r][h], off),
                                               _mm512_load_si512(badj + 16 * h));
            __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_load_ps(scale + 16 * h));
            f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
            const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);  // MXCSR: nearest even
            _mm_mask_storeu_epi8(p.y + (r0 + r) * p.ldy + j0 + 16 * h, h ? m1 : m0,
                                 _mm512_cvtepi32_epi8(q));
          }
      }
    }
  }
}

}  // namespace ep::avx512
