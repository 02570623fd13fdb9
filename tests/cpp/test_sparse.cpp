// Sparse fp32: the packer round-trips random masks exactly, and every compiled SpMM path
// matches the reference for sparsity 0 / 0.5 / 0.9 / 0.99 / 1.0, empty rows, clamps, strides
// and every N tail; SparseLinear agrees with DenseLinear.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>

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
        if (r0 + r < p.m)
          w[(r0 + r) * p.k + chan] = v[r];
        else
          ASSERT_EQ(v[r], 0.0f) << "padding rows must be zero";
      }
      v += p.block;
    }
  }
  ASSERT_EQ(v, p.values.data() + p.values.size());
}

// y against the reference output ref (both [m, ldy], entries past n still `sentinel`), within
// float rounding of the products |w| |x| summed per output.
void expect_near_reference(const std::vector<float>& y, const std::vector<float>& ref,
                           const std::vector<float>& w, const std::vector<float>& bias,
                           const std::vector<float>& x, int64_t m, int64_t k, int64_t n,
                           int64_t ldx, int64_t ldy, float sentinel) {
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
          << "row " << r << " col " << c;
    }
}

// With `tiled`, the path's kernel also gets plan_spmm_tiles for its lanes (b1; K tiles); with
// `chans`, the stream's channel table (b1; columns narrower than a vector as dot products).
void check_spmm(Isa isa, int block, int64_t m, int64_t k, int64_t n, double sparsity, Act act,
                std::mt19937& rng, bool tiled = false, bool chans = false) {
  const int64_t ldx = n + 3, ldy = n + 2;
  auto w = random_floats(rng, m * k);
  sparsify(rng, w, sparsity);
  if (m > 2) std::fill(w.begin() + k, w.begin() + 2 * k, 0.0f);  // an empty row
  auto bias = random_floats(rng, m, -1.f, 1.f);
  auto x = random_floats(rng, k * ldx, -2.f, 2.f);
  const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), block);
  SpmmF32Args p = spmm_f32_args(packed, x.data(), ldx, nullptr, ldy, n);
  act_bounds(act, &p.lo, &p.hi);
  const float sentinel = -777.0f;
  std::vector<float> y(m * ldy, sentinel), ref(m * ldy, sentinel);
  p.y = ref.data();
  (block == 4 ? reference::spmm_f32_b4 : reference::spmm_f32_b1)(p);
  const auto& t = kernel_table(isa);
  p.y = y.data();
  const SpmmTilePlan plan =
      tiled ? plan_spmm_tiles(packed, t.spmm_f32_b1.tile, 48 * 1024) : SpmmTilePlan{};
  if (tiled) {
    ASSERT_GE(plan.tiles, 1) << isa_name(isa) << " k=" << k << " s=" << sparsity;
    p.tiles = &plan;
  }
  const std::vector<int32_t> table = chans ? spmm_channels(packed) : std::vector<int32_t>{};
  ASSERT_EQ(table.size(), chans ? packed.deltas.size() : 0);
  if (chans) p.chans = table.data();
  (block == 4 ? t.spmm_f32_b4 : t.spmm_f32_b1).fn(p);
  SCOPED_TRACE(std::string(isa_name(isa)) + " block=" + std::to_string(block) +
               " m=" + std::to_string(m) + " k=" + std::to_string(k) + " n=" + std::to_string(n) +
               " s=" + std::to_string(sparsity));
  expect_near_reference(y, ref, w, bias, x, m, k, n, ldx, ldy, sentinel);
}

// An [m, k] weight with exactly per_row nonzeros in every row, at random columns (so a tile
// plan's shape is known).
std::vector<float> weight_with_rows_of(std::mt19937& rng, int64_t m, int64_t k, int64_t per_row) {
  std::vector<float> w(m * k, 0.0f);
  std::vector<int64_t> cols(k);
  for (int64_t r = 0; r < m; ++r) {
    std::iota(cols.begin(), cols.end(), 0);
    std::shuffle(cols.begin(), cols.end(), rng);
    auto vals = random_floats(rng, per_row);
    for (int64_t i = 0; i < per_row; ++i) w[r * k + cols[i]] = vals[i] == 0.0f ? 1.0f : vals[i];
  }
  return w;
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
    if (block == 1)
      EXPECT_EQ(p.nonzeros(), nz);
    else
      EXPECT_GE(p.nonzeros(), nz);
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
        for (int t = 0; t < 12; ++t)
          check_spmm(isa, block, dim(rng), dim(rng), dim(rng), s, Act(act(rng)), rng);
        check_spmm(isa, block, 97, 203, 300, s, Act::relu6, rng);  // every N pass and tail
      }
}

// Columns narrower than a vector from the channel table (rows of 0 to ~300 entries: every
// gather width and remainder), alone (N < a vector) and after the vector passes.
TEST(SpmmF32, ChannelTableMatchesReference) {
  std::mt19937 rng(6);
  std::uniform_int_distribution<int> dim(1, 67), wide(1, 320), narrow(1, 19);
  for (Isa isa : ep::test::runnable_isas())
    for (double s : {0.0, 0.5, 0.9, 0.99, 1.0}) {
      for (int t = 0; t < 8; ++t)
        check_spmm(isa, 1, dim(rng), wide(rng), narrow(rng), s, Act::relu, rng, false, true);
      check_spmm(isa, 1, 37, 301, 1, s, Act::none, rng, false, true);
      check_spmm(isa, 1, 29, 203, 87, s, Act::relu6, rng, false, true);
    }
  // a table is only made for a stream of this K
  PackedSparseF32 p;
  p.k = 4;
  p.deltas = {1, 5};
  EXPECT_TRUE(spmm_channels(p).empty());
}

