// The int8 runtime through the C API, natively and under qemu (aarch64): on the int8 fixtures of
// tests/data/runtime (edgeprune's own model.int8.tflite files, dense and with 90 % sparse 1x1
// convolutions; an int8 BATCH_MATMUL of two activations; an int8 TRANSPOSE_CONV; written by
// tests/python/make_runtime_fixtures.py) the outputs equal those of LiteRT's builtin reference
// kernels bit for bit on every path, for 1 and 2 threads; the fused int8 softmax equals its
// unfused chain. The integer arithmetic is the same on
// every path, so this also checks it compiles to the same bits on ARM. Also: TFLite's fixed-point
// multiplier against values worked out by hand, and the vector loops (the AVX2 GEMM's float
// requantization, its 1x4-block kernel, depthwise rows and QUANTIZE / DEQUANTIZE; the AVX-512
// VNNI GEMM, sparse kernel, depthwise rows, ADD / MUL and QUANTIZE) against the scalar arithmetic
// on random and edge values, where the CPU has the instructions.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "edgeprune/edgeprune.h"
#include "dispatch/isa.h"
#include "kernels/kernels.h"
#include "runtime/ops/ops_int8.h"
#include "runtime/ops/ops_int8_isa.h"
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

// The first output of a model of one input and any number of outputs
std::vector<float> first_output(const ep_model* model, const std::vector<float>& in, int threads) {
  ep_context* ctx = nullptr;
  EXPECT_EQ(ep_context_create(model, threads, &ctx), EP_OK) << ep_last_error();
  const int32_t n = ep_model_output_count(model);
  std::vector<std::vector<float>> outs(static_cast<size_t>(n));
  std::vector<void*> optr;
  for (int32_t i = 0; i < n; ++i) {
    ep_tensor_info info;
    EXPECT_EQ(ep_model_output_info(model, i, &info), EP_OK);
    outs[size_t(i)].resize(size_t(info.elements));
    optr.push_back(outs[size_t(i)].data());
  }
  const void* iptr[1] = {in.data()};
  EXPECT_EQ(ep_context_run(ctx, iptr, 1, optr.data(), n), EP_OK) << ep_last_error();
  ep_context_destroy(ctx);
  return outs[0];
}

