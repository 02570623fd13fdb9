// The loops of vec.h, written so the compiler vectorises the channel loop with the flags of the
// file that includes this header (EP_VEC_NS names that file's namespace). No intrinsics, one
// source for every path, except LOGISTIC, TANH and GELU on AVX-512, whose rcp14 and scalef
// have no portable spelling (logistic16, tanh16, gelu16); elsewhere their 16-lane forms are
// written in the vector extension at the register's width (exp_v and the others). BATCH_MATMUL's
// matmul calls the kernel tier's dense GEMM.
#if defined(__AVX512F__)
#include <immintrin.h>

#include "runtime/ops/isa/exp_avx512.h"
#endif
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/ops/vec.h"

namespace ep {
namespace rt {
namespace EP_VEC_NS {

namespace {

inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// 16 floats in the path's vector registers (GCC / clang vector extension: one zmm, two ymm, four
// xmm or four NEON q registers), loaded and stored unaligned.
typedef float V16 __attribute__((vector_size(64)));
typedef float V16u __attribute__((vector_size(64), aligned(4)));
inline V16 load16(const float* p) { return *reinterpret_cast<const V16u*>(p); }
inline void store16(float* p, V16 v) { *reinterpret_cast<V16u*>(p) = v; }

// One register of the path (16 floats with AVX-512, 8 with AVX2, else 4). GCC splits a V16 that
// spans several registers, and then runs its comparisons and selects lane by lane (scalar code: the
// RGB stem ran at 0.9 G multiply-adds/s on AVX2); the helpers below select register by register.
#if defined(__AVX512F__)
constexpr int kVA = 16;
#elif defined(__AVX2__)
constexpr int kVA = 8;
#else
constexpr int kVA = 4;
#endif
typedef float VA __attribute__((vector_size(4 * kVA)));
typedef float VAu __attribute__((vector_size(4 * kVA), aligned(4)));
typedef int32_t VAi __attribute__((vector_size(4 * kVA)));
inline VA loadA(const float* p) { return *reinterpret_cast<const VAu*>(p); }
inline void storeA(float* p, VA v) { *reinterpret_cast<VAu*>(p) = v; }
// (v - 0 is v for every v, -0 included, so the compiler drops the subtraction; 0 + v is not
// for -0, and it emitted an add before each broadcast, in the RGB stem's inner loop too)
inline VA splat(float v) { return v - VA{}; }
inline VA absA(VA x) { return (VA)((VAi)x & 0x7FFFFFFF); }

// Lane-wise a < b ? b : a (vmax) and a > b ? b : a (vmin): a NaN in a stays, one in b gives a
template <class F>
inline V16 per_register(V16 a, V16 b, F f) {
#if defined(__AVX512F__)
  return f(a, b);
#else
  VA pa[16 / kVA], pb[16 / kVA];
  __builtin_memcpy(pa, &a, sizeof(a));
  __builtin_memcpy(pb, &b, sizeof(b));
  for (int i = 0; i < 16 / kVA; ++i) pa[i] = f(pa[i], pb[i]);
  __builtin_memcpy(&a, pa, sizeof(a));
  return a;
#endif
}
inline V16 vmax(V16 a, V16 b) {
  return per_register(a, b, [](auto x, auto y) { return x < y ? y : x; });
}
inline V16 vmin(V16 a, V16 b) {
  return per_register(a, b, [](auto x, auto y) { return x > y ? y : x; });
}
inline V16 vmax(V16 a, float b) { return vmax(a, b - V16{}); }
inline V16 vmin(V16 a, float b) { return vmin(a, b - V16{}); }

// Channels [c0, c1) of one output pixel of a depthwise row, every tap checked against the image.
// The int8 twin (qdw_row in isa/int8_avx512.cpp) walks the same taps on purpose: its body
// accumulates in int32 with zero points and requantizes.
void dw_pixel_channels(const DwRowArgs& a, int64_t ox, int64_t c0, int64_t c1) {
  const int64_t c = a.c;
  float* __restrict__ y = a.y + ox * c;
  // fn(input offset, weight offset) for each tap inside the image, in (ky, kx) order
  auto each_tap = [&](auto&& fn) {
    for (int64_t ky = 0; ky < a.kh; ++ky) {
      const int64_t iy = a.oy * a.stride_h - a.pad_t + ky * a.dil_h;
      if (iy < 0 || iy >= a.h) continue;
      for (int64_t kx = 0; kx < a.kw; ++kx) {
        const int64_t ix = ox * a.stride_w - a.pad_l + kx * a.dil_w;
        if (ix >= 0 && ix < a.w) fn((iy * a.w + ix) * c, (ky * a.kw + kx) * c);
      }
    }
  };
  if (c1 - c0 >= 16 && a.kh * a.kw <= 9) {
    // Blocks of 16 channels in registers, the last one ending at c1 (overlapping the block
    // before it: those channels are computed again, to the same bits); the taps inside the
    // image are listed once for all blocks. Up to 3x3: a 5x5 walks 25 weight rows at once per
    // block, and measured slower than the tap-by-tap loop below on 14x14 and 7x7 planes with
    // 480-1152 channels.
    int64_t xo[9], wo[9];
    int n = 0;
    each_tap([&](int64_t xi, int64_t wi) { xo[n] = xi, wo[n++] = wi; });
    const float* __restrict__ x = a.x;
    const float* __restrict__ wt = a.wt;
    V16 lo, hi;
    for (int i = 0; i < 16; ++i) lo[i] = a.lo, hi[i] = a.hi;
    int64_t cb = c0;
    for (; cb + 64 <= c1; cb += 64) {  // four blocks: four independent chains over the taps
      V16 acc[4];
      for (int v = 0; v < 4; ++v) acc[v] = a.bias ? load16(a.bias + cb + 16 * v) : V16{};
      for (int t = 0; t < n; ++t)
        for (int v = 0; v < 4; ++v)
          acc[v] += load16(wt + wo[t] + cb + 16 * v) * load16(x + xo[t] + cb + 16 * v);
      for (int v = 0; v < 4; ++v) {
        store16(y + cb + 16 * v, vmin(vmax(acc[v], lo), hi));
      }
    }
    for (; cb < c1; cb += 16) {
      const int64_t b0 = std::min(cb, c1 - 16);
      V16 acc = a.bias ? load16(a.bias + b0) : V16{};
      for (int t = 0; t < n; ++t) acc += load16(wt + wo[t] + b0) * load16(x + xo[t] + b0);
      store16(y + b0, vmin(vmax(acc, lo), hi));
    }
    return;
  }
  if (a.bias)
    for (int64_t i = c0; i < c1; ++i) y[i] = a.bias[i];
  else
    for (int64_t i = c0; i < c1; ++i) y[i] = 0.0f;
  each_tap([&](int64_t xi, int64_t wi) {
    const float* __restrict__ x = a.x + xi;
    const float* __restrict__ w = a.wt + wi;
    for (int64_t i = c0; i < c1; ++i) y[i] += x[i] * w[i];
  });
  const float lo = a.lo, hi = a.hi;
  for (int64_t i = c0; i < c1; ++i) y[i] = std::min(std::max(y[i], lo), hi);
}

void dw_pixel(const DwRowArgs& a, int64_t ox) { dw_pixel_channels(a, ox, 0, a.c); }

// Vector registers of the path: the depthwise loop below keeps K*K weights, its accumulators
// and one input vector in them.
#if defined(__AVX512F__) || defined(__aarch64__)
constexpr int kRegs = 32;
#else
constexpr int kRegs = 16;
#endif

// One output row of a KxK depthwise conv (dilation 1, stride S across). Per block of one
// register of channels, the K*K weights are loaded once per row and stay in registers
// (where they fit: 3x3 everywhere, 5x5 with 32 registers) over the whole row. Inside the image a
// group of P pixels walks each input row once, column by column, and every loaded input vector
// feeds each pixel whose window holds it (with stride 1, a 3x3 row of 4 pixels is 6 loads for 12
// multiply-adds); the pixels whose window crosses an edge (the first and last columns, the top and
// bottom rows) check each tap. Each output sums bias, then the taps inside the image in (ky, kx)
// order, like dw_pixel_channels.
template <int K, int S>
void dw_row_k(const DwRowArgs& a) {
  constexpr int L = kVA;
  // pixels per group (independent sums): what the registers beside the weights hold; fewer with
  // stride 2, whose group window is twice as wide (6 pixels of 3x3/2 measured slower than 4 here)
  constexpr int P = K * K + 10 <= kRegs ? 8 : (K == 3 && S == 1 ? 6 : 4);
  const int64_t c = a.c;
  if (c < L) {  // narrower than one register
    for (int64_t ox = 0; ox < a.ow; ++ox) dw_pixel(a, ox);
    return;
  }
  const int64_t iy0 = a.oy * a.stride_h - a.pad_t;
  // the filter rows inside the image: every pixel of the row skips the same ones (the top and
  // bottom rows of a padded layer), so the groups below serve those rows too
  const int ky0 = int(std::clamp<int64_t>(-iy0, 0, K));
  const int ky1 = int(std::clamp<int64_t>(a.h - iy0, ky0, K));
  // columns [lo, hi) have every tap inside the image across
  const int64_t lo = std::min<int64_t>((a.pad_l + S - 1) / S, a.ow);
  const int64_t last = a.w - K + a.pad_l;  // the largest ox * S with every tap inside
  const int64_t hi = std::max(lo, last < 0 ? 0 : std::min<int64_t>(a.ow, last / S + 1));
  // the arguments in locals: the output stores are floats, and could otherwise alias a.lo / a.hi
  // for the compiler, which would reload them (and the pointers) after every store
  const float* __restrict__ xin = a.x;
  const float* __restrict__ wt = a.wt;
  const float* __restrict__ bias = a.bias;
  float* __restrict__ yout = a.y;
  const int64_t h = a.h, w = a.w, pad_l = a.pad_l;
  const VA vlo = splat(a.lo), vhi = splat(a.hi);
  auto out = [&](float* y, VA v) {
    v = v < vlo ? vlo : v;  // a NaN sum fails both tests and stays NaN, as in TFLite
    v = v > vhi ? vhi : v;
    storeA(y, v);
  };
  // channel blocks outer, the whole row inner: tiles of pixels that keep their K input rows in
  // L1 across the blocks measured slower (the rows stay in L2 either way)
  for (int64_t c0 = 0; c0 < c; c0 += L) {
    // the last block ends at c, overlapping the one before it when c % L != 0 (its channels
    // are computed again, to the same bits); reads stay inside the pixel
    const int64_t cb = std::min(c0, c - L);
    VA wk[K * K];
#pragma GCC unroll 25
    for (int t = 0; t < K * K; ++t) wk[t] = loadA(wt + t * c + cb);
    const VA b0 = bias ? loadA(bias + cb) : VA{};
    // a pixel whose window may cross the left or right edge: every tap checked
    auto edge = [&](int64_t ox) {
      VA acc = b0;
#pragma GCC unroll 5
      for (int ky = 0; ky < K; ++ky) {
        const int64_t iy = iy0 + ky;
        if (iy < 0 || iy >= h) continue;
#pragma GCC unroll 5
        for (int kx = 0; kx < K; ++kx) {
          const int64_t ix = ox * S - pad_l + kx;
          if (ix >= 0 && ix < w) acc += wk[ky * K + kx] * loadA(xin + (iy * w + ix) * c + cb);
        }
      }
      out(yout + ox * c + cb, acc);
    };
    // NP pixels from ox, inside across, filter rows [ky0, ky1): input column j of the group's
    // window feeds pixel p at tap kx = j - p * S
    auto group = [&](auto np, int64_t ox) {
      constexpr int NP = decltype(np)::value;
      VA acc[NP];
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[p] = b0;
#pragma GCC unroll 5
      for (int ky = 0; ky < K; ++ky) {
        if (ky < ky0 || ky >= ky1) continue;
        const float* xr = xin + ((iy0 + ky) * w + ox * S - pad_l) * c + cb;
#pragma GCC unroll 24
        for (int j = 0; j < (NP - 1) * S + K; ++j) {
          const VA xj = loadA(xr + j * c);
#pragma GCC unroll 8
          for (int p = 0; p < NP; ++p) {
            const int kx = j - p * S;
            if (kx >= 0 && kx < K) acc[p] += wk[ky * K + kx] * xj;
          }
        }
      }
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) out(yout + (ox + p) * c + cb, acc[p]);
    };
    // fewer than P pixels left inside: one group of them all, so their loads are shared too (a
    // 7x7 layer's 5 inside pixels ran as 5 single pixels, each loading its whole window)
    auto rest = [&](int64_t ox, int64_t n) {
      static_assert(P >= 4 && P <= 8, "the groups below cover 1 .. P - 1 pixels");
      const auto one = [&](auto np) {
        constexpr int NP = decltype(np)::value;
        if constexpr (NP < P) {
          if (n == NP) group(np, ox);
        }
      };
      one(std::integral_constant<int, 1>{});
      one(std::integral_constant<int, 2>{});
      one(std::integral_constant<int, 3>{});
      one(std::integral_constant<int, 4>{});
      one(std::integral_constant<int, 5>{});
      one(std::integral_constant<int, 6>{});
      one(std::integral_constant<int, 7>{});
    };
    int64_t ox = 0;
    for (; ox < lo; ++ox) edge(ox);
    for (; ox + P <= hi; ox += P) group(std::integral_constant<int, P>{}, ox);
    if (ox < hi) rest(ox, hi - ox), ox = hi;
    for (; ox < a.ow; ++ox) edge(ox);
  }
}

void dw_row(const DwRowArgs& a) {
  const bool square = a.kh == a.kw && a.dil_h == 1 && a.dil_w == 1;
  const int64_t s = a.stride_w;
  if (square && a.kh == 3 && s == 1) return dw_row_k<3, 1>(a);
  if (square && a.kh == 3 && s == 2) return dw_row_k<3, 2>(a);
  if (square && a.kh == 5 && s == 1) return dw_row_k<5, 1>(a);
  if (square && a.kh == 5 && s == 2) return dw_row_k<5, 2>(a);
  for (int64_t ox = 0; ox < a.ow; ++ox) dw_pixel(a, ox);
}

// The same taps for the columns whose window crosses the row's edge (checked one by one).
void dw_row_edge(const float* xr, const float* wk, float* y, int64_t ox0, int64_t ox1, int64_t k,
                 int64_t s, int64_t dil, int64_t pad_l, int64_t w) {
  for (int64_t ox = ox0; ox < ox1; ++ox) {
    float acc = y[ox];
    for (int64_t j = 0; j < k; ++j) {
      const int64_t ix = ox * s - pad_l + j * dil;
      if (ix >= 0 && ix < w) acc += wk[j] * xr[ix];
    }
    y[ox] = acc;
  }
}

// Shuffles work on one register (VA) too: one across several registers would be split into
// scalar moves.

template <size_t... C>
inline VA even_lanes(VA a, VA b, std::index_sequence<C...>) {
  return __builtin_shufflevector(a, b, int(2 * C)...);
}
template <size_t... C>
inline VA odd_lanes(VA a, VA b, std::index_sequence<C...>) {
  return __builtin_shufflevector(a, b, int(2 * C + 1)...);
}

// r0[c] = src[2c], r1[c] = src[2c + 1] for c < n (n >= kVA): whole registers split by two
// shuffles; the last register is placed to end at n (overlapping the one before), so no scalar
// tail.
inline void deinterleave(const float* __restrict__ src, int64_t n, float* __restrict__ r0,
                         float* __restrict__ r1) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  // One in-lane vshufps per phase and register: the register pair is loaded as 4-float halves,
  // [s0..s3 | s8..s11] and [s4..s7 | s12..s15], so that shuffling each 128-bit lane gives the
  // columns in order. The 8-float shuffles of the general form took lane-crossing vpermd and
  // blends (3 and 2 micro-ops each on Zen; the fill was two thirds of a 3x3/2 layer at 56x56);
  // 4-float registers cost two stores per phase and register, and the stores bound the fill.
  typedef float V4u __attribute__((vector_size(16), aligned(4)));
  auto step = [&](int64_t c) {
    const float* p = src + 2 * c;
    const auto half = [p](int i) { return *reinterpret_cast<const V4u*>(p + 4 * i); };
    const VA x = __builtin_shufflevector(half(0), half(2), 0, 1, 2, 3, 4, 5, 6, 7);
    const VA y = __builtin_shufflevector(half(1), half(3), 0, 1, 2, 3, 4, 5, 6, 7);
    *reinterpret_cast<VAu*>(r0 + c) = __builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14);
    *reinterpret_cast<VAu*>(r1 + c) = __builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15);
  };
#else
  auto step = [&](int64_t c) {
    const VA a = *reinterpret_cast<const VAu*>(src + 2 * c);
    const VA b = *reinterpret_cast<const VAu*>(src + 2 * c + kVA);
    *reinterpret_cast<VAu*>(r0 + c) = even_lanes(a, b, std::make_index_sequence<kVA>());
    *reinterpret_cast<VAu*>(r1 + c) = odd_lanes(a, b, std::make_index_sequence<kVA>());
  };
#endif
  for (int64_t c = 0; c + kVA <= n; c += kVA) step(c);
  if (n % kVA) step(n - kVA);
}

