// NEON dense fp32 kernel: register-blocked 6x16 micro-kernel (24 of the 32 q registers) over B
// packed in 16-column panels; the cache-blocking driver around it is dense_f32_impl.h. Baseline
// AArch64, no extra flags.
//
// Consumes: DenseF32Args (a, bp with tile 16, bias). Produces: y.
#include <arm_neon.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::neon {

namespace {

constexpr int NR = 16;
constexpr int MR = 6;
constexpr int64_t KC = 384;

// C[MR x 16] (+)= A[MR x kc] * Bpanel[kc x 16]; `init` is the starting tile (bias or y),
// written back clamped when `last`.
template <int R>
inline void micro(const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                  const float* init, int64_t ldi, float* out, int64_t ldo, bool last,
                  float32x4_t lo, float32x4_t hi) {
  float32x4_t c[R][4];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) c[r][q] = vld1q_f32(init + r * ldi + 4 * q);
  for (int64_t k = 0; k < kc; ++k) {
    const float32x4_t b0 = vld1q_f32(bp + k * ldb), b1 = vld1q_f32(bp + k * ldb + 4),
                      b2 = vld1q_f32(bp + k * ldb + 8), b3 = vld1q_f32(bp + k * ldb + 12);
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

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, const float*,
                         int64_t, float*, int64_t, bool, float32x4_t, float32x4_t);
constexpr MicroFn kMicro[MR + 1] = {nullptr,  micro<1>, micro<2>, micro<3>,
                                    micro<4>, micro<5>, micro<6>};

struct K {
  using V = float32x4_t;
  static constexpr int MR = neon::MR, NR = neon::NR, Align = 16;
  static constexpr int64_t KC = neon::KC;
  static V set1(float f) { return vdupq_n_f32(f); }
  static void micro(int R, const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                    const float* init, int64_t ldi, float* out, int64_t ldo, bool last, V lo,
                    V hi) {
    kMicro[R](a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi);
  }
};
#include "kernels/dense_f32_impl.h"

}  // namespace

void dense_f32(const DenseF32Args& p) { dense_driver<K>(p); }

}  // namespace ep::neon
