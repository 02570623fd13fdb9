// int8 GEMM: every compiled path bit-exact against the reference on random shapes with tails,
// int8 extremes (-128/127 activations, +-127 weights, zero points at the ends, saturating
// outputs) and activation clamps; QLinear quantizes weights per channel and stays within
// quantization error of the float layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/kernels.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace ep;

namespace {

// random: scales well below 1; extremes: +-127 / -128 values, scales so large that most outputs
// saturate at both ends; large_scales: scales from 0.5 to 1e6, so float products pass int32
enum class Fill { random, extremes, large_scales };

void check(Isa isa, int64_t rows, int64_t cols, int64_t depth, Fill fill, float lo, float hi,
           int32_t zp_out, std::mt19937& rng, int64_t lda_pad = 5, int64_t ldy_pad = 3) {
  std::uniform_int_distribution<int> a8(-128, 127), w8(-127, 127), ends(0, 1);
  std::uniform_int_distribution<int32_t> b32(-100000, 100000);
  std::uniform_real_distribution<float> sc(1e-5f, 3e-3f);
  std::uniform_real_distribution<float> log_large(std::log(0.5f), std::log(1e6f));
  const int64_t lda = depth + lda_pad, ldy = cols + ldy_pad;
  // the kernels' contract: the clamp keeps results inside int8
  ASSERT_TRUE(lo + float(zp_out) >= -128.f && hi + float(zp_out) <= 127.f) << "test bounds";
  std::vector<int8_t> a(rows * lda), w(cols * depth);
  for (auto& v : a) v = int8_t(fill == Fill::extremes ? (ends(rng) ? 127 : -128) : a8(rng));
  for (auto& v : w) v = int8_t(fill == Fill::extremes ? (ends(rng) ? 127 : -127) : w8(rng));
  std::vector<int32_t> bias(cols), colsum(cols, 0);
  std::vector<float> scale(cols);
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t k = 0; k < depth; ++k) colsum[j] += w[j * depth + k];
    bias[j] = b32(rng);
    scale[j] = fill == Fill::extremes       ? 0.05f
               : fill == Fill::large_scales ? std::exp(log_large(rng))
                                            : sc(rng);
  }
  const auto& entry = kernel_table(isa).gemm_s8;
  const int kg = gemm_s8_kgroup(entry.isa);
  std::vector<int8_t> bp(packed_gemm_s8_size(cols, depth, entry.tile, kg));
  pack_gemm_s8(w.data(), cols, depth, entry.tile, kg, bp.data());
  GemmS8Args p;
  p.a = a.data();
  p.lda = lda;
  p.b = w.data();
  p.ldb = depth;
  p.bp = bp.data();
  p.bias = bias.data();
  p.colsum = colsum.data();
  p.scale = scale.data();
  p.ldy = ldy;
  p.rows = rows;
  p.cols = cols;
  p.depth = depth;
  p.zp_out = zp_out;
  p.lo = lo;
  p.hi = hi;
  std::vector<int8_t> y(rows * ldy, int8_t(55)), ref(rows * ldy, int8_t(55));
  p.y = ref.data();
  reference::gemm_s8(p);
  p.y = y.data();
  entry.fn(p);
  ASSERT_EQ(y, ref) << isa_name(isa) << " rows=" << rows << " cols=" << cols << " depth=" << depth;
}

}  // namespace

