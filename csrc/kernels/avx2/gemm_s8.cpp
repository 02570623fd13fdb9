// AVX2 int8 GEMM, exact: both operands widened to int16 and multiplied with vpmaddwd (two
// products summed straight into int32), so there is no vpmaddubsw int16 saturation. 6x16
// register tile; weights packed in 16-column panels of k-pairs and widened on load.
// Built with -mavx2 -mfma for this file only.
//
// Consumes: GemmS8Args (a, bp with tile 16 / k-group 2, bias, scale). Produces: y int8.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx2 {

namespace {

constexpr int NR = 16, MR = 6, KG = 2;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <int R>
inline void tile(const int32_t* ap, const int8_t* bp, int64_t pairs, __m256i out[MR][2]) {
  // Local accumulators, written to `out` once at the end: accumulating through `out` would make
  // every step a load-modify-store (bp is a char pointer, so it may alias `out`).
  __m256i acc[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (int64_t q = 0; q < pairs; ++q) {
    const __m256i b0 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bp + q * NR * KG)));
    const __m256i b1 = _mm256_cvtepi8_epi16(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(bp + q * NR * KG + 16)));
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256i a = _mm256_set1_epi32(ap[q * MR + r]);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(a, b1));
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

using TileFn = void (*)(const int32_t*, const int8_t*, int64_t, __m256i (*)[2]);
constexpr TileFn kTile[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

}  // namespace

void gemm_s8(const GemmS8Args& p) {
  const int64_t pairs = (p.depth + KG - 1) / KG;
  int32_t* ap = static_cast<int32_t*>(thread_scratch(1, size_t(pairs) * MR * sizeof(int32_t)));
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  const __m256i zp = _mm256_set1_epi32(p.zp_out);
  alignas(32) int32_t bias[NR], out[NR];
  alignas(32) float scale[NR];
  __m256i acc[MR][2];
  // Panels are taken in blocks of at most ~256 KB of packed weights, so a block stays in L2
  // while every row strip streams past it (the A strip is re-packed per block: cheap).
  // Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
  // intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
  // shared through the *_impl.h / *_dot.h headers.
  const int64_t panel_bytes = int64_t(NR) * KG * pairs;
  const int64_t block_cols = imin(p.cols, (262144 / (panel_bytes > 0 ? panel_bytes : 1) + 1) * NR);
  for (int64_t jb = 0; jb < p.cols; jb += block_cols) {
    const int64_t jend = imin(p.cols, jb + block_cols);
    for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
      const int R = int(imin(MR, p.rows - r0));
      // A strip as int16 pairs, row-interleaved: ap[q * MR + r] = (x[r][2q], x[r][2q+1])
      const int64_t full = p.depth / KG;
      for (int r = 0; r < MR; ++r) {
        const int8_t* x = p.a + (r0 + r) * p.lda;
        if (r >= R) {
          for (int64_t q = 0; q < pairs; ++q) ap[q * MR + r] = 0;
          continue;
        }
        for (int64_t q = 0; q < full; ++q)
          ap[q * MR + r] = int32_t(uint32_t(uint16_t(int16_t(x[2 * q]))) |
                                   (uint32_t(uint16_t(int16_t(x[2 * q + 1]))) << 16));
        if (full < pairs) ap[full * MR + r] = int32_t(uint32_t(uint16_t(int16_t(x[2 * full]))));
      }
      for (int64_t j0 = jb; j0 < jend; j0 += NR) {
        const int w = int(imin(NR, p.cols - j0));
        for (int j = 0; j < NR; ++j) {
          bias[j] = j < w ? p.bias[j0 + j] : 0;
          scale[j] = j < w ? p.scale[j0 + j] : 0.0f;
        }
        kTile[R](ap, p.bp + (j0 / NR) * NR * KG * pairs, pairs, acc);
        for (int r = 0; r < R; ++r) {
          for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_add_epi32(
                acc[r][h], _mm256_load_si256(reinterpret_cast<const __m256i*>(bias + 8 * h)));
            __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_load_ps(scale + 8 * h));
            f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
            const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(f), zp);  // MXCSR: nearest even
            _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8 * h), q);
          }
          int8_t* y = p.y + (r0 + r) * p.ldy + j0;
          for (int j = 0; j < w; ++j) y[j] = int8_t(out[j]);
        }
      }
    }
  }
}

}  // namespace ep::avx2
