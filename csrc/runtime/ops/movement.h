// Shape checks and byte movement shared by the fp32 and int8 tiers for the operators that only
// move elements (PAD, TRANSPOSE, CONCATENATION, STRIDED_SLICE): the geometry is checked against the
// file once, and the copy loops are templates over the element type, so both tiers run the same
// code.
//
// Consumes: an OpContext and its tensors. Produces: checked shapes / strides, or copied elements.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/ops/op_context.h"

namespace ep {
namespace rt {

// PAD / PADV2: the paddings input (constant [rank, 2], non-negative) against x; returns the padded
// shape and the leading padding of every dimension in *before.
inline std::vector<int64_t> pad_geometry(const OpContext& c, const Tensor& x,
                                         std::vector<int64_t>* before) {
  const auto p = c.int_values(1);
  const size_t r = x.shape.size();
  if (p.size() != 2 * r) c.bad("paddings must be [rank, 2]");
  std::vector<int64_t> out(r);
  before->clear();
  for (size_t i = 0; i < r; ++i) {
    if (p[2 * i] < 0 || p[2 * i + 1] < 0) c.bad("negative padding");
    before->push_back(p[2 * i]);
    out[i] = x.shape[i] + p[2 * i] + p[2 * i + 1];
  }
  return out;
}

// Copies x (shape xs) into the already filled y (shape ys) at offset `before` per dimension. The
// dimensions from the last padded one on are one contiguous block of the input and of the output
// (NHWC padded in H and W: rows of W * C elements), so each block is one memcpy.
template <class T>
void pad_copy(const T* x, T* y, const std::vector<int64_t>& xs, const std::vector<int64_t>& ys,
              const std::vector<int64_t>& before) {
  const int r = int(xs.size());
  if (r == 0) {
    y[0] = x[0];
    return;
  }
  std::vector<int64_t> ystride(static_cast<size_t>(r));
  int64_t s = 1;
  for (int i = r - 1; i >= 0; --i) ystride[size_t(i)] = s, s *= ys[size_t(i)];
  int last = 0;
  for (int i = 0; i < r; ++i)
    if (xs[size_t(i)] != ys[size_t(i)]) last = i;
  int64_t inner = 1, rows = 1;
  for (int i = last; i < r; ++i) inner *= xs[size_t(i)];
  for (int i = 0; i < last; ++i) rows *= xs[size_t(i)];
  std::vector<int64_t> idx(size_t(std::max(last, 1)), 0);
  for (int64_t row = 0; row < rows && inner > 0; ++row) {
    int64_t o = before[size_t(last)] * ystride[size_t(last)];
    for (int i = 0; i < last; ++i) o += (idx[size_t(i)] + before[size_t(i)]) * ystride[size_t(i)];
    std::memcpy(y + o, x + row * inner, size_t(inner) * sizeof(T));
    for (int i = last - 1; i >= 0; --i) {
      if (++idx[size_t(i)] < xs[size_t(i)]) break;
      idx[size_t(i)] = 0;
    }
  }
}

// TRANSPOSE: the perm input (a permutation of x's dimensions); returns the output shape and the
// input stride of every output dimension in *stride.
inline std::vector<int64_t> transpose_geometry(const OpContext& c, const Tensor& x,
                                               std::vector<int64_t>* stride) {
  const auto perm = c.int_values(1);
  const size_t r = x.shape.size();
  if (perm.size() != r) c.bad("perm has the wrong length");
  std::vector<bool> seen(r, false);
  std::vector<int64_t> out(r), xs(r);
  int64_t s = 1;
  for (size_t i = r; i-- > 0;) xs[i] = s, s *= x.shape[i];
  stride->clear();
  for (size_t i = 0; i < r; ++i) {
    const int64_t p = perm[i];
    if (p < 0 || p >= int64_t(r) || seen[size_t(p)]) c.bad("perm is not a permutation");
    seen[size_t(p)] = true;
    out[i] = x.shape[size_t(p)];
    stride->push_back(xs[size_t(p)]);
  }
  return out;
}

// Steps the multi-index `idx` over dimensions [0, last] as an odometer (the last fastest) and
// keeps `o`, the input offset, in step: dimension i moves the offset by step[i].
inline void advance(std::vector<int64_t>& idx, int64_t& o, const std::vector<int64_t>& count,
                    const std::vector<int64_t>& step, int last) {
  for (int i = last; i >= 0; --i) {
    o += step[size_t(i)];
    if (++idx[size_t(i)] < count[size_t(i)]) return;
    o -= step[size_t(i)] * count[size_t(i)];
    idx[size_t(i)] = 0;
  }
}

// Writes `elems` outputs in rows of `inner`, row r read from x + o_r with stride `is` (a block
// copy at stride 1), o_0 = `o` and the next row's offset stepped by advance() over the
// dimensions [0, last] of `count` / `step`.
template <class T>
void copy_rows(const T* x, T* y, int64_t elems, int64_t inner, int64_t is, int64_t o,
               const std::vector<int64_t>& count, const std::vector<int64_t>& step, int last) {
  std::vector<int64_t> idx(count.size(), 0);
  for (int64_t e = 0; e < elems; e += inner) {
    if (is == 1)
      std::copy(x + o, x + o + inner, y + e);
    else
      for (int64_t j = 0; j < inner; ++j) y[e + j] = x[o + j * is];
    advance(idx, o, count, step, last);
  }
}

// Writes the `elems` elements of the output (shape `shape`) in order, reading the input through
// `stride` (input stride per output dimension), with a running input offset.
// The last output dimension is one tight loop (a block copy when the permutation keeps it last,
// as attention's head split [B, S, H, D] -> [B, H, S, D] does).
template <class T>
void transpose_copy(const T* x, T* y, const std::vector<int64_t>& shape,
                    const std::vector<int64_t>& stride, int64_t elems) {
  const int r = int(shape.size());
  if (r == 0) {
    if (elems > 0) y[0] = x[0];
    return;
  }
  const int64_t inner = shape[size_t(r - 1)], is = stride[size_t(r - 1)];
  if (inner == 0) return;
  std::vector<int64_t> idx(size_t(r), 0);
  int64_t o = 0;
  if (r >= 2 && is != 1 && stride[size_t(r - 2)] == 1 && shape[size_t(r - 2)] >= 2 * inner) {
    // The last two output dimensions are a transposed block of input rows (a channel shuffle's
    // [.., 58, 2] from [.., 2, 58]): the tight loop walks an input row and writes every
    // inner-th output, instead of a loop of `inner` (2) strided reads per output row.
    const int64_t a = shape[size_t(r - 2)], block = a * inner;
    for (int64_t e = 0; e < elems; e += block) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* __restrict__ xs = x + o + i * is;
        T* __restrict__ yd = y + e + i;
        for (int64_t j = 0; j < a; ++j) yd[j * inner] = xs[j];
      }
      advance(idx, o, shape, stride, r - 3);
    }
    return;
  }
  copy_rows(x, y, elems, inner, is, 0, shape, stride, r - 2);
}

