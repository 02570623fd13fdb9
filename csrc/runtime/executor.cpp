// CompiledModel / Context (executor.h): operator creation, the arena plan, and the run loop.
//
// Consumes: a validated Model. Produces: outputs, per-op timings.
#include "runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "layers/parallel.h"

namespace ep {
namespace rt {

namespace {

constexpr int64_t kAlign = 64;
int64_t aligned(int64_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

struct Item {
  int64_t bytes, first, last;
  int64_t* offset;
};

// Greedy by size (largest first), each at the lowest offset clear of every placed item whose
// lifetime overlaps: the planner TFLite's arena and XNNPACK's memory planner both use.
int64_t place(std::vector<Item>& items) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return items[a].bytes > items[b].bytes; });
  std::vector<size_t> placed;
  int64_t total = 0;
  for (size_t i : order) {
    Item& it = items[i];
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t j : placed) {
      const Item& o = items[j];
      if (o.first <= it.last && it.first <= o.last)
        busy.push_back({*o.offset, *o.offset + o.bytes});
    }
    std::sort(busy.begin(), busy.end());
    int64_t off = 0;
    for (const auto& b : busy) {
      if (off + it.bytes <= b.first) break;
      off = std::max(off, aligned(b.second));
    }
    *it.offset = off;
    total = std::max(total, off + it.bytes);
    placed.push_back(i);
  }
  return total;
}

}  // namespace

