// The fp32 SpMM loops, written once over a vector-ops type `O` and included inside each ISA's
// namespace (so every instantiation is compiled with that file's flags and has its own symbols).
//
// O provides: V (vector type), W (floats per vector), Regs (vector registers), load, bcast(const
// float*), fma(a, b, c) = a*b + c, add, clamp(v, lo, hi), store, set1; optionally dot (a gathered
// dot product for the channel table, spmm_dot). spmm_f32_dot.h must be included first.
//
// b1 (one output channel per stream entry): V vectors across N with U independent accumulator
// sets over alternate nonzeros, so V*U FMA chains hide the FMA latency. b4 (4 output channels
// sharing a pattern): each X vector loaded feeds 4 FMAs. Columns no whole vector covers run as one
// zero-padded vector (spmm_padded_tail, or inside a plan's pass). (no includes: this file is
// included inside a namespace)

// Whether O asks b1 to walk the delta stream (O::WalkDeltas, measured per ISA) instead of
// reading a per-call table of absolute offsets; ISAs that do not say keep the table.
template <class O>
constexpr auto spmm_walks(int) -> decltype(O::WalkDeltas, bool()) {
  return O::WalkDeltas;
}
template <class O>
constexpr bool spmm_walks(long) {
  return false;
}

// `strips` consecutive strips of NV vectors from n0, row by row: each row's stream entries are
// read once per strip while they are in L1, and the row's outputs for all the strips are written
// one after the other, so Y is written in runs of strips * NV vectors rather than one strip of
// every row before the next strip (docs/kernels.md, "Strips row by row"). Each column's sums are
// made in the same order whatever `strips` is. Multi = false compiles the one-strip loop alone
// (the strip loop around it cost a one-strip pass 9 % at 192x32x784).
template <class O, int NV, int U, class Off, bool Multi = false>
__attribute__((noinline)) void spmm_b1_pass(const ep::SpmmF32Args& p, const Off* off, int64_t n0,
                                            int64_t strips_ = 1) {
  const int64_t strips = Multi ? strips_ : 1;
  using V = typename O::V;
  const V lo = O::set1(p.lo), hi = O::set1(p.hi);
  const float* v = p.values;
  const int32_t* d = p.deltas;
  const int64_t ld = p.ldx;
  // With O::WalkDeltas (off == nullptr: no offset table) the delta stream is walked
  // directly: `x` tracks the previous nonzero's X row, and within a group of U nonzeros the
  // running channel sums are formed off the pointer chain, so the only serial dependency is one
  // add per group. With a table, every load address is independent.
  const float* x = p.x + n0;
  const float* const x0 = x;
  constexpr bool walk = spmm_walks<O>(0);
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t count = p.nnz[m];
    const float* const xm = x;  // the walk's position at the row's start
    for (int64_t s = 0; s < strips; ++s) {
      const int64_t shift = s * NV * O::W;
      x = xm + shift;
      V acc[U][NV];
      const V bias = O::bcast(v);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        acc[0][j] = bias;
#pragma GCC unroll 8
        for (int u = 1; u < U; ++u) acc[u][j] = O::set1(0.0f);
      }
      const float* const vr = v + 1;
      int32_t i = 0;
      for (; i + U <= count; i += U) {
        int64_t c[U];
        if (walk) {
          c[0] = d[i];
#pragma GCC unroll 8
          for (int u = 1; u < U; ++u) c[u] = c[u - 1] + d[i + u];
        }
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
          const float* xr = walk ? x + c[u] * ld : x0 + shift + off[i + u];
          const V w = O::bcast(vr + i + u);
#pragma GCC unroll 8
          for (int j = 0; j < NV; ++j) acc[u][j] = O::fma(w, O::load(xr + j * O::W), acc[u][j]);
        }
        if (walk) x += c[U - 1] * ld;
      }
      for (; i < count; ++i) {
        const float* xr = walk ? (x += int64_t(d[i]) * ld) : x0 + shift + off[i];
        const V w = O::bcast(vr + i);
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[0][j] = O::fma(w, O::load(xr + j * O::W), acc[0][j]);
      }
      float* y = p.y + m * p.ldy + n0 + shift;
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        V sum = acc[0][j];
#pragma GCC unroll 8
        for (int u = 1; u < U; ++u) sum = O::add(sum, acc[u][j]);
        O::store(y + j * O::W, O::clamp(sum, lo, hi));
      }
    }
    x -= (strips - 1) * NV * O::W;  // the walk continues from the row's end, in strip 0's columns
    v += 1 + count;
    d += count;
    if (!walk) off += count;
  }
}