TEST(RuntimeInt8, EqualsLiteRtReferenceBitForBitOnEveryPath) {
  for (const char* name :
       {"int8", "int8_sparse", "int8_sparse_wide", "int8_attention", "int8_upsample"}) {
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

// The planner's fused int8 softmax (DEQUANTIZE -> MUL -> ADD -> SOFTMAX -> QUANTIZE a block of
// rows at a time) gives the bits of the same chain unfused (the fixture with the SOFTMAX's output
// exposed as a second model output, which keeps the chain apart) on every path; the float
// softmax differs between paths and from LiteRT's, so against LiteRT's reference kernels the
// probabilities are within one output step (0.0029, the fixture's scale).
TEST(RuntimeInt8, FusedSoftmaxEqualsTheUnfusedChainOnEveryPath) {
  const std::string dir = std::string(EP_TEST_DATA_DIR) + "/runtime/";
  const std::string fused = ep::test::read_file(dir + "int8_softmax.tflite");
  const std::string plain = ep::test::read_file(dir + "int8_softmax_unfused.tflite");
  ASSERT_FALSE(fused.empty() || plain.empty()) << "missing int8_softmax fixtures";
  const auto in = ep::test::floats(ep::test::read_file(dir + "int8_softmax.in"));
  const auto lite = ep::test::floats(ep::test::read_file(dir + "int8_softmax.out"));
  for (ep::Isa isa : ep::test::runnable_isas()) {
    ep_model_options o;
    ep_model_options_init(&o);
    o.isa = ep::isa_name(isa);
    ep_model *a = nullptr, *b = nullptr;
    ASSERT_EQ(ep_model_load_memory(fused.data(), fused.size(), &o, &a), EP_OK) << ep_last_error();
    ASSERT_EQ(ep_model_load_memory(plain.data(), plain.size(), &o, &b), EP_OK) << ep_last_error();
    for (int threads : {1, 2}) {
      const auto got = first_output(a, in, threads), want = first_output(b, in, threads);
      ASSERT_EQ(got.size(), lite.size());
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i], want[i]) << o.isa << " threads " << threads << " [" << i << "]";
        EXPECT_LE(std::fabs(got[i] - lite[i]), 1.001f * 0.0029f) << o.isa << " [" << i << "]";
      }
    }
    ep_model_destroy(a);
    ep_model_destroy(b);
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

#if defined(EP_HAVE_AVX2)
// Multipliers for the vector kernels' tests: power-of-two ones, whose products land exactly on the
// roundings' ties, among others, with right shifts of 2 to 12 (the float form) or, when `integer`,
// a left shift (the integer steps only).
void random_requant(std::mt19937& rng, int64_t m, bool integer, std::vector<int32_t>* mult,
                    std::vector<int32_t>* shift) {
  mult->assign(size_t((m + 15) / 16 * 16), 0);
  shift->assign(mult->size(), 0);
  for (int64_t j = 0; j < m; ++j) {
    const double frac = j % 2 ? (rng() % 1000) / 1000.0 : 0.0;
    const int exponent = integer ? 1 : -2 - int(rng() % 11);
    ep::rt::quantize_multiplier(std::ldexp(1.0 + frac, exponent), &(*mult)[size_t(j)],
                                &(*shift)[size_t(j)]);
  }
}

// TFLite's requantization of one sum, clamped to [lo, hi]
int32_t requantized(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi) {
  const int32_t v = ep::rt::multiply_by_quantized_multiplier(acc, mult, shift) + zp;
  return std::min(hi, std::max(lo, v));
}

// The output of a sparse kernel, n rows at stride ldy filled with 77 before it ran, against the
// scalar steps: row r, channel j is requantized(bias[j] + sum over t < k of (x[r, t] + x_offset)
// * w[j, t]), and the row's tail past m is not written
struct SparseCase {
  int64_t n, m, k, ldx, ldy;
  const std::vector<int8_t>&x, &w;
  int32_t x_offset;
  const std::vector<int32_t>&bias, &mult, &shift;
};
void expect_sparse_rows(const SparseCase& c, const std::vector<int8_t>& y, int32_t zp, int32_t lo,
                        int32_t hi, const std::string& what) {
  for (int64_t r = 0; r < c.n; ++r) {
    for (int64_t j = 0; j < c.m; ++j) {
      int32_t acc = c.bias[size_t(j)];
      for (int64_t t = 0; t < c.k; ++t)
        acc +=
            (int32_t(c.x[size_t(r * c.ldx + t)]) + c.x_offset) * int32_t(c.w[size_t(j * c.k + t)]);
      ASSERT_EQ(int32_t(y[size_t(r * c.ldy + j)]),
                requantized(acc, c.mult[size_t(j)], c.shift[size_t(j)], zp, lo, hi))
          << c.n << "x" << c.m << "x" << c.k << " row " << r << " channel " << j << what
          << " range " << lo << ".." << hi;
    }
    for (int64_t j = c.m; j < c.ldy; ++j)
      ASSERT_EQ(int32_t(y[size_t(r * c.ldy + j)]), 77) << c.n << "x" << c.m << "x" << c.k;
  }
}

// The depthwise rows (3x3, 5x5 and a 2x4 kernel of the generic path; strides 1 and 2; padding;
// channel counts that leave partial blocks of 16) with the float requantization and the integer
// steps, against the scalar loop.
void check_depthwise_rows(void (*rows)(const ep::rt::QDwRowArgs&), bool vnni) {
  std::mt19937 rng(17);
  struct Case {
    int64_t h, w, c, kh, kw, s, pad, dil = 1;
  };
  // the last has many outputs, so values within the float form's error of a rounding boundary
  // occur (a kernel without the fall-back to the integer steps fails there)
  for (const Case& cs :
       {Case{9, 11, 16, 3, 3, 1, 1}, Case{10, 13, 40, 3, 3, 2, 1}, Case{8, 9, 7, 5, 5, 1, 2},
        Case{7, 12, 33, 2, 4, 1, 0},
        // narrow planes (at stride 1 copied into a padded tile first)
        Case{7, 7, 40, 3, 3, 1, 1}, Case{9, 8, 24, 5, 5, 2, 2}, Case{14, 14, 20, 3, 3, 2, 1},
        Case{5, 3, 16, 5, 5, 1, 2},
        // dilation, a kernel wider than high, fewer channels than a vector, row bands of one
        Case{11, 12, 24, 3, 3, 1, 2, 2}, Case{9, 10, 13, 1, 3, 2, 1}, Case{6, 6, 5, 3, 3, 1, 1},
        Case{60, 60, 64, 3, 3, 1, 1}}) {
    const int64_t oh = (cs.h + 2 * cs.pad - (cs.kh - 1) * cs.dil - 1) / cs.s + 1;
    const int64_t ow = (cs.w + 2 * cs.pad - (cs.kw - 1) * cs.dil - 1) / cs.s + 1;
    std::vector<int8_t> x(static_cast<size_t>(cs.h * cs.w * cs.c)),
        wt(static_cast<size_t>(cs.kh * cs.kw * cs.c));
    for (auto& v : x) v = int8_t(int(rng() % 256) - 128);
    for (auto& v : wt) v = int8_t(int(rng() % 255) - 127);
    std::vector<int32_t> wide(wt.size()), bias(size_t((cs.c + 15) / 16 * 16), 0);
    for (size_t i = 0; i < wt.size(); ++i) wide[i] = int32_t(uint16_t(wt[i]));
    for (int64_t ch = 0; ch < cs.c; ++ch) bias[size_t(ch)] = int32_t(rng() % 4001) - 2000;
    const int32_t zin = int32_t(rng() % 256) - 128;
    for (const bool integer : {false, true}) {
      std::vector<int32_t> mult, shift;
      random_requant(rng, cs.c, integer, &mult, &shift);
      const int32_t zp = int32_t(rng() % 256) - 128, lo = std::max(-128, zp - 100),
                    hi = std::min(127, zp + 90);
      std::vector<float> scale(mult.size()), pos(scale), neg(scale);
      const bool fl = ep::rt::float_requant(mult.data(), shift.data(), cs.c, int64_t(mult.size()),
                                            zp, scale.data(), pos.data(), neg.data());
      ASSERT_EQ(fl, !integer);
      const ep::rt::FloatRequant fr{scale.data(), pos.data(), neg.data()};
      std::vector<int8_t> y(static_cast<size_t>(oh * ow * cs.c), 77);
      ep::rt::QDwRowArgs a;
      a.x = x.data(), a.h = cs.h, a.w = cs.w, a.c = cs.c, a.kh = cs.kh, a.kw = cs.kw;
      a.sh = cs.s, a.sw = cs.s, a.dh = cs.dil, a.dw = cs.dil, a.pt = cs.pad, a.pl = cs.pad;
      a.ow = ow, a.wt = wide.data(), a.bias = bias.data(), a.mult = mult.data();
      a.shift = shift.data(), a.fr = fl ? &fr : nullptr, a.zp_in = zin, a.zp_out = zp;
      a.lo = lo, a.hi = hi, a.vnni = vnni;
      // the whole image at once, then (the planner's bands) one output row per call
      a.oy = 0, a.rows = oh, a.y = y.data();
      rows(a);
      std::vector<int8_t> banded(y.size(), 55);
      for (int64_t oy = 0; oy < oh; ++oy) {
        a.oy = oy, a.rows = 1, a.y = banded.data() + oy * ow * cs.c;
        rows(a);
      }
      ASSERT_EQ(banded, y) << "row bands differ, " << cs.kh << "x" << cs.kw << "/" << cs.s;
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t ch = 0; ch < cs.c; ++ch) {
            int32_t acc = bias[size_t(ch)];
            for (int64_t ky = 0; ky < cs.kh; ++ky)
              for (int64_t kx = 0; kx < cs.kw; ++kx) {
                const int64_t iy = oy * cs.s - cs.pad + ky * cs.dil;
                const int64_t ix = ox * cs.s - cs.pad + kx * cs.dil;
                if (iy < 0 || iy >= cs.h || ix < 0 || ix >= cs.w) continue;
                acc += (int32_t(x[size_t((iy * cs.w + ix) * cs.c + ch)]) - zin) *
                       int32_t(wt[size_t((ky * cs.kw + kx) * cs.c + ch)]);
              }
            ASSERT_EQ(int32_t(y[size_t((oy * ow + ox) * cs.c + ch)]),
                      requantized(acc, mult[size_t(ch)], shift[size_t(ch)], zp, lo, hi))
                << cs.kh << "x" << cs.kw << "/" << cs.s << " c " << cs.c << " at " << oy << ","
                << ox << "," << ch << (fl ? " float" : " integer");
          }
    }
  }
}