// The octet form (AVX2's one-column layout) holds exactly the stream's weights: rebuilt from its
// slots (window start + lane index), every weight and bias comes back, each window lies
// inside [0, max(k, 8)), and padding lanes carry weight 0. K below, at and past multiples of 8
// (the last window shifted back to k - 8), empty rows and groups, M past a multiple of 8.
TEST(PackSparse, OctetsRebuildTheWeight) {
  std::mt19937 rng(71);
  for (int64_t m : {1, 5, 8, 13, 40})
    for (int64_t k : {1, 3, 7, 8, 9, 20, 48, 203})
      for (double s : {0.0, 0.5, 0.9, 1.0}) {
        auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
        sparsify(rng, w, s);
        if (m > 2) std::fill(w.begin() + k, w.begin() + 2 * k, 0.0f);  // an empty row
        const PackedSparseF32 p = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
        const SparseF32Octets o = pack_sparse_f32_octets(p);
        SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k) +
                     " s=" + std::to_string(s));
        const int64_t groups = (m + 7) / 8;
        ASSERT_EQ(int64_t(o.gslots.size()), groups);
        ASSERT_EQ(o.gidx.size(), o.gbase.size() * 8);
        ASSERT_EQ(o.gw.size(), o.gbase.size() * 8);
        ASSERT_EQ(int64_t(o.gbias.size()), groups * 8);
        std::vector<float> w2(size_t(m * k), 0.0f);
        // the lowest channel of row r not yet stored in a slot (k when none is left)
        const auto pending = [&](int64_t r) {
          int64_t c = 0;
          while (c < k && (w[size_t(r * k + c)] == 0.0f || w2[size_t(r * k + c)] != 0.0f)) ++c;
          return c;
        };
        size_t slot = 0;
        for (int64_t g = 0; g < groups; ++g)
          for (int32_t j = 0; j < o.gslots[size_t(g)]; ++j, ++slot) {
            const int64_t base = o.gbase[slot];
            ASSERT_GE(base, 0);
            ASSERT_LE(base + 8, std::max<int64_t>(k, 8));
            // the window starts at the group's lowest pending channel (at most k - 8), and a row
            // whose pending weight lies inside it never leaves its lane empty
            int64_t low = k;
            for (int64_t r = g * 8; r < std::min(m, g * 8 + 8); ++r)
              low = std::min(low, pending(r));
            ASSERT_LT(low, k) << "a slot with no weight";
            ASSERT_EQ(base, std::max<int64_t>(std::min(low, k - 8), 0));
            for (int64_t lane = 0; lane < 8 && g * 8 + lane < m; ++lane)
              if (o.gw[slot * 8 + size_t(lane)] == 0.0f)
                ASSERT_GE(pending(g * 8 + lane), std::min(base + 8, k))
                    << "lane " << lane << " left empty";
            for (int64_t lane = 0; lane < 8; ++lane) {
              const int64_t r = g * 8 + lane, c = base + o.gidx[slot * 8 + size_t(lane)];
              const float v = o.gw[slot * 8 + size_t(lane)];
              if (v == 0.0f) continue;
              ASSERT_LT(r, m) << "a padding row holds a weight";
              ASSERT_LT(c, k);
              ASSERT_EQ(w2[size_t(r * k + c)], 0.0f) << "a weight stored twice";
              w2[size_t(r * k + c)] = v;
            }
          }
        ASSERT_EQ(slot, o.gbase.size());
        ASSERT_EQ(w2, w);
        for (int64_t r = 0; r < groups * 8; ++r)
          ASSERT_EQ(o.gbias[size_t(r)], r < m ? bias[size_t(r)] : 0.0f);
      }
}

// The AVX2 kernel on octet arguments directly (not through a layer's choice): one column against
// the reference kernel on the stream, every row count around a group, K below, at and past 8,
// clamps, empty rows, and a slice of groups given as a call of its own (as threads do).
TEST(SpmmF32, OctetsMatchReference) {
  const auto isas = ep::test::runnable_isas();
  if (std::find(isas.begin(), isas.end(), Isa::avx2) == isas.end())
    GTEST_SKIP() << "this CPU cannot run the AVX2 path";
  std::mt19937 rng(74);
  for (int64_t m : {1, 7, 8, 9, 31, 64})
    for (int64_t k : {1, 5, 8, 9, 40, 203})
      for (double s : {0.0, 0.7, 0.95, 1.0}) {
        auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
        sparsify(rng, w, s);
        if (m > 2) std::fill(w.begin() + k, w.begin() + 2 * k, 0.0f);
        const auto x = random_floats(rng, k, -2.f, 2.f);
        const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
        const SparseF32Octets o = pack_sparse_f32_octets(packed);
        SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k) +
                     " s=" + std::to_string(s));
        std::vector<float> ref(size_t(m) + 1, -777.0f), y(size_t(m) + 1, -777.0f);
        SpmmF32Args p = spmm_f32_args(packed, x.data(), 1, ref.data(), 1, 1);
        act_bounds(Act::relu6, &p.lo, &p.hi);
        reference::spmm_f32_b1(p);
        // groups [1, end) as one call, then group 0 as another
        const int64_t groups = (m + 7) / 8;
        int64_t slot0 = o.gslots.empty() ? 0 : o.gslots[0];
        for (int part = 0; part < 2; ++part) {
          const int64_t g0 = part == 0 ? std::min<int64_t>(1, groups) : 0;
          const int64_t g1 = part == 0 ? groups : std::min<int64_t>(1, groups);
          if (g1 <= g0) continue;
          SpmmF32Args q = p;
          q.y = y.data() + g0 * 8;
          q.m = std::min(m, g1 * 8) - g0 * 8;
          q.octets = true;
          q.gslots = o.gslots.data() + g0;
          q.gbase = o.gbase.data() + (g0 ? slot0 : 0);
          q.gidx = o.gidx.data() + (g0 ? slot0 : 0) * 8;
          q.gw = o.gw.data() + (g0 ? slot0 : 0) * 8;
          q.gbias = o.gbias.data() + g0 * 8;
          kernel_table(Isa::avx2).spmm_f32_b1.fn(q);
        }
        ASSERT_EQ(y[size_t(m)], -777.0f) << "wrote past m";
        expect_near_reference(y, ref, w, bias, x, m, k, 1, 1, 1, -777.0f);
      }
}

