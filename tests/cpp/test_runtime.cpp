// The model runtime through the C API: LiteRT's outputs on the fixtures of tests/data/runtime
// (written by tests/python/make_runtime_fixtures.py) on every path this CPU runs (natively, and
// neon / neon-dotprod under qemu), the same bits for 1, 2 and 4 threads, and hostile files
// (truncated, bit-flipped, hand-made) that return a status and a message instead of crashing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "edgeprune/edgeprune.h"
#include "runtime/executor.h"
#include "test_util.h"

namespace {

const char* kFixtures[] = {"dense",    "sparse",         "blocks4x1", "conv_variants",
                           "encoder",  "encoder_sparse", "upsample",  "read_after_output",
                           "winograd", "more_ops",       "expand_dw", "dw_project"};

// Under qemu (the aarch64 ctest) every path is still checked against LiteRT, but thread counts and
// hostile variants are fewer: emulated threads that spin while they wait make each split call
// slow on a loaded host.
bool emulated() {
  const char* e = std::getenv("EDGEPRUNE_TEST_EMULATED");
  return e && *e == '1';
}
std::string fixture(const std::string& name, const char* ext) {
  return std::string(EP_TEST_DATA_DIR) + "/runtime/" + name + ext;
}

struct Loaded {
  ep_model* model = nullptr;
  ~Loaded() { ep_model_destroy(model); }
};

// Runs the model on `in` with `threads`; returns all outputs concatenated.
std::vector<float> run(const ep_model* model, const std::vector<float>& in, int threads) {
  ep_context* ctx = nullptr;
  EXPECT_EQ(ep_context_create(model, threads, &ctx), EP_OK) << ep_last_error();
  std::vector<std::vector<float>> outs(ep_model_output_count(model));
  std::vector<void*> optr;
  int64_t total = 0;
  for (int32_t i = 0; i < ep_model_output_count(model); ++i) {
    ep_tensor_info info;
    EXPECT_EQ(ep_model_output_info(model, i, &info), EP_OK);
    outs[i].resize(size_t(info.elements));
    optr.push_back(outs[i].data());
    total += info.elements;
  }
  const void* iptr[1] = {in.data()};
  EXPECT_EQ(ep_context_run(ctx, iptr, 1, optr.data(), int32_t(optr.size())), EP_OK)
      << ep_last_error();
  ep_context_destroy(ctx);
  std::vector<float> all;
  all.reserve(size_t(total));
  for (auto& o : outs) all.insert(all.end(), o.begin(), o.end());
  return all;
}

TEST(Runtime, MatchesLiteRtOnEveryPathWithTheSameBitsOverThreads) {
  for (const char* name : kFixtures) {
    const std::string file = ep::test::read_file(fixture(name, ".tflite"));
    ASSERT_FALSE(file.empty()) << "missing fixture " << fixture(name, ".tflite");
    const auto in = ep::test::floats(ep::test::read_file(fixture(name, ".in")));
    const auto want = ep::test::floats(ep::test::read_file(fixture(name, ".out")));
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    for (ep::Isa isa : ep::test::runnable_isas()) {
      ep_model_options o;
      ep_model_options_init(&o);
      o.isa = ep::isa_name(isa);
      Loaded m;
      ASSERT_EQ(ep_model_load_memory(file.data(), file.size(), &o, &m.model), EP_OK)
          << name << " " << o.isa << ": " << ep_last_error();
      EXPECT_STREQ(ep_model_isa(m.model), o.isa);
      ASSERT_EQ(ep_model_input_count(m.model), 1);
      ep_tensor_info info;
      ASSERT_EQ(ep_model_input_info(m.model, 0, &info), EP_OK);
      ASSERT_EQ(info.elements, int64_t(in.size()));
      EXPECT_EQ(info.type, EP_FLOAT32);
      const auto got = run(m.model, in, 1);
      ASSERT_EQ(got.size(), want.size()) << name;
      float err = 0;
      for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - want[i]));
      EXPECT_LT(err, 1e-4f * scale) << name << " on " << o.isa;
      // (under qemu: the sparse fixture, whose kernels split rows and columns over threads, the
      // Winograd one, whose tile rows split over threads, and the fused blocks, split by bands of
      // pixels cut on the SpMM's strips)
      const std::string n = name;
      if (emulated() && n != "sparse" && n != "winograd" && n != "expand_dw" && n != "dw_project")
        continue;
      for (int threads : emulated() ? std::vector<int>{2} : std::vector<int>{2, 4})
        EXPECT_EQ(run(m.model, in, threads), got) << name << " " << o.isa << " " << threads;
    }
  }
}

