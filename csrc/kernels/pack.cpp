// Weight packers shared by every path: dense panels and the XNNPACK-style sparse stream.
//
// Consumes: dense row-major matrices (zeros = pruned weights). Produces: the packed layouts
// documented in kernels.h.
#include <algorithm>
#include <array>
#include <stdexcept>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/kernels.h"

namespace ep {

int64_t packed_dense_size(int64_t depth, int64_t cols, int tile) {
  const int64_t panels = (cols + tile - 1) / tile;
  return panels * tile * depth;
}

void pack_dense_f32(const float* b, int64_t b_sk, int64_t b_sm, int64_t depth, int64_t cols,
                    int tile, float* out) {
  for (int64_t j0 = 0; j0 < cols; j0 += tile) {
    const int64_t w = std::min<int64_t>(tile, cols - j0);
    for (int64_t k = 0; k < depth; ++k) {
      float* o = out + k * tile;
      const float* src = b + k * b_sk + j0 * b_sm;
      int64_t j = 0;
      if (b_sm == 1)
        for (; j < w; ++j) o[j] = src[j];
      else
        for (; j < w; ++j) o[j] = src[j * b_sm];
      for (; j < tile; ++j) o[j] = 0.0f;
    }
    out += tile * depth;
  }
}

int64_t packed_gemm_s8_size(int64_t cols, int64_t depth, int tile, int kgroup) {
  return (cols + tile - 1) / tile * tile * ((depth + kgroup - 1) / kgroup * kgroup);
}

void pack_gemm_s8(const int8_t* w, int64_t cols, int64_t depth, int tile, int kgroup, int8_t* out) {
  const int64_t groups = (depth + kgroup - 1) / kgroup;
  for (int64_t p = 0; p * tile < cols; ++p)
    for (int64_t g = 0; g < groups; ++g)
      for (int j = 0; j < tile; ++j)
        for (int t = 0; t < kgroup; ++t) {
          const int64_t c = p * tile + j, k = g * kgroup + t;
          *out++ = c < cols && k < depth ? w[c * depth + k] : int8_t(0);
        }
}

void* thread_scratch(int slot, size_t bytes) {
  thread_local std::vector<unsigned char> buffers[4];
  auto& b = buffers[slot & 3];
  if (b.size() < bytes + 64) b.resize(bytes + 64);
  // 64-byte aligned start, so vector loads from it never split a cache line needlessly
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(b.data()) + 63) & ~uintptr_t(63));
}

PackedSparseS8 pack_sparse_s8(const int8_t* w, int64_t m, int64_t k) {
  PackedSparseS8 p;
  p.m = m;
  p.k = k;
  const int64_t quads = (k + 3) / 4;
  for (int64_t r = 0; r < m; ++r) {
    int32_t count = 0;
    for (int64_t q = 0; q < quads; ++q) {
      uint32_t bytes = 0;
      for (int t = 0; t < 4; ++t) {
        const int64_t c = 4 * q + t;
        if (c < k) bytes |= uint32_t(uint8_t(w[r * k + c])) << (8 * t);
      }
      if (!bytes) continue;
      p.quad.push_back(int32_t(q));
      p.w.push_back(int32_t(bytes));
      ++count;
    }
    p.nnz.push_back(count);
  }
  return p;
}