// A b4 stream's rows (what its octets are made from): exactly the b1 stream of the same weight,
// the zeros stored inside its blocks dropped; and its octets are those of that b1 stream.
TEST(PackSparse, RowsOfBlocksArePackedRows) {
  std::mt19937 rng(73);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t m : {1, 4, 6, 13, 40})
    for (int64_t k : {1, 9, 48})
      for (double s : {0.0, 0.8, 1.0}) {
        auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
        for (int64_t r = 0; r < m; r += 4)
          for (int64_t c = 0; c < k; ++c) {
            const bool block_pruned = u(rng) < s;
            for (int64_t i = r; i < std::min(m, r + 4); ++i)
              if (block_pruned || u(rng) < 0.2) w[i * k + c] = 0.0f;  // zeros inside blocks too
          }
        SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k));
        const PackedSparseF32 b4 = pack_sparse_f32(w.data(), m, k, bias.data(), 4);
        const PackedSparseF32 b1 = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
        const PackedSparseF32 rows = rows_of_blocks(b4);
        EXPECT_EQ(rows.block, 1);
        EXPECT_EQ(rows.values, b1.values);
        EXPECT_EQ(rows.nnz, b1.nnz);
        EXPECT_EQ(rows.deltas, b1.deltas);
        const SparseF32Octets o4 = pack_sparse_f32_octets(b4), o1 = pack_sparse_f32_octets(b1);
        EXPECT_EQ(o4.gslots, o1.gslots);
        EXPECT_EQ(o4.gbase, o1.gbase);
        EXPECT_EQ(o4.gidx, o1.gidx);
        EXPECT_EQ(o4.gw, o1.gw);
        EXPECT_EQ(o4.gbias, o1.gbias);
      }
  const std::vector<float> w1(16, 1.0f);
  EXPECT_TRUE(rows_of_blocks(pack_sparse_f32(w1.data(), 4, 4, nullptr, 1)).nnz.empty());
}

// One column (an FC layer at batch 1) on every path: near the dense reference, and the same bits
// on 1, 2, 3 and 8 threads (the octets and row groups split by whole groups).
TEST(SparseLinear, OneColumnMatchesDenseOnEveryThreadCount) {
  std::mt19937 rng(72);
  for (Isa isa : ep::test::runnable_isas())
    for (int64_t m : {1, 7, 9, 64, 203})
      for (int64_t k : {2, 8, 13, 96, 301})
        for (double s : {0.5, 0.9, 0.97}) {
          auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
          sparsify(rng, w, s);
          if (m > 2) std::fill(w.begin() + k, w.begin() + 2 * k, 0.0f);  // an empty row
          const auto x = random_floats(rng, k, -2.f, 2.f);
          const int block = m % 4 == 1 ? 4 : 1;  // b4 layers (m = 1, 9) run their rows' octets
          SparseLinear sp(w.data(), m, k, bias.data(), block, Act::relu6, SparseKernel::sparse,
                          isa);
          SCOPED_TRACE(std::string(isa_name(isa)) + " block=" + std::to_string(block) + " m=" +
                       std::to_string(m) + " k=" + std::to_string(k) + " s=" + std::to_string(s));
          EXPECT_EQ(sp.column_octets(), isa == Isa::avx2) << "forced sparse: every AVX2 layer";
          std::vector<float> y(size_t(m) + 1, -777.0f);  // one past m: must stay untouched
          sp.forward_kn(x.data(), 1, y.data(), 1);
          ASSERT_EQ(y[size_t(m)], -777.0f) << "wrote past m";
          for (int64_t r = 0; r < m; ++r) {
            double ref = bias[size_t(r)], mag = std::fabs(bias[size_t(r)]);
            for (int64_t c = 0; c < k; ++c) {
              ref += double(w[size_t(r * k + c)]) * x[size_t(c)];
              mag += std::fabs(double(w[size_t(r * k + c)]) * x[size_t(c)]);
            }
            ref = std::min(6.0, std::max(0.0, ref));
            ASSERT_LE(std::fabs(y[size_t(r)] - ref), 1e-5 * mag + 1e-30) << "row " << r;
          }
          for (int threads : {2, 3, 8}) {
            std::vector<float> yt(size_t(m) + 1, -777.0f);
            sp.forward_kn(x.data(), 1, yt.data(), threads);
            ASSERT_EQ(yt, y) << threads << " threads";
          }
        }
}

