// Layer objects over the kernels: they own packed weights, pick the kernels of one path, and
// split calls over threads. Consumers: the pybind11 module (and any C/C++ embedder).
//
// Consumes: row-major float weights W[M, K] (zeros = pruned), optional bias[M], an activation.
// Produces: y = act(x W^T + b) for x[N, K] (torch.nn.Linear) and Y = act(W X + b) for X[K, N].
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "layers/huge_pages.h"

namespace ep {

Act act_from_name(const std::string& name);  // throws std::invalid_argument on an unknown name

// Threads a layer call really uses: at most `threads`, and one per min_macs_per_thread()
// multiply-adds of work. A pool thread that has slept costs ~50 us to wake on a VM (parallel.cpp),
// so a call smaller than two such shares runs on the caller's thread alone. The result never
// depends on the thread count, so capping changes no bit. The minimum is kMinMacsPerThread
// unless EDGEPRUNE_MIN_MACS_PER_THREAD (read once; 0 = split every call, as the tests do;
// anything but a number >= 0 throws std::invalid_argument) or set_min_macs_per_thread says else.
constexpr double kMinMacsPerThread = 1 << 20;
double min_macs_per_thread();
void set_min_macs_per_thread(double macs);
int threads_for(int threads, double macs, double min_macs);
int threads_for(int threads, double macs);

// std::call_once behind a flag read first. libstdc++'s call_once writes two thread-locals on every
// call, the first or not (a __tls_get_addr each from a shared library): with the kernel table's,
// a tenth of a batch-1 call of a small layer from Python.
class Once {
 public:
  template <class F>
  void operator()(F&& f) const {
    if (done_.load(std::memory_order_acquire)) return;
    std::call_once(flag_, [&] {
      f();
      done_.store(true, std::memory_order_release);
    });
  }

 private:
  mutable std::once_flag flag_;
  mutable std::atomic<bool> done_{false};
};

// DenseLinear::forward_kn reads X in place from this many columns on, else packs it first.
constexpr int64_t kDenseInPlaceMinCols = 512;

class DenseLinear {
 public:
  // isa: the path to use; defaults to selected_isa().
  DenseLinear(const float* w, int64_t m, int64_t k, const float* bias, Act act);
  DenseLinear(const float* w, int64_t m, int64_t k, const float* bias, Act act, Isa isa);
  void forward(const float* x, int64_t n, float* y, int threads) const;     // x[N,K] -> y[N,M]
  void forward_kn(const float* x, int64_t n, float* y, int threads) const;  // X[K,N] -> Y[M,N]
  // y[N,M] on one thread from rows of X read in segments (kernels.h, DenseF32Args::a_seg): row r
  // of X is x[r * ldx + (k / seg) * seg_stride + k % seg], k < K; seg divides K
  void forward_segments(const float* x, int64_t ldx, int64_t seg, int64_t seg_stride, int64_t n,
                        float* y) const;
  int64_t m() const { return m_; }
  int64_t k() const { return k_; }
  Isa isa() const { return kern_.isa; }

 private:
  // forward with rows of x `ldx` floats apart (>= K)
  void forward_rows(const float* x, int64_t ldx, int64_t n, float* y, int threads) const;
  // the kernel's arguments for y[n, M] from n rows of x `ldx` floats apart, on one thread
  DenseF32Args rows_args(const float* x, int64_t ldx, int64_t n, float* y) const;
  int64_t m_, k_;
  std::vector<float> w_, bias_;
  std::vector<float, HugePageAllocator<float>> packed_;  // read whole by a GEMV: huge pages
  bool has_bias_;
  float lo_, hi_;
  KernelEntry<dense_f32_fn> kern_;
  transpose_f32_fn transpose_ = nullptr;  // the same path's register-tile transpose
};

enum class SparseKernel { automatic, sparse, dense };

class SparseLinear {
 public:
  SparseLinear(const float* w, int64_t m, int64_t k, const float* bias, int block, Act act,
               SparseKernel kernel);
  SparseLinear(const float* w, int64_t m, int64_t k, const float* bias, int block, Act act,
               SparseKernel kernel, Isa isa);
  void forward(const float* x, int64_t n, float* y, int threads) const;
  void forward_kn(const float* x, int64_t n, float* y, int threads) const;
  // One thread, columns [0, n) of X's rows ldx apart into Y's rows ldy apart, for a layer that
  // uses the sparse kernels (uses_sparse) and n of at least part_align(). Each column gets the
  // bits a forward_kn call gives it when the part starts there on a multiple of part_align()
  // columns and ends with the call's columns or on such a multiple.
  void forward_kn_part(const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy) const;
  // the kernel's widest strip of columns outside a tile plan: 4 vectors (a column's sum order
  // depends on which strip computes it; a plan's strips do not change it)
  int64_t part_align() const { return 4 * int64_t(kern_.tile); }
  int64_t m() const { return m_; }
  int64_t k() const { return k_; }
  int64_t nnz() const { return nnz_; }                    // nonzero weights of W
  int64_t stored() const { return packed_.nonzeros(); }   // weights the sparse stream holds
  bool uses_sparse() const { return dense_ == nullptr; }  // for calls at least a vector wide
  // whether calls narrower than a vector (N = 1) run a dense copy of the weight (auto only)
  bool narrow_dense() const { return narrow_ != nullptr; }
  // whether one-column calls run the octets (AVX2; packs them on first use, as such a call does)
  bool column_octets() const { return octets_for(1) != nullptr; }
  Isa isa() const;
  bool planned() const { return planned_.load(); }  // whether the tile plan has been made