namespace {

// The group layout both one-column forms share (kernels.h): for each group of kGroupRows rows
// and each window of `width` input positions, the slot count (appended to `slots`), then per slot
// and row emit(e, v): the row's next entry e in window v, or e = -1 (padding). Row r's entries
// are [next[r], end[r]), in increasing position order; pos(e) is entry e's input position (a quad
// for int8, a channel for fp32).
template <class Pos, class Emit>
void lay_out_groups(int64_t m, int64_t windows, int64_t width, std::vector<int64_t> next,
                    const std::vector<int64_t>& end, Pos pos, std::vector<int32_t>& slots,
                    Emit emit) {
  for (int64_t g0 = 0; g0 < m; g0 += kGroupRows) {
    const int64_t g1 = std::min(m, g0 + kGroupRows);
    for (int64_t v = 0; v < windows; ++v) {
      const int64_t limit = (v + 1) * width;
      std::array<int64_t, kGroupRows> stop{};
      int64_t count = 0;
      for (int64_t r = g0; r < g1; ++r) {
        int64_t e = next[size_t(r)];
        while (e < end[size_t(r)] && pos(e) < limit) ++e;
        stop[size_t(r - g0)] = e;
        count = std::max(count, e - next[size_t(r)]);
      }
      slots.push_back(int32_t(count));
      for (int64_t j = 0; j < count; ++j)
        for (int64_t r = g0; r < g0 + kGroupRows; ++r) {
          const int64_t e = r < g1 ? next[size_t(r)] + j : -1;
          emit(r < g1 && e < stop[size_t(r - g0)] ? e : -1, v);
        }
      for (int64_t r = g0; r < g1; ++r) next[size_t(r)] = stop[size_t(r - g0)];
    }
  }
}

}  // namespace

void pack_sparse_s8_groups(PackedSparseS8& p) {
  p.gslots.clear(), p.gquad.clear(), p.gw.clear();
  const int64_t windows = ((p.k + 3) / 4 + kGroupQuads - 1) / kGroupQuads;
  std::vector<int64_t> first(size_t(p.m), 0), end(size_t(p.m), 0);
  for (int64_t r = 0; r < p.m; ++r) {
    first[size_t(r)] = r ? end[size_t(r - 1)] : 0;
    end[size_t(r)] = first[size_t(r)] + p.nnz[size_t(r)];
  }
  lay_out_groups(
      p.m, windows, kGroupQuads, first, end, [&](int64_t e) { return int64_t(p.quad[size_t(e)]); },
      p.gslots,
      [&](int64_t e, int64_t v) {
        p.gquad.push_back(e >= 0 ? uint8_t(p.quad[size_t(e)] - v * kGroupQuads) : uint8_t(0));
        p.gw.push_back(e >= 0 ? p.w[size_t(e)] : 0);
      });
}

// Columns [0, n) of quad q (inputs 4q..4q+3, all inside K) as n 4-byte words: 4 consecutive bytes
// of each input row when X is given as [N, K] (transposed), else 4 input rows interleaved (a loop
// the compiler vectorises). x points at column 0.
static void whole_quads(const int8_t* x, int64_t ld, bool transposed, int64_t q, int64_t n,
                        int8_t* xq) {
  if (transposed) {
    for (int64_t i = 0; i < n; ++i) __builtin_memcpy(xq + i * 4, x + i * ld + 4 * q, 4);
    return;
  }
  const int8_t* r0 = x + (4 * q) * ld;
  const int8_t* r1 = r0 + ld;
  const int8_t* r2 = r1 + ld;
  const int8_t* r3 = r2 + ld;
  int64_t i = 0;
#if defined(__SSE2__)
  // 16 columns at a time by byte then word unpacks (x86-64's baseline SSE2): GCC left the
  // four-way byte interleave scalar, a quarter of a small-K sparse int8 call (NEON's compilers
  // emit st4 for the loop below themselves)
  const auto ld16 = [](const int8_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  };
  for (; i + 16 <= n; i += 16) {
    const __m128i a0 = ld16(r0 + i), a1 = ld16(r1 + i), a2 = ld16(r2 + i), a3 = ld16(r3 + i);
    const __m128i lo01 = _mm_unpacklo_epi8(a0, a1), hi01 = _mm_unpackhi_epi8(a0, a1);
    const __m128i lo23 = _mm_unpacklo_epi8(a2, a3), hi23 = _mm_unpackhi_epi8(a2, a3);
    __m128i* out = reinterpret_cast<__m128i*>(xq + i * 4);
    _mm_storeu_si128(out + 0, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(hi01, hi23));
  }
#endif
  for (; i < n; ++i) {
    xq[i * 4 + 0] = r0[i];
    xq[i * 4 + 1] = r1[i];
    xq[i * 4 + 2] = r2[i];
    xq[i * 4 + 3] = r3[i];
  }
}

