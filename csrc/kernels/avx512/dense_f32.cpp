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

// C[R x 16V] (+)= A[R x kc] * Bpanel[kc x 16V]; `init` is the starting tile (bias or y), written
// back clamped when `last`. With Partial, the last of the V vectors of every row is read from
// `init` and written to `out` through the lane mask `tail`: the last panel of a layer whose width
// is not a multiple of 32 (16- and 24-channel layers, a 1000-class head) computes only the
// vectors that hold columns and needs no staging copy.
template <int R, int V, bool Partial>
inline void tile(const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                 const float* init, int64_t ldi, float* out, int64_t ldo, bool last, __m512 lo,
                 __m512 hi, __mmask16 tail) {
  __m512 c[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      c[r][v] = Partial && v == V - 1 ? _mm512_maskz_loadu_ps(tail, init + r * ldi + 16 * v)
                                      : _mm512_loadu_ps(init + r * ldi + 16 * v);
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[V];
    for (int v = 0; v < V; ++v) b[v] = _mm512_loadu_ps(bp + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      for (int v = 0; v < V; ++v) c[r][v] = _mm512_fmadd_ps(av, b[v], c[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      // the bounds first: max / min return their second operand when either is NaN, so a NaN
      // sum stays NaN, as in TFLite
      if (last) c[r][v] = _mm512_min_ps(hi, _mm512_max_ps(lo, c[r][v]));
      if (Partial && v == V - 1)
        _mm512_mask_storeu_ps(out + r * ldo + 16 * v, tail, c[r][v]);
      else
        _mm512_storeu_ps(out + r * ldo + 16 * v, c[r][v]);
    }
}

template <int R>
inline void micro(const float* a, int64_t lda, const float* bp, int64_t ldb, int64_t kc,
                  const float* init, int64_t ldi, float* out, int64_t ldo, bool last, __m512 lo,
                  __m512 hi) {
  tile<R, 2, false>(a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi, 0xFFFF);
}

// A partial panel of 1 <= w < 32 columns: one vector per row up to 16 columns, else two.
template <int R>
inline void micro_masked(int w, const float* a, int64_t lda, const float* bp, int64_t ldb,
                         int64_t kc, const float* init, int64_t ldi, float* out, int64_t ldo,
                         bool last, __m512 lo, __m512 hi) {
  const int rest = w > 16 ? w - 16 : w;
  const __mmask16 tail = rest >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rest) - 1);
  if (w <= 16)
    tile<R, 1, true>(a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi, tail);
  else
    tile<R, 2, true>(a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi, tail);
}

// One row over P whole panels side by side (ps floats apart) and, with T, a last partial panel of
// `tail` columns after them (its packed columns are zero padded; init and out are read and written
// under masks): 2P (+2) independent sums where one panel at a time has 2, whose FMA latency
// bounded a GEMV (an FC layer at batch 1) below numpy's. Each output's sum is the same FMAs in
// the same order as in tile, so the bits are the same.
template <int P, bool T>
void row_panels(const float* a, const float* bp, int64_t ps, int64_t kc, const float* init,
                float* out, int tail, bool last, __m512 lo, __m512 hi) {
  constexpr int Q = P + (T ? 1 : 0);
  __mmask16 m[Q][2];
  for (int q = 0; q < Q; ++q)
    for (int v = 0; v < 2; ++v) {
      const int cols = T && q == P ? tail - 16 * v : 16;
      m[q][v] = cols >= 16 ? __mmask16(0xFFFF) : cols <= 0 ? 0 : __mmask16((1u << cols) - 1);
    }
  __m512 c[Q][2];
#pragma GCC unroll 5
  for (int q = 0; q < Q; ++q)
    for (int v = 0; v < 2; ++v) c[q][v] = _mm512_maskz_loadu_ps(m[q][v], init + q * NR + 16 * v);
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 av = _mm512_set1_ps(a[k]);
#pragma GCC unroll 5
    for (int q = 0; q < Q; ++q)
      for (int v = 0; v < 2; ++v)
        c[q][v] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp + q * ps + k * NR + 16 * v), c[q][v]);
  }
#pragma GCC unroll 5
  for (int q = 0; q < Q; ++q)
    for (int v = 0; v < 2; ++v) {
      if (last) c[q][v] = _mm512_min_ps(hi, _mm512_max_ps(lo, c[q][v]));
      _mm512_mask_storeu_ps(out + q * NR + 16 * v, m[q][v], c[q][v]);
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
  static constexpr int kRowPanels = 4;
  static void row_panels(int np, int tail, const float* a, const float* bp, int64_t ps, int64_t kc,
                         const float* init, float* out, bool last, V lo, V hi) {
    using Fn = void (*)(const float*, const float*, int64_t, int64_t, const float*, float*, int,
                        bool, __m512, __m512);
    static constexpr Fn whole[] = {nullptr, avx512::row_panels<1, false>,
                                   avx512::row_panels<2, false>, avx512::row_panels<3, false>,
                                   avx512::row_panels<4, false>};
    static constexpr Fn with_tail[] = {avx512::row_panels<0, true>, avx512::row_panels<1, true>,
                                       avx512::row_panels<2, true>, avx512::row_panels<3, true>,
                                       avx512::row_panels<4, true>};
    (tail ? with_tail : whole)[np](a, bp, ps, kc, init, out, tail, last, lo, hi);
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