// The phase planes of dw_plane_k from phase row r0 on: plane (py, px) row r column c holds the
// input at row (r0 + r) * S + py - pad_t, column c * S + px - pad_l, or 0 outside the input. Each
// input row is read once and split over the S column phases.
template <int S>
void fill_phases(const DwPlaneArgs& a, int64_t ws, int64_t hs, float* ph, int64_t r0) {
  static_assert(S == 1 || S == 2, "column phases are split for strides 1 and 2");
  const int64_t plane = hs * ws;
  // columns c whose input column c * S - pad_l (phase 0) to c * S + S - 1 - pad_l all lie in
  // [0, w): copied without checks; the rest one by one
  const int64_t c0 = std::min(ws, (a.pad_l + S - 1) / S);
  const int64_t c1 = std::max(c0, std::min(ws, (a.w + a.pad_l) / S));
  for (int64_t rp = 0; rp < hs * S; ++rp) {
    const int64_t iy = r0 * S + rp - a.pad_t, r = rp / S;
    float* rows[S];
    for (int px = 0; px < S; ++px) rows[px] = ph + ((rp % S) * S + px) * plane + r * ws;
    if (iy < 0 || iy >= a.h) {
      for (int px = 0; px < S; ++px)
        for (int64_t c = 0; c < ws; ++c) rows[px][c] = 0.0f;
      continue;
    }
    const float* xr = a.x + iy * a.w;
    auto edge = [&](int64_t c) {
      for (int px = 0; px < S; ++px) {
        const int64_t ix = c * S + px - a.pad_l;
        rows[px][c] = ix >= 0 && ix < a.w ? xr[ix] : 0.0f;
      }
    };
    for (int64_t c = 0; c < c0; ++c) edge(c);
    // (constexpr: at S == 1 the two row pointers below are one, which the restrict-qualified
    // copies must never see)
    if constexpr (S == 1) {
      // whole registers and one last register ending at c1 (a row of a 28x28 plane is 3.5
      // registers, where a memmove call per row cost a third of the layer)
      const float* __restrict__ src = xr + c0 - a.pad_l;
      float* __restrict__ dst = rows[0] + c0;
      const int64_t n = c1 - c0;
      if (n >= kVA) {
        for (int64_t c = 0; c + kVA <= n; c += kVA) storeA(dst + c, loadA(src + c));
        if (n % kVA) storeA(dst + n - kVA, loadA(src + n - kVA));
      } else {
        for (int64_t c = 0; c < n; ++c) dst[c] = src[c];
      }
    } else if (c1 - c0 >= kVA) {
      deinterleave(xr + c0 * S - a.pad_l, c1 - c0, rows[0] + c0, rows[S - 1] + c0);
    } else {
      const float* __restrict__ src = xr + c0 * S - a.pad_l;
      float* __restrict__ r0 = rows[0] + c0;
      float* __restrict__ r1 = rows[S - 1] + c0;
      for (int64_t c = 0; c < c1 - c0; ++c) r0[c] = src[c * S], r1[c] = src[c * S + S - 1];
    }
    for (int64_t c = c1; c < ws; ++c) edge(c);
  }
}

