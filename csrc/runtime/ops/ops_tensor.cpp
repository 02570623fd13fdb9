// The operators of transformer graphs that are not convolutions: BATCH_MATMUL of two
// activations, and the typed tensor operators attention masks and embeddings lower to (GATHER,
// CAST, comparisons, LOGICAL_*, SELECT_V2, BROADCAST_TO). Unlike the fp32 tier these take int32,
// int64 and bool tensors as well; they move or compare elements and never do float arithmetic
// on them, except BATCH_MATMUL (float32 here; int8 in ops_int8.cpp).
//
// Consumes: a validated Model and one OpDesc. Produces: Op objects (ops.h).
#include "runtime/ops/ops_tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "layers/layers.h"
#include "layers/parallel.h"
#include "runtime/ops/broadcast.h"
#include "runtime/ops/movement.h"
#include "runtime/ops/op_context.h"
#include "runtime/ops/vec.h"

namespace ep {
namespace rt {

namespace {

std::string dims(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

bool plain_type(DType t) {
  return t == DType::f32 || t == DType::i32 || t == DType::i64 || t == DType::boolean;
}

const Tensor& typed(const OpContext& c, const Tensor& t) {
  if (!plain_type(t.type) || t.quantized())
    c.unsupported("tensor '" + t.name + "' is " + dtype_name(t.type) +
                  (t.quantized() ? " with quantization" : "") +
                  " (this operator takes float32, int32, int64 or bool)");
  return t;
}

// The input of an operator that moves elements without changing them (BROADCAST_TO, SPLIT_V):
// a plain type, or int8 with one scale and zero point that the output carries too (the bytes
// keep their meaning; attention's int8 keys and values split from one projection or repeated
// for grouped-query heads)
const Tensor& moved(const OpContext& c, const Tensor& x, const Tensor& y) {
  if (x.type != DType::i8) return typed(c, x);
  if (!x.quantized() || x.scale.size() != 1 || y.scale != x.scale || y.zero_point != x.zero_point)
    c.unsupported("int8 tensor '" + x.name +
                  "' needs one scale and zero point, and the output the same ones");
  return x;
}

template <class T>
const T* at(const RunCtx& r, int t) {
  return reinterpret_cast<const T*>(r.ptr[t]);
}
template <class T>
T* out_at(const RunCtx& r, int t) {
  return reinterpret_cast<T*>(r.ptr[t]);
}

// Calls f with a value of the C++ type TFLite's type t stores (bool as uint8_t).
template <class F>
void with_type(DType t, F f) {
  switch (t) {
    case DType::f32:
      return f(float());
    case DType::i32:
      return f(int32_t());
    case DType::i64:
      return f(int64_t());
    default:
      return f(uint8_t());
  }
}

// ------------------------------------------------------------------------ BATCH_MATMUL
// Y[b] = op(A[b]) op(B[b]) with numpy broadcasting of the batch dimensions, on the path's
// register-tiled matmul. Tasks are fixed blocks of rows and every output element sums over K in
// order, so threads do not change the bits. A transposed B (adj_y) is first transposed into
// scratch, so the kernel always runs along N.
class BatchMatMul : public Op {
 public:
  BatchMatMul(const OpContext& c, const OpOptions& o) : vec_(vec_ops(o.isa)) {
    const Tensor &a = c.in(0), &b = c.in(1), &y = c.out();
    for (const Tensor* t : {&a, &b, &y})
      if (t->type != DType::f32 || t->quantized())
        c.unsupported("tensor '" + t->name +
                      "' is not float32 (BATCH_MATMUL takes float32, or int8 in all three)");
    mm_.init(c, a, b, y);
    adj_x_ = mm_.adj_x, adj_y_ = mm_.adj_y, m_ = mm_.m, k_ = mm_.k, n_ = mm_.n;
    bmats_ = b.elems / (k_ * n_);
    kind = "BATCH_MATMUL";
    macs = double(mm_.count) * m_ * k_ * n_;
    label = kind + " " + dims(a.shape) + (adj_x_ ? "T" : "") + " x " + dims(b.shape) +
            (adj_y_ ? "T" : "");
  }
  int64_t scratch_bytes() const override { return adj_y_ ? bmats_ * k_ * n_ * 4 : 0; }
  void run(const RunCtx& r) const override {
    const float *a = r.ptr[ia_], *b = r.ptr[ib_];
    float* y = r.ptr[out_];
    if (adj_y_) {  // B[n, k] -> [k, n], per stored matrix
      float* t = static_cast<float*>(r.scratch);
      for (int64_t i = 0; i < bmats_; ++i)
        vec_.transpose(b + i * n_ * k_, n_, k_, t + i * k_ * n_, 0);
      b = t;
    }
    // tasks of kRows rows (whole tiles of the dense kernels: 6 rows on AVX2 and NEON, 8 on
    // AVX-512), fixed whatever the threads
    const int64_t blocks = (m_ + kRows - 1) / kRows;
    const int64_t a_row = adj_x_ ? 1 : k_, a_k = adj_x_ ? m_ : 1;
    parallel_for(threads_for(r.threads, macs), mm_.count * blocks, [&](int64_t t) {
      const int64_t mat = t / blocks, i0 = t % blocks * kRows, rows = std::min(kRows, m_ - i0);
      const auto [ia, ib] = mm_(mat);
      const float* am = a + ia * m_ * k_ + i0 * a_row;
      const float* bm = b + ib * k_ * n_;
      vec_.matmul(am, a_row, a_k, bm, y + (mat * m_ + i0) * n_, rows, k_, n_);
    });
  }
  int ia_ = 0, ib_ = 0, out_ = 0;

 private:
  static constexpr int64_t kRows = 48;
  const VecOps& vec_;
  bool adj_x_ = false, adj_y_ = false;
  int64_t m_ = 0, k_ = 0, n_ = 0, bmats_ = 1;
  MatmulGeometry mm_;
};

// ------------------------------------------------------------------------ element-wise, typed
enum class Cmp { eq, ne, lt, le, gt, ge, land, lor };

template <class T>
bool compare(Cmp op, T a, T b) {
  switch (op) {
    case Cmp::eq:
      return a == b;
    case Cmp::ne:
      return a != b;
    case Cmp::lt:
      return a < b;
    case Cmp::le:
      return a <= b;
    case Cmp::gt:
      return a > b;
    case Cmp::ge:
      return a >= b;
    case Cmp::land:
      return a && b;
    case Cmp::lor:
      return a || b;
  }
  return false;
}

template <class T>
void compare_rows(Cmp op, const T* __restrict__ a, const T* __restrict__ b, uint8_t* __restrict__ y,
                  int64_t n) {
  switch (op) {
    case Cmp::eq:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] == b[i];
      return;
    case Cmp::ne:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] != b[i];
      return;
    default:
      for (int64_t i = 0; i < n; ++i) y[i] = compare(op, a[i], b[i]);
  }
}

// EQUAL ... GREATER_EQUAL (any plain type), LOGICAL_AND / LOGICAL_OR (bool): a bool output.
class Compare : public Op {
 public:
  Compare(const OpContext& c, Cmp op, const char* name) : op_(op) {
    const Tensor &a = typed(c, c.in(0)), &b = typed(c, c.in(1)), &y = c.out();
    if (a.type != b.type) c.bad("the operands' types differ");
    if (y.type != DType::boolean) c.bad("the output must be bool");
    if ((op == Cmp::land || op == Cmp::lor) && a.type != DType::boolean)
      c.bad("logical operators take bool operands");
    c.shape_is(y, Broadcast::result(c, {a.shape, b.shape}));
    g_.init(c, {a.shape, b.shape}, y.shape);
    type_ = a.type;
    kind = name;
    label = kind + " " + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    uint8_t* y = out_at<uint8_t>(r, out_);
    with_type(type_, [&](auto tag) {
      using T = decltype(tag);
      const T *a = at<T>(r, ia_), *b = at<T>(r, ib_);
      int64_t o = 0;
      g_.rows([&](const int64_t* off, int64_t n, const int64_t* is) {
        const T *pa = a + off[0], *pb = b + off[1];
        if (is[0] && is[1])  // the common same-shape case, a loop the compiler vectorises
          compare_rows(op_, pa, pb, y + o, n);
        else
          for (int64_t i = 0; i < n; ++i) y[o + i] = compare(op_, pa[i * is[0]], pb[i * is[1]]);
        o += n;
      });
    });
  }
  int ia_ = 0, ib_ = 0, out_ = 0;