TEST(GemmS8, EveryPathBitExact) {
  std::mt19937 rng(21);
  std::uniform_int_distribution<int> dim(1, 67);
  for (Isa isa : ep::test::runnable_isas()) {
    for (int t = 0; t < 80; ++t)
      check(isa, dim(rng), dim(rng), dim(rng), Fill::random, -128.f, 127.f, 0, rng);
    // zero points at the ends, relu-style clamps (lo = qmin - zp), saturating outputs
    for (int32_t zp : {-128, 127, 3}) {
      check(isa, 13, 37, 65, Fill::extremes, float(-128 - zp), float(127 - zp), zp, rng);
      check(isa, 9, 33, 31, Fill::random, float(std::max(-128, zp) - zp), float(127 - zp), zp, rng);
    }
    check(isa, 131, 97, 1000, Fill::random, -123.f, 132.f, -5, rng);
    check(isa, 19, 45, 300, Fill::large_scales, -134.f, 121.f, 6, rng);
    check(isa, 7, 16, 20, Fill::large_scales, -6.f, 121.f, 6, rng);
    check(isa, 64, 256, 256, Fill::extremes, -128.f, 127.f, 0, rng);
  }
}

// K a multiple of 4 with output channels filling at most half a 32-column panel, one and a half
// panels, and rows off the 8-row tile; rows lda apart, and rows packed (lda = K: the AVX-512 path
// flips a strip of them in one flat pass); outputs ldy apart, and packed (16 or 32 channels at
// ldy = M: the AVX-512 path stores four or two rows at once).
TEST(GemmS8, InPlaceActivationsAndHalfPanels) {
  std::mt19937 rng(22);
  const int64_t shapes[][3] = {{17, 16, 64}, {9, 13, 8},  {8, 48, 4},    {3, 40, 1024},
                               {25, 16, 32}, {70, 1, 12}, {1, 33, 2048}, {23, 32, 16},
                               {7, 32, 8},   {6, 16, 20}};
  for (Isa isa : ep::test::runnable_isas())
    for (const auto& s : shapes)
      for (int64_t pad : {5, 0})
        check(isa, s[0], s[1], s[2], Fill::random, -132.f, 123.f, 4, rng, pad, pad ? 3 : 0);
}

TEST(QLinear, QuantizesPerChannelAndTracksFloat) {
  std::mt19937 rng(4);
  const int64_t m = 29, k = 70, n = 21;
  auto w = ep::test::random_floats(rng, m * k, -0.5f, 0.5f);
  for (int64_t q = 0; q < k; ++q) w[3 * k + q] = 0.0f;  // an all-zero channel
  auto bias = ep::test::random_floats(rng, m, -0.2f, 0.2f);
  const float s_in = 0.02f, s_out = 0.05f;
  const int32_t zp_in = -7, zp_out = 4;
  std::uniform_int_distribution<int> a8(-128, 127);
  std::vector<int8_t> x(n * k), y(n * m), y2(n * m);
  for (auto& v : x) v = int8_t(a8(rng));
  std::vector<int8_t> first;
  for (Isa isa : ep::test::runnable_isas()) {
    QLinear q(w.data(), m, k, bias.data(), s_in, zp_in, s_out, zp_out, Act::none,
              SparseKernel::dense, isa);
    for (int64_t j = 0; j < m; ++j) {
      int mx = 0;
      for (int64_t c = 0; c < k; ++c) mx = std::max(mx, std::abs(int(q.qweight()[j * k + c])));
      EXPECT_EQ(mx, j == 3 ? 0 : 127) << "the largest weight of a channel maps to 127";
    }
    q.forward(x.data(), n, y.data(), 1);
    q.forward(x.data(), n, y2.data(), 2);
    EXPECT_EQ(y, y2);
    if (first.empty()) first = y;
    EXPECT_EQ(y, first) << "paths must agree bit for bit: " << isa_name(isa);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double f = bias[j];
        for (int64_t c = 0; c < k; ++c) f += double(w[j * k + c]) * s_in * (x[i * k + c] - zp_in);
        const double want = std::min(127.0, std::max(-128.0, std::nearbyint(f / s_out) + zp_out));
        // weight rounding error: <= k * s_in * 128 * s_w / 2, in output steps
        const double tol = 1.0 + k * s_in * 128.0 * (q.weight_scales()[j] / 2) / s_out;
        ASSERT_LE(std::fabs(y[i * m + j] - want), tol) << i << "," << j;
      }
  }
  EXPECT_THROW(QLinear(w.data(), m, k, nullptr, 0.0f, 0, 1.0f, 0, Act::none, SparseKernel::dense,
                       Isa::reference),
               std::invalid_argument);
  EXPECT_THROW(QLinear(w.data(), m, k, nullptr, 1.0f, 200, 1.0f, 0, Act::none, SparseKernel::dense,
                       Isa::reference),
               std::invalid_argument);
}

