// Sparse fp32: the packer round-trips random masks exactly, and every compiled SpMM path
// matches the reference for sparsity 0 / 0.5 / 0.9 / 0.99 / 1.0, empty rows, clamps, strides
// and every N tail; SparseLinear agrees with DenseLinear.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace ep;
using ep::test::random_floats;
using ep::test::sparsify;

namespace {

// Rebuild the dense matrix and bias from the packed stream.
void unpack(const PackedSparseF32& p, std::vector<float>& w, std::vector<float>& bias) {
  w.assign(p.m * p.k, 0.0f);
  bias.assign(p.m, 0.0f);
  const float* v = p.values.data();
  const int32_t* d = p.deltas.data();
  int64_t chan = 0;
  for (size_t b = 0; b < p.nnz.size(); ++b) {
    const int64_t r0 = int64_t(b) * p.block;
    for (int r = 0; r < p.block; ++r)
      if (r0 + r < p.m) bias[r0 + r] = v[r];
    v += p.block;
    for (int32_t i = 0; i < p.nnz[b]; ++i) {
      chan += *d++;
      ASSERT_GE(chan, 0);
      ASSERT_LT(chan, p.k);
      for (int r = 0; r < p.block; ++r) {
        if (r0 + r < p.m) w[(r0 + r) * p.k + chan] = v[r];
        else ASSERT_EQ(v[r], 0.0f) << "padding rows must be zero";
      }
      v += p.block;
    }
  }
  ASSERT_EQ(v, p.values.data() + p.values.size());
}

void check_spmm(Isa isa, int block, int64_t m, int64_t k, int64_t n, double sparsity, Act act, std::mt19937& rng) {
  const int64_t ldx = n + 3, ldy = n + 2;
  auto w = random_floats(rng, m * k);
  sparsify(rng, w, sparsity);
  if (m > 2) std::fill(w.begin() + k, w.begin() + 2 * k, 0.0f);  // an empty row
  auto bias = random_floats(rng, m, -1.f, 1.f);
  auto x = random_floats(rng, k * ldx, -2.f, 2.f);
  const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), block);
  SpmmF32Args p;
  p.x = x.data();
  p.ldx = ldx;
  p.ldy = ldy;
  p.n = n;
  p.m = m;
  p.k = k;
  p.values = packed.values.data();
  p.nnz = packed.nnz.data();
  p.deltas = packed.deltas.data();
  act_bounds(act, &p.lo, &p.hi);
  const float sentinel = -777.0f;
  std::vector<float> y(m * ldy, sentinel), ref(m * ldy, sentinel);
  p.y = ref.data();
  (block == 4 ? reference::spmm_f32_b4 : reference::spmm_f32_b1)(p);
  const auto& t = kernel_table(isa);
  p.y = y.data();
  (block == 4 ? t.spmm_f32_b4 : t.spmm_f32_b1).fn(p);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < ldy; ++c) {
      const int64_t i = r * ldy + c;
      if (c >= n) {
        ASSERT_EQ(y[i], sentinel) << "wrote past n";
        continue;
      }
      double mag = std::fabs(bias[r]);
      for (int64_t q = 0; q < k; ++q) mag += std::fabs(double(w[r * k + q]) * x[q * ldx + c]);
      ASSERT_LE(std::fabs(double(y[i]) - ref[i]), 1e-5 * mag + 1e-30)
          << isa_name(isa) << " block=" << block << " m=" << m << " k=" << k << " n=" << n << " s=" << sparsity;
    }
}

}  // namespace

TEST(PackSparse, RandomMasksRoundTrip) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> dim(1, 40);
  std::uniform_real_distribution<double> sp(0.0, 1.0);
  for (int t = 0; t < 300; ++t) {
    const int64_t m = dim(rng), k = dim(rng);
    const int block = t % 2 ? 4 : 1;
    auto w = random_floats(rng, m * k);
    sparsify(rng, w, sp(rng));
    auto bias = random_floats(rng, m);
    const PackedSparseF32 p = pack_sparse_f32(w.data(), m, k, bias.data(), block);
    std::vector<float> w2, b2;
    unpack(p, w2, b2);
    ASSERT_EQ(w2, w) << "m=" << m << " k=" << k << " block=" << block;
    ASSERT_EQ(b2, bias);
    int64_t nz = 0;
    for (float v : w) nz += v != 0.0f;
    if (block == 1) EXPECT_EQ(p.nonzeros(), nz);
    else EXPECT_GE(p.nonzeros(), nz);
    EXPECT_EQ(int64_t(p.nnz.size()), (m + block - 1) / block);
  }
  EXPECT_THROW(pack_sparse_f32(nullptr, 1, 1, nullptr, 2), std::invalid_argument);
}

TEST(SpmmF32, EveryPathMatchesReference) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> dim(1, 67), act(0, 2);
  for (Isa isa : ep::test::runnable_isas())
    for (int block : {1, 4})
      for (double s : {0.0, 0.5, 0.9, 0.99, 1.0}) {
        for (int t = 0; t < 12; ++t) check_spmm(isa, block, dim(rng), dim(rng), dim(rng), s, Act(act(rng)), rng);
        check_spmm(isa, block, 97, 203, 300, s, Act::relu6, rng);  // every N pass and tail
      }
}

TEST(SparseLinear, MatchesDenseAndChoosesKernel) {
  std::mt19937 rng(9);
  const int64_t m = 37, k = 50, n = 77;
  for (Isa isa : ep::test::runnable_isas())
    for (int block : {1, 4})
      for (double s : {0.3, 0.9}) {
        auto w = random_floats(rng, m * k), bias = random_floats(rng, m), x = random_floats(rng, n * k);
        sparsify(rng, w, s);
        SparseLinear sp(w.data(), m, k, bias.data(), block, Act::relu, SparseKernel::sparse, isa);
        SparseLinear au(w.data(), m, k, bias.data(), block, Act::relu, SparseKernel::automatic, isa);
        DenseLinear de(w.data(), m, k, bias.data(), Act::relu, isa);
        EXPECT_TRUE(sp.uses_sparse());
        EXPECT_EQ(au.uses_sparse(), s > 0.5);
        std::vector<float> ys(n * m), yd(n * m), ya(n * m), ys2(n * m);
        sp.forward(x.data(), n, ys.data(), 1);
        sp.forward(x.data(), n, ys2.data(), 2);
        au.forward(x.data(), n, ya.data(), 1);
        de.forward(x.data(), n, yd.data(), 1);
        EXPECT_EQ(ys, ys2) << "threads must not change any bit";
        for (int64_t i = 0; i < n * m; ++i) {
          ASSERT_NEAR(ys[i], yd[i], 1e-4f) << isa_name(isa);
          ASSERT_NEAR(ya[i], yd[i], 1e-4f) << isa_name(isa);
        }
      }
}