 private:
  Cmp op_;
  DType type_ = DType::f32;
  Broadcast g_;
};

class LogicalNot : public Op {
 public:
  explicit LogicalNot(const OpContext& c) {
    const Tensor &x = c.in(0), &y = c.out();
    if (x.type != DType::boolean || y.type != DType::boolean) c.bad("LOGICAL_NOT takes bool");
    c.shape_is(y, x.shape);
    elems_ = x.elems;
    kind = "LOGICAL_NOT";
    label = kind + " " + dims(x.shape);
  }
  void run(const RunCtx& r) const override {
    const uint8_t* x = at<uint8_t>(r, in_);
    uint8_t* y = out_at<uint8_t>(r, out_);
    for (int64_t i = 0; i < elems_; ++i) y[i] = !x[i];
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t elems_ = 0;
};

// SELECT_V2: y = cond ? a : b, broadcast. The values are copied as bytes of their size.
class SelectV2 : public Op {
 public:
  explicit SelectV2(const OpContext& c) {
    const Tensor &k = c.in(0), &a = typed(c, c.in(1)), &b = typed(c, c.in(2)), &y = c.out();
    if (k.type != DType::boolean) c.bad("the condition must be bool");
    if (a.type != b.type || y.type != a.type) c.bad("the values' and output's types differ");
    c.shape_is(y, Broadcast::result(c, {k.shape, a.shape, b.shape}));
    g_.init(c, {k.shape, a.shape, b.shape}, y.shape);
    type_ = a.type;
    kind = "SELECT_V2";
    label = kind + " " + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    const uint8_t* k = at<uint8_t>(r, ik_);
    with_type(type_, [&](auto tag) {
      using T = decltype(tag);
      const T *a = at<T>(r, ia_), *b = at<T>(r, ib_);
      T* y = out_at<T>(r, out_);
      g_.rows([&](const int64_t* off, int64_t n, const int64_t* is) {
        const uint8_t* pk = k + off[0];
        const T *pa = a + off[1], *pb = b + off[2];
        if (is[0] == 1 && is[1] == 0 && is[2] == 1) {  // where(mask, constant, x)
          const T va = pa[0];
          for (int64_t i = 0; i < n; ++i) y[i] = pk[i] ? va : pb[i];
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = pk[i * is[0]] ? pa[i * is[1]] : pb[i * is[2]];
        }
        y += n;
      });
    });
  }
  int ik_ = 0, ia_ = 0, ib_ = 0, out_ = 0;