void pack_quads_s8(const int8_t* x, int64_t k, int64_t n, int64_t ld, bool transposed, int8_t* xq) {
  const int64_t quads = (k + 3) / 4;
  for (int64_t s0 = 0; s0 < n; s0 += kQuadStrip) {
    for (int64_t q = 0; q < quads; ++q, xq += kQuadStrip * 4) {
      const bool full = 4 * q + 3 < k && s0 + kQuadStrip <= n;
      if (full) {
        whole_quads(transposed ? x + s0 * ld : x + s0, ld, transposed, q, kQuadStrip, xq);
      } else {  // the edges: zero past K and past N
        for (int64_t i = 0; i < kQuadStrip; ++i)
          for (int t = 0; t < 4; ++t) {
            const int64_t c = 4 * q + t, col = s0 + i;
            xq[i * 4 + t] =
                c < k && col < n ? (transposed ? x[col * ld + c] : x[c * ld + col]) : int8_t(0);
          }
      }
    }
  }
}

void pack_quads_s8_narrow(const int8_t* x, int64_t k, int64_t n, int64_t ld, bool transposed,
                          int8_t* xq) {
  const int64_t quads = (k + 3) / 4;
  for (int64_t q = 0; q < quads; ++q, xq += n * 4) {
    if (4 * q + 3 < k) {
      whole_quads(x, ld, transposed, q, n, xq);
    } else {  // the last, partial quad: zero past K
      for (int64_t i = 0; i < n; ++i)
        for (int t = 0; t < 4; ++t) {
          const int64_t c = 4 * q + t;
          xq[i * 4 + t] = c < k ? (transposed ? x[i * ld + c] : x[c * ld + i]) : int8_t(0);
        }
    }
  }
}

int gemm_s8_kgroup(Isa provider) {
  switch (provider) {
    case Isa::avx2:
      return 2;  // int16 pairs for vpmaddwd
    case Isa::avx512:
      return 4;  // byte quads for vpdpbusd
    case Isa::neon:
    case Isa::neon_dotprod:
      return 16;  // one q register of k per column
    default:
      return 1;
  }
}

PackedSparseF32 pack_sparse_f32(const float* w, int64_t m, int64_t k, const float* bias,
                                int block) {
  if (block != 1 && block != 4)
    throw std::invalid_argument("sparse block must be 1 or 4 output channels");
  PackedSparseF32 p;
  p.m = m;
  p.k = k;
  p.block = block;
  const int64_t blocks = (m + block - 1) / block;
  p.nnz.reserve(blocks);
  int64_t prev = 0;
  for (int64_t bi = 0; bi < blocks; ++bi) {
    const int64_t r0 = bi * block;
    for (int r = 0; r < block; ++r) p.values.push_back(bias && r0 + r < m ? bias[r0 + r] : 0.0f);
    int32_t count = 0;
    for (int64_t c = 0; c < k; ++c) {
      bool any = false;
      for (int r = 0; r < block && r0 + r < m; ++r) any |= w[(r0 + r) * k + c] != 0.0f;
      if (!any) continue;
      for (int r = 0; r < block; ++r) p.values.push_back(r0 + r < m ? w[(r0 + r) * k + c] : 0.0f);
      p.deltas.push_back(int32_t(c - prev));
      prev = c;
      ++count;
    }
    p.nnz.push_back(count);
  }
  return p;
}

namespace {

// A b1 stream's entries by row, for the one-column layouts: row r's entries are [first[r],
// end[r]), entry e's channel chans[e] and weight weight(e); bias(r) is the row's bias.
struct StreamRows {
  std::vector<int32_t> chans;
  std::vector<int64_t> first, end, value, row_of;
  const PackedSparseF32* p = nullptr;