// The tile plan holds exactly the stream's entries, tile-major: rebuilt from it, the weight and
// bias come back, every entry lands in its tile, and K is split into balanced tiles that fit
// 4/3 of the L1 (one tile when K fits; an unknown L1 counts as kDefaultL1Bytes).
TEST(SpmmTilePlan, RoundTripsTileMajor) {
  std::mt19937 rng(21);
  for (int lanes : {4, 8, 16})
    for (int64_t l1 : {int64_t(0), int64_t(48 * 1024), int64_t(64 * 1024)})
      for (int64_t k : {int64_t(1100), int64_t(150)})
        for (double s : {0.0, 0.6, 0.9, 0.97}) {
          const int64_t m = 45;
          auto w = random_floats(rng, m * k);
          sparsify(rng, w, s);
          std::fill(w.begin() + 3 * k, w.begin() + 4 * k, 0.0f);  // an empty row
          auto bias = random_floats(rng, m);
          const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
          const SpmmTilePlan plan = plan_spmm_tiles(packed, lanes, l1);
          const int64_t budget = (l1 > 0 ? l1 : kDefaultL1Bytes) / 4;  // floats of X a tile holds
          // strips of 4 vectors, or of 3 with under 10 entries per row and 4-vector tile
          const int64_t tiles4 = (k * 4 * lanes + budget - 1) / budget;
          ASSERT_EQ(plan.strip, (packed.nonzeros() < 10 * m * tiles4 ? 3 : 4) * lanes)
              << "density " << s;
          ASSERT_GE(plan.tiles, k * plan.strip > budget ? 2 : 1)
              << "lanes=" << lanes << " l1=" << l1 << " s=" << s;
          const int64_t kt = (k + plan.tiles - 1) / plan.tiles;
          ASSERT_EQ(plan.kt, kt) << "balanced tiles";
          ASSERT_LE((kt - 1) * plan.strip, budget) << "a tile fits the budget";
          ASSERT_EQ(plan.bias, bias);
          std::vector<float> w2(m * k, 0.0f);
          size_t e = 0, c = 0;
          for (int64_t m0 = 0; m0 < m; m0 += plan.rows)
            for (int64_t t = 0; t < plan.tiles; ++t)
              for (int64_t r = m0; r < std::min(m, m0 + plan.rows); ++r, ++c)
                for (int32_t j = 0; j < plan.counts.at(c); ++j, ++e) {
                  const int64_t chan =
                      t * kt + plan.offsets.at(e) / plan.strip;  // offsets are tile-relative
                  ASSERT_EQ(plan.offsets[e] % plan.strip, 0);
                  ASSERT_GE(chan, t * kt);
                  ASSERT_LT(chan, std::min(k, (t + 1) * kt));
                  ASSERT_EQ(w2[r * k + chan], 0.0f) << "an entry twice";
                  w2[r * k + chan] = plan.values.at(e);
                }
          ASSERT_EQ(c, plan.counts.size());
          ASSERT_EQ(e, plan.values.size());
          ASSERT_EQ(plan.offsets.size(), e + 4) << "offsets are padded for the read-ahead";
          ASSERT_EQ(w2, w);
        }
  // No plan for 4-channel blocks; one tile when K * strip fits the L1; more for a smaller L1.
  std::vector<float> w(8 * 1100, 1.0f);
  EXPECT_EQ(plan_spmm_tiles(pack_sparse_f32(w.data(), 8, 1100, nullptr, 4), 16, 0).tiles, 0);
  EXPECT_EQ(plan_spmm_tiles(pack_sparse_f32(w.data(), 8, 192, nullptr, 1), 16, 48 * 1024).tiles, 1);
  EXPECT_EQ(plan_spmm_tiles(pack_sparse_f32(w.data(), 8, 192, nullptr, 1), 16, 32 * 1024).tiles, 2);
  // A stream whose row channels go backwards (not from the packer) is left untiled.
  PackedSparseF32 bad = pack_sparse_f32(w.data(), 8, 1100, nullptr, 1);
  std::swap(bad.deltas[1], bad.deltas[2]);
  bad.deltas[1] = -bad.deltas[1];
  EXPECT_EQ(plan_spmm_tiles(bad, 16, 0).tiles, 0);
}

// Every path given a tile plan (several K tiles, or one) matches the reference, over full
// strips and the narrower tail strip, and really reads the plan: zeroed plan values leave
// bias-only outputs.
TEST(SpmmF32, KTiledPlanMatchesReference) {
  std::mt19937 rng(17);
  for (Isa isa : ep::test::runnable_isas()) {
    if (isa == Isa::reference) continue;  // the reference kernel ignores plans
    for (double s : {0.5, 0.9})
      for (Act act : {Act::none, Act::relu6})
        check_spmm(isa, 1, 400, 1100, 150, s, act, rng, /*tiled=*/true);
    // One tile. On AVX-512: n = 20 and 40 have no full strip, only 1 or 2 vectors; 117 ends in 3
    // vectors; in 80 and 150 one vector joins the last strip; most end in less than a vector.
    for (int64_t n : {20, 40, 67, 80, 117, 150, 200})
      check_spmm(isa, 1, 300, 150, n, 0.5, Act::relu, rng, /*tiled=*/true);
    check_spmm(isa, 1, 400, 600, 150, 0.5, Act::none, rng,
               /*tiled=*/true);  // blocks x strips within kBlockMajorBytes
  }
  for (Isa isa : ep::test::runnable_isas()) {
    if (isa == Isa::reference) continue;
    const int64_t m = 400, k = 1100, n = 150;
    auto w = random_floats(rng, m * k);
    sparsify(rng, w, 0.5);
    auto bias = random_floats(rng, m), x = random_floats(rng, k * n);
    const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
    const auto& t = kernel_table(isa);
    SpmmTilePlan plan = plan_spmm_tiles(packed, t.spmm_f32_b1.tile, 48 * 1024);
    ASSERT_GE(plan.tiles, 2);
    std::fill(plan.values.begin(), plan.values.end(), 0.0f);
    std::vector<float> y(m * n);
    SpmmF32Args p = spmm_f32_args(packed, x.data(), n, y.data(), n, n);
    p.tiles = &plan;
    t.spmm_f32_b1.fn(p);
    const int64_t lanes = t.spmm_f32_b1.tile,
                  planned = n / lanes * lanes;  // columns the tiled passes cover
    ASSERT_LT(planned, n);
    ASSERT_GT(planned % spmm_plan_strip(plan, n, lanes), 0)
        << "whole vectors after the last full strip";
    // every column comes from the plan, the last partial vector's too (its tile copy zero
    // padded): with the plan's weights zeroed, each output is its bias
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) ASSERT_EQ(y[r * n + c], bias[r]) << isa_name(isa) << " " << c;
  }
}

