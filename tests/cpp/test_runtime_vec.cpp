// The runtime's per-ISA depthwise loops and Winograd transforms (runtime/ops/vec.h) against a
// scalar double-precision reference, on every path this CPU runs (and neon under qemu). Whole-model
// fixtures are small and their channel counts few, so these tests reach the code they would miss:
// the plane kernel's forms (small planes mostly take the row kernel: planes of up to 20x20
// outputs run channel-minor unless the plane kernel reads them in place), and the row kernel's
// channel tails (counts that are not a multiple of 16) and edge pixels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/ops/vec.h"
#include "test_util.h"

namespace {

struct DwCase {
  int64_t h, w, k, stride, dil, pad_t, pad_l;
};

int64_t out_dim(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pad_before) {
  // the TFLite SAME size for pad_before = (total) / 2, VALID for pad_before = 0
  const int64_t ek = (k - 1) * d + 1;
  return pad_before > 0 ? (in + s - 1) / s : (in - ek) / s + 1;
}

TEST(RuntimeVec, DepthwisePlaneMatchesReferenceOnEveryPath) {
  const DwCase cases[] = {
      {56, 56, 3, 1, 1, 1, 1},  // MobileNet's large planes
      {57, 55, 3, 2, 1, 0, 0},  // stride 2 after an explicit PAD (VALID), odd sizes
      {30, 29, 5, 1, 1, 2, 2},
      {33, 31, 5, 2, 1, 0, 0},
      {28, 28, 3, 2, 1, 1, 1},
      {14, 14, 3, 1, 1, 1, 1},
      {7, 7, 5, 1, 1, 2, 2},
      {7, 7, 3, 2, 1, 1, 1},
      {25, 23, 3, 1, 2, 2, 2},  // dilated: the generic loop
      {5, 40, 3, 1, 1, 1, 1},   // wide and short
      {40, 5, 5, 1, 1, 2, 2},   // narrower than a register
      // tall planes: the phase planes are filled in several bands of rows
      {200, 30, 3, 1, 1, 1, 1},
      {150, 41, 3, 2, 1, 0, 0},
      {120, 37, 5, 2, 1, 2, 2},
      {130, 18, 5, 1, 1, 2, 2},
      // SAME at stride 1 straight from the input (dw_plane_direct): rows of just a vector and the
      // filter's reach on each path (4 + 1, 8 + 1 and 8 + 2, 16 + 1 and 16 + 2 floats), one
      // short of it (the padded copy), and plane heights that leave 1 or 2 rows after the groups
      {6, 5, 3, 1, 1, 1, 1},
      {2, 9, 3, 1, 1, 1, 1},
      {4, 10, 5, 1, 1, 2, 2},
      {9, 8, 3, 1, 1, 1, 1},
      {3, 17, 3, 1, 1, 1, 1},
      {5, 18, 5, 1, 1, 2, 2},
      {1, 20, 3, 1, 1, 1, 1},
      {11, 33, 3, 1, 1, 1, 1},
      {13, 35, 5, 1, 1, 2, 2},
      // rows wider than the static row of zeros the lines above and below the image read
      {3, 4200, 3, 1, 1, 1, 1},
  };
  std::mt19937 rng(7);
  for (const DwCase& c : cases) {
    const int64_t oh = out_dim(c.h, c.k, c.stride, c.dil, c.pad_t);
    const int64_t ow = out_dim(c.w, c.k, c.stride, c.dil, c.pad_l);
    ASSERT_GT(oh, 0);
    ASSERT_GT(ow, 0);
    const auto x = ep::test::random_floats(rng, c.h * c.w);
    const auto taps = ep::test::random_floats(rng, c.k * c.k);
    const float bias = 0.25f, lo = -0.75f, hi = 1.5f;
    std::vector<double> want(size_t(oh * ow));
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        double s = bias;
        for (int64_t ky = 0; ky < c.k; ++ky)
          for (int64_t kx = 0; kx < c.k; ++kx) {
            const int64_t iy = oy * c.stride - c.pad_t + ky * c.dil;
            const int64_t ix = ox * c.stride - c.pad_l + kx * c.dil;
            if (iy >= 0 && iy < c.h && ix >= 0 && ix < c.w)
              s += double(x[iy * c.w + ix]) * taps[ky * c.k + kx];
          }
        want[oy * ow + ox] = std::min(std::max(s, double(lo)), double(hi));
      }
    for (ep::Isa isa : ep::test::runnable_isas()) {
      // one plane past the output is a canary: the kernel writes exactly oh * ow floats
      std::vector<float> y(size_t(oh * ow + 64), 123.0f);
      ep::rt::DwPlaneArgs a;
      a.x = x.data(), a.h = c.h, a.w = c.w, a.wt = taps.data(), a.bias = bias;
      a.kh = a.kw = c.k, a.stride_h = a.stride_w = c.stride, a.dil_h = a.dil_w = c.dil;
      a.pad_t = c.pad_t, a.pad_l = c.pad_l, a.y = y.data(), a.oh = oh, a.ow = ow;
      a.lo = lo, a.hi = hi;
      ep::rt::vec_ops(isa).dw_plane(a);
      double err = 0;
      for (int64_t i = 0; i < oh * ow; ++i) err = std::max(err, std::fabs(y[i] - want[i]));
      EXPECT_LT(err, 1e-5) << ep::isa_name(isa) << " " << c.h << "x" << c.w << " k" << c.k << "/"
                           << c.stride << " d" << c.dil;
      for (int64_t i = oh * ow; i < int64_t(y.size()); ++i)
        ASSERT_EQ(y[i], 123.0f) << ep::isa_name(isa) << " wrote past the plane";
    }
  }
}