// KxK, stride S, dilation 1, on phase planes: the zero-padded input split by (row % S, col % S)
// into S*S planes of row stride ws, so tap (ky, kx) of output i = oy * ws + ox reads plane
// (ky % S, kx % S) at i + (ky / S) * ws + kx / S. The whole plane is then one contiguous loop of
// K*K multiply-adds per output, vectorised over i however small the image (7x7 planes included);
// the ws - ow columns past each row's end are computed and dropped.
template <int K, int S>
void dw_plane_k(const DwPlaneArgs& a) {
  constexpr int64_t R = (K - 1) / S;  // rows / columns a tap reaches past its phase origin
  constexpr int64_t L = 16, P = 4;    // lanes of V16; vectors per step (independent FMA chains)
  const int64_t ws = ((a.ow - 1) * S + K + S - 1) / S;
  thread_local std::vector<float> buf;  // per thread: the phase planes and what follows them
  const float bias = a.bias;
  if (a.ow >= kVA) {
    // Rows of at least one register: each output row is whole registers from the left and one
    // last register ending at the row's end (overlapping the one before: the same values
    // written twice), clamped and stored straight into y; no padded columns computed, no second
    // pass. PR rows at a time at one column, so each tap's multiply-adds form PR independent
    // chains however short the rows, and rows share their loads (with stride 1, input row r is
    // tap row 0 of output row r, tap row 1 of r - 1 and tap row 2 of r - 2: 4 rows of 3x3 load
    // 18 vectors for 36 multiply-adds); the K*K weights are splat once. The phase planes are
    // filled for a band of output rows at a time, small enough to stay in L1 until read (the
    // fill is half of a 3x3/2 layer's time on a 112x112 input, most of it reading the input; whole
    // planes written first, the layer took 0.96 ms, in bands 0.88).
    // (With 16 registers, 3x3 takes 3 rows at stride 1 and 2 at stride 2: at 4 the compiler
    // spilled taps and row addresses, and 3x3/2 at 112x112 ran 25 % slower; 5x5 measured best
    // at 4.)
    constexpr int PR = K * K + 8 + 4 <= kRegs ? 8 : K == 3 ? (S == 1 ? 3 : 2) : 4;
    const int64_t fit = 16384 / (4 * S * S * ws) - R - 1;
    const int64_t band = std::max<int64_t>(PR, fit / PR * PR);
    VA wv[K * K];
#pragma GCC unroll 25
    for (int j = 0; j < K * K; ++j) wv[j] = splat(a.wt[j]);
    const VA vb = splat(bias), vlo = splat(a.lo), vhi = splat(a.hi);
    const int64_t per_row = (a.ow + kVA - 1) / kVA;
    const int64_t need = S * S * (band + R + 1) * ws;
    if (int64_t(buf.size()) < need) buf.resize(size_t(need));
    float* ph = buf.data();
    for (int64_t oy0 = 0; oy0 < a.oh; oy0 += band) {
      const int64_t rows_in = std::min(band, a.oh - oy0), plane = (rows_in + R + 1) * ws;
      fill_phases<S>(a, ws, rows_in + R + 1, ph, oy0);
      // NP output rows from oy0 + oy at columns [ox, ox + kVA)
      auto run = [&](auto np, int64_t oy, int64_t ox) {
        constexpr int NP = decltype(np)::value;
        const float* b0 = ph + oy * ws + ox;
        VA acc[NP];
#pragma GCC unroll 8
        for (int v = 0; v < NP; ++v) acc[v] = vb;
#pragma GCC unroll 5
        for (int ky = 0; ky < K; ++ky)
#pragma GCC unroll 5
          for (int kx = 0; kx < K; ++kx) {
            // row v's tap (ky, kx) is row v + ky / S of phase plane (ky % S, kx % S): the same
            // address as row v + 1's tap (ky - S, kx), which the compiler loads once
            const float* src = b0 + ((ky % S) * S + kx % S) * plane + kx / S;
#pragma GCC unroll 8
            for (int v = 0; v < NP; ++v) acc[v] += wv[ky * K + kx] * loadA(src + (v + ky / S) * ws);
          }
        float* d0 = a.y + (oy0 + oy) * a.ow + ox;
#pragma GCC unroll 8
        for (int v = 0; v < NP; ++v) {
          const VA r = acc[v] < vlo ? vlo : acc[v];  // a NaN sum fails both tests and stays NaN
          storeA(d0 + v * a.ow, r > vhi ? vhi : r);
        }
      };
      auto rows = [&](auto np, int64_t oy) {
        for (int64_t q = 0; q < per_row; ++q) run(np, oy, std::min(q * kVA, a.ow - kVA));
      };
      int64_t oy = 0;
      for (; oy + PR <= rows_in; oy += PR) rows(std::integral_constant<int, PR>{}, oy);
      for (; oy + 2 <= rows_in; oy += 2) rows(std::integral_constant<int, 2>{}, oy);
      if (oy < rows_in) rows(std::integral_constant<int, 1>{}, oy);
    }
    return;
  }
  // Narrower rows: one flat loop over the whole plane (padded columns computed and dropped).
  const int64_t hs = a.oh + R + 1;
  const int64_t plane = hs * ws, outs = a.oh * ws, outs_r = (outs + L - 1) / L * L;
  // the phase planes, L zeros (what the last vector's taps read past the planes), then the
  // outputs rounded up to whole vectors
  const int64_t need = S * S * plane + L + outs_r;
  if (int64_t(buf.size()) < need) buf.resize(size_t(need));
  float* ph = buf.data();
  fill_phases<S>(a, ws, hs, ph, 0);
  std::fill(ph + S * S * plane, ph + S * S * plane + L, 0.0f);
  // Every tap reads the one buffer at a fixed offset; the accumulators are explicit vectors,
  // P of them, so each tap's multiply-adds form P independent chains (a 25-tap 5x5 is one long
  // dependency chain per vector otherwise).
  float w[K * K];
  int64_t off[K * K];
  for (int ky = 0; ky < K; ++ky)
    for (int kx = 0; kx < K; ++kx) {
      w[ky * K + kx] = a.wt[ky * K + kx];
      off[ky * K + kx] = ((ky % S) * S + kx % S) * plane + (ky / S) * ws + kx / S;
    }
  float* t = ph + S * S * plane + L;
  int64_t i = 0;
  for (; i + P * L <= outs_r; i += P * L) {
    V16 acc[P];
    for (int v = 0; v < P; ++v) acc[v] = bias - V16{};
#pragma GCC unroll 25
    for (int j = 0; j < K * K; ++j) {
      const float* src = ph + off[j] + i;
      for (int v = 0; v < P; ++v) acc[v] += w[j] * load16(src + v * L);
    }
    for (int v = 0; v < P; ++v) store16(t + i + v * L, acc[v]);
  }
  for (; i < outs_r; i += L) {
    V16 acc = bias - V16{};
#pragma GCC unroll 25
    for (int j = 0; j < K * K; ++j) acc += w[j] * load16(ph + off[j] + i);
    store16(t + i, acc);
  }
  const float lo = a.lo, hi = a.hi;
  for (int64_t oy = 0; oy < a.oh; ++oy) {
    float* __restrict__ y = a.y + oy * a.ow;
    const float* __restrict__ tr = t + oy * ws;
    for (int64_t ox = 0; ox < a.ow; ++ox) y[ox] = std::min(std::max(tr[ox], lo), hi);
  }
}

// v's lanes moved up by N (lane i takes lane i - N), zeros shifted in: the row a tap N columns to
// the left of a vector at the row's start reads, whose first N columns are the padding.
template <int N, size_t... I>
inline VA shift_up(VA v, std::index_sequence<I...>) {
  return __builtin_shufflevector(VA{}, v, int(kVA - N + int(I))...);
}
// v's lanes moved down by N (lane i takes lane i + N), zeros shifted in at the top: the row's
// last vector seen by a tap N columns to the right
template <int N, size_t... I>
inline VA shift_down(VA v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, VA{}, int(I) + N...);
}
// the columns a tap `d` columns away reads for the vector at x: at the row's start (d < 0) or end
// (d > 0) the shift of the vector itself, elsewhere a load at x + d (d is a constant once the
// callers' loops are unrolled, so the switches fold away)
template <int Pos>
inline VA tap_cols(const float* x, int d) {
  constexpr auto seq = std::make_index_sequence<kVA>();
  if constexpr (Pos == 0) {
    switch (d) {
      case -1:
        return shift_up<1>(loadA(x), seq);
      case -2:
        return shift_up<2>(loadA(x), seq);
      default:
        break;
    }
  } else if constexpr (Pos == 2) {
    switch (d) {
      case 1:
        return shift_down<1>(loadA(x), seq);
      case 2:
        return shift_down<2>(loadA(x), seq);
      default:
        break;
    }
  }
  return loadA(x + d);
}