// A vector QUANTIZE against TFLite's AffineQuantize on ties, huge values, infinities, NaN, a
// denormal and random values, for several scales and zero points (lengths leave a partial vector)
void check_quantize(void (*quantize)(const float*, int64_t, float, int32_t, int8_t*)) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {0.0f,
                          -0.0f,
                          0.5f,
                          -0.5f,
                          1.5f,
                          -1.5f,
                          2.5f,
                          -2.5f,
                          0.49999997f,
                          -0.49999997f,
                          126.5f,
                          -127.5f,
                          1e30f,
                          -1e30f,
                          inf,
                          -inf,
                          std::numeric_limits<float>::quiet_NaN(),
                          8388609.0f,
                          3e-39f};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-300.0f, 300.0f);
  for (int i = 0; i < 4000; ++i) x.push_back(i % 2 ? u(rng) : std::round(u(rng) * 2) / 2);
  // the 64 floats on either side of every multiple of 0.5 in [-200, 200] (where the rounding
  // turns), and every 4099th bit pattern (all magnitudes, NaNs and subnormals among them)
  for (int h = -400; h <= 400; ++h) {
    float lo = float(h) / 2, hi = lo;
    for (int i = 0; i < 64; ++i) {
      lo = std::nextafter(lo, -inf), hi = std::nextafter(hi, inf);
      x.push_back(lo), x.push_back(hi);
    }
  }
  for (uint64_t b = 0; b < (uint64_t(1) << 32); b += 4099) {
    const uint32_t bits = uint32_t(b);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    x.push_back(f);
  }
  const std::vector<float> common = x;
  for (float scale : {1.0f, 0.5f, 0.0235294f, 3.7f, 0.0078125f, 0.1f, 1e-30f, 1e30f, 3e-39f}) {
    // and for this scale the 16 floats on either side of every (k + 1/2) * scale with |k| < 600,
    // where x / scale turns (a path may take x * (1 / scale) away from those)
    x = common;
    for (int h = -1199; h <= 1199; h += 2) {
      float lo = float(h) / 2 * scale, hi = lo;
      x.push_back(lo);
      for (int i = 0; i < 16; ++i) {
        lo = std::nextafter(lo, -inf), hi = std::nextafter(hi, inf);
        x.push_back(lo), x.push_back(hi);
      }
    }
    for (int32_t zp : {-128, -3, 0, 17}) {
      std::vector<int8_t> y(x.size());
      quantize(x.data(), int64_t(x.size()), scale, zp, y.data());
      for (size_t i = 0; i < x.size(); ++i) {
        // TFLite's AffineQuantize: round(x / scale) half away from zero, plus the zero point
        const float q = std::round(x[i] / scale);
        const int32_t want = std::isnan(q) ? zp
                             : q > 1e9f    ? 127
                             : q < -1e9f   ? -128
                                           : std::min(127, std::max(-128, int32_t(q) + zp));
        ASSERT_EQ(int32_t(y[i]), want) << x[i] << " / " << scale << " + " << zp;
      }
    }
  }
}

// The AVX2 GEMM (no VNNI) with the float form of the requantization against TFLite's integer
// steps: sums over the whole int32 range (one channel of weight 1, the bias drives the sum; the
// float form's products pass 2^31 there and must still saturate), then real sums of 8 products
// with power-of-two multipliers, whose products land on the roundings' ties, with and without an
// activation range, row counts that leave partial tiles of 6 and channel counts partial panels.
TEST(RuntimeInt8, Avx2GemmFloatRequantizationKeepsTfliteBits) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(13);
  // rows at a stride of ldx (0: k)
  const auto run = [&](const std::vector<int8_t>& x, int64_t n, int64_t k,
                       const std::vector<int8_t>& w, int64_t m, const std::vector<int32_t>& bias,
                       const std::vector<int32_t>& mult, const std::vector<int32_t>& shift,
                       int32_t zp, int32_t lo, int32_t hi, int64_t ldx = 0) {
    const int64_t mp = (m + 15) / 16 * 16;
    std::vector<int8_t> packed(size_t(ep::packed_gemm_s8_size(m, k, 16, 2)));
    ep::pack_gemm_s8(w.data(), m, k, 16, 2, packed.data());
    std::vector<float> scale(static_cast<size_t>(mp)), pos(scale), neg(scale);
    EXPECT_TRUE(ep::rt::float_requant(mult.data(), shift.data(), m, mp, zp, scale.data(),
                                      pos.data(), neg.data()));
    const ep::rt::FloatRequant fr{scale.data(), pos.data(), neg.data()};
    std::vector<int8_t> y(static_cast<size_t>(n * m), 77);
    ep::rt::QGemmAvx2Args a;
    a.x = x.data(), a.ldx = ldx ? ldx : k, a.n = n, a.k = k, a.m = m, a.wp = packed.data();
    a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data(), a.fr = &fr;
    a.zp_out = zp, a.lo = lo, a.hi = hi, a.y = y.data(), a.ldy = m;
    ep::rt::avx2::qgemm_rows(a);
    return y;
  };
  for (int trial = 0; trial < 500; ++trial) {  // the whole range: x * 1 + bias
    const int64_t m = 16;
    std::vector<int32_t> bias(static_cast<size_t>(m)), mult(bias), shift(bias);
    for (size_t j = 0; j < size_t(m); ++j) {
      const int bits = int(rng() % 32);
      bias[j] = int32_t(int64_t(rng() % (uint64_t(1) << bits)) - (int64_t(1) << bits) / 2);
      const double frac = j % 3 ? (rng() % 1000) / 1000.0 : 0.0;
      ep::rt::quantize_multiplier(std::ldexp(1.0 + frac, -2 - int(rng() % 22)), &mult[j],
                                  &shift[j]);
    }
    const int32_t zp = int32_t(rng() % 256) - 128;
    const std::vector<int8_t> x = {int8_t(int(rng() % 256) - 128)}, w(size_t(m), 1);
    const std::vector<int8_t> y = run(x, 1, 1, w, m, bias, mult, shift, zp, -128, 127);
    for (size_t j = 0; j < size_t(m); ++j) {
      const int32_t acc = int32_t(uint32_t(int32_t(x[0])) + uint32_t(bias[j]));
      ASSERT_EQ(int32_t(y[j]), requantized(acc, mult[j], shift[j], zp, -128, 127))
          << "sum " << acc << " multiplier " << mult[j] << " shift " << shift[j];
    }
  }
  // rows n (partial strips of 6), channels m (a last panel of 8 or fewer: half panels), depth k
  // (below, at and past 16, odd: the rows' pairs are made 16 bytes at a time, the rest alone) and
  // the row stride
  struct Case {
    int64_t n, m, k, ldx;
  };
  for (const Case& cs :
       {Case{512, 16, 8, 8}, Case{97, 40, 8, 8}, Case{5, 9, 8, 8}, Case{13, 24, 144, 144},
        Case{7, 8, 33, 40}, Case{19, 24, 17, 17}, Case{6, 56, 16, 16}, Case{11, 3, 48, 53},
        Case{1, 96, 31, 31}, Case{9, 16, 15, 15}}) {
    const int64_t n = cs.n, m = cs.m, k = cs.k;
    std::vector<int8_t> w(static_cast<size_t>(m * k)), x(static_cast<size_t>(n * cs.ldx));
    for (auto& v : w) v = int8_t(int(rng() % 17) - 8);
    for (auto& v : x) v = int8_t(int(rng() % 256) - 128);
    std::vector<int32_t> bias(size_t((m + 15) / 16 * 16), 0), mult, shift;
    for (int64_t j = 0; j < m; ++j) bias[size_t(j)] = int32_t(rng() % 4001) - 2000;
    random_requant(rng, m, false, &mult, &shift);
    const int32_t zp = int32_t(rng() % 256) - 128;
    for (const auto& [lo, hi] : {std::pair{-128, 127}, std::pair{zp, std::min(127, zp + 60)}}) {
      const std::vector<int8_t> y = run(x, n, k, w, m, bias, mult, shift, zp, lo, hi, cs.ldx);
      int64_t inside = 0;  // results the clamp leaves alone, where the rounding shows
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < m; ++j) {
          int32_t acc = bias[size_t(j)];
          for (int64_t t = 0; t < k; ++t)
            acc += int32_t(x[size_t(r * cs.ldx + t)]) * int32_t(w[size_t(j * k + t)]);
          const int32_t want = requantized(acc, mult[size_t(j)], shift[size_t(j)], zp, lo, hi);
          inside += want > lo && want < hi;
          ASSERT_EQ(int32_t(y[size_t(r * m + j)]), want)
              << "n " << n << " m " << m << " row " << r << " channel " << j << " sum " << acc;
        }
      EXPECT_GT(inside, n * m / 4);
    }
  }
}