// CONCATENATION along the op's axis: every input has y's rank and y's sizes outside the axis, and
// the axis sizes add up to y's. chunk[i] is input i's elements per outer index; out_row is y's.
struct ConcatGeometry {
  int64_t outer = 1, out_row = 0;
  std::vector<int64_t> chunk;
};

inline ConcatGeometry concat_geometry(const OpContext& c, const Tensor& y) {
  const int r = int(y.shape.size());
  int axis = c.d.axis;
  if (axis < -r || axis >= r) c.bad("axis " + std::to_string(axis) + " is out of range");
  if (axis < 0) axis += r;
  if (c.d.act != FusedAct::none) c.unsupported("fused activation on CONCATENATION");
  ConcatGeometry g;
  for (int i = 0; i < axis; ++i) g.outer *= y.shape[size_t(i)];
  int64_t inner = 1, total = 0;
  for (int i = axis + 1; i < r; ++i) inner *= y.shape[size_t(i)];
  for (size_t i = 0; i < c.d.inputs.size(); ++i) {
    const Tensor& x = c.in(i);
    if (int(x.shape.size()) != r) c.bad("inputs differ in rank");
    for (int k = 0; k < r; ++k)
      if (k != axis && x.shape[size_t(k)] != y.shape[size_t(k)])
        c.bad("inputs differ outside the axis");
    g.chunk.push_back(x.shape[size_t(axis)] * inner);
    total += x.shape[size_t(axis)];
  }
  if (total != y.shape[size_t(axis)]) c.bad("the output's axis is not the sum of the inputs'");
  g.out_row = total * inner;
  return g;
}