  // false for a b4 stream or an inconsistent one (the one-column forms then stay empty)
  bool init(const PackedSparseF32& s) {
    p = &s;
    if (s.block != 1 || int64_t(s.nnz.size()) != s.m) return false;
    chans = spmm_channels(s);
    if (chans.size() != s.deltas.size()) return false;
    // per row: where its weights start in `values` (after its bias)
    first.assign(size_t(s.m), 0), end.assign(size_t(s.m), 0), value.assign(size_t(s.m), 0);
    for (int64_t r = 0, v = 0; r < s.m; ++r) {
      value[size_t(r)] = v + 1;
      first[size_t(r)] = r ? end[size_t(r - 1)] : 0;
      end[size_t(r)] = first[size_t(r)] + s.nnz[size_t(r)];
      v += 1 + s.nnz[size_t(r)];
    }
    row_of.assign(s.deltas.size(), 0);
    for (int64_t r = 0; r < s.m; ++r)
      for (int64_t e = first[size_t(r)]; e < end[size_t(r)]; ++e) row_of[size_t(e)] = r;
    return true;
  }
  float bias(int64_t r) const { return p->values[size_t(value[size_t(r)] - 1)]; }
  float weight(int64_t e) const {
    const int64_t r = row_of[size_t(e)];
    return p->values[size_t(value[size_t(r)] + e - first[size_t(r)])];
  }
  std::vector<float> padded_bias(int64_t rows) const {
    std::vector<float> b(size_t((p->m + rows - 1) / rows * rows), 0.0f);
    for (int64_t r = 0; r < p->m; ++r) b[size_t(r)] = bias(r);
    return b;
  }
};

}  // namespace

SparseF32Groups pack_sparse_f32_groups(const PackedSparseF32& p) {
  SparseF32Groups g;
  StreamRows s;
  if (!s.init(p)) return g;
  g.gbias = s.padded_bias(kGroupRows);
  lay_out_groups(
      p.m, (p.k + kGroupWindowF32 - 1) / kGroupWindowF32, kGroupWindowF32, s.first, s.end,
      [&](int64_t e) { return int64_t(s.chans[size_t(e)]); }, g.gslots,
      [&](int64_t e, int64_t v) {
        g.gidx.push_back(e >= 0 ? uint8_t(s.chans[size_t(e)] - v * kGroupWindowF32) : uint8_t(0));
        g.gw.push_back(e >= 0 ? s.weight(e) : 0.0f);
      });
  return g;
}

PackedSparseF32 rows_of_blocks(const PackedSparseF32& p) {
  PackedSparseF32 out;
  if (p.block != 4 || int64_t(p.nnz.size()) != (p.m + 3) / 4) return out;
  out.m = p.m, out.k = p.k, out.block = 1;
  std::vector<std::vector<std::pair<int32_t, float>>> rows(size_t(p.m));
  std::vector<float> bias(size_t(p.m), 0.0f);
  const float* v = p.values.data();
  const float* vend = v + p.values.size();
  const int32_t* d = p.deltas.data();
  const int32_t* dend = d + p.deltas.size();
  int64_t chan = 0;
  for (size_t b = 0; b < p.nnz.size(); ++b) {
    if (vend - v < 4) return PackedSparseF32{};
    for (int64_t r = 0; r < 4; ++r)
      if (int64_t(b) * 4 + r < p.m) bias[size_t(int64_t(b) * 4 + r)] = v[r];
    v += 4;
    for (int32_t i = 0; i < p.nnz[b]; ++i, v += 4) {
      if (d == dend || vend - v < 4) return PackedSparseF32{};
      chan += *d++;
      for (int64_t r = 0; r < 4; ++r)
        if (int64_t(b) * 4 + r < p.m && v[r] != 0.0f)
          rows[size_t(int64_t(b) * 4 + r)].push_back({int32_t(chan), v[r]});
    }
  }
  int64_t prev = 0;
  for (int64_t r = 0; r < p.m; ++r) {
    out.values.push_back(bias[size_t(r)]);
    out.nnz.push_back(int32_t(rows[size_t(r)].size()));
    for (const auto& [c, w] : rows[size_t(r)]) {
      out.values.push_back(w);
      out.deltas.push_back(int32_t(c - prev));
      prev = c;
    }
  }
  return out;
}