namespace {

void check_sparse(Isa isa, int64_t m, int64_t k, int64_t n, double sparsity, Fill fill,
                  int32_t zp_out, float lo, float hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> a8(-128, 127), w8(-127, 127), ends(0, 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int8_t> w(m * k, 0), x(k * n);
  for (auto& v : x) v = int8_t(fill == Fill::extremes ? (ends(rng) ? 127 : -128) : a8(rng));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t q = 0; q < (k + 3) / 4; ++q) {
      if (sparsity >= 1.0 || u(rng) < sparsity || r == m / 2)
        continue;  // pruned block; one empty row
      for (int64_t c = 4 * q; c < std::min(k, 4 * q + 4); ++c)
        w[r * k + c] = int8_t(fill == Fill::extremes ? (ends(rng) ? 127 : -127) : w8(rng));
    }
  const PackedSparseS8 sp = pack_sparse_s8(w.data(), m, k);
  std::vector<int32_t> bias(m), rowsum(m, 0);
  std::vector<float> scale(m);
  std::uniform_int_distribution<int32_t> b32(-50000, 50000);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c) rowsum[r] += w[r * k + c];
    bias[r] = b32(rng);
    std::uniform_real_distribution<float> log_large(std::log(0.5f), std::log(1e6f));
    scale[r] = fill == Fill::extremes       ? 0.05f
               : fill == Fill::large_scales ? std::exp(log_large(rng))
                                            : 2e-3f;
  }
  // the kernel's own layout, one block of all N columns: xq[(q * n + i) * 4 + t] = X[4q + t, i]
  std::vector<int8_t> xq(((k + 3) / 4) * 4 * n, 0);
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < n; ++i) xq[((c / 4) * n + i) * 4 + c % 4] = x[c * n + i];
  const int64_t ldy = n + 3;
  // Filled by hand on purpose, in each test: these tests drive the kernel directly, with
  // arguments (strides, zero points, clamps) that SparseQLinear in layers.cpp would not produce.
  SpmmS8Args p;
  p.xq = xq.data();
  p.ldx = n;
  p.ldy = ldy;
  p.n = n;
  p.m = m;
  p.nnz = sp.nnz.data();
  p.quad = sp.quad.data();
  p.w = sp.w.data();
  p.bias = bias.data();
  p.rowsum = rowsum.data();
  p.scale = scale.data();
  p.zp_out = zp_out;
  p.lo = lo;
  p.hi = hi;
  std::vector<int8_t> y(m * ldy, int8_t(99)), ref(m * ldy, int8_t(99));
  p.y = ref.data();
  reference::spmm_s8(p);
  p.y = y.data();
  kernel_table(isa).spmm_s8.fn(p);
  ASSERT_EQ(y, ref) << isa_name(isa) << " m=" << m << " k=" << k << " n=" << n << " s=" << sparsity;
  // and the reference itself against a plain dense int8 sum
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < n; ++i) {
      int32_t acc = bias[r];
      for (int64_t c = 0; c < k; ++c) acc += int32_t(w[r * k + c]) * x[c * n + i];
      ASSERT_EQ(ref[r * ldy + i], requant_s8(acc, scale[r], zp_out, lo, hi));
    }
}

}  // namespace

