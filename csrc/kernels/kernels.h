// Kernel argument structs, the packed weight formats, and the dispatch table.
//
// Consumes: raw pointers, sizes and strides (kernels know nothing of Python or torch).
// Produces: declarations of every kernel in kernels.inc, packers, and kernel_table(isa).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "dispatch/isa.h"

namespace ep {

enum class Act { none, relu, relu6 };

// The clamp bounds that implement an activation (kernels always clamp; none = +-inf).
inline void act_bounds(Act act, float* lo, float* hi) {
  *lo = act == Act::none ? -std::numeric_limits<float>::infinity() : 0.0f;
  *hi = act == Act::relu6 ? 6.0f : std::numeric_limits<float>::infinity();
}

// Dense fp32: Y[r, j] = clamp(sum_k A[r, k] * B(k, j) + bias, lo, hi) for r < rows, j < cols.
// torch.nn.Linear is A = x[N, K], B(k, j) = W[j, k], bias per column. The 1x1-conv layout
// Y[M, N] = W[M, K] X[K, N] is A = W, B(k, j) = X[k, j], bias per row.
struct DenseF32Args {
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;   // unpacked B(k, j) = b[k * b_sk + j * b_sm] (read by the reference)
  int64_t b_sk = 0, b_sm = 0;
  const float* bp = nullptr;  // B packed by pack_dense_f32 with the kernel's tile (optimised paths)
  const float* bias = nullptr;
  bool bias_per_row = false;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t rows = 0, cols = 0, depth = 0;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
};

// Panels of `tile` columns, zero padded: out[p][k][j] = B(k, p*tile + j). Size: packed_dense_size.
int64_t packed_dense_size(int64_t depth, int64_t cols, int tile);
void pack_dense_f32(const float* b, int64_t b_sk, int64_t b_sm, int64_t depth, int64_t cols, int tile,
                    float* out);

// XNNPACK-style sparse weights W[M, K] (zeros are pruned), in row blocks of `block` (1 or 4)
// output channels sharing one pattern of input channels. Per block, in stream order:
//   values: bias[block] first, then block weights per nonzero input channel;
//   nnz[b]: number of nonzero input channels of the block;
//   deltas: per nonzero, input channel minus the previous nonzero's channel across the whole
//           stream (starting from channel 0), so a kernel walks X with one pointer and no reset.
// Rows past M in the last block are zero padded and never written.
struct PackedSparseF32 {
  int64_t m = 0, k = 0;
  int block = 1;
  std::vector<float> values;
  std::vector<int32_t> nnz;
  std::vector<int32_t> deltas;
  int64_t nonzeros() const { return int64_t(deltas.size()) * block; }  // stored weights
};
// Throws std::invalid_argument when block is not 1 or 4.
PackedSparseF32 pack_sparse_f32(const float* w, int64_t m, int64_t k, const float* bias, int block);

// Sparse fp32 SpMM on the channel-major layout: Y[M, N] = clamp(W_sparse[M, K] X[K, N] + b),
// vectorised across N. Rows of X and Y are ldx / ldy floats apart.
struct SpmmF32Args {
  const float* x = nullptr;
  int64_t ldx = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t n = 0, m = 0;
  int64_t k = 0;  // input channels (rows of X): lets a kernel size its N strip to fit L1
  const float* values = nullptr;
  const int32_t* nnz = nullptr;
  const int32_t* deltas = nullptr;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
};

#define EP_KERNEL_KIND(name, Args) using name##_fn = void (*)(const Args&);
#include "kernels/kernels.inc"

// Declarations: ep::<isa>::<name>(const Args&).
#define EP_KERNEL_KIND(name, Args) struct name##_args { using type = Args; };
#include "kernels/kernels.inc"
#define EP_KERNEL(name, isa, tile) \
  namespace isa {                  \
  void name(const name##_args::type& args); \
  }
#include "kernels/kernels.inc"

template <class Fn>
struct KernelEntry {
  Fn fn = nullptr;
  int tile = 1;
  Isa isa = Isa::reference;  // the path that actually provides it (may be a parent)
};

struct KernelTable {
#define EP_KERNEL_KIND(name, Args) KernelEntry<name##_fn> name;
#include "kernels/kernels.inc"
};

// The table for one path (with inherited entries). Throws std::runtime_error when `isa` is not
// compiled. kernels() is the table of selected_isa().
const KernelTable& kernel_table(Isa isa);
const KernelTable& kernels();

// The kernel kinds and the ISAs that implement each directly (for tests and the benchmark).
struct KernelListing {
  const char* name;
  Isa isa;
  int tile;
};
const std::vector<KernelListing>& kernel_listing();

}  // namespace ep