// Stride-2 planes read in place from zero padding (DwPlaneArgs::ld, dw_plane_s2: the fused
// expansion's planes) give the bits of the same plane without padding (the phase-plane kernel):
// both sum the bias, then every tap in (ky, kx) order. SAME and PAD + VALID geometries, odd sizes,
// rows of one to several registers and of a register plus a few columns on every path.
TEST(RuntimeVec, PaddedStride2PlanesEqualTheUnpaddedKernel) {
  struct Case {
    int64_t h, w, k, pad_t, pad_l, pad_b, pad_r;
  };
  const Case cases[] = {
      {112, 112, 3, 0, 0, 1, 1},  // TFLite SAME on an even input
      {112, 112, 3, 1, 1, 1, 1},  // PyTorch's padding 1 (a folded PAD + VALID)
      {56, 56, 3, 1, 1, 0, 0},   {44, 41, 3, 0, 1, 1, 1}, {45, 43, 3, 1, 1, 1, 1},
      {28, 28, 5, 1, 1, 2, 2},   {56, 57, 5, 2, 2, 2, 2}, {31, 70, 5, 2, 2, 1, 1},
      {9, 40, 3, 1, 1, 1, 1},    {10, 33, 3, 1, 0, 1, 1}, {4, 36, 5, 2, 2, 2, 2},
      {18, 17, 3, 1, 1, 1, 1},  // 9 outputs a row: one register plus one on AVX2
      {16, 35, 3, 1, 1, 1, 1},  // 18: one AVX-512 register plus two
  };
  std::mt19937 rng(11);
  for (const Case& c : cases) {
    const int64_t oh = (c.h + c.pad_t + c.pad_b - c.k) / 2 + 1;
    const int64_t ow = (c.w + c.pad_l + c.pad_r - c.k) / 2 + 1;
    const auto x = ep::test::random_floats(rng, c.h * c.w);
    const auto taps = ep::test::random_floats(rng, c.k * c.k);
    for (ep::Isa isa : ep::test::runnable_isas()) {
      const ep::rt::VecOps& v = ep::rt::vec_ops(isa);
      ep::rt::DwPlaneArgs a;
      a.x = x.data(), a.h = c.h, a.w = c.w, a.wt = taps.data(), a.bias = 0.25f;
      a.kh = a.kw = c.k, a.stride_h = a.stride_w = 2;
      a.pad_t = c.pad_t, a.pad_l = c.pad_l, a.oh = oh, a.ow = ow;
      a.lo = -0.75f, a.hi = 1.5f;
      if (!ep::rt::dw_padded_fits(a, v.plane_lanes)) {
        EXPECT_LT(ow, v.plane_lanes) << ep::isa_name(isa) << " " << c.h << "x" << c.w;
        continue;
      }
      std::vector<float> want(size_t(oh * ow));
      a.y = want.data();
      v.dw_plane(a);
      int64_t bottom = 0, right = 0;
      ep::rt::dw_padded_extent(a, &bottom, &right);
      const int64_t ld = c.pad_l + c.w + right, rows = c.pad_t + c.h + bottom;
      std::vector<float> padded(size_t(rows * ld), 0.0f);
      for (int64_t iy = 0; iy < c.h; ++iy)
        std::copy(x.begin() + iy * c.w, x.begin() + (iy + 1) * c.w,
                  padded.begin() + (c.pad_t + iy) * ld + c.pad_l);
      std::vector<float> y(size_t(oh * ow + 64), 123.0f);  // a canary past the plane
      a.x = padded.data() + c.pad_t * ld + c.pad_l, a.ld = ld, a.y = y.data();
      v.dw_plane(a);
      for (int64_t i = 0; i < oh * ow; ++i)
        ASSERT_EQ(y[size_t(i)], want[size_t(i)])
            << ep::isa_name(isa) << " " << c.h << "x" << c.w << " k" << c.k << " at " << i;
      for (int64_t i = oh * ow; i < int64_t(y.size()); ++i)
        ASSERT_EQ(y[size_t(i)], 123.0f) << ep::isa_name(isa) << " wrote past the plane";
    }
  }
}

