// The fp32 transpose, written once over the register width TW (4, 8 or 16 floats) with GCC /
// clang vector extensions, and included inside each ISA's namespace (so every instantiation is
// compiled with that file's flags: SSE2 or NEON for the reference path, AVX2, AVX-512).
// Whole TW x TW tiles go through registers: TW loads, TW log2(TW) two-register shuffles, TW
// stores; the ragged edges are copied one by one. Tiles are walked along src's rows, so src is
// read in order. (no includes: this file is included inside a namespace)

typedef float TVec __attribute__((vector_size(TW * 4)));
typedef float TVecU __attribute__((vector_size(TW * 4), aligned(4)));

// One butterfly stage: rows i and i + 2^B (bit B of i clear) exchange the halves that swap bit
// B of the row index with bit B of the column index; log2(TW) stages transpose the tile.
constexpr int lo_lane(int c, int b) { return c & (1 << b) ? TW + (c ^ (1 << b)) : c; }
constexpr int hi_lane(int c, int b) { return c & (1 << b) ? TW + c : c | (1 << b); }
template <int B, size_t... C>
inline void swap_bit(TVec& a, TVec& b, std::index_sequence<C...>) {
  const TVec lo = __builtin_shufflevector(a, b, lo_lane(int(C), B)...);
  const TVec hi = __builtin_shufflevector(a, b, hi_lane(int(C), B)...);
  a = lo, b = hi;
}
template <int B>
inline void swap_stage(TVec* v) {
  if constexpr (B >= 0) {
    for (int i = 0; i < TW; ++i)
      if (!(i & (1 << B))) swap_bit<B>(v[i], v[i | (1 << B)], std::make_index_sequence<TW>());
    swap_stage<B - 1>(v);
  }
}

inline void transpose_tiles(const TransposeF32Args& p) {
  constexpr int64_t T = TW;
  constexpr int top = TW == 16 ? 3 : TW == 8 ? 2 : 1;
  const float* __restrict__ src = p.src;
  float* __restrict__ dst = p.dst;
  const int64_t rows = p.rows, cols = p.cols, ld = p.ld;
  const int64_t rf = rows / T * T, cf = cols / T * T;
  for (int64_t r0 = 0; r0 < rf; r0 += T) {
    for (int64_t c0 = 0; c0 < cf; c0 += T) {
      TVec v[T];
      for (int64_t i = 0; i < T; ++i)
        v[i] = *reinterpret_cast<const TVecU*>(src + (r0 + i) * cols + c0);
      swap_stage<top>(v);
      for (int64_t i = 0; i < T; ++i) *reinterpret_cast<TVecU*>(dst + (c0 + i) * ld + r0) = v[i];
    }
    for (int64_t c = cf; c < cols; ++c)
      for (int64_t r = r0; r < r0 + T; ++r) dst[c * ld + r] = src[r * cols + c];
  }
  for (int64_t r = rf; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ld + r] = src[r * cols + c];
}