TEST(SpmmS8, EveryPathBitExact) {
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> dim(1, 67);
  for (Isa isa : ep::test::runnable_isas())
    for (double s : {0.0, 0.5, 0.9, 0.99, 1.0}) {
      for (int t = 0; t < 10; ++t)
        check_sparse(isa, dim(rng), dim(rng), dim(rng), s, Fill::random, 0, -128.f, 127.f, rng);
      check_sparse(isa, 21, 130, 150, s, Fill::extremes, -128, 0.f, 255.f,
                   rng);  // zp at the end, relu
      check_sparse(isa, 9, 67, 83, s, Fill::extremes, 127, -255.f, 0.f, rng);
      check_sparse(isa, 19, 40, 70, s, Fill::large_scales, 5, -133.f, 122.f, rng);
      // X narrower than a vector (FC layers at batch 1): the dot 8 blocks a step, rows of up to
      // 65 blocks, and its scalar remainder. The bounds are a layer's with zero point -3 (the
      // int8 range less the zero point), so both ends are reached and stay inside int8.
      for (int64_t n : {1, 3, 7})
        check_sparse(isa, 13, 260, n, s, Fill::extremes, -3, -125.f, 130.f, rng);
    }
}

TEST(PackSparseS8, RandomMasksRoundTrip) {
  std::mt19937 rng(12);
  std::uniform_int_distribution<int> dim(1, 40), w8(-127, 127);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int t = 0; t < 200; ++t) {
    const int64_t m = dim(rng), k = dim(rng);
    const double s = u(rng);
    std::vector<int8_t> w(m * k);
    for (auto& v : w) v = u(rng) < s ? 0 : int8_t(w8(rng));
    const PackedSparseS8 p = pack_sparse_s8(w.data(), m, k);
    std::vector<int8_t> back(m * k, 0);
    size_t b = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int32_t i = 0; i < p.nnz[r]; ++i, ++b) {
        ASSERT_NE(p.w[b], 0) << "an all-zero block must not be stored";
        for (int tt = 0; tt < 4; ++tt) {
          const int64_t c = 4 * int64_t(p.quad[b]) + tt;
          const int8_t v = int8_t(uint32_t(p.w[b]) >> (8 * tt));
          if (c < k)
            back[r * k + c] = v;
          else
            ASSERT_EQ(v, 0) << "padding past K must be zero";
        }
      }
    ASSERT_EQ(b, p.quad.size());
    ASSERT_EQ(back, w);
  }
}

TEST(QLinear, SparseAndDenseAgreeBitForBit) {
  std::mt19937 rng(8);
  const int64_t m = 40, k = 75, n = 70;
  auto w = ep::test::random_floats(rng, m * k);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t q = 0; q < k; q += 4)
      if (u(rng) < 0.8)
        for (int64_t c = q; c < std::min(k, q + 4); ++c) w[r * k + c] = 0.0f;
  auto bias = ep::test::random_floats(rng, m);
  std::uniform_int_distribution<int> a8(-128, 127);
  std::vector<int8_t> x(n * k);
  for (auto& v : x) v = int8_t(a8(rng));
  for (Isa isa : ep::test::runnable_isas()) {
    QLinear dense(w.data(), m, k, bias.data(), 0.03f, 5, 0.08f, -3, Act::relu6, SparseKernel::dense,
                  isa);
    QLinear sparse(w.data(), m, k, bias.data(), 0.03f, 5, 0.08f, -3, Act::relu6,
                   SparseKernel::sparse, isa);
    QLinear automatic(w.data(), m, k, bias.data(), 0.03f, 5, 0.08f, -3, Act::relu6,
                      SparseKernel::automatic, isa);
    EXPECT_TRUE(sparse.uses_sparse());
    EXPECT_FALSE(dense.uses_sparse());
    EXPECT_TRUE(automatic.uses_sparse()) << "20% of blocks stored is below the auto threshold";
    std::vector<int8_t> yd(n * m), ys(n * m), ys2(n * m), xt(k * n), ykn(m * n);
    dense.forward(x.data(), n, yd.data(), 1);
    sparse.forward(x.data(), n, ys.data(), 1);
    sparse.forward(x.data(), n, ys2.data(), 2);
    EXPECT_EQ(ys, yd) << isa_name(isa);
    EXPECT_EQ(ys2, yd);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < k; ++c) xt[c * n + i] = x[i * k + c];
    for (const QLinear* q : {&dense, &sparse}) {
      q->forward_kn(xt.data(), n, ykn.data(), 2);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) ASSERT_EQ(ykn[j * n + i], yd[i * m + j]);
    }
    int relu6_top = 0;
    for (int8_t v : yd) {
      ASSERT_GE(v, -3) << "relu clamps at the output zero point";
      relu6_top = std::max(relu6_top, int(v));
    }
    EXPECT_LE(relu6_top, -3 + 75) << "relu6 clamps at zp + round(6 / s_out)";
  }
}

