// The executor: load -> plan -> run, as XNNPACK's create / reshape / run.
//
// CompiledModel (immutable once made, shared by any number of threads): the validated Model, one
// operator object per op (weights packed), and the arena plan: every activation tensor and every
// operator's scratch gets an offset in one block, two items sharing bytes only when their
// lifetimes (first write .. last read, in op order) do not overlap.
// Layouts: activations are NHWC, except in subgraphs of channel-major-capable operators that
// hold a sparse 1x1 convolution (Op::chw_seed), which run NCHW (Elsen et al., "Fast Sparse
// ConvNets"; XNNPACK's NCHW path). Where a tensor's producer and a reader differ in layout, a
// layout operator writes a converted copy (an extra tensor) that the reader reads instead.
// In those subgraphs a sparse 1x1 convolution and a depthwise conv that alone reads its output
// become one operator (fuse_expand_depthwise): their middle tensor is never stored. Such a pair
// and a sparse 1x1 convolution that alone reads its output become one operator in turn
// (fuse_expand_project): split over threads, by bands of pixels.
// Context (one per thread): that block, the tensor pointers, the thread budget and the profiler.
//
// Consumes: .tflite bytes and options. Produces: output tensors in caller memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model.h"
#include "runtime/ops/ops.h"

namespace ep {
namespace rt {

struct RuntimeOptions {
  Isa isa = Isa::reference;  // must be supported by this CPU (checked)
  bool sparse = true;
};

class CompiledModel {
 public:
  CompiledModel(std::unique_ptr<Model> model, const RuntimeOptions& opts);
  const Model& model() const { return *model_; }
  const std::vector<std::unique_ptr<Op>>& ops() const { return ops_; }
  int64_t arena_bytes() const { return arena_bytes_; }
  int64_t offset(int tensor) const { return offset_[tensor]; }  // -1: no arena slot
  int64_t scratch_offset(size_t op) const { return scratch_[op]; }
  // Tensors op `k` reads from a converted copy: (tensor, copy) pairs
  const std::vector<std::pair<int, int>>& substitutions(size_t op) const { return io_[op].subst; }
  Isa isa() const { return opts_.isa; }

 private:
  void choose_layouts();
  void fuse_channel_major();
  void plan();
  struct OpIO {
    std::vector<int> inputs;  // after substitution
    int output = -1;
    std::vector<std::pair<int, int>> subst;
  };
  std::unique_ptr<Model> model_;
  RuntimeOptions opts_;
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<OpIO> io_;  // per entry of ops_
  std::vector<int64_t> offset_, scratch_;
  int64_t arena_bytes_ = 0;
};

class Context {
 public:
  Context(std::shared_ptr<const CompiledModel> model, int threads);
  // inputs[i] / outputs[i]: the model's i-th input / output, densely packed; read and written
  // in place during the run (overlapping buffers are allowed: those outputs are copied)
  void run(const float* const* inputs, float* const* outputs);
  void set_threads(int threads);  // also starts the per-operator tuning again
  void set_profiling(bool on);    // on: also resets the counters
  // per op: total nanoseconds over the runs since profiling was switched on, and the run count
  // (tuning runs are not counted: their operators alternate between thread counts)
  const std::vector<double>& op_ns() const { return op_ns_; }
  int64_t profiled_runs() const { return runs_; }
  // With more than one thread, the first kTuneBoth runs time every operator split over the
  // threads (even runs) and on the calling thread alone (odd runs), and each operator is given
  // whichever was faster; the next runs time that mixed choice as a whole, and the fastest of
  // mixed, all split and all on one thread is kept (op_threads; splitting must beat one thread
  // by 5 %, the mixed choice all split by 3 %). Splitting does not pay for every
  // operator: on a 2-vCPU Zen 2 VM, MobileNetV2's 90 %-sparse 1x1 convolutions and small
  // depthwise layers took up to 2x longer split, reading what the other core wrote one operator
  // before, while its stem and large depthwise layers ran 1.3-1.6x faster; the whole model was
  // slower on 2 threads than on 1, and so was the mixed choice (an operator split between two
  // on one thread pays for both hand-overs). Results never depend on the thread count, so the
  // choice changes no bit.
  // The choice is made again every kRetuneEvery runs after it (its cost: about 9 runs in 1024).
  // A tuning run meant to split in which the pool's helpers joined fewer than half of its split
  // calls measured one thread, not a split (another process or thread held the helper's core:
  // numpy's OpenBLAS workers spin for about 0.1 s after each BLAS call, and a context tuned
  // right after one stayed on one thread, MobileNetV2 int8 at 1.0x of one thread instead of
  // 1.56x): it is not counted, and taken again, up to kTuneRetries times.
  static constexpr int kTuneBoth = 6, kTuneRuns = 9, kRetuneEvery = 1024, kTuneRetries = 32;
  bool tuning() const { return threads_ > 1 && tune_runs_ < kTuneRuns; }
  const std::vector<int>& op_threads() const { return op_threads_; }
  const CompiledModel& compiled() const { return *model_; }

 private:
  std::shared_ptr<const CompiledModel> model_;
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<uint8_t, Free> arena_;
  // Per tensor: where it lives between runs (base_: its arena slot, or the model's constant
  // data), where it lives in the current run (home_: the caller's buffers for inputs and most
  // outputs), and where this operator reads it (ptr_: home_, or a converted copy).
  std::vector<float*> base_, ptr_, home_;
  std::vector<bool> direct_;  // per output, this run: written straight into the caller's buffer
  std::vector<int> patched_;  // this run: the tensors whose home_ / ptr_ are caller buffers
  int threads_ = 1;
  bool profile_ = false;
  std::vector<double> op_ns_;
  int64_t runs_ = 0;
  // the tuning (see tuning()): runs so far, and per op the fastest split and one-thread times
  int tune_runs_ = 0, runs_since_tune_ = 0, tune_retries_ = 0;
  std::vector<double> best_split_ns_, best_one_ns_;
  double whole_split_ns_ = 0, whole_one_ns_ = 0, whole_mixed_ns_ = 0;  // fastest whole runs
  std::vector<int> op_threads_;  // per op: the threads it runs with once tuned
  bool any_split_ = false;       // some op_threads_ entry splits (the pool is held for the run)
  void reset_tuning();
};

}  // namespace rt
}  // namespace ep