  // `auto` picks the sparse kernel when the stored weights (zeros inside a stored 4-channel block
  // count) are at most this fraction of M*K (where sparse stops paying: docs/kernels.md).
  static constexpr double kAutoMaxDensityB1 = 0.35;
  static constexpr double kAutoMaxDensityB4 = 0.5;
  // Calls narrower than a vector (N = 1: an FC layer at batch 1) are a GEMV, where the sparse
  // kernels only beat the dense one on large, very sparse weights: an `auto` layer chosen sparse
  // also keeps the dense kernel for them unless it stores at most kAutoMaxDensityNarrow of M*K
  // and M*K is at least kAutoNarrowMinWeights (docs/kernels.md, "Choosing sparse or dense").
  static constexpr double kAutoMaxDensityNarrow = 0.12;
  static constexpr int64_t kAutoNarrowMinWeights = int64_t(1) << 18;
  // One column on AVX2 runs the octets (kernels.h pack_sparse_f32_octets) where a layer keeps no
  // dense copy for narrow calls, or where their lanes (padding included) plus kOctetGroupLanes
  // per group of 8 rows are at most kAutoMaxOctetLanes of M*K. On Zen 2 a slot costs about 2.2
  // of the dense GEMV's 8-lane multiply-adds, and a group's bias, store and loop exit about 3.5
  // slots (docs/kernels.md, "Sparse fp32 at N = 1 in row groups on AVX2: octets").
  static constexpr double kAutoMaxOctetLanes = 0.46;
  static constexpr double kOctetGroupLanes = 28.0;

