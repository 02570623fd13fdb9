// CompiledModel / Context (executor.h): operator creation, the arena plan, and the run loop.
//
// Consumes: a validated Model. Produces: outputs, per-op timings.
#include "runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

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

CompiledModel::CompiledModel(std::unique_ptr<Model> model, const RuntimeOptions& opts)
    : model_(std::move(model)), opts_(opts) {
  OpOptions o;
  o.isa = opts.isa;
  o.sparse = opts.sparse;
  for (size_t k = 0; k < model_->ops.size(); ++k)
    ops_.push_back(make_op(*model_, model_->ops[k], int(k), o));
  for (int t : model_->outputs)
    if (model_->tensors[t].type != DType::f32)
      throw UnsupportedError("output tensor '" + model_->tensors[t].name + "' is " +
                             dtype_name(model_->tensors[t].type) + ", not float32");
  plan();
}

void CompiledModel::plan() {
  const Model& m = *model_;
  const int64_t nops = int64_t(m.ops.size());
  std::vector<int64_t> first(m.tensors.size(), -2), last(m.tensors.size(), -2);
  for (int t : m.inputs) first[t] = last[t] = -1;
  for (int64_t k = 0; k < nops; ++k) {
    for (int t : m.ops[k].inputs)
      if (t >= 0 && !m.tensors[t].is_const()) last[t] = std::max(last[t], k);
    const int o = m.ops[k].outputs[0];
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
  ptr_.assign(m.tensors.size(), nullptr);
  for (size_t t = 0; t < m.tensors.size(); ++t) {
    if (m.tensors[t].is_const())
      ptr_[t] = const_cast<float*>(m.tensors[t].as<float>());  // ops never write their inputs
    else if (model_->offset(int(t)) >= 0)
      ptr_[t] = reinterpret_cast<float*>(arena_.get() + model_->offset(int(t)));
  }
  op_ns_.assign(model_->ops().size(), 0.0);
}

void Context::set_threads(int threads) { threads_ = std::max(1, threads); }

void Context::set_profiling(bool on) {
  profile_ = on;
  if (on) {
    std::fill(op_ns_.begin(), op_ns_.end(), 0.0);
    runs_ = 0;
  }
}

void Context::run(const float* const* inputs, float* const* outputs) {
  const Model& m = model_->model();
  for (size_t i = 0; i < m.inputs.size(); ++i) {
    const Tensor& t = m.tensors[m.inputs[i]];
    std::memcpy(ptr_[m.inputs[i]], inputs[i], size_t(t.bytes()));
  }
  const auto& ops = model_->ops();
  RunCtx rc;
  rc.ptr = ptr_.data();
  rc.threads = threads_;
  using Clock = std::chrono::steady_clock;
  for (size_t k = 0; k < ops.size(); ++k) {
    const int64_t so = model_->scratch_offset(k);
    rc.scratch = so >= 0 ? arena_.get() + so : nullptr;
    if (profile_) {
      const auto t0 = Clock::now();
      ops[k]->run(rc);
      op_ns_[k] +=
          double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    } else {
      ops[k]->run(rc);
    }
  }
  if (profile_) ++runs_;
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    const Tensor& t = m.tensors[m.outputs[i]];
    std::memcpy(outputs[i], ptr_[m.outputs[i]], size_t(t.bytes()));
  }
}

}  // namespace rt
}  // namespace ep