namespace {

// Per tensor, how many operators read it (a model output counts as two readers, so it is never
// fused or folded away) and which operator writes it (-1: none).
struct Uses {
  std::vector<int> readers, producer;
  explicit Uses(const Model& m) : readers(m.tensors.size(), 0), producer(m.tensors.size(), -1) {
    for (size_t k = 0; k < m.ops.size(); ++k) {
      for (int t : m.ops[k].inputs)
        if (t >= 0) ++readers[size_t(t)];
      producer[size_t(m.ops[k].outputs[0])] = int(k);
    }
    for (int t : m.outputs) readers[size_t(t)] += 2;
  }
};

// m.ops without the operators marked in `drop`, in order
void drop_ops(Model& m, const std::vector<bool>& drop) {
  std::vector<OpDesc> kept;
  for (size_t k = 0; k < m.ops.size(); ++k)
    if (!drop[k]) kept.push_back(std::move(m.ops[k]));
  m.ops = std::move(kept);
}

// A PAD (or PADV2 with value 0) of only H and W of an NHWC tensor whose one reader is a VALID
// CONV_2D / DEPTHWISE_CONV_2D becomes that convolution's explicit padding (the converters' form
// of PyTorch's symmetric padding at stride 2): the padded copy is never made. The operator keeps
// its validation: the convolution checks its output shape against the padded size. A float32
// PAD / PADV2 (any constant) before a VALID MAX_POOL_2D (PyTorch's padded max pool: PADV2 with
// the lowest float) folds the same way, the constant kept as OpDesc::pad_value: a window that
// reaches the padding takes the max with it, which is what the padded copy gave.
void fold_pads(Model& m) {
  const std::vector<int> readers = Uses(m).readers;
  std::vector<bool> drop(m.ops.size(), false);
  for (size_t k = 0; k < m.ops.size(); ++k) {
    const OpDesc& p = m.ops[k];
    if ((p.code != OpCode::pad && p.code != OpCode::padv2) || p.inputs.size() < 2) continue;
    const Tensor &x = m.tensors[p.inputs[0]], &pads = m.tensors[p.inputs[1]];
    const int out = p.outputs[0];
    if (x.shape.size() != 4 || !pads.is_const() || pads.type != DType::i32 || pads.elems != 8 ||
        readers[out] != 1 || x.is_const())
      continue;
    float value = 0.0f;
    if (p.code == OpCode::padv2 && p.inputs.size() > 2 && p.inputs[2] >= 0) {
      const Tensor& v = m.tensors[p.inputs[2]];
      if (!v.is_const() || v.type != DType::f32 || v.elems != 1) continue;
      value = v.as<float>()[0];
    }
    const int32_t* pv = pads.as<int32_t>();
    if (pv[0] || pv[1] || pv[6] || pv[7] || pv[2] < 0 || pv[3] < 0 || pv[4] < 0 || pv[5] < 0)
      continue;
    for (size_t j = k + 1; j < m.ops.size(); ++j) {
      OpDesc& c = m.ops[j];
      if (c.inputs.empty() || c.inputs[0] != out) continue;
      const bool conv =
          (c.code == OpCode::conv_2d || c.code == OpCode::depthwise_conv_2d) && value == 0.0f;
      const bool max_pool = c.code == OpCode::max_pool_2d && x.type == DType::f32 &&
                            !x.quantized() && m.tensors[out].type == DType::f32 &&
                            !m.tensors[out].quantized() && value == value;
      if ((conv || max_pool) && c.padding == Padding::valid && !c.explicit_pad) {
        c.inputs[0] = p.inputs[0];
        c.explicit_pad = true;
        c.pad[0] = pv[2], c.pad[1] = pv[3], c.pad[2] = pv[4], c.pad[3] = pv[5];
        c.pad_value = value;
        drop[k] = true;
      }
      break;
    }
  }
  drop_ops(m, drop);
}

// SELECT_V2(NOT_EQUAL(x, x), c, x) with a float32 scalar constant c: "NaN -> c", how exported
// attention clears the rows a mask empties. When the NOT_EQUAL's bool output has no other reader,
// the pair becomes one pass over x (OpDesc::nan_fill, inputs {x, c}): the mask is never written.
void fuse_nan_fills(Model& m) {
  const Uses u(m);
  const std::vector<int>&readers = u.readers, &producer = u.producer;
  std::vector<bool> drop(m.ops.size(), false);
  for (auto& d : m.ops) {
    if (d.code != OpCode::select_v2 || d.inputs.size() != 3) continue;
    const int cond = d.inputs[0], c = d.inputs[1], x = d.inputs[2];
    if (cond < 0 || c < 0 || x < 0 || producer[size_t(cond)] < 0 || readers[cond] != 1) continue;
    const OpDesc& ne = m.ops[size_t(producer[size_t(cond)])];
    const Tensor &tc = m.tensors[size_t(c)], &tx = m.tensors[size_t(x)];
    if (ne.code != OpCode::not_equal || ne.inputs.size() != 2 || ne.inputs[0] != x ||
        ne.inputs[1] != x || !tc.is_const() || tc.type != DType::f32 || tc.elems != 1 ||
        tx.type != DType::f32 || tx.quantized() ||
        m.tensors[size_t(d.outputs[0])].shape != tx.shape)
      continue;
    drop[size_t(producer[size_t(cond)])] = true;
    d.nan_fill = true;
    d.inputs = {x, c};
  }
  drop_ops(m, drop);
}

// MUL(x, LOGISTIC(x)) with no broadcast and no fused activation: SiLU (swish) as the converters
// write it (EfficientNet, YOLO, MobileViT). When the LOGISTIC's output has no other reader, the
// MUL becomes one pass (OpDesc::silu, input {x}) and the LOGISTIC is dropped: the gate is never
// written or read back. float32: x * logistic(x), the product the MUL computed, so the same
// bits. int8 (every tensor per-tensor quantized): the output is a function of the input byte
// alone, so the pass is one 256-entry table made from TFLite's own LOGISTIC and MUL arithmetic.
void fuse_silus(Model& m) {
  const Uses u(m);
  const std::vector<int>&readers = u.readers, &producer = u.producer;
  std::vector<bool> drop(m.ops.size(), false);
  for (auto& d : m.ops) {
    if (d.code != OpCode::mul || d.inputs.size() != 2 || d.act != FusedAct::none) continue;
    for (int side = 0; side < 2; ++side) {
      const int g = d.inputs[size_t(side)], x = d.inputs[size_t(1 - side)];
      if (g < 0 || x < 0 || producer[size_t(g)] < 0 || readers[size_t(g)] != 1) continue;
      const OpDesc& lg = m.ops[size_t(producer[size_t(g)])];
      if (lg.code != OpCode::logistic || lg.inputs.size() != 1 || lg.inputs[0] != x) continue;
      const Tensor &tx = m.tensors[size_t(x)], &tg = m.tensors[size_t(g)],
                   &ty = m.tensors[size_t(d.outputs[0])];
      const auto f32 = [](const Tensor& t) { return t.type == DType::f32 && !t.quantized(); };
      const auto i8 = [](const Tensor& t) {
        return t.type == DType::i8 && t.scale.size() == 1 && t.zero_point.size() == 1;
      };
      const bool types = (f32(tx) && f32(tg) && f32(ty)) || (i8(tx) && i8(tg) && i8(ty));
      if (!types || tg.shape != tx.shape || ty.shape != tx.shape) continue;
      drop[size_t(producer[size_t(g)])] = true;
      d.code = OpCode::logistic;
      d.silu = true;
      d.silu_gate = g;
      d.inputs = {x};
      break;
    }
  }
  drop_ops(m, drop);
}

// DEQUANTIZE(x) -> F -> QUANTIZE with x int8 per tensor, F one of the float elementwise
// activations (GELU, TANH, LOGISTIC, HARD_SWISH, the ReLUs, LEAKY_RELU, ELU, EXP, LOG, SQRT,
// RSQRT, NEG, ABS) and the two
// float tensors read once: how an int8 file keeps an op in float (a transformer's GELU between
// its int8 FULLY_CONNECTEDs). The output is a function of the input byte alone, so the QUANTIZE
// becomes one table lookup per value (OpDesc::float_table), the table made by running the three
// operators' own loops on the 256 bytes: the same bits, and neither float tensor is written.
void fuse_float_tables(Model& m) {
  const Uses u(m);
  const std::vector<int>&readers = u.readers, &producer = u.producer;
  std::vector<bool> drop(m.ops.size(), false);
  const auto per_tensor_i8 = [](const Tensor& t) {
    return t.type == DType::i8 && t.scale.size() == 1 && t.zero_point.size() == 1;
  };
  const auto plain_f32 = [](const Tensor& t) { return t.type == DType::f32 && !t.quantized(); };
  for (auto& q : m.ops) {
    if (q.code != OpCode::quantize || q.inputs.size() != 1 || q.inputs[0] < 0) continue;
    const int t1 = q.inputs[0];
    if (producer[size_t(t1)] < 0 || readers[size_t(t1)] != 1) continue;
    const size_t fi = size_t(producer[size_t(t1)]);
    const OpDesc& f = m.ops[fi];
    if (activation_kind(f.code, f.approximate) == ActKind::none && f.code != OpCode::leaky_relu)
      continue;
    if (f.silu || f.inputs.size() != 1 || f.inputs[0] < 0) continue;
    const int t0 = f.inputs[0];
    if (producer[size_t(t0)] < 0 || readers[size_t(t0)] != 1) continue;
    const size_t di = size_t(producer[size_t(t0)]);
    const OpDesc& d = m.ops[di];
    if (d.code != OpCode::dequantize || d.inputs.size() != 1 || d.inputs[0] < 0) continue;
    const Tensor &x = m.tensors[size_t(d.inputs[0])], &y = m.tensors[size_t(q.outputs[0])];
    const Tensor &a = m.tensors[size_t(t0)], &b = m.tensors[size_t(t1)];
    if (!per_tensor_i8(x) || !per_tensor_i8(y) || !plain_f32(a) || !plain_f32(b) ||
        a.shape != x.shape || b.shape != x.shape || y.shape != x.shape)
      continue;
    q.float_table = true;
    q.table_op = f.code;
    q.approximate = f.approximate;
    q.alpha = f.alpha;
    q.inputs = {d.inputs[0]};
    drop[fi] = drop[di] = true;
  }
  drop_ops(m, drop);
}

// DEQUANTIZE -> [MUL by a scalar constant] -> [ADD] -> SOFTMAX -> QUANTIZE, every middle
// tensor plain float32 of the input's shape and read once, no fused activation: the QUANTIZE
// runs the chain a row at a time (OpDesc::softmax_rows), so the 4 float tensors between int8
// attention's two matmuls are never written whole.
void fuse_int8_softmax(Model& m) {
  const Uses u(m);
  std::vector<bool> drop(m.ops.size(), false);
  const auto per_tensor_i8 = [](const Tensor& t) {
    return t.type == DType::i8 && t.scale.size() == 1 && t.zero_point.size() == 1;
  };
  // the producer of t when t is plain float32 of `shape`, read once, made by `code` without a
  // fused activation; else -1
  const auto single = [&](int t, OpCode code, const std::vector<int64_t>& shape) -> int {
    if (t < 0 || u.readers[size_t(t)] != 1 || u.producer[size_t(t)] < 0) return -1;
    const Tensor& v = m.tensors[size_t(t)];
    const OpDesc& d = m.ops[size_t(u.producer[size_t(t)])];
    if (v.type != DType::f32 || v.quantized() || v.shape != shape || d.code != code ||
        d.act != FusedAct::none)
      return -1;
    return u.producer[size_t(t)];
  };
  for (auto& q : m.ops) {
    if (q.code != OpCode::quantize || q.inputs.size() != 1 || q.inputs[0] < 0) continue;
    const Tensor& y = m.tensors[size_t(q.outputs[0])];
    const std::vector<int64_t>& shape = y.shape;
    if (!per_tensor_i8(y) || shape.empty()) continue;
    const int si = single(q.inputs[0], OpCode::softmax, shape);
    if (si < 0 || m.ops[size_t(si)].inputs.size() != 1) continue;
    int t = m.ops[size_t(si)].inputs[0];
    std::vector<size_t> chain = {size_t(si)};
    int bias = -1;
    if (const int ai = single(t, OpCode::add, shape); ai >= 0) {  // the mask's bias
      const OpDesc& a = m.ops[size_t(ai)];
      if (a.inputs.size() != 2 || a.inputs[0] < 0 || a.inputs[1] < 0) continue;
      // the operand made by the MUL or the DEQUANTIZE continues the chain; the other is the bias
      int pick = -1;
      for (int k = 0; k < 2 && pick < 0; ++k)
        if (single(a.inputs[size_t(k)], OpCode::mul, shape) >= 0 ||
            single(a.inputs[size_t(k)], OpCode::dequantize, shape) >= 0)
          pick = k;
      if (pick < 0) continue;
      t = a.inputs[size_t(pick)], bias = a.inputs[size_t(1 - pick)];
      const Tensor& b = m.tensors[size_t(bias)];
      if (b.type != DType::f32 || b.quantized() || b.shape.size() > shape.size()) continue;
      chain.push_back(size_t(ai));
    }
    bool scaled = false;
    float scale = 1.0f;
    if (const int mi = single(t, OpCode::mul, shape); mi >= 0) {  // 1 / sqrt(head size)
      const OpDesc& mu = m.ops[size_t(mi)];
      if (mu.inputs.size() != 2 || mu.inputs[0] < 0 || mu.inputs[1] < 0) continue;
      const int k = m.tensors[size_t(mu.inputs[1])].is_const() ? 1 : 0;
      const Tensor& c = m.tensors[size_t(mu.inputs[k])];
      if (!c.is_const() || c.type != DType::f32 || c.quantized() || c.elems != 1) continue;
      scaled = true;
      std::memcpy(&scale, c.data, sizeof scale);
      t = mu.inputs[1 - k];
      chain.push_back(size_t(mi));
    }
    const int di = single(t, OpCode::dequantize, shape);
    if (di < 0 || m.ops[size_t(di)].inputs.size() != 1 || m.ops[size_t(di)].inputs[0] < 0) continue;
    const int x = m.ops[size_t(di)].inputs[0];
    if (!per_tensor_i8(m.tensors[size_t(x)]) || m.tensors[size_t(x)].shape != shape) continue;
    chain.push_back(size_t(di));
    q.softmax_rows = true, q.softmax_scaled = scaled, q.softmax_scale = scale;
    q.beta = m.ops[size_t(si)].beta;
    q.inputs = bias >= 0 ? std::vector<int>{x, bias} : std::vector<int>{x};
    for (size_t k : chain) drop[k] = true;
  }
  drop_ops(m, drop);
}

}  // namespace