// One column of an `auto` layer chosen sparse: AVX-512 runs its channel groups; elsewhere the
// layer keeps the dense GEMM for it unless K is at least kAutoColumnMinDepth and at most
// kAutoMaxBlockDensityColumn of its blocks are stored. Either way every path gives the dense
// layer's bits (integer sums), by forward and forward_kn.
TEST(QLinear, OneColumnRunsDenseUnlessLongAndVerySparse) {
  std::mt19937 rng(81);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<int> a8(-128, 127);
  const int64_t big = 520;
  ASSERT_GE(big, QLinear::kAutoColumnMinDepth);
  for (auto [m, k, s] :
       {std::tuple{big, int64_t(64), 0.95}, {int64_t(24), big, 0.95}, {big, big, 0.75}}) {
    auto w = ep::test::random_floats(rng, m * k), bias = ep::test::random_floats(rng, m);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t q = 0; q < k; q += 4)
        if (u(rng) < s)
          for (int64_t c = q; c < std::min(k, q + 4); ++c) w[r * k + c] = 0.0f;
    std::vector<int8_t> x(k);
    for (auto& v : x) v = int8_t(a8(rng));
    for (Isa isa : ep::test::runnable_isas()) {
      SCOPED_TRACE(std::string(isa_name(isa)) + " m=" + std::to_string(m) +
                   " s=" + std::to_string(s));
      const auto make = [&](SparseKernel mode) {
        return QLinear(w.data(), m, k, bias.data(), 0.03f, 5, 0.08f, -3, Act::none, mode, isa);
      };
      const QLinear automatic = make(SparseKernel::automatic), sparse = make(SparseKernel::sparse),
                    dense = make(SparseKernel::dense);
      ASSERT_TRUE(automatic.uses_sparse());
      const bool long_and_sparse = k == big && s > 0.9;
      EXPECT_EQ(automatic.column_dense(), isa != Isa::avx512 && !long_and_sparse);
      EXPECT_FALSE(sparse.column_dense());
      EXPECT_FALSE(dense.column_dense());
      std::vector<int8_t> ya(m), yk(m), ys(m), yd(m);
      automatic.forward(x.data(), 1, ya.data(), 1);
      automatic.forward_kn(x.data(), 1, yk.data(), 2);
      sparse.forward(x.data(), 1, ys.data(), 1);
      dense.forward(x.data(), 1, yd.data(), 1);
      EXPECT_EQ(ya, yd);
      EXPECT_EQ(yk, yd);
      EXPECT_EQ(ys, yd);
      // wider calls still run the sparse kernel, with the same bits
      std::vector<int8_t> x3(3 * k), ya3(3 * m), yd3(3 * m);
      for (auto& v : x3) v = int8_t(a8(rng));
      automatic.forward(x3.data(), 3, ya3.data(), 1);
      dense.forward(x3.data(), 3, yd3.data(), 1);
      EXPECT_EQ(ya3, yd3);
    }
  }
}