// KxK at stride 1 with SAME padding, straight from the input plane: no padded copy. Rows above
// and below the image read a row of zeros; the columns left of the row's first vector and right
// of its last are zeros shifted into the vector itself (tap_cols), the vectors between load
// their taps in place. Copying every row into the padded plane took as long as the
// multiply-adds (AVX2, 56x56 and 112x112 planes). Each output is two sums, added at the end:
// the bias and the taps of the even filter rows, and the taps of the odd ones, each in (ky, kx)
// order (zeros included). One chain of K*K dependent multiply-adds per output left the FMA units
// idle for part of each one's latency: two made the 56x56 and 28x28 layers 7-9 % faster on AVX2.
// The order depends on K alone, so bands of rows (oy0, oy1) and threads keep the bits; they
// are not dw_plane_k's (one sum in (ky, kx) order), which runs the other stride-1 planes.
template <int K>
void dw_plane_s1(const DwPlaneArgs& a) {
  constexpr int PAD = (K - 1) / 2;
  constexpr int PR = K * K + 8 + 4 <= kRegs ? 8 : K == 3 ? 3 : 4;  // rows sharing their loads
  const int64_t w = a.w, h = a.h;
  const float* const x = a.x;
  // A row of zeros for the lines above and below the image: a static one up to kZeroRow floats
  // (a thread_local is a call per plane from a shared library), a thread's own past that.
  constexpr int64_t kZeroRow = 4096;
  alignas(64) static float fixed[kZeroRow + 2 * kVA];  // zero-initialised, never written
  const float* zrow = fixed + kVA;
  if (w > kZeroRow) {
    thread_local std::vector<float> zeros;
    if (int64_t(zeros.size()) < w + 2 * kVA) zeros.assign(size_t(w + 2 * kVA), 0.0f);
    zrow = zeros.data() + kVA;
  }
  VA wv[K * K];
#pragma GCC unroll 25
  for (int j = 0; j < K * K; ++j) wv[j] = splat(a.wt[j]);
  const VA vb = splat(a.bias), vlo = splat(a.lo), vhi = splat(a.hi);
  // NP output rows (their input lines at rows[]), the vector at column ox: Pos 0 the row's
  // first, 2 its last, 1 one whose taps all lie inside the row. The lines are found once per
  // group of rows (per vector, their bounds checks and reloads of the arguments took more
  // instructions than the multiply-adds).
  auto run = [&](auto np, auto pos, const float* const* rows, float* d0, int64_t ox) {
    constexpr int NP = decltype(np)::value, Pos = decltype(pos)::value;
    // input line by line, each vector loaded once for the NP - 1 + K rows it reaches: output
    // row v still takes its taps in (ky, kx) order (line v + ky), even rows into acc, odd ones
    // into acc2
    VA acc[NP], acc2[NP];
#pragma GCC unroll 8
    for (int v = 0; v < NP; ++v) acc[v] = vb;
#pragma GCC unroll 12
    for (int r = 0; r < NP + K - 1; ++r)
#pragma GCC unroll 5
      for (int kx = 0; kx < K; ++kx) {
        const VA xv = tap_cols<Pos>(rows[r] + ox, kx - PAD);
#pragma GCC unroll 5
        for (int ky = K - 1; ky >= 0; --ky)
          if (r - ky >= 0 && r - ky < NP) {
            if (ky % 2 == 0)
              acc[r - ky] += wv[ky * K + kx] * xv;
            else if (ky == 1 && kx == 0)
              acc2[r - ky] = wv[ky * K + kx] * xv;
            else
              acc2[r - ky] += wv[ky * K + kx] * xv;
          }
      }
#pragma GCC unroll 8
    for (int v = 0; v < NP; ++v) {
      acc[v] += acc2[v];
      const VA r = acc[v] < vlo ? vlo : acc[v];  // a NaN sum fails both tests and stays NaN
      storeA(d0 + v * w + ox, r > vhi ? vhi : r);
    }
  };
  using First = std::integral_constant<int, 0>;
  using Mid = std::integral_constant<int, 1>;
  using Last = std::integral_constant<int, 2>;
  auto rows_at = [&](auto np, int64_t oy) {
    constexpr int NP = decltype(np)::value;
    const float* rows[NP + K - 1];
#pragma GCC unroll 12
    for (int r = 0; r < NP + K - 1; ++r) {
      const int64_t iy = oy + r - PAD;
      rows[r] = iy >= 0 && iy < h ? x + iy * w : zrow;
    }
    float* const d0 = a.y + (oy - a.oy0) * w;
    run(np, First{}, rows, d0, 0);
    int64_t ox = kVA;
    for (; ox + kVA + PAD <= w; ox += kVA) run(np, Mid{}, rows, d0, ox);
    // fewer than kVA + PAD columns are left: the last vector, and before it the last one whose
    // taps stay inside when they are more than a vector (both overlap the ones before them: the
    // same values written again)
    if (w - ox > kVA) run(np, Mid{}, rows, d0, w - kVA - PAD);
    if (ox < w) run(np, Last{}, rows, d0, w - kVA);
  };
  const int64_t end = a.oy1 > 0 ? a.oy1 : h;
  int64_t oy = a.oy0;
  for (; oy + PR <= end; oy += PR) rows_at(std::integral_constant<int, PR>{}, oy);
  for (; oy + 2 <= end; oy += 2) rows_at(std::integral_constant<int, 2>{}, oy);
  if (oy < end) rows_at(std::integral_constant<int, 1>{}, oy);
}

// The even and odd columns of the 2 * kVA floats at p: columns p[2i] and p[2i + 1], i < kVA, in
// the lane order stride2_store puts back in column order.
inline void load_phases(const float* p, VA* even, VA* odd) {
  const VA a = loadA(p), b = loadA(p + kVA);
#if defined(__AVX2__) && !defined(__AVX512F__)
  // One in-lane vshufps per phase: lane i holds output column 0 1 4 5 2 3 6 7 [i], restored once
  // per output register by one vpermpd. In column order each phase took two 4-float loads and
  // an insert, or a lane-crossing shuffle (the interior of a 3x3/2 plane ran 1.2x longer).
  *even = __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14);
  *odd = __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
#else
  *even = even_lanes(a, b, std::make_index_sequence<kVA>());
  *odd = odd_lanes(a, b, std::make_index_sequence<kVA>());
#endif
}

// v (sums in load_phases' lane order) stored in column order at p
inline void stride2_store(float* p, VA v) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  storeA(p, __builtin_shufflevector(v, v, 0, 1, 4, 5, 2, 3, 6, 7));
#else
  storeA(p, v);
#endif
}

// Input row R of a step of NP output rows x NV registers at stride 2 (tap row R - 2v of output
// row v): its K tap columns per register, from p, added into the rows it reaches.
template <int K, int NP, int NV, int R>
__attribute__((always_inline)) inline void dw_s2_row(const float* p, const VA* wv, VA (*acc)[NV]) {
  constexpr int B = (K - 1) / 2;
#pragma GCC unroll 2
  for (int c = 0; c < NV; ++c) {
    VA t[2 * B + 2];
#pragma GCC unroll 3
    for (int b = 0; b <= B; ++b) load_phases(p + 2 * c * kVA + 2 * b, &t[2 * b], &t[2 * b + 1]);
#pragma GCC unroll 4
    for (int v = 0; v < NP; ++v) {
      const int ky = R - 2 * v;
      if (ky >= 0 && ky < K) {
#pragma GCC unroll 5
        for (int kx = 0; kx < K; ++kx) acc[v][c] += wv[ky * K + kx] * t[kx];
      }
    }
  }
}

// NP output rows x NV registers of columns from x (the step's first input row, its first tap
// column), input rows ld floats apart
template <int K, int NP, int NV, size_t... R>
__attribute__((always_inline)) inline void dw_s2_step(const float* x, int64_t ld, const VA* wv,
                                                      VA vb, VA vlo, VA vhi, float* y, int64_t ldy,
                                                      std::index_sequence<R...>) {
  VA acc[NP][NV];
#pragma GCC unroll 4
  for (int v = 0; v < NP; ++v)
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) acc[v][c] = vb;
  (dw_s2_row<K, NP, NV, int(R)>(x + int64_t(R) * ld, wv, acc), ...);
#pragma GCC unroll 4
  for (int v = 0; v < NP; ++v)
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) {
      const VA q = acc[v][c] < vlo ? vlo : acc[v][c];  // a NaN sum fails both tests, stays NaN
      stride2_store(y + v * ldy + c * kVA, q > vhi ? vhi : q);
    }
}

// KxK at stride 2 on a zero-padded plane (dw_padded_fits): each input row's columns split into
// their even and odd phases in registers (load_phases), tap kx of output column ox reading phase
// kx % 2 of the 2 * kVA columns from 2 ox - pad_l + 2 (kx / 2); the padding's zeros are read like
// the input. 4 output rows (9 input rows for 3x3) x 2 registers per step: 8 chains of K * K
// multiply-adds, the K * K weights in memory operands where registers run out. No phase planes
// are written and read back (dw_plane_k's fill of them, half its stores split over cache lines,
// was 60 % of a 3x3/2 plane on AVX2). Each output sums the bias, then every tap (zeros
// included) in (ky, kx) order, as dw_plane_k does: the same bits.
template <int K>
void dw_plane_s2(const DwPlaneArgs& a) {
  constexpr int PR = 4;
  VA wv[K * K];
#pragma GCC unroll 25
  for (int j = 0; j < K * K; ++j) wv[j] = splat(a.wt[j]);
  const VA vb = splat(a.bias), vlo = splat(a.lo), vhi = splat(a.hi);
  const int64_t last_ox = a.ow - kVA;
  auto rows_at = [&](auto np, int64_t oy) {
    constexpr int NP = decltype(np)::value;
    constexpr auto seq = std::make_index_sequence<2 * NP + K - 2>();
    const float* x = a.x + (2 * oy - a.pad_t) * a.ld - a.pad_l;
    float* y = a.y + (oy - a.oy0) * a.ow;
    using One = std::integral_constant<int, 1>;
    using Two = std::integral_constant<int, 2>;
    int64_t ox = 0;
    for (; ox + 2 * kVA <= a.ow; ox += 2 * kVA)
      dw_s2_step<K, NP, Two::value>(x + 2 * ox, a.ld, wv, vb, vlo, vhi, y + ox, a.ow, seq);
    for (; ox < a.ow; ox += kVA) {  // the last one ends at the row's end (the same values again)
      const int64_t o = std::min(ox, last_ox);
      dw_s2_step<K, NP, One::value>(x + 2 * o, a.ld, wv, vb, vlo, vhi, y + o, a.ow, seq);
    }
  };
  const int64_t end = a.oy1 > 0 ? a.oy1 : a.oh;
  int64_t oy = a.oy0;
  for (; oy + PR <= end; oy += PR) rows_at(std::integral_constant<int, PR>{}, oy);
  for (; oy < end; ++oy) rows_at(std::integral_constant<int, 1>{}, oy);
}

void dw_plane(const DwPlaneArgs& a) {
  if (a.ld > 0)  // (set only where dw_padded_fits: the caller checks)
    return a.kh == 3 ? dw_plane_s2<3>(a) : dw_plane_s2<5>(a);
  const bool square = a.kh == a.kw && a.dil_h == 1 && a.dil_w == 1 && a.stride_h == a.stride_w;
  if (dw_plane_direct(a, kVA)) return a.kh == 3 ? dw_plane_s1<3>(a) : dw_plane_s1<5>(a);
  if (square && a.kh == 3 && a.stride_w == 1) return dw_plane_k<3, 1>(a);
  if (square && a.kh == 3 && a.stride_w == 2) return dw_plane_k<3, 2>(a);
  if (square && a.kh == 5 && a.stride_w == 1) return dw_plane_k<5, 1>(a);
  if (square && a.kh == 5 && a.stride_w == 2) return dw_plane_k<5, 2>(a);
  for (int64_t oy = 0; oy < a.oh; ++oy) {  // any kernel, stride and dilation
    float* y = a.y + oy * a.ow;
    for (int64_t ox = 0; ox < a.ow; ++ox) y[ox] = a.bias;
    for (int64_t ky = 0; ky < a.kh; ++ky) {
      const int64_t iy = oy * a.stride_h - a.pad_t + ky * a.dil_h;
      if (iy < 0 || iy >= a.h) continue;
      dw_row_edge(a.x + iy * a.w, a.wt + ky * a.kw, y, 0, a.ow, a.kw, a.stride_w, a.dil_w, a.pad_l,
                  a.w);
    }
    for (int64_t ox = 0; ox < a.ow; ++ox) y[ox] = std::min(std::max(y[ox], a.lo), a.hi);
  }
}