CompiledModel::CompiledModel(std::unique_ptr<Model> model, const RuntimeOptions& opts)
    : model_(std::move(model)), opts_(opts) {
  fold_pads(*model_);
  fuse_nan_fills(*model_);
  fuse_silus(*model_);
  fuse_float_tables(*model_);
  fuse_int8_softmax(*model_);
  OpOptions o;
  o.isa = opts.isa;
  o.sparse = opts.sparse;
  for (size_t k = 0; k < model_->ops.size(); ++k) {
    ops_.push_back(make_op(*model_, model_->ops[k], o));
    io_.push_back({model_->ops[k].inputs, model_->ops[k].outputs[0], {}});
  }
  for (int t : model_->outputs)
    if (!io_type(model_->tensors[t].type))
      throw UnsupportedError("output tensor '" + model_->tensors[t].name + "' is " +
                             dtype_name(model_->tensors[t].type) +
                             " (model outputs are float32, int8, int32, int64 or bool)");
  choose_layouts();
  fuse_channel_major();
  plan();
}

namespace {

// Whether a tensor's bytes differ between NHWC and NCHW: an activation [N, H, W, C] with more
// than one pixel and more than one channel.
bool layout_sensitive(const Tensor& t) {
  return !t.is_const() && t.shape.size() == 4 && t.shape[1] * t.shape[2] > 1 && t.shape[3] > 1;
}

int find_root(std::vector<size_t>& parent, size_t k) {
  while (parent[k] != k) k = parent[k] = parent[parent[k]];
  return int(k);
}

}  // namespace

