// The construction context every operator constructor checks the file through (fp32 and int8
// tiers alike): input/output lookup and the shape checks that must pass before any pointer
// arithmetic depends on a tensor. Errors name the operator.
//
// Consumes: a validated Model and one OpDesc. Produces: checked tensor references, or throws
// ModelError (the file is inconsistent) / UnsupportedError (valid, but not something we run).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "runtime/model.h"

namespace ep {
namespace rt {

struct OpContext {
  const Model& m;
  const OpDesc& d;
  std::string where;

  [[noreturn]] void bad(const std::string& msg) const { throw ModelError(where + ": " + msg); }
  [[noreturn]] void unsupported(const std::string& msg) const {
    throw UnsupportedError(where + ": " + msg);
  }
  bool has_in(size_t i) const { return i < d.inputs.size() && d.inputs[i] >= 0; }
  const Tensor& in(size_t i) const {
    if (!has_in(i)) bad("input " + std::to_string(i) + " is missing");
    return m.tensors[d.inputs[i]];
  }
  const Tensor& out() const { return m.tensors[d.outputs[0]]; }
  const Tensor& constant(size_t i) const {
    const Tensor& t = in(i);
    if (!t.is_const()) bad("input " + std::to_string(i) + " must be a constant");
    return t;
  }
  void rank(const Tensor& t, size_t r) const {
    if (t.shape.size() != r)
      bad("tensor '" + t.name + "' has rank " + std::to_string(t.shape.size()) + ", expected " +
          std::to_string(r));
  }
  void shape_is(const Tensor& t, const std::vector<int64_t>& s) const {
    if (t.shape != s) {
      std::string got, want;
      for (auto v : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(v);
      for (auto v : s) want += (want.empty() ? "" : ", ") + std::to_string(v);
      bad("tensor '" + t.name + "' has shape [" + got + "], the operator computes [" + want + "]");
    }
  }
  // An int32/int64 constant vector (axes, perm, paddings).
  std::vector<int64_t> int_values(size_t i) const {
    const Tensor& t = constant(i);
    std::vector<int64_t> v(size_t(t.elems));
    if (t.type == DType::i32)
      for (int64_t k = 0; k < t.elems; ++k) v[size_t(k)] = t.as<int32_t>()[k];
    else if (t.type == DType::i64)
      for (int64_t k = 0; k < t.elems; ++k) v[size_t(k)] = t.as<int64_t>()[k];
    else
      bad("input " + std::to_string(i) + " must be int32 or int64");
    return v;
  }
};

// Output size and leading padding of one spatial dimension, as TFLite computes them; with an
// explicit padding (a folded PAD: dim 0 = H, 1 = W) the VALID size of the padded input.
inline int64_t conv_dim(const OpContext& c, int64_t in, int64_t k, int64_t stride, int64_t dil,
                        Padding p, int64_t* pad, int dim = -1) {
  if (stride < 1 || dil < 1 || k < 1) c.bad("stride, dilation and kernel size must be positive");
  const int64_t ek = (k - 1) * dil + 1;
  if (dim >= 0 && c.d.explicit_pad) {
    const int64_t before = c.d.pad[2 * dim], total = before + c.d.pad[2 * dim + 1] + in;
    if (total < ek) c.bad("the window is larger than the padded input");
    *pad = before;
    return (total - ek) / stride + 1;
  }
  const int64_t out = p == Padding::same ? (in + stride - 1) / stride
                                         : (in - ek + stride) / stride;  // ceil((in-ek+1)/stride)
  if (out < 1) c.bad("the window is larger than the input");
  const int64_t total = std::max<int64_t>((out - 1) * stride + ek - in, 0);
  *pad = p == Padding::same ? total / 2 : 0;
  return out;
}

// TRANSPOSE_CONV's geometry, the same for float32 and int8. Inputs: output_shape (constant
// int32 [4]), weights [O, KH, KW, I], the input [N, H, W, I]. Input pixel (y, x) adds into output
// pixel (y * stride - pad_t + ky, x * stride - pad_l + kx), as TFLite's reference kernel; the
// padding is TFLite's: that of a forward convolution from the output's size.
struct TransposeConvGeometry {
  int64_t n = 0, h = 0, w = 0, cin = 0, cout = 0, kh = 0, kw = 0, oh = 0, ow = 0;
  int64_t sh = 1, sw = 1, pt = 0, pl = 0;

  void init(const OpContext& c, const Tensor& shape, const Tensor& wt, const Tensor& x,
            const Tensor& y) {
    if (shape.type != DType::i32 || shape.elems != 4) c.bad("output_shape must be int32 [4]");
    c.rank(wt, 4);
    c.rank(x, 4);
    n = x.shape[0], h = x.shape[1], w = x.shape[2], cin = x.shape[3];
    cout = wt.shape[0], kh = wt.shape[1], kw = wt.shape[2];
    // before anything loops over them: a file's input of 10^9 rows of zero width holds no bytes,
    // and the scatter walked its rows for seconds (found by the loader fuzzer)
    if (n < 1 || h < 1 || w < 1 || cin < 1 || cout < 1 || kh < 1 || kw < 1)
      c.bad("input and filter dimensions must be positive");
    if (wt.shape[3] != cin)
      c.bad("filter input channels " + std::to_string(wt.shape[3]) + " differ from the input's " +
            std::to_string(cin));
    const int32_t* os = shape.as<int32_t>();
    c.shape_is(y, {n, int64_t(os[1]), int64_t(os[2]), cout});
    if (os[0] != n || os[3] != cout) c.bad("output_shape disagrees with the input and filter");
    oh = os[1], ow = os[2];
    sh = c.d.stride_h, sw = c.d.stride_w;
    conv_dim(c, oh, kh, sh, 1, c.d.padding, &pt);
    conv_dim(c, ow, kw, sw, 1, c.d.padding, &pl);
  }
  // Calls f(input pixel, tap, output pixel) for every tap of every input pixel that lands inside
  // the output, in one fixed order (input rows, columns, then taps): the col2im scatter both
  // TRANSPOSE_CONV operators share, so float sums and int32 wraparound happen in the same order.
  template <class F>
  void scatter(F f) const {
    for (int64_t iy = 0; iy < h; ++iy)
      for (int64_t ix = 0; ix < w; ++ix)
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t oy = iy * sh - pt + ky;
          if (oy < 0 || oy >= oh) continue;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const int64_t ox = ix * sw - pl + kx;
            if (ox >= 0 && ox < ow) f(iy * w + ix, ky * kw + kx, oy * ow + ox);
          }
        }
  }
};

}  // namespace rt
}  // namespace ep
