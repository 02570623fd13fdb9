// Dense fp32: every compiled path's dense_f32 against the reference on random shapes with tails
// (M, N, K over 1..67 and large), both bias layouts, activations and padded strides.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace ep;
using ep::test::random_floats;

namespace {

struct Case {
  int64_t rows, cols, depth;
  Act act;
  bool per_row;
};

// |y - ref| <= 1e-5 * (sum_k |a b| + |bias|): the relative error bound of a dot product. With
// `inplace` the optimised path gets no packed B and reads b (rows padded to cols + 7) in place.
void check(Isa isa, const Case& c, std::mt19937& rng, bool inplace = false) {
  const int64_t lda = c.depth + 3, ldy = c.cols + 5, ldb = inplace ? c.cols + 7 : c.cols;
  auto a = random_floats(rng, c.rows * lda);
  auto b = random_floats(rng, c.depth * ldb);  // B(k, j) = b[k * ldb + j]
  auto bias = random_floats(rng, std::max(c.rows, c.cols), -2.f, 2.f);
  const auto& entry = kernel_table(isa).dense_f32;
  std::vector<float> bp(packed_dense_size(c.depth, c.cols, entry.tile));
  pack_dense_f32(b.data(), ldb, 1, c.depth, c.cols, entry.tile, bp.data());
  DenseF32Args p;
  p.a = a.data();
  p.lda = lda;
  p.b = b.data();
  p.b_sk = ldb;
  p.b_sm = 1;
  p.bp = inplace ? nullptr : bp.data();
  p.bias = bias.data();
  p.bias_per_row = c.per_row;
  p.ldy = ldy;
  p.rows = c.rows;
  p.cols = c.cols;
  p.depth = c.depth;
  act_bounds(c.act, &p.lo, &p.hi);
  const float sentinel = 1234.5f;
  std::vector<float> y(c.rows * ldy, sentinel), ref(c.rows * ldy, sentinel);
  p.y = ref.data();
  reference::dense_f32(p);
  p.y = y.data();
  entry.fn(p);
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t j = 0; j < ldy; ++j) {
      const int64_t i = r * ldy + j;
      if (j >= c.cols) {
        ASSERT_EQ(y[i], sentinel) << "wrote past cols at " << r << "," << j;
        continue;
      }
      double mag = std::fabs(bias[c.per_row ? r : j]);
      for (int64_t k = 0; k < c.depth; ++k)
        mag += std::fabs(double(a[r * lda + k]) * b[k * ldb + j]);
      ASSERT_LE(std::fabs(double(y[i]) - ref[i]), 1e-5 * mag + 1e-30)
          << isa_name(isa) << " rows=" << c.rows << " cols=" << c.cols << " depth=" << c.depth
          << " at " << r << "," << j << " got " << y[i] << " want " << ref[i];
    }
  }
}

// A read in segments (DenseF32Args::a_seg, a convolution's im2col in place): rows `lda` floats
// apart that overlap, `nseg` segments of `seg` floats `stride` apart, against the reference on the
// same A written out row by row.
void check_segments(Isa isa, int64_t rows, int64_t cols, int64_t seg, int64_t nseg, int64_t lda,
                    int64_t stride, std::mt19937& rng) {
  const int64_t depth = seg * nseg;
  auto a = random_floats(rng, (rows - 1) * lda + (nseg - 1) * stride + seg);
  std::vector<float> full(size_t(rows * depth));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k)
      full[size_t(r * depth + k)] = a[size_t(r * lda + k / seg * stride + k % seg)];
  auto b = random_floats(rng, depth * cols);
  auto bias = random_floats(rng, cols, -2.f, 2.f);
  const auto& entry = kernel_table(isa).dense_f32;
  std::vector<float> bp(packed_dense_size(depth, cols, entry.tile));
  pack_dense_f32(b.data(), cols, 1, depth, cols, entry.tile, bp.data());
  DenseF32Args p;
  p.a = full.data();
  p.lda = depth;
  p.b = b.data();
  p.b_sk = cols;
  p.b_sm = 1;
  p.bias = bias.data();
  p.ldy = cols;
  p.rows = rows;
  p.cols = cols;
  p.depth = depth;
  std::vector<float> want(size_t(rows * cols)), ref(want.size()), got(want.size());
  p.y = want.data();
  reference::dense_f32(p);
  p.a = a.data();
  p.lda = lda;
  p.a_seg = seg;
  p.a_seg_stride = stride;
  p.y = ref.data();
  reference::dense_f32(p);
  ASSERT_EQ(ref, want) << "reference, seg=" << seg;
  p.bp = bp.data();
  p.y = got.data();
  entry.fn(p);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-4 * (1.0 + std::fabs(want[i])))
        << isa_name(isa) << " rows=" << rows << " cols=" << cols << " seg=" << seg
        << " nseg=" << nseg << " at " << i;
}

}  // namespace