void CompiledModel::choose_layouts() {
  Model& m = *model_;
  const size_t nops = ops_.size();
  std::vector<int> producer(m.tensors.size(), -1);
  for (size_t k = 0; k < nops; ++k) producer[io_[k].output] = int(k);
  std::vector<bool> capable(nops);
  for (size_t k = 0; k < nops; ++k) capable[k] = opts_.sparse && ops_[k]->chw_capable();
  for (int t : m.outputs)  // model outputs are NHWC
    if (producer[t] >= 0 && layout_sensitive(m.tensors[t])) capable[producer[t]] = false;
  // subgraphs: capable ops joined by the layout-sensitive tensors between them
  std::vector<size_t> parent(nops);
  for (size_t k = 0; k < nops; ++k) parent[k] = k;
  for (size_t k = 0; k < nops; ++k)
    for (int t : io_[k].inputs)
      if (t >= 0 && producer[t] >= 0 && capable[k] && capable[producer[t]] &&
          layout_sensitive(m.tensors[t]))
        parent[find_root(parent, k)] = size_t(find_root(parent, size_t(producer[t])));
  std::vector<bool> seeded(nops, false);
  for (size_t k = 0; k < nops; ++k)
    if (capable[k] && ops_[k]->chw_seed()) seeded[find_root(parent, k)] = true;
  for (size_t k = 0; k < nops; ++k) ops_[k]->set_chw(capable[k] && seeded[find_root(parent, k)]);
  // an NHWC op whose output only channel-major ops read writes that output as planes itself
  std::vector<std::vector<size_t>> readers(m.tensors.size());
  for (size_t k = 0; k < nops; ++k)
    for (int t : io_[k].inputs)
      if (t >= 0) readers[size_t(t)].push_back(k);
  std::vector<bool> is_output(m.tensors.size(), false);
  for (int t : m.outputs) is_output[size_t(t)] = true;
  for (size_t k = 0; k < nops; ++k) {
    const int t = io_[k].output;
    if (ops_[k]->chw() || !ops_[k]->chw_out_capable() || is_output[size_t(t)] ||
        !layout_sensitive(m.tensors[t]) || readers[size_t(t)].empty())
      continue;
    bool all = true;
    for (size_t r : readers[size_t(t)]) all = all && ops_[r]->chw();
    ops_[k]->set_chw_out(all);
  }

  // every reader in the other layout than the producer's reads one converted copy, written by a
  // layout operator placed right after the producer (model inputs: before the first op)
  std::vector<int> copy(m.tensors.size(), -1);
  struct Convert {
    std::unique_ptr<Op> op;
    int in, out;
  };
  std::vector<std::vector<Convert>> after(nops + 1);  // [0]: before op 0
  for (size_t k = 0; k < nops; ++k)
    for (int& t : io_[k].inputs) {
      if (t < 0 || !layout_sensitive(m.tensors[t])) continue;
      const bool stored_chw = producer[t] >= 0 && ops_[producer[t]]->stores_chw();
      if (stored_chw == ops_[k]->chw()) continue;
      if (copy[t] < 0) {
        Tensor c;
        c.name = m.tensors[t].name + (stored_chw ? " (NHWC)" : " (NCHW)");
        c.shape = m.tensors[t].shape;
        c.elems = m.tensors[t].elems;
        c.type = m.tensors[t].type;
        copy[t] = int(m.tensors.size());
        const auto& sh = c.shape;
        after[size_t(producer[t] + 1)].push_back(
            {make_layout_op(t, copy[t], sh[0], sh[1] * sh[2], sh[3], !stored_chw, opts_.isa), t,
             copy[t]});
        m.tensors.push_back(std::move(c));
      }
      const std::pair<int, int> sub{t, copy[t]};
      auto& subst = io_[k].subst;
      if (std::find(subst.begin(), subst.end(), sub) == subst.end()) subst.push_back(sub);
      t = copy[t];
    }
  std::vector<std::unique_ptr<Op>> ops;
  std::vector<OpIO> io;
  auto add_layout_ops = [&](size_t slot) {
    for (auto& cv : after[slot]) {
      io.push_back({{cv.in}, cv.out, {}});
      ops.push_back(std::move(cv.op));
    }
  };
  add_layout_ops(0);
  for (size_t k = 0; k < nops; ++k) {
    ops.push_back(std::move(ops_[k]));
    io.push_back(std::move(io_[k]));
    add_layout_ops(k + 1);
  }
  ops_ = std::move(ops);
  io_ = std::move(io);
}