// With several threads a context's first runs time every operator split and on one thread, and
// later runs use the faster per operator (executor.h, Context::tuning): every run, tuning or
// tuned, gives the one-thread bits.
TEST(Runtime, TuningRunsAndTheChoiceAfterThemGiveTheSameBits) {
  const std::string file = ep::test::read_file(fixture("sparse", ".tflite"));
  ASSERT_FALSE(file.empty());
  const auto in = ep::test::floats(ep::test::read_file(fixture("sparse", ".in")));
  Loaded m;
  ASSERT_EQ(ep_model_load_memory(file.data(), file.size(), nullptr, &m.model), EP_OK)
      << ep_last_error();
  ASSERT_EQ(ep_model_output_count(m.model), 1);
  const auto want = run(m.model, in, 1);
  ep_context* ctx = nullptr;
  ASSERT_EQ(ep_context_create(m.model, 2, &ctx), EP_OK) << ep_last_error();
  std::vector<float> out(want.size());
  void* optr[1] = {out.data()};
  const void* iptr[1] = {in.data()};
  for (int r = 0; r < ep::rt::Context::kTuneRuns + 3; ++r) {
    ASSERT_EQ(ep_context_run(ctx, iptr, 1, optr, 1), EP_OK) << ep_last_error();
    EXPECT_EQ(out, want) << "run " << r;
  }
  ep_context_destroy(ctx);
}

// The runtime reads inputs where the caller keeps them and writes outputs straight into the
// caller's buffers, except where a buffer overlaps another: an output placed over its own input
// (in place) or over another output must give the values of separate buffers.
TEST(Runtime, CallerBuffersThatOverlapGiveTheSameOutputs) {
  for (const char* name : {"dense", "conv_variants", "upsample", "read_after_output"}) {
    const std::string file = ep::test::read_file(fixture(name, ".tflite"));
    const auto in = ep::test::floats(ep::test::read_file(fixture(name, ".in")));
    Loaded m;
    ASSERT_EQ(ep_model_load_memory(file.data(), file.size(), nullptr, &m.model), EP_OK)
        << ep_last_error();
    const auto want = run(m.model, in, 1);
    const int32_t nout = ep_model_output_count(m.model);
    std::vector<int64_t> sizes;
    int64_t total = 0;
    for (int32_t i = 0; i < nout; ++i) {
      ep_tensor_info info;
      ASSERT_EQ(ep_model_output_info(m.model, i, &info), EP_OK);
      sizes.push_back(info.elements);
      total += info.elements;
    }
    ep_context* ctx = nullptr;
    ASSERT_EQ(ep_context_create(m.model, 1, &ctx), EP_OK);
    // every output starts at the input's first float, in one buffer large enough for either
    std::vector<float> buf(std::max<size_t>(in.size(), size_t(total)) + 16);
    for (int round = 0; round < 2; ++round) {
      std::copy(in.begin(), in.end(), buf.begin());
      const void* iptr[1] = {buf.data()};
      std::vector<void*> optr(size_t(nout), buf.data());
      // the outputs overlap each other too, so all but one go through the arena; compare the
      // last one written (outputs are copied in order, so the last copy wins)
      ASSERT_EQ(ep_context_run(ctx, iptr, 1, optr.data(), nout), EP_OK) << ep_last_error();
      const int64_t off = total - sizes.back();
      for (int64_t j = 0; j < sizes.back(); ++j)
        ASSERT_EQ(buf[size_t(j)], want[size_t(off + j)]) << name << " element " << j;
    }
    ep_context_destroy(ctx);
  }
}