TEST(PackQuads, StripLayout) {
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> dim(1, 150), a8(-128, 127);
  for (int t = 0; t < 30; ++t) {
    const int64_t k = dim(rng), n = dim(rng);
    std::vector<int8_t> x(k * n), xt(n * k);
    for (auto& v : x) v = int8_t(a8(rng));
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < n; ++i) xt[i * k + c] = x[c * n + i];
    const int64_t strips = (n + kQuadStrip - 1) / kQuadStrip;
    std::vector<int8_t> a(quad_strip_size(k) * strips), b(a.size());
    pack_quads_s8(x.data(), k, n, n, false, a.data());
    pack_quads_s8(xt.data(), k, n, k, true, b.data());
    ASSERT_EQ(a, b);
    for (int64_t s = 0; s < strips; ++s)
      for (int64_t q = 0; q < (k + 3) / 4; ++q)
        for (int64_t i = 0; i < kQuadStrip; ++i)
          for (int tt = 0; tt < 4; ++tt) {
            const int64_t c = 4 * q + tt, col = s * kQuadStrip + i;
            const int8_t want = c < k && col < n ? x[c * n + col] : 0;
            ASSERT_EQ(a[s * quad_strip_size(k) + (q * kQuadStrip + i) * 4 + tt], want);
          }
  }
}

TEST(PackQuads, NarrowLayoutAndKernelsOnIt) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> a8(-128, 127), w8(-127, 127), keep(0, 2);
  for (int64_t n : {1, 3, 17, 63})
    for (int64_t k : {1, 6, 8, 45}) {
      std::vector<int8_t> x(k * n), xt(n * k);
      for (auto& v : x) v = int8_t(a8(rng));
      for (int64_t c = 0; c < k; ++c)
        for (int64_t i = 0; i < n; ++i) xt[i * k + c] = x[c * n + i];
      const int64_t quads = (k + 3) / 4;
      std::vector<int8_t> a(quads * n * 4), b(a.size());
      pack_quads_s8_narrow(x.data(), k, n, n, false, a.data());
      pack_quads_s8_narrow(xt.data(), k, n, k, true, b.data());
      ASSERT_EQ(a, b);
      for (int64_t q = 0; q < quads; ++q)
        for (int64_t i = 0; i < n; ++i)
          for (int t = 0; t < 4; ++t)
            ASSERT_EQ(a[(q * n + i) * 4 + t], 4 * q + t < k ? x[(4 * q + t) * n + i] : 0);
      // every path on the compact block (ldx = n) equals the reference
      const int64_t m = 11;
      std::vector<int8_t> w(m * k);
      for (auto& v : w) v = keep(rng) ? int8_t(0) : int8_t(w8(rng));
      const PackedSparseS8 sp = pack_sparse_s8(w.data(), m, k);
      std::vector<int32_t> bias(m, 1000), rowsum(m, 0);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < k; ++c) rowsum[r] += w[r * k + c];
      std::vector<float> scale(m, 0.01f);
      // Filled by hand on purpose, in each test: these tests drive the kernel directly, with
      // arguments (strides, zero points, clamps) that SparseQLinear in layers.cpp would not
      // produce.
      SpmmS8Args p;
      p.xq = a.data();
      p.ldx = n;
      p.n = n;
      p.m = m;
      p.ldy = n;
      p.nnz = sp.nnz.data();
      p.quad = sp.quad.data();
      p.w = sp.w.data();
      p.bias = bias.data();
      p.rowsum = rowsum.data();
      p.scale = scale.data();
      std::vector<int8_t> ref(m * n), y(m * n);
      p.y = ref.data();
      reference::spmm_s8(p);
      for (Isa isa : ep::test::runnable_isas()) {
        p.y = y.data();
        kernel_table(isa).spmm_s8.fn(p);
        ASSERT_EQ(y, ref) << isa_name(isa) << " n=" << n << " k=" << k;
      }
    }
}