 private:
  DType type_ = DType::f32;
  Broadcast g_;
};

// ADD / SUB / MUL of int32 or int64 tensors, numpy broadcasting: the index arithmetic of
// transformers models (RoBERTa's position ids). Results wrap (two's complement) like TFLite's
// kernels on overflow, through unsigned arithmetic; no fused activation.
class IntBinary : public Op {
 public:
  IntBinary(const OpContext& c, OpCode code) : code_(code) {
    const Tensor &a = typed(c, c.in(0)), &b = typed(c, c.in(1)), &y = c.out();
    if (a.type != DType::i32 && a.type != DType::i64)
      c.bad("integer arithmetic takes int32 or int64");
    if (b.type != a.type || y.type != a.type) c.bad("the operands' and output's types differ");
    if (c.d.act != FusedAct::none) c.unsupported("a fused activation on integer arithmetic");
    c.shape_is(y, Broadcast::result(c, {a.shape, b.shape}));
    g_.init(c, {a.shape, b.shape}, y.shape);
    type_ = a.type;
    kind = op_name(int32_t(code));
    label = kind + " " + dtype_name(a.type) + " " + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    if (type_ == DType::i32) return run_as<int32_t>(r);
    run_as<int64_t>(r);
  }
  int ia_ = 0, ib_ = 0, out_ = 0;

 private:
  template <class T>
  void run_as(const RunCtx& r) const {
    using U = std::make_unsigned_t<T>;
    const T *a = at<T>(r, ia_), *b = at<T>(r, ib_);
    T* y = out_at<T>(r, out_);
    g_.rows([&](const int64_t* off, int64_t n, const int64_t* is) {
      const T *pa = a + off[0], *pb = b + off[1];
      for (int64_t i = 0; i < n; ++i) {
        const U p = U(pa[i * is[0]]), q = U(pb[i * is[1]]);
        y[i] = T(code_ == OpCode::add ? p + q : code_ == OpCode::sub ? p - q : U(p * q));
      }
      y += n;
    });
  }
  OpCode code_;
  DType type_ = DType::i32;
  Broadcast g_;
};

// ARG_MAX along a constant axis (float32, int32, int64 values; int32 or int64 indices, the
// output's type, which is what ArgMaxOptions.output_type says): the first index of the largest
// value, as TFLite's kernel compares strictly, NaN ignored unless the row is all NaN (index 0).
// CLIP's text encoder pools at the argmax of its ids.
class ArgMax : public Op {
 public:
  explicit ArgMax(const OpContext& c) {
    const Tensor &x = typed(c, c.in(0)), &y = c.out();
    if (x.type == DType::boolean) c.bad("ARG_MAX takes float32, int32 or int64 values");
    if (y.type != DType::i32 && y.type != DType::i64) c.bad("the output must be int32 or int64");
    const auto axis = c.int_values(1);
    const int r = int(x.shape.size());
    if (axis.size() != 1 || axis[0] < -r || axis[0] >= r)
      c.bad("the axis must be one value in [-rank, rank)");
    const int a = int(axis[0] < 0 ? axis[0] + r : axis[0]);
    std::vector<int64_t> want;
    for (int i = 0; i < r; ++i) {
      if (i == a) continue;
      want.push_back(x.shape[size_t(i)]);
      if (i < a)
        outer_ *= x.shape[size_t(i)];
      else
        inner_ *= x.shape[size_t(i)];
    }
    c.shape_is(y, want);
    dim_ = x.shape[size_t(a)];
    if (dim_ < 1) c.bad("the axis has no elements");
    type_ = x.type;
    wide_ = y.type == DType::i64;
    kind = "ARG_MAX";
    label = kind + " " + dims(x.shape) + " axis " + std::to_string(a);
  }
  void run(const RunCtx& r) const override {
    with_type(type_, [&](auto tag) {
      using T = decltype(tag);
      const T* x = at<T>(r, in_);
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) {
          int64_t best = 0;
          for (int64_t s = 1; s < dim_; ++s) {
            const T v = x[(o * dim_ + s) * inner_ + i], m = x[(o * dim_ + best) * inner_ + i];
            // a NaN never wins (LiteRT's kernel starts from the lowest value): a number after a
            // leading NaN replaces it
            if (v > m || (m != m && v == v)) best = s;
          }
          const int64_t at_out = o * inner_ + i;
          if (wide_)
            out_at<int64_t>(r, out_)[at_out] = best;
          else
            out_at<int32_t>(r, out_)[at_out] = int32_t(best);
        }
    });
  }
  int in_ = 0, out_ = 0;