// R planes x NV vectors of outputs from column i: R * NV independent multiply-add chains per
// nonzero, each vector of X loaded once for the R planes.
template <int R, int NV>
inline void sparse_plane_strip(const SparsePlaneArgs& a, int64_t i) {
  const VA vlo = splat(a.lo), vhi = splat(a.hi);
  VA acc[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = splat(a.bias[r]);
  const float* w = a.w;
  for (int64_t j = 0; j < a.nnz; ++j, w += R) {
    const float* xr = a.x + int64_t(a.idx[j]) * a.ld + i;
    VA xv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) xv[v] = loadA(xr + v * kVA);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const VA wv = splat(w[r]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += wv * xv[v];
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const VA s = acc[r][v] < vlo ? vlo : acc[r][v];  // a NaN sum fails both tests and stays NaN
      storeA(a.y + r * a.ldy + i + v * kVA, s > vhi ? vhi : s);
    }
}

// sparse_plane_strip of `count` (< sizeof...(C)) registers from column i
template <int R, int... C>
inline void sparse_plane_rest(const SparsePlaneArgs& a, int64_t i, int64_t count,
                              std::integer_sequence<int, C...>) {
  ((C > 0 && C == count ? sparse_plane_strip<R, (C > 0 ? C : 1)>(a, i) : void()), ...);
}

template <int R>
void sparse_planes(const SparsePlaneArgs& a) {
  // (one register of X and 8 / R sums per nonzero: 8 chains hide the multiply-add latency)
  constexpr int NV = R == 1 ? 8 : kRegs >= 32 ? 4 : 2;
  const int64_t n = a.n;
  for (int64_t line = 0; line < a.lines; ++line) {
    SparsePlaneArgs l = a;  // one line: n columns
    l.x = a.x + line * n, l.y = a.y + line * a.ldl;
    int64_t i = 0;
    for (; i + NV * kVA <= n; i += NV * kVA) sparse_plane_strip<R, NV>(l, i);
    // the whole registers left as one strip (a padded plane's lines are short: a 56-column line
    // is 7 registers, which one register at a time ran as 7 single chains)
    sparse_plane_rest<R>(l, i, (n - i) / kVA, std::make_integer_sequence<int, NV>());
    i += (n - i) / kVA * kVA;
    if (i == n) continue;
    if (n >= kVA) {
      sparse_plane_strip<R, 1>(l, n - kVA);  // overlapping: the same values
      continue;
    }
    for (int r = 0; r < R; ++r)
      for (int64_t k = i; k < n; ++k) {
        float s = l.bias[r];
        for (int64_t j = 0; j < l.nnz; ++j) s += l.w[j * R + r] * l.x[int64_t(l.idx[j]) * l.ld + k];
        l.y[r * l.ldy + k] = s < l.lo ? l.lo : s > l.hi ? l.hi : s;
      }
  }
}

void sparse_plane(const SparsePlaneArgs& a) {
  a.rows == 4 ? sparse_planes<4>(a) : sparse_planes<1>(a);
}

// One output row of a pool, NHWC. A register of channels (VA) at a time across the taps, stored
// once per pixel (summing into y tap by tap waited on a store and a reload for every tap, 4x
// slower); the taps in the same order from the same start as the scalar tail, so every channel
// has the same bits, and the mean divides by the count of taps inside the input, as TFLite. (On
// V16 the max went through per_register's memory copies: ResNet-18's 3x3/2 max pool at
// 112x112x32 took 0.57 ms where ONNX Runtime took 0.08; now 0.13.)
template <bool Max>
void pool_row_t(const PoolRowArgs& a) {
  const int64_t c = a.c, cv = c / kVA * kVA;
  const float init = Max ? -INFINITY : 0.0f, lo = a.lo, hi = a.hi;
  const VA lov = splat(lo), hiv = splat(hi), pvv = splat(a.pad_value);
  const int64_t iy0 = a.oy * a.stride_h - a.pad_t;
  const int64_t ky0 = std::max<int64_t>(0, -iy0), ky1 = std::min(a.fh, a.h - iy0);
  // a max never takes NaN in (the compare is false), so the order of taps does not matter and
  // a folded PAD's constant can come last
  const auto take = [](auto acc, auto v) {
    if constexpr (Max)
      return acc < v ? v : acc;
    else
      return acc + v;
  };
  for (int64_t ox = 0; ox < a.ow; ++ox) {
    float* __restrict__ y = a.y + ox * c;
    const int64_t ix0 = ox * a.stride_w - a.pad_l;
    const int64_t kx0 = std::max<int64_t>(0, -ix0), kx1 = std::min(a.fw, a.w - ix0);
    const int64_t count = std::max<int64_t>(0, ky1 - ky0) * std::max<int64_t>(0, kx1 - kx0);
    const float n = float(count > 0 ? count : 1);
    const bool pads = a.pad_max && count < a.fh * a.fw;
    const int64_t x0 = (iy0 * a.w + ix0) * c;  // may be negative: only x0 + tap is an address
    for (int64_t i = 0; i < cv; i += kVA) {
      VA acc = splat(init);
      for (int64_t ky = ky0; ky < ky1; ++ky)
        for (int64_t kx = kx0; kx < kx1; ++kx)
          acc = take(acc, loadA(a.x + (x0 + (ky * a.w + kx) * c + i)));
      if (!Max) acc = acc / n;
      if (pads) acc = acc < pvv ? pvv : acc;
      acc = acc < lov ? lov : acc;
      storeA(y + i, acc > hiv ? hiv : acc);
    }
    for (int64_t i = cv; i < c; ++i) {
      float acc = init;
      for (int64_t ky = ky0; ky < ky1; ++ky)
        for (int64_t kx = kx0; kx < kx1; ++kx) acc = take(acc, a.x[x0 + (ky * a.w + kx) * c + i]);
      if (!Max) acc /= n;
      if (pads) acc = std::max(acc, a.pad_value);
      y[i] = std::min(std::max(acc, lo), hi);
    }
  }
}

void pool_row(const PoolRowArgs& a) { a.max ? pool_row_t<true>(a) : pool_row_t<false>(a); }

template <class F>
void binary_loop(F f, const float* __restrict__ a, int64_t sa, const float* __restrict__ b,
                 int64_t sb, float* __restrict__ y, int64_t n, float lo, float hi) {
  if (sa && sb)
    for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(f(a[i], b[i]), lo), hi);
  else if (sa) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(f(a[i], bv), lo), hi);
  } else if (sb) {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(f(av, b[i]), lo), hi);
  } else {
    const float v = std::min(std::max(f(a[0], b[0]), lo), hi);
    for (int64_t i = 0; i < n; ++i) y[i] = v;
  }
}

void binary(BinOp op, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n,
            float lo, float hi) {
  switch (op) {
    case BinOp::add:
      return binary_loop([](float p, float q) { return p + q; }, a, sa, b, sb, y, n, lo, hi);
    case BinOp::sub:
      return binary_loop([](float p, float q) { return p - q; }, a, sa, b, sb, y, n, lo, hi);
    case BinOp::mul:
      return binary_loop([](float p, float q) { return p * q; }, a, sa, b, sb, y, n, lo, hi);
    case BinOp::div:
      return binary_loop([](float p, float q) { return p / q; }, a, sa, b, sb, y, n, lo, hi);
    case BinOp::max:
      return binary_loop([](float p, float q) { return p > q ? p : q; }, a, sa, b, sb, y, n, lo,
                         hi);
    case BinOp::pow:
      return binary_loop([](float p, float q) { return std::pow(p, q); }, a, sa, b, sb, y, n, lo,
                         hi);
    case BinOp::min:  // TFLite's NaN behaviour: MAXIMUM(NaN, q) = q, MINIMUM(NaN, q) = NaN
      return binary_loop([](float p, float q) { return q < p ? q : p; }, a, sa, b, sb, y, n, lo,
                         hi);
    case BinOp::prelu:
      return binary_loop([](float p, float q) { return p >= 0.0f ? p : p * q; }, a, sa, b, sb, y, n,
                         lo, hi);
    case BinOp::atan2:  // TFLite's ATAN2(y, x): the first input is y
      return binary_loop([](float p, float q) { return std::atan2(p, q); }, a, sa, b, sb, y, n, lo,
                         hi);
  }
}

// The pieces the function templates below need from their type: float (the scalar loops and
// vector tails) or VA (one register: the vector loops of the paths without AVX-512, where GCC
// does not vectorise the scalar forms' loops; GELU ran at 22 ns a value on AVX2). With VA,
// comparisons give lane masks and `?:` selects per lane; NaN lanes take the same branches as a
// NaN float, so NaN stays NaN.
template <class T>
inline T lanes(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return splat(v);
}
inline float abs_of(float x) { return std::fabs(x); }
inline VA abs_of(VA x) { return absA(x); }
inline float sign_of(float mag, float x) { return std::copysign(mag, x); }  // |mag|, x's sign
inline VA sign_of(VA mag, VA x) { return (VA)(((VAi)mag & 0x7FFFFFFF) | ((VAi)x & INT32_MIN)); }
// 2^k from t = 1.5 * 2^23 + k: its bits are 0x4B400000 + k, and shifted left by 23 only k + 127
// stays
inline float pow2_of(float t) {
  uint32_t tb;
  __builtin_memcpy(&tb, &t, 4);
  const uint32_t bits = (tb + 127u) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  return scale;
}
inline VA pow2_of(VA t) { return (VA)(((VAi)t + 127) << 23); }