// Bands of output rows (DwPlaneArgs::oy0, oy1: the fused blocks' tasks on several threads) give
// the whole plane's bits and write only their rows, on both kernels that compute them
// (dw_plane_bands): SAME at stride 1 straight from the input, and padded stride-2 planes. Bands
// of one row, of a few rows, and ones that end at the plane's last row.
TEST(RuntimeVec, PlaneBandsEqualTheWholePlane) {
  struct Case {
    int64_t h, w, k, stride;
  };
  const Case cases[] = {{56, 56, 3, 1},   {23, 22, 5, 1}, {14, 14, 3, 1}, {9, 17, 3, 1},
                        {112, 110, 3, 2}, {44, 41, 5, 2}, {28, 28, 3, 2}, {18, 35, 3, 2}};
  std::mt19937 rng(13);
  for (const Case& c : cases) {
    const int64_t pad = (c.k - 1) / 2, oh = (c.h + c.stride - 1) / c.stride;
    const int64_t ow = (c.w + c.stride - 1) / c.stride;
    const auto x = ep::test::random_floats(rng, c.h * c.w);
    const auto taps = ep::test::random_floats(rng, c.k * c.k);
    for (ep::Isa isa : ep::test::runnable_isas()) {
      const ep::rt::VecOps& v = ep::rt::vec_ops(isa);
      ep::rt::DwPlaneArgs a;
      a.h = c.h, a.w = c.w, a.wt = taps.data(), a.bias = 0.25f;
      a.kh = a.kw = c.k, a.stride_h = a.stride_w = c.stride;
      // TFLite SAME: the padding before is half the total, rounded down
      const int64_t total_h = std::max<int64_t>(0, (oh - 1) * c.stride + c.k - c.h);
      const int64_t total_w = std::max<int64_t>(0, (ow - 1) * c.stride + c.k - c.w);
      a.pad_t = c.stride == 1 ? pad : total_h / 2, a.pad_l = c.stride == 1 ? pad : total_w / 2;
      a.oh = oh, a.ow = ow, a.lo = -0.75f, a.hi = 1.5f;
      std::vector<float> padded;
      if (c.stride == 2) {
        if (!ep::rt::dw_padded_fits(a, v.plane_lanes)) continue;
        int64_t bottom = 0, right = 0;
        ep::rt::dw_padded_extent(a, &bottom, &right);
        const int64_t ld = a.pad_l + c.w + right;
        padded.assign(size_t((a.pad_t + c.h + bottom) * ld), 0.0f);
        for (int64_t iy = 0; iy < c.h; ++iy)
          std::copy(x.begin() + iy * c.w, x.begin() + (iy + 1) * c.w,
                    padded.begin() + (a.pad_t + iy) * ld + a.pad_l);
        a.x = padded.data() + a.pad_t * ld + a.pad_l, a.ld = ld;
      } else {
        a.x = x.data();
      }
      if (!ep::rt::dw_plane_bands(a, v.plane_lanes)) continue;
      std::vector<float> whole(size_t(oh * ow));
      a.y = whole.data();
      v.dw_plane(a);
      const int64_t cuts[] = {0, 1, oh / 3, oh / 3 + 1, oh - 2, oh};
      for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
        const int64_t oy0 = cuts[i], oy1 = cuts[i + 1];
        if (oy0 >= oy1) continue;
        std::vector<float> y(size_t(oh * ow), 123.0f);
        ep::rt::DwPlaneArgs b = a;
        b.oy0 = oy0, b.oy1 = oy1, b.y = y.data() + oy0 * ow;
        v.dw_plane(b);
        for (int64_t j = 0; j < oh * ow; ++j) {
          const bool in = j >= oy0 * ow && j < oy1 * ow;
          ASSERT_EQ(y[size_t(j)], in ? whole[size_t(j)] : 123.0f)
              << ep::isa_name(isa) << " " << c.h << "x" << c.w << " k" << c.k << "/" << c.stride
              << " rows " << oy0 << ".." << oy1 << " at " << j;
        }
      }
    }
  }
}