void CompiledModel::fuse_channel_major() {
  const Model& m = *model_;
  std::vector<int> readers(m.tensors.size(), 0), reader(m.tensors.size(), -1);
  for (size_t k = 0; k < ops_.size(); ++k)
    for (int t : io_[k].inputs)
      if (t >= 0) ++readers[size_t(t)], reader[size_t(t)] = int(k);
  for (int t : m.outputs) readers[size_t(t)] += 2;  // a model output is stored whatever reads it
  std::vector<bool> drop(ops_.size(), false);
  // the residual ADD that alone reads fused block k's output, into the block (its other operand
  // becomes the block's input too, so the arena keeps it alive through the block), where that
  // operand is written before the block runs: not by an operator between the block and the ADD
  auto take_residual = [&](size_t k) {
    const int t = io_[k].output;
    if (readers[size_t(t)] != 1) return;
    const size_t r = size_t(reader[size_t(t)]);
    for (size_t j = k + 1; j < r; ++j)
      if (!drop[j] && std::find(io_[r].inputs.begin(), io_[r].inputs.end(), io_[j].output) !=
                          io_[r].inputs.end())
        return;
    if (!io_[r].subst.empty() || !fuse_residual_add(*ops_[k], *ops_[r], t)) return;
    for (int in : io_[r].inputs)
      if (in != t) io_[k].inputs.push_back(in);
    io_[k].output = io_[r].output;
    drop[r] = true;
  };
  for (size_t k = 0; k < ops_.size(); ++k) {
    const int t = io_[k].output;
    if (drop[k] || !ops_[k]->chw() || readers[size_t(t)] != 1) continue;
    const size_t r = size_t(reader[size_t(t)]);
    if (!io_[r].subst.empty()) continue;
    if (std::unique_ptr<Op> pair = fuse_depthwise_project(ops_[k], *ops_[r])) {
      ops_[k] = std::move(pair);
      io_[k].output = io_[r].output;
      drop[r] = true;
      take_residual(k);
      continue;
    }
    std::unique_ptr<Op> fused = fuse_expand_depthwise(*ops_[k], *ops_[r]);
    if (!fused) continue;
    ops_[k] = std::move(fused);
    io_[k].output = io_[r].output;
    drop[r] = true;
    // and the projection that alone reads the pair's output
    const int t2 = io_[k].output;
    if (readers[size_t(t2)] != 1) continue;
    const size_t r2 = size_t(reader[size_t(t2)]);
    if (!io_[r2].subst.empty()) continue;
    std::unique_ptr<Op> block = fuse_expand_project(ops_[k], *ops_[r2]);
    if (!block) continue;
    ops_[k] = std::move(block);
    io_[k].output = io_[r2].output;
    drop[r2] = true;
    take_residual(k);
  }
  size_t kept = 0;
  for (size_t k = 0; k < ops_.size(); ++k) {
    if (drop[k]) continue;
    if (kept != k) {  // (a vector moved onto itself is left empty)
      ops_[kept] = std::move(ops_[k]);
      io_[kept] = std::move(io_[k]);
    }
    ++kept;
  }
  ops_.resize(kept);
  io_.resize(kept);
}

