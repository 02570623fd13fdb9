// Columns [n0, n) of a sparse int8 call that no vector pass covers: the reference arithmetic
// (integer sums are exact, so this matches the vector passes bit for bit). Included inside an
// ISA namespace's anonymous namespace.
inline void spmm_s8_tail(const ep::SpmmS8Args& p, int64_t n0) {
  if (n0 >= p.n) return;
  const int32_t* quad = p.quad;
  const int32_t* w = p.w;
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t count = p.nnz[m];
    for (int64_t n = n0; n < p.n; ++n) {
      int32_t acc = p.bias[m];
      for (int32_t i = 0; i < count; ++i) {
        const int8_t* x = p.xq + (int64_t(quad[i]) * p.ldx + n) * 4;
        for (int t = 0; t < 4; ++t)
          acc += int32_t(x[t]) * int32_t(int8_t(uint32_t(w[i]) >> (8 * t)));
      }
      p.y[m * p.ldy + n] = ep::requant_s8(acc, p.scale[m], p.zp_out, p.lo, p.hi);
    }
    quad += count;
    w += count;
  }
}