template <class O, int NV, class Off>
void spmm_b4_pass(const ep::SpmmF32Args& p, const Off* off, int64_t n0) {
  using V = typename O::V;
  const V lo = O::set1(p.lo), hi = O::set1(p.hi);
  const float* v = p.values;
  const float* x = p.x + n0;
  for (int64_t m = 0, b = 0; m < p.m; m += 4, ++b) {
    V acc[4][NV];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const V bias = O::bcast(v + r);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] = bias;
    }
    v += 4;
    const int32_t count = p.nnz[b];
    for (int32_t i = 0; i < count; ++i) {
      const float* xr = x + off[i];
      V xv[NV];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) xv[j] = O::load(xr + j * O::W);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const V w = O::bcast(v + 4 * i + r);
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[r][j] = O::fma(w, xv[j], acc[r][j]);
      }
    }
    v += 4 * int64_t(count);
    off += count;
    const int rows = p.m - m < 4 ? int(p.m - m) : 4;
    // unrolled with the bound tested inside: a loop to `rows` indexes acc at run time, and GCC
    // then kept acc in memory too, storing every accumulator after each multiply-add (8 stores
    // per 8 FMAs on AVX2: the pass ran at 40 % of the dense kernel's rate per nonzero)
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      if (r >= rows) break;
      float* y = p.y + (m + r) * p.ldy + n0;
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) O::store(y + j * O::W, O::clamp(acc[r][j], lo, hi));
    }
  }
}

// One output of a b1 row from absolute channels: ISAs with a gather provide O::dot (O::W entries
// per instruction); the others take spmm_dot_scalar (spmm_f32_dot.h).
template <class O>
auto spmm_dot(int, const float* w, const int32_t* ch, int32_t count, const float* x, int64_t ldx)
    -> decltype(O::dot(w, ch, count, x, ldx)) {
  return O::dot(w, ch, count, x, ldx);
}
template <class O>
float spmm_dot(long, const float* w, const int32_t* ch, int32_t count, const float* x,
               int64_t ldx) {
  return spmm_dot_scalar(w, ch, count, x, ldx);
}

// Whether a b1 call's channel table can be used (kernels.h, SpmmF32Args::chans).
inline bool spmm_chans_apply(const ep::SpmmF32Args& p) {
  return p.chans && p.k > 0 && p.ldx > 0 && (p.k + 1) * p.ldx < (int64_t(1) << 31);
}

// Columns [n0, n) of a b1 call from its channel table (p.chans): each output one dot product.
// The summation order depends only on the row, so a column gives the same bits whichever call
// or thread computes it.
template <class O>
void spmm_b1_tail_chans(const ep::SpmmF32Args& p, int64_t n0) {
  const float* v = p.values;
  const int32_t* ch = p.chans;
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t count = p.nnz[m];
    for (int64_t n = n0; n < p.n; ++n) {
      float acc = v[0] + spmm_dot<O>(0, v + 1, ch, count, p.x + n, p.ldx);
      acc = acc < p.lo ? p.lo : acc;
      p.y[m * p.ldy + n] = acc > p.hi ? p.hi : acc;
    }
    v += 1 + int64_t(count);
    ch += count;
  }
}

// The delta stream turned into absolute X offsets (channel * ldx) for this call: the kernel's
// loads then carry no pointer-chasing dependency from one nonzero to the next (a serial
// multiply-add per nonzero would cap a pass at one nonzero per ~4 cycles).
template <class Off>
const Off* spmm_offsets(const ep::SpmmF32Args& p, int block) {
  int64_t total = 0;
  for (int64_t b = 0; b < (p.m + block - 1) / block; ++b) total += p.nnz[b];
  Off* buf = static_cast<Off*>(ep::thread_scratch(0, size_t(total) * sizeof(Off)));
  int64_t chan = 0;
  for (int64_t i = 0; i < total; ++i) {
    chan += p.deltas[i];
    buf[i] = Off(chan * p.ldx);
  }
  return buf;
}