// Strips of 3 vectors, which plans of very sparse layers take (under 10 entries per row and
// 4-vector tile), on every path, against the reference: one block of rows over widths that end
// in no strip, 1-3 vectors, a vector joined to the last strip, a 4th vector beside the plan's 3
// (spmm_plan_strip's small-N case) and a remainder; then several blocks, block-major and
// strip-major. Each row has exactly `per_row` entries, so the plan's shape is known; zeroed plan
// values prove the tiled passes ran.
TEST(SpmmF32, ThreeVectorStripsMatchReference) {
  std::mt19937 rng(41);
  const int64_t l1 = 48 * 1024, budget = l1 / 4;
  for (Isa isa : ep::test::runnable_isas()) {
    if (isa == Isa::reference) continue;
    const auto& t = kernel_table(isa);
    const int64_t lanes = t.spmm_f32_b1.tile;
    // (k, blocks): one block; block-major (every full strip's copy within kBlockMajorBytes);
    // strip-major over several blocks (more than that)
    const int64_t k_major = kBlockMajorBytes / (2 * 4 * lanes * 4) * 4 / 5, k_strips = 2 * k_major;
    for (auto [k, several] :
         {std::pair<int64_t, bool>{150, false}, {k_major, true}, {k_strips, true}}) {
      const int64_t tiles4 = (k * 4 * lanes + budget - 1) / budget,
                    tiles3 = (k * 3 * lanes + budget - 1) / budget;
      const int64_t per_row =
          several ? 10 * tiles4 - 2 : 7 * tiles3;  // 5 * tiles3 <= per_row < 10 * tiles4
      const int64_t rows =
          std::max<int64_t>(16, (int64_t(1) << 15) / per_row);  // the plan's block of rows
      const int64_t m = several ? 2 * rows + 5 : 300;
      std::vector<float> w = weight_with_rows_of(rng, m, k, per_row), bias = random_floats(rng, m);
      std::fill(w.begin() + 2 * k, w.begin() + 3 * k, 0.0f);  // an empty row
      const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
      const SpmmTilePlan plan = plan_spmm_tiles(packed, int(lanes), l1);
      ASSERT_EQ(plan.strip, 3 * lanes) << isa_name(isa) << " k=" << k;
      ASSERT_EQ(int64_t(plan.block_entries.size()) - 1, several ? 3 : 1);
      SpmmTilePlan zeroed = plan;
      std::fill(zeroed.values.begin(), zeroed.values.end(), 0.0f);
      const std::vector<int64_t> widths =
          several ? std::vector<int64_t>{8 * lanes + 1, 7 * lanes + 5}
                  // 2 strips of 3+1 vectors; of 3, 1 vector
                  : std::vector<int64_t>{lanes + 3, 2 * lanes,     3 * lanes,      4 * lanes + 5,
                                         5 * lanes, 8 * lanes + 1, 11 * lanes + 2, 13 * lanes};
      for (int64_t n : widths) {
        ASSERT_TRUE(spmm_plan_applies(&plan, m, k, n, packed.nonzeros(), lanes)) << n;
        const int64_t ldx = n + 3, ldy = n + 2;
        auto x = random_floats(rng, k * ldx, -2.f, 2.f);
        const float sentinel = -777.0f;
        std::vector<float> y(m * ldy, sentinel), ref(m * ldy, sentinel);
        SpmmF32Args p = spmm_f32_args(packed, x.data(), ldx, ref.data(), ldy, n);
        reference::spmm_f32_b1(p);
        p.y = y.data();
        p.tiles = &plan;
        t.spmm_f32_b1.fn(p);
        {
          SCOPED_TRACE(std::string(isa_name(isa)) + " k=" + std::to_string(k) +
                       " n=" + std::to_string(n));
          expect_near_reference(y, ref, w, bias, x, m, k, n, ldx, ldy, sentinel);
        }
        p.tiles = &zeroed;
        t.spmm_f32_b1.fn(p);
        const int64_t planned = n / lanes * lanes;  // whole vectors come from the plan
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < planned; ++c)
            ASSERT_EQ(y[r * ldy + c], bias[r]) << isa_name(isa) << " n=" << n;
      }
    }
  }
}

// The plan runs only where it pays (spmm_plan_applies: 3 entries per input channel, 5 per row
// and tile); below that the kernel walks the stream even when given a plan. Zeroed plan values
// tell which one ran.
TEST(SpmmF32, PlanRunsOnlyWhereItPays) {
  std::mt19937 rng(37);
  const int64_t m = 256, k = 256, n = 80;
  for (Isa isa : ep::test::runnable_isas()) {
    if (isa == Isa::reference) continue;
    const auto& t = kernel_table(isa);
    for (double s : {0.9, 0.995}) {
      auto w = random_floats(rng, m * k), bias = random_floats(rng, m),
           x = random_floats(rng, k * n);
      sparsify(rng, w, s);
      const PackedSparseF32 packed = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
      SpmmTilePlan plan = plan_spmm_tiles(packed, t.spmm_f32_b1.tile, 48 * 1024);
      const int64_t entries = packed.nonzeros();
      const bool pays = entries >= 3 * k && entries >= 5 * m * plan.tiles;
      EXPECT_EQ(pays, s < 0.99) << "density " << entries;
      EXPECT_EQ(spmm_plan_applies(&plan, m, k, n, entries, t.spmm_f32_b1.tile), pays);
      std::fill(plan.values.begin(), plan.values.end(), 0.0f);
      std::vector<float> y(m * n);
      SpmmF32Args p = spmm_f32_args(packed, x.data(), n, y.data(), n, n);
      p.tiles = &plan;
      t.spmm_f32_b1.fn(p);
      int64_t bias_only = 0;
      for (int64_t r = 0; r < m; ++r) bias_only += y[r * n] == bias[r];
      const int64_t empty_rows = std::count(packed.nnz.begin(), packed.nnz.end(), 0);
      EXPECT_EQ(bias_only, pays ? m : empty_rows) << isa_name(isa) << " s=" << s;
    }
  }
}