// The AVX2 1x4-block kernel and its int16-pair re-layout against the scalar sums and
// requantization: row counts of 1 to 32 that leave partial vectors of 8 and partial transposes
// of 16, channel counts that leave partial blocks of 16, K not a multiple of 4 or of 16, rows at
// a stride, the float requantization and the integer steps, with and without an activation range.
TEST(RuntimeInt8, Avx2SparseKernelEqualsTheScalarLoop) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(19);
  std::vector<std::array<int64_t, 3>> shapes = {{1, 16, 8},    {17, 5, 20}, {32, 40, 3},
                                                {24, 37, 100}, {8, 16, 64}, {29, 70, 130},
                                                {32, 96, 16},  {9, 33, 48}};
  // and many outputs, so values within the float form's error of a rounding boundary occur
  for (int i = 0; i < 24; ++i) shapes.push_back({32, 64, 16});
  for (const auto& [n, m, k] : shapes) {
    std::vector<int8_t> w(static_cast<size_t>(m * k), 0);
    for (int64_t j = 0; j < m; ++j)
      for (int64_t q = 0; q < (k + 3) / 4; ++q)
        if (rng() % 3 == 0)  // a third of the blocks nonzero, some with zeros inside
          for (int64_t t = 4 * q; t < std::min(k, 4 * q + 4); ++t)
            w[size_t(j * k + t)] = rng() % 5 ? int8_t(int(rng() % 255) - 127) : int8_t(0);
    std::vector<int32_t> nnz, quad, pairs, bias(size_t((m + 15) / 16 * 16), 0);
    ep::rt::pack_blocks_avx2(w.data(), m, k, &nnz, &quad, &pairs);
    const int64_t ldx = k + 5;  // rows with a gap after them, as a strided view
    std::vector<int8_t> x(static_cast<size_t>(n * ldx));
    for (auto& v : x) v = int8_t(int(rng() % 256) - 128);
    const int64_t ldn = (n + 7) / 8 * 8, np = (k + 3) / 4 * 2;
    std::vector<int32_t> xp_store(static_cast<size_t>(np * ldn + 8), -1);
    int32_t* xp =
        xp_store.data() + (8 - (reinterpret_cast<uintptr_t>(xp_store.data()) % 32) / 4) % 8;
    ep::rt::avx2::pair_rows(x.data(), ldx, n, k, ldn, xp);
    for (int64_t r = 0; r < ldn; ++r)
      for (int64_t t = 0; t < 2 * np; ++t) {
        const int16_t want = r < n && t < k ? int16_t(x[size_t(r * ldx + t)]) : int16_t(0);
        ASSERT_EQ(int16_t(uint32_t(xp[(t / 2) * ldn + r]) >> (16 * (t % 2))), want)
            << "pairs of row " << r << " value " << t;
      }
    for (int64_t j = 0; j < m; ++j) bias[size_t(j)] = int32_t(rng() % 4001) - 2000;
    for (const bool integer : {false, true}) {
      std::vector<int32_t> mult, shift;
      random_requant(rng, m, integer, &mult, &shift);
      const int32_t zp = int32_t(rng() % 256) - 128;
      std::vector<float> scale(mult.size()), pos(scale), neg(scale);
      const bool fl = ep::rt::float_requant(mult.data(), shift.data(), m, int64_t(mult.size()), zp,
                                            scale.data(), pos.data(), neg.data());
      ASSERT_EQ(fl, !integer);
      const ep::rt::FloatRequant fr{scale.data(), pos.data(), neg.data()};
      for (const auto& [lo, hi] : {std::pair{-128, 127}, std::pair{zp, std::min(127, zp + 60)}}) {
        const int64_t ldy = m + 3;
        std::vector<int8_t> y(static_cast<size_t>(n * ldy), 77);
        ep::rt::QSpmmAvx2Args a;
        a.xp = xp, a.n = n, a.ldn = ldn, a.m = m;
        a.nnz = nnz.data(), a.quad = quad.data(), a.w = pairs.data();
        a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data();
        a.fr = fl ? &fr : nullptr;
        a.zp_out = zp, a.lo = lo, a.hi = hi, a.y = y.data(), a.ldy = ldy;
        ep::rt::avx2::qspmm_rows(a);
        const SparseCase sc{n, m, k, ldx, ldy, x, w, 0, bias, mult, shift};
        ASSERT_NO_FATAL_FAILURE(expect_sparse_rows(sc, y, zp, lo, hi, fl ? " float" : " integer"));
      }
    }
  }
}

TEST(RuntimeInt8, Avx2DepthwiseRowsEqualTheScalarLoop) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  check_depthwise_rows(ep::rt::avx2::qdw_rows, false);
}

TEST(RuntimeInt8, Avx2QuantizeEqualsTfliteRounding) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  check_quantize(ep::rt::avx2::quantize_f32);
}

// BATCH_MATMUL's B [k, n] packed without a transpose equals pack_gemm_s8 of B^T, and its column
// sums are exact: whole and partial panels of 16 columns, odd k, rows at a stride, and enough rows
// of -128 that the int16 partial sums must be moved to int32 in time.
TEST(RuntimeInt8, Avx2PackedColumnsEqualTheTransposedPack) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(29);
  struct Case {
    int64_t k, n, ldb;
    bool extreme;
  };
  for (const Case& cs :
       {Case{32, 128, 128, false}, Case{128, 32, 32, false}, Case{7, 21, 24, false},
        Case{1, 16, 16, false}, Case{300, 40, 45, true}, Case{129, 16, 16, true}}) {
    std::vector<int8_t> b(size_t(cs.k * cs.ldb));
    for (auto& v : b) v = cs.extreme ? int8_t(-128) : int8_t(int(rng() % 256) - 128);
    std::vector<int8_t> wt(size_t(cs.n * cs.k));
    for (int64_t kk = 0; kk < cs.k; ++kk)
      for (int64_t j = 0; j < cs.n; ++j) wt[size_t(j * cs.k + kk)] = b[size_t(kk * cs.ldb + j)];
    const size_t size = size_t(ep::packed_gemm_s8_size(cs.n, cs.k, 16, 2));
    std::vector<int8_t> want(size, 1), got(size, 2);
    ep::pack_gemm_s8(wt.data(), cs.n, cs.k, 16, 2, want.data());
    std::vector<int32_t> sums(size_t((cs.n + 15) / 16 * 16), 77);
    ep::rt::avx2::pack_kn_s8(b.data(), cs.ldb, cs.k, cs.n, got.data(), sums.data());
    EXPECT_EQ(got, want) << "k " << cs.k << " n " << cs.n;
    for (int64_t j = 0; j < cs.n; ++j) {
      int32_t sum = 0;
      for (int64_t kk = 0; kk < cs.k; ++kk) sum += b[size_t(kk * cs.ldb + j)];
      ASSERT_EQ(sums[size_t(j)], sum) << "k " << cs.k << " n " << cs.n << " column " << j;
    }
  }
}