// Columns [n0, n), fewer than a vector (the end of a 14x14 layer's 196 = 12 * 16 + 4 columns, of
// a 7x7 one's 49 = 3 * 16 + 1, or a thread's last columns): one vector pass over a zero-padded copy
// of them into a [M, W] block (slot 1 of the thread scratch: no caller of this file holds it), then
// their columns copied out. The scalar per-column walk it replaces cost as much as the
// twelve vectors before it at N = 196 (docs/kernels.md). The offsets, where the ISA reads a table,
// are those of the padded copy (channel * W), built as spmm_offsets does. Only calls no plan
// serves reach it (a planned call's partial vector joins the plan's pass, spmm_b1_tiled); a
// column there always falls in this tail, whichever thread computes it, so threads keep the bits.
template <class O>
void spmm_padded_tail(const ep::SpmmF32Args& p, int block, int64_t n0) {
  constexpr int64_t W = O::W;
  const int64_t w = p.n - n0;
  int64_t total = 0;
  for (int64_t b = 0; b < (p.m + block - 1) / block; ++b) total += p.nnz[b];
  const size_t floats = size_t((p.k + p.m) * W);
  float* xt = static_cast<float*>(
      ep::thread_scratch(1, floats * sizeof(float) + size_t(total) * sizeof(int32_t)));
  float* yt = xt + p.k * W;
  for (int64_t c = 0; c < p.k; ++c)
    for (int64_t j = 0; j < W; ++j) xt[c * W + j] = j < w ? p.x[c * p.ldx + n0 + j] : 0.0f;
  ep::SpmmF32Args q = p;
  q.x = xt, q.ldx = W, q.y = yt, q.ldy = W, q.n = W;
  q.tiles = nullptr, q.chans = nullptr;
  const int32_t* off = nullptr;
  if (block == 4 || !spmm_walks<O>(0)) {
    int32_t* o = reinterpret_cast<int32_t*>(yt + p.m * W);
    int64_t chan = 0;
    for (int64_t i = 0; i < total; ++i) {
      chan += p.deltas[i];
      o[i] = int32_t(chan * W);
    }
    off = o;
  }
  block == 4 ? spmm_b4_pass<O, 1>(q, off, 0) : spmm_b1_pass<O, 1, 8>(q, off, 0);
  for (int64_t r = 0; r < p.m; ++r)
    for (int64_t j = 0; j < w; ++j) p.y[r * p.ldy + n0 + j] = yt[r * W + j];
}

// 4-vector strips a b1 pass takes row by row: as many as keep their X rows (K * strips * 4
// vectors) within 16 KB, half of L1 (docs/kernels.md, "Strips row by row")
template <class O>
int64_t spmm_b1_strips_per_row(int64_t k) {
  return std::max<int64_t>(1, 4096 / (std::max<int64_t>(1, k) * 4 * O::W));
}

template <class O, class Off>
void spmm_b1_run(const ep::SpmmF32Args& p, const Off* off, int64_t fit) {
  // AVX-512 (WalkDeltas): twice the accumulator sets, 16 FMA chains (docs/kernels.md)
  constexpr int X = spmm_walks<O>(0) ? 2 : 1;
  int64_t n0 = 0;
  if (fit >= 4 * O::W) {
    const int64_t per = spmm_b1_strips_per_row<O>(p.k);
    const int64_t full = p.n / (4 * O::W);
    for (int64_t s = 0; s < full; s += per) {
      const int64_t strips = std::min(per, full - s);
      if (strips > 1)
        spmm_b1_pass<O, 4, 2 * X, Off, true>(p, off, s * 4 * O::W, strips);
      else
        spmm_b1_pass<O, 4, 2 * X>(p, off, s * 4 * O::W);
    }
    n0 = full * 4 * O::W;
  }
  if (fit >= 2 * O::W)
    for (; n0 + 2 * O::W <= p.n; n0 += 2 * O::W) spmm_b1_pass<O, 2, 4 * X>(p, off, n0);
  for (; n0 + O::W <= p.n; n0 += O::W) spmm_b1_pass<O, 1, 8>(p, off, n0);
  if (spmm_chans_apply(p))
    spmm_b1_tail_chans<O>(p, n0);
  else if (n0 < p.n)
    spmm_padded_tail<O>(p, 1, n0);
}

template <class O, class Off>
void spmm_b4_run(const ep::SpmmF32Args& p, const Off* off, int64_t fit) {
  int64_t n0 = 0;
  // 4 vectors x 4 channels = 16 accumulators + 4 X vectors: only with 32 vector registers
  if (O::Regs >= 32 && fit >= 4 * O::W)
    for (; n0 + 4 * O::W <= p.n; n0 += 4 * O::W) spmm_b4_pass<O, 4>(p, off, n0);
  if (fit >= 2 * O::W)
    for (; n0 + 2 * O::W <= p.n; n0 += 2 * O::W) spmm_b4_pass<O, 2>(p, off, n0);
  for (; n0 + O::W <= p.n; n0 += O::W) spmm_b4_pass<O, 1>(p, off, n0);
  if (n0 < p.n) spmm_padded_tail<O>(p, 4, n0);
}