void CompiledModel::plan() {
  const Model& m = *model_;
  const int64_t nops = int64_t(ops_.size());
  std::vector<int64_t> first(m.tensors.size(), -2), last(m.tensors.size(), -2);
  for (int t : m.inputs) first[t] = last[t] = -1;
  for (int64_t k = 0; k < nops; ++k) {
    for (int t : io_[k].inputs)
      if (t >= 0 && !m.tensors[t].is_const()) last[t] = std::max(last[t], k);
    const int o = io_[k].output;
    first[o] = k;
    last[o] = std::max(last[o], k);
  }
  for (int t : m.outputs)
    if (first[t] != -2) last[t] = nops;
  offset_.assign(m.tensors.size(), -1);
  scratch_.assign(ops_.size(), -1);
  std::vector<Item> items;
  for (size_t t = 0; t < m.tensors.size(); ++t)
    if (first[t] != -2 && !m.tensors[t].is_const())
      items.push_back(
          {aligned(std::max<int64_t>(m.tensors[t].bytes(), 1)), first[t], last[t], &offset_[t]});
  for (size_t k = 0; k < ops_.size(); ++k)
    if (ops_[k]->scratch_bytes() > 0)
      items.push_back({aligned(ops_[k]->scratch_bytes()), int64_t(k), int64_t(k), &scratch_[k]});
  arena_bytes_ = place(items);
}

