// Numpy broadcasting for operators of up to three operands (SELECT_V2, comparisons, BROADCAST_TO,
// the batch dimensions of BATCH_MATMUL in float32 and int8): the shapes are checked against the
// file once, at load, and become element strides (0 on a broadcast dimension) over an output padded
// to rank 6.
//
// Consumes: an OpContext and the operand shapes. Produces: a Broadcast whose rows() visits every
// innermost output row with the element offset of each operand in it; a MatmulGeometry.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime/ops/op_context.h"

namespace ep {
namespace rt {

struct Broadcast {
  static constexpr int kRank = 6;
  int operands = 0;
  int64_t shape[kRank] = {1, 1, 1, 1, 1, 1};
  int64_t stride[3][kRank] = {};
  int64_t elems = 1;

  // The broadcast of `shapes` (numpy rules); throws through c when they do not broadcast or the
  // rank is above 6.
  static std::vector<int64_t> result(const OpContext& c,
                                     const std::vector<std::vector<int64_t>>& shapes) {
    size_t r = 0;
    for (const auto& s : shapes) r = std::max(r, s.size());
    if (r > size_t(kRank)) c.unsupported("rank " + std::to_string(r) + " (at most 6)");
    std::vector<int64_t> out(r, 1);
    for (const auto& s : shapes)
      for (size_t i = 0; i < s.size(); ++i) {
        int64_t& o = out[r - s.size() + i];
        if (s[i] == o || s[i] == 1) continue;
        if (o != 1) c.bad("operand shapes do not broadcast");
        o = s[i];
      }
    return out;
  }

  // Strides of each operand shape against `out`, which every operand must broadcast to.
  void init(const OpContext& c, const std::vector<std::vector<int64_t>>& shapes,
            const std::vector<int64_t>& out) {
    if (out.size() > size_t(kRank) || shapes.size() > 3)
      c.unsupported("rank " + std::to_string(out.size()) + " (at most 6)");
    operands = int(shapes.size());
    const size_t pad = kRank - out.size();
    elems = 1;
    for (size_t i = 0; i < size_t(kRank); ++i) shape[i] = i < pad ? 1 : out[i - pad];
    for (int64_t v : out) elems *= v;
    for (int k = 0; k < operands; ++k) {
      const auto& s = shapes[size_t(k)];
      if (s.size() > out.size()) c.bad("an operand has a higher rank than the output");
      int64_t st = 1;
      for (int i = kRank - 1; i >= 0; --i) {
        const size_t j = size_t(i) + s.size();  // index into s, offset by kRank
        const bool have = j >= size_t(kRank);
        const int64_t d = have ? s[j - kRank] : 1;
        if (d != shape[i] && d != 1) c.bad("an operand does not broadcast to the output shape");
        stride[k][i] = d == 1 ? 0 : st;
        st *= d;
      }
    }
  }

  // f(off[3], inner, istride[3]) for each run of the last dimension.
  template <class F>
  void rows(F f) const {
    const int64_t inner = shape[kRank - 1];
    if (inner == 0 || elems == 0) return;
    int64_t idx[kRank] = {0};
    int64_t is[3] = {stride[0][kRank - 1], stride[1][kRank - 1], stride[2][kRank - 1]};
    for (int64_t row = 0; row < elems / inner; ++row) {
      int64_t off[3] = {0, 0, 0};
      for (int k = 0; k < operands; ++k)
        for (int i = 0; i < kRank - 1; ++i) off[k] += idx[i] * stride[k][i];
      f(off, inner, is);
      for (int i = kRank - 2; i >= 0; --i) {
        if (++idx[i] < shape[i]) break;
        idx[i] = 0;
      }
    }
  }
};

// BATCH_MATMUL's geometry, the same for float32 and int8: Y[..., m, n] = A[..., m, k] B[..., k, n]
// with A or B read transposed under adj_x / adj_y, and batch dimensions broadcast. init checks
// the file's shapes (operand ranks, inner dimensions, the output shape); (*this)(i) is the pair
// (A matrix, B matrix) that output matrix i reads, as indices among the stored matrices.
// Computed per call, not tabulated at load: a hostile file can declare millions of batch
// matrices, and the operator must reach the output-shape check without allocating for them.
struct MatmulGeometry {
  Broadcast g;
  int64_t m = 0, k = 0, n = 0;
  int64_t count = 1;  // output matrices
  bool adj_x = false, adj_y = false;

  void init(const OpContext& c, const Tensor& a, const Tensor& b, const Tensor& y) {
    if (a.shape.size() < 2 || b.shape.size() < 2) c.bad("operands must have rank 2 or more");
    adj_x = c.d.adj_x, adj_y = c.d.adj_y;
    const size_t ra = a.shape.size(), rb = b.shape.size();
    m = a.shape[ra - (adj_x ? 1 : 2)], k = a.shape[ra - (adj_x ? 2 : 1)];
    const int64_t kb = b.shape[rb - (adj_y ? 1 : 2)];
    n = b.shape[rb - (adj_y ? 2 : 1)];
    if (kb != k)
      c.bad("inner dimensions differ: " + std::to_string(k) + " and " + std::to_string(kb));
    if (m < 1 || k < 1 || n < 1) c.bad("empty matrices");
    const std::vector<int64_t> ba(a.shape.begin(), a.shape.end() - 2),
        bb(b.shape.begin(), b.shape.end() - 2);
    std::vector<int64_t> want = Broadcast::result(c, {ba, bb});
    g.init(c, {ba, bb}, want);
    count = g.elems;
    want.push_back(m);
    want.push_back(n);
    c.shape_is(y, want);
  }
  std::pair<int64_t, int64_t> operator()(int64_t i) const {
    int64_t oa = 0, ob = 0;
    for (int d = Broadcast::kRank - 1; d >= 0; --d) {
      const int64_t v = i % g.shape[d];
      i /= g.shape[d];
      oa += v * g.stride[0][d];
      ob += v * g.stride[1][d];
    }
    return {oa, ob};
  }
};

}  // namespace rt
}  // namespace ep
