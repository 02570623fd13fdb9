// The NEON sparse int8 (1x4 blocks) loops, shared by the NEON (ARMv8.0) and NEON dotprod paths
// and included inside each one's namespace, so they are compiled with that file's flags. Each
// pass covers NV * 4 columns: 16 bytes of packed X (4 columns x 4 channels) per vector.
//
// A provides: Acc (accumulator for 4 columns), zero(), step(acc, xv, wv) -> acc + the 4-channel
// products of X and the block's weights, fold(acc) -> int32x4 (one sum per column).
// (no includes: this file is included inside a namespace; arm_neon.h and spmm_s8_tail.h first)

template <class A, int NV>
void spmm_s8_pass(const ep::SpmmS8Args& p, int64_t n0) {
  const float32x4_t lo = vdupq_n_f32(p.lo), hi = vdupq_n_f32(p.hi);
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  const int8_t* xb = p.xq + n0 * 4;
  for (int64_t m = 0; m < p.m; ++m) {
    typename A::Acc acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = A::zero();
    const int32_t count = p.nnz[m];
    for (int32_t i = 0; i < count; ++i) {
      const int8_t* x = xb + int64_t(quad[i]) * p.ldx * 4;
      const int8x16_t wv = vreinterpretq_s8_s32(vdupq_n_s32(w[i]));
      for (int j = 0; j < NV; ++j) acc[j] = A::step(acc[j], vld1q_s8(x + 16 * j), wv);
    }
    quad += count;
    w += count;
    const int32x4_t bias = vdupq_n_s32(p.bias[m]);
    const float32x4_t scale = vdupq_n_f32(p.scale[m]);
    int8_t* y = p.y + m * p.ldy + n0;
    for (int j = 0; j < NV; ++j) {
      const int32x4_t s = vaddq_s32(A::fold(acc[j]), bias);
      float32x4_t f = vmulq_f32(vcvtq_f32_s32(s), scale);
      f = vminq_f32(vmaxq_f32(f, lo), hi);
      const int32x4_t q = vaddq_s32(vcvtnq_s32_f32(f), vdupq_n_s32(p.zp_out));  // nearest even
      int32_t out[4];
      vst1q_s32(out, q);
      for (int c = 0; c < 4; ++c) y[4 * j + c] = int8_t(out[c]);
    }
  }
}

// always_inline: inlined before the rest is optimised, the code is the same as when these loops
// were written in each ISA file (checked with objdump); a late inline reorders it.
template <class A>
__attribute__((always_inline)) inline void spmm_s8_driver(const ep::SpmmS8Args& p) {
  int64_t n0 = 0;
  for (; n0 + 16 <= p.n; n0 += 16) spmm_s8_pass<A, 4>(p, n0);
  for (; n0 + 4 <= p.n; n0 += 4) spmm_s8_pass<A, 1>(p, n0);
  spmm_s8_tail(p, n0);
}