// A sparse 1x1's output planes (VecOps::sparse_plane) against a double-precision sum: one
// channel or 4 sharing their nonzeros (each channel then has its bits when computed alone),
// whole planes or lines written ld apart with the gaps untouched, lengths around the path's
// registers and strips.
TEST(RuntimeVec, SparsePlanesMatchTheirSumOnEveryPath) {
  std::mt19937 rng(5);
  const int64_t cin = 13;
  for (int64_t n : {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 56, 63, 64, 65, 130, 196, 784}) {
    for (int64_t lines : {1, 3}) {
      const auto x = ep::test::random_floats(rng, cin * n * lines);
      const std::vector<int32_t> idx = {0, 2, 3, 7, 12};
      const auto w = ep::test::random_floats(rng, int64_t(idx.size()) * 4);  // [nnz, 4]
      const float bias[4] = {0.5f, -0.25f, 0.0f, 1.0f};
      const int64_t ldl = n + 5, plane = lines * ldl;
      for (ep::Isa isa : ep::test::runnable_isas()) {
        const ep::rt::VecOps& v = ep::rt::vec_ops(isa);
        ep::rt::SparsePlaneArgs a;
        a.x = x.data(), a.ld = n * lines, a.idx = idx.data(), a.w = w.data();
        a.nnz = int64_t(idx.size()), a.rows = 4, a.bias = bias, a.lo = -1.0f, a.hi = 1.25f;
        a.n = n, a.lines = lines, a.ldl = ldl, a.ldy = plane;
        std::vector<float> four(size_t(4 * plane), 77.0f);
        a.y = four.data();
        v.sparse_plane(a);
        for (int r = 0; r < 4; ++r) {
          std::vector<float> wr(idx.size());
          for (size_t j = 0; j < idx.size(); ++j) wr[j] = w[j * 4 + size_t(r)];
          std::vector<float> one(size_t(plane), 77.0f);
          ep::rt::SparsePlaneArgs b = a;
          b.rows = 1, b.w = wr.data(), b.bias = bias + r, b.y = one.data();
          v.sparse_plane(b);
          for (int64_t l = 0; l < lines; ++l)
            for (int64_t i = 0; i < ldl; ++i) {
              const float got = four[size_t(r * plane + l * ldl + i)];
              ASSERT_EQ(got, one[size_t(l * ldl + i)]) << ep::isa_name(isa) << " n " << n;
              if (i >= n) {
                ASSERT_EQ(got, 77.0f) << ep::isa_name(isa) << " wrote between lines";
                continue;
              }
              double s = bias[r];
              for (size_t j = 0; j < idx.size(); ++j)
                s += double(wr[j]) * x[size_t(idx[j] * n * lines + l * n + i)];
              s = std::min(std::max(s, -1.0), 1.25);
              ASSERT_NEAR(got, s, 1e-5) << ep::isa_name(isa) << " n " << n << " line " << l;
            }
        }
      }
    }
  }
}

