// The fp32 transpose of transpose_f32_impl.h, AVX2: 8x8 tiles. Built with -mavx2 -mfma for this
// file only.
//
// Consumes: TransposeF32Args. Produces: dst.
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/kernels.h"

namespace ep::avx2 {

namespace {
constexpr int TW = 8;
#include "kernels/transpose_f32_impl.h"
}  // namespace

void transpose_f32(const TransposeF32Args& p) { transpose_tiles(p); }

}  // namespace ep::avx2
