// The fp32 transpose of transpose_f32_impl.h, AVX-512: 16x16 tiles. Built with the AVX-512 flags
// for this file only.
//
// Consumes: TransposeF32Args. Produces: dst.
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/kernels.h"

namespace ep::avx512 {

namespace {
constexpr int TW = 16;
#include "kernels/transpose_f32_impl.h"
}  // namespace

void transpose_f32(const TransposeF32Args& p) { transpose_tiles(p); }

}  // namespace ep::avx512