// The 256-byte table lookup (int8 GELU, HARD_SWISH, LOGISTIC and fused float chains) through
// byte shuffles: every input value under random tables, lengths around whole vectors of 32
TEST(RuntimeInt8, Avx2TableLookupEqualsTheTable) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(31);
  for (int trial = 0; trial < 8; ++trial) {
    std::array<int8_t, 256> lut;
    for (auto& v : lut) v = int8_t(int(rng() % 256) - 128);
    for (int64_t n : {0, 1, 31, 32, 33, 256, 1000}) {
      std::vector<int8_t> x(static_cast<size_t>(n)), y(static_cast<size_t>(n), 0);
      for (int64_t i = 0; i < n; ++i) x[size_t(i)] = int8_t(n == 256 ? i : int(rng() % 256));
      ep::rt::avx2::lut_s8(x.data(), n, lut.data(), y.data());
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(y[size_t(i)], lut[uint8_t(x[size_t(i)])]) << "n " << n << " at " << i;
    }
  }
}

// DEQUANTIZE: scale * (x - zero point) for every int8 value, and a tail past whole vectors
TEST(RuntimeInt8, Avx2DequantizeEqualsTheScalarProduct) {
  if (!ep::cpu_features().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  std::vector<int8_t> x(261);
  for (size_t i = 0; i < x.size(); ++i) x[i] = int8_t(i * 7);
  for (const float scale : {0.0235294f, 1.0f, 3.7f})
    for (const int32_t zp : {-128, 0, 17}) {
      std::vector<float> y(x.size(), -1.0f);
      ep::rt::avx2::dequantize_s8(x.data(), int64_t(x.size()), scale, zp, y.data());
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(y[i], scale * float(int32_t(x[i]) - zp))
            << int(x[i]) << " " << scale << " " << zp;
    }
}
#endif

#if defined(EP_HAVE_AVX512)
// One input channel (K = 1, padded to 4) with weight 1 and a bias: the GEMM's int32 sum is
// x + 128 + bias, so random biases drive the requantization over the whole int32 range.
TEST(RuntimeInt8, Avx512RequantizationEqualsTheScalarArithmetic) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(7);
  const int64_t m = 16;
  std::vector<int8_t> w(size_t(m), 1), packed(static_cast<size_t>(m * 4));
  ep::rt::pack_qgemm_vnni(w.data(), m, 1, 4, packed.data());
  for (int trial = 0; trial < 4000; ++trial) {
    std::vector<int32_t> bias(static_cast<size_t>(m)), mult(static_cast<size_t>(m)),
        shift(static_cast<size_t>(m));
    for (int64_t j = 0; j < m; ++j) {
      // sums from tiny to 2^30, multipliers from 2^-40 to 8 (left shifts only on small sums)
      const int bits = int(rng() % 31);
      bias[size_t(j)] = int32_t(int64_t(rng() % (uint32_t(1) << bits)) - (int64_t(1) << bits) / 2);
      ep::rt::quantize_multiplier(std::ldexp(1.0 + (rng() % 1000) / 1000.0, -int(rng() % 41)),
                                  &mult[size_t(j)], &shift[size_t(j)]);
      if (j % 4 == 0) {
        bias[size_t(j)] = int32_t(rng() % 512) - 256;
        ep::rt::quantize_multiplier(1.0 + (rng() % 7000) / 1000.0, &mult[size_t(j)],
                                    &shift[size_t(j)]);
      }
    }
    const uint8_t x[4] = {uint8_t(rng() % 256), 0, 0, 0};
    const int32_t zp = int32_t(rng() % 256) - 128;
    std::vector<int8_t> y(static_cast<size_t>(m));
    ep::rt::QGemmVnniArgs a;
    a.x = x, a.n = 1, a.kp = 4, a.m = m, a.w = packed.data();
    a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data();
    a.zp_out = zp, a.y = y.data(), a.ldy = m;
    ep::rt::avx512::qgemm_vnni(a);
    for (int64_t j = 0; j < m; ++j) {
      const int32_t acc = int32_t(x[0]) + bias[size_t(j)];
      const int32_t v =
          ep::rt::multiply_by_quantized_multiplier(acc, mult[size_t(j)], shift[size_t(j)]) + zp;
      ASSERT_EQ(int32_t(y[size_t(j)]), std::min(127, std::max(-128, v)))
          << "sum " << acc << " multiplier " << mult[size_t(j)] << " shift " << shift[size_t(j)];
    }
  }
}

// The same with the float form of the requantization: every right shift it takes (1 to 22) and
// sums over the whole int32 range, whose products pass 2^31 in the float form (the cap keeps them
// saturating to 127).
TEST(RuntimeInt8, Avx512FloatRequantizationOverTheWholeRange) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(9);
  const int64_t m = 16;
  std::vector<int8_t> w(size_t(m), 1), packed(static_cast<size_t>(m * 4));
  ep::rt::pack_qgemm_vnni(w.data(), m, 1, 4, packed.data());
  for (int trial = 0; trial < 4000; ++trial) {
    std::vector<int32_t> bias(static_cast<size_t>(m)), mult(bias), shift(bias);
    for (int64_t j = 0; j < m; ++j) {
      const int bits = int(rng() % 32);
      bias[size_t(j)] = int32_t(int64_t(rng() % (uint64_t(1) << bits)) - (int64_t(1) << bits) / 2);
      const double frac = j % 3 ? (rng() % 1000) / 1000.0 : 0.0;
      ep::rt::quantize_multiplier(std::ldexp(1.0 + frac, -2 - int(rng() % 22)), &mult[size_t(j)],
                                  &shift[size_t(j)]);
    }
    const int32_t zp = int32_t(rng() % 256) - 128;
    std::vector<float> scale(static_cast<size_t>(m)), pos(scale), neg(scale);
    ASSERT_TRUE(ep::rt::float_requant(mult.data(), shift.data(), m, m, zp, scale.data(), pos.data(),
                                      neg.data()));
    const ep::rt::FloatRequant fr{scale.data(), pos.data(), neg.data()};
    const uint8_t x[4] = {uint8_t(rng() % 256), 0, 0, 0};
    std::vector<int8_t> y(static_cast<size_t>(m));
    ep::rt::QGemmVnniArgs a;
    a.x = x, a.n = 1, a.kp = 4, a.m = m, a.w = packed.data();
    a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data(), a.fr = &fr;
    a.zp_out = zp, a.y = y.data(), a.ldy = m;
    ep::rt::avx512::qgemm_vnni(a);
    for (int64_t j = 0; j < m; ++j) {
      const int32_t acc = int32_t(uint32_t(x[0]) + uint32_t(bias[size_t(j)]));
      const int32_t v =
          ep::rt::multiply_by_quantized_multiplier(acc, mult[size_t(j)], shift[size_t(j)]) + zp;
      ASSERT_EQ(int32_t(y[size_t(j)]), std::min(127, std::max(-128, v)))
          << "sum " << acc << " multiplier " << mult[size_t(j)] << " shift " << shift[size_t(j)];
    }
  }
}