// exp(x) for the float range, branch-free so the loops that call it vectorise: x = k ln2 + r
// with |r| <= ln2/2 (k rounded by the 1.5 * 2^23 trick, ln2 split in two so k ln2 is exact),
// e^r by its degree-6 Taylor polynomial (error below 2^-23 relative), 2^k built in the exponent
// bits. Inputs below -87.3 give 2^-126 e^r (not 0); softmax and erfc never need less. 2^k comes
// from the bits of the rounding sum itself (its low mantissa bits hold k), never from a float
// to int conversion, so a NaN, which the clamps let through, needs no test: it runs the
// polynomial as NaN and comes out NaN (1.4x faster than converting k after a NaN select).
template <class T>
inline T exp_t(T x) {
  const T xc = x < -87.3f ? lanes<T>(-87.3f) : (x > 88.3f ? lanes<T>(88.3f) : x);
  const T t = xc * 1.44269504f + 12582912.0f;
  const T k = t - 12582912.0f;
  const T r = (xc - k * 0.693145752f) - k * 1.42860677e-6f;
  T p = lanes<T>(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * pow2_of(t);
}

// 1 + erf(z), to 2.1e-6 relative where it exceeds 1e-7 (tests/python/test_runtime_transformer.py
// checks GELU against float64 erf): for |z| < 1, 1 + z P(z^2); for 1 <= |z| < 4, erfc(|z|) =
// exp(Q(|z| - 2.5)) with Q fitted to log erfc on [1, 4]; beyond 4, erfc (< 1.5e-8) is taken as 0.
// P and Q are least-squares fits in float64, rounded to float.
template <class T>
inline T one_plus_erf_t(T z) {
  const T az = abs_of(z), a = 4.0f < az ? lanes<T>(4.0f) : az, s = z * z;
  T p = lanes<T>(7.898097828729078e-05f);
  p = p * s - 0.0008024320704862475f;
  p = p * s + 0.005190049763768911f;
  p = p * s - 0.026854805648326874f;
  p = p * s + 0.11283612251281738f;
  p = p * s - 0.3761262893676758f;
  p = p * s + 1.128379225730896f;
  const T u = a - 2.5f;
  T q = lanes<T>(-6.582514799902128e-08f);
  q = q * u + 1.6140534171427134e-06f;
  q = q * u - 1.2976148354937322e-05f;
  q = q * u + 7.739445572951809e-05f;
  q = q * u - 0.00042070692870765924f;
  q = q * u + 0.0021651603747159243f;
  q = q * u - 0.010858165100216866f;
  q = q * u - 0.9438936114311218f;
  q = q * u - 5.352680683135986f;
  q = q * u - 7.806815147399902f;
  const T e = az < 4.0f ? exp_t(q) : lanes<T>(0.0f);
  const T far = z > 0.0f ? 2.0f - e : e;
  return az < 1.0f ? 1.0f + z * p : far;
}

// tanh(x), branch-free so its loop vectorises (libm's tanhf does not, and ran 60x slower than
// LiteRT's TANH): for |x| < 0.625, x + x^3 P(x^2) with P a least-squares fit in float64 of
// (tanh(x) - x) / x^3 weighted for relative error (7.9e-8 relative in float); above, 1 - 2 /
// (e^2|x| + 1) with the sign of x, where the subtraction loses under a bit; |x| >= 9 gives +-1
// (tanh(9) rounds to 1 in float). NaN stays NaN (exp_t returns it).
template <class T>
inline T tanh_t(T x) {
  const T a = abs_of(x), s = x * x;
  T p = lanes<T>(-0.005718891508877277f);
  p = p * s + 0.02065306343138218f;
  p = p * s - 0.053744640201330185f;
  p = p * s + 0.13331513106822968f;
  p = p * s - 0.3333328664302826f;
  const T small = sign_of(x + x * s * p, x);                  // -0 stays -0
  const T e = exp_t(2.0f * (a > 9.0f ? lanes<T>(9.0f) : a));  // NaN passes, and stays NaN
  const T big = sign_of(1.0f - 2.0f / (e + 1.0f), x);
  return a < 0.625f ? small : big;
}

// 1 / (1 + e^-x) from e = e^-|x| (at most 1, so nothing overflows): 1 / (1 + e) for x >= 0,
// e / (1 + e) below, which keeps the relative accuracy of small results; 0 below -87.3, where
// the result is no longer a normal float (exp_t would give 2^-126 there). Branch-free for the
// same reason as tanh_t (libm's expf: 16x slower than LiteRT's LOGISTIC).
template <class T>
inline T logistic_t(T x) {
  const T e = exp_t(-abs_of(x));
  const T r = 1.0f / (1.0f + e);
  return x < -87.3f ? lanes<T>(0.0f) : (x >= 0.0f ? r : e * r);  // NaN: e * r is NaN
}

inline float exp_approx(float x) { return exp_t(x); }
inline float one_plus_erf(float z) { return one_plus_erf_t(z); }
inline float tanh_approx(float x) { return tanh_t(x); }
inline float logistic_approx(float x) { return logistic_t(x); }
inline VA exp_v(VA x) { return exp_t(x); }
inline VA one_plus_erf_v(VA z) { return one_plus_erf_t(z); }
inline VA tanh_v(VA x) { return tanh_t(x); }
inline VA logistic_v(VA x) { return logistic_t(x); }

// y = f(x) a vector at a time, the last n % kVA through a zero-padded copy
template <class F>
void map_v(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 2 * kVA <= n; i += 2 * kVA) {
    const VA a = f(loadA(x + i)), b = f(loadA(x + i + kVA));
    storeA(y + i, a);
    storeA(y + i + kVA, b);
  }
  for (; i + kVA <= n; i += kVA) storeA(y + i, f(loadA(x + i)));
  if (i < n) {
    float tx[kVA] = {}, ty[kVA];
    std::copy(x + i, x + n, tx);
    storeA(ty, f(loadA(tx)));
    std::copy(ty, ty + (n - i), y + i);
  }
}

#if defined(__AVX512F__)
// exp16 and exp16_normal: isa/exp_avx512.h

// 1 / d as rcp14 and one Newton step (relative error about 2^-27)
inline __m512 recip16(__m512 d) {
  const __m512 q = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, _mm512_set1_ps(2.0f)));
}

// logistic_approx on 16 lanes, 2x faster (LOGISTIC of 196608 values 57 -> 30 us): e = e^-|x|,
// 1 / (1 + e), times e where x < 0. Where -|x| < -88 the result is within 2^-126 of the true one.
inline __m512 logistic16(__m512 x) {
  const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __m512 q = recip16(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
  return _mm512_mask_mul_ps(q, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), e, q);
}

// tanh_approx on 16 lanes: the same odd polynomial below 0.625; above, 1 - 2 / (e^2|x| + 1) with
// the sign of x (as tanh_approx: (1 - e) / (1 + e) from e^-2|x| measured 2.0e-7 relative)
inline __m512 tanh16(__m512 x) {
  const __m512 a = _mm512_abs_ps(x), s = _mm512_mul_ps(x, x), one = _mm512_set1_ps(1.0f);
  __m512 p = _mm512_set1_ps(-0.005718891508877277f);
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(0.02065306343138218f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-0.053744640201330185f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(0.13331513106822968f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-0.3333328664302826f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(x, s), p, x);
  const __m512 e = exp16(_mm512_add_ps(a, a));
  const __m512 t = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), recip16(_mm512_add_ps(one, e)), one);
  // the sign of x put on both (AVX-512F has the bitwise operations for integers only): big takes
  // it, and small's -0 stays -0
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
  const __mmask16 lo = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  const __m512 res = _mm512_mask_blend_ps(lo, t, small);
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(res), sign));
}

// GELU (erf form) on 16 lanes: 0.5 x (1 + erf(x / sqrt 2)) with one_plus_erf's polynomials and
// ranges, its exp by exp16 (LOGISTIC's reduction with vscalefps): 1.3x the portable loop's speed
inline __m512 gelu16(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.707106781f));
  const __m512 az = _mm512_abs_ps(z), s = _mm512_mul_ps(z, z), one = _mm512_set1_ps(1.0f);
  __m512 p = _mm512_set1_ps(7.898097828729078e-05f);
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-0.0008024320704862475f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(0.005190049763768911f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-0.026854805648326874f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(0.11283612251281738f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-0.3761262893676758f));
  p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.128379225730896f));
  const __m512 near = _mm512_fmadd_ps(z, p, one);  // |z| < 1: 1 + z P(z^2)
  const __m512 u = _mm512_sub_ps(_mm512_min_ps(az, _mm512_set1_ps(4.0f)), _mm512_set1_ps(2.5f));
  __m512 q = _mm512_set1_ps(-6.582514799902128e-08f);
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(1.6140534171427134e-06f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-1.2976148354937322e-05f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(7.739445572951809e-05f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-0.00042070692870765924f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(0.0021651603747159243f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-0.010858165100216866f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-0.9438936114311218f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-5.352680683135986f));
  q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-7.806815147399902f));
  // erfc(|z|) for 1 <= |z| < 4, 0 beyond; 1 + erf(z) is 2 - erfc for z > 0 and erfc below
  const __m512 e =
      _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(az, _mm512_set1_ps(4.0f), _CMP_LT_OQ), exp16(q));
  const __m512 far = _mm512_mask_sub_ps(e, _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ),
                                        _mm512_set1_ps(2.0f), e);
  const __m512 ope = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(az, one, _CMP_LT_OQ), far, near);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), ope);
}

// y = f(x) 16 values at a time, the tail under a mask
template <class F>
void map16(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, f(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));
  }
}
#endif