void Context::Free::operator()(void* p) const { std::free(p); }

Context::Context(std::shared_ptr<const CompiledModel> model, int threads)
    : model_(std::move(model)), threads_(std::max(1, threads)) {
  const Model& m = model_->model();
  void* p =
      std::aligned_alloc(kAlign, size_t(aligned(std::max<int64_t>(model_->arena_bytes(), 1))));
  if (!p) throw std::bad_alloc();
  arena_.reset(static_cast<uint8_t*>(p));
  base_.assign(m.tensors.size(), nullptr);
  for (size_t t = 0; t < m.tensors.size(); ++t) {
    if (m.tensors[t].is_const())
      base_[t] = const_cast<float*>(m.tensors[t].as<float>());  // ops never write their inputs
    else if (model_->offset(int(t)) >= 0)
      base_[t] = reinterpret_cast<float*>(arena_.get() + model_->offset(int(t)));
  }
  ptr_ = home_ = base_;
  op_ns_.assign(model_->ops().size(), 0.0);
  reset_tuning();
}

void Context::reset_tuning() {
  const size_t n = model_->ops().size();
  tune_runs_ = 0;
  runs_since_tune_ = 0;
  tune_retries_ = 0;
  whole_split_ns_ = whole_one_ns_ = whole_mixed_ns_ = std::numeric_limits<double>::infinity();
  best_split_ns_.assign(n, std::numeric_limits<double>::infinity());
  best_one_ns_.assign(n, std::numeric_limits<double>::infinity());
  op_threads_.assign(n, threads_);
  any_split_ = threads_ > 1;
}

void Context::set_threads(int threads) {
  threads_ = std::max(1, threads);
  reset_tuning();
}

void Context::set_profiling(bool on) {
  profile_ = on;
  if (on) {
    std::fill(op_ns_.begin(), op_ns_.end(), 0.0);
    runs_ = 0;
  }
}