// SparseLinear makes the plan itself: a layer wide enough to tile agrees with DenseLinear, and
// with any thread count bit for bit (1 thread runs block-major; 2 threads split the plan's two
// blocks of rows, each block strip by strip, and the tail columns as a third task).
TEST(SparseLinear, KTiledLayerMatchesDense) {
  std::mt19937 rng(23);
  const int64_t m = 300, k = 900;
  // strips and what follows them; on AVX-512 n = 40 has no full strip
  for (int64_t n : {150, 40}) {
    for (Isa isa : ep::test::runnable_isas()) {
      auto w = random_floats(rng, m * k), bias = random_floats(rng, m),
           x = random_floats(rng, n * k);
      sparsify(rng, w, 0.8);
      SparseLinear sp(w.data(), m, k, bias.data(), 1, Act::relu, SparseKernel::sparse, isa);
      DenseLinear de(w.data(), m, k, bias.data(), Act::relu, isa);
      if (isa != Isa::reference) {
        const SpmmTilePlan plan =
            plan_spmm_tiles(pack_sparse_f32(w.data(), m, k, bias.data(), 1),
                            kernel_table(isa).spmm_f32_b1.tile, cpu_features().l1d_bytes);
        ASSERT_GE(plan.block_entries.size(), 3u) << "two or more blocks of rows";
      }
      std::vector<float> y1(m * n), y2(m * n), yd(m * n);
      sp.forward_kn(x.data(), n, y1.data(), 1);
      sp.forward_kn(x.data(), n, y2.data(), 2);
      de.forward_kn(x.data(), n, yd.data(), 1);
      EXPECT_EQ(y1, y2) << "threads must not change any bit";
      for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(y1[i], yd[i], 1e-3f) << isa_name(isa);
    }
  }
}

// Rows [m0, m1) of a stream are the stream of those rows packed alone: the threads' row parts.
TEST(PackSparse, RowsOfAStreamEqualTheRowsPackedAlone) {
  std::mt19937 rng(47);
  const int64_t m = 37, k = 29;
  auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
  sparsify(rng, w, 0.7);
  for (int64_t j = 0; j < k; ++j) w[size_t(5 * k + j)] = 0.0f;  // an empty row
  const PackedSparseF32 all = pack_sparse_f32(w.data(), m, k, bias.data(), 1);
  for (const auto& [m0, m1] :
       std::vector<std::pair<int64_t, int64_t>>{{0, m}, {0, 5}, {5, 6}, {6, 20}, {20, m}}) {
    const PackedSparseF32 part = sparse_rows(all, m0, m1);
    const PackedSparseF32 alone =
        pack_sparse_f32(w.data() + m0 * k, m1 - m0, k, bias.data() + m0, 1);
    EXPECT_EQ(part.m, m1 - m0);
    EXPECT_EQ(part.k, k);
    EXPECT_EQ(part.nnz, alone.nnz) << m0 << ".." << m1;
    EXPECT_EQ(part.deltas, alone.deltas) << m0 << ".." << m1;
    EXPECT_EQ(part.values, alone.values) << m0 << ".." << m1;
  }
  EXPECT_TRUE(sparse_rows(all, 3, 3).nnz.empty());
  EXPECT_TRUE(sparse_rows(all, 0, m + 1).nnz.empty());
  EXPECT_TRUE(sparse_rows(pack_sparse_f32(w.data(), 36, k, bias.data(), 4), 0, 4).nnz.empty());
}

// Inputs narrower than the plan's strip (a 7x7 layer's 49 columns) are one kernel call over all
// columns; threads split its output rows into parts instead, with the bits of one thread for
// every thread count (rows that split evenly and not). So do inputs of any width when the plan
// holds fewer row blocks than threads (these layers' plans hold one): a 14x14 layer's 196 columns
// (12 vectors and 4 columns on AVX2) and a wide one.
TEST(SparseLinear, RowPartsOfNarrowInputsKeepTheirBits) {
  std::mt19937 rng(53);
  const int64_t k = 480;
  for (Isa isa : ep::test::runnable_isas()) {
    if (isa == Isa::reference) continue;
    const int64_t lanes = kernel_table(isa).spmm_f32_b1.tile;
    for (int64_t m : {160, 203}) {
      auto w = random_floats(rng, m * k), bias = random_floats(rng, m);
      sparsify(rng, w, 0.9);
      SparseLinear sp(w.data(), m, k, bias.data(), 1, Act::relu6, SparseKernel::sparse, isa);
      DenseLinear de(w.data(), m, k, bias.data(), Act::relu6, isa);
      for (int64_t n : {3 * lanes + 1, 2 * lanes, 12 * lanes + 4, 24 * lanes}) {
        auto x = random_floats(rng, n * k);
        std::vector<float> y1(m * n), yd(m * n);
        sp.forward_kn(x.data(), n, y1.data(), 1);
        de.forward_kn(x.data(), n, yd.data(), 1);
        for (int64_t i = 0; i < m * n; ++i)
          ASSERT_NEAR(y1[i], yd[i], 1e-3f) << isa_name(isa) << " m=" << m << " n=" << n;
        for (int threads : {2, 3, 4}) {
          std::vector<float> yt(m * n, -7.0f);
          sp.forward_kn(x.data(), n, yt.data(), threads);
          EXPECT_EQ(y1, yt) << isa_name(isa) << " m=" << m << " n=" << n << " threads " << threads
                            << ": threads must not change any bit";
        }
      }
    }
  }
}