SparseF32Octets pack_sparse_f32_octets(const PackedSparseF32& p) {
  if (p.block == 4) return pack_sparse_f32_octets(rows_of_blocks(p));
  SparseF32Octets g;
  StreamRows s;
  if (!s.init(p) || p.k < 1) return g;
  g.gbias = s.padded_bias(kOctetRows);
  // Each slot's window starts at the lowest channel any of its group's rows still holds (K - 8 at
  // most), and every row whose next weight lies in it fills its lane. Windows fixed at multiples
  // of 8 left a row's weight just past a boundary to a slot of its own: at 90 % random sparsity
  // they stored about 1.3x the slots (3.0 weights a slot against 3.9), and a slot's cost is its
  // loads, whatever its weights.
  const int64_t last = std::max<int64_t>(p.k - kOctetRows, 0);
  std::vector<int64_t> next = s.first;
  for (int64_t g0 = 0; g0 < p.m; g0 += kOctetRows) {
    const int64_t g1 = std::min(p.m, g0 + kOctetRows);
    int32_t count = 0;
    for (;;) {
      int64_t low = p.k;
      for (int64_t r = g0; r < g1; ++r)
        if (next[size_t(r)] < s.end[size_t(r)])
          low = std::min<int64_t>(low, s.chans[size_t(next[size_t(r)])]);
      if (low == p.k) break;
      const int64_t base = std::min(low, last);
      g.gbase.push_back(int32_t(base));
      for (int64_t r = g0; r < g0 + kOctetRows; ++r) {
        const int64_t e = r < g1 ? next[size_t(r)] : -1;
        const bool in = e >= 0 && e < s.end[size_t(r)] && s.chans[size_t(e)] < base + kOctetRows;
        g.gidx.push_back(in ? uint8_t(s.chans[size_t(e)] - base) : uint8_t(0));
        g.gw.push_back(in ? s.weight(e) : 0.0f);
        if (in) ++next[size_t(r)];
      }
      ++count;
    }
    g.gslots.push_back(count);
  }
  return g;
}

std::vector<int32_t> spmm_channels(const PackedSparseF32& p) {
  std::vector<int32_t> out(p.deltas.size());
  int64_t chan = 0;
  for (size_t i = 0; i < p.deltas.size(); ++i) {
    chan += p.deltas[i];
    if (chan < 0 || chan >= p.k) return {};  // not a stream of this K: no table, walk it
    out[i] = int32_t(chan);
  }
  return out;
}

PackedSparseF32 sparse_rows(const PackedSparseF32& p, int64_t m0, int64_t m1) {
  PackedSparseF32 out;
  if (p.block != 1 || m0 < 0 || m1 > p.m || m0 >= m1 || int64_t(p.nnz.size()) != p.m) return out;
  int64_t e0 = 0, chan = 0;  // the first entry of row m0, and the channel before it
  for (int64_t r = 0; r < m0; ++r) e0 += p.nnz[size_t(r)];
  for (int64_t e = 0; e < e0; ++e) chan += p.deltas[size_t(e)];
  int64_t e1 = e0;
  for (int64_t r = m0; r < m1; ++r) e1 += p.nnz[size_t(r)];
  out.m = m1 - m0, out.k = p.k, out.block = 1;
  out.nnz.assign(p.nnz.begin() + m0, p.nnz.begin() + m1);
  out.deltas.assign(p.deltas.begin() + e0, p.deltas.begin() + e1);
  if (!out.deltas.empty()) out.deltas[0] = int32_t(chan + out.deltas[0]);  // from channel 0
  // values: per row its bias, then its weights (m0 biases precede row m0's)
  out.values.assign(p.values.begin() + (m0 + e0), p.values.begin() + (m1 + e1));
  return out;
}