// One stream entry of a tile pass at tile offset o (channel * the plan's strip): NV vectors of
// the X row from the tile copy xt, and with E = 1 one more from xe, a copy one vector wide (its
// row at o / NV: E = 1 only goes with NV = the plan's vectors, whose rows are the plan's strip).
template <class O, int NV, int E>
inline void spmm_tile_fma(typename O::V (&acc)[NV + E], const float* xt, const float* xe,
                          uint32_t o, typename O::V w) {
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) acc[j] = O::fma(w, O::load(xt + o + j * O::W), acc[j]);
  if (E) acc[NV] = O::fma(w, O::load(xe + o / NV), acc[NV]);
}

// Entry L of a group of 4: offset L of the packed 16-bit offsets in g, weight L of the 4 in w4
// (one load for 4 offsets and one for 4 weights: the loop is bound by loads, one per X vector,
// so the loads saved on offsets and weights are what it gains).
template <class O, int NV, int E, int L>
inline void spmm_tile_entry(typename O::V (&acc)[NV + E], const float* xt, const float* xe,
                            uint64_t g, typename O::Q w4) {
  spmm_tile_fma<O, NV, E>(acc, xt, xe, uint32_t(g >> (16 * L)) & 0xffff, O::template lane<L>(w4));
}

// One K tile (its X rows start at xt, and with E = 1 one more vector's at xe) over output rows
// [m0, m1) of a strip of NV + E vectors, reading the plan's tile-major stream sequentially
// (cnt, off and v advance past it). Tile 0 starts from the bias, later tiles from the partial
// sums; only the last tile clamps and writes Y. Partial sums go to `part` (row m at
// (m - m0) * (NV + E) vectors), contiguous and reused by every strip, not to Y, whose rows lie a
// page or so apart. Two accumulator sets take alternate entries. Why both: docs/kernels.md,
// "Inside a tile pass". Each column's sums are made in the same order whatever NV and E, so a
// column gives the same bits in any strip.
template <class O, int NV, int E, bool First, bool Last>
void spmm_b1_tile_rows(const ep::SpmmF32Args& q, const float* xt, const float* xe,
                       const float* bias, int64_t m0, int64_t m1, float* part,
                       const int32_t*& cnt_at, const uint16_t*& off_at, const float*& v_at) {
  constexpr int NA = NV + E;
  using V = typename O::V;
  // local cursors: through the references, every row would store and reload them
  const int32_t* cnt = cnt_at;
  const uint16_t* off = off_at;
  const float* v = v_at;
  const V lo = O::set1(q.lo), hi = O::set1(q.hi);
  const int64_t ldy = q.ldy;
  float* y = q.y + m0 * ldy;
  float* ps = part;
  for (int64_t m = m0; m < m1; ++m, y += ldy, ps += NA * O::W) {
    V a0[NA], a1[NA];
#pragma GCC unroll 8
    for (int j = 0; j < NA; ++j) {
      a0[j] = First ? O::bcast(bias + m) : O::load(ps + j * O::W);
      a1[j] = O::set1(0.0f);
    }
    const int32_t count = *cnt++;
    int32_t i = 0;
    // Each group's offsets are loaded a group ahead (the plan pads its offsets by 4), so the X
    // loads wait on no fresh load (docs/kernels.md, "Offsets a group ahead").
    uint64_t gn;
    __builtin_memcpy(&gn, off, sizeof gn);
    for (; i + 4 <= count; i += 4) {
      const uint64_t g = gn;
      __builtin_memcpy(&gn, off + i + 4, sizeof gn);
      const typename O::Q w4 = O::quad(v + i);
      spmm_tile_entry<O, NV, E, 0>(a0, xt, xe, g, w4);
      spmm_tile_entry<O, NV, E, 1>(a1, xt, xe, g, w4);
      spmm_tile_entry<O, NV, E, 2>(a0, xt, xe, g, w4);
      spmm_tile_entry<O, NV, E, 3>(a1, xt, xe, g, w4);
    }
    for (int l = 0; i < count; ++i, ++l)
      spmm_tile_fma<O, NV, E>(a0, xt, xe, uint32_t(gn >> (16 * l)) & 0xffff, O::bcast(v + i));
    off += count;
    v += count;
#pragma GCC unroll 8
    for (int j = 0; j < NA; ++j) {
      const V sum = O::add(a0[j], a1[j]);
      if (Last)
        O::store(y + j * O::W, O::clamp(sum, lo, hi));
      else
        O::store(ps + j * O::W, sum);
    }
  }
  cnt_at = cnt;
  off_at = off;
  v_at = v;
}

