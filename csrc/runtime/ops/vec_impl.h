// The loops of vec.h, written so the compiler vectorises the channel loop with the flags of the
// file that includes this header (EP_VEC_NS names that file's namespace). No intrinsics: one
// source for every path.
#include <algorithm>
#include <cmath>

#include "runtime/ops/vec.h"

namespace ep {
namespace rt {
namespace EP_VEC_NS {

namespace {

inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

void dw_row(const DwRowArgs& a) {
  const int64_t c = a.c;
  for (int64_t ox = 0; ox < a.ow; ++ox) {
    float* __restrict__ y = a.y + ox * c;
    if (a.bias)
      for (int64_t i = 0; i < c; ++i) y[i] = a.bias[i];
    else
      for (int64_t i = 0; i < c; ++i) y[i] = 0.0f;
    for (int64_t ky = 0; ky < a.kh; ++ky) {
      const int64_t iy = a.oy * a.stride_h - a.pad_t + ky * a.dil_h;
      if (iy < 0 || iy >= a.h) continue;
      for (int64_t kx = 0; kx < a.kw; ++kx) {
        const int64_t ix = ox * a.stride_w - a.pad_l + kx * a.dil_w;
        if (ix < 0 || ix >= a.w) continue;
        const float* __restrict__ x = a.x + (iy * a.w + ix) * c;
        const float* __restrict__ w = a.wt + (ky * a.kw + kx) * c;
        for (int64_t i = 0; i < c; ++i) y[i] += x[i] * w[i];
      }
    }
    const float lo = a.lo, hi = a.hi;
    for (int64_t i = 0; i < c; ++i) y[i] = std::min(std::max(y[i], lo), hi);
  }
}

void pool_row(const PoolRowArgs& a) {
  const int64_t c = a.c;
  for (int64_t ox = 0; ox < a.ow; ++ox) {
    float* __restrict__ y = a.y + ox * c;
    const float init = a.max ? -INFINITY : 0.0f;
    for (int64_t i = 0; i < c; ++i) y[i] = init;
    int64_t count = 0;
    for (int64_t ky = 0; ky < a.fh; ++ky) {
      const int64_t iy = a.oy * a.stride_h - a.pad_t + ky;
      if (iy < 0 || iy >= a.h) continue;
      for (int64_t kx = 0; kx < a.fw; ++kx) {
        const int64_t ix = ox * a.stride_w - a.pad_l + kx;
        if (ix < 0 || ix >= a.w) continue;
        const float* __restrict__ x = a.x + (iy * a.w + ix) * c;
        ++count;
        if (a.max)
          for (int64_t i = 0; i < c; ++i) y[i] = std::max(y[i], x[i]);
        else
          for (int64_t i = 0; i < c; ++i) y[i] += x[i];
      }
    }
    const float lo = a.lo, hi = a.hi;
    if (!a.max) {
      const float n = float(count > 0 ? count : 1);
      for (int64_t i = 0; i < c; ++i) y[i] /= n;
    }
    for (int64_t i = 0; i < c; ++i) y[i] = std::min(std::max(y[i], lo), hi);
  }
}

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
  }
}

void activation(ActKind kind, const float* __restrict__ x, float* __restrict__ y, int64_t n) {
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
      for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
      return;
    case ActKind::logistic:
      for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
      return;
  }
}

void accumulate(const float* __restrict__ x, float* __restrict__ acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

}  // namespace

extern const VecOps table;
const VecOps table = {dw_row, pool_row, binary, activation, accumulate};

}  // namespace EP_VEC_NS
}  // namespace rt
}  // namespace ep