// The AVX-512 GEMM on shapes that exercise every tile: row counts that leave tiles of 8, 4 and 1
// rows, channel counts that leave 1, 2 and 3 blocks of 16 after the groups of 4 and a partial last
// block, K not a multiple of 4, against the scalar sums and requantization.
TEST(RuntimeInt8, Avx512GemmTilesEqualTheScalarLoop) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(5);
  for (const auto& [n, m, k] : std::vector<std::array<int64_t, 3>>{{7, 72, 20},
                                                                   {5, 40, 3},
                                                                   {9, 24, 33},
                                                                   {1, 100, 64},
                                                                   {13, 16, 8},
                                                                   {12, 32, 16},
                                                                   {4, 130, 27},
                                                                   {11, 112, 12},
                                                                   {16, 200, 40}}) {
    const int64_t kp = (k + 3) / 4 * 4, mp = (m + 15) / 16 * 16;
    std::vector<int8_t> w(static_cast<size_t>(m * k)), packed(static_cast<size_t>(mp * kp), 0);
    for (auto& v : w) v = int8_t(int(rng() % 255) - 127);
    ep::rt::pack_qgemm_vnni(w.data(), m, k, kp, packed.data());
    std::vector<uint8_t> xu(static_cast<size_t>(n * kp), 0);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < k; ++j) xu[size_t(r * kp + j)] = uint8_t(rng() % 256);
    std::vector<int32_t> bias(size_t(mp), 0), mult(size_t(mp), 0), shift(size_t(mp), 0);
    for (size_t j = 0; j < size_t(m); ++j) {
      bias[j] = int32_t(rng() % 20001) - 10000;
      ep::rt::quantize_multiplier(std::ldexp(1.0 + (rng() % 1000) / 1000.0, -6 - int(rng() % 8)),
                                  &mult[j], &shift[j]);
    }
    const int32_t zp = int32_t(rng() % 256) - 128, lo = zp, hi = 120;
    // the same rows as int8 (x - 128), which the kernel makes uint8 itself when K is a
    // multiple of 4
    std::vector<uint8_t> xs(xu.size());
    for (size_t i = 0; i < xu.size(); ++i) xs[i] = xu[i] ^ 0x80u;
    for (const int64_t pad : {3, 0}) {  // rows with a tail that must stay untouched, and without
      for (const bool signed_x : {false, true}) {
        if (signed_x && k != kp) continue;
        const int64_t ldy = m + pad;
        std::vector<int8_t> y(static_cast<size_t>(n * ldy), 77);
        ep::rt::QGemmVnniArgs a;
        a.x = signed_x ? xs.data() : xu.data(), a.signed_x = signed_x;
        a.n = n, a.kp = kp, a.m = m, a.w = packed.data();
        a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data();
        a.zp_out = zp, a.lo = lo, a.hi = hi, a.y = y.data(), a.ldy = ldy;
        ep::rt::avx512::qgemm_vnni(a);
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t j = 0; j < m; ++j) {
            int32_t acc = bias[size_t(j)];
            for (int64_t t = 0; t < k; ++t)
              acc += int32_t(xu[size_t(r * kp + t)]) * int32_t(w[size_t(j * k + t)]);
            const int32_t v =
                ep::rt::multiply_by_quantized_multiplier(acc, mult[size_t(j)], shift[size_t(j)]) +
                zp;
            ASSERT_EQ(int32_t(y[size_t(r * ldy + j)]), std::min(hi, std::max(lo, v)))
                << n << "x" << m << "x" << k << " row " << r << " channel " << j << " ldy " << ldy
                << (signed_x ? " int8 rows" : "");
          }
          for (int64_t j = m; j < ldy; ++j)  // the row's tail past m is not written
            ASSERT_EQ(int32_t(y[size_t(r * ldy + j)]), 77) << n << "x" << m << "x" << k;
        }
      }
    }
  }
}

// The float form of the requantization (FloatRequant) against TFLite's integer steps, with
// power-of-two multipliers among the others: their products land exactly on the roundings' ties,
// which only the fall-back to the integer steps gets right.
TEST(RuntimeInt8, Avx512GemmFloatRequantizationKeepsTfliteBits) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(11);
  for (const int64_t m : {16, 32, 56}) {  // tiles of 1, 2, and 4 + 1 blocks
    const int64_t n = 512, k = 8, kp = 8, mp = (m + 15) / 16 * 16;
    std::vector<int8_t> w(static_cast<size_t>(m * k)), packed(static_cast<size_t>(mp * kp), 0);
    for (auto& v : w) v = int8_t(int(rng() % 17) - 8);
    ep::rt::pack_qgemm_vnni(w.data(), m, k, kp, packed.data());
    std::vector<uint8_t> xu(static_cast<size_t>(n * kp));
    for (auto& v : xu) v = uint8_t(rng() % 256);
    std::vector<int32_t> bias(size_t(mp), 0), mult(size_t(mp), 0), shift(size_t(mp), 0);
    for (size_t j = 0; j < size_t(m); ++j) {
      bias[j] = int32_t(rng() % 4001) - 2000;
      const double frac = j % 2 ? (rng() % 1000) / 1000.0 : 0.0;
      ep::rt::quantize_multiplier(std::ldexp(1.0 + frac, -2 - int(j % 11)), &mult[j], &shift[j]);
    }
    const int32_t zp = int32_t(rng() % 256) - 128;
    std::vector<float> scale(static_cast<size_t>(mp)), pos(scale), neg(scale);
    ASSERT_TRUE(ep::rt::float_requant(mult.data(), shift.data(), m, mp, zp, scale.data(),
                                      pos.data(), neg.data()));
    const ep::rt::FloatRequant fr{scale.data(), pos.data(), neg.data()};
    // no activation, and a ReLU6-like range (the clamps apply after the packs)
    for (const auto& [lo, hi] : {std::pair{-128, 127}, std::pair{zp, std::min(127, zp + 60)}}) {
      std::vector<int8_t> y(static_cast<size_t>(n * m), 77);
      ep::rt::QGemmVnniArgs a;
      a.x = xu.data(), a.n = n, a.kp = kp, a.m = m, a.w = packed.data();
      a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data(), a.fr = &fr;
      a.zp_out = zp, a.lo = lo, a.hi = hi, a.y = y.data(), a.ldy = m;
      ep::rt::avx512::qgemm_vnni(a);
      int64_t inside = 0;  // results the clamp leaves alone, where the rounding shows
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < m; ++j) {
          int32_t acc = bias[size_t(j)];
          for (int64_t t = 0; t < k; ++t)
            acc += int32_t(xu[size_t(r * kp + t)]) * int32_t(w[size_t(j * k + t)]);
          const int32_t v =
              ep::rt::multiply_by_quantized_multiplier(acc, mult[size_t(j)], shift[size_t(j)]) + zp;
          inside += v > lo && v < hi;
          ASSERT_EQ(int32_t(y[size_t(r * m + j)]), std::min(hi, std::max(lo, v)))
              << "m " << m << " row " << r << " channel " << j << " sum " << acc << " range " << lo
              << ".." << hi;
        }
      EXPECT_GT(inside, n * m / 4);
    }
  }
  // a left shift or a right shift past 22 keeps the integer steps
  int32_t mult[16] = {1 << 30}, shift[16] = {1};
  float scale[16], pos[16], neg[16];
  EXPECT_FALSE(ep::rt::float_requant(mult, shift, 1, 16, 0, scale, pos, neg));
  shift[0] = -23;
  EXPECT_FALSE(ep::rt::float_requant(mult, shift, 1, 16, 0, scale, pos, neg));
  shift[0] = -22;
  EXPECT_TRUE(ep::rt::float_requant(mult, shift, 1, 16, 0, scale, pos, neg));
}

