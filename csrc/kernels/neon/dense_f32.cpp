// NEON dense fp32 kernel: register-blocked 6x16 micro-kernel (24 of the 32 q registers) over B packed in 16-column
// panels, cache-blocked over depth (KC) so a 6-row strip of A stays in L1 while the packed
// panels stream from L2. Baseline AArch64, no extra flags.
//
// Consumes: DenseF32Args (a, bp with tile 16, bias). Produces: y.
#include <arm_neon.h>

#include "kernels/kernels.h"

namespace ep::neon {

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
                  int64_t ldi, float* out, int64_t ldo, bool last, float32x4_t lo, float32x4_t hi) {
  float32x4_t c[R][4];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) c[r][q] = vld1q_f32(init + r * ldi + 4 * q);
  for (int64_t k = 0; k < kc; ++k) {
    const float32x4_t b0 = vld1q_f32(bp + k * NR), b1 = vld1q_f32(bp + k * NR + 4),
                      b2 = vld1q_f32(bp + k * NR + 8), b3 = vld1q_f32(bp + k * NR + 12);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const float av = a[r * lda + k];
      c[r][0] = vfmaq_n_f32(c[r][0], b0, av);
      c[r][1] = vfmaq_n_f32(c[r][1], b1, av);
      c[r][2] = vfmaq_n_f32(c[r][2], b2, av);
      c[r][3] = vfmaq_n_f32(c[r][3], b3, av);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) {
      if (last) c[r][q] = vminq_f32(vmaxq_f32(c[r][q], lo), hi);
      vst1q_f32(out + r * ldo + 4 * q, c[r][q]);
    }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, int64_t, float*,
                         int64_t, bool, float32x4_t, float32x4_t);
constexpr MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};

}  // namespace

void dense_f32(const DenseF32Args& p) {
  const float32x4_t lo = vdupq_n_f32(p.lo), hi = vdupq_n_f32(p.hi);
  alignas(16) float tmp[MR * NR];   // staging for a partial panel (cols tail)
  alignas(16) float init[MR * NR];  // starting tile when it comes from the bias
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

}  // namespace ep::neon
