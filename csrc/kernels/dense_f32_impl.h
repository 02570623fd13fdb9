// The dense fp32 blocking driver, written once over a micro-kernel traits type `K` and included
// inside each ISA's namespace (so every instantiation is compiled with that file's flags and has
// its own symbols). The ISA file keeps only its intrinsics: the MR x NR micro-kernel.
//
// K provides: V (vector type), MR (rows per strip), NR (packed panel width), KC (depth block),
// Align (bytes), set1(float) -> V, and
//   micro(R, a, lda, bp, ldb, kc, init, ldi, out, ldo, last, lo, hi):
//   C[R x NR] (+)= A[R x kc] * Bpanel[kc x NR] (rows of the panel ldb floats apart) for
//   1 <= R <= MR; `init` is the starting tile (bias or y), written back clamped to [lo, hi] when
//   `last`. Optionally kHasMasked = true and micro_masked(R, w, ...): the same for a partial panel
//   of w < NR columns, reading init and writing out through lane masks. Optionally kRowPanels
//   = P > 1 and row_panels(np, tail, a, bp, ps, kc, init, out, last, lo, hi): one row over np <= P
//   whole packed panels ps floats apart and, when tail > 0, the partial panel of `tail` columns
//   after them (init and out advancing NR per panel), each output's sum in micro's order.
//
// B is packed in NR-column panels, cache-blocked over depth (KC) so an MR-row strip of A stays in
// L1 while the packed panels stream from L2. Without a packed B (bp null; B(k, j) = b[k * b_sk +
// j]: its rows contiguous), whole panels are read where they lie and only the last partial panel
// of each depth block is copied (zero padded).
// (no includes: this file is included inside a namespace)

// Whether K has micro_masked(R, w, ...) for partial panels (kHasMasked): the trait is optional.
template <class K>
constexpr bool has_masked(decltype(K::kHasMasked)) {
  return K::kHasMasked;
}
template <class K>
constexpr int row_panels(decltype(K::kRowPanels)) {
  return K::kRowPanels;
}
template <class K>
constexpr int row_panels(...) {
  return 1;
}
template <class K>
constexpr bool has_masked(...) {
  return false;
}