// spmm_b1_tile_rows with `first` / `last` as template arguments: the row loop then holds no
// test of them, and GCC keeps its pointers in registers instead of spilling them every row.
template <class O, int NV, int E = 0>
void spmm_b1_tile_pass(const ep::SpmmF32Args& q, const float* xt, const float* xe,
                       const float* bias, bool first, bool last, int64_t m0, int64_t m1,
                       float* part, const int32_t*& cnt, const uint16_t*& off, const float*& v) {
  if (first && last)
    spmm_b1_tile_rows<O, NV, E, true, true>(q, xt, xe, bias, m0, m1, part, cnt, off, v);
  else if (first)
    spmm_b1_tile_rows<O, NV, E, true, false>(q, xt, xe, bias, m0, m1, part, cnt, off, v);
  else if (last)
    spmm_b1_tile_rows<O, NV, E, false, true>(q, xt, xe, bias, m0, m1, part, cnt, off, v);
  else
    spmm_b1_tile_rows<O, NV, E, false, false>(q, xt, xe, bias, m0, m1, part, cnt, off, v);
}

// Floats of per-thread scratch a tiled run needs besides any whole-strip copies: a tile, a
// tile one vector wide, and partial sums for one block of rows.
template <class O>
int64_t spmm_tiles_scratch(const ep::SpmmTilePlan& plan, int64_t m) {
  return plan.kt * 5 * O::W + std::min(plan.rows, m) * 5 * O::W;
}

// Output rows of plan blocks [b0, b1) over the NV (+ E) vectors of columns from n0: each K
// tile of them is copied just before its pass into `buf` (spmm_tiles_scratch floats: the tile
// with rows of the plan's strip, the E vector's tile, then partial sums), so the copies stay in
// L1 through their copy and their pass (a whole strip copied first goes through to L2).
// With valid < W, only that many floats of the last vector (the E one, else vector NV - 1) lie
// inside X: the copy takes those and zeros the rest, and y (rows p.ldy apart) receives the
// results in place of p.y + n0, the caller copying the valid columns out (a whole-vector store
// there would overwrite the next row's first columns).
template <class O, int NV, int E = 0>
void spmm_b1_strip_by_tiles(const ep::SpmmF32Args& p, const ep::SpmmTilePlan& plan, int64_t b0,
                            int64_t b1, int64_t n0, float* buf, int64_t valid = O::W,
                            float* y = nullptr) {
  const int64_t tw = plan.strip;
  float* xe = buf + plan.kt * tw;
  float* part = xe + plan.kt * O::W;
  ep::SpmmF32Args q = p;
  q.y = y ? y : p.y + n0;
  const auto copy = [valid](float* dst, const float* src) {
    if (valid >= O::W) return O::store(dst, O::load(src));
    for (int64_t i = 0; i < O::W; ++i) dst[i] = i < valid ? src[i] : 0.0f;
  };
  const int32_t* cnt = plan.counts.data() + b0 * plan.rows * plan.tiles;
  const uint16_t* off = plan.offsets.data() + plan.block_entries[b0];
  const float* v = plan.values.data() + plan.block_entries[b0];
  for (int64_t m0 = b0 * plan.rows; m0 < std::min(p.m, b1 * plan.rows); m0 += plan.rows)
    for (int64_t t = 0; t < plan.tiles; ++t) {
      const int64_t c0 = t * plan.kt, c1 = std::min(p.k, c0 + plan.kt);
      for (int64_t c = c0; c < c1; ++c) {
        const float* xc = p.x + c * p.ldx + n0;
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j)
          if (E || j + 1 < NV)
            O::store(buf + (c - c0) * tw + j * O::W, O::load(xc + j * O::W));
          else
            copy(buf + (c - c0) * tw + j * O::W, xc + j * O::W);
        if (E) copy(xe + (c - c0) * O::W, xc + NV * O::W);
      }
      spmm_b1_tile_pass<O, NV, E>(q, buf, xe, plan.bias.data(), t == 0, t == plan.tiles - 1, m0,
                                  std::min(p.m, m0 + plan.rows), part, cnt, off, v);
    }
}