// A layer whose plan takes 3-vector strips gives the bits of one thread with two: with several
// blocks of rows, the threads split the blocks (full strips of spmm_plan_strip columns; the
// columns after them as one more task); with one block, they split the columns at multiples of
// 64, so a thread's columns may fall in other strips. Both with 3-vector strips and with a 4th
// vector beside them.
TEST(SparseLinear, ThreeVectorStripsKeepTheirBitsOverThreads) {
  std::mt19937 rng(43);
  const int64_t l1 = cpu_features().l1d_bytes > 0 ? cpu_features().l1d_bytes : kDefaultL1Bytes;
  for (Isa isa : ep::test::runnable_isas())
    for (bool several : {true, false}) {
      if (isa == Isa::reference) continue;
      const int64_t lanes = kernel_table(isa).spmm_f32_b1.tile, k = several ? 2000 : 150;
      const int64_t tiles4 = (k * 4 * lanes * 4 + l1 - 1) / l1,
                    tiles3 = (k * 3 * lanes * 4 + l1 - 1) / l1;
      const int64_t per_row = several ? 10 * tiles4 - 2 : 7 * tiles3;
      const int64_t m = several ? 2 * std::max<int64_t>(16, (int64_t(1) << 15) / per_row) + 7
                                : 300;  // 3 blocks or 1
      auto w = weight_with_rows_of(rng, m, k, per_row), bias = random_floats(rng, m);
      const SpmmTilePlan plan =
          plan_spmm_tiles(pack_sparse_f32(w.data(), m, k, bias.data(), 1), int(lanes), l1);
      ASSERT_EQ(plan.strip, 3 * lanes) << isa_name(isa);
      ASSERT_EQ(plan.block_entries.size(), several ? 4u : 2u);
      SparseLinear sp(w.data(), m, k, bias.data(), 1, Act::none, SparseKernel::sparse, isa);
      DenseLinear de(w.data(), m, k, bias.data(), Act::none, isa);
      for (int64_t n :
           {7 * lanes + 5, 8 * lanes + 5}) {  // 3-vector strips and a vector; 3+1-vector strips
        EXPECT_EQ(spmm_plan_strip(plan, n, lanes), (n < 8 * lanes ? 3 : 4) * lanes);
        auto x = random_floats(rng, n * k);
        std::vector<float> y1(m * n), y2(m * n), yd(m * n);
        sp.forward_kn(x.data(), n, y1.data(), 1);
        sp.forward_kn(x.data(), n, y2.data(), 2);
        de.forward_kn(x.data(), n, yd.data(), 1);
        EXPECT_EQ(y1, y2) << isa_name(isa) << " n=" << n << ": threads must not change any bit";
        for (int64_t i = 0; i < m * n; ++i)
          ASSERT_NEAR(y1[i], yd[i], 1e-3f) << isa_name(isa) << " n=" << n;
      }
    }
}

// Parts of a call's columns (forward_kn_part: a fused inverted residual's bands of pixels) that
// start on multiples of part_align() and end with the call or on such a multiple give every
// column the call's bits: unstructured and 4x1-block streams, with and without a tile plan (a
// very sparse 576x96 layer and a denser small one), MobileNet's plane sizes and odd ones, cut in
// 2 to 8 parts of whole units, the last one taking the rest.
TEST(SparseLinear, PartsOnTheWidestStripKeepTheCallsBits) {
  std::mt19937 rng(47);
  struct Shape {
    int64_t m, k;
    int block;
    double sparsity;
  };
  const Shape shapes[] = {{24, 144, 1, 0.9}, {96, 576, 1, 0.9},   {16, 32, 1, 0.9},
                          {32, 192, 4, 0.8}, {160, 960, 1, 0.95}, {8, 16, 1, 0.5}};
  for (Isa isa : ep::test::runnable_isas())
    for (const Shape& sh : shapes) {
      auto w = random_floats(rng, sh.m * sh.k), bias = random_floats(rng, sh.m);
      if (sh.block == 4) {  // zero whole 4x1 blocks
        for (int64_t r = 0; r < sh.m; r += 4)
          for (int64_t c = 0; c < sh.k; ++c)
            if (std::uniform_real_distribution<double>(0, 1)(rng) < sh.sparsity)
              for (int64_t i = 0; i < 4; ++i) w[(r + i) * sh.k + c] = 0.0f;
      } else {
        sparsify(rng, w, sh.sparsity);
      }
      SparseLinear sp(w.data(), sh.m, sh.k, bias.data(), sh.block, Act::relu6, SparseKernel::sparse,
                      isa);
      const int64_t align = sp.part_align();
      for (int64_t n : {int64_t(196), int64_t(784), int64_t(3136), int64_t(506), 3 * align + 5}) {
        const auto x = random_floats(rng, sh.k * n);
        std::vector<float> whole(size_t(sh.m * n));
        sp.forward_kn(x.data(), n, whole.data(), 1);
        const int64_t units = n / align;
        for (int64_t parts = 2; parts <= std::min<int64_t>(8, units); parts *= 2) {
          std::vector<float> y(size_t(sh.m * n), 123.0f);
          for (int64_t i = 0; i < parts; ++i) {
            const int64_t p0 = units * i / parts * align;
            const int64_t p1 = i + 1 == parts ? n : units * (i + 1) / parts * align;
            sp.forward_kn_part(x.data() + p0, n, p1 - p0, y.data() + p0, n);
          }
          ASSERT_EQ(y, whole) << isa_name(isa) << " " << sh.m << "x" << sh.k << " block "
                              << sh.block << " n=" << n << " in " << parts << " parts";
        }
      }
    }
}

// One block of rows and one vector after the last full strip: one thread runs that vector as a
// fifth of the last strip; with two threads the columns split at 64 and it runs alone; same bits.
TEST(SparseLinear, VectorJoinedToLastStripKeepsItsBits) {
  std::mt19937 rng(31);
  const int64_t m = 96, k = 150;
  for (Isa isa : ep::test::runnable_isas()) {
    if (isa == Isa::reference) continue;
    const int64_t lanes = kernel_table(isa).spmm_f32_b1.tile,
                  n = 64 + lanes + 3;  // 2 threads: 64 + the rest
    auto w = random_floats(rng, m * k), bias = random_floats(rng, m), x = random_floats(rng, n * k);
    sparsify(rng, w, 0.5);
    ASSERT_EQ(plan_spmm_tiles(pack_sparse_f32(w.data(), m, k, bias.data(), 1), lanes,
                              cpu_features().l1d_bytes)
                  .block_entries.size(),
              2u)
        << "one block of rows";
    SparseLinear sp(w.data(), m, k, bias.data(), 1, Act::none, SparseKernel::sparse, isa);
    DenseLinear de(w.data(), m, k, bias.data(), Act::none, isa);
    std::vector<float> y1(m * n), y2(m * n), yd(m * n);
    sp.forward_kn(x.data(), n, y1.data(), 1);
    sp.forward_kn(x.data(), n, y2.data(), 2);
    de.forward_kn(x.data(), n, yd.data(), 1);
    EXPECT_EQ(y1, y2) << isa_name(isa);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(y1[i], yd[i], 1e-3f) << isa_name(isa);
  }
}

