// The operator tier: one object per graph operator, made at load from the validated Model. The
// constructor checks the op's shapes and packs its weights (dense panels, or the sparse stream
// and tile plans for 1x1 convolutions and FULLY_CONNECTED); strategy choices (im2col or direct,
// dense or sparse, thread split) are made here and nowhere else. run() is const: one loaded
// model serves many contexts at once, each with its own tensor memory.
//
// Consumes: Model tensors/ops (model.h). Produces: Op objects whose run() reads its inputs and
// writes its output through the context's tensor pointers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dispatch/isa.h"
#include "runtime/model.h"
#include "runtime/ops/vec.h"

namespace ep {
namespace rt {

struct OpOptions {
  Isa isa = Isa::reference;
  bool sparse = true;  // let 1x1 / FC layers with enough zeros run the sparse kernels
};

// What one call sees: a pointer per tensor (constants point into the model, activations into
// the context's arena), scratch memory for this op, and the thread budget.
struct RunCtx {
  float* const* ptr = nullptr;
  void* scratch = nullptr;
  int threads = 1;
};

class Op {
 public:
  virtual ~Op() = default;
  virtual void run(const RunCtx& ctx) const = 0;
  virtual int64_t scratch_bytes() const { return 0; }
  // Channel-major (NCHW: per image, C planes of H*W) execution, decided per subgraph at plan
  // time (executor.cpp). chw_capable: run() can read and write its 4-D activations as planes
  // once set_chw(true); chw_seed: the op is why a subgraph is worth running so (a sparse 1x1
  // convolution: the SpMM kernels compute W[Cout, Cin] X[Cin, HW] straight on planes).
  virtual bool chw_capable() const { return false; }
  virtual bool chw_seed() const { return false; }
  void set_chw(bool on) {
    chw_ = on && chw_capable();
    if (chw_) label += " nchw" + chw_strategy();  // the profiler shows the layout
  }
  // how a channel-major op computes, when it has more than one way (shown after "nchw")
  virtual std::string chw_strategy() const { return ""; }
  bool chw() const { return chw_; }
  // chw_out_capable: reads its input NHWC but can write its output as planes, for an op whose
  // every reader runs channel-major (a stem convolution in front of a sparse chain): the layout
  // change is then part of its own output writes instead of a separate transpose.
  virtual bool chw_out_capable() const { return false; }
  void set_chw_out(bool on) {
    chw_out_ = on && !chw_ && chw_out_capable();
    if (chw_out_) label += " ->nchw";
  }
  // the layout of the output this op writes
  bool stores_chw() const { return chw_ || chw_out_; }
  std::string label;  // "CONV_2D 3x3/2 3->32", shown by the profiler
  std::string kind;   // "CONV_2D", ...
  double macs = 0;

 protected:
  bool chw_ = false, chw_out_ = false;
};

// A single-input operator pointed at its input and output tensors: how both tiers' factories
// (make_op, make_int8_op) finish most operators.
template <class T>
std::unique_ptr<Op> wire(std::unique_ptr<T> op, const OpDesc& d) {
  op->in_ = d.inputs[0];
  op->out_ = d.outputs[0];
  return op;
}

// The elementwise activation an operator computes on its one float input (GELU with
// `approximate`: the tanh form), ActKind::none for any other operator. One list for the float
// tier's factory, the planner's fusions and the int8 tier's tables.
ActKind activation_kind(OpCode code, bool approximate);

// Throws ModelError when shapes are inconsistent, UnsupportedError for unsupported variants.
std::unique_ptr<Op> make_op(const Model& model, const OpDesc& desc, const OpOptions& opts);

// A channel-major sparse 1x1 convolution and the channel-major depthwise conv that alone reads
// its output, as one operator computing a plane of each per channel (ops.cpp, ExpandDepthwise),
// reading expand's input and writing depthwise's output; null where the pair does not qualify.
std::unique_ptr<Op> fuse_expand_depthwise(const Op& expand, const Op& depthwise);

// A fused expansion and depthwise conv (fuse_expand_depthwise) and the channel-major sparse 1x1
// conv that alone reads its output, as one operator over bands of rows (ops.cpp, ExpandProject),
// reading the pair's input and writing the projection's output. It takes over `pair` and the
// projection's weights (both are dropped); null, with both untouched, where they do not qualify.
std::unique_ptr<Op> fuse_expand_project(std::unique_ptr<Op>& pair, Op& projection);

// A channel-major depthwise conv (one that computes bands of rows) and the channel-major sparse
// 1x1 conv that alone reads its output, as one operator over bands of pixels (ops.cpp,
// DepthwiseProject). It takes over `depthwise` and the projection's weights (both are dropped);
// null, with both untouched, where they do not qualify.
std::unique_ptr<Op> fuse_depthwise_project(std::unique_ptr<Op>& depthwise, Op& projection);

// The channel-major ADD that alone reads a fused block's output (tensor block_out of `block`, made
// by fuse_expand_project or fuse_depthwise_project), taken into the block: it then reads the
// ADD's other operand too and writes the ADD's output (the caller then drops the ADD). False,
// with both untouched, where the pair does not qualify.
bool fuse_residual_add(Op& block, const Op& add, int block_out);

// The layout conversion the executor puts at a channel-major subgraph's edge: tensor `in`
// [n, hw, c] (NHWC) to `out` [n, c, hw] when to_chw, else back.
std::unique_ptr<Op> make_layout_op(int in, int out, int64_t n, int64_t hw, int64_t c, bool to_chw,
                                   Isa isa);

}  // namespace rt
}  // namespace ep
