// The int8 runtime through the C API, natively and under qemu (aarch64): on the int8 fixtures of
// tests/data/runtime (edgeprune's own model.int8.tflite files, dense and with 90 % sparse 1x1
// convolutions; tests/python/make_runtime_fixtures.py) the outputs equal those of LiteRT's
// builtin reference kernels bit for bit on every path, for 1 and 2 threads. The integer
// arithmetic is the same on every path, so this also checks it compiles to the same bits on ARM.
// Also: TFLite's fixed-point multiplier against values worked out by hand.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "edgeprune/edgeprune.h"
#include "runtime/ops/ops_int8.h"
#include "test_util.h"

namespace {

std::vector<float> run_once(const ep_model* model, const std::vector<float>& in, int threads) {
  ep_context* ctx = nullptr;
  EXPECT_EQ(ep_context_create(model, threads, &ctx), EP_OK) << ep_last_error();
  ep_tensor_info info;
  EXPECT_EQ(ep_model_output_info(model, 0, &info), EP_OK);
  std::vector<float> out(size_t(info.elements));
  const void* iptr[1] = {in.data()};
  void* optr[1] = {out.data()};
  EXPECT_EQ(ep_context_run(ctx, iptr, 1, optr, 1), EP_OK) << ep_last_error();
  ep_context_destroy(ctx);
  return out;
}

TEST(RuntimeInt8, EqualsLiteRtReferenceBitForBitOnEveryPath) {
  for (const char* name : {"int8", "int8_sparse"}) {
    const std::string dir = std::string(EP_TEST_DATA_DIR) + "/runtime/" + name;
    const std::string file = ep::test::read_file(dir + ".tflite");
    ASSERT_FALSE(file.empty()) << "missing fixture " << dir << ".tflite";
    const auto in = ep::test::floats(ep::test::read_file(dir + ".in"));
    const auto want = ep::test::floats(ep::test::read_file(dir + ".out"));
    for (ep::Isa isa : ep::test::runnable_isas()) {
      ep_model_options o;
      ep_model_options_init(&o);
      o.isa = ep::isa_name(isa);
      ep_model* model = nullptr;
      ASSERT_EQ(ep_model_load_memory(file.data(), file.size(), &o, &model), EP_OK)
          << name << " " << o.isa << ": " << ep_last_error();
      for (int threads : {1, 2}) {
        const auto got = run_once(model, in, threads);
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < got.size(); ++i)
          EXPECT_EQ(got[i], want[i])
              << name << " " << o.isa << " threads " << threads << " [" << i << "]";
      }
      ep_model_destroy(model);
    }
  }
}

TEST(RuntimeInt8, FixedPointMultiplierMatchesTfliteRounding) {
  int32_t q = 0;
  int shift = 0;
  ep::rt::quantize_multiplier(0.5, &q, &shift);  // 0.5 = 2^30 / 2^31, exponent 0
  EXPECT_EQ(q, 1 << 30);
  EXPECT_EQ(shift, 0);
  ep::rt::quantize_multiplier(3.0, &q, &shift);  // 0.75 * 2^2
  EXPECT_EQ(q, 3 << 29);
  EXPECT_EQ(shift, 2);
  ep::rt::quantize_multiplier(0.0, &q, &shift);
  EXPECT_EQ(q, 0);
  ep::rt::quantize_multiplier(1e-12, &q, &shift);  // below 2^-31: flushed to zero
  EXPECT_EQ(q, 0);
  EXPECT_EQ(shift, 0);
  // x * 0.5: the doubling high multiply rounds half up (101 -> 51, -101 -> -50)
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(100, 1 << 30, 0), 50);
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(101, 1 << 30, 0), 51);
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(-101, 1 << 30, 0), -50);
  // x * 0.5 * 2^-2 = x / 8: the power-of-two division rounds half away from zero
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(20, 1 << 30, -2), 3);    // 2.5 -> 3
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(-20, 1 << 30, -2), -3);  // -2.5 -> -3
  // 19 / 8 = 2.375 gives 3: TFLite rounds twice (19 / 2 = 9.5 -> 10, then 10 / 4 = 2.5 -> 3)
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(19, 1 << 30, -2), 3);
  // a positive exponent shifts left first: 7 * 0.75 * 4 = 21
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(7, 3 << 29, 2), 21);
  // the one saturating case of the doubling high multiply
  EXPECT_EQ(ep::rt::multiply_by_quantized_multiplier(INT32_MIN, INT32_MIN, 0), INT32_MAX);
}

}  // namespace
