// AVX-512 dense fp32 kernel: register-blocked 8x32 micro-kernel over B packed in 32-column
// panels; the cache-blocking driver around it is dense_f32_impl.h. Built with -mavx512f
// -mavx512bw -mavx512vl -mfma for this file only.
//
// Consumes: DenseF32Args (a, bp with tile 32, bias). Produces: y.
#include <immintrin.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::avx512 {

namespace {

constexpr int NR = 32;
constexpr int MR = 8;
constexpr int64_t KC = 256;

// C[MR x 32] (+)= A[MR x kc] * Bpanel[kc x 32]; `init` is the starting tile (bias or y),
// written back clamped when `last`.
template <int R>
inline void micro(const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                  const float* init, int64_t ldi, float* out, int64_t ldo, bool last, __m512 lo,
                  __m512 hi) {
  __m512 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm512_loadu_ps(init + r * ldi);
    c1[r] = _mm512_loadu_ps(init + r * ldi + 16);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * ldb);
    const __m512 b1 = _mm512_loadu_ps(bp + k * ldb + 16);
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

// The last, partial panel (w < 32 columns: 16- and 24-channel layers, a 1000-class head's tail):
// only the vectors that hold columns are computed, and init / out are read and written through
// lane masks, so no padded columns are multiplied and no staging copy is made.
template <int R>
inline void micro_masked(int w, const float* a, int64_t lda, const float* bp, int64_t ldb,
                         int64_t kc, const float* init, int64_t ldi, float* out, int64_t ldo,
                         bool last, __m512 lo, __m512 hi) {
  const __mmask16 m0 = w >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << w) - 1);
  if (w <= 16) {
    __m512 c0[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) c0[r] = _mm512_maskz_loadu_ps(m0, init + r * ldi);
    for (int64_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_loadu_ps(bp + k * ldb);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        c0[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + k]), b0, c0[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (last) c0[r] = _mm512_min_ps(_mm512_max_ps(c0[r], lo), hi);
      _mm512_mask_storeu_ps(out + r * ldo, m0, c0[r]);
    }
    return;
  }
  const __mmask16 m1 = __mmask16((1u << (w - 16)) - 1);
  __m512 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm512_loadu_ps(init + r * ldi);
    c1[r] = _mm512_maskz_loadu_ps(m1, init + r * ldi + 16);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * ldb);
    const __m512 b1 = _mm512_loadu_ps(bp + k * ldb + 16);
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
    _mm512_mask_storeu_ps(out + r * ldo + 16, m1, c1[r]);
  }
}

using MaskedFn = void (*)(int, const float*, int64_t, const float*, int64_t, int64_t, const float*,
                          int64_t, float*, int64_t, bool, __m512, __m512);
constexpr MaskedFn kMasked[MR + 1] = {nullptr,         micro_masked<1>, micro_masked<2>,
                                      micro_masked<3>, micro_masked<4>, micro_masked<5>,
                                      micro_masked<6>, micro_masked<7>, micro_masked<8>};

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, const float*,
                         int64_t, float*, int64_t, bool, __m512, __m512);
constexpr MicroFn kMicro[MR + 1] = {nullptr,  micro<1>, micro<2>, micro<3>, micro<4>,
                                    micro<5>, micro<6>, micro<7>, micro<8>};

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
struct K {
  using V = __m512;
  static constexpr int MR = avx512::MR, NR = avx512::NR, Align = 64;
  static constexpr int64_t KC = avx512::KC;
  static V set1(float f) { return _mm512_set1_ps(f); }
  static void micro(int R, const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                    const float* init, int64_t ldi, float* out, int64_t ldo, bool last, V lo,
                    V hi) {
    kMicro[R](a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi);
  }
  static constexpr bool kHasMasked = true;
  static void micro_masked(int R, int w, const float* a, int64_t lda, const float* bp, int64_t ldb,
                           int64_t kc, const float* init, int64_t ldi, float* out, int64_t ldo,
                           bool last, V lo, V hi) {
    kMasked[R](w, a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi);
  }
};
#include "kernels/dense_f32_impl.h"

}  // namespace

void dense_f32(const DenseF32Args& p) { dense_driver<K>(p); }

}  // namespace ep::avx512