void activation(ActKind kind, const float* __restrict__ x, float* __restrict__ y, int64_t n) {
#if defined(__AVX512F__)
  if (kind == ActKind::logistic) return map16(x, y, n, logistic16);
  if (kind == ActKind::tanh) return map16(x, y, n, tanh16);
  if (kind == ActKind::gelu) return map16(x, y, n, gelu16);
  if (kind == ActKind::silu)
    return map16(x, y, n, [](__m512 v) { return _mm512_mul_ps(v, logistic16(v)); });
#else
  if (kind == ActKind::logistic) return map_v(x, y, n, logistic_v);
  if (kind == ActKind::tanh) return map_v(x, y, n, tanh_v);
  if (kind == ActKind::gelu)
    return map_v(x, y, n, [](VA v) { return 0.5f * v * one_plus_erf_v(v * 0.707106781f); });
  if (kind == ActKind::silu) return map_v(x, y, n, [](VA v) { return v * logistic_v(v); });
  if (kind == ActKind::gelu_tanh)
    return map_v(x, y, n, [](VA v) {
      return 0.5f * v * (1.0f + tanh_v(0.797884561f * (v + 0.044715f * v * v * v)));
    });
#endif
  switch (kind) {
    case ActKind::none:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i];
      return;
    case ActKind::relu:
      for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i], 0.0f);
      return;
    case ActKind::relu6:
      for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], 0.0f), 6.0f);
      return;
    case ActKind::relu_n1_to_1:
      for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], -1.0f), 1.0f);
      return;
    case ActKind::hard_swish:
      for (int64_t i = 0; i < n; ++i)
        y[i] = x[i] * std::min(std::max(x[i] + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
      return;
    case ActKind::tanh:
      for (int64_t i = 0; i < n; ++i) y[i] = tanh_approx(x[i]);
      return;
    case ActKind::logistic:
      for (int64_t i = 0; i < n; ++i) y[i] = logistic_approx(x[i]);
      return;
    case ActKind::silu:  // the product MUL(x, LOGISTIC(x)) computed, so the same bits
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] * logistic_approx(x[i]);
      return;
    case ActKind::gelu:
      for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * one_plus_erf(x[i] * 0.707106781f);
      return;
    case ActKind::gelu_tanh:
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanh_approx(0.797884561f * (v + 0.044715f * v * v * v)));
      }
      return;
    case ActKind::sqrt:
      for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]);
      return;
    case ActKind::rsqrt:
      for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / std::sqrt(x[i]);
      return;
    case ActKind::neg:
      for (int64_t i = 0; i < n; ++i) y[i] = -x[i];
      return;
    case ActKind::abs:
      for (int64_t i = 0; i < n; ++i) y[i] = std::fabs(x[i]);
      return;
    case ActKind::elu:  // (expm1: near 0, exp(x) - 1 would lose the digits it is made of)
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? std::expm1(x[i]) : x[i];
      return;
    case ActKind::exp:
      for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
      return;
    case ActKind::log:
      for (int64_t i = 0; i < n; ++i) y[i] = std::log(x[i]);
      return;
    case ActKind::floor:
      for (int64_t i = 0; i < n; ++i) y[i] = std::floor(x[i]);
      return;
    case ActKind::ceil:
      for (int64_t i = 0; i < n; ++i) y[i] = std::ceil(x[i]);
      return;
    case ActKind::round:  // (the default rounding mode: to nearest, ties to even)
      for (int64_t i = 0; i < n; ++i) y[i] = std::nearbyint(x[i]);
      return;
    case ActKind::sign:
      for (int64_t i = 0; i < n; ++i) y[i] = float(int(0.0f < x[i]) - int(x[i] < 0.0f));
      return;
    case ActKind::sin:
      for (int64_t i = 0; i < n; ++i) y[i] = std::sin(x[i]);
      return;
    case ActKind::cos:
      for (int64_t i = 0; i < n; ++i) y[i] = std::cos(x[i]);
      return;
  }
}

// The row reductions (row_sum here, row_max before the portable softmax) keep 16 running lanes
// (lane i takes the elements i mod 16), so the compiler vectorises them without reassociating on
// its own, held as 16 / kVA registers: a 16-lane vector type on narrower paths went through the
// stack every iteration (GCC's lowering), which made SOFTMAX 2.3 ns per element on AVX2. The lanes
// are combined in index order, so the result depends on n alone (not on threads), on every path.
float row_sum(const float* __restrict__ x, int64_t n) {
  constexpr int R = 16 / kVA;
  VA s[R] = {};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int r = 0; r < R; ++r) s[r] += loadA(x + j + r * kVA);
  float out = 0.0f;
  for (int i = 0; i < 16; ++i) out += s[i / kVA][i % kVA];
  for (; j < n; ++j) out += x[j];
  return out;
}

#if defined(__AVX512F__)
// AVX-512: exp16 and the sum in one pass, the last partial vector masked (attention's rows of
// 128 made the per-row setup and the separate passes most of SOFTMAX's time). The order of the
// sum is fixed by n alone, so threads do not change bits. exp16_normal gives 0 below float's
// smallest normal (masked positions). The int8 tier's fused softmax (softmax_rows_s8 in
// isa/int8_avx512.cpp) repeats these steps in this order: keep the two in step.
void softmax_row(const float* __restrict__ x, float* __restrict__ y, int64_t n, float beta) {
  const int64_t full = n / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (n - full)) - 1);
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  for (int64_t j = 0; j < full; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + j));
  if (tail) m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, x + full));
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m)), b = _mm512_set1_ps(beta);
  __m512 s = _mm512_setzero_ps();
  for (int64_t j = 0; j < full; j += 16) {
    const __m512 e = exp16_normal(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mx), b));
    _mm512_storeu_ps(y + j, e);
    s = _mm512_add_ps(s, e);
  }
  if (tail) {
    const __m512 e =
        exp16_normal(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + full), mx), b));
    _mm512_mask_storeu_ps(y + full, tail, e);
    s = _mm512_mask_add_ps(s, tail, s, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
  for (int64_t j = 0; j < full; j += 16)
    _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_loadu_ps(y + j), inv));
  if (tail)
    _mm512_mask_storeu_ps(y + full, tail,
                          _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, y + full), inv));
}
#else
// (the AVX-512 softmax finds its row's maximum itself)
float row_max(const float* __restrict__ x, int64_t n) {
  constexpr int R = 16 / kVA;
  const float inf = __builtin_inff();
  VA m[R];
  for (int r = 0; r < R; ++r) m[r] = splat(-inf);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int r = 0; r < R; ++r) {
      const VA v = loadA(x + j + r * kVA);
      m[r] = m[r] < v ? v : m[r];  // a NaN in m stays, one in v does not enter (as vmax)
    }
  float out = -inf;
  for (int i = 0; i < 16; ++i) out = std::max(out, m[i / kVA][i % kVA]);
  for (; j < n; ++j) out = std::max(out, x[j]);
  return out;
}

void softmax_row(const float* __restrict__ x, float* __restrict__ y, int64_t n, float beta) {
  const float mx = row_max(x, n);
  int64_t j = 0;
  for (; j + kVA <= n; j += kVA) storeA(y + j, exp_v((loadA(x + j) - mx) * beta));
  for (; j < n; ++j) y[j] = exp_approx((x[j] - mx) * beta);
  const float inv = 1.0f / row_sum(y, n);
  const VA vinv = splat(inv);
  for (j = 0; j + kVA <= n; j += kVA) storeA(y + j, loadA(y + j) * vinv);
  for (; j < n; ++j) y[j] *= inv;
}
#endif

// R rows x 16 C columns of Y at once, the accumulators in registers: per k, C loads of B and R
// broadcasts of A feed R * C multiply-adds.
template <int R, int C>
void matmul_tile(const float* a, int64_t a_row, int64_t a_k, const float* b, float* y, int64_t k,
                 int64_t n) {
  V16 acc[R][C] = {};
  for (int64_t kk = 0; kk < k; ++kk) {
    V16 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = load16(b + kk * n + 16 * c);
    for (int r = 0; r < R; ++r) {
      const float av = a[r * a_row + kk * a_k];
      for (int c = 0; c < C; ++c) acc[r][c] += av * bv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) store16(y + r * n + 16 * c, acc[r][c]);
}

template <int R>
void matmul_rows(const float* a, int64_t a_row, int64_t a_k, const float* b, float* y, int64_t k,
                 int64_t n) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) matmul_tile<R, 2>(a, a_row, a_k, b + j, y + j, k, n);
  for (; j + 16 <= n; j += 16) matmul_tile<R, 1>(a, a_row, a_k, b + j, y + j, k, n);
  if (j == n) return;
  for (int r = 0; r < R; ++r) {  // the last n % 16 columns
    float* yr = y + r * n;
    for (int64_t jj = j; jj < n; ++jj) yr[jj] = 0.0f;
    for (int64_t kk = 0; kk < k; ++kk) {
      const float av = a[r * a_row + kk * a_k];
      for (int64_t jj = j; jj < n; ++jj) yr[jj] += av * b[kk * n + jj];
    }
  }
}

void matmul(const float* a, int64_t a_row, int64_t a_k, const float* b, float* y, int64_t m,
            int64_t k, int64_t n) {
  if (a_k == 1) {  // rows of A in place: the kernel tier's dense GEMM, B read in place too
    DenseF32Args p;
    p.a = a, p.lda = a_row, p.b = b, p.b_sk = n, p.b_sm = 1, p.y = y, p.ldy = n;
    p.rows = m, p.cols = n, p.depth = k;
    return kernel_table(EP_VEC_ISA).dense_f32.fn(p);
  }
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) matmul_rows<4>(a + i * a_row, a_row, a_k, b, y + i * n, k, n);
  for (; i < m; ++i) matmul_rows<1>(a + i * a_row, a_row, a_k, b, y + i * n, k, n);
}