TEST(RuntimeVec, DepthwiseRowMatchesReferenceOnEveryPath) {
  struct Case {
    int64_t h, w, c, k, stride, pad;
  };
  const Case cases[] = {
      {9, 11, 72, 3, 1, 1},
      {9, 11, 24, 3, 2, 1},
      {8, 8, 16, 3, 1, 1},
      {7, 9, 8, 3, 1, 1},
      {9, 9, 40, 5, 1, 2},
      {10, 9, 33, 5, 2, 2},
      {6, 7, 200, 3, 1, 1},
      {6, 6, 20, 3, 2, 0},
      // rows wide enough for several groups of pixels, and their remainders, at both strides;
      // channel counts between one and two registers, and below one
      {5, 30, 12, 3, 2, 1},
      {7, 26, 20, 5, 2, 2},
      {4, 21, 4, 3, 1, 1},
      {6, 40, 48, 5, 1, 2},
      {3, 37, 9, 3, 1, 1},
  };
  std::mt19937 rng(11);
  for (const Case& c : cases) {
    const int64_t oh = (c.h + 2 * c.pad - c.k) / c.stride + 1;
    const int64_t ow = (c.w + 2 * c.pad - c.k) / c.stride + 1;
    const auto x = ep::test::random_floats(rng, c.h * c.w * c.c);
    const auto taps = ep::test::random_floats(rng, c.k * c.k * c.c);
    const auto bias = ep::test::random_floats(rng, c.c);
    const float lo = -0.5f, hi = 2.0f;
    for (ep::Isa isa : ep::test::runnable_isas()) {
      for (int64_t oy = 0; oy < oh; ++oy) {
        std::vector<float> y(size_t(ow * c.c + 32), 123.0f);
        ep::rt::DwRowArgs a;
        a.x = x.data(), a.h = c.h, a.w = c.w, a.c = c.c, a.wt = taps.data(), a.bias = bias.data();
        a.kh = a.kw = c.k, a.stride_h = a.stride_w = c.stride, a.pad_t = a.pad_l = c.pad;
        a.y = y.data(), a.oy = oy, a.ow = ow, a.lo = lo, a.hi = hi;
        ep::rt::vec_ops(isa).dw_row(a);
        double err = 0;
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t ch = 0; ch < c.c; ++ch) {
            double s = bias[ch];
            for (int64_t ky = 0; ky < c.k; ++ky)
              for (int64_t kx = 0; kx < c.k; ++kx) {
                const int64_t iy = oy * c.stride - c.pad + ky, ix = ox * c.stride - c.pad + kx;
                if (iy >= 0 && iy < c.h && ix >= 0 && ix < c.w)
                  s += double(x[(iy * c.w + ix) * c.c + ch]) * taps[(ky * c.k + kx) * c.c + ch];
              }
            s = std::min(std::max(s, double(lo)), double(hi));
            err = std::max(err, std::fabs(y[ox * c.c + ch] - s));
          }
        EXPECT_LT(err, 1e-5) << ep::isa_name(isa) << " c" << c.c << " k" << c.k << "/" << c.stride
                             << " row " << oy;
        for (size_t i = size_t(ow * c.c); i < y.size(); ++i)
          ASSERT_EQ(y[i], 123.0f) << ep::isa_name(isa) << " wrote past the row";
      }
    }
  }
}

