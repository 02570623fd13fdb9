// The scalar dot product of one b1 row with X at absolute channels (kernels.h,
// SpmmF32Args::chans): sum_i w[i] * x[ch[i] * ldx], four partial sums over alternate entries and
// no pointer chain between entries. Included inside an ISA namespace's anonymous namespace before
// its vector-ops type (whose gathered dot falls back to it) and spmm_f32_impl.h.
// (no includes: this file is included inside a namespace)
inline float spmm_dot_scalar(const float* w, const int32_t* ch, int32_t count, const float* x,
                             int64_t ldx) {
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  int32_t i = 0;
  for (; i + 4 <= count; i += 4) {
    a0 += w[i] * x[ch[i] * ldx];
    a1 += w[i + 1] * x[ch[i + 1] * ldx];
    a2 += w[i + 2] * x[ch[i + 2] * ldx];
    a3 += w[i + 3] * x[ch[i + 3] * ldx];
  }
  for (; i < count; ++i) a0 += w[i] * x[ch[i] * ldx];
  return (a0 + a1) + (a2 + a3);
}
