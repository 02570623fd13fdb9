// Columns [n0, n) of a sparse int8 call that no vector pass covers (all of them at N = 1: FC
// layers at batch 1): per output, one dot product of the row's blocks with the quads of X at its
// quad indices, then requant_s8. Integer sums are exact, so every form matches the vector passes
// and the reference bit for bit. Included inside an ISA namespace's anonymous namespace.
// (no includes: this file is included inside a namespace)

// sum over a row's `count` blocks of X[4q + t, n] * w_t: the scalar form, each block's 4
// activations read as one 32-bit word.
inline int32_t spmm_s8_dot_scalar(const int32_t* quad, const int32_t* w, int32_t count,
                                  const int8_t* xq, int64_t ldx, int64_t n) {
  int32_t a0 = 0, a1 = 0;
  for (int32_t i = 0; i < count; ++i) {
    uint32_t xw;
    __builtin_memcpy(&xw, xq + (int64_t(quad[i]) * ldx + n) * 4, 4);
    const uint32_t ww = uint32_t(w[i]);
    a0 += int32_t(int8_t(xw)) * int32_t(int8_t(ww)) +
          int32_t(int8_t(xw >> 8)) * int32_t(int8_t(ww >> 8));
    a1 += int32_t(int8_t(xw >> 16)) * int32_t(int8_t(ww >> 16)) +
          int32_t(int8_t(xw >> 24)) * int32_t(int8_t(ww >> 24));
  }
  return a0 + a1;
}

// `dot` has spmm_s8_dot_scalar's signature and result (AVX2 passes one of 8 blocks a step; NEON
// takes the scalar one).
template <class Dot>
inline void spmm_s8_tail(const ep::SpmmS8Args& p, int64_t n0, Dot dot) {
  if (n0 >= p.n) return;
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t count = p.nnz[m];
    for (int64_t n = n0; n < p.n; ++n) {
      const int32_t acc = p.bias[m] + dot(quad, w, count, p.xq, p.ldx, n);
      p.y[m * p.ldy + n] = ep::requant_s8(acc, p.scale[m], p.zp_out, p.lo, p.hi);
    }
    quad += count;
    w += count;
  }
}
inline void spmm_s8_tail(const ep::SpmmS8Args& p, int64_t n0) {
  spmm_s8_tail(p, n0, spmm_s8_dot_scalar);
}