 private:
  DType type_ = DType::f32;
  bool wide_ = false;
  int64_t outer_ = 1, dim_ = 1, inner_ = 1;
};

// RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR of an NHWC image to the constant size [H', W'] of
// input 1, TFLite's reference arithmetic: scale = in / out in float (align_corners: (in - 1) /
// (out - 1)); nearest picks floor((o + offset) * scale) (align_corners: rounded half away from
// zero) clamped to the input, offset 0.5 with half_pixel_centers; bilinear weighs the two
// neighbours floor / ceil of o * scale (half pixel: (o + 0.5) * scale - 0.5), clamped. Nearest
// copies values of any type (an int8 tensor keeps its scale: the output must have the same);
// bilinear is float32. Upsampling in segmentation heads, FPN / YOLO necks, MobileViT.
class Resize : public Op {
 public:
  Resize(const OpContext& c, bool bilinear)
      : bilinear_(bilinear), align_(c.d.align_corners), half_(c.d.half_pixel_centers) {
    const Tensor &x = c.in(0), &y = c.out();
    c.rank(x, 4);
    if (y.type != x.type) c.bad("input and output types differ");
    if (bilinear && x.type != DType::f32)
      c.unsupported(std::string("RESIZE_BILINEAR of ") + dtype_name(x.type));
    if (x.quantized() || y.quantized()) {
      if (bilinear) c.unsupported("RESIZE_BILINEAR of a quantized tensor");
      if (x.scale != y.scale || x.zero_point != y.zero_point)
        c.bad("a nearest-neighbour resize must keep the input's quantization");
    }
    const auto size = c.int_values(1);
    if (size.size() != 2 || size[0] < 1 || size[1] < 1 || size[0] > (1 << 16) ||
        size[1] > (1 << 16))
      c.bad("the size must be two values in [1, 65536]");
    if (align_ && half_) c.bad("align_corners and half_pixel_centers together");
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], ch_ = x.shape[3];
    if (n_ < 1 || h_ < 1 || w_ < 1 || ch_ < 1) c.bad("the input is empty");
    oh_ = size[0], ow_ = size[1];
    c.shape_is(y, {n_, oh_, ow_, ch_});
    esize_ = dtype_size(x.type);
    rows_ = axis(h_, oh_);
    cols_ = axis(w_, ow_);
    kind = bilinear ? "RESIZE_BILINEAR" : "RESIZE_NEAREST_NEIGHBOR";
    label = kind + " " + std::to_string(h_) + "x" + std::to_string(w_) + "->" +
            std::to_string(oh_) + "x" + std::to_string(ow_) + " " + std::to_string(ch_);
  }
  void run(const RunCtx& r) const override {
    const uint8_t* x = reinterpret_cast<const uint8_t*>(r.ptr[in_]);
    uint8_t* y = reinterpret_cast<uint8_t*>(r.ptr[out_]);
    const int64_t px = ch_ * esize_;  // bytes per pixel
    for (int64_t b = 0; b < n_; ++b) {
      const uint8_t* xb = x + b * h_ * w_ * px;
      uint8_t* yb = y + b * oh_ * ow_ * px;
      for (int64_t oy = 0; oy < oh_; ++oy) {
        const Tap& ty = rows_[size_t(oy)];
        for (int64_t ox = 0; ox < ow_; ++ox) {
          const Tap& tx = cols_[size_t(ox)];
          uint8_t* out = yb + (oy * ow_ + ox) * px;
          if (!bilinear_) {
            std::memcpy(out, xb + (ty.lo * w_ + tx.lo) * px, size_t(px));
            continue;
          }
          const float* p00 = reinterpret_cast<const float*>(xb + (ty.lo * w_ + tx.lo) * px);
          const float* p10 = reinterpret_cast<const float*>(xb + (ty.hi * w_ + tx.lo) * px);
          const float* p01 = reinterpret_cast<const float*>(xb + (ty.lo * w_ + tx.hi) * px);
          const float* p11 = reinterpret_cast<const float*>(xb + (ty.hi * w_ + tx.hi) * px);
          float* o = reinterpret_cast<float*>(out);
          const float dy = ty.frac, dx = tx.frac;
          for (int64_t k = 0; k < ch_; ++k)  // TFLite's order of the four terms
            o[k] = p00[k] * (1 - dy) * (1 - dx) + p10[k] * dy * (1 - dx) + p01[k] * (1 - dy) * dx +
                   p11[k] * dy * dx;
        }
      }
    }
  }
  int in_ = 0, out_ = 0;

