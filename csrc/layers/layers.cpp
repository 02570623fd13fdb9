// DenseLinear / SparseLinear (layers.h): weight packing at construction, thread splitting and
// the layout changes around the kernels at call time.
//
// Consumes: weights and inputs as raw float pointers. Produces: outputs in caller memory.
#include "layers/layers.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "layers/parallel.h"

namespace ep {

Act act_from_name(const std::string& name) {
  if (name == "none") return Act::none;
  if (name == "relu") return Act::relu;
  if (name == "relu6") return Act::relu6;
  throw std::invalid_argument("activation must be one of none, relu, relu6 (got '" + name + "')");
}

namespace {

double min_macs_from_env() {
  const char* env = std::getenv("EDGEPRUNE_MIN_MACS_PER_THREAD");
  if (!env || !*env) return kMinMacsPerThread;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  if (*end != '\0' || !(v >= 0.0) || !std::isfinite(v))
    throw std::invalid_argument(std::string("EDGEPRUNE_MIN_MACS_PER_THREAD=") + env +
                                " is not a number >= 0 (unset it for the default, " +
                                std::to_string(int64_t(kMinMacsPerThread)) + ")");
  return v;
}

std::atomic<double>& min_macs_setting() {
  static std::atomic<double> v{min_macs_from_env()};
  return v;
}

}  // namespace

double min_macs_per_thread() { return min_macs_setting().load(); }
void set_min_macs_per_thread(double macs) { min_macs_setting().store(macs > 0.0 ? macs : 0.0); }

int threads_for(int threads, double macs, double min_macs) {
  threads = std::max(1, threads);
  if (min_macs <= 0.0) return threads;
  // truncation is the floor here (the quotient is not negative); std::floor is a libm call on
  // baseline x86-64, and this runs on every layer call
  return std::max(1, int(std::min(double(threads), macs / min_macs)));
}
int threads_for(int threads, double macs) {
  return threads_for(threads, macs, min_macs_per_thread());
}

namespace {

// A layer must never hold kernels the CPU cannot run (that would be SIGILL, not an error).
const KernelTable& runnable_table(Isa isa) {
  if (!(supported_isas() & IsaSet(isa)))
    throw std::invalid_argument(std::string("kernel path ") + isa_name(isa) +
                                " is not supported by this CPU");
  return kernel_table(isa);
}

// Split [0, total) into at most threads_for(threads, macs) chunks whose starts are multiples of
// `align`.
struct Split {
  int64_t chunk, tasks;
};
Split split(int64_t total, int threads, int64_t align, double macs) {
  threads = threads_for(threads, macs);
  int64_t chunk = (total + threads - 1) / threads;
  chunk = std::max<int64_t>(align, (chunk + align - 1) / align * align);
  return {chunk, total == 0 ? 0 : (total + chunk - 1) / chunk};
}

// Per-call scratch without zero-filling (std::vector would write every byte before we do), on a
// 64-byte boundary like the Python outputs (module.cpp): threads that split its rows at 64-byte
// columns then never share a cache line.
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
std::unique_ptr<T[], AlignedFree> scratch(int64_t count) {
  const size_t bytes = (size_t(count > 0 ? count : 1) * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return std::unique_ptr<T[], AlignedFree>(static_cast<T*>(p));
}

}  // namespace

DenseLinear::DenseLinear(const float* w, int64_t m, int64_t k, const float* bias, Act act)
    : DenseLinear(w, m, k, bias, act, selected_isa()) {}

DenseLinear::DenseLinear(const float* w, int64_t m, int64_t k, const float* bias, Act act, Isa isa)
    : m_(m), k_(k), w_(w, w + m * k), has_bias_(bias != nullptr) {
  if (m <= 0 || k <= 0) throw std::invalid_argument("weight must have a nonzero shape");
  bias_.assign(m, 0.0f);
  if (bias) std::copy(bias, bias + m, bias_.begin());
  act_bounds(act, &lo_, &hi_);
  kern_ = runnable_table(isa).dense_f32;
  transpose_ = runnable_table(isa).transpose_f32.fn;
  packed_.resize(packed_dense_size(k, m, kern_.tile));
  // B(k, j) = W[j, k]: the Linear layout packs W^T once, here.
  pack_dense_f32(w_.data(), 1, k, k, m, kern_.tile, packed_.data());
}

void DenseLinear::forward(const float* x, int64_t n, float* y, int threads) const {
  forward_rows(x, k_, n, y, threads);
}

void DenseLinear::forward_rows(const float* x, int64_t ldx, int64_t n, float* y,
                               int threads) const {
  const double macs = double(n) * double(m_) * double(k_);
  // Threads take ranges of output columns at panel multiples: each column is computed as alone
  // (the same row tiles, the same order over K), so the bits are those of one thread.
  const auto by_columns = [&](int use) {
    const int64_t tile = kern_.tile, panels = (m_ + tile - 1) / tile;
    const int64_t per = (panels + use - 1) / use;
    parallel_for(use, (panels + per - 1) / per, [&](int64_t t) {
      const int64_t c0 = t * per * tile, c1 = std::min(m_, c0 + per * tile);
      DenseF32Args p = rows_args(x, ldx, n, y);
      p.b = w_.data() + c0 * k_;
      p.bp = packed_.data() + (c0 / tile) * k_ * tile;
      p.bias = has_bias_ ? bias_.data() + c0 : nullptr;
      p.y = y + c0;
      p.cols = c1 - c0;
      kern_.fn(p);
    });
  };
  if (n < 8) {
    // Too few rows to split (an FC layer at batch 1). Each weight is read once per row from
    // memory or L3 (1280x1000: about 60 us for 1.3 M multiply-adds, 6x the cached rate), so
    // weigh the work by 6.
    return by_columns(threads_for(threads, 6.0 * macs));
  }
  const Split s = split(n, threads, 8, macs);
  // Row chunks start at multiples of 8 (whole row strips of the kernels), so few rows split
  // unevenly: a 7x7 layer's 49 rows as 32 and 17, at most 1.5x on 2 threads, each thread
  // streaming all the weights. There the columns split instead, when there are panels enough
  // for every thread: even shares, and each thread reads only its panels' weights.
  const int use = threads_for(threads, macs);
  if (s.tasks > 1 && double(s.chunk) * double(use) > 1.15 * double(n) &&
      (m_ + kern_.tile - 1) / kern_.tile >= 4 * use)
    return by_columns(use);
  parallel_for(threads, s.tasks, [&](int64_t t) {
    const int64_t r0 = t * s.chunk;
    kern_.fn(rows_args(x + r0 * ldx, ldx, std::min(s.chunk, n - r0), y + r0 * m_));
  });
}

DenseF32Args DenseLinear::rows_args(const float* x, int64_t ldx, int64_t n, float* y) const {
  DenseF32Args p;
  p.a = x;
  p.lda = ldx;
  p.b = w_.data();
  p.b_sk = 1;
  p.b_sm = k_;
  p.bp = packed_.data();
  p.bias = has_bias_ ? bias_.data() : nullptr;
  p.y = y;
  p.ldy = m_;
  p.rows = n;
  p.cols = m_;
  p.depth = k_;
  p.lo = lo_;
  p.hi = hi_;
  return p;
}

void DenseLinear::forward_segments(const float* x, int64_t ldx, int64_t seg, int64_t seg_stride,
                                   int64_t n, float* y) const {
  DenseF32Args p = rows_args(x, ldx, n, y);
  p.a_seg = seg;
  p.a_seg_stride = seg_stride;
  kern_.fn(p);
}

// The share of a kernel's vector lanes that hold real columns when `cols` are cut into panels
// of `tile`, two vectors wide: a last partial panel computes the vectors its columns reach.
static double lane_use(int64_t cols, int64_t tile) {
  const int64_t v = tile > 1 ? tile / 2 : 1;
  return double(cols) / double((cols + v - 1) / v * v);
}

void DenseLinear::forward_kn(const float* x, int64_t n, float* y, int threads) const {
  // One column: X[K, 1] and Y[M, 1] are x[1, K] and y[1, M] in memory, and the Linear layout
  // streams the packed W^T once, where this layout would pad X to a whole panel of columns.
  if (n == 1) return forward(x, 1, y, threads);
  // Few columns that fill the panels badly (a 7x7 layer: 49 = 32 + 17 of 64 lanes) while M fills
  // them well: Y^T = X^T W^T in the Linear layout vectorises over M instead. The transposes (the
  // path's register-tile kernel) move N (K + M) floats against M K N multiply-adds, and each
  // output sums the same products in the same order (depth blocks of KC, bias first), so the
  // bits are the same. Reduction-heavy layers with up to 256 columns (K >= 2M, M >= 64: the
  // 14x14 projections of MobileNet and EfficientNet) also measured 7-14 % faster that way,
  // transposes included; expanding layers (M > K), narrow ones (M < 64) and 392 columns were
  // slower (docs/kernels.md, "Few columns").
  const bool lanes = lane_use(m_, kern_.tile) > lane_use(n, kern_.tile) + 0.1;
  const bool reduction = n <= 256 && k_ >= 2 * m_ && m_ >= 64;
  if (n < kDenseInPlaceMinCols && (lanes || reduction)) {
    // rows 4 KB apart would share the same L1 sets (a row strip reads 8 of them at once)
    const int64_t ld = k_ % 1024 == 0 ? k_ + 16 : k_;
    auto xt = scratch<float>(ld * n), yt = scratch<float>(m_ * n);
    transpose_({x, k_, n, xt.get(), ld});
    forward_rows(xt.get(), ld, n, yt.get(), threads);
    transpose_({yt.get(), n, m_, y, n});
    return;
  }
  // Y[M, N] = W X: A = W, B = X. X changes every call: K*N copies to pack it against M*K*N
  // multiply-adds, a large share when M is small, so wide inputs are read in place (their rows
  // are contiguous); narrower ones are packed, their short rows being slower to read where they
  // lie (docs/kernels.md, "Dense fp32").
  const bool pack = n < kDenseInPlaceMinCols;
  auto xp = scratch<float>(pack ? packed_dense_size(k_, n, kern_.tile) : 1);
  if (pack) pack_dense_f32(x, n, 1, k_, n, kern_.tile, xp.get());
  const Split s = split(m_, threads, 8, double(n) * double(m_) * double(k_));
  parallel_for(threads, s.tasks, [&](int64_t t) {
    const int64_t r0 = t * s.chunk, rows = std::min(s.chunk, m_ - r0);
    // Filled field by field like DenseLinear::forward on purpose: the two layouts swap A and B,
    // their strides and the bias direction, so only the field names are common.
    DenseF32Args p;
    p.a = w_.data() + r0 * k_;
    p.lda = k_;
    p.b = x;
    p.b_sk = n;
    p.b_sm = 1;
    p.bp = pack ? xp.get() : nullptr;
    p.bias = has_bias_ ? bias_.data() + r0 : nullptr;
    p.bias_per_row = true;
    p.y = y + r0 * n;
    p.ldy = n;
    p.rows = rows;
    p.cols = n;
    p.depth = k_;
    p.lo = lo_;
    p.hi = hi_;
    kern_.fn(p);
  });
}

SparseLinear::SparseLinear(const float* w, int64_t m, int64_t k, const float* bias, int block,
                           Act act, SparseKernel kernel)
    : SparseLinear(w, m, k, bias, block, act, kernel, selected_isa()) {}

SparseLinear::SparseLinear(const float* w, int64_t m, int64_t k, const float* bias, int block,
                           Act act, SparseKernel kernel, Isa isa)
    : m_(m), k_(k) {
  if (m <= 0 || k <= 0) throw std::invalid_argument("weight must have a nonzero shape");
  if (block != 1 && block != 4)
    throw std::invalid_argument("sparse block must be 1 or 4 output channels");
  for (int64_t i = 0; i < m * k; ++i) nnz_ += w[i] != 0.0f;
  act_bounds(act, &lo_, &hi_);
  bool dense = kernel == SparseKernel::dense;
  if (!dense) packed_ = pack_sparse_f32(w, m, k, bias, block);
  if (kernel == SparseKernel::automatic) {
    const double limit = block == 4 ? kAutoMaxDensityB4 : kAutoMaxDensityB1;
    dense = double(packed_.nonzeros()) > limit * double(m * k);
  }
  if (dense) {
    dense_ = std::make_unique<DenseLinear>(w, m, k, bias, act, isa);
    packed_ = PackedSparseF32{};
    packed_.m = m;
    packed_.k = k;
    packed_.block = block;
    return;
  }
  const KernelTable& t = runnable_table(isa);
  kern_ = block == 4 ? t.spmm_f32_b4 : t.spmm_f32_b1;
  transpose_ = t.transpose_f32.fn;
  if (kernel == SparseKernel::automatic && kern_.tile > 1 &&
      (double(packed_.nonzeros()) > kAutoMaxDensityNarrow * double(m * k) ||
       m * k < kAutoNarrowMinWeights))
    narrow_ = std::make_unique<DenseLinear>(w, m, k, bias, act, isa);
  plannable_ = block == 1 && kern_.isa != Isa::reference;  // the reference kernel reads the stream
}

const std::vector<SparseLinear::RowPart>& SparseLinear::row_parts(int parts,
                                                                  const SpmmTilePlan& whole) const {
  std::lock_guard<std::mutex> lock(parts_mu_);
  if (parts_.size() <= size_t(parts)) parts_.resize(size_t(parts) + 1);
  auto& slot = parts_[size_t(parts)];
  if (!slot) {
    auto made = std::make_unique<std::vector<RowPart>>();
    for (int t = 0; t < parts; ++t) {
      RowPart part;
      // rows in multiples of 8, so every part's rows start on the same kind of boundary
      part.m0 = std::min(m_, (m_ * t / parts + 4) / 8 * 8);
      part.m1 = t + 1 == parts ? m_ : std::min(m_, (m_ * (t + 1) / parts + 4) / 8 * 8);
      if (part.m1 <= part.m0) continue;
      part.packed = sparse_rows(packed_, part.m0, part.m1);
      part.tiles = plan_spmm_tiles_like(part.packed, whole);
      // every part must run from its plan, as the whole does (else its bits could differ)
      if (!spmm_plan_applies(&part.tiles, part.m1 - part.m0, k_, kern_.tile, part.packed.nonzeros(),
                             kern_.tile)) {
        made->clear();
        break;
      }
      made->push_back(std::move(part));
    }
    slot = std::move(made);
  }
  return *slot;
}

const SpmmTilePlan* SparseLinear::plan_for(int64_t n) const {
  if (!plannable_ || n < int64_t(kern_.tile))
    return nullptr;  // narrower than a vector: the stream serves
  plan_once_([this] {
    tiles_ =
        plan_spmm_tiles(packed_, kern_.tile, cpu_features().l1d_bytes);  // sized for this CPU's L1
    planned_.store(true);
  });
  return tiles_.tiles > 0 ? &tiles_ : nullptr;
}

const int32_t* SparseLinear::chans_for(int64_t n) const {
  if (!plannable_ || n >= int64_t(kern_.tile)) return nullptr;
  chans_once_([this] { chans_ = spmm_channels(packed_); });
  return chans_.empty() ? nullptr : chans_.data();
}

const SparseF32Groups* SparseLinear::groups_for(int64_t n) const {
  if (!plannable_ || n != 1 || kern_.isa != Isa::avx512) return nullptr;
  groups_once_([this] { groups_ = pack_sparse_f32_groups(packed_); });
  return groups_.gslots.empty() ? nullptr : &groups_;
}

const SparseF32Octets* SparseLinear::octets_for(int64_t n) const {
  if (n != 1 || kern_.isa != Isa::avx2) return nullptr;  // (b1 and b4 streams alike)
  octets_once_([this] {
    octets_ = pack_sparse_f32_octets(packed_);
    const double lanes =
        double(octets_.gidx.size()) + kOctetGroupLanes * double(octets_.gslots.size());
    if (narrow_ && lanes > kAutoMaxOctetLanes * double(m_) * double(k_)) octets_ = {};
  });
  return octets_.gslots.empty() ? nullptr : &octets_;
}

Isa SparseLinear::isa() const { return dense_ ? dense_->isa() : kern_.isa; }

void SparseLinear::forward_kn(const float* x, int64_t n, float* y, int threads) const {
  if (dense_) return dense_->forward_kn(x, n, y, threads);
  // one column on AVX-512 runs the row groups, which beat the dense GEMV at every density `auto`
  // keeps sparse; on AVX2 the octets, where they beat it (octets_for; docs/kernels.md, the N = 1
  // sections)
  const SparseF32Groups* groups = groups_for(n);
  const SparseF32Octets* octets = octets_for(n);
  if (octets) return run_octets(*octets, x, y, threads);
  if (narrow_ && n < kern_.tile && !groups) return narrow_->forward_kn(x, n, y, threads);
  const SpmmTilePlan* plan = plan_for(n);
  const int32_t* chans = chans_for(n);
  auto args = [&](int64_t n0, int64_t cols) {
    SpmmF32Args p = stream_args(x + n0, n, y + n0, n, cols, plan);
    // narrow calls only: on a wider X (a strip's leftover column, rows 64+ floats apart) every
    // lane of a gather misses L1
    p.chans = chans;
    if (groups && n0 == 0 && cols == 1) {
      p.gslots = groups->gslots.data(), p.gidx = groups->gidx.data();
      p.gw = groups->gw.data(), p.gbias = groups->gbias.data();
    }
    return p;
  };
  // a stored weight's multiply-add (an indexed load per weight, no reuse across output rows)
  // runs at 25-75 GMAC/s against the dense kernel's 134, and slowest on small layers (14x14 at
  // 90 %: 0.5 M of them in 19 us): weighed as 8 of threads_for's unit, so those split too
  const double macs = 8.0 * double(n) * double(packed_.nonzeros());
  const int use = threads_for(threads, macs);
  const int64_t blocks = plan ? int64_t(plan->block_entries.size()) - 1 : 0;
  const bool planned = spmm_plan_applies(plan, m_, k_, n, packed_.nonzeros(), kern_.tile);
  // the kernel's strip for this n, when a plan serves the call
  const int64_t strip = planned ? spmm_plan_strip(*plan, n, kern_.tile) : 0;
  if (use > 1 && m_ >= 16 * use && planned && ((n < 2 * strip && n % strip != 0) || blocks < use)) {
    // one row part per thread: each computes all columns of its rows (the same code per row as
    // the whole stream, so the same bits). Also for one strip and a partial one: the block split
    // below gives the partial strip to one task over every row (a 7x7 layer on AVX2, 49 = 32 +
    // 17 columns, ran no faster on two threads than on one; this way 1.2-1.3x). And when the plan
    // holds fewer blocks of rows than threads (its L1-sized block covers every row of a 14x14
    // layer's 576 channels): the column split below then cut 196 columns into 128 + 68, each
    // part with its own strip remainders, and two threads took 2x one thread's time on a Zen 2
    // host; row parts 1.6x faster than one thread
    const std::vector<RowPart>& parts = row_parts(use, *plan);
    if (!parts.empty())
      return parallel_for(use, int64_t(parts.size()), [&](int64_t t) {
        const RowPart& part = parts[size_t(t)];
        SpmmF32Args p = args(0, n);
        p.y = y + part.m0 * n;
        p.m = part.m1 - part.m0;
        p.values = part.packed.values.data();
        p.nnz = part.packed.nnz.data();
        p.deltas = part.packed.deltas.data();
        p.tiles = &part.tiles;
        p.chans = nullptr;
        kern_.fn(p);
      });
  }
  if (use > 1 && blocks >= use && planned) {
    // Threads split the plan's blocks of output rows: each reads its part of the stream once,
    // where splitting columns made every thread read all of it (3072x768x128 at 90 %: two
    // threads 1.5x one, against 1.8x this way). The columns after the last full strip are one
    // more task: the kernel computes them for every row, and with an empty block range only them
    // (the row tasks ask it not to, with `rest` off). Every task passes all n columns, since the
    // kernel's strip width depends on n (spmm_plan_strip).
    const int64_t full = n / strip * strip, per = (blocks + use - 1) / use;
    const int64_t row_tasks = full > 0 ? (blocks + per - 1) / per : 0;
    parallel_for(use, row_tasks + (full < n ? 1 : 0), [&](int64_t t) {
      SpmmF32Args p = args(0, n);
      if (t == row_tasks) {
        p.block0 = p.block1 = blocks;
        return kern_.fn(p);
      }
      p.block0 = t * per;
      p.block1 = std::min(blocks, (t + 1) * per);
      p.rest = false;
      kern_.fn(p);
    });
    return;
  }
  // Otherwise every thread walks the whole weight stream over its own columns of X and Y.
  // Chunks start on multiples of the widest N strip of any path, so each column is computed by
  // the same code (and gives the same bits) whatever the thread count.
  const Split s = split(n, threads, 64, macs);
  parallel_for(threads, s.tasks, [&](int64_t t) {
    const int64_t n0 = t * s.chunk;
    kern_.fn(args(n0, std::min(s.chunk, n - n0)));
  });
}

void SparseLinear::run_octets(const SparseF32Octets& o, const float* x, float* y,
                              int threads) const {
  // Threads take ranges of whole groups: each output is computed by the same code whichever
  // thread runs it, so the bits are one thread's. A slot (about 0.85 ns on Zen 2, its 44 bytes
  // read from L2 or L3) is weighed as 128 of threads_for's multiply-adds, so a call splits from
  // about 16 K slots, 14 us of one thread's work (1280x960 at 90 %: 31 K slots, 1.55x on two).
  const int64_t groups = (m_ + kOctetRows - 1) / kOctetRows;
  const int use = threads_for(threads, 128.0 * double(o.gbase.size()));
  const auto b1 = runnable_table(kern_.isa).spmm_f32_b1.fn;
  const int64_t per = (groups + use - 1) / use;
  parallel_for(use, (groups + per - 1) / per, [&](int64_t t) {
    const int64_t g0 = t * per, g1 = std::min(groups, g0 + per);
    int64_t slot = 0;
    for (int64_t g = 0; g < g0; ++g) slot += o.gslots[size_t(g)];
    SpmmF32Args p = stream_args(x, 1, y + g0 * kOctetRows, 1, 1, nullptr);
    p.m = std::min(m_, g1 * kOctetRows) - g0 * kOctetRows;
    p.octets = true;
    p.gslots = o.gslots.data() + g0;
    p.gbase = o.gbase.data() + slot;
    p.gidx = o.gidx.data() + slot * kOctetRows;
    p.gw = o.gw.data() + slot * kOctetRows;
    p.gbias = o.gbias.data() + g0 * kOctetRows;
    b1(p);  // (a b4 layer's octets are its rows: the b1 kernel runs them)
  });
}

void SparseLinear::forward_kn_part(const float* x, int64_t ldx, int64_t n, float* y,
                                   int64_t ldy) const {
  if (dense_ || n < part_align() || ldx < n || ldy < n)
    throw std::invalid_argument("forward_kn_part needs the sparse kernels and " +
                                std::to_string(part_align()) + " columns or more");
  // forward_kn's one-thread call on these columns (no channel table or row groups at this n)
  kern_.fn(stream_args(x, ldx, y, ldy, n, plan_for(n)));
}

SpmmF32Args SparseLinear::stream_args(const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n,
                                      const SpmmTilePlan* plan) const {
  SpmmF32Args p = spmm_f32_args(packed_, x, ldx, y, ldy, n);
  p.tiles = plan;
  p.lo = lo_;
  p.hi = hi_;
  return p;
}

void SparseLinear::forward(const float* x, int64_t n, float* y, int threads) const {
  if (dense_) return dense_->forward(x, n, y, threads);
  // One row: x[1, K] and y[1, M] are X[K, 1] and Y[M, 1] in memory, no transposes.
  if (n == 1) return forward_kn(x, 1, y, threads);
  if (narrow_ && n < kern_.tile) return narrow_->forward(x, n, y, threads);
  // The sparse kernels vectorise over N, which needs the channel-major layout: transpose in,
  // multiply, transpose out (O(N(K+M)) moves against O(nnz N) multiply-adds).
  auto xt = scratch<float>(k_ * n), yt = scratch<float>(m_ * n);
  transpose_({x, n, k_, xt.get(), n});
  forward_kn(xt.get(), n, yt.get(), threads);
  transpose_({yt.get(), m_, n, y, m_});
}

QLinear::QLinear(const float* w, int64_t m, int64_t k, const float* bias, float s_in, int32_t zp_in,
                 float s_out, int32_t zp_out, Act act, SparseKernel mode, Isa isa)
    : m_(m), k_(k), zp_in_(zp_in), zp_out_(zp_out) {
  if (m <= 0 || k <= 0) throw std::invalid_argument("weight must have a nonzero shape");
  if (!(s_in > 0.0f) || !std::isfinite(s_in))
    throw std::invalid_argument("input_scale must be a positive finite number");
  if (!(s_out > 0.0f) || !std::isfinite(s_out))
    throw std::invalid_argument("output_scale must be a positive finite number");
  if (zp_in < -128 || zp_in > 127)
    throw std::invalid_argument("input_zero_point must be in [-128, 127]");
  if (zp_out < -128 || zp_out > 127)
    throw std::invalid_argument("output_zero_point must be in [-128, 127]");
  wq_.resize(m * k);
  sw_.resize(m);
  scale_.resize(m);
  bq_.assign(m, 0);
  bias_eff_.resize(m);
  colsum_.resize(m);
  for (int64_t j = 0; j < m; ++j) {
    float amax = 0.0f;
    for (int64_t q = 0; q < k; ++q) amax = std::max(amax, std::fabs(w[j * k + q]));
    if (!std::isfinite(amax)) throw std::invalid_argument("weight must be finite");
    // symmetric per channel: the largest weight maps to 127 (an all-zero channel keeps scale 1)
    sw_[j] = amax > 0.0f ? amax / 127.0f : 1.0f;
    int32_t sum = 0;
    for (int64_t q = 0; q < k; ++q) {
      const float v = std::nearbyint(w[j * k + q] / sw_[j]);
      const int8_t wi = int8_t(std::min(127.0f, std::max(-127.0f, v)));
      wq_[j * k + q] = wi;
      sum += wi;
    }
    colsum_[j] = sum;
    if (bias) {
      const double b = std::nearbyint(double(bias[j]) / (double(s_in) * double(sw_[j])));
      bq_[j] = int32_t(std::min<double>(std::max<double>(b, -2147483648.0), 2147483647.0));
    }
    // the input zero point folded into the bias: sum (x - zp) w = sum x w - zp * colsum
    bias_eff_[j] = int32_t(int64_t(bq_[j]) - int64_t(zp_in) * sum);
    scale_[j] = float(double(s_in) * double(sw_[j]) / double(s_out));
  }
  qmin_ = -128;
  qmax_ = 127;
  if (act != Act::none) qmin_ = std::max<int32_t>(qmin_, zp_out);
  if (act == Act::relu6)
    qmax_ = int32_t(std::min<double>(127.0, double(zp_out) + std::nearbyint(6.0 / double(s_out))));
  for (int8_t v : wq_) nnz_ += v != 0;
  kern_ = runnable_table(isa).gemm_s8;
  skern_ = runnable_table(isa).spmm_s8;
  if (mode != SparseKernel::dense) {
    sp_ = pack_sparse_s8(wq_.data(), m, k);
    const double density = double(sp_.blocks()) / double(m * ((k + 3) / 4));
    sparse_ = mode == SparseKernel::sparse || density <= kAutoMaxBlockDensity;
    if (!sparse_) sp_ = PackedSparseS8{};
    // the one-column form, for the path that has a loop over it (at batch 1 its channel groups
    // beat the per-channel stream 2-6x on 1x1 and FC layers at 90 % sparsity, measured)
    if (sparse_ && skern_.isa == Isa::avx512) pack_sparse_s8_groups(sp_);
    const bool column_sparse = skern_.isa == Isa::avx512 || mode == SparseKernel::sparse ||
                               (density <= kAutoMaxBlockDensityColumn && k >= kAutoColumnMinDepth);
    column_dense_ = sparse_ && !column_sparse;
    if (sparse_ && !column_dense_) return;  // the dense packing is not needed
  }
  const int kg = gemm_s8_kgroup(kern_.isa);
  packed_.resize(packed_gemm_s8_size(m, k, kern_.tile, kg));
  pack_gemm_s8(wq_.data(), m, k, kern_.tile, kg, packed_.data());
}

void QLinear::run_sparse(const int8_t* x, int64_t ld, bool transposed, int64_t n, int8_t* y,
                         int64_t ldy, int threads) const {
  // Threads take ranges of columns; each packs a strip of kQuadStrip columns into quads
  // (pack_quads_s8's layout) just before the kernel reads it, so the packing runs in parallel
  // and the strip is still in cache. Ranges start at 64-byte boundaries of Y's first row: two
  // threads writing the two halves of a 128-byte int8 row that straddles cache lines ran 2-4x
  // slower than one (false sharing, measured). Integer results do not depend on the split.
  const double macs = double(n) * 4.0 * double(sp_.blocks());
  threads = threads_for(threads, macs);
  // Task t starts at the column of the form lead + 64 j nearest to t * n / threads.
  const int64_t lead = int64_t((64 - reinterpret_cast<uintptr_t>(y) % 64) % 64), tasks = threads;
  auto bound = [&](int64_t t) -> int64_t {
    if (t == 0 || t == tasks) return t == 0 ? 0 : n;
    const int64_t j = (t * n / tasks - lead + 32) / 64;
    return std::min(n, std::max<int64_t>(0, lead + 64 * j));
  };
  parallel_for(threads, tasks, [&](int64_t t) {
    // per-thread, kept and 64-byte aligned (kernels.h): new[] per call gave 16-byte aligned
    // strips, whose 64-byte loads split cache lines (1.5x slower), and page faults in pool threads
    int8_t* xq = static_cast<int8_t*>(thread_scratch(3, size_t(quad_strip_size(k_))));
    for (int64_t c0 = bound(t), end = bound(t + 1); c0 < end; c0 += kQuadStrip) {
      const int64_t cols = std::min(kQuadStrip, end - c0);
      // a partial strip (and a single column) packed compact: no zero columns to fill
      const bool narrow = cols < kQuadStrip;
      const int8_t* src = transposed ? x + c0 * ld : x + c0;
      const int8_t* quads = xq;
      if (cols == 1 && (transposed || ld == 1)) {
        // one contiguous column is its own quads (a batch-1 call): read in place when K is whole
        // quads, else copied with the last quad's padding zeroed (the general packing of a
        // single column cost half of such a call)
        if (k_ % 4 == 0) {
          quads = src;
        } else {
          std::memcpy(xq, src, size_t(k_));
          std::memset(xq + k_, 0, size_t(4 - k_ % 4));
        }
      } else {
        (narrow ? pack_quads_s8_narrow : pack_quads_s8)(src, k_, cols, ld, transposed, xq);
      }
      SpmmS8Args p;
      p.xq = quads;
      p.ldx = narrow ? cols : kQuadStrip;
      p.y = y + c0;
      p.ldy = ldy;
      p.n = cols;
      p.m = m_;
      p.nnz = sp_.nnz.data();
      p.quad = sp_.quad.data();
      p.w = sp_.w.data();
      p.bias = bias_eff_.data();
      p.rowsum = colsum_.data();
      p.scale = scale_.data();
      p.zp_out = zp_out_;
      p.lo = float(qmin_ - zp_out_);
      p.hi = float(qmax_ - zp_out_);
      p.k = k_;
      if (!sp_.gslots.empty())
        p.gslots = sp_.gslots.data(), p.gquad = sp_.gquad.data(), p.gw = sp_.gw.data();
      skern_.fn(p);
    }
  });
}

void QLinear::forward(const int8_t* x, int64_t n, int8_t* y, int threads) const {
  if (n == 1 && column_dense()) return run_dense(x, 1, y, threads);
  if (sparse_ && n == 1) return run_sparse(x, 1, false, 1, y, 1, threads);  // x[1, K] is X[K, 1]
  if (sparse_) {
    // vectorised over N: quads of the transposed input in, [M, N] out, transposed back
    auto yt = scratch<int8_t>(m_ * n);
    run_sparse(x, k_, true, n, yt.get(), n, threads);
    for (int64_t j = 0; j < m_; ++j)
      for (int64_t i = 0; i < n; ++i) y[i * m_ + j] = yt[j * n + i];
    return;
  }
  run_dense(x, n, y, threads);
}

void QLinear::run_dense(const int8_t* x, int64_t n, int8_t* y, int threads) const {
  const Split s = split(n, threads, 8, double(n) * double(m_) * double(k_));
  parallel_for(threads, s.tasks, [&](int64_t t) {
    const int64_t r0 = t * s.chunk;
    GemmS8Args p;
    p.a = x + r0 * k_;
    p.lda = k_;
    p.b = wq_.data();
    p.ldb = k_;
    p.bp = packed_.data();
    p.bias = bias_eff_.data();
    p.colsum = colsum_.data();
    p.scale = scale_.data();
    p.y = y + r0 * m_;
    p.ldy = m_;
    p.rows = std::min(s.chunk, n - r0);
    p.cols = m_;
    p.depth = k_;
    p.zp_out = zp_out_;
    p.lo = float(qmin_ - zp_out_);
    p.hi = float(qmax_ - zp_out_);
    kern_.fn(p);
  });
}

void QLinear::forward_kn(const int8_t* x, int64_t n, int8_t* y, int threads) const {
  if (n == 1 && column_dense()) return run_dense(x, 1, y, threads);  // X[K, 1] is x[1, K]
  if (sparse_) {
    run_sparse(x, n, false, n, y, n, threads);
    return;
  }
  if (n == 1) return forward(x, 1, y, threads);  // X[K, 1] is x[1, K]: no transposes
  auto xt = scratch<int8_t>(k_ * n), yt = scratch<int8_t>(n * m_);
  for (int64_t q = 0; q < k_; ++q)
    for (int64_t i = 0; i < n; ++i) xt[i * k_ + q] = x[q * n + i];
  forward(xt.get(), n, yt.get(), threads);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m_; ++j) y[j * n + i] = yt[i * m_ + j];
}

}  // namespace ep