namespace {

// The plan of a checked-shape stream with the given strip (floats) and tile count; `like` (or
// null) is the plan whose strip and tiles a part of its rows must share.
SpmmTilePlan build_plan(const PackedSparseF32& p, int lanes, int64_t l1_bytes,
                        const SpmmTilePlan* like) {
  const int64_t vec = lanes > 0 ? lanes : 1;
  int64_t strip = like ? like->strip : 4 * vec;
  if (p.block != 1 || p.k <= 0 || p.k * strip >= (int64_t(1) << 31) || int64_t(p.nnz.size()) != p.m)
    return {};
  // Where each row's entries and channels start in the delta stream, checking it on the way.
  std::vector<int64_t> first(size_t(p.m) + 1), chan0(size_t(p.m));
  int64_t i = 0, chan = 0;
  for (int64_t m = 0; m < p.m; ++m) {
    first[m] = i;
    chan0[m] = chan;
    const int64_t end = i + p.nnz[m];
    if (p.nnz[m] < 0 || end > int64_t(p.deltas.size())) return {};
    for (int64_t prev = -1; i < end; ++i) {
      chan += p.deltas[i];
      if (chan <= prev || chan >= p.k) return {};
      prev = chan;
    }
  }
  first[p.m] = i;
  if (int64_t(p.values.size()) != p.m + i) return {};
  // Each row pays per tile (start from bias or partial sums, reduce, store): with under ~10
  // entries per row and tile that outweighs what the L1 fit gains, so such layers take tiles of
  // 4/3 as many channels (measured at 95 %: 256 channels in 1 tile 7.3x numpy, in 2 tiles 6.7x)
  // and strips of 3 vectors, so that such a tile still fits the L1: a row pass then covers 3/4 of
  // the columns, but its loads hit the L1 (256x256x784 at 93-97 %: 3-5 % faster than 4-vector
  // strips over a tile 4/3 of the L1).
  // floats of X a tile may hold; tile offsets stay 16-bit whatever the L1
  const int64_t budget = std::min<int64_t>(
      (l1_bytes > 0 ? l1_bytes : kDefaultL1Bytes) / int64_t(sizeof(float)), 0xffff - strip);
  int64_t tiles = (p.k * strip + budget - 1) / budget;
  if (!like && i < 10 * p.m * tiles) {
    strip = 3 * vec;
    tiles = (p.k * strip + budget - 1) / budget;
  }
  tiles = like ? like->tiles : std::max<int64_t>(tiles, 1);
  if (tiles < 1) return {};
  const int64_t kt = (p.k + tiles - 1) / tiles;  // balanced tiles
  if ((kt - 1) * strip > 0xffff) return {};      // offsets within a tile are 16-bit
  SpmmTilePlan plan;
  plan.m = p.m;
  plan.k = p.k;
  plan.strip = strip;
  plan.tiles = tiles;
  plan.kt = kt;
  // ~200 KB of plan stream (6 bytes an entry) per block of rows
  plan.rows = std::max<int64_t>(16, (int64_t(1) << 15) * p.m / std::max<int64_t>(1, i));
  plan.bias.resize(size_t(p.m));
  plan.offsets.reserve(size_t(i));
  plan.values.reserve(size_t(i));
  plan.counts.reserve(size_t(p.m * tiles));
  // Each row's cursor (stream index, channel) moves through its entries tile by tile.
  std::vector<int64_t> at(first.begin(), first.end() - 1), ch(chan0);
  for (int64_t m = 0; m < p.m; ++m) plan.bias[m] = p.values[first[m] + m];
  for (int64_t m0 = 0; m0 < p.m; m0 += plan.rows) {
    plan.block_entries.push_back(int64_t(plan.offsets.size()));
    const int64_t m1 = std::min(p.m, m0 + plan.rows);
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t m = m0; m < m1; ++m) {
        int32_t count = 0;
        while (at[m] < first[m + 1] && ch[m] + p.deltas[at[m]] < (t + 1) * kt) {
          ch[m] += p.deltas[at[m]];
          plan.offsets.push_back(uint16_t((ch[m] - t * kt) * strip));
          plan.values.push_back(p.values[at[m] + m + 1]);  // entry i of row m: values[i + m + 1]
          ++at[m];
          ++count;
        }
        plan.counts.push_back(count);
      }
  }
  plan.block_entries.push_back(int64_t(plan.offsets.size()));
  plan.offsets.insert(plan.offsets.end(), 4,
                      0);  // a pass reads each row's offsets a group of 4 ahead
  return plan;
}

}  // namespace

SpmmTilePlan plan_spmm_tiles(const PackedSparseF32& p, int lanes, int64_t l1_bytes) {
  return build_plan(p, lanes, l1_bytes, nullptr);
}

SpmmTilePlan plan_spmm_tiles_like(const PackedSparseF32& p, const SpmmTilePlan& like) {
  if (like.tiles < 1 || like.k != p.k) return {};
  return build_plan(p, 1, 0, &like);
}

}  // namespace ep