// b1 from a tile plan (SpmmTilePlan in kernels.h: why, and its layout): full strips of
// spmm_plan_strip columns, per block of output rows, tile by tile, from copies of X. Returns
// false (nothing written) without a plan made for this path's vectors, with less than one vector
// of columns, or with too few stream entries for the plan to pay (spmm_plan_applies); the caller
// then walks the stream. Full strips are computed for the rows of blocks [block0, block1); with
// `rest`, the columns after the last full strip for every row: 1-3 vectors from the plan too,
// then fewer than a vector's columns from the stream. Which code computes a column thus depends
// only on its distance from the end of X, and each column's sums are made in the same order in
// any strip, so threads splitting columns at strip multiples or rows by blocks give the same bits.
template <class O>
bool spmm_b1_tiled(const ep::SpmmF32Args& p, int64_t entries) {
  const ep::SpmmTilePlan* plan = p.tiles;
  if (!ep::spmm_plan_applies(plan, p.m, p.k, p.n, entries, O::W)) return false;
  // The plan's offsets are channel * ts, so every tile copy has rows of ts floats (3 or 4
  // vectors). A strip of sw = 4 vectors over a 3-vector plan (spmm_plan_strip: some small N)
  // keeps its 4th vector in a copy of its own, one vector wide (E = 1).
  const int64_t ts = plan->strip, sw = ep::spmm_plan_strip(*plan, p.n, O::W);
  const bool three = ts == 3 * O::W, extra = sw > ts;
  const auto strip_pass = [&](const ep::SpmmF32Args& q, const float* xt, const float* xe,
                              bool first, bool last, int64_t m0, int64_t m1, float* part,
                              const int32_t*& cnt, const uint16_t*& off, const float*& v) {
    const float* bias = plan->bias.data();
    if (!three)
      spmm_b1_tile_pass<O, 4>(q, xt, nullptr, bias, first, last, m0, m1, part, cnt, off, v);
    else if (extra)
      spmm_b1_tile_pass<O, 3, 1>(q, xt, xe, bias, first, last, m0, m1, part, cnt, off, v);
    else
      spmm_b1_tile_pass<O, 3>(q, xt, nullptr, bias, first, last, m0, m1, part, cnt, off, v);
  };
  // Channel c of strip s of X copied: a row of ts floats at `main`, the 4th vector (extra) at
  // `ext` (the copies of a strip: K such rows, then K such vectors).
  const auto copy_row = [&](int64_t s, int64_t c, float* main, float* ext) {
    const float* xc = p.x + c * p.ldx + s * sw;
    for (int64_t j = 0; j < ts; j += O::W) O::store(main + c * ts + j, O::load(xc + j));
    if (extra) O::store(ext + c * O::W, O::load(xc + ts));
  };
  const int64_t blocks = int64_t(plan->block_entries.size()) - 1;
  const int64_t b0 = std::max<int64_t>(0, p.block0),
                b1 = p.block1 < 0 ? blocks : std::min(blocks, p.block1);
  const int64_t full = p.n / sw, part_floats = std::min(plan->rows, p.m) * sw;
  int64_t vectors = (p.n - full * sw) / O::W;  // whole vectors after the last full strip
  ep::SpmmF32Args q = p;
  if (b1 - b0 >= 2 && full >= 2 &&
      p.k * full * sw * int64_t(sizeof(float)) <= ep::kBlockMajorBytes) {
    // Block-major: every full strip copied first, then each block of rows runs over all of them,
    // so the block's part of the stream is read from memory once, not once per strip.
    const int64_t floats = p.k * full * sw + part_floats;
    float* xs = static_cast<float*>(ep::thread_scratch(2, size_t(floats) * sizeof(float)));
    for (int64_t c = 0; c < p.k; ++c)  // X read row by row
      for (int64_t s = 0; s < full; ++s)
        copy_row(s, c, xs + s * p.k * sw, xs + s * p.k * sw + p.k * ts);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * plan->rows, m1 = std::min(p.m, m0 + plan->rows);
      for (int64_t s = 0; s < full; ++s) {
        q.y = p.y + s * sw;
        const float* xm = xs + s * p.k * sw;
        const int32_t* cnt = plan->counts.data() + m0 * plan->tiles;
        const uint16_t* off = plan->offsets.data() + plan->block_entries[b];
        const float* v = plan->values.data() + plan->block_entries[b];
        for (int64_t t = 0; t < plan->tiles; ++t)
          strip_pass(q, xm + t * plan->kt * ts, xm + p.k * ts + t * plan->kt * O::W, t == 0,
                     t == plan->tiles - 1, m0, m1, xs + p.k * full * sw, cnt, off, v);
      }
    }
  } else if (b1 - b0 == 1) {  // strip-major, one block: each tile copied just before its pass
    const int64_t floats = spmm_tiles_scratch<O>(*plan, p.m);
    float* buf = static_cast<float*>(ep::thread_scratch(2, size_t(floats) * sizeof(float)));
    // With every row in range, one vector after the last strip joins it (one pass over the rows
    // instead of two).
    const bool join = vectors == 1 && !extra && b0 == 0 && b1 == blocks && full > 0 && p.rest;
    for (int64_t s = 0; s < full; ++s) {
      const bool wide = extra || (join && s == full - 1);  // a vector beside the plan's strip
      if (three)
        wide ? spmm_b1_strip_by_tiles<O, 3, 1>(p, *plan, b0, b1, s * sw, buf)
             : spmm_b1_strip_by_tiles<O, 3>(p, *plan, b0, b1, s * sw, buf);
      else
        wide ? spmm_b1_strip_by_tiles<O, 4, 1>(p, *plan, b0, b1, s * sw, buf)
             : spmm_b1_strip_by_tiles<O, 4>(p, *plan, b0, b1, s * sw, buf);
    }
    if (join) vectors = 0;
  } else if (b1 > b0) {  // strip-major, several blocks: the strip copied once for all of them
    float* strip =
        static_cast<float*>(ep::thread_scratch(2, size_t(p.k * sw + part_floats) * sizeof(float)));
    for (int64_t s = 0; s < full; ++s) {
      for (int64_t c = 0; c < p.k; ++c) copy_row(s, c, strip, strip + p.k * ts);
      q.y = p.y + s * sw;
      const int32_t* cnt = plan->counts.data() + b0 * plan->rows * plan->tiles;
      const uint16_t* off = plan->offsets.data() + plan->block_entries[b0];
      const float* v = plan->values.data() + plan->block_entries[b0];
      for (int64_t m0 = b0 * plan->rows; m0 < std::min(p.m, b1 * plan->rows); m0 += plan->rows)
        for (int64_t t = 0; t < plan->tiles; ++t)
          strip_pass(q, strip + t * plan->kt * ts, strip + p.k * ts + t * plan->kt * O::W, t == 0,
                     t == plan->tiles - 1, m0, std::min(p.m, m0 + plan->rows), strip + p.k * sw,
                     cnt, off, v);
    }
  }
  if (!p.rest) return true;
  // The columns after the last full strip, for every row: whole vectors from the plan (their
  // copy stays as narrow as they are; cheaper than walking the stream for them). A last partial
  // vector joins them: its valid floats are copied into the tile with zeros after them, the
  // results go to a block of their own (slot 1 of the thread scratch, which no caller of this
  // file holds) and the valid columns are copied out. A pass of its own for that vector (or the
  // scalar walk before it) cost as much as the whole vectors: 7x7 layers have 49 = 3 * 16 + 1
  // columns, 14x14 ones 196 = 12 * 16 + 4. Each column's sum is the same either way (lanes are
  // columns).
  const int64_t c0 = p.n / O::W * O::W - vectors * O::W, cols = p.n - c0;  // (a joined one done)
  const int64_t nv = (cols + O::W - 1) / O::W;  // vectors, the partial one included
  if (nv == 0) return true;
  const int64_t floats = spmm_tiles_scratch<O>(*plan, p.m);
  float* buf = static_cast<float*>(ep::thread_scratch(2, size_t(floats) * sizeof(float)));
  const int64_t valid = cols - (nv - 1) * O::W;  // floats of the last vector inside X
  ep::SpmmF32Args r = p;
  float* yp = nullptr;
  if (valid < O::W) {
    r.ldy = nv * O::W;
    yp = static_cast<float*>(ep::thread_scratch(1, size_t(p.m * r.ldy) * sizeof(float)));
  }
  if (nv == 4 && three)  // a 3-vector plan: the 4th vector in a copy of its own
    spmm_b1_strip_by_tiles<O, 3, 1>(r, *plan, 0, blocks, c0, buf, valid, yp);
  else if (nv == 4)
    spmm_b1_strip_by_tiles<O, 4>(r, *plan, 0, blocks, c0, buf, valid, yp);
  else if (nv == 3)
    spmm_b1_strip_by_tiles<O, 3>(r, *plan, 0, blocks, c0, buf, valid, yp);
  else if (nv == 2)
    spmm_b1_strip_by_tiles<O, 2>(r, *plan, 0, blocks, c0, buf, valid, yp);
  else
    spmm_b1_strip_by_tiles<O, 1>(r, *plan, 0, blocks, c0, buf, valid, yp);
  if (yp)
    for (int64_t m = 0; m < p.m; ++m)
      for (int64_t j = 0; j < cols; ++j) p.y[m * p.ldy + c0 + j] = yp[m * r.ldy + j];
  return true;
}