// The plan is made by the first call at least one vector wide: a layer used only with N = 1 (or
// on the reference path, or with 4-channel blocks) never holds one.
TEST(SparseLinear, PlansOnTheFirstWideCall) {
  std::mt19937 rng(29);
  const int64_t m = 40, k = 300;
  auto w = random_floats(rng, m * k), x = random_floats(rng, 200 * k);
  sparsify(rng, w, 0.9);
  std::vector<float> y(m * 200);
  for (Isa isa : ep::test::runnable_isas())
    for (int block : {1, 4}) {
      SparseLinear sp(w.data(), m, k, nullptr, block, Act::none, SparseKernel::sparse, isa);
      EXPECT_FALSE(sp.planned());
      sp.forward(x.data(), 1, y.data(), 1);
      EXPECT_FALSE(sp.planned()) << "N = 1 runs from the stream";
      sp.forward(x.data(), 200, y.data(), 2);
      EXPECT_EQ(sp.planned(), block == 1 && isa != Isa::reference)
          << isa_name(isa) << " block " << block;
    }
  // Two threads making the first wide call at once: one makes the plan, both get the same bits.
  for (Isa isa : ep::test::runnable_isas()) {
    SparseLinear sp(w.data(), m, k, nullptr, 1, Act::none, SparseKernel::sparse, isa);
    std::vector<float> y1(m * 200), y2(m * 200), want(m * 200);
    std::thread a([&] { sp.forward(x.data(), 200, y1.data(), 1); });
    std::thread b([&] { sp.forward(x.data(), 200, y2.data(), 1); });
    a.join();
    b.join();
    sp.forward(x.data(), 200, want.data(), 1);
    EXPECT_EQ(y1, want);
    EXPECT_EQ(y2, want);
  }
}

TEST(SparseLinear, MatchesDenseAndChoosesKernel) {
  std::mt19937 rng(9);
  const int64_t m = 37, k = 50, n = 77;
  for (Isa isa : ep::test::runnable_isas())
    for (int block : {1, 4})
      for (double s : {0.3, 0.9}) {
        auto w = random_floats(rng, m * k), bias = random_floats(rng, m),
             x = random_floats(rng, n * k);
        sparsify(rng, w, s);
        SparseLinear sp(w.data(), m, k, bias.data(), block, Act::relu, SparseKernel::sparse, isa);
        SparseLinear au(w.data(), m, k, bias.data(), block, Act::relu, SparseKernel::automatic,
                        isa);
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

// `auto` keeps the dense kernel for calls narrower than a vector unless the weight is large and
// at most kAutoMaxDensityNarrow stored; a narrow call then gives the dense layer's bits, a wide
// one the sparse kernel's. One column on AVX-512 is the exception: it runs the sparse row groups
// (faster than the dense GEMV at every density `auto` keeps sparse), so it gives the sparse
// layer's bits; on AVX2 so do the octets where their lanes and group costs are at most
// kAutoMaxOctetLanes of M*K (at 95 % and on long rows at 70 %, not on rows of 40 at 70 %).
TEST(SparseLinear, AutoRunsNarrowCallsDenseUnlessLargeAndVerySparse) {
  std::mt19937 rng(12);
  const int64_t big = 520;  // 520 * 520 >= kAutoNarrowMinWeights
  ASSERT_GE(big * big, SparseLinear::kAutoNarrowMinWeights);
  for (Isa isa : ep::test::runnable_isas()) {
    const bool simd = kernel_table(isa).spmm_f32_b1.tile > 1;
    for (auto [m, k, s, narrow, octets] : {std::tuple{big, big, 0.95, false, true},
                                           {big, big, 0.7, true, true},
                                           {int64_t(48), int64_t(64), 0.95, true, true},
                                           {big, int64_t(40), 0.7, true, false}}) {
      auto w = random_floats(rng, m * k), bias = random_floats(rng, m), x = random_floats(rng, k);
      sparsify(rng, w, s);
      SparseLinear au(w.data(), m, k, bias.data(), 1, Act::none, SparseKernel::automatic, isa);
      SparseLinear sp(w.data(), m, k, bias.data(), 1, Act::none, SparseKernel::sparse, isa);
      DenseLinear de(w.data(), m, k, bias.data(), Act::none, isa);
      SCOPED_TRACE(std::string(isa_name(isa)) + " m=" + std::to_string(m) +
                   " s=" + std::to_string(s));
      ASSERT_TRUE(au.uses_sparse());
      EXPECT_EQ(au.narrow_dense(), narrow && simd);
      EXPECT_FALSE(sp.narrow_dense());
      std::vector<float> ya(m), ys(m), yd(m);
      au.forward_kn(x.data(), 1, ya.data(), 1);
      sp.forward_kn(x.data(), 1, ys.data(), 1);
      de.forward_kn(x.data(), 1, yd.data(), 1);
      const bool sparse_column = isa == Isa::avx512 || (isa == Isa::avx2 && octets);
      EXPECT_EQ(au.column_octets(), isa == Isa::avx2 && octets);
      EXPECT_EQ(ya, au.narrow_dense() && !sparse_column ? yd : ys);
      // three columns (below every vector width): the dense copy when there is one
      auto x3 = random_floats(rng, k * 3);
      std::vector<float> ya3(m * 3), ys3(m * 3), yd3(m * 3);
      au.forward_kn(x3.data(), 3, ya3.data(), 1);
      sp.forward_kn(x3.data(), 3, ys3.data(), 1);
      de.forward_kn(x3.data(), 3, yd3.data(), 1);
      EXPECT_EQ(ya3, au.narrow_dense() ? yd3 : ys3);
    }
  }
}
