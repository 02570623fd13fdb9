// Weight packers shared by every path: dense panels and the XNNPACK-style sparse stream.
//
// Consumes: dense row-major matrices (zeros = pruned weights). Produces: the packed layouts
// documented in kernels.h.
#include <algorithm>
#include <stdexcept>

#include "kernels/kernels.h"

namespace ep {

int64_t packed_dense_size(int64_t depth, int64_t cols, int tile) {
  const int64_t panels = (cols + tile - 1) / tile;
  return panels * tile * depth;
}

void pack_dense_f32(const float* b, int64_t b_sk, int64_t b_sm, int64_t depth, int64_t cols, int tile,
                    float* out) {
  for (int64_t j0 = 0; j0 < cols; j0 += tile) {
    const int64_t w = std::min<int64_t>(tile, cols - j0);
    for (int64_t k = 0; k < depth; ++k) {
      float* o = out + k * tile;
      const float* src = b + k * b_sk + j0 * b_sm;
      int64_t j = 0;
      if (b_sm == 1)
        for (; j < w; ++j) o[j] = src[j];
      else
        for (; j < w; ++j) o[j] = src[j * b_sm];
      for (; j < tile; ++j) o[j] = 0.0f;
    }
    out += tile * depth;
  }
}

PackedSparseF32 pack_sparse_f32(const float* w, int64_t m, int64_t k, const float* bias, int block) {
  if (block != 1 && block != 4) throw std::invalid_argument("sparse block must be 1 or 4 output channels");
  PackedSparseF32 p;
  p.m = m;
  p.k = k;
  p.block = block;
  const int64_t blocks = (m + block - 1) / block;
  p.nnz.reserve(blocks);
  int64_t prev = 0;
  for (int64_t bi = 0; bi < blocks; ++bi) {
    const int64_t r0 = bi * block;
    for (int r = 0; r < block; ++r)
      p.values.push_back(bias && r0 + r < m ? bias[r0 + r] : 0.0f);
    int32_t count = 0;
    for (int64_t c = 0; c < k; ++c) {
      bool any = false;
      for (int r = 0; r < block && r0 + r < m; ++r) any |= w[(r0 + r) * k + c] != 0.0f;
      if (!any) continue;
      for (int r = 0; r < block; ++r) p.values.push_back(r0 + r < m ? w[(r0 + r) * k + c] : 0.0f);
      p.deltas.push_back(int32_t(c - prev));
      prev = c;
      ++count;
    }
    p.nnz.push_back(count);
  }
  return p;
}

}  // namespace ep