TEST(Runtime, ProfilerNamesEveryOperator) {
  const std::string file = ep::test::read_file(fixture("sparse", ".tflite"));
  Loaded m;
  ASSERT_EQ(ep_model_load_memory(file.data(), file.size(), nullptr, &m.model), EP_OK);
  ep_context* ctx = nullptr;
  ASSERT_EQ(ep_context_create(m.model, 1, &ctx), EP_OK);
  ASSERT_EQ(ep_context_set_profiling(ctx, 1), EP_OK);
  const auto in = ep::test::floats(ep::test::read_file(fixture("sparse", ".in")));
  std::vector<float> out(12);
  const void* ip[1] = {in.data()};
  void* op[1] = {out.data()};
  ASSERT_EQ(ep_context_run(ctx, ip, 1, op, 1), EP_OK);
  int sparse = 0;
  for (int32_t k = 0; k < ep_context_op_count(ctx); ++k) {
    const char *kind = nullptr, *label = nullptr;
    double ms = -1;
    ASSERT_EQ(ep_context_op_profile(ctx, k, &kind, &label, &ms), EP_OK);
    EXPECT_GT(std::strlen(kind), 2u);
    EXPECT_GE(ms, 0.0);
    sparse += std::strstr(label, "sparse") != nullptr;
  }
  EXPECT_GE(sparse, 2);  // the 1x1 conv and the FC run the sparse kernels
  EXPECT_EQ(ep_context_run(ctx, ip, 2, op, 1), EP_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ep_last_error()).find("1 inputs"), std::string::npos);
  ep_context_destroy(ctx);
}

// A file either loads and then runs, or fails with a status and a one-line message.
void load_or_refuse(const std::string& bytes, int* refused) {
  ep_model* m = nullptr;
  const ep_status s = ep_model_load_memory(bytes.data(), bytes.size(), nullptr, &m);
  if (s != EP_OK) {
    EXPECT_TRUE(s == EP_INVALID_MODEL || s == EP_UNSUPPORTED) << s << " " << ep_last_error();
    EXPECT_GT(std::strlen(ep_last_error()), 10u);
    EXPECT_EQ(m, nullptr);
    ++*refused;
    return;
  }
  ep_tensor_info info;
  ASSERT_EQ(ep_model_input_info(m, 0, &info), EP_OK);
  std::vector<float> in(size_t(info.elements), 0.5f);
  if (ep_model_input_count(m) == 1) run(m, in, 1);
  ep_model_destroy(m);
}

TEST(Runtime, TruncatedAndBitFlippedFilesNeverCrash) {
  const std::string file = ep::test::read_file(fixture("conv_variants", ".tflite"));
  int refused = 0, truncated = 0;
  const size_t step = emulated() ? 397 : 61;
  for (size_t cut = 0; cut < file.size(); cut += step, ++truncated)
    load_or_refuse(file.substr(0, cut), &refused);
  EXPECT_EQ(refused, truncated);  // the verifier rejects every truncated file
  std::mt19937 rng(3);
  for (int i = 0, n = emulated() ? 60 : 400; i < n; ++i) {
    std::string b = file;
    for (int f = 0; f < 1 + i % 3; ++f) b[rng() % b.size()] ^= char(1 << (rng() % 8));
    load_or_refuse(b, &refused);
  }
}

// Inputs the loader fuzzer once failed on (tests/data/fuzz/README.md): under the sanitizer build
// they must load or be refused, nothing else.
TEST(Runtime, FuzzerRegressionsLoadOrAreRefused) {
  for (const char* name :
       {"misaligned-int64-zero-points.tflite", "logistic-tiny-output-scale.tflite"}) {
    const std::string file = ep::test::read_file(std::string(EP_TEST_DATA_DIR) + "/fuzz/" + name);
    ASSERT_FALSE(file.empty()) << name;
    int refused = 0;
    load_or_refuse(file, &refused);
  }
}

