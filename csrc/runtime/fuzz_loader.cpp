// libFuzzer target for the .tflite loader: any byte string must either load (and then plan and,
// when small enough, run) or be refused with ModelError / UnsupportedError. A crash, a sanitizer
// report, a leak or an unexpected exception type is a finding. Built by `make fuzz` with clang's
// -fsanitize=fuzzer,address,undefined, seeded with the files of tests/data/runtime.
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "runtime/executor.h"

namespace {
// Keep each input's work small: larger graphs are valid but only cost the fuzzer time.
constexpr int64_t kMaxArena = 64 << 20;
constexpr double kMaxMacs = 2e7;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ep::rt;
  try {
    auto model = load_model(data, size);
    RuntimeOptions o;
    o.isa = ep::selected_isa();
    auto compiled = std::make_shared<const CompiledModel>(std::move(model), o);
    double macs = 0;
    for (const auto& op : compiled->ops()) macs += op->macs;
    if (compiled->arena_bytes() > kMaxArena || macs > kMaxMacs) return 0;
    Context ctx(compiled, 1);
    const Model& m = compiled->model();
    // inputs in their own types and sizes: float inputs 0.25, integer and bool inputs 0 (a
    // valid token id); float storage keeps every buffer aligned for its type
    std::vector<std::vector<float>> in, out;
    std::vector<const float*> ip;
    std::vector<float*> op;
    for (int t : m.inputs) {
      const Tensor& x = m.tensors[t];
      in.emplace_back(size_t((x.bytes() + 7) / 4), x.type == DType::f32 ? 0.25f : 0.0f);
    }
    for (int t : m.outputs) out.emplace_back(size_t((m.tensors[t].bytes() + 7) / 4));
    for (auto& v : in) ip.push_back(v.data());
    for (auto& v : out) op.push_back(v.data());
    ctx.run(ip.data(), op.data());
  } catch (const ModelError&) {
  } catch (const UnsupportedError&) {
  } catch (const InputError&) {  // a run refused its input (a constant index out of range)
  }
  return 0;
}