// STRIDED_SLICE: begin / end / strides constant (inputs 1-3), per TFLite: a begin_mask / end_mask
// bit takes the whole dimension from that side, negative indices count from the end and are
// clamped, offset makes end relative to begin, a shrink_axis bit keeps the one element at begin
// and drops the dimension. init returns the output shape; copy writes the output in order.
struct SliceGeometry {
  std::vector<int64_t> first, step, count, stride;

  std::vector<int64_t> init(const OpContext& c, const Tensor& x) {
    const auto b = c.int_values(1), e = c.int_values(2), s = c.int_values(3);
    const int r = int(x.shape.size());
    if (int(b.size()) != r || int(e.size()) != r || int(s.size()) != r)
      c.bad("begin, end and strides must have one value per input dimension");
    if (c.d.ellipsis_mask || c.d.new_axis_mask)
      c.unsupported("ellipsis and new-axis masks are not supported");
    std::vector<int64_t> out;
    int64_t st = 1;
    stride.assign(size_t(r), 0);
    for (int i = r - 1; i >= 0; --i) stride[size_t(i)] = st, st *= x.shape[size_t(i)];
    for (int i = 0; i < r; ++i) {
      const int64_t dim = x.shape[size_t(i)], stp = s[size_t(i)];
      if (stp == 0) c.bad("stride 0 in dimension " + std::to_string(i));
      const bool shrink = (c.d.shrink_axis_mask >> i) & 1;
      auto index = [&](int64_t v, int64_t lo, int64_t hi) {
        v = v < 0 ? v + dim : v;
        return std::min(std::max(v, lo), hi);
      };
      int64_t f, stop;
      if (shrink) {
        f = b[size_t(i)] < 0 ? b[size_t(i)] + dim : b[size_t(i)];
        if (f < 0 || f >= dim) c.bad("shrink index out of range in dimension " + std::to_string(i));
        stop = f + 1;
      } else {
        f = ((c.d.begin_mask >> i) & 1)
                ? (stp > 0 ? 0 : dim - 1)
                : index(b[size_t(i)], stp > 0 ? 0 : -1, stp > 0 ? dim : dim - 1);
        const int64_t end = c.d.slice_offset ? b[size_t(i)] + e[size_t(i)] : e[size_t(i)];
        stop = ((c.d.end_mask >> i) & 1) ? (stp > 0 ? dim : -1)
                                         : index(end, stp > 0 ? 0 : -1, stp > 0 ? dim : dim - 1);
      }
      const int64_t n = shrink    ? 1
                        : stp > 0 ? std::max<int64_t>(0, (stop - f + stp - 1) / stp)
                                  : std::max<int64_t>(0, (f - stop - stp - 1) / -stp);
      first.push_back(f);
      step.push_back(shrink ? 1 : stp);
      count.push_back(n);
      if (!shrink) out.push_back(n);
    }
    return out;
  }

  // Row by row: the last dimension is one tight loop (a block copy at step 1, the channel
  // halves of a ShuffleNet split), the offset of the next row stepped, not recomputed (computing
  // every element's offset from its index took 5.5 ns an element).
  template <class T>
  void copy(const T* x, T* y, int64_t elems) const {
    const int r = int(count.size());
    if (elems == 0) return;
    int64_t o = 0;
    for (int i = 0; i < r; ++i) o += first[size_t(i)] * stride[size_t(i)];
    if (r == 0) {
      y[0] = x[o];
      return;
    }
    const int64_t inner = count[size_t(r - 1)], is = step[size_t(r - 1)] * stride[size_t(r - 1)];
    std::vector<int64_t> moves(static_cast<size_t>(r));  // input offset per index step
    for (int i = 0; i < r; ++i) moves[size_t(i)] = step[size_t(i)] * stride[size_t(i)];
    copy_rows(x, y, elems, inner, is, o, count, moves, r - 2);
  }
};

}  // namespace rt
}  // namespace ep
