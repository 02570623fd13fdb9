// The per-path transpose kernel (kernels.inc transpose_f32) against the plain definition on
// every path this CPU runs (and neon under qemu): whole register tiles, ragged edges on both
// sides, a destination stride wider than the rows, and nothing written outside the result.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "test_util.h"

namespace {

TEST(Transpose, EveryPathMatchesTheDefinition) {
  struct Case {
    int64_t rows, cols, ld;
  };
  const Case cases[] = {{16, 16, 16}, {49, 160, 49},  {160, 49, 160}, {1, 7, 1},     {7, 1, 7},
                        {33, 17, 40}, {64, 64, 1040}, {5, 3, 5},      {128, 96, 128}};
  std::mt19937 rng(3);
  for (const Case& c : cases) {
    const auto src = ep::test::random_floats(rng, c.rows * c.cols);
    for (ep::Isa isa : ep::test::runnable_isas()) {
      const ep::KernelTable& t = ep::kernel_table(isa);
      std::vector<float> dst(size_t(c.cols * c.ld + 16), -7.0f);
      t.transpose_f32.fn({src.data(), c.rows, c.cols, dst.data(), c.ld});
      for (int64_t col = 0; col < c.cols; ++col)
        for (int64_t r = 0; r < c.ld; ++r) {
          const float want = r < c.rows ? src[r * c.cols + col] : -7.0f;  // gaps untouched
          ASSERT_EQ(dst[col * c.ld + r], want)
              << ep::isa_name(isa) << " " << c.rows << "x" << c.cols << " ld " << c.ld << " at "
              << col << "," << r;
        }
      for (size_t i = size_t(c.cols * c.ld); i < dst.size(); ++i)
        ASSERT_EQ(dst[i], -7.0f) << ep::isa_name(isa) << " wrote past the end";
    }
  }
}

}  // namespace