// The seeds for code the fixtures do not reach (tests/data/fuzz/README.md): every transformer
// operator, and an int8 BERT (int8 GATHER, int8 FULLY_CONNECTED on 3-D inputs) load and run on
// zero inputs of each input's type, natively, under the sanitizers and under qemu.
TEST(Runtime, TransformerSeedsLoadAndRun) {
  for (const char* name : {"transformer-ops.tflite", "bert-tiny.tflite", "bert-tiny-int8.tflite",
                           "resize-ops.tflite", "resize-int8.tflite"}) {
    const std::string file = ep::test::read_file(std::string(EP_TEST_DATA_DIR) + "/fuzz/" + name);
    ASSERT_FALSE(file.empty()) << name;
    ep_model* m = nullptr;
    ASSERT_EQ(ep_model_load_memory(file.data(), file.size(), nullptr, &m), EP_OK)
        << name << ": " << ep_last_error();
    auto bytes = [](const ep_tensor_info& t) {
      const int size = t.type == EP_INT64 ? 8 : (t.type == EP_BOOL || t.type == EP_INT8) ? 1 : 4;
      return size_t(t.elements) * size_t(size);
    };
    std::vector<std::vector<char>> ins(size_t(ep_model_input_count(m))),
        outs(size_t(ep_model_output_count(m)));
    std::vector<const void*> in_ptrs;
    std::vector<void*> out_ptrs;
    for (size_t i = 0; i < ins.size(); ++i) {
      ep_tensor_info t;
      ASSERT_EQ(ep_model_input_info(m, int32_t(i), &t), EP_OK);
      ins[i].assign(bytes(t), 0);
      in_ptrs.push_back(ins[i].data());
    }
    for (size_t i = 0; i < outs.size(); ++i) {
      ep_tensor_info t;
      ASSERT_EQ(ep_model_output_info(m, int32_t(i), &t), EP_OK);
      outs[i].assign(bytes(t), 0);
      out_ptrs.push_back(outs[i].data());
    }
    ep_context* ctx = nullptr;
    ASSERT_EQ(ep_context_create(m, 2, &ctx), EP_OK) << ep_last_error();
    EXPECT_EQ(ep_context_run(ctx, in_ptrs.data(), int32_t(in_ptrs.size()), out_ptrs.data(),
                             int32_t(out_ptrs.size())),
              EP_OK)
        << name << ": " << ep_last_error();
    ep_context_destroy(ctx);
    ep_model_destroy(m);
  }
}

TEST(Runtime, HandMadeFilesGetMessages) {
  ep_model* m = nullptr;
  EXPECT_EQ(ep_model_load_memory("TFL3", 4, nullptr, &m), EP_INVALID_MODEL);
  EXPECT_NE(std::string(ep_last_error()).find("not a .tflite file"), std::string::npos);
  std::string junk(256, '\xff');
  junk.replace(4, 4, "TFL3");
  EXPECT_EQ(ep_model_load_memory(junk.data(), junk.size(), nullptr, &m), EP_INVALID_MODEL);
  EXPECT_NE(std::string(ep_last_error()).find("verifier"), std::string::npos);
  EXPECT_EQ(ep_model_load_file("/nonexistent/model.tflite", nullptr, &m), EP_INVALID_MODEL);
  EXPECT_NE(std::string(ep_last_error()).find("cannot open"), std::string::npos);
  ep_model_options o;
  ep_model_options_init(&o);
  o.isa = "sse9";
  const std::string file = ep::test::read_file(fixture("dense", ".tflite"));
  EXPECT_EQ(ep_model_load_memory(file.data(), file.size(), &o, &m), EP_UNSUPPORTED);
  EXPECT_NE(std::string(ep_last_error()).find("sse9"), std::string::npos);
  EXPECT_EQ(m, nullptr);
}

}  // namespace