// Columns per pass: the widest strip whose X block (K rows) stays within ~128 KB (L1 + the
// near part of L2: wider passes amortise each row's set-up and each nonzero's weight broadcast
// over more columns; docs/kernels.md, "Without a plan"). When X is reused enough, it is
// copied one strip at a time into a contiguous [K, strip] buffer first: a pass then touches
// K * strip floats on a few pages instead of K rows spread over the whole input (a TLB miss per
// nonzero once X spans more pages than the L1 TLB holds).
template <class O>
void spmm_driver(const ep::SpmmF32Args& p, int block) {
  // narrower than a vector (an FC layer at batch 1): dot products, nothing to set up per call
  if (block == 1 && p.n < O::W && spmm_chans_apply(p)) return spmm_b1_tail_chans<O>(p, 0);
  const int64_t fit = 32768 / (p.k > 0 ? p.k : 1);  // floats per X row that fit
  const bool wide = fit >= 4 * O::W && (block == 1 || O::Regs >= 32);
  const int64_t widest = wide ? 4 * O::W : fit >= 2 * O::W ? 2 * O::W : O::W;
  // The copy costs K*N moves; it pays when each X element is loaded often enough (stream
  // entries per input channel), and sooner with wide strips (the measured break-even:
  // docs/kernels.md).
  int64_t entries = 0;
  for (int64_t b = 0; b < (p.m + block - 1) / block; ++b) entries += p.nnz[b];
  if (block == 1 && spmm_b1_tiled<O>(p, entries)) return;
  if (p.k <= 0 || p.n <= widest || entries < 512 / widest * p.k) {  // run in place
    if (block == 1 && spmm_walks<O>(0))
      return spmm_b1_run<O>(p, static_cast<const int32_t*>(nullptr), fit);
    const bool small = (p.k + 1) * (p.ldx > 0 ? p.ldx : 1) < (int64_t(1) << 31);
    if (small) {
      const int32_t* off = spmm_offsets<int32_t>(p, block);
      block == 4 ? spmm_b4_run<O>(p, off, fit) : spmm_b1_run<O>(p, off, fit);
    } else {
      const int64_t* off = spmm_offsets<int64_t>(p, block);
      block == 4 ? spmm_b4_run<O>(p, off, fit) : spmm_b1_run<O>(p, off, fit);
    }
    return;
  }
  // b1 copies as many 4-vector strips at once as spmm_b1_run then takes row by row, so Y is
  // written in runs of that many strips here too. One strip at a time wrote 256-byte pieces of
  // every output row: on a Xeon (AVX-512) 96x16x12544 at 90 % took 0.456 ms this way against
  // 0.294 on the AVX2 path, which ran it in place.
  const int64_t per = block == 1 && wide ? spmm_b1_strips_per_row<O>(p.k) : 1;
  const int64_t span = widest * per;
  float* strip = static_cast<float*>(ep::thread_scratch(2, size_t(p.k * span) * sizeof(float)));
  ep::SpmmF32Args q = p;
  q.x = strip;
  q.ldx = span;
  // K * span floats: always 32-bit (b1 on a WalkDeltas ISA needs none)
  const int32_t* off = block == 4 || !spmm_walks<O>(0) ? spmm_offsets<int32_t>(q, block) : nullptr;
  for (int64_t n0 = 0; n0 < p.n; n0 += span) {
    const int64_t w = p.n - n0 < span ? p.n - n0 : span;
    if (w % O::W == 0) {  // vector copy: cheaper than a memcpy call per 64..256-byte row
      for (int64_t c = 0; c < p.k; ++c)
        for (int64_t j = 0; j < w; j += O::W)
          O::store(strip + c * span + j, O::load(p.x + c * p.ldx + n0 + j));
    } else {
      for (int64_t c = 0; c < p.k; ++c)
        __builtin_memcpy(strip + c * span, p.x + c * p.ldx + n0, size_t(w) * sizeof(float));
    }
    q.y = p.y + n0;
    q.n = w;
    block == 4 ? spmm_b4_run<O>(q, off, fit) : spmm_b1_run<O>(q, off, fit);
  }
}