 private:
  struct Tap {
    int64_t lo = 0, hi = 0;  // nearest: lo is the pick
    float frac = 0.0f;       // bilinear: position - lo
  };
  std::vector<Tap> axis(int64_t in, int64_t out) const {
    float scale = float(in) / float(out);
    if (align_ && out > 1) scale = float(in - 1) / float(out - 1);
    std::vector<Tap> taps(static_cast<size_t>(out));
    for (int64_t o = 0; o < out; ++o) {
      Tap& t = taps[size_t(o)];
      if (!bilinear_) {
        const float v = (float(o) + (half_ ? 0.5f : 0.0f)) * scale;
        int64_t i = align_ ? int64_t(std::round(v)) : int64_t(std::floor(v));
        i = std::min<int64_t>(i, in - 1);
        if (half_) i = std::max<int64_t>(i, 0);
        t.lo = t.hi = i;
        continue;
      }
      const float v = half_ ? (float(o) + 0.5f) * scale - 0.5f : float(o) * scale;
      t.lo = std::max<int64_t>(int64_t(std::floor(v)), 0);
      t.hi = std::min<int64_t>(int64_t(std::ceil(v)), in - 1);
      t.frac = v - float(t.lo);
    }
    return taps;
  }
  bool bilinear_, align_, half_;
  int64_t n_ = 1, h_ = 1, w_ = 1, ch_ = 1, oh_ = 1, ow_ = 1, esize_ = 4;
  std::vector<Tap> rows_, cols_;
};

// CUMSUM along a constant axis (float32, int32, int64), TFLite's options: exclusive (each sum
// leaves out its own element) and reverse (sums run from the end). RoBERTa builds its position
// ids with one. Integer sums wrap (two's complement) instead of overflowing as signed values.
class Cumsum : public Op {
 public:
  explicit Cumsum(const OpContext& c) : exclusive_(c.d.exclusive), reverse_(c.d.reverse) {
    const Tensor &x = typed(c, c.in(0)), &y = c.out();
    if (x.type == DType::boolean) c.bad("CUMSUM takes float32, int32 or int64");
    if (y.type != x.type) c.bad("input and output types differ");
    c.shape_is(y, x.shape);
    const auto axis = c.int_values(1);
    const int r = int(x.shape.size());
    if (axis.size() != 1 || axis[0] < -r || axis[0] >= r)
      c.bad("the axis must be one value in [-rank, rank)");
    const int a = int(axis[0] < 0 ? axis[0] + r : axis[0]);
    for (int i = 0; i < a; ++i) outer_ *= x.shape[size_t(i)];
    dim_ = x.shape[size_t(a)];
    for (int i = a + 1; i < r; ++i) inner_ *= x.shape[size_t(i)];
    type_ = x.type;
    kind = "CUMSUM";
    label = kind + " " + dims(x.shape) + " axis " + std::to_string(a);
  }
  void run(const RunCtx& r) const override {
    with_type(type_, [&](auto tag) {
      using T = decltype(tag);
      const T* x = at<T>(r, in_);
      T* y = out_at<T>(r, out_);
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) {
          T acc = T(0);
          for (int64_t s = 0; s < dim_; ++s) {
            const int64_t j = reverse_ ? dim_ - 1 - s : s;
            const int64_t k = (o * dim_ + j) * inner_ + i;
            const T v = x[k];
            if (exclusive_) y[k] = acc;
            acc = add(acc, v);
            if (!exclusive_) y[k] = acc;
          }
        }
    });
  }
  int in_ = 0, out_ = 0;

 private:
  template <class T>
  static T add(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return T(U(a) + U(b));
    } else {
      return a + b;
    }
  }
  bool exclusive_, reverse_;
  DType type_ = DType::f32;
  int64_t outer_ = 1, dim_ = 1, inner_ = 1;
};

// SELECT_V2(NOT_EQUAL(x, x), c, x) fused by the planner (executor.cpp fuse_nan_fills): every NaN
// of x becomes the constant c. The same values as the two operators, in one pass without the mask.
class NanFill : public Op {
 public:
  explicit NanFill(const OpContext& c) {
    const Tensor &x = c.in(0), &v = c.in(1), &y = c.out();
    if (x.type != DType::f32 || !v.is_const() || v.elems != 1 || y.type != DType::f32)
      c.bad("a fused NaN fill takes float32 and a constant");
    c.shape_is(y, x.shape);
    value_ = v.as<float>()[0];
    elems_ = x.elems;
    kind = "SELECT_V2";
    label = kind + " nan->const " + dims(x.shape);
  }
  void run(const RunCtx& r) const override {
    const float* __restrict__ x = at<float>(r, in_);
    float* __restrict__ y = out_at<float>(r, out_);
    const float v = value_;
    for (int64_t i = 0; i < elems_; ++i) y[i] = x[i] != x[i] ? v : x[i];
  }
  int in_ = 0, out_ = 0;

 private:
  float value_ = 0.0f;
  int64_t elems_ = 0;
};

