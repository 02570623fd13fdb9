// The inner loops of the runtime's own operators (everything the GEMM / SpMM kernels do not do),
// compiled once per kernel path with that path's flags (isa/*.cpp include vec_impl.h), so the
// compiler vectorises them for SSE2 (reference), AVX2, AVX-512 or NEON. Operators pick a table
// with vec_ops(isa); each loop's result depends only on its own arguments, never on how an
// operator splits work over threads.
//
// Consumes: NHWC float rows (channels contiguous) and channel planes (NCHW). Produces: float rows
// and planes in caller memory.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dispatch/isa.h"

namespace ep {
namespace rt {

// prelu: a >= 0 ? a : a * b (PRELU with b the slopes, LEAKY_RELU with b its alpha)
enum class BinOp : int { add, sub, mul, div, max, min, pow, prelu, atan2 };
enum class ActKind : int {
  none,
  relu,
  relu6,
  relu_n1_to_1,
  tanh,
  logistic,
  hard_swish,
  gelu,       // x/2 (1 + erf(x/sqrt 2))
  gelu_tanh,  // x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  silu,       // x * logistic(x): LOGISTIC and its MUL fused by the planner
  sqrt,
  rsqrt,
  neg,
  abs,
  elu,  // x < 0 ? exp(x) - 1 : x
  exp,
  log,
  floor,
  ceil,
  round,  // half to even, as TFLite's ROUND and ONNX's Round
  sign,   // -1, 0 or 1 (0 for NaN, TFLite's (0 < x) - (x < 0))
  sin,
  cos,
};

struct DwRowArgs {
  const float* x = nullptr;  // input image [H, W, C] of one batch
  int64_t h = 0, w = 0, c = 0;
  const float* wt = nullptr;    // [KH, KW, C]
  const float* bias = nullptr;  // [C] or nullptr
  int64_t kh = 0, kw = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1, pad_t = 0, pad_l = 0;
  float* y = nullptr;  // output row oy: [OW, C]
  int64_t oy = 0, ow = 0;
  float lo = 0, hi = 0;
};

// One channel plane of a depthwise conv in the channel-major layout: the spatial row is the
// vector axis (XNNPACK's CHW depthwise kernels do the same).
struct DwPlaneArgs {
  const float* x = nullptr;  // input plane [H, W]
  int64_t h = 0, w = 0;
  const float* wt = nullptr;  // this channel's taps [KH, KW]
  float bias = 0;
  int64_t kh = 0, kw = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1, pad_t = 0, pad_l = 0;
  float* y = nullptr;  // output plane [OH, OW]
  int64_t oh = 0, ow = 0;
  float lo = 0, hi = 0;
  // ld > 0: x is a zero-padded plane, rows ld floats apart, whose zeros reach pad_t rows above
  // and pad_l columns left of the input and dw_padded_extent's rows and columns past its end, so
  // that where dw_padded_fits, every tap is read in place (a fused expansion writes its planes so)
  int64_t ld = 0;
  // Output rows [oy0, oy1) only (oy1 = 0: to oh), where dw_plane_bands: a band of the plane,
  // with y pointing at row oy0 (x still at the plane's start). Only the input rows their taps
  // reach are read.
  int64_t oy0 = 0, oy1 = 0;
};

// Whether dw_plane runs a padded plane (DwPlaneArgs::ld) in place: KxK (3 or 5) at stride 2,
// dilation 1, padding inside the filter, rows of at least one vector of `lanes` outputs.
inline bool dw_padded_fits(const DwPlaneArgs& a, int64_t lanes) {
  return (a.kh == 3 || a.kh == 5) && a.kw == a.kh && a.stride_h == 2 && a.stride_w == 2 &&
         a.dil_h == 1 && a.dil_w == 1 && a.pad_t < a.kh && a.pad_l < a.kw && a.ow >= lanes &&
         a.oh >= 1;
}
// The zero rows below and columns right of the input a padded plane needs (dw_padded_fits):
// the last output row's taps, and the last vector's loads (it ends at the row's last output: 2 *
// ow columns from each of its (K + 1) / 2 column pairs, one past its last tap), whatever the lanes.
inline void dw_padded_extent(const DwPlaneArgs& a, int64_t* bottom, int64_t* right) {
  *bottom = std::max<int64_t>(0, 2 * (a.oh - 1) - a.pad_t + a.kh - a.h);
  *right = std::max<int64_t>(0, 2 * a.ow - a.pad_l + a.kw - 1 - a.w);
}

// Whether dw_plane runs `a` straight from the input plane (3x3 and 5x5 at stride 1 with SAME
// padding, rows of at least a vector of `lanes` floats and the filter's reach): no padded copy,
// and planes of 14x14 and up run faster so than through transposes and the channel-minor row
// kernel. The others take a padded copy first, which small planes cannot amortise.
inline bool dw_plane_direct(const DwPlaneArgs& a, int64_t lanes) {
  const int64_t pad = (a.kh - 1) / 2;
  return (a.kh == 3 || a.kh == 5) && a.kw == a.kh && a.stride_h == 1 && a.stride_w == 1 &&
         a.dil_h == 1 && a.dil_w == 1 && a.pad_t == pad && a.pad_l == pad && a.oh == a.h &&
         a.ow == a.w && a.w >= lanes + pad;
}

// Whether dw_plane computes a band of output rows alone (DwPlaneArgs::oy0, oy1): the padded
// stride-2 planes and those run straight from the input
inline bool dw_plane_bands(const DwPlaneArgs& a, int64_t lanes) {
  return a.ld > 0 ? dw_padded_fits(a, lanes) : dw_plane_direct(a, lanes);
}

// Output planes of a sparse 1x1 convolution, channel-major: `rows` (1 or 4) channels sharing
// their pattern of nonzeros, computed `lines` lines of n columns at a time (the input lines
// contiguous, the output's ldl apart: a padded plane's rows). Output (r, line, i) = clamp(bias[r]
// + sum_j w[j * rows + r] * x[idx[j] * ld + line * n + i], lo, hi), the nonzeros summed in their
// order, so a channel has the same bits whether computed alone or in a group of 4.
struct SparsePlaneArgs {
  const float* x = nullptr;  // input planes, ld floats apart
  int64_t ld = 0;
  const int32_t* idx = nullptr;  // the nonzeros' input channels
  const float* w = nullptr;      // and their weights, [nnz, rows]
  int64_t nnz = 0;
  int rows = 1;
  const float* bias = nullptr;  // [rows]
  float lo = 0, hi = 0;
  float* y = nullptr;  // output plane r at y + r * ldy
  int64_t ldy = 0, n = 0;
  int64_t lines = 1, ldl = 0;
};

struct PoolRowArgs {
  const float* x = nullptr;  // [H, W, C]
  int64_t h = 0, w = 0, c = 0;
  int64_t fh = 1, fw = 1, stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0;
  float* y = nullptr;  // row oy: [OW, C]
  int64_t oy = 0, ow = 0;
  bool max = false;
  float lo = 0, hi = 0;
  // max: a folded PAD's constant, which every window reaching past the input includes
  bool pad_max = false;
  float pad_value = 0;
};

// A direct convolution for few input channels (the RGB stems: 3x3/2 or 7x7/2 on 3 channels),
// one output row: each input value broadcast against a row of the packed weight, so no im2col
// is written (for a 7x7 stem that column buffer is 147 floats per output pixel).
struct ConvRowArgs {
  const float* x = nullptr;  // input image [H, W, C] of one batch
  int64_t h = 0, w = 0, c = 0;
  const float* wt = nullptr;    // [KH, KW, C, CO16]: output channels padded with zeros to 16s
  const float* bias = nullptr;  // [CO16]
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1, pad_t = 0, pad_l = 0;
  int64_t cout = 0, co16 = 0;
  float* y = nullptr;  // output row oy: [OW, cout]
  int64_t oy = 0, ow = 0;
  float lo = 0, hi = 0;
};

struct VecOps {
  // depthwise conv (depth multiplier 1), one output row
  void (*dw_row)(const DwRowArgs&);
  void (*dw_plane)(const DwPlaneArgs&);
  void (*sparse_plane)(const SparsePlaneArgs&);
  void (*pool_row)(const PoolRowArgs&);
  // y[i] = clamp(a[i * sa] op b[i * sb], lo, hi), sa and sb 0 or 1
  void (*binary)(BinOp op, const float* a, int64_t sa, const float* b, int64_t sb, float* y,
                 int64_t n, float lo, float hi);
  void (*activation)(ActKind kind, const float* x, float* y, int64_t n);
  // acc[i] += x[i]
  void (*accumulate)(const float* x, float* acc, int64_t n);
  // dst[c * ld + r] = src[r, c] for a [rows, cols] matrix (layout changes at NCHW subgraph
  // edges); ld = 0 means rows, a whole transpose. With ld, rows [r0, r1) of a larger matrix
  // transpose alone: src + r0 * cols, r1 - r0 rows, dst + r0, ld = all rows.
  void (*transpose)(const float* src, int64_t rows, int64_t cols, float* dst, int64_t ld);
  // y = softmax(beta * x) over one row of n
  void (*softmax_row)(const float* x, float* y, int64_t n, float beta);
  // Y[m, n] = A B: A's element (i, k) at a[i * a_row + k * a_k] (a transposed A is a_row = 1),
  // B [k, n] row-major; every output element sums over k in order
  void (*matmul)(const float* a, int64_t a_row, int64_t a_k, const float* b, float* y, int64_t m,
                 int64_t k, int64_t n);
  // the sum of a row, in a fixed order
  float (*sum)(const float* x, int64_t n);
  void (*conv_row)(const ConvRowArgs&);
  // Winograd F(2x2, 3x3) transforms (Lavin and Gray, "Fast Algorithms for Convolutional Neural
  // Networks", 2016) for one row of `tiles` tiles of NHWC data with c channels, the channel axis
  // vectorised. wino_in: tile t's 4x4 input d(i, j) = x[i * row + (2t + j) * c + ch] becomes
  // v[(4i + j) * vs + t * c + ch] = (B^T d B)(i, j). wino_out: the tile's 4x4 products
  // m[(4i + j) * ms + t * c + ch] become the 2x2 outputs clamp(A^T m A + bias, lo, hi) at
  // y[r * yrow + (2t + s) * c + ch], for r < rows and 2t + s < ow (bias may be null).
  void (*wino_in)(const float* x, int64_t row, int64_t c, int64_t tiles, float* v, int64_t vs);
  void (*wino_out)(const float* m, int64_t ms, int64_t c, int64_t tiles, const float* bias,
                   float lo, float hi, float* y, int64_t yrow, int64_t ow, int64_t rows);
  int lanes;  // floats per vector register of the path
  // The narrowest rows dw_plane runs on vectors (dw_plane_direct, dw_padded_fits): the register's
  // lanes, but 8 on AVX-512, whose dw_plane gives rows of 8 to 15 floats (plus the filter's
  // reach) to the AVX2 loop. Callers choose planes, fusions and bands with it.
  int plane_lanes;
};

const VecOps& vec_ops(Isa isa);

}  // namespace rt
}  // namespace ep
