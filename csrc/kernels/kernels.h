// Kernel argument structs, the packed weight formats, and the dispatch table.
//
// Consumes: raw pointers, sizes and strides (kernels know nothing of Python or torch).
// Produces: declarations of every kernel in kernels.inc, packers, and kernel_table(isa).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "dispatch/isa.h"

namespace ep {

enum class Act { none, relu, relu6 };

// The clamp bounds that implement an activation (kernels always clamp; none = +-inf).
static inline void act_bounds(Act act, float* lo, float* hi) {
  *lo = act == Act::none ? -std::numeric_limits<float>::infinity() : 0.0f;
  *hi = act == Act::relu6 ? 6.0f : std::numeric_limits<float>::infinity();
}

// dst[c * ld + r] = src[r * cols + c] for r < rows, c < cols (ld >= rows): the activation
// transposes of the layer tier (a channel-major call run in the Linear layout, and back) and of
// the runtime's layout changes (vec.h transpose). Whole register tiles go through shuffles; the
// ragged edges are copied one by one.
struct TransposeF32Args {
  const float* src = nullptr;
  int64_t rows = 0, cols = 0;
  float* dst = nullptr;
  int64_t ld = 0;
};

// Dense fp32: Y[r, j] = clamp(sum_k A[r, k] * B(k, j) + bias, lo, hi) for r < rows, j < cols.
// torch.nn.Linear is A = x[N, K], B(k, j) = W[j, k], bias per column. The 1x1-conv layout
// Y[M, N] = W[M, K] X[K, N] is A = W, B(k, j) = X[k, j], bias per row.
struct DenseF32Args {
  const float* a = nullptr;
  int64_t lda = 0;
  // A in segments when a_seg > 0 (a convolution's im2col read in place from its padded input):
  // A(r, k) = a[r * lda + (k / a_seg) * a_seg_stride + k % a_seg]; otherwise A(r, k) = a[r * lda
  // + k]. The optimised drivers cut depth blocks at segment ends.
  int64_t a_seg = 0, a_seg_stride = 0;
  const float* b = nullptr;  // unpacked B(k, j) = b[k * b_sk + j * b_sm] (read by the reference)
  int64_t b_sk = 0, b_sm = 0;
  // B packed by pack_dense_f32 with the kernel's tile (optimised paths); null: they read B in
  // place, which then must have contiguous rows (b_sm = 1)
  const float* bp = nullptr;
  const float* bias = nullptr;
  bool bias_per_row = false;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t rows = 0, cols = 0, depth = 0;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
};

// Panels of `tile` columns, zero padded: out[p][k][j] = B(k, p*tile + j). Size: packed_dense_size.
int64_t packed_dense_size(int64_t depth, int64_t cols, int tile);
void pack_dense_f32(const float* b, int64_t b_sk, int64_t b_sm, int64_t depth, int64_t cols,
                    int tile, float* out);

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
// A b1 stream's weights for one input column, as pack_sparse_s8_groups lays out 1x4 blocks: rows
// in groups of kGroupRows, input channels in windows of kGroupWindowF32 (two 512-bit registers of
// X); per group and window, slot j holds the j-th weight in that window of each of the group's
// rows (its channel within the window in a byte; weight 0 for a row with fewer). Slots in
// [group][window] order; gslots counts them. Empty for a b4 stream.
struct SparseF32Groups {
  std::vector<int32_t> gslots;
  std::vector<uint8_t> gidx;
  std::vector<float> gw, gbias;
};
constexpr int64_t kGroupWindowF32 = 32;
SparseF32Groups pack_sparse_f32_groups(const PackedSparseF32& p);
// The same for one 256-bit register of X (AVX2): rows in groups of kOctetRows, and per group one
// flat list of slots, each over a window of kOctetRows input channels that it names (a loop per
// fixed window ran its slot count, 1 to 4, as an unpredictable branch: 3-4x slower on 1280x960).
// A slot's window starts at the lowest channel any row of the group has not yet stored (at most
// k - 8, so a window never reads past X; 0 when K < 8, X then padded to 8 by the kernel), and
// every row whose next weight lies inside it fills its lane. Per slot: gbase, the window's first
// input channel; gidx, the 8 rows' channels minus gbase, a byte each (3-bit fields of one word,
// moved into lanes by a variable shift, ran 1.3-1.4x slower on Zen 2); 8 weights (0 in an empty
// lane). gslots is the slot count per group.
struct SparseF32Octets {
  std::vector<int32_t> gslots, gbase;
  std::vector<uint8_t> gidx;
  std::vector<float> gw, gbias;
};
constexpr int64_t kOctetRows = 8;
// (a b4 stream is laid out by its rows, through rows_of_blocks)
SparseF32Octets pack_sparse_f32_octets(const PackedSparseF32& p);
// A b4 stream as the b1 stream of its rows: the zeros stored inside blocks dropped, the bias and
// every other weight kept. Empty for a b1 stream or an inconsistent one.
PackedSparseF32 rows_of_blocks(const PackedSparseF32& p);
// Throws std::invalid_argument when block is not 1 or 4.
PackedSparseF32 pack_sparse_f32(const float* w, int64_t m, int64_t k, const float* bias, int block);
// The absolute input channel of every entry of a stream (the running sum of its deltas): the
// table SpmmF32Args::chans reads. One int32 per entry.
std::vector<int32_t> spmm_channels(const PackedSparseF32& p);
// Output rows [m0, m1) of a b1 stream as a stream of their own (the first delta made absolute),
// so threads can each run a part of the rows through the kernels. Empty for a b4 stream or a
// range outside [0, m).
PackedSparseF32 sparse_rows(const PackedSparseF32& p, int64_t m0, int64_t m1);

// The tile plan of a b1 (unstructured) stream: the form the SIMD b1 kernels run from (every
// whole vector of columns; spmm_plan_applies says when), made once per packed weight. Why each
// choice, and what it measured: docs/kernels.md, "The tile plan".
// - K tiles of at most one L1 of strip floats (each nonzero loads its X row from anywhere in the
//   tile's copy of X, so the copy must stay in L1); a block of output rows runs over one tile
//   before the next, the rows' partial sums going through a contiguous per-thread buffer. A K
//   that fits one tile gets a one-tile plan.
// - Strips of 4 vectors; very sparse layers take strips of 3 vectors and tiles of 4/3 as many
//   channels (plan_spmm_tiles).
// - Tile-major order, read front to back: for each block of `rows` output rows (a block's
//   stream and Y stay in L2 across its tiles), for each tile, for each row of the block,
//   counts[] gives the row's entries in the tile and offsets[] / values[] the entries.
// - 16-bit offsets: (channel - the tile's first channel) * strip, which fits since a tile is at
//   most one L1. Kernels load 4 offsets and 4 weights at a time.
// A second copy of the weights, 6 bytes a nonzero. offsets[] ends in 4 entries of padding, since
// a pass reads each group of 4 offsets one group ahead.
// The L1 size plans assume when the OS does not report one (Cortex-A57/A72, most AVX2-only x86).
constexpr int64_t kDefaultL1Bytes = 32 * 1024;
// With several blocks and at most this much X in full strips, a kernel copies all strips first
// and runs each block over all of them (block-major), reading the stream once per call.
constexpr int64_t kBlockMajorBytes = 512 * 1024;
struct SpmmTilePlan {
  // strip: floats per row of a tile's copy of X (3 or 4 vectors); tiles = 0: no plan; kt: channels
  // a tile
  int64_t m = 0, k = 0, strip = 0, tiles = 0, kt = 0, rows = 0;
  std::vector<int32_t> counts;
  std::vector<uint16_t> offsets;
  std::vector<float> values;
  std::vector<float> bias;             // per output row
  std::vector<int64_t> block_entries;  // per block of rows, its first entry; then the total
};
// For a b1 stream, a kernel with `lanes` floats per vector (its kernels.inc tile; strips of 3 or
// 4 vectors) and an L1 data cache of l1_bytes (<= 0: kDefaultL1Bytes). No plan (tiles = 0) for
// block 4, when K * strip does not fit int32, when a tile's offsets would not fit 16 bits, or
// when the stream is not a valid b1 stream with increasing channels per row (the packer never
// writes one that is not).
SpmmTilePlan plan_spmm_tiles(const PackedSparseF32& p, int lanes, int64_t l1_bytes);
// The plan of a part of a stream's rows (sparse_rows) with the strip and tiles of the whole
// stream's plan `like`: each row's sums then fall into the same tiles in the same order, so a
// part gives the bits the whole does. No plan (tiles = 0) when `like` has none or another K.
SpmmTilePlan plan_spmm_tiles_like(const PackedSparseF32& p, const SpmmTilePlan& like);
// Whether a SIMD b1 kernel with vectors of `lanes` floats runs an [K, n] input from `plan` (else
// it walks the stream): the plan fits (made for this m, k and lanes: strips of 3 or 4 vectors),
// there is a column, and the plan pays: at least 3 stream entries per input channel (its copy of
// X) and 5 per row and tile (each row's start and end in every tile). Fewer columns than a
// vector reach it only as a thread's last columns of a wider call (layers plan from a vector
// up): they run as the zero-padded vector that ends that call on one thread, so threads keep the
// bits.
// The measurements behind the thresholds: docs/kernels.md, "When the plan pays".
inline bool spmm_plan_applies(const SpmmTilePlan* plan, int64_t m, int64_t k, int64_t n,
                              int64_t entries, int64_t lanes) {
  return plan && plan->tiles >= 1 && (plan->strip == 3 * lanes || plan->strip == 4 * lanes) &&
         plan->k == k && plan->m == m && n >= 1 && entries >= 3 * k &&
         entries >= 5 * m * plan->tiles;
}

// The strip (floats) a SIMD b1 kernel with vectors of `lanes` floats runs n columns with, from a
// plan that applies: 3 vectors where the plan's tiles are sized for them, unless n then needs
// more than 4/3 as many passes over the rows as with 4 (docs/kernels.md, "Strip width per
// call"); else 4. A single vector left over may join the last strip, so it is not counted as a
// pass.
inline int64_t spmm_plan_strip(const SpmmTilePlan& plan, int64_t n, int64_t lanes) {
  const int64_t vecs = n / lanes;
  const auto passes = [vecs](int64_t nv) { return vecs / nv + (vecs % nv > 1 ? 1 : 0); };
  return (plan.strip == 3 * lanes && 3 * passes(3) <= 4 * passes(4) ? 3 : 4) * lanes;
}

// Sparse fp32 SpMM on the channel-major layout: Y[M, N] = clamp(W_sparse[M, K] X[K, N] + b),
// vectorised across N. Rows of X and Y are ldx / ldy floats apart.
struct SpmmF32Args {
  const float* x = nullptr;
  int64_t ldx = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t n = 0, m = 0;
  // input channels (rows of X): a kernel sizes its N strips by it and may copy rows [0, k) of
  // X; it must cover every channel the stream references (0 = unknown: no strip copy)
  int64_t k = 0;
  const float* values = nullptr;
  const int32_t* nnz = nullptr;
  const int32_t* deltas = nullptr;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  // optional, b1 only: plan_spmm_tiles of this stream for this kernel's lanes (else the kernel
  // walks the stream above)
  const SpmmTilePlan* tiles = nullptr;
  // optional, b1 only: per stream entry its absolute input channel (spmm_channels of this
  // stream). With it, the columns no vector pass covers are computed as one dot product per
  // output of the row's weights with X gathered at its channels, free of the delta stream's
  // pointer chain. Meant for inputs narrower than a vector (N = 1: FC layers at batch 1), whose X
  // is a few compact rows: on wide X every lane of a gather misses L1. Needs (k + 1) * ldx <
  // 2^31 (else the stream is walked). docs/kernels.md, "SpMM fp32 and int8 at N = 1".
  const int32_t* chans = nullptr;
  // with a plan that applies (spmm_plan_applies): compute the full strips (spmm_plan_strip
  // columns each) only for output rows of plan blocks [block0, block1) (-1: to the last), so
  // threads can split rows; the columns after the last full strip are computed for every row
  // when `rest` is set (an empty block range with `rest` computes just those).
  int64_t block0 = 0, block1 = -1;
  bool rest = true;
  // optional, b1 and one column (N = 1, ldx = 1, ldy = 1, k set): the same weights in channel
  // groups (pack_sparse_f32_groups). A path with a loop over them multiplies 16 output rows per
  // step; others ignore them.
  const int32_t* gslots = nullptr;  // per group of kGroupRows rows and window of 32 inputs
  const uint8_t* gidx = nullptr;    // per slot, kGroupRows input channels within the window
  const float* gw = nullptr;        // per slot, kGroupRows weights
  const float* gbias = nullptr;     // per row, padded to whole groups
  // or, with `octets`, the same call's octet form (pack_sparse_f32_octets; gslots, gidx, gw and
  // gbias then hold its fields): a path with a loop over them multiplies 8 output rows per step
  bool octets = false;
  const int32_t* gbase = nullptr;  // per slot, its window's first input channel
};

// The call's fields for Y[m, n] = W X from a packed stream, X and Y with row strides ldx and ldy
// (no clamp, plan or channel table: the caller adds those it uses)
inline SpmmF32Args spmm_f32_args(const PackedSparseF32& packed, const float* x, int64_t ldx,
                                 float* y, int64_t ldy, int64_t n) {
  SpmmF32Args p;
  p.x = x;
  p.ldx = ldx;
  p.y = y;
  p.ldy = ldy;
  p.n = n;
  p.m = packed.m;
  p.k = packed.k;
  p.values = packed.values.data();
  p.nnz = packed.nnz.data();
  p.deltas = packed.deltas.data();
  return p;
}

// int8 GEMM per the TFLite spec: Y[r, j] = requant(sum_k A[r, k] * W[j, k] + bias[j]) with
// int8 activations A (asymmetric, per tensor; the input zero point is folded into bias),
// weights W symmetric per output channel in [-127, 127], int32 bias.
// requant(acc) = zp_out + nearbyint(clamp(float(acc) * scale[j], lo, hi)), where float(acc) and
// the product are IEEE single precision rounded to nearest even, lo/hi are the output range
// minus zp_out (so activations are the clamp). Every path computes exactly this, bit for bit,
// for bounds inside int8 (lo + zp_out >= -128, hi + zp_out <= 127: the caller's contract).
struct GemmS8Args {
  const int8_t* a = nullptr;
  int64_t lda = 0;
  const int8_t* b = nullptr;  // unpacked W[cols, depth] row-major (read by the reference)
  int64_t ldb = 0;
  const int8_t* bp = nullptr;       // W packed by pack_gemm_s8 with the kernel's tile and k-group
  const int32_t* bias = nullptr;    // per column: bias_q[j] - zp_in * colsum[j]
  const int32_t* colsum = nullptr;  // per column: sum_k W[j, k] (AVX-512 offsets A with it)
  const float* scale = nullptr;     // per column: s_in * s_w[j] / s_out
  int8_t* y = nullptr;
  int64_t ldy = 0;
  int64_t rows = 0, cols = 0, depth = 0;
  int32_t zp_out = 0;
  float lo = -128.0f, hi = 127.0f;
};

// Panels of `tile` columns, k in groups of `kgroup`, zero padded:
// out[((p * groups + g) * tile + j) * kgroup + t] = W[p*tile + j, g*kgroup + t].
int64_t packed_gemm_s8_size(int64_t cols, int64_t depth, int tile, int kgroup);
void pack_gemm_s8(const int8_t* w, int64_t cols, int64_t depth, int tile, int kgroup, int8_t* out);
// The k-group of a path's gemm_s8 packing (the tile is its kernels.inc entry).
int gemm_s8_kgroup(Isa provider);

// Sparse int8 (1x4 input blocks): Y[M, N] = requant(W_sparse[M, K] X[K, N] + bias), vectorised
// over N. A block is 4 consecutive input channels 4q..4q+3 of one output channel; X comes packed
// in the same quads, column-interleaved: xq[(q * ldx + n) * 4 + t] = X[4q + t, n] (zero padded),
// so one 32-bit lane holds the 4 activations a block multiplies (vpdpbusd / sdot shape).
// Quads are addressed by 32-bit word index (q * ldx + n < 2^31: the packed X under 8 GiB).
struct SpmmS8Args {
  const int8_t* xq = nullptr;
  int64_t ldx = 0;  // columns of the packed X
  int8_t* y = nullptr;
  int64_t ldy = 0;
  int64_t n = 0, m = 0;
  const int32_t* nnz = nullptr;     // per output channel: nonzero blocks
  const int32_t* quad = nullptr;    // per block, in stream order: input quad index q
  const int32_t* w = nullptr;       // per block: its 4 weights, byte t = weight of channel 4q + t
  const int32_t* bias = nullptr;    // per output channel: bias_q - zp_in * rowsum
  const int32_t* rowsum = nullptr;  // per output channel: sum of its weights
  const float* scale = nullptr;
  int32_t zp_out = 0;
  float lo = -128.0f, hi = 127.0f;
  // Optional, for one column (N = 1, ldx = 1, ldy = 1): the same blocks in channel groups
  // (pack_sparse_s8_groups). A path that uses them multiplies 16 channels per step; paths
  // without such a loop ignore them. Integer sums are exact, so both give the same bits.
  int64_t k = 0;                    // input channels (the packed X holds (k + 3) / 4 quads)
  const int32_t* gslots = nullptr;  // per group of kGroupRows channels and window: its slots
  const uint8_t* gquad = nullptr;   // per slot, kGroupRows quads (index within the window)
  const int32_t* gw = nullptr;      // per slot, kGroupRows blocks of 4 weights
};

struct PackedSparseS8 {
  int64_t m = 0, k = 0;
  std::vector<int32_t> nnz, quad, w;
  std::vector<int32_t> gslots, gw;  // the channel-group form, when packed
  std::vector<uint8_t> gquad;
  int64_t blocks() const { return int64_t(quad.size()); }
};
// Weights W[M, K] int8 -> the 1x4 block stream (blocks with any nonzero weight are stored).
PackedSparseS8 pack_sparse_s8(const int8_t* w, int64_t m, int64_t k);
// The block stream re-laid for one input column: output channels in groups of kGroupRows, input
// quads in windows of kGroupQuads (128 channels, two 512-bit registers of one column's X); per
// group and window, slots: slot j holds the j-th block in that window of each of the group's
// channels (its quad index within the window in a byte; for a channel with fewer, or past M: quad 0
// with weight 0). A path multiplies one slot for all the group's channels with one permute of X
// from registers and one multiply-add: no gather, no loop or reduction per channel, which cost more
// than the blocks themselves at N = 1 and 90 % sparsity. gslots is [groups][windows]; slots are in
// that order. Channels are not reordered, so a group and window cost its longest channel's blocks
// there.
constexpr int64_t kGroupRows = 16, kGroupQuads = 32;
void pack_sparse_s8_groups(PackedSparseS8& p);
// X[K, N] (row stride ld; transposed: X given as [N, K]) -> quads in strips of kQuadStrip
// columns: strip s is an xq block of its own (ldx = kQuadStrip, columns past N zero), at
// xq + s * quad_strip_size(K). A kernel called per strip touches one compact block instead of
// K/4 rows spread over the whole input (TLB misses once that spans many pages).
constexpr int64_t kQuadStrip = 64;
static inline int64_t quad_strip_size(int64_t k) { return (k + 3) / 4 * kQuadStrip * 4; }
void pack_quads_s8(const int8_t* x, int64_t k, int64_t n, int64_t ld, bool transposed, int8_t* xq);
// X[K, N] with N < kQuadStrip as one compact block, ldx = N (no zero columns): kernels read only
// columns below their n, and a 64-column strip for one column (an FC layer) cost 64x its packing.
void pack_quads_s8_narrow(const int8_t* x, int64_t k, int64_t n, int64_t ld, bool transposed,
                          int8_t* xq);

// The requantization of one accumulator, as every path must compute it. (static: each ISA file
// gets its own copy, so the linker can never hand an AVX-512 build of it to generic code.)
static inline int8_t requant_s8(int32_t acc, float scale, int32_t zp_out, float lo, float hi) {
  float f = float(acc) * scale;
  f = f < lo ? lo : (f > hi ? hi : f);
  return int8_t(int32_t(__builtin_nearbyintf(f)) + zp_out);
}

#define EP_KERNEL_KIND(name, Args) using name##_fn = void (*)(const Args&);
#include "kernels/kernels.inc"

// Declarations: ep::<isa>::<name>(const Args&).
#define EP_KERNEL_KIND(name, Args) \
  struct name##_args {             \
    using type = Args;             \
  };
#include "kernels/kernels.inc"
#define EP_KERNEL(name, isa, tile)          \
  namespace isa {                           \
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

// Per-thread scratch memory for kernels (slot 0..3), grown on demand and kept. It lives in a
// file built without ISA flags: std:: templates instantiated in an AVX-512 file could otherwise
// be picked by the linker for generic code (an illegal instruction on older CPUs).
void* thread_scratch(int slot, size_t bytes);

// The kernel kinds and the ISAs that implement each directly (for tests and the benchmark).
struct KernelListing {
  const char* name;
  Isa isa;
  int tile;
};
const std::vector<KernelListing>& kernel_listing();

}  // namespace ep