// BROADCAST_TO: the output shape is the file's (checked against the shape input when constant).
class BroadcastTo : public Op {
 public:
  explicit BroadcastTo(const OpContext& c) {
    const Tensor &x = moved(c, c.in(0), c.out()), &y = c.out();
    if (y.type != x.type) c.bad("input and output types differ");
    if (c.in(1).is_const() && c.int_values(1) != y.shape)
      c.bad("the output shape is not the shape input");
    g_.init(c, {x.shape}, y.shape);
    size_ = dtype_size(x.type);
    kind = "BROADCAST_TO";
    label = kind + " " + dims(x.shape) + "->" + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    const uint8_t* x = at<uint8_t>(r, in_);
    uint8_t* y = out_at<uint8_t>(r, out_);
    const int64_t es = size_;
    g_.rows([&](const int64_t* off, int64_t n, const int64_t* is) {
      if (is[0])
        std::memcpy(y, x + off[0] * es, size_t(n * es));
      else
        for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * es, x + off[0] * es, size_t(es));
      y += n * es;
    });
  }
  int in_ = 0, out_ = 0;

 private:
  Broadcast g_;
  int64_t size_ = 4;
};

// MIRROR_PAD: each padded position takes the input element mirrored at the edge, REFLECT leaving
// the edge out (pads up to size - 1) and SYMMETRIC repeating it (pads up to size), the limits
// TFLite sets. Any type, as bytes; an int8 output keeps the input's scale.
class MirrorPad : public Op {
 public:
  MirrorPad(const OpContext& c, bool symmetric) {
    const Tensor &x = moved(c, c.in(0), c.out()), &y = c.out();
    if (y.type != x.type) c.bad("input and output types differ");
    std::vector<int64_t> before;
    const std::vector<int64_t> ys = pad_geometry(c, x, &before);
    c.shape_is(y, ys);
    const int64_t extra = symmetric ? 0 : 1;
    const size_t r = x.shape.size();
    src_.resize(r);
    for (size_t d = 0; d < r; ++d) {
      const int64_t n = x.shape[d], b = before[d], a = ys[d] - n - b;
      if (b > n - extra || a > n - extra)
        c.bad("padding " + std::to_string(std::max(b, a)) + " on dimension " + std::to_string(d) +
              " is more than " + (symmetric ? "SYMMETRIC" : "REFLECT") + " allows for its size " +
              std::to_string(n));
      // the input index each output index reads
      for (int64_t i = 0; i < ys[d]; ++i) {
        int64_t j = i - b;
        if (j < 0) j = -j - 1 + extra;
        if (j >= n) j = 2 * n - 1 - j - extra;
        src_[d].push_back(j);
      }
    }
    xs_ = x.shape;
    ys_ = ys;
    size_ = dtype_size(x.type);
    kind = "MIRROR_PAD";
    label = kind + " " + dims(x.shape) + "->" + dims(ys);
  }
  void run(const RunCtx& r) const override {
    const uint8_t* x = at<uint8_t>(r, in_);
    uint8_t* y = out_at<uint8_t>(r, out_);
    const int rank = int(ys_.size());
    if (rank == 0) return std::memcpy(y, x, size_t(size_)), void();
    std::vector<int64_t> xstride(size_t(rank), 1), idx(size_t(rank), 0);
    for (int d = rank - 2; d >= 0; --d)
      xstride[size_t(d)] = xstride[size_t(d) + 1] * xs_[size_t(d) + 1];
    const int64_t inner = ys_[size_t(rank - 1)], es = size_;
    const std::vector<int64_t>& last = src_[size_t(rank - 1)];
    int64_t rows = 1;
    for (int d = 0; d < rank - 1; ++d) rows *= ys_[size_t(d)];
    for (int64_t row = 0; row < rows; ++row) {
      int64_t base = 0;
      for (int d = 0; d < rank - 1; ++d)
        base += src_[size_t(d)][size_t(idx[size_t(d)])] * xstride[size_t(d)];
      for (int64_t i = 0; i < inner; ++i, y += es)
        std::memcpy(y, x + (base + last[size_t(i)]) * es, size_t(es));
      for (int d = rank - 2; d >= 0; --d) {
        if (++idx[size_t(d)] < ys_[size_t(d)]) break;
        idx[size_t(d)] = 0;
      }
    }
  }
  int in_ = 0, out_ = 0;

 private:
  std::vector<std::vector<int64_t>> src_;
  std::vector<int64_t> xs_, ys_;
  int64_t size_ = 4;
};

// CAST between float32, int32, int64 and bool, as TFLite: float to int truncates, anything to
// bool is "!= 0".
class Cast : public Op {
 public:
  explicit Cast(const OpContext& c) {
    const Tensor &x = typed(c, c.in(0)), &y = typed(c, c.out());
    c.shape_is(y, x.shape);
    from_ = x.type, to_ = y.type, elems_ = x.elems;
    kind = "CAST";
    label = kind + " " + dims(x.shape) + " " + dtype_name(from_) + "->" + dtype_name(to_);
  }
  void run(const RunCtx& r) const override {
    with_type(from_, [&](auto ftag) {
      using F = decltype(ftag);
      const F* x = at<F>(r, in_);
      with_type(to_, [&](auto ttag) {
        using T = decltype(ttag);
        T* y = out_at<T>(r, out_);
        for (int64_t i = 0; i < elems_; ++i)
          y[i] = to_ == DType::boolean ? T(x[i] != F(0)) : convert<T>(x[i]);
      });
    });
  }
  int in_ = 0, out_ = 0;