// The sparse kernel (1x4 blocks, rows 16 per vector, channels transposed into rows 16 at a time)
// and its quad re-layout against the scalar sums and requantization: row counts of 1 to 64 that
// leave partial row vectors, channel counts that leave partial blocks of 16, K not a multiple of 4
// or of 64, the float requantization and the integer steps, with and without an activation range.
TEST(RuntimeInt8, Avx512SparseKernelEqualsTheScalarLoop) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(13);
  std::vector<std::array<int64_t, 3>> shapes = {{1, 16, 8},    {17, 5, 20},  {33, 40, 3},
                                                {64, 37, 100}, {48, 16, 64}, {29, 70, 130}};
  // and many outputs, so values within the float form's error of a rounding boundary occur (a
  // kernel without the fall-back to the integer steps fails here)
  for (int i = 0; i < 24; ++i) shapes.push_back({64, 64, 16});
  for (const auto& [n, m, k] : shapes) {
    std::vector<int8_t> w(static_cast<size_t>(m * k), 0);
    for (int64_t j = 0; j < m; ++j)
      for (int64_t q = 0; q < (k + 3) / 4; ++q)
        if (rng() % 3 == 0)  // a third of the blocks nonzero
          for (int64_t t = 4 * q; t < std::min(k, 4 * q + 4); ++t)
            w[size_t(j * k + t)] = int8_t(int(rng() % 255) - 127);
    // the block stream as the operator builds it
    std::vector<int32_t> nnz, quad, block, bias(size_t((m + 15) / 16 * 16), 0);
    for (int64_t j = 0; j < m; ++j) {
      int32_t count = 0;
      for (int64_t q = 0; q < (k + 3) / 4; ++q) {
        uint32_t packed = 0;
        for (int64_t t = 0; t < 4 && 4 * q + t < k; ++t)
          packed |= uint32_t(uint8_t(w[size_t(j * k + 4 * q + t)])) << (8 * t);
        if (!packed) continue;
        quad.push_back(int32_t(q)), block.push_back(int32_t(packed)), ++count;
      }
      nnz.push_back(count);
    }
    const int64_t ldx = k + 5;  // rows with a gap after them, as a strided view
    std::vector<int8_t> x(static_cast<size_t>(n * ldx));
    for (auto& v : x) v = int8_t(int(rng() % 256) - 128);
    const int64_t ldn = (n + 15) / 16 * 16, kp = (k + 3) / 4 * 4;
    std::vector<uint32_t> xq(static_cast<size_t>(kp / 4 * ldn), 0);
    ep::rt::avx512::quad_rows(x.data(), ldx, n, k, ldn, xq.data());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t t = 0; t < kp; ++t) {
        const uint8_t want = t < k ? uint8_t(x[size_t(r * ldx + t)]) ^ 0x80u : 0x80u;
        ASSERT_EQ((xq[size_t(t / 4 * ldn + r)] >> (8 * (t % 4))) & 0xFF, want)
            << "quads of row " << r << " byte " << t;
      }
    for (int64_t j = 0; j < m; ++j) {  // the bias the kernel sees carries the + 128 of x
      int32_t sum = 0;
      for (int64_t t = 0; t < k; ++t) sum += w[size_t(j * k + t)];
      bias[size_t(j)] = int32_t(rng() % 4001) - 2000 - 128 * sum;
    }
    for (const bool integer : {false, true}) {
      std::vector<int32_t> mult, shift;
      random_requant(rng, m, integer, &mult, &shift);
      const int32_t zp = int32_t(rng() % 256) - 128;
      std::vector<float> scale(mult.size()), pos(scale), neg(scale);
      const bool fl = ep::rt::float_requant(mult.data(), shift.data(), m, int64_t(mult.size()), zp,
                                            scale.data(), pos.data(), neg.data());
      ASSERT_EQ(fl, !integer);
      const ep::rt::FloatRequant fr{scale.data(), pos.data(), neg.data()};
      for (const auto& [lo, hi] : {std::pair{-128, 127}, std::pair{zp, std::min(127, zp + 60)}}) {
        const int64_t ldy = m + 3;
        std::vector<int8_t> y(static_cast<size_t>(n * ldy), 77);
        ep::rt::QSpmmVnniArgs a;
        a.xq = reinterpret_cast<const uint8_t*>(xq.data()), a.n = n, a.ldn = ldn, a.m = m;
        a.nnz = nnz.data(), a.quad = quad.data(), a.w = block.data();
        a.bias = bias.data(), a.mult = mult.data(), a.shift = shift.data();
        a.fr = fl ? &fr : nullptr;
        a.zp_out = zp, a.lo = lo, a.hi = hi, a.y = y.data(), a.ldy = ldy;
        ep::rt::avx512::qspmm_vnni(a);
        const SparseCase sc{n, m, k, ldx, ldy, x, w, 128, bias, mult, shift};
        ASSERT_NO_FATAL_FAILURE(expect_sparse_rows(sc, y, zp, lo, hi, fl ? " float" : " integer"));
      }
    }
  }
}

TEST(RuntimeInt8, Avx512DepthwiseRowsEqualTheScalarLoop) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  check_depthwise_rows(ep::rt::avx512::qdw_rows, true);
}

// Inputs a and b holding every pair of int8 values, then `extra` more (a tail past whole vectors)
void every_int8_pair(size_t extra, std::vector<int8_t>* a, std::vector<int8_t>* b) {
  a->resize(65536 + extra), b->resize(a->size());
  for (size_t i = 0; i < a->size(); ++i) (*a)[i] = int8_t(i), (*b)[i] = int8_t(i >> 8);
}