 private:
  int64_t m_, k_, nnz_ = 0;
  PackedSparseF32 packed_;
  // b1 on a SIMD path: the tile plan for kern_'s lanes (kernels.h), made by the first call at
  // least one vector wide, so a layer only ever called narrower (N = 1) never holds it
  const SpmmTilePlan* plan_for(int64_t n) const;
  // the kernel call's fields for n columns of X (rows ldx apart) into Y (rows ldy apart) from the
  // stream and `plan`; no channel table or row groups
  SpmmF32Args stream_args(const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n,
                          const SpmmTilePlan* plan) const;
  bool plannable_ = false;
  Once plan_once_;
  mutable SpmmTilePlan tiles_;
  mutable std::atomic<bool> planned_{false};
  // b1 on a SIMD path: the stream's absolute channels (kernels.h, SpmmF32Args::chans), made by
  // the first call narrower than a vector (every such call uses them; wider ones never do, so a
  // conv layer never holds them)
  const int32_t* chans_for(int64_t n) const;
  Once chans_once_;
  mutable std::vector<int32_t> chans_;
  // b1 on AVX-512, one column: the row-group form (kernels.h pack_sparse_f32_groups), made by the
  // first one-column call; null for other widths and paths
  const SparseF32Groups* groups_for(int64_t n) const;
  Once groups_once_;
  mutable SparseF32Groups groups_;
  // AVX2, one column: the octet form of the rows (kernels.h pack_sparse_f32_octets; a b4 layer's
  // too), made by the first one-column call; null for other widths and paths
  const SparseF32Octets* octets_for(int64_t n) const;
  Once octets_once_;
  mutable SparseF32Octets octets_;
  // Y[:, 0] = act(W x + b) through the octets, threads over ranges of whole groups
  void run_octets(const SparseF32Octets& o, const float* x, float* y, int threads) const;
  // b1 with a plan, inputs narrower than the plan's strip (a 7x7 layer's 49 columns): all
  // columns are one kernel call, so threads split the output rows instead, each part a stream
  // and plan of its own. Made by the first such call per part count and kept.
  struct RowPart {
    int64_t m0 = 0, m1 = 0;
    PackedSparseF32 packed;
    SpmmTilePlan tiles;
  };
  // (empty where a part's plan would not pay: those calls stay one task)
  const std::vector<RowPart>& row_parts(int parts, const SpmmTilePlan& whole) const;
  mutable std::mutex parts_mu_;
  mutable std::vector<std::unique_ptr<std::vector<RowPart>>> parts_;  // index: part count
  float lo_, hi_;
  KernelEntry<spmm_f32_b1_fn> kern_;      // b1 or b4 (same signature)
  transpose_f32_fn transpose_ = nullptr;  // the same path's register-tile transpose
  std::unique_ptr<DenseLinear> dense_;
  std::unique_ptr<DenseLinear> narrow_;  // auto: the dense kernel for calls narrower than a vector
};

// int8 linear layer per the TFLite spec (kernels.h, GemmS8Args): quantizes the float weight
// itself (symmetric per output channel, [-127, 127]) and the bias (int32, scale s_in * s_w).
// x int8 [N, K] (scale s_in, zero point zp_in) -> y int8 [N, M] (s_out, zp_out).
class QLinear {
 public:
  // mode: dense GEMM, the 1x4-block sparse kernel, or automatic (sparse when at most
  // kAutoMaxBlockDensity of the 1x4 blocks hold a nonzero weight).
  QLinear(const float* w, int64_t m, int64_t k, const float* bias, float s_in, int32_t zp_in,
          float s_out, int32_t zp_out, Act act, SparseKernel mode, Isa isa);
  // Below the measured break-even with the dense GEMM, with a margin for the transposes of the
  // [N, K] layout (docs/kernels.md, "Choosing sparse or dense").
  static constexpr double kAutoMaxBlockDensity = 0.35;
  // One column (an FC or squeeze-excite layer at batch 1) runs sparse only where that pays: on
  // AVX-512 through the channel groups always; elsewhere through one dot product per output
  // channel, which costs about 15 ns a channel before its blocks and so beats the dense GEMM only
  // on long, very sparse rows (AVX2 at 90 %: 240x960x1 7.6 against 8.9 us, 960x240x1 17.7
  // against 8.6). An `auto` layer chosen sparse there also keeps the dense GEMM for one column
  // unless at most kAutoMaxBlockDensityColumn of the 1x4 blocks are stored and K is at least
  // kAutoColumnMinDepth (docs/kernels.md, "Choosing sparse or dense").
  static constexpr double kAutoMaxBlockDensityColumn = 0.12;
  static constexpr int64_t kAutoColumnMinDepth = 480;
  // whether one-column calls run the dense GEMM though the layer is sparse (`auto` only)
  bool column_dense() const { return column_dense_; }
  void forward(const int8_t* x, int64_t n, int8_t* y, int threads) const;
  void forward_kn(const int8_t* x, int64_t n, int8_t* y, int threads) const;  // X[K,N] -> Y[M,N]
  int64_t m() const { return m_; }
  int64_t k() const { return k_; }
  Isa isa() const { return kern_.isa; }
  const std::vector<int8_t>& qweight() const { return wq_; }
  const std::vector<float>& weight_scales() const { return sw_; }
  const std::vector<int32_t>& qbias() const { return bq_; }
  int32_t qmin() const { return qmin_; }
  int32_t qmax() const { return qmax_; }
  bool uses_sparse() const { return sparse_; }
  int64_t stored_blocks() const { return sp_.blocks(); }
  int64_t nnz() const { return nnz_; }

 private:
  // y[n, M] = the dense GEMM of x[n, K] (packed_)
  void run_dense(const int8_t* x, int64_t n, int8_t* y, int threads) const;
  // x: [K, N] with row stride ld, or [N, K] (transposed) with row stride ld
  void run_sparse(const int8_t* x, int64_t ld, bool transposed, int64_t n, int8_t* y, int64_t ldy,
                  int threads) const;
  bool sparse_ = false;
  bool column_dense_ = false;  // sparse, but one column runs the dense GEMM (packed_ holds it)
  int64_t nnz_ = 0;
  PackedSparseS8 sp_;
  KernelEntry<spmm_s8_fn> skern_;
  int64_t m_, k_;
  int32_t zp_in_, zp_out_, qmin_, qmax_;
  std::vector<int8_t> wq_, packed_;
  std::vector<float> sw_, scale_;
  std::vector<int32_t> bq_, bias_eff_, colsum_;
  KernelEntry<gemm_s8_fn> kern_;
};

}  // namespace ep
