// The NEON int8 GEMM loops, shared by the NEON (ARMv8.0) and NEON dotprod paths and included
// inside each one's namespace, so they are compiled with that file's flags. 4x4 tile of
// per-(row, column) int32x4 accumulators over 16-byte k chunks, reduced across lanes at the end.
//
// S provides: step(acc, a, b) -> acc + the products of the int8x16 a and b, in any lanes.
// (no includes: this file is included inside a namespace; arm_neon.h comes first)

constexpr int NR = 4, MR = 4, KG = 16;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// always_inline: inlined before the rest is optimised, the code is the same as when these loops
// were written in each ISA file (checked with objdump); a late inline reorders it.
template <class S>
__attribute__((always_inline)) inline void gemm_s8_driver(const ep::GemmS8Args& p) {
  const int64_t groups = (p.depth + KG - 1) / KG, kpad = groups * KG;
  int8_t* ap = static_cast<int8_t*>(ep::thread_scratch(1, size_t(kpad) * MR));
  for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
    const int R = int(imin(MR, p.rows - r0));
    for (int r = 0; r < MR; ++r)
      for (int64_t k = 0; k < kpad; ++k)
        ap[r * kpad + k] = r < R && k < p.depth ? p.a[(r0 + r) * p.lda + k] : 0;
    for (int64_t j0 = 0; j0 < p.cols; j0 += NR) {
      const int w = int(imin(NR, p.cols - j0));
      const int8_t* bp = p.bp + (j0 / NR) * NR * kpad;
      int32x4_t acc[MR][NR];
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NR; ++j) acc[r][j] = vdupq_n_s32(0);
      for (int64_t g = 0; g < groups; ++g) {
        int8x16_t a[MR], b[NR];
        for (int r = 0; r < MR; ++r) a[r] = vld1q_s8(ap + r * kpad + g * KG);
        for (int j = 0; j < NR; ++j) b[j] = vld1q_s8(bp + (g * NR + j) * KG);
        for (int r = 0; r < MR; ++r)
          for (int j = 0; j < NR; ++j) acc[r][j] = S::step(acc[r][j], a[r], b[j]);
      }
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < w; ++j)
          p.y[(r0 + r) * p.ldy + j0 + j] = ep::requant_s8(vaddvq_s32(acc[r][j]) + p.bias[j0 + j],
                                                          p.scale[j0 + j], p.zp_out, p.lo, p.hi);
    }
  }
}
