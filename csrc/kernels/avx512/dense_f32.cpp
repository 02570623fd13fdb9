// AVX-512 dense fp32 kernel: register-blocked 8x32 micro-kernel over B packed in 32-column
// panels, cache-blocked over depth (KC) so a 6-row strip of A stays in L1 while the packed
// panels stream from L2. Built with -mavx512f -mavx512bw -mavx512vl -mfma for this file only.
//
// Consumes: DenseF32Args (a, bp with tile 32, bias). Produces: y.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {

// (no std:: templates in ISA files: see thread_scratch in kernels.h)
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int NR = 32;
constexpr int MR = 8;
constexpr int64_t KC = 256;

// C[MR x 32] (+)= A[MR x kc] * Bpanel[kc x 32]; `init` is the starting tile (bias or y),
// written back clamped when `last`.
template <int R>
inline void micro(const float* a, int64_t lda, const float* bp, int64_t kc, const float* init,
                  int64_t ldi, float* out, int64_t ldo, bool last, __m512 lo, __m512 hi) {
  __m512 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm512_loadu_ps(init + r * ldi);
    c1[r] = _mm512_loadu_ps(init + r * ldi + 16);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * NR);
    const __m512 b1 = _mm512_loadu_ps(bp + k * NR + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    if (last) {
      c0[r] = _mm512_min_ps(_mm512_max_ps(c0[r], lo), hi);
      c1[r] = _mm512_min_ps(_mm512_max_ps(c1[r], lo), hi);
    }
    _mm512_storeu_ps(out + r * ldo, c0[r]);
    _mm512_storeu_ps(out + r * ldo + 16, c1[r]);
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, int64_t, float*,
                         int64_t, bool, __m512, __m512);
constexpr MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>, micro<7>, micro<8>};

}  // namespace

void dense_f32(const DenseF32Args& p) {
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  alignas(64) float tmp[MR * NR];   // staging for a partial panel (cols tail)
  alignas(64) float init[MR * NR];  // starting tile when it comes from the bias
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
            // every row starts from the same 32 values: read them with a zero row stride
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

}  // namespace ep::avx512