template <class K>
void dense_driver(const ep::DenseF32Args& p) {
  using V = typename K::V;
  constexpr int MR = K::MR, NR = K::NR;
  constexpr int64_t KC = K::KC;
  const auto imin = [](int64_t a, int64_t b) { return a < b ? a : b; };
  const V lo = K::set1(p.lo), hi = K::set1(p.hi);
  alignas(K::Align) float tmp[MR * NR];   // staging for a partial panel (cols tail)
  alignas(K::Align) float init[MR * NR];  // starting tile when it comes from the bias
  alignas(K::Align) float edge[KC * NR];  // unpacked B: its last partial panel, packed
  const bool inplace = p.bp == nullptr;
  const int64_t edge0 = p.cols / NR * NR;  // the first column of that panel
  // One row of packed B is not cut into depth blocks: its A row stays in L1 anyway, and each panel
  // then streams from memory in one piece (a GEMV's weights are read once per call, from L3 or
  // DRAM). The blocks never change the bits: each sum goes on from y in the same order.
  const int64_t kcb = p.rows == 1 && !inplace && p.depth > KC ? p.depth : KC;
  const int64_t seg = p.a_seg > 0 ? p.a_seg : p.depth + 1;  // depth blocks end at segment ends
  int64_t kc = 0;
  for (int64_t k0 = 0; k0 < p.depth || k0 == 0; k0 += kc) {
    kc = imin(imin(kcb, p.depth - k0), seg - k0 % seg);
    const bool first = k0 == 0, last = k0 + kc >= p.depth;
    const int64_t ak = p.a_seg > 0 ? k0 / seg * p.a_seg_stride + k0 % seg : k0;  // A's column
    if (inplace && edge0 < p.cols)
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t j = 0; j < NR; ++j)
          edge[k * NR + j] = edge0 + j < p.cols ? p.b[(k0 + k) * p.b_sk + edge0 + j] : 0.0f;
    // Panels in blocks of at most ~256 KB of packed B, so a block stays in L2 while every row
    // strip passes over it (a B as large as L2, as in the 1x1-conv layout, would thrash).
    // (one row: the panels are streamed once, so they are not blocked either)
    const int64_t block_cols =
        kcb > KC ? p.cols : imin(p.cols, (65536 / (kc > 0 ? kc : 1) / NR + 1) * NR);
    for (int64_t jb = 0; jb < p.cols; jb += block_cols) {
      const int64_t jend = imin(p.cols, jb + block_cols);
      for (int64_t r0 = 0; r0 < p.rows; r0 += MR) {
        const int R = int(imin(MR, p.rows - r0));
        const float* a = p.a + r0 * p.lda + ak;
        if (first && p.bias_per_row)  // one starting tile for the whole strip: bias of each row
          for (int r = 0; r < R; ++r)
            for (int j = 0; j < NR; ++j) init[r * NR + j] = p.bias ? p.bias[r0 + r] : 0.0f;
        for (int64_t j0 = jb; j0 < jend; j0 += NR) {
          if constexpr (row_panels<K>(0) > 1) {
            // One row (a GEMV): several panels per call, the last partial one included, for
            // more independent sums.
            const int64_t whole = imin(row_panels<K>(0), (jend - j0) / NR);
            const int64_t rest = jend - j0 - whole * NR;
            const int tail = rest > 0 && rest < NR ? int(rest) : 0;
            if (R == 1 && !inplace && !p.bias_per_row && whole + (tail > 0) >= 2) {
              static const float zeros[(row_panels<K>(0) + 1) * NR] = {};
              float* y = p.y + r0 * p.ldy + j0;
              const float* src = !first ? y : p.bias ? p.bias + j0 : zeros;
              K::row_panels(int(whole), tail, a, p.bp + (j0 / NR) * NR * p.depth + k0 * NR,
                            NR * p.depth, kc, src, y, last, lo, hi);
              j0 += (whole + (tail > 0) - 1) * NR;
              continue;
            }
          }
          const int w = int(imin(NR, p.cols - j0));
          const float* bp = inplace ? (w == NR ? p.b + k0 * p.b_sk + j0 : edge)
                                    : p.bp + (j0 / NR) * NR * p.depth + k0 * NR;
          const int64_t ldb = inplace && w == NR ? p.b_sk : NR;
          float* y = p.y + r0 * p.ldy + j0;
          const float* src;
          int64_t lds;
          if (first && !p.bias_per_row && (w == NR || has_masked<K>(0))) {
            // every row starts from the same NR values: read them with a zero row stride (a
            // partial panel reads only its w columns, through the lane masks)
            static const float zeros[NR] = {};
            src = p.bias ? p.bias + j0 : zeros;
            lds = 0;
          } else if (first) {
            if (!p.bias_per_row)  // a partial panel of a per-column bias
              for (int r = 0; r < R; ++r)
                for (int j = 0; j < NR; ++j)
                  init[r * NR + j] = !p.bias || j >= w ? 0.0f : p.bias[j0 + j];
            src = init;
            lds = NR;
          } else if (w == NR || has_masked<K>(0)) {
            src = y;
            lds = p.ldy;
          } else {
            for (int r = 0; r < R; ++r)
              for (int j = 0; j < NR; ++j) tmp[r * NR + j] = j < w ? y[r * p.ldy + j] : 0.0f;
            src = tmp;
            lds = NR;
          }
          if (w == NR) {
            K::micro(R, a, p.lda, bp, ldb, kc, src, lds, y, p.ldy, last, lo, hi);
          } else if constexpr (has_masked<K>(0)) {
            // lane masks read and write y in place: after the first depth block, y itself is
            // the starting tile (the staging copy into tmp above is then not needed either)
            K::micro_masked(R, w, a, p.lda, bp, ldb, kc, first ? src : y, first ? lds : p.ldy, y,
                            p.ldy, last, lo, hi);
          } else {
            K::micro(R, a, p.lda, bp, ldb, kc, src, lds, tmp, NR, last, lo, hi);
            for (int r = 0; r < R; ++r)
              for (int j = 0; j < w; ++j) y[r * p.ldy + j] = tmp[r * NR + j];
          }
        }
      }
    }
    if (p.depth == 0) break;
  }
}
