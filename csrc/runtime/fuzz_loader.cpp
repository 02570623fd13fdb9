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
    std::vector<std::vector<float>> in, out;
    std::vector<const float*> ip;
    std::vector<float*> op;
    for (int t : m.inputs) in.emplace_back(size_t(m.tensors[t].elems), 0.25f);
    for (int t : m.outputs) out.emplace_back(size_t(m.tensors[t].elems));
    for (auto& v : in) ip.push_back(v.data());
    for (auto& v : out) op.push_back(v.data());
    ctx.run(ip.data(), op.data());
  } catch (const ModelError&) {
  } catch (const UnsupportedError&) {
  }
  return 0;
}
