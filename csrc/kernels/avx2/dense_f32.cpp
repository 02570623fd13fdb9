// AVX2+FMA dense fp32 kernel: register-blocked 6x16 micro-kernel over B packed in 16-column
// panels, cache-blocked over depth (KC) so a 6-row strip of A stays in L1 while the packed
// panels stream from L2. Built with -mavx2 -mfma for this file only.
//
// Consumes: DenseF32Args (a, bp with tile 16, bias). Produces: y.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx2 {

namespace {

// (no std:: templates in ISA files: see thread_scratch in kernels.h)
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int NR = 16;
constexpr int MR = 6;
constexpr int64_t KC = 384;

// C[MR x 16] (+)= A[MR x kc] * Bpanel[kc x 16]; `init` is the starting tile (bias or y),
// written back clamped when `last`.
template <int R>
inline void micro(const float* a, int64_t lda, const float* bp, int64_t kc, const float* init,
                  int64_t ldi, float* out, int64_t ldo, bool last, __m256 lo, __m256 hi) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm256_loadu_ps(init + r * ldi);
    c1[r] = _mm256_loadu_ps(init + r * ldi + 8);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bp + k * NR);
    const __m256 b1 = _mm256_loadu_ps(bp + k * NR + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    if (last) {
      c0[r] = _mm256_min_ps(_mm256_max_ps(c0[r], lo), hi);
      c1[r] = _mm256_min_ps(_mm256_max_ps(c1[r], lo), hi);
    }
    _mm256_storeu_ps(out + r * ldo, c0[r]);
    _mm256_storeu_ps(out + r * ldo + 8, c1[r]);
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, int64_t, float*,
                         int64_t, bool, __m256, __m256);
constexpr MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};

}  // namespace

void dense_f32(const DenseF32Args& p) {
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  alignas(32) float tmp[MR * NR];   // staging for a partial panel (cols tail)
  alignas(32) float init[MR * NR];  // starting tile when it comes from the bias
  for (int64_t k0 = 0; k0 < p.depth || k0 == 0; k0 += KC) {
    const int64_t kc = imin(KC, p.depth - k0);
    const bool first = k0 == 0, last = k0 + KC >= p.depth;
    // Panels in blocks of at most ~256 KB of packed B, so a block stays in L2 while every row
    // strip passes over it (a B as large as L2, as in the 1x1-conv layout, would thrash).
    const int64_t block_cols = imin(p.cols, (65536 / (kc > 0 ? kc : 1) / NR + 1) * NR);
    for (int64_t jb = 0; jb < p.cols; jb += block_cols) {
      const int64_t jend = imin(p.cols, jb + block_cols);
      for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
        const int R = int(imin(MR, p.rows - r0));
        const float* a = p.a + r0 * p.lda + k0;
        if (first && p.bias_per_row)  // one starting tile for the whole strip: bias of each row
          for (int r = 0; r < R; ++r)
            for (int j = 0; j < NR; ++j) init[r * NR + j] = p.bias ? p.bias[r0 + r] : 0.0f;
        for (int64_t j0 = jb; j0 < jend; j0 += NR) {
          const int w = int(imin(NR, p.cols - j0));
          const float* bp = p.bp + (j0 / NR) * NR * p.depth + k0 * NR;
          float* y = p.y + r0 * p.ldy + j0;
          const float* src;
          int64_t lds;
          if (first && w == NR && !p.bias_per_row) {
            // every row starts from the same 16 values: read them with a zero row stride
            static const float zeros[NR] = {};
            src = p.bias ? p.bias + j0 : zeros;
            lds = 0;
          } else if (first) {
            if (!p.bias_per_row)  // a partial panel of a per-column bias
              for (int r = 0; r < R; ++r)
                for (int j = 0; j < NR; ++j) init[r * NR + j] = !p.bias || j >= w ? 0.0f : p.bias[j0 + j];
            src = init;
            lds = NR;
          } else if (w == NR) {
            src = y;
            lds = p.ldy;
          } else {
            for (int r = 0; r < R; ++r)
              for (int j = 0; j < NR; ++j) tmp[r * NR + j] = j < w ? y[r * p.ldy + j] : 0.0f;
            src = tmp;
            lds = NR;
          }
          if (w == NR) {
            kMicro[R](a, p.lda, bp, kc, src, lds, y, p.ldy, last, lo, hi);
          } else {
            kMicro[R](a, p.lda, bp, kc, src, lds, tmp, NR, last, lo, hi);
            for (int r = 0; r < R; ++r)
              for (int j = 0; j < w; ++j) y[r * p.ldy + j] = tmp[r * NR + j];
          }
        }
      }
    }
    if (p.depth == 0) break;
  }
}

}  // namespace ep::avx2