// int8 ADD from the inputs' tables (qadd_tables) against TFLite's arithmetic, on every pair of
// int8 inputs, for scales and zero points drawn at random, with and without an activation range,
// lengths that leave a partial vector of 64
TEST(RuntimeInt8, Avx512AddTablesEqualTfliteArithmetic) {
  if (!ep::cpu_features().avx512vnni || !__builtin_cpu_supports("avx512vbmi"))
    GTEST_SKIP() << "this CPU has no AVX-512 VBMI";
  std::mt19937 rng(21);
  std::vector<int8_t> xa, xb;
  every_int8_pair(37, &xa, &xb);
  int tables = 0;
  for (int trial = 0; trial < 12; ++trial) {
    const double sa = std::ldexp(1.0 + (rng() % 1000) / 1000.0, -int(rng() % 8) - 2);
    const double sb = sa * (0.2 + (rng() % 1000) / 250.0), sy = sa * (0.5 + (rng() % 1000) / 400.0);
    ep::rt::QAddArgs q;
    q.za = int32_t(rng() % 256) - 128, q.zb = int32_t(rng() % 256) - 128;
    q.zy = int32_t(rng() % 256) - 128;
    if (trial % 2) q.lo = std::max(-128, q.zy), q.hi = std::min(127, q.zy + 80);
    const double twice = 2.0 * std::max(float(sa), float(sb));
    ep::rt::quantize_multiplier(double(float(sa)) / twice, &q.m1, &q.s1);
    ep::rt::quantize_multiplier(double(float(sb)) / twice, &q.m2, &q.s2);
    ep::rt::quantize_multiplier(twice / (double(1 << 20) * double(float(sy))), &q.om, &q.os);
    float fo[3];
    if (!ep::rt::float_requant(&q.om, &q.os, 1, 1, q.zy, &fo[0], &fo[1], &fo[2])) continue;
    ++tables;
    std::vector<uint8_t> planes(2048);
    ep::rt::qadd_planes(q.za, q.m1, q.s1, planes.data());
    ep::rt::qadd_planes(q.zb, q.m2, q.s2, planes.data() + 1024);
    std::vector<int8_t> y(xa.size() + 5, 77);
    q.a = xa.data(), q.b = xb.data(), q.y = y.data(), q.n = int64_t(xa.size());
    q.ta = planes.data(), q.tb = planes.data() + 1024, q.fo = fo;
    ep::rt::avx512::qadd_tables(q);
    for (size_t i = 0; i < xa.size(); ++i) {
      const int32_t x1 =
          ep::rt::multiply_by_quantized_multiplier((xa[i] - q.za) * (1 << 20), q.m1, q.s1);
      const int32_t x2 =
          ep::rt::multiply_by_quantized_multiplier((xb[i] - q.zb) * (1 << 20), q.m2, q.s2);
      const int32_t v = ep::rt::multiply_by_quantized_multiplier(x1 + x2, q.om, q.os) + q.zy;
      ASSERT_EQ(int32_t(y[i]), std::min(q.hi, std::max(q.lo, v)))
          << "inputs " << int(xa[i]) << ", " << int(xb[i]) << " trial " << trial;
    }
    for (size_t i = xa.size(); i < y.size(); ++i) ASSERT_EQ(y[i], 77) << "past the end";
  }
  EXPECT_GT(tables, 8);
}

// int8 MUL with the float form of its requantization against TFLite's arithmetic, on every pair
// of int8 inputs (a length that leaves a tail for the integer loop), for random scales and zero
// points, with and without an activation range
TEST(RuntimeInt8, Avx512MulFloatFormEqualsTfliteArithmetic) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(23);
  std::vector<int8_t> xa, xb;
  every_int8_pair(53, &xa, &xb);
  int floats = 0;
  for (int trial = 0; trial < 12; ++trial) {
    ep::rt::QAddArgs q;
    q.za = int32_t(rng() % 256) - 128, q.zb = int32_t(rng() % 256) - 128;
    q.zy = int32_t(rng() % 256) - 128;
    if (trial % 2) q.lo = std::max(-128, q.zy), q.hi = std::min(127, q.zy + 80);
    const double frac = trial % 3 ? (rng() % 1000) / 1000.0 : 0.0;
    ep::rt::quantize_multiplier(std::ldexp(1.0 + frac, -3 - int(rng() % 10)), &q.om, &q.os);
    float fo[3];
    if (!ep::rt::float_requant(&q.om, &q.os, 1, 1, q.zy, &fo[0], &fo[1], &fo[2])) continue;
    ++floats;
    std::vector<int8_t> y(xa.size() + 5, 77);
    q.a = xa.data(), q.b = xb.data(), q.y = y.data(), q.n = int64_t(xa.size()), q.fo = fo;
    ep::rt::avx512::qmul(q);
    for (size_t i = 0; i < xa.size(); ++i) {
      const int32_t v =
          ep::rt::multiply_by_quantized_multiplier((xa[i] - q.za) * (xb[i] - q.zb), q.om, q.os) +
          q.zy;
      ASSERT_EQ(int32_t(y[i]), std::min(q.hi, std::max(q.lo, v)))
          << "inputs " << int(xa[i]) << ", " << int(xb[i]) << " trial " << trial;
    }
    for (size_t i = xa.size(); i < y.size(); ++i) ASSERT_EQ(y[i], 77) << "past the end";
  }
  EXPECT_EQ(floats, 12);
}

// MEAN's column sums against a scalar loop: row counts around the int16 stretch of 256, column
// counts around the vector of 64, random bytes and the extremes (256 rows of -128 fill int16)
TEST(RuntimeInt8, Avx512ColumnSumsEqualTheScalarLoop) {
  if (!ep::cpu_features().avx512vnni) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  std::mt19937 rng(29);
  for (const int64_t n : {1, 255, 256, 257, 1000})
    for (const int64_t cols : {1, 16, 32, 63, 64, 65, 130})
      for (const int fill : {0, -128, 127}) {
        std::vector<int8_t> x(static_cast<size_t>(n * cols));
        for (auto& v : x) v = fill ? int8_t(fill) : int8_t(int(rng() % 256) - 128);
        std::vector<int32_t> out(static_cast<size_t>(cols) + 3, 77);
        ep::rt::avx512::column_sums_s8(x.data(), n, cols, out.data());
        for (int64_t j = 0; j < cols; ++j) {
          int32_t want = 0;
          for (int64_t r = 0; r < n; ++r) want += x[size_t(r * cols + j)];
          ASSERT_EQ(out[size_t(j)], want) << n << " rows x " << cols << " column " << j;
        }
        for (size_t j = size_t(cols); j < out.size(); ++j) ASSERT_EQ(out[j], 77) << "past cols";
      }
}

TEST(RuntimeInt8, Avx512QuantizeEqualsTfliteRounding) {
  if (!ep::cpu_features().avx512f) GTEST_SKIP() << "this CPU has no AVX-512";
  check_quantize(ep::rt::avx512::quantize_f32);
}
#endif

}  // namespace