// Segments shorter and longer than a depth block (KC = 256 or 384), rows that overlap (a conv's
// pixels cin floats apart) and rows that do not.
TEST(DenseF32, EveryPathReadsAInSegments) {
  std::mt19937 rng(44);
  for (Isa isa : ep::test::runnable_isas()) {
    check_segments(isa, 56, 32, 96, 3, 32, 58 * 32, rng);  // 3x3 on 32 channels, one output row
    check_segments(isa, 13, 17, 15, 5, 3, 40, rng);        // 5x5 on 3 channels, odd tails
    check_segments(isa, 7, 40, 500, 3, 600, 1700, rng);    // segments over a depth block
    check_segments(isa, 1, 70, 24, 7, 8, 30, rng);         // one row
  }
}

TEST(DenseF32, EveryPathMatchesReferenceOnRandomShapes) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> dim(1, 67), act(0, 2);
  for (Isa isa : ep::test::runnable_isas()) {
    for (int t = 0; t < 120; ++t)
      check(isa, {dim(rng), dim(rng), dim(rng), Act(act(rng)), t % 2 == 1}, rng);
    // every tail of the 6/8-row and 16/32-column tiles, against a depth larger than one KC block
    for (int64_t rows : {1, 5, 6, 7, 9, 13})
      for (int64_t cols : {1, 15, 16, 17, 31, 33})
        check(isa, {rows, cols, 19, Act::relu6, rows % 2 == 0}, rng);
    check(isa, {131, 97, 900, Act::none, false}, rng);
    check(isa, {200, 300, 257, Act::relu, true}, rng);
  }
}

// Without a packed B the optimised paths read whole panels in place and pack only the last
// partial one, per depth block (KC = 256 or 384: depths 257, 390 and 900 span several).
TEST(DenseF32, EveryPathReadsUnpackedBInPlace) {
  std::mt19937 rng(43);
  std::uniform_int_distribution<int> dim(1, 67), act(0, 2);
  for (Isa isa : ep::test::runnable_isas()) {
    for (int t = 0; t < 60; ++t)
      check(isa, {dim(rng), dim(rng), dim(rng), Act(act(rng)), t % 2 == 1}, rng, true);
    for (int64_t cols : {1, 16, 17, 32, 33, 70})
      check(isa, {13, cols, 390, Act::relu6, true}, rng, true);
    check(isa, {131, 97, 900, Act::none, true}, rng, true);
    check(isa, {40, 600, 257, Act::relu, true}, rng, true);
  }
}

TEST(DenseF32, ClampsImplementActivations) {
  std::mt19937 rng(7);
  for (Isa isa : ep::test::runnable_isas()) {
    const int64_t m = 20, k = 9, n = 11;
    auto w = random_floats(rng, m * k, -4.f, 4.f), x = random_floats(rng, n * k, -4.f, 4.f);
    DenseLinear relu6(w.data(), m, k, nullptr, Act::relu6, isa),
        plain(w.data(), m, k, nullptr, Act::none, isa);
    std::vector<float> y6(n * m), y(n * m);
    relu6.forward(x.data(), n, y6.data(), 1);
    plain.forward(x.data(), n, y.data(), 1);
    bool saw_low = false, saw_high = false;
    for (int64_t i = 0; i < n * m; ++i) {
      EXPECT_EQ(y6[i], std::min(std::max(y[i], 0.0f), 6.0f));
      saw_low |= y[i] < 0.0f;
      saw_high |= y[i] > 6.0f;
    }
    EXPECT_TRUE(saw_low && saw_high) << "the data must exercise both clamps";
  }
}

