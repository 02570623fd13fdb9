// The fp32 transpose of transpose_f32_impl.h, SSE2 on x86-64, NEON on aarch64 (the baseline
// vectors): 4x4 tiles.
//
// Consumes: TransposeF32Args. Produces: dst.
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/kernels.h"

namespace ep::reference {

namespace {
constexpr int TW = 4;
#include "kernels/transpose_f32_impl.h"
}  // namespace

void transpose_f32(const TransposeF32Args& p) { transpose_tiles(p); }

}  // namespace ep::reference