 private:
  // float to integer: truncation; out-of-range values saturate and NaN gives the largest
  // value, as LiteRT 2.3's kernel does (a plain cast would be undefined behaviour)
  template <class T, class F>
  static T convert(F v) {
    if constexpr (std::is_floating_point<F>::value && !std::is_floating_point<T>::value) {
      if (!(v == v)) return std::numeric_limits<T>::max();
      if (v <= F(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
      if (v >= F(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    }
    return T(v);
  }
  DType from_ = DType::f32, to_ = DType::f32;
  int64_t elems_ = 0;
};

// GATHER (batch_dims 0): y = params indexed along `axis` by every index. Out-of-range indices
// (token ids past the vocabulary in a caller's input) stop the run with a message, as TFLite's
// kernel does; nothing is read outside params.
class Gather : public Op {
 public:
  explicit Gather(const OpContext& c) {
    const Tensor &p = c.in(0), &ix = c.in(1), &y = c.out();
    if (p.type == DType::i8) {
      // an int8 table (embeddings) gives int8 rows: TFLite's GATHER copies bytes, so the output
      // must carry the table's quantization, which a DEQUANTIZE after it then reads
      if (!p.quantized() || p.scale.size() != 1 || y.scale != p.scale ||
          y.zero_point != p.zero_point)
        c.bad("an int8 table needs one scale and zero point, and the output the same ones");
    } else {
      typed(c, p);
    }
    if (ix.type != DType::i32 && ix.type != DType::i64) c.bad("indices must be int32 or int64");
    if (y.type != p.type) c.bad("params and output types differ");
    if (c.d.batch_dims != 0) c.unsupported("batch_dims " + std::to_string(c.d.batch_dims));
    const int r = int(p.shape.size());
    int axis = c.d.axis < 0 ? c.d.axis + r : c.d.axis;
    if (r < 1 || axis < 0 || axis >= r)
      c.bad("axis " + std::to_string(c.d.axis) + " is out of range");
    std::vector<int64_t> want(p.shape.begin(), p.shape.begin() + axis);
    want.insert(want.end(), ix.shape.begin(), ix.shape.end());
    want.insert(want.end(), p.shape.begin() + axis + 1, p.shape.end());
    c.shape_is(y, want);
    outer_ = 1, inner_ = 1;
    for (int i = 0; i < axis; ++i) outer_ *= p.shape[size_t(i)];
    for (int i = axis + 1; i < r; ++i) inner_ *= p.shape[size_t(i)];
    dim_ = p.shape[size_t(axis)];
    count_ = ix.elems;
    wide_ = ix.type == DType::i64;
    es_ = dtype_size(p.type);
    where_ = c.where;
    kind = "GATHER";
    label = kind + " " + dims(p.shape) + " by " + dims(ix.shape);
  }
  void run(const RunCtx& r) const override {
    const uint8_t* p = at<uint8_t>(r, ip_);
    uint8_t* y = out_at<uint8_t>(r, out_);
    const int64_t row = inner_ * es_;
    for (int64_t j = 0; j < count_; ++j) {
      const int64_t v = wide_ ? at<int64_t>(r, ix_)[j] : at<int32_t>(r, ix_)[j];
      if (v < 0 || v >= dim_)
        throw InputError(where_ + ": index " + std::to_string(v) + " is outside [0, " +
                         std::to_string(dim_) + ")");
    }
    for (int64_t o = 0; o < outer_; ++o)
      for (int64_t j = 0; j < count_; ++j) {
        const int64_t v = wide_ ? at<int64_t>(r, ix_)[j] : at<int32_t>(r, ix_)[j];
        std::memcpy(y + (o * count_ + j) * row, p + (o * dim_ + v) * row, size_t(row));
      }
  }
  int ip_ = 0, ix_ = 0, out_ = 0;

 private:
  int64_t outer_ = 1, inner_ = 1, dim_ = 1, count_ = 0, es_ = 4;
  bool wide_ = false;
  std::string where_;
};

// One output of SPLIT_V (the loader makes one part per output): the slice [offset, offset +
// size) of the axis, where size_splits holds one size per output and at most one -1 (the rest).
class SplitPart : public Op {
 public:
  explicit SplitPart(const OpContext& c) {
    const Tensor &x = moved(c, c.in(0), c.out()), &y = c.out();
    if (y.type != x.type) c.bad("input and output types differ");
    const auto sizes = c.int_values(1), axes = c.int_values(2);
    const int r = int(x.shape.size());
    if (axes.size() != 1 || axes[0] < -r || axes[0] >= r)
      c.bad("the axis must be one value in range");
    const int axis = int(axes[0] < 0 ? axes[0] + r : axes[0]);
    if (int64_t(sizes.size()) != c.d.split_parts)
      c.bad("size_splits has " + std::to_string(sizes.size()) + " entries for " +
            std::to_string(c.d.split_parts) + " outputs");
    const int64_t dim = x.shape[size_t(axis)];
    int64_t known = 0, rest = -1;
    for (size_t j = 0; j < sizes.size(); ++j) {
      if (sizes[j] == -1 && rest < 0)
        rest = int64_t(j);
      else if (sizes[j] < 0)
        c.bad("size_splits holds a negative size");
      else
        known += sizes[j];
    }
    if (known > dim || (rest < 0 && known != dim)) c.bad("size_splits does not add up to the axis");
    offset_ = 0;
    for (int j = 0; j < c.d.split_part; ++j)
      offset_ += sizes[size_t(j)] < 0 ? dim - known : sizes[size_t(j)];
    size_ = sizes[size_t(c.d.split_part)] < 0 ? dim - known : sizes[size_t(c.d.split_part)];
    std::vector<int64_t> want = x.shape;
    want[size_t(axis)] = size_;
    c.shape_is(y, want);
    outer_ = 1, inner_ = int64_t(dtype_size(x.type));
    for (int i = 0; i < axis; ++i) outer_ *= x.shape[size_t(i)];
    for (int i = axis + 1; i < r; ++i) inner_ *= x.shape[size_t(i)];
    dim_ = dim;
    kind = "SPLIT_V";
    label = kind + " " + dims(x.shape) + " [" + std::to_string(offset_) + ", " +
            std::to_string(offset_ + size_) + ")";
  }
  void run(const RunCtx& r) const override {
    const uint8_t* x = at<uint8_t>(r, in_);
    uint8_t* y = out_at<uint8_t>(r, out_);
    for (int64_t o = 0; o < outer_; ++o)
      std::memcpy(y + o * size_ * inner_, x + (o * dim_ + offset_) * inner_,
                  size_t(size_ * inner_));
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t outer_ = 1, inner_ = 4, dim_ = 1, offset_ = 0, size_ = 0;  // inner_ in bytes
};

template <class T>
std::unique_ptr<Op> two(std::unique_ptr<T> op, const OpDesc& d) {
  op->ia_ = d.inputs[0];
  op->ib_ = d.inputs[1];
  op->out_ = d.outputs[0];
  return op;
}

}  // namespace

std::unique_ptr<Op> make_tensor_op(const Model& model, const OpDesc& d, const OpOptions& o) {
  OpContext c{model, d,
              "operator " + std::to_string(d.index) + " (" + op_name(int32_t(d.code)) + ")"};
  switch (d.code) {
    case OpCode::batch_matmul:
      return two(std::make_unique<BatchMatMul>(c, o), d);
    case OpCode::equal:
      return two(std::make_unique<Compare>(c, Cmp::eq, "EQUAL"), d);
    case OpCode::not_equal:
      return two(std::make_unique<Compare>(c, Cmp::ne, "NOT_EQUAL"), d);
    case OpCode::less:
      return two(std::make_unique<Compare>(c, Cmp::lt, "LESS"), d);
    case OpCode::less_equal:
      return two(std::make_unique<Compare>(c, Cmp::le, "LESS_EQUAL"), d);
    case OpCode::greater:
      return two(std::make_unique<Compare>(c, Cmp::gt, "GREATER"), d);
    case OpCode::greater_equal:
      return two(std::make_unique<Compare>(c, Cmp::ge, "GREATER_EQUAL"), d);
    case OpCode::logical_and:
      return two(std::make_unique<Compare>(c, Cmp::land, "LOGICAL_AND"), d);
    case OpCode::logical_or:
      return two(std::make_unique<Compare>(c, Cmp::lor, "LOGICAL_OR"), d);
    case OpCode::logical_not:
      return wire(std::make_unique<LogicalNot>(c), d);
    case OpCode::select_v2: {
      if (d.nan_fill) return wire(std::make_unique<NanFill>(c), d);
      auto op = std::make_unique<SelectV2>(c);
      op->ik_ = d.inputs[0];
      op->ia_ = d.inputs[1];
      op->ib_ = d.inputs[2];
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::broadcast_to:
      return wire(std::make_unique<BroadcastTo>(c), d);
    case OpCode::mirror_pad:
      return wire(std::make_unique<MirrorPad>(c, d.symmetric), d);
    case OpCode::split_v:
      return wire(std::make_unique<SplitPart>(c), d);
    case OpCode::cast:
      return wire(std::make_unique<Cast>(c), d);
    case OpCode::cumsum:
      return wire(std::make_unique<Cumsum>(c), d);
    case OpCode::resize_nearest_neighbor:
      return wire(std::make_unique<Resize>(c, false), d);
    case OpCode::resize_bilinear:
      return wire(std::make_unique<Resize>(c, true), d);
    case OpCode::arg_max:
      return wire(std::make_unique<ArgMax>(c), d);
    case OpCode::add:
    case OpCode::sub:
    case OpCode::mul:
      return two(std::make_unique<IntBinary>(c, d.code), d);
    case OpCode::gather: {
      auto op = std::make_unique<Gather>(c);
      op->ip_ = d.inputs[0];
      op->ix_ = d.inputs[1];
      op->out_ = d.outputs[0];
      return op;
    }
    default:
      throw UnsupportedError(c.where + ": not supported as a runtime operator");
  }
}

}  // namespace rt
}  // namespace ep