// Fewer than 8 rows (an FC layer at batch 1): threads split the output columns at panel
// multiples, with the bits of one thread, a partial last panel included.
TEST(DenseLinear, FewRowsSplitColumnsWithTheSameBits) {
  std::mt19937 rng(9);
  const double before = ep::min_macs_per_thread();
  ep::set_min_macs_per_thread(1000.0);  // every thread count asked for is used
  for (const int64_t m : {int64_t(1000), int64_t(77), int64_t(5)}) {
    const int64_t k = 130;
    auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
    for (Isa isa : ep::test::runnable_isas()) {
      DenseLinear l(w.data(), m, k, bias.data(), Act::relu6, isa);
      for (const int64_t n : {int64_t(1), int64_t(3)}) {
        auto x = random_floats(rng, n * k);
        std::vector<float> y1(n * m);
        l.forward(x.data(), n, y1.data(), 1);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < m; ++j) {
            double want = bias[j], mag = std::fabs(bias[j]);
            for (int64_t q = 0; q < k; ++q) {
              want += double(w[j * k + q]) * x[i * k + q];
              mag += std::fabs(double(w[j * k + q]) * x[i * k + q]);
            }
            ASSERT_NEAR(y1[i * m + j], std::min(6.0, std::max(0.0, want)), 2e-5 * mag)
                << isa_name(isa) << " m=" << m << " n=" << n;
          }
        for (int threads : {2, 3, 4}) {
          std::vector<float> yt(n * m, -1.0f);
          l.forward(x.data(), n, yt.data(), threads);
          EXPECT_EQ(y1, yt) << isa_name(isa) << " m=" << m << " n=" << n << " threads " << threads;
        }
      }
    }
  }
  ep::set_min_macs_per_thread(before);
}

// n = 133: X packed; n = 600 (>= kDenseInPlaceMinCols): X read in place.
TEST(DenseLinear, ThreadsAndLayoutsAgree) {
  std::mt19937 rng(3);
  static_assert(600 >= kDenseInPlaceMinCols && 133 < kDenseInPlaceMinCols);
  for (const int64_t n : {int64_t(133), int64_t(600)}) {
    const int64_t m = 70, k = 45;
    auto w = random_floats(rng, m * k), bias = random_floats(rng, m), x = random_floats(rng, n * k);
    for (Isa isa : ep::test::runnable_isas()) {
      DenseLinear l(w.data(), m, k, bias.data(), Act::relu, isa);
      std::vector<float> y1(n * m), y2(n * m), xt(k * n), ykn(m * n);
      l.forward(x.data(), n, y1.data(), 1);
      l.forward(x.data(), n, y2.data(), 3);
      EXPECT_EQ(y1, y2) << "splitting rows over threads must not change any bit";
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) xt[j * n + i] = x[i * k + j];
      l.forward_kn(xt.data(), n, ykn.data(), 2);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) {
          double mag = std::fabs(bias[j]);
          for (int64_t q = 0; q < k; ++q) mag += std::fabs(double(w[j * k + q]) * x[i * k + q]);
          ASSERT_NEAR(ykn[j * n + i], y1[i * m + j], 2e-5 * mag) << isa_name(isa);
        }
    }
  }
}

// A row alone (a GEMV: whole panels side by side, depth not cut into blocks) gives the bits it
// gets inside a batch (8-row tiles, depth blocks), for every panel tail, with and without bias.
TEST(DenseLinear, OneRowHasTheBitsOfABatch) {
  std::mt19937 rng(11);
  for (const int64_t m : {int64_t(1000), int64_t(48), int64_t(40), int64_t(130), int64_t(16)})
    for (const int64_t k : {int64_t(70), int64_t(300), int64_t(1280)}) {
      auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
      const int64_t n = 9;  // an 8-row tile and a row on its own
      auto x = random_floats(rng, n * k);
      for (Isa isa : ep::test::runnable_isas())
        for (const bool with_bias : {true, false}) {
          DenseLinear l(w.data(), m, k, with_bias ? bias.data() : nullptr, Act::relu6, isa);
          std::vector<float> batch(n * m), one(m);
          l.forward(x.data(), n, batch.data(), 1);
          for (int64_t i = 0; i < n; ++i) {
            l.forward(x.data() + i * k, 1, one.data(), 1);
            ASSERT_TRUE(std::equal(one.begin(), one.end(), batch.begin() + i * m))
                << isa_name(isa) << " m=" << m << " k=" << k << " row " << i;
          }
        }
    }
}