void accumulate(const float* __restrict__ x, float* __restrict__ acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

// The layout changes use the kernel tier's transpose of this path (kernels.inc transpose_f32:
// register tiles through shuffles); the NEON build uses the baseline one, whose 4-float tiles
// are NEON registers already.
void transpose(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst,
               int64_t ld) {
  kernel_table(EP_VEC_ISA).transpose_f32.fn({src, rows, cols, dst, ld > 0 ? ld : rows});
}

// P output pixels from ox times NB blocks of 16 channels from cb, the sums in registers across
// every tap (ky, kx, ci in order, the im2col GEMM's order). CHECK: some taps of these pixels
// fall outside the image in x (the edge pixels, one at a time); rows outside are skipped for all.
template <int P, int NB, bool CHECK, int C, int KS = 0>
void conv_tile(const ConvRowArgs& a, int64_t ox, int64_t cb) {
  // in registers of the path (VA): with V16, GCC broadcast each input value to two ymm through
  // 16 scalar stores on AVX2 and kept the accumulators on the stack (0.9 G multiply-adds/s)
  constexpr int L = 16 / kVA, NV = NB * L;  // registers per block of 16 channels, per tile row
  const int64_t c = C > 0 ? C : a.c, co16 = a.co16;
  VA acc[P][NV];
  for (int v = 0; v < NV; ++v) {
    const VA bv = loadA(a.bias + cb + kVA * v);
    for (int p = 0; p < P; ++p) acc[p][v] = bv;
  }
  // KS > 0: a square kernel of that size at dilation 1, known at compile time, so the tap loops
  // unroll and their addresses fold (the stem's per-tap address arithmetic, reloaded from the
  // stack, was about as many instructions as its multiply-adds)
  const int64_t kh = KS > 0 ? KS : a.kh, kw = KS > 0 ? KS : a.kw;
  const int64_t dil_h = KS > 0 ? 1 : a.dil_h, dil_w = KS > 0 ? 1 : a.dil_w;
#pragma GCC unroll 7
  for (int64_t ky = 0; ky < kh; ++ky) {
    const int64_t iy = a.oy * a.stride_h - a.pad_t + ky * dil_h;
    if (iy < 0 || iy >= a.h) continue;
    const float* __restrict__ row = a.x + iy * a.w * c;
#pragma GCC unroll 7
    for (int64_t kx = 0; kx < kw; ++kx) {
      const float* __restrict__ wk = a.wt + (ky * kw + kx) * c * co16 + cb;
      int64_t ix[P];
      bool in[P];
      for (int p = 0; p < P; ++p) {
        ix[p] = (ox + p) * a.stride_w - a.pad_l + kx * dil_w;
        in[p] = !CHECK || (ix[p] >= 0 && ix[p] < a.w);
      }
#if defined(__AVX2__) && !defined(__AVX512F__)
      if constexpr (!CHECK && P > 1) {
        // P pixels' inputs broadcast into registers, then one weight register at a time: P * NV
        // accumulators + P + 1 of the 16 ymm, P + NV loads per P * NV multiply-adds (the other
        // order holds NV weights and reloads them per tap: 2 pixels x 4 registers were 6 loads per
        // 8, which Zen 1's one ymm load a cycle nearly saturates)
        for (int64_t ci = 0; ci < c; ++ci) {
          VA xs[P];
          for (int p = 0; p < P; ++p) xs[p] = splat(row[ix[p] * c + ci]);
          for (int v = 0; v < NV; ++v) {
            VA w = loadA(wk + ci * co16 + kVA * v);
            asm("" : "+x"(w));  // one load per weight, not one folded into each multiply-add
            for (int p = 0; p < P; ++p) acc[p][v] += w * xs[p];
          }
        }
        continue;
      }
#endif
      for (int64_t ci = 0; ci < c; ++ci) {
        VA wv[NV];
        for (int v = 0; v < NV; ++v) {
          wv[v] = loadA(wk + ci * co16 + kVA * v);
#if defined(__AVX2__) && !defined(__AVX512F__)
          // an empty asm that takes the weights in registers: GCC otherwise folded the loads into
          // the FMAs and so loaded every weight once per pixel, 10 loads per 8 FMAs, where Zen 1
          // loads one ymm per cycle (ResNet-18's 7x7 stem 4.2 -> 3.7 ms, the 3x3 stem ~5 %)
          asm("" : "+x"(wv[v]));
#endif
        }
        for (int p = 0; p < P; ++p) {
          if (!in[p]) continue;
          const VA xs = splat(row[ix[p] * c + ci]);
          for (int v = 0; v < NV; ++v) acc[p][v] += wv[v] * xs;
        }
      }
    }
  }
  const VA lo = splat(a.lo), hi = splat(a.hi);
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) {
      VA r = acc[p][v] < lo ? lo : acc[p][v];
      r = r > hi ? hi : r;
      float* y = a.y + (ox + p) * a.cout + cb + kVA * v;
      const int64_t left = a.cout - (cb + kVA * v);
      if (left >= kVA) {
        storeA(y, r);
      } else if (left > 0) {
        float tmp[kVA];
        storeA(tmp, r);
        for (int64_t i = 0; i < left; ++i) y[i] = tmp[i];
      }
    }
}

template <int NB, int C>
void conv_blocks(const ConvRowArgs& a, int64_t cb, int64_t x0, int64_t x1) {
  // 8 pixels x 2 blocks is 16 accumulators, half the zmm registers; the other paths hold a V16
  // in 2 or 4 registers, so fewer pixels
#if defined(__AVX512F__)
  constexpr int P = 8;
#elif defined(__AVX2__)
  constexpr int P = NB == 2 ? 3 : 4;  // (conv_tile: P * 4 or P * 2 accumulators, P + 1 more)
#else
  constexpr int P = 2;
#endif
  for (int64_t ox = 0; ox < x0; ++ox) conv_tile<1, NB, true, C>(a, ox, cb);
  int64_t ox = x0;
  const bool square1 = C == 3 && a.kh == a.kw && a.dil_h == 1 && a.dil_w == 1;
  if (square1 && a.kh == 3)
    for (; ox + P <= x1; ox += P) conv_tile<P, NB, false, C, 3>(a, ox, cb);
  if (square1 && a.kh == 7)
    for (; ox + P <= x1; ox += P) conv_tile<P, NB, false, C, 7>(a, ox, cb);
  for (; ox + P <= x1; ox += P) conv_tile<P, NB, false, C>(a, ox, cb);
  for (; ox < x1; ++ox) conv_tile<1, NB, false, C>(a, ox, cb);
  for (ox = std::max(x0, x1); ox < a.ow; ++ox) conv_tile<1, NB, true, C>(a, ox, cb);
}

void conv_row(const ConvRowArgs& a) {
  // output columns [x0, x1) whose taps all lie inside the image
  const int64_t span = (a.kw - 1) * a.dil_w, last = a.w - 1 - span + a.pad_l;
  const int64_t x1 = std::min(a.ow, last >= 0 ? last / a.stride_w + 1 : 0);
  const int64_t x0 = std::min(x1, (a.pad_l + a.stride_w - 1) / a.stride_w);
  // the channel count known at compile time for RGB, so the innermost loop is unrolled
  for (int64_t cb = 0; cb < a.co16; cb += 32) {
    if (a.co16 - cb >= 32)
      a.c == 3 ? conv_blocks<2, 3>(a, cb, x0, x1) : conv_blocks<2, 0>(a, cb, x0, x1);
    else
      a.c == 3 ? conv_blocks<1, 3>(a, cb, x0, x1) : conv_blocks<1, 0>(a, cb, x0, x1);
  }
}

// One register of channels (T = VA) or one channel (T = float) of the Winograd transforms, so
// the channel tail runs the same arithmetic in the same order as the vector body.
template <class T>
inline T load_t(const float* p) {
  if constexpr (std::is_same_v<T, float>)
    return *p;
  else
    return loadA(p);
}
template <class T>
inline void store_t(float* p, T v) {
  if constexpr (std::is_same_v<T, float>)
    *p = v;
  else
    storeA(p, v);
}
// B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: adds and subtractions only
template <class T>
inline void wino_in_one(const float* x, int64_t row, int64_t c, float* v, int64_t vs) {
  T t[4][4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const T d0 = load_t<T>(x + j * c), d1 = load_t<T>(x + row + j * c);
    const T d2 = load_t<T>(x + 2 * row + j * c), d3 = load_t<T>(x + 3 * row + j * c);
    t[0][j] = d0 - d2, t[1][j] = d1 + d2, t[2][j] = d2 - d1, t[3][j] = d1 - d3;
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    store_t<T>(v + (4 * i) * vs, t[i][0] - t[i][2]);
    store_t<T>(v + (4 * i + 1) * vs, t[i][1] + t[i][2]);
    store_t<T>(v + (4 * i + 2) * vs, t[i][2] - t[i][1]);
    store_t<T>(v + (4 * i + 3) * vs, t[i][1] - t[i][3]);
  }
}
void wino_in(const float* x, int64_t row, int64_t c, int64_t tiles, float* v, int64_t vs) {
  for (int64_t t = 0; t < tiles; ++t) {
    const float* xt = x + 2 * t * c;
    float* vt = v + t * c;
    int64_t ch = 0;
    for (; ch + kVA <= c; ch += kVA) wino_in_one<VA>(xt + ch, row, c, vt + ch, vs);
    for (; ch < c; ++ch) wino_in_one<float>(xt + ch, row, c, vt + ch, vs);
  }
}
// A^T m A with A^T = [1 1 1 0; 0 1 -1 -1], then the bias and the clamp (a NaN stays NaN)
template <class T>
inline void wino_out_one(const float* m, int64_t ms, T b, T lo, T hi, float* y, int64_t yrow,
                         int64_t c, bool two_cols, int64_t rows) {
  T t[2][4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const T m0 = load_t<T>(m + j * ms), m1 = load_t<T>(m + (4 + j) * ms);
    const T m2 = load_t<T>(m + (8 + j) * ms), m3 = load_t<T>(m + (12 + j) * ms);
    t[0][j] = m0 + m1 + m2, t[1][j] = m1 - m2 - m3;
  }
  auto clamp = [&](T o) {
    o = o < lo ? lo : o;
    return o > hi ? hi : o;
  };
  for (int64_t r = 0; r < rows; ++r) {
    store_t<T>(y + r * yrow, clamp(t[r][0] + t[r][1] + t[r][2] + b));
    if (two_cols) store_t<T>(y + r * yrow + c, clamp(t[r][1] - t[r][2] - t[r][3] + b));
  }
}
void wino_out(const float* m, int64_t ms, int64_t c, int64_t tiles, const float* bias, float lo,
              float hi, float* y, int64_t yrow, int64_t ow, int64_t rows) {
  for (int64_t t = 0; t < tiles; ++t) {
    const float* mt = m + t * c;
    float* yt = y + 2 * t * c;
    const bool two = 2 * t + 1 < ow;
    int64_t ch = 0;
    for (; ch + kVA <= c; ch += kVA)
      wino_out_one<VA>(mt + ch, ms, bias ? loadA(bias + ch) : VA{}, splat(lo), splat(hi), yt + ch,
                       yrow, c, two, rows);
    for (; ch < c; ++ch)
      wino_out_one<float>(mt + ch, ms, bias ? bias[ch] : 0.0f, lo, hi, yt + ch, yrow, c, two, rows);
  }
}

}  // namespace

#if defined(__AVX512F__)
}  // namespace EP_VEC_NS
namespace avx2 {
extern const VecOps table;
}
namespace EP_VEC_NS {
namespace {
// Planes whose rows are narrower than this path's 16 lanes but not the AVX2 loop's 8 (MobileNet's
// and EfficientNet's 14x14 layers, the stride-2 layers that make them) run that loop: 8-lane
// vectors are AVX-512's too. Without it they went channel-minor through two transposes, and the
// inverted residuals around them could not be fused (vec.h, VecOps::plane_lanes).
void dw_plane_any(const DwPlaneArgs& a) {
  const bool narrow =
      a.ld > 0 ? !dw_padded_fits(a, kVA) : !dw_plane_direct(a, kVA) && dw_plane_direct(a, 8);
  if (narrow) return avx2::table.dw_plane(a);
  dw_plane(a);
}
constexpr int kPlaneLanes = 8;
}  // namespace
#else
namespace {
void dw_plane_any(const DwPlaneArgs& a) { dw_plane(a); }
constexpr int kPlaneLanes = kVA;
}  // namespace
#endif

extern const VecOps table;
const VecOps table = {dw_row,     dw_plane_any, sparse_plane, pool_row,   binary,  activation,
                      accumulate, transpose,    softmax_row,  matmul,     row_sum, conv_row,
                      wino_in,    wino_out,     kVA,          kPlaneLanes};

}  // namespace EP_VEC_NS
}  // namespace rt
}  // namespace ep
