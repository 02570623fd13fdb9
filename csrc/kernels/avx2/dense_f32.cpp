// AVX2+FMA dense fp32 kernel: register-blocked 6x16 micro-kernel over B packed in 16-column
// panels (6x8 or 6x16 under lane masks for a last partial panel), and a one-row kernel over several
// panels for GEMVs; the cache-blocking driver around them is dense_f32_impl.h. Built with -mavx2
// -mfma for this file only.
//
// Consumes: DenseF32Args (a, bp with tile 16, bias). Produces: y.
#include <immintrin.h>

#include "kernels/kernels.h"

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
namespace ep::avx2 {

namespace {

constexpr int NR = 16;
constexpr int MR = 6;
constexpr int64_t KC = 384;

// C[R x 8NV] (+)= A[R x kc] * Bpanel[kc x 8NV] (the panel's first NV vectors); `init` is the
// starting tile (bias or y), written back clamped when `last`. With M, the last vector of each
// row is read and written under the lane mask `tail` (a partial panel).
template <int R, int NV, bool M>
inline void tile(const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                 const float* init, int64_t ldi, float* out, int64_t ldo, bool last, __m256 lo,
                 __m256 hi, __m256i tail) {
  __m256 c[R][NV];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v)
      c[r][v] = M && v == NV - 1 ? _mm256_maskload_ps(init + r * ldi + 8 * v, tail)
                                 : _mm256_loadu_ps(init + r * ldi + 8 * v);
  for (int64_t k = 0; k < kc; ++k) {
    __m256 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(bp + k * ldb + 8 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
      for (int v = 0; v < NV; ++v) c[r][v] = _mm256_fmadd_ps(av, b[v], c[r][v]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      // the bounds first: max / min return their second operand when either is NaN, so a NaN
      // sum stays NaN, as in TFLite
      if (last) c[r][v] = _mm256_min_ps(hi, _mm256_max_ps(lo, c[r][v]));
      if (M && v == NV - 1)
        _mm256_maskstore_ps(out + r * ldo + 8 * v, tail, c[r][v]);
      else
        _mm256_storeu_ps(out + r * ldo + 8 * v, c[r][v]);
    }
}

// C[R x 16] (+)= A[R x kc] * Bpanel[kc x 16]
template <int R>
inline void micro(const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                  const float* init, int64_t ldi, float* out, int64_t ldo, bool last, __m256 lo,
                  __m256 hi) {
  tile<R, 2, false>(a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi, __m256i{});
}

// A partial panel of 1 <= w < 16 columns: one vector per row up to 8 columns (half the
// multiply-adds of a whole panel: the 24-, 40- and 56-channel layers of MobileNets and
// EfficientNets end in one), else two; the columns past w are neither read from init nor written.
template <int R>
inline void micro_masked(int w, const float* a, int64_t lda, const float* bp, int64_t ldb,
                         int64_t kc, const float* init, int64_t ldi, float* out, int64_t ldo,
                         bool last, __m256 lo, __m256 hi) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(w > 8 ? w - 8 : w), lane);
  if (w <= 8)
    tile<R, 1, true>(a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi, tail);
  else
    tile<R, 2, true>(a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi, tail);
}

// One row over P whole panels side by side (ps floats apart) and, with T, a last partial panel of
// `tail` columns after them (its packed columns are zero padded; init and out are read and written
// under lane masks): 2P (+2) independent sums, where micro<1> has 2 and so waits on the FMA
// latency every step (an FC layer at batch 1 ran below numpy's GEMV). Each output's sum is the
// same FMAs in the same order as in micro, so the bits are the same.
template <int P, bool T>
void row_panels(const float* a, const float* bp, int64_t ps, int64_t kc, const float* init,
                float* out, int tail, bool last, __m256 lo, __m256 hi) {
  constexpr int Q = P + (T ? 1 : 0);
  // lane j of the partial panel's vector v is on when 8v + j < tail
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail - 8), lane);
  __m256 c[Q][2];
#pragma GCC unroll 5
  for (int q = 0; q < P; ++q) {
    c[q][0] = _mm256_loadu_ps(init + q * NR);
    c[q][1] = _mm256_loadu_ps(init + q * NR + 8);
  }
  if constexpr (T) {
    c[P][0] = _mm256_maskload_ps(init + P * NR, m0);
    c[P][1] = _mm256_maskload_ps(init + P * NR + 8, m1);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 av = _mm256_broadcast_ss(a + k);
#pragma GCC unroll 5
    for (int q = 0; q < Q; ++q)
      for (int v = 0; v < 2; ++v)
        c[q][v] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp + q * ps + k * NR + 8 * v), c[q][v]);
  }
#pragma GCC unroll 5
  for (int q = 0; q < Q; ++q)
    for (int v = 0; v < 2; ++v)
      if (last) c[q][v] = _mm256_min_ps(hi, _mm256_max_ps(lo, c[q][v]));
#pragma GCC unroll 5
  for (int q = 0; q < P; ++q) {
    _mm256_storeu_ps(out + q * NR, c[q][0]);
    _mm256_storeu_ps(out + q * NR + 8, c[q][1]);
  }
  if constexpr (T) {
    _mm256_maskstore_ps(out + P * NR, m0, c[P][0]);
    _mm256_maskstore_ps(out + P * NR + 8, m1, c[P][1]);
  }
}

// Written once per ISA on purpose: avx2/, avx512/ and neon/ hold this loop in their own
// intrinsics and each file is compiled alone with its ISA's flags; the ISA-independent part is
// shared through the *_impl.h / *_dot.h headers.
using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, const float*,
                         int64_t, float*, int64_t, bool, __m256, __m256);
constexpr MicroFn kMicro[MR + 1] = {nullptr,  micro<1>, micro<2>, micro<3>,
                                    micro<4>, micro<5>, micro<6>};
using MaskedFn = void (*)(int, const float*, int64_t, const float*, int64_t, int64_t, const float*,
                          int64_t, float*, int64_t, bool, __m256, __m256);
constexpr MaskedFn kMasked[MR + 1] = {nullptr,         micro_masked<1>, micro_masked<2>,
                                      micro_masked<3>, micro_masked<4>, micro_masked<5>,
                                      micro_masked<6>};

struct K {
  using V = __m256;
  static constexpr int MR = avx2::MR, NR = avx2::NR, Align = 32;
  static constexpr int64_t KC = avx2::KC;
  static V set1(float f) { return _mm256_set1_ps(f); }
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
  // 4 panels and a partial one: 10 sums in flight, in 16 ymm registers with the broadcast
  static constexpr int kRowPanels = 4;
  static void row_panels(int np, int tail, const float* a, const float* bp, int64_t ps, int64_t kc,
                         const float* init, float* out, bool last, V lo, V hi) {
    using Fn = void (*)(const float*, const float*, int64_t, int64_t, const float*, float*, int,
                        bool, __m256, __m256);
    static constexpr Fn whole[] = {nullptr, avx2::row_panels<1, false>, avx2::row_panels<2, false>,
                                   avx2::row_panels<3, false>, avx2::row_panels<4, false>};
    static constexpr Fn with_tail[] = {avx2::row_panels<0, true>, avx2::row_panels<1, true>,
                                       avx2::row_panels<2, true>, avx2::row_panels<3, true>,
                                       avx2::row_panels<4, true>};
    (tail ? with_tail : whole)[np](a, bp, ps, kc, init, out, tail, last, lo, hi);
  }
};
#include "kernels/dense_f32_impl.h"

}  // namespace

void dense_f32(const DenseF32Args& p) { dense_driver<K>(p); }

}  // namespace ep::avx2