TEST(RuntimeVec, WinogradTransformsMatchTheirDefinitionOnEveryPath) {
  // B^T and A^T of F(2x2, 3x3)
  const double bt[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  const double at[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  std::mt19937 rng(11);
  for (int64_t c : {1, 3, 8, 16, 21, 40}) {
    for (int64_t tiles : {1, 2, 5}) {
      // wino_in: input rows of (2 tiles + 2) pixels plus slack, so a read past the tiles shows
      const int64_t row = (2 * tiles + 2) * c + 5, vs = tiles * c + 3;
      const auto x = ep::test::random_floats(rng, 4 * row);
      std::vector<double> want(size_t(16 * vs), 0.0);
      for (int64_t t = 0; t < tiles; ++t)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
              double s = 0;
              for (int p = 0; p < 4; ++p)
                for (int q = 0; q < 4; ++q)
                  s += bt[i][p] * x[size_t(p * row + (2 * t + q) * c + ch)] * bt[j][q];
              want[size_t((4 * i + j) * vs + t * c + ch)] = s;
            }
      // wino_out: products for the tiles, a bias, and an output of ow = 2 tiles - 1 columns, so
      // the last tile's second column falls outside and must stay unwritten
      const int64_t ms = tiles * c + 2, ow = 2 * tiles - 1, yrow = ow * c + 7;
      const auto m = ep::test::random_floats(rng, 16 * ms, -2.f, 2.f);
      const auto bias = ep::test::random_floats(rng, c);
      const float lo = -1.5f, hi = 2.0f;
      for (ep::Isa isa : ep::test::runnable_isas()) {
        const ep::rt::VecOps& v = ep::rt::vec_ops(isa);
        std::vector<float> got(size_t(16 * vs), 123.0f);
        v.wino_in(x.data(), row, c, tiles, got.data(), vs);
        for (int64_t k = 0; k < 16; ++k)
          for (int64_t i = 0; i < vs; ++i) {
            const size_t at_i = size_t(k * vs + i);
            if (i < tiles * c)
              EXPECT_NEAR(got[at_i], want[at_i], 1e-5) << ep::isa_name(isa) << " c" << c;
            else
              ASSERT_EQ(got[at_i], 123.0f) << ep::isa_name(isa) << " wrote past the tiles";
          }
        for (int rows : {1, 2})
          for (bool with_bias : {true, false}) {
            std::vector<float> y(size_t(2 * yrow), 123.0f);
            v.wino_out(m.data(), ms, c, tiles, with_bias ? bias.data() : nullptr, lo, hi, y.data(),
                       yrow, ow, rows);
            for (int64_t r = 0; r < 2; ++r)
              for (int64_t k = 0; k < yrow; ++k) {
                const int64_t ox = k / c, ch = k % c;
                if (r >= rows || ox >= ow) {
                  ASSERT_EQ(y[size_t(r * yrow + k)], 123.0f)
                      << ep::isa_name(isa) << " wrote outside the output";
                  continue;
                }
                const int64_t t = ox / 2, s = ox % 2;
                double sum = with_bias ? bias[size_t(ch)] : 0.0;
                for (int p = 0; p < 4; ++p)
                  for (int q = 0; q < 4; ++q)
                    sum += at[r][p] * m[size_t((4 * p + q) * ms + t * c + ch)] * at[s][q];
                EXPECT_NEAR(y[size_t(r * yrow + k)],
                            std::min(std::max(sum, double(lo)), double(hi)), 1e-5)
                    << ep::isa_name(isa) << " c" << c << " tile " << t;
              }
          }
      }
    }
  }
}

}  // namespace