void Context::run(const float* const* inputs, float* const* outputs) {
  const Model& m = model_->model();
  // The inputs are read where the caller keeps them (ops never write their inputs), and an
  // output an operator writes goes straight into the caller's buffer: no copy in or out (for an
  // image model the input copy was about 15 us a call). An output whose buffer overlaps an input
  // or another output, or that is itself an input or a constant, is written in the arena and
  // copied after the run, as every output used to be.
  // Only the patched entries change (not a copy of every tensor's pointer per run). The guard
  // puts them back when the run ends; if an operator threw, its substitutions may still be in
  // place, so it resets every entry.
  struct Restore {
    Context& c;
    bool done = false;
    ~Restore() {
      if (done) {
        for (int t : c.patched_) c.ptr_[size_t(t)] = c.home_[size_t(t)] = c.base_[size_t(t)];
      } else {
        c.ptr_ = c.home_ = c.base_;
      }
      c.patched_.clear();
    }
  } restore{*this};
  const auto patch = [&](int t, const void* p) {
    ptr_[size_t(t)] = home_[size_t(t)] = static_cast<float*>(const_cast<void*>(p));
    patched_.push_back(t);
  };
  for (size_t i = 0; i < m.inputs.size(); ++i) patch(m.inputs[i], inputs[i]);
  const auto overlaps = [](const void* a, int64_t na, const void* b, int64_t nb) {
    const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return na > 0 && nb > 0 && pa < pb + uintptr_t(nb) && pb < pa + uintptr_t(na);
  };
  direct_.assign(m.outputs.size(), false);
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    const int t = m.outputs[i];
    const Tensor& tt = m.tensors[t];
    bool ok = !tt.is_const() && model_->offset(t) >= 0 &&
              std::find(m.inputs.begin(), m.inputs.end(), t) == m.inputs.end();
    for (size_t j = 0; ok && j < m.inputs.size(); ++j)
      ok = !overlaps(outputs[i], tt.bytes(), inputs[j], m.tensors[m.inputs[j]].bytes());
    for (size_t j = 0; ok && j < m.outputs.size(); ++j)
      ok = j == i || (m.outputs[j] != t && !overlaps(outputs[i], tt.bytes(), outputs[j],
                                                     m.tensors[m.outputs[j]].bytes()));
    if (ok) patch(t, outputs[i]);
    direct_[i] = ok;
  }
  const auto& ops = model_->ops();
  RunCtx rc;
  rc.ptr = ptr_.data();
  rc.threads = threads_;
  using Clock = std::chrono::steady_clock;
  // the pool's helpers stay awake between this run's split operators (none once tuning has put
  // every operator on one thread)
  const ParallelHold hold(threads_ > 1 && (tuning() || any_split_));
  // tuning (see tuning()): the first kTuneBoth runs give every operator the same thread count,
  // alternately split and one, so each is timed next to neighbours that work the same way; the
  // rest run the per-operator choice those times suggest
  const bool tune = tuning(), both = tune_runs_ < kTuneBoth, split = tune_runs_ % 2 == 0;
  const ParallelCounts counts0 = parallel_counts();
  const auto run0 = Clock::now();
  for (size_t k = 0; k < ops.size(); ++k) {
    const int64_t so = model_->scratch_offset(k);
    rc.scratch = so >= 0 ? arena_.get() + so : nullptr;
    rc.threads = tune && both ? (split ? threads_ : 1) : op_threads_[k];
    // a reader of a converted copy finds it under the original tensor's index for this call
    // (substituted tensors are activations, so each has its arena slot to return to)
    const auto& subst = model_->substitutions(k);
    for (const auto& sub : subst) ptr_[sub.first] = ptr_[sub.second];
    if (profile_ || tune) {
      const auto t0 = Clock::now();
      ops[k]->run(rc);
      const double ns =
          double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      if (!tune) {
        op_ns_[k] += ns;
      } else if (both) {
        double& best = split ? best_split_ns_[k] : best_one_ns_[k];
        best = std::min(best, ns);
      }
    } else {
      ops[k]->run(rc);
    }
    for (const auto& sub : subst) ptr_[sub.first] = home_[sub.first];
  }
  // a run that asked the pool for helpers, and got them for fewer than half of its calls
  const ParallelCounts counts1 = parallel_counts();
  const uint64_t calls = counts1.calls - counts0.calls, joins = counts1.joins - counts0.joins;
  const bool helpless = calls > 0 && 2 * joins < calls;
  if (tune && helpless && tune_retries_ < kTuneRetries) {
    ++tune_retries_;  // (its per-operator split times are one thread's: the min keeps others)
  } else if (tune) {
    const double ns =
        double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - run0).count());
    double& whole = both ? (split ? whole_split_ns_ : whole_one_ns_) : whole_mixed_ns_;
    whole = std::min(whole, ns);
    if (++tune_runs_ == kTuneBoth) {
      // the fastest of three runs each way (the first run also builds plans and scratch); a split
      // must win by 5 % to be kept, since timing noise alone favours either side
      for (size_t k = 0; k < ops.size(); ++k)
        op_threads_[k] = best_split_ns_[k] < 0.95 * best_one_ns_[k] ? threads_ : 1;
    } else if (tune_runs_ == kTuneRuns) {
      // Mixed, an operator reads what a neighbour wrote on the other core (or leaves it its
      // output), which the per-operator times did not see: the whole run decides between the
      // mixed choice, every operator split and every operator on one thread. Splitting must win
      // by 5 % over one thread (a lucky fast run must not commit a context to a slower choice),
      // and the mixed choice by 3 % over all split: measured within that, all split ran 4-6 %
      // faster afterwards (MobileNetV2 dense on 2 threads, 6.3-6.5 ms against 6.7-6.9), each
      // operator reading its input where the one before wrote it.
      const double bar = 0.95 * whole_one_ns_;
      if (whole_split_ns_ < bar && whole_split_ns_ <= 1.03 * whole_mixed_ns_)
        std::fill(op_threads_.begin(), op_threads_.end(), threads_);
      else if (!(whole_mixed_ns_ < bar))
        std::fill(op_threads_.begin(), op_threads_.end(), 1);
      any_split_ = std::find(op_threads_.begin(), op_threads_.end(), threads_) != op_threads_.end();
    }
  }
  if (profile_ && !tune) ++runs_;
  // the host may place the threads differently later (or another process may take a core or
  // give it back): the choice is made again every kRetuneEvery runs
  if (threads_ > 1 && !tune && ++runs_since_tune_ >= kRetuneEvery) reset_tuning();
  for (size_t i = 0; i < m.outputs.size(); ++i)
    if (!direct_[i])
      std::memcpy(outputs[i], ptr_[m.outputs[i]], size_t(m.tensors[m.outputs[i]].bytes()));
  restore.done = true;  // nothing keeps the caller's pointers after the run
}

}  // namespace rt
}  // namespace ep
