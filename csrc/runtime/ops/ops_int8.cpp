// The int8 operators (ops_int8.h). Each follows the arithmetic of TFLite's reference kernels
// (tflite/kernels/internal/reference, integer_ops) and the parameter preparation of their
// Prepare step (multipliers from float or double scales exactly as TFLite computes them), so a
// result is a function of the file alone. Convolutions and FULLY_CONNECTED accumulate in int32
// (the input zero point folded into the bias), then requantize per output channel with the Q31
// multiplier and TFLite's double rounding. HARD_SWISH, LOGISTIC and the standalone ReLU family
// are 256-entry tables filled at load with TFLite's own fixed-point / float formulas.
//
// Consumes: a validated Model. Produces: Op objects.
#include "runtime/ops/ops_int8.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "layers/layers.h"
#include "layers/parallel.h"
#include "runtime/ops/broadcast.h"
#include "runtime/ops/vec.h"
#include "runtime/ops/ops_tensor.h"
#include "runtime/ops/movement.h"
#include "runtime/ops/op_context.h"
#include "runtime/ops/ops_int8_isa.h"

namespace ep {
namespace rt {

// ------------------------------------------------------------------------ fixed-point helpers
namespace {

int32_t rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = int64_t(a) * int64_t(b);
  const int64_t nudge = ab >= 0 ? (int64_t(1) << 30) : (1 - (int64_t(1) << 30));
  return int32_t((ab + nudge) / (int64_t(1) << 31));
}

int32_t rounding_divide_by_pot(int32_t x, int e) {
  const int32_t mask = int32_t((int64_t(1) << e) - 1);
  const int32_t rem = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (rem > threshold ? 1 : 0);
}

// the int16 forms gemmlowp uses in HARD_SWISH
int16_t rounding_doubling_high_mul16(int16_t a, int16_t b) {
  if (a == b && a == INT16_MIN) return INT16_MAX;
  const int32_t ab = int32_t(a) * int32_t(b);
  const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
  return int16_t((ab + nudge) / (1 << 15));
}
int16_t doubling_high_mul16(int16_t a, int16_t b) {  // truncating, no rounding nudge
  if (a == b && a == INT16_MIN) return INT16_MAX;
  return int16_t((int32_t(a) * int32_t(b)) / (1 << 15));
}
int16_t saturating_left_shift16(int16_t v, int amount) {
  const int64_t r = int64_t(v) * (int64_t(1) << amount);
  return int16_t(std::max<int64_t>(INT16_MIN, std::min<int64_t>(INT16_MAX, r)));
}
int16_t down_scale_to_int16(int32_t m) {
  if (m >= INT32_MAX - (1 << 15)) return INT16_MAX;
  return int16_t((m + (1 << 15)) >> 16);
}

}  // namespace

void quantize_multiplier(double m, int32_t* significand, int* shift) {
  if (m == 0.0) {
    *significand = 0;
    *shift = 0;
    return;
  }
  const double q = std::frexp(m, shift);
  int64_t fixed = int64_t(std::round(q * double(int64_t(1) << 31)));
  if (fixed == (int64_t(1) << 31)) {
    fixed /= 2;
    ++*shift;
  }
  if (*shift < -31) {
    *shift = 0;
    fixed = 0;
  }
  *significand = int32_t(fixed);
}

int32_t multiply_by_quantized_multiplier(int32_t x, int32_t significand, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  // TFLite multiplies in wrapping int32 here; shifts above 0 only come with tiny accumulators
  const int32_t shifted = int32_t(uint32_t(x) * (uint32_t(1) << left));
  return rounding_divide_by_pot(rounding_doubling_high_mul(shifted, significand), right);
}

bool float_requant(const int32_t* mult, const int32_t* shift, int64_t n, int64_t padded,
                   int32_t zp_out, float* scale, float* pos, float* neg) {
  for (int64_t j = 0; j < padded; ++j) {
    scale[j] = 0.0f, pos[j] = 32768.0f, neg[j] = 32768.0f;  // padding lanes: 0, never stored
    if (j >= n) continue;
    if (shift[j] > -1 || shift[j] < -22 || mult[j] < 0) return false;
    const int e = -shift[j];
    scale[j] = float(std::ldexp(double(mult[j]), 16 - (31 + e)));
    pos[j] = float(65536.0 * (zp_out + 0.5 + std::ldexp(1.0, -(e + 1))) + 8.0);
    neg[j] = float(65536.0 * (zp_out + 0.5 - std::ldexp(1.0, -(e + 1))) + 8.0);
  }
  return true;
}

void pack_blocks_avx2(const int8_t* w, int64_t m, int64_t k, std::vector<int32_t>* nnz,
                      std::vector<int32_t>* quad, std::vector<int32_t>* pairs) {
  const auto weight = [&](int64_t i, int64_t c) {
    return c < k ? uint32_t(uint16_t(int16_t(w[i * k + c]))) : 0u;
  };
  for (int64_t i = 0; i < m; ++i) {
    int32_t count = 0;
    for (int64_t q = 0; q < (k + 3) / 4; ++q) {
      const uint32_t w01 = weight(i, 4 * q) | weight(i, 4 * q + 1) << 16;
      const uint32_t w23 = weight(i, 4 * q + 2) | weight(i, 4 * q + 3) << 16;
      if (!w01 && !w23) continue;
      quad->push_back(int32_t(q));
      pairs->push_back(int32_t(w01)), pairs->push_back(int32_t(w23));
      ++count;
    }
    nnz->push_back(count);
  }
}

void qadd_planes(int32_t z, int32_t m, int s, uint8_t* planes) {
  for (int i = 0; i < 256; ++i) {
    const int32_t v = multiply_by_quantized_multiplier((int32_t(int8_t(i)) - z) * (1 << 20), m, s);
    for (int k = 0; k < 4; ++k) planes[256 * k + i] = uint8_t(uint32_t(v) >> (8 * k));
  }
}

void pack_qgemm_vnni(const int8_t* w, int64_t m, int64_t k, int64_t kp, int8_t* out) {
  const int64_t groups = kp / 4;
  for (int64_t j = 0; j < (m + 15) / 16 * 16; ++j)
    for (int64_t c = 0; c < kp; ++c)
      out[(((j / 16) * groups + c / 4) * 16 + j % 16) * 4 + c % 4] =
          j < m && c < k ? w[j * k + c] : int8_t(0);
}

namespace {

using MulFn = int32_t (*)(int32_t, int32_t, int);
constexpr MulFn mbqm = multiply_by_quantized_multiplier;

// The int8 tier's construction context: the shared checks plus the int8 typing rules.
struct QCtx : OpContext {
  const Tensor& typed(const Tensor& t, DType type) const {
    if (t.type != type)
      unsupported("tensor '" + t.name + "' is " + dtype_name(t.type) + ", this int8 op needs " +
                  dtype_name(type));
    return t;
  }
  // an int8 activation: one scale and zero point for the whole tensor
  const Tensor& act(const Tensor& t) const {
    typed(t, DType::i8);
    if (t.scale.size() != 1)
      unsupported("int8 tensor '" + t.name + "' needs one scale (has " +
                  std::to_string(t.scale.size()) + ")");
    return t;
  }
};

int32_t zp(const Tensor& t) { return int32_t(t.zero_point[0]); }

// quantize_multiplier for a multiplier made from the file's scales: a hostile file's scales can
// make it infinite or huge, and a left shift past 30 bits has no meaning in int32 arithmetic
void multiplier(const QCtx& c, double m, int32_t* q, int* shift) {
  if (!(std::isfinite(m) && m >= 0.0))
    c.bad("the quantization scales give a requantization multiplier that is not finite");
  quantize_multiplier(m, q, shift);
  if (*shift > 30)
    c.bad("the quantization scales give a requantization multiplier of 2^" +
          std::to_string(*shift) + " or more; re-export the model");
}

// round(f / scale) + zero point as TFLite's activation bounds, saturated instead of overflowing
int32_t quantized_bound(float f, float scale, int32_t z) {
  const double q = std::round(double(f / scale));
  return z + int32_t(std::max(-1e6, std::min(1e6, q)));
}

// y[i] = lut[uint8(x[i])]: byte permutes where the CPU has AVX-512 VBMI, else byte shuffles on AVX2
void apply_lut(const int8_t* lut, const int8_t* x, int64_t n, int8_t* y, Isa isa) {
#if defined(EP_HAVE_AVX512)
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  if (isa == Isa::avx512 && vbmi) return avx512::lut_s8_vbmi(x, n, lut, y);
#endif
#if defined(EP_HAVE_AVX2)
  if (isa == Isa::avx2 || isa == Isa::avx512) return avx2::lut_s8(x, n, lut, y);
#endif
  (void)isa;
  for (int64_t i = 0; i < n; ++i) y[i] = lut[uint8_t(x[i])];
}

std::string dims(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

// TFLite's CalculateActivationRangeQuantized for int8: the fused activation as a clamp of the
// quantized output (f / scale in float, rounded half away from zero).
void act_range(FusedAct a, const Tensor& y, int32_t* lo, int32_t* hi) {
  const float s = y.scale[0];
  const int32_t z = zp(y);
  auto q = [&](float f) { return quantized_bound(f, s, z); };
  *lo = -128, *hi = 127;
  if (a == FusedAct::relu || a == FusedAct::relu6) *lo = std::max(*lo, q(0.0f));
  if (a == FusedAct::relu6) *hi = std::min(*hi, q(6.0f));
  if (a == FusedAct::relu_n1_to_1) *lo = std::max(*lo, q(-1.0f)), *hi = std::min(*hi, q(1.0f));
}

// Output size and leading padding of one spatial dimension (conv_dim, with the op's padding).
int64_t out_dim(const QCtx& c, int64_t in, int64_t k, int64_t stride, int64_t dil, int64_t* pad,
                int dim) {
  return conv_dim(c, in, k, stride, dil, c.d.padding, pad, dim);
}

// Per output channel requantization of a convolution / FULLY_CONNECTED: TFLite computes
// input_scale * filter_scale / output_scale in double per channel (a per-tensor FULLY_CONNECTED
// multiplies the two float scales in float first).
struct Requant {
  std::vector<int32_t> mult;
  std::vector<int> shift;
  int32_t zp_out = 0, lo = -128, hi = 127;
  int8_t apply(int32_t acc, int64_t ch) const {
    const int32_t v = mbqm(acc, mult[size_t(ch)], shift[size_t(ch)]) + zp_out;
    return int8_t(std::min(hi, std::max(lo, v)));
  }
};

Requant make_requant(const QCtx& c, const Tensor& x, const Tensor& w, const Tensor& y,
                     int64_t channels, bool fc) {
  if (w.scale.empty()) c.unsupported("int8 weights without quantization parameters");
  if (w.scale.size() != 1 && int64_t(w.scale.size()) != channels)
    c.bad("the weights have " + std::to_string(w.scale.size()) + " scales for " +
          std::to_string(channels) + " output channels");
  for (int64_t z : w.zero_point)
    if (z != 0) c.unsupported("int8 weights with a nonzero zero point");
  Requant r;
  r.mult.resize(size_t(channels));
  r.shift.resize(size_t(channels));
  for (int64_t i = 0; i < channels; ++i) {
    const bool per = w.scale.size() > 1;
    const float ws = w.scale[per ? size_t(i) : 0];
    const double m = fc && !per ? double(x.scale[0] * ws) / double(y.scale[0])
                                : double(x.scale[0]) * double(ws) / double(y.scale[0]);
    multiplier(c, m, &r.mult[size_t(i)], &r.shift[size_t(i)]);
  }
  r.zp_out = zp(y);
  act_range(c.d.act, y, &r.lo, &r.hi);
  return r;
}

// int32 wraparound of a sum, as TFLite's int32 arithmetic does in practice (no signed overflow)
int32_t wrap(int64_t v) { return int32_t(uint32_t(uint64_t(v))); }

// int32 biases with the input zero point folded in: bias[m] - zp_in * sum_k W[m, k]
std::vector<int32_t> folded_bias(const QCtx& c, const int8_t* w, int64_t m, int64_t k,
                                 int32_t zp_in) {
  std::vector<int32_t> b(size_t(m), 0);
  if (c.has_in(2)) {
    const Tensor& bt = c.typed(c.constant(2), DType::i32);
    if (bt.elems != m)
      c.bad("the bias has " + std::to_string(bt.elems) + " values, needs " + std::to_string(m));
    for (int64_t i = 0; i < m; ++i) b[size_t(i)] = bt.as<int32_t>()[i];
  }
  for (int64_t i = 0; i < m; ++i) {
    int32_t s = 0;
    for (int64_t j = 0; j < k; ++j) s += w[i * k + j];
    b[size_t(i)] = wrap(int64_t(b[size_t(i)]) - int64_t(zp_in) * s);
  }
  return b;
}

// Sums of int8 products stay inside int32 up to this many terms (255 * 127 each)
constexpr int64_t kMaxTerms = 65536;

// the int16 operands of BATCH_MATMUL and TRANSPOSE_CONV (int8 values less their zero point)
int32_t dot16(const int16_t* __restrict a, const int16_t* __restrict b, int64_t k) {
  int32_t s = 0;
  for (int64_t j = 0; j < k; ++j) s += int32_t(a[j]) * int32_t(b[j]);
  return s;
}

int32_t dot_s8(const int8_t* __restrict a, const int8_t* __restrict b, int64_t k) {
  int32_t s = 0;
  for (int64_t j = 0; j < k; ++j) s += int32_t(a[j]) * int32_t(b[j]);
  return s;
}

// y[N, M] = requant(x[N, K] W[M, K]^T + bias'): dense rows, or for weights at least half zero
// each row's nonzeros (index, value) only. Integer sums: both give the same bits.
class QGemm {
 public:
  // rows: the rows each call will have, when the op knows (0: unknown)
  QGemm(const int8_t* w, int64_t m, int64_t k, std::vector<int32_t> bias, Requant rq,
        const OpOptions& o, [[maybe_unused]] int64_t rows = 0)
      : m_(m), k_(k), bias_(std::move(bias)), rq_(std::move(rq)) {
    int64_t zeros = 0;
    for (int64_t i = 0; i < m * k; ++i) zeros += w[i] == 0;
    sparse_ = o.sparse && zeros * 2 >= m * k;
#if defined(EP_HAVE_AVX512)
    if (o.isa == Isa::avx512 && cpu_features().avx512vnni) {
      if (sparse_) {
        const int64_t quads = nonzero_quads(w, m, k);
        // One or two rows (an FC layer at batch 1, a 1x1 conv on a pooled 1x1 map): the channel
        // groups multiply 16 channels per block slot, where the row kernel pads every call to 16
        // rows; they beat the dense kernel once at most half of the 1x4 blocks hold a weight.
        spmv_ = rows > 0 && rows <= 2 && quads * 2 <= m * ((k + 3) / 4);
        if (!spmv_) sparse_ = vnni_sparse_pays(m, k, quads);
      }
      pack_vnni(w);
      return;
    }
#endif
#if defined(EP_HAVE_AVX2)
    // x86 without VNNI: the AVX2 tiles, dense, or the 1x4-block kernel where the weights are
    // sparse enough for it to pay and each call has a vector of 8 rows or more. The dense tiles
    // beat the portable nonzero walk below 97 % zeros (3.3x on MobileNetV2's 1x1 layers at 90 %,
    // docs/runtime.md), so with few rows the walk only takes the sparsest weights.
    if (o.isa == Isa::avx2 || o.isa == Isa::avx512) {
      if (sparse_ && rows >= 8 && avx2_sparse_pays(m, k, nonzero_quads(w, m, k))) {
        pack_avx2_sparse(w);
        return;
      }
      if (zeros * 100 < m * k * 97) {
        sparse_ = false;
        pack_avx2(w);
        return;
      }
    }
#endif
    if (sparse_) {
      row_.push_back(0);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < k; ++j)
          if (w[i * k + j]) {
            idx_.push_back(int32_t(j));
            val_.push_back(w[i * k + j]);
          }
        row_.push_back(int64_t(idx_.size()));
      }
    } else {
      w_.assign(w, w + m * k);
    }
  }
  bool sparse() const { return sparse_; }
  // for profile labels: " sparse" when the sparse kernels run, " sparse groups" when rows go one
  // by one through the channel groups
  std::string sparse_label() const {
#if defined(EP_HAVE_AVX512)
    if (spmv_) return " sparse groups";
#endif
    return sparse_ ? " sparse" : "";
  }
  // n rows of K int8 values at a stride of ldx >= K (0: K). On the VNNI path, rows with K a
  // multiple of 4 at stride K are read in place; other rows are copied as uint8 first, in one flat
  // pass when their stride is K rounded up to 4 (an im2col's; the bytes past K are never used).
  void forward(const int8_t* x, int64_t n, int8_t* y, int threads, int64_t ldx = 0) const {
    if (ldx == 0) ldx = k_;
    const int t = threads_for(threads, double(n) * double(m_) * double(k_));
#if defined(EP_HAVE_AVX512)
    if (spmv_) {
      QSpmvGroupArgs a;
      a.k = k_, a.m = m_;
      a.gslots = groups_.gslots.data(), a.gquad = groups_.gquad.data(), a.gw = groups_.gw.data();
      a.bias = vbias_.data(), a.mult = vmult_.data(), a.shift = vshift_.data();
      const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
      if (float_rq_) a.fr = &fr;
      a.zp_out = rq_.zp_out, a.lo = rq_.lo, a.hi = rq_.hi;
      for (int64_t r = 0; r < n; ++r) {
        a.x = x + r * ldx, a.y = y + r * m_;
        avx512::qspmv_groups(a);
      }
      return;
    }
    if (vnni_) {
      const Split sp = split(n, t);
      parallel_for(t, sp.row_chunks * sp.parts, [&](int64_t task) {
        const int64_t r0 = (task / sp.parts) * sp.rows, b0 = (task % sp.parts) * sp.blocks;
        vnni_chunk(x, ldx, y, r0, std::min(sp.rows, n - r0), b0, sp.blocks);
      });
      return;
    }
#endif
#if defined(EP_HAVE_AVX2)
    if (avx2_sparse_) {  // chunks of up to 32 rows, re-laid as int16 pairs
      parallel_for(t, (n + 31) / 32, [&](int64_t task) {
        const int64_t r0 = task * 32, rows = std::min<int64_t>(32, n - r0);
        const int64_t ldn = (rows + 7) / 8 * 8, pairs = (k_ + 3) / 4 * 2;
        int32_t* xp =
            static_cast<int32_t*>(thread_scratch(3, size_t(pairs * ldn) * sizeof(int32_t)));
        avx2::pair_rows(x + r0 * ldx, ldx, rows, k_, ldn, xp);
        QSpmmAvx2Args a;
        a.xp = xp, a.n = rows, a.ldn = ldn, a.m = m_;
        a.nnz = snnz_.data(), a.quad = squad_.data(), a.w = sw_.data();
        a.bias = abias_.data(), a.mult = amult_.data(), a.shift = ashift_.data();
        const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
        if (float_rq_) a.fr = &fr;
        a.zp_out = rq_.zp_out, a.lo = rq_.lo, a.hi = rq_.hi;
        a.y = y + r0 * m_, a.ldy = m_;
        avx2::qspmm_rows(a);
      });
      return;
    }
    if (avx2_) {
      // tasks of whole 6-row strips, about 4 per thread so none idles at the end
      const int64_t per =
          t <= 1 ? n
                 : std::max<int64_t>(6, ((n + 4 * int64_t(t) - 1) / (4 * int64_t(t)) + 5) / 6 * 6);
      parallel_for(t, (n + per - 1) / per, [&](int64_t task) {
        const int64_t r0 = task * per;
        QGemmAvx2Args a;
        a.x = x + r0 * ldx, a.ldx = ldx, a.n = std::min(per, n - r0), a.k = k_, a.m = m_;
        a.wp = avx2_w_.data(), a.bias = abias_.data(), a.mult = amult_.data(),
        a.shift = ashift_.data();
        a.zp_out = rq_.zp_out, a.lo = rq_.lo, a.hi = rq_.hi;
        a.y = y + r0 * m_, a.ldy = m_;
        const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
        if (float_rq_) a.fr = &fr;
        avx2::qgemm_rows(a);
      });
      return;
    }
#endif
    parallel_for(t, n, [&](int64_t r) { row(x + r * ldx, y + r * m_); });
  }

 private:
#if defined(EP_HAVE_AVX2)
  void pack_avx2(const int8_t* w) {
    avx2_ = true;
    avx2_w_.resize(size_t(packed_gemm_s8_size(m_, k_, 16, 2)));
    pack_gemm_s8(w, m_, k_, 16, 2, avx2_w_.data());
    avx2_constants();
  }
  void pack_avx2_sparse(const int8_t* w) {
    avx2_sparse_ = true;
    pack_blocks_avx2(w, m_, k_, &snnz_, &squad_, &sw_);
    avx2_constants();
  }
  // Whether the 1x4-block kernel beats the dense tiles on an M x K layer with `quads` nonzero
  // blocks, both per row: the tiles pay per multiply-add and per output, the block kernel per
  // nonzero block, per output (requantized one channel at a time, then transposed into rows) and
  // per input (re-laid as int16 pairs). Coefficients (ns per row) fitted on MobileNetV2's 1x1
  // layers on a 2-core Zen 1 (docs/runtime.md). Both kernels give the same bits.
  static constexpr double kDenseMac = 0.0552, kDenseOut = 0.413;                       // ns
  static constexpr double kSparseQuad = 0.262, kSparseOut = 0.730, kSparseIn = 0.352;  // ns
  static bool avx2_sparse_pays(int64_t m, int64_t k, int64_t quads) {
    const double kq = double((k + 3) / 4);
    const double dense = kDenseMac * double(m) * 4.0 * kq + kDenseOut * double(m);
    const double sparse =
        kSparseQuad * double(quads) + kSparseOut * double(m) + kSparseIn * double(k);
    return sparse < dense;
  }
  void avx2_constants() {
    const size_t mp = size_t((m_ + 15) / 16 * 16);
    abias_.assign(mp, 0), amult_.assign(mp, 0), ashift_.assign(mp, 0);
    for (int64_t i = 0; i < m_; ++i) {
      abias_[size_t(i)] = bias_[size_t(i)];
      amult_[size_t(i)] = rq_.mult[size_t(i)];
      ashift_[size_t(i)] = rq_.shift[size_t(i)];
    }
    fscale_.resize(mp), fpos_.resize(mp), fneg_.resize(mp);
    float_rq_ = float_requant(amult_.data(), ashift_.data(), m_, int64_t(mp), rq_.zp_out,
                              fscale_.data(), fpos_.data(), fneg_.data());
  }
  bool avx2_ = false, avx2_sparse_ = false;
  std::vector<int8_t> avx2_w_;                   // pack_gemm_s8's 16-channel panels, k in pairs
  std::vector<int32_t> snnz_, squad_, sw_;       // the 1x4 blocks (avx2_sparse_)
  std::vector<int32_t> abias_, amult_, ashift_;  // padded to whole panels
#endif
  // 1x4 blocks (one output channel, four consecutive input channels) holding a nonzero weight
  static int64_t nonzero_quads(const int8_t* w, int64_t m, int64_t k) {
    int64_t quads = 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t q = 0; q < k; q += 4) {
        bool any = false;
        for (int64_t t = q; t < std::min(k, q + 4); ++t) any = any || w[i * k + t] != 0;
        quads += any;
      }
    return quads;
  }
#if defined(EP_HAVE_AVX512)
  static constexpr int64_t kChunk = 64;  // rows per task: their uint8 copy stays in L1 / L2
  // Whether the sparse VNNI kernel beats the dense one on an M x K layer with `quads` nonzero
  // blocks. Per output row, the dense kernel pays per multiply-add and per output (the
  // requantization); the sparse one per nonzero block, per output (requantized for 16 rows of one
  // channel, then transposed into rows) and per input (every row re-laid as quads). The
  // coefficients (ns per row) are a least-squares fit to MobileNetV2's 1x1 layers at 50-95 % 1x4
  // sparsity on an AVX-512 VNNI host (docs/runtime.md). The row count cancels, so the choice
  // depends on the weights only; both kernels give the same bits (exact int32 sums).
  static bool vnni_sparse_pays(int64_t m, int64_t k, int64_t quads) {
    const double kp = double((k + 3) / 4 * 4);
    const double dense = 0.00182 * double(m) * kp + 0.0570 * double(m);
    const double sparse = 0.0178 * double(quads) + 0.0797 * double(m) + 0.0140 * double(k);
    return sparse < dense;
  }
  struct Split {
    int64_t rows, row_chunks, blocks, parts;  // rows per task; channel blocks of 16 per task
  };
  // Tasks of at most kChunk rows. With threads and few rows (a 7x7 or 14x14 layer makes one to
  // four chunks of 64), rows are cut into equal chunks and dense weights also into channel
  // ranges, about 4 tasks per thread, so no thread idles while another finishes a long chunk.
  Split split(int64_t n, int t) const {
    const int64_t blocks = (m_ + 15) / 16;
    Split sp{kChunk, (n + kChunk - 1) / kChunk, blocks, 1};
    const int64_t want = 4 * int64_t(t);
    if (t <= 1 || sp.row_chunks >= want) return sp;
    sp.rows = std::max<int64_t>(4, ((n + want - 1) / want + 3) / 4 * 4);
    sp.row_chunks = (n + sp.rows - 1) / sp.rows;
    if (!sparse_ && sp.row_chunks < want) {  // channel ranges of an even number of blocks
      const int64_t parts = std::min((want + sp.row_chunks - 1) / sp.row_chunks, (blocks + 1) / 2);
      sp.blocks = ((blocks + parts - 1) / parts + 1) / 2 * 2;
      sp.parts = (blocks + sp.blocks - 1) / sp.blocks;
    }
    return sp;
  }
  void pack_vnni(const int8_t* w) {
    vnni_ = true;
    kp_ = (k_ + 3) / 4 * 4;
    const int64_t mp = (m_ + 15) / 16 * 16;
    if (spmv_) {  // the 1x4 block stream, re-laid in channel groups
      groups_ = pack_sparse_s8(w, m_, k_);
      pack_sparse_s8_groups(groups_);
      groups_.nnz.clear(), groups_.quad.clear(), groups_.w.clear();
    } else if (sparse_) {  // the 1x4 block stream: blocks with any nonzero weight
      for (int64_t i = 0; i < m_; ++i) {
        int32_t count = 0;
        for (int64_t q = 0; q < kp_ / 4; ++q) {
          uint32_t packed = 0;
          for (int64_t t = 0; t < 4; ++t)
            if (4 * q + t < k_) packed |= uint32_t(uint8_t(w[i * k_ + 4 * q + t])) << (8 * t);
          if (!packed) continue;
          quad_.push_back(int32_t(q));
          block_.push_back(int32_t(packed));
          ++count;
        }
        nnz_.push_back(count);
      }
    } else {
      vnni_w_.assign(size_t(mp * kp_), 0);
      pack_qgemm_vnni(w, m_, k_, kp_, vnni_w_.data());
    }
    vbias_.assign(size_t(mp), 0);
    vmult_.assign(size_t(mp), 0);
    vshift_.assign(size_t(mp), 0);
    for (int64_t i = 0; i < m_; ++i) {
      int32_t sum = 0;
      for (int64_t j = 0; j < k_; ++j) sum += w[i * k_ + j];
      vbias_[size_t(i)] = wrap(int64_t(bias_[size_t(i)]) - 128 * int64_t(sum));  // x + 128 as uint8
      vmult_[size_t(i)] = rq_.mult[size_t(i)];
      vshift_[size_t(i)] = rq_.shift[size_t(i)];
    }
    fscale_.resize(size_t(mp)), fpos_.resize(size_t(mp)), fneg_.resize(size_t(mp));
    float_rq_ = float_requant(vmult_.data(), vshift_.data(), m_, mp, rq_.zp_out, fscale_.data(),
                              fpos_.data(), fneg_.data());
  }
  // rows [r0, r0 + rows) of output channel blocks [b0, b0 + nb) (all of them when sparse)
  void vnni_chunk(const int8_t* x, int64_t ldx, int8_t* y, int64_t r0, int64_t rows, int64_t b0,
                  int64_t nb) const {
    if (sparse_) {  // quads of the chunk's rows, 16-row aligned
      const int64_t ldn = (rows + 15) / 16 * 16;
      uint8_t* xq = static_cast<uint8_t*>(thread_scratch(3, size_t(kp_ * ldn)));
      avx512::quad_rows(x + r0 * ldx, ldx, rows, k_, ldn, reinterpret_cast<uint32_t*>(xq));
      QSpmmVnniArgs a;
      a.xq = xq, a.n = rows, a.ldn = ldn, a.m = m_;
      a.nnz = nnz_.data(), a.quad = quad_.data(), a.w = block_.data();
      a.bias = vbias_.data(), a.mult = vmult_.data(), a.shift = vshift_.data();
      a.zp_out = rq_.zp_out, a.lo = rq_.lo, a.hi = rq_.hi;
      a.y = y + r0 * m_, a.ldy = m_;
      const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
      if (float_rq_) a.fr = &fr;
      return avx512::qspmm_vnni(a);
    }
    const int64_t k = k_, kp = kp_;
    QGemmVnniArgs a;
    const uint8_t* xu = nullptr;
    if (ldx == k && k == kp) {  // whole 4-byte groups in place: the kernel flips them as it reads
      xu = reinterpret_cast<const uint8_t*>(x + r0 * k);
      a.signed_x = true;
    } else {
      uint8_t* copy = static_cast<uint8_t*>(thread_scratch(3, size_t(rows * kp)));
      copy_rows_as_uint8(x, ldx, r0, rows, copy);
      xu = copy;
    }
    const int64_t c0 = b0 * 16;  // a block of 16 channels is 16 * kp packed bytes
    a.x = xu, a.n = rows, a.kp = kp, a.m = std::min(m_ - c0, nb * 16);
    a.w = vnni_w_.data() + c0 * kp;
    a.bias = vbias_.data() + c0, a.mult = vmult_.data() + c0, a.shift = vshift_.data() + c0;
    FloatRequant fr;
    if (float_rq_) {
      fr = FloatRequant{fscale_.data() + c0, fpos_.data() + c0, fneg_.data() + c0};
      a.fr = &fr;
    }
    a.zp_out = rq_.zp_out, a.lo = rq_.lo, a.hi = rq_.hi;
    a.y = y + r0 * m_ + c0, a.ldy = m_;
    avx512::qgemm_vnni(a);
  }
  // Rows [r0, r0 + rows) of x (stride ldx) as uint8 (x + 128) rows of kp bytes, zero past K. Rows
  // already at the VNNI row length (an im2col's) are one flat pass.
  void copy_rows_as_uint8(const int8_t* x, int64_t ldx, int64_t r0, int64_t rows,
                          uint8_t* xu) const {
    const int64_t k = k_, kp = kp_;
    if (ldx == kp) return flip_sign_bits(x + r0 * kp, rows * kp, xu);
    for (int64_t r = 0; r < rows; ++r) {
      flip_sign_bits(x + (r0 + r) * ldx, k, xu + r * kp);
      std::memset(xu + r * kp + k, 0, size_t(kp - k));
    }
  }
  // int8 -> uint8 (x + 128). The count and pointers are locals: byte stores may alias any member,
  // and a member bound would be reloaded after every store, keeping the loop scalar.
  static void flip_sign_bits(const int8_t* src, int64_t n, uint8_t* dst) {
    for (int64_t j = 0; j < n; ++j) dst[j] = uint8_t(src[j]) ^ 0x80u;
  }
  // spmv_: one or two rows a call, run row by row through the channel groups (qspmv_groups)
  bool vnni_ = false, spmv_ = false;
  PackedSparseS8 groups_;  // the channel-group form (spmv_)
  int64_t kp_ = 0;
  std::vector<int8_t> vnni_w_;
  std::vector<int32_t> nnz_, quad_, block_;
  std::vector<int32_t> vbias_, vmult_, vshift_;
#endif
#if defined(EP_HAVE_AVX2) || defined(EP_HAVE_AVX512)
  std::vector<float> fscale_, fpos_, fneg_;  // padded to whole blocks of 16 channels
  bool float_rq_ = false;                    // every channel's requantization has the float form
#endif
  void row(const int8_t* x, int8_t* y) const {
    if (sparse_) {
      for (int64_t i = 0; i < m_; ++i) {
        int32_t s = 0;
        for (int64_t e = row_[size_t(i)]; e < row_[size_t(i) + 1]; ++e)
          s += int32_t(x[idx_[size_t(e)]]) * int32_t(val_[size_t(e)]);
        y[i] = rq_.apply(wrap(int64_t(s) + bias_[size_t(i)]), i);
      }
      return;
    }
    for (int64_t i = 0; i < m_; ++i)
      y[i] = rq_.apply(wrap(int64_t(dot_s8(x, w_.data() + i * k_, k_)) + bias_[size_t(i)]), i);
  }
  int64_t m_, k_;
  std::vector<int32_t> bias_;
  Requant rq_;
  bool sparse_ = false;
  std::vector<int8_t> w_, val_;
  std::vector<int32_t> idx_;
  std::vector<int64_t> row_;
};

// ------------------------------------------------------------------------ CONV_2D
class QConv2D : public Op {
 public:
  QConv2D(const QCtx& c, const OpOptions& o) : isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &w = c.typed(c.constant(1), DType::i8), &y = c.act(c.out());
    c.rank(x, 4);
    c.rank(w, 4);
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], cin_ = x.shape[3];
    cout_ = w.shape[0], kh_ = w.shape[1], kw_ = w.shape[2], cg_ = w.shape[3];
    if (n_ < 1 || h_ < 1 || w_ < 1 || cout_ < 1 || kh_ < 1 || kw_ < 1 || cg_ < 1 || cin_ < cg_ ||
        cin_ % cg_ || cout_ % (cin_ / cg_))
      c.bad("filter and input channels do not form groups that divide the output channels");
    if (w.scale.size() > 1 && w.quantized_dimension != 0)
      c.bad("per-channel weight scales must be on dimension 0");
    groups_ = cin_ / cg_;
    sh_ = c.d.stride_h, sw_ = c.d.stride_w, dh_ = c.d.dilation_h, dw_ = c.d.dilation_w;
    oh_ = out_dim(c, h_, kh_, sh_, dh_, &pt_, 0);
    ow_ = out_dim(c, w_, kw_, sw_, dw_, &pl_, 1);
    c.shape_is(y, {n_, oh_, ow_, cout_});
    zp_in_ = zp(x);
    const Requant rq = make_requant(c, x, w, y, cout_, false);
    const int64_t og = cout_ / groups_, kk = kh_ * kw_ * cg_;
    if (kk > kMaxTerms)
      c.unsupported("more than 65536 products per output (int32 sums could overflow)");
    const std::vector<int32_t> bias = folded_bias(c, w.as<int8_t>(), cout_, kk, zp_in_);
    for (int64_t g = 0; g < groups_; ++g) {
      Requant rg = rq;
      rg.mult.assign(rq.mult.begin() + g * og, rq.mult.begin() + (g + 1) * og);
      rg.shift.assign(rq.shift.begin() + g * og, rq.shift.begin() + (g + 1) * og);
      gemm_.push_back(std::make_unique<QGemm>(
          w.as<int8_t>() + g * og * kk, og, kk,
          std::vector<int32_t>(bias.begin() + g * og, bias.begin() + (g + 1) * og), rg, o,
          n_ * oh_ * ow_));
    }
    direct_ = kh_ == 1 && kw_ == 1 && sh_ == 1 && sw_ == 1 && groups_ == 1 && pt_ == 0 &&
              pl_ == 0 && oh_ == h_ && ow_ == w_;
    macs = double(n_) * oh_ * ow_ * cout_ * kk;
    kind = "CONV_2D";
    label = kind + " int8 " + std::to_string(kh_) + "x" + std::to_string(kw_) + "/" +
            std::to_string(sh_) + " " + std::to_string(cin_) + "->" + std::to_string(cout_) +
            (groups_ > 1 ? " g" + std::to_string(groups_) : "") + gemm_[0]->sparse_label() + " " +
            std::to_string(oh_) + "x" + std::to_string(ow_);
  }
  int64_t scratch_bytes() const override {
    if (direct_) return 0;
    const int64_t pix = oh_ * ow_;
    return pix * col_stride() + (groups_ > 1 ? pix * (cout_ / groups_) : 0);
  }
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    const int64_t pix = oh_ * ow_, og = cout_ / groups_, kk = kh_ * kw_ * cg_, ldc = col_stride();
    if (direct_) return gemm_[0]->forward(x, n_ * pix, y, r.threads);
    int8_t* col = static_cast<int8_t*>(r.scratch);
    int8_t* tmp = col + pix * ldc;
    for (int64_t b = 0; b < n_; ++b) {
      const int8_t* xb = x + b * h_ * w_ * cin_;
      int8_t* yb = y + b * pix * cout_;
      // Split, one group: each thread takes a band of output rows, its im2col and then its GEMM
      // rows (integer sums: the same bits however rows are cut). Two split phases, the im2col
      // by rows and the GEMM by its own blocks, made each thread read column rows the other
      // core had written, and a barrier between: MobileNetV2's int8 stem ran 1.3x faster on 2
      // threads than on 1 that way.
      const int use = groups_ == 1 ? threads_for(r.threads, macs / double(n_)) : 1;
      if (use > 1) {
        const int64_t tasks = std::min<int64_t>(oh_, 4 * use);
        parallel_for(use, tasks, [&](int64_t t) {
          const int64_t oy0 = oh_ * t / tasks, oy1 = oh_ * (t + 1) / tasks;
          for (int64_t oy = oy0; oy < oy1; ++oy) im2col(xb, 0, col, oy);
          gemm_[0]->forward(col + oy0 * ow_ * ldc, (oy1 - oy0) * ow_, yb + oy0 * ow_ * cout_, 1,
                            ldc);
        });
        continue;
      }
      for (int64_t g = 0; g < groups_; ++g) {
        // a copied byte weighs about 15 GEMM multiply-adds (a stem's 27-byte rows take about
        // 1.5 ns a pixel), or the stem's im2col (a third of its time) never splits
        parallel_for(threads_for(r.threads, 15.0 * double(pix * kk)), oh_,
                     [&](int64_t oy) { im2col(xb, g, col, oy); });
        if (groups_ == 1) {
          gemm_[0]->forward(col, pix, yb, r.threads, ldc);
        } else {
          gemm_[size_t(g)]->forward(col, pix, tmp, r.threads, ldc);
          for (int64_t p = 0; p < pix; ++p)
            std::memcpy(yb + p * cout_ + g * og, tmp + p * og, size_t(og));
        }
      }
    }
  }
  int in_ = 0, out_ = 0;

 private:
  // im2col rows are KH * KW * CG bytes rounded up to 4, the VNNI kernel's row length
  int64_t col_stride() const { return (kh_ * kw_ * cg_ + 3) / 4 * 4; }
  // outside the input the im2col holds the input zero point: (x - zp) * w adds nothing there,
  // as TFLite skips those taps
  void im2col(const int8_t* x, int64_t g, int8_t* col, int64_t oy) const {  // one output row
    const int8_t* const xg = x + g * cg_;
    int64_t ox = 0;
#if defined(EP_HAVE_AVX512)
    // every kernel row inside and one group without column dilation: the pixels whose columns
    // are inside too take masked moves of whole kernel rows (a stem's 9-byte kernel rows as two
    // overlapping 8-byte copies each spent half the stem's time)
    const int64_t kw = kw_, cin = cin_, w = w_, sw = sw_, pl = pl_, ow = ow_;
    const int64_t iy0 = oy * sh_ - pt_;
    if (isa_ == Isa::avx512 && groups_ == 1 && dw_ == 1 && kw * cin <= 64 && iy0 >= 0 &&
        iy0 + (kh_ - 1) * dh_ < h_) {
      const int64_t first = std::min(ow, (pl + sw - 1) / sw);  // ix0 >= 0 from here
      const int64_t last = w - kw + pl < 0 ? first : std::min(ow, (w - kw + pl) / sw + 1);
      for (; ox < first; ++ox) pixel(x, xg, col, oy, ox);
      if (last > first) {
        const int64_t ldc = col_stride();
        avx512::im2col_pixels_s8(x + (iy0 * w + first * sw - pl) * cin, dh_ * w * cin, kh_,
                                 kw * cin, sw * cin, last - first, col + (oy * ow + first) * ldc,
                                 ldc);
        ox = last;
      }
    }
#endif
    for (; ox < ow_; ++ox) pixel(x, xg, col, oy, ox);
  }
  // One pixel's im2col row. The geometry as locals: every byte store may alias a member, and the
  // compiler would reload each one after every copy.
  void pixel(const int8_t* x, const int8_t* xg, int8_t* col, int64_t oy, int64_t ox) const {
    const int64_t kh = kh_, kw = kw_, cin = cin_, cg = cg_, h = h_, w = w_, sw = sw_, dh = dh_,
                  dwx = dw_, pl = pl_, ldc = col_stride(), iy0 = oy * sh_ - pt_;
    const int zp = zp_in_;
    // with one group and no column dilation a kernel row's taps are adjacent in the input
    const bool rows = groups_ == 1 && dwx == 1;
    int8_t* dst = col + (oy * ow_ + ox) * ldc;
    const uint32_t zero = 0;  // the row's last 4 bytes first: past K they are read by no weight
    std::memcpy(dst + ldc - 4, &zero, 4);
    const int64_t ix0 = ox * sw - pl;
    const bool inside = rows && ix0 >= 0 && ix0 + kw <= w;
    for (int64_t ky = 0; ky < kh; ++ky) {
      const int64_t iy = iy0 + ky * dh;
      if (inside && iy >= 0 && iy < h) {
        copy_bytes(dst, x + (iy * w + ix0) * cin, kw * cin);
        dst += kw * cin;
        continue;
      }
      for (int64_t kx = 0; kx < kw; ++kx, dst += cg) {
        const int64_t ix = ix0 + kx * dwx;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w)
          std::memset(dst, zp, size_t(cg));
        else
          copy_bytes(dst, xg + (iy * w + ix) * cin, cg);
      }
    }
  }

  // A stem's few channels make short copies (3x3 on RGB: 9 bytes per kernel row), where a
  // library call per copy would dominate and a byte loop makes a store per byte: runs of 4 to 32
  // bytes are two overlapping fixed-size moves.
  static void copy_bytes(int8_t* __restrict__ dst, const int8_t* __restrict__ src, int64_t n) {
    if (n >= 16 && n <= 32) {
      std::memcpy(dst, src, 16);
      std::memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n >= 8 && n < 16) {
      std::memcpy(dst, src, 8);
      std::memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4 && n < 8) {
      std::memcpy(dst, src, 4);
      std::memcpy(dst + n - 4, src + n - 4, 4);
    } else if (n > 64) {
      std::memcpy(dst, src, size_t(n));
    } else {
      for (int64_t c = 0; c < n; ++c) dst[c] = src[c];
    }
  }
  int64_t n_, h_, w_, cin_, cout_, kh_, kw_, cg_, groups_, sh_, sw_, dh_, dw_, oh_, ow_, pt_, pl_;
  int32_t zp_in_ = 0;
  bool direct_ = false;
  Isa isa_;
  std::vector<std::unique_ptr<QGemm>> gemm_;
};

// ------------------------------------------------------------------------ FULLY_CONNECTED
class QFullyConnected : public Op {
 public:
  QFullyConnected(const QCtx& c, const OpOptions& o) {
    const Tensor &x = c.act(c.in(0)), &w = c.typed(c.constant(1), DType::i8), &y = c.act(c.out());
    c.rank(w, 2);
    m_ = w.shape[0], k_ = w.shape[1];
    if (k_ < 1 || m_ < 1 || x.elems % k_) c.bad("input size is not a multiple of the weight's K");
    n_ = x.elems / k_;
    if (n_ < 1 || y.elems != n_ * m_) c.bad("output size is not N * M");
    if (k_ > kMaxTerms)
      c.unsupported("more than 65536 products per output (int32 sums could overflow)");
    if (w.scale.size() > 1 && w.quantized_dimension != 0)
      c.bad("per-channel weight scales must be on dimension 0");
    const int32_t zin = zp(x);
    gemm_ =
        std::make_unique<QGemm>(w.as<int8_t>(), m_, k_, folded_bias(c, w.as<int8_t>(), m_, k_, zin),
                                make_requant(c, x, w, y, m_, true), o, n_);
    macs = double(n_) * m_ * k_;
    kind = "FULLY_CONNECTED";
    label =
        kind + " int8 " + std::to_string(k_) + "->" + std::to_string(m_) + gemm_->sparse_label();
  }
  void run(const RunCtx& r) const override {
    gemm_->forward(reinterpret_cast<const int8_t*>(r.ptr[in_]), n_,
                   reinterpret_cast<int8_t*>(r.ptr[out_]), r.threads);
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t n_, m_, k_;
  std::unique_ptr<QGemm> gemm_;
};

// ------------------------------------------------------------------------ TRANSPOSE_CONV
// TFLite's integer transposed convolution (geometry: TransposeConvGeometry in op_context.h):
// every input pixel adds (x - zp_in) * W[o, ky, kx, :] into an int32 sum per output element,
// then bias, per-channel requantization and the fused activation's clamp. The input is widened to
// int16 with its zero point removed, so each contribution is one int16 dot product over the input
// channels.
class QTransposeConv : public Op {
 public:
  QTransposeConv(const QCtx& c) {
    const Tensor &w = c.typed(c.constant(1), DType::i8), &x = c.act(c.in(2)), &y = c.act(c.out());
    g_.init(c, c.constant(0), w, x, y);
    if (w.scale.size() > 1 && w.quantized_dimension != 0)
      c.bad("per-channel weight scales must be on dimension 0");
    // every output sums at most ceil(KH / stride) * ceil(KW / stride) * I products of 255 * 127
    if (((g_.kh + g_.sh - 1) / g_.sh) * ((g_.kw + g_.sw - 1) / g_.sw) * g_.cin > kMaxTerms)
      c.unsupported("more than 65536 products per output (int32 sums could overflow)");
    rq_ = make_requant(c, x, w, y, g_.cout, false);
    zp_in_ = zp(x);
    bias_.assign(size_t(g_.cout), 0);
    if (c.has_in(3)) {
      const Tensor& bt = c.typed(c.constant(3), DType::i32);
      if (bt.elems != g_.cout)
        c.bad("the bias has " + std::to_string(bt.elems) + " values, needs " +
              std::to_string(g_.cout));
      std::copy(bt.as<int32_t>(), bt.as<int32_t>() + g_.cout, bias_.begin());
    }
    const int8_t* wv = w.as<int8_t>();
    wide_.assign(wv, wv + w.elems);  // [O, KH, KW, I] as int16
    macs = double(g_.n) * g_.h * g_.w * g_.kh * g_.kw * g_.cout * g_.cin;
    kind = "TRANSPOSE_CONV";
    label = kind + " int8 " + std::to_string(g_.kh) + "x" + std::to_string(g_.kw) + "/" +
            std::to_string(g_.sh) + " " + std::to_string(g_.cin) + "->" + std::to_string(g_.cout) +
            " " + std::to_string(g_.oh) + "x" + std::to_string(g_.ow);
  }
  int64_t scratch_bytes() const override {
    return g_.oh * g_.ow * g_.cout * 4 + g_.h * g_.w * g_.cin * 2;
  }
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    int32_t* acc = static_cast<int32_t*>(r.scratch);
    int16_t* xw = reinterpret_cast<int16_t*>(acc + g_.oh * g_.ow * g_.cout);
    for (int64_t b = 0; b < g_.n; ++b) {
      const int8_t* xb = x + b * g_.h * g_.w * g_.cin;
      for (int64_t i = 0; i < g_.h * g_.w * g_.cin; ++i) xw[i] = int16_t(xb[i] - zp_in_);
      for (int64_t p = 0; p < g_.oh * g_.ow; ++p)
        std::copy(bias_.begin(), bias_.end(), acc + p * g_.cout);
      const int64_t taps = g_.kh * g_.kw;
      g_.scatter([&](int64_t in, int64_t tap, int64_t out) {
        const int16_t* xp = xw + in * g_.cin;
        int32_t* ap = acc + out * g_.cout;
        for (int64_t oc = 0; oc < g_.cout; ++oc)  // int32 wraparound, as TFLite in practice
          ap[oc] =
              wrap(int64_t(ap[oc]) + dot16(xp, wide_.data() + (oc * taps + tap) * g_.cin, g_.cin));
      });
      int8_t* yb = y + b * g_.oh * g_.ow * g_.cout;
      for (int64_t p = 0; p < g_.oh * g_.ow; ++p)
        for (int64_t oc = 0; oc < g_.cout; ++oc)
          yb[p * g_.cout + oc] = rq_.apply(acc[p * g_.cout + oc], oc);
    }
  }
  int in_ = 0, out_ = 0;

 private:
  TransposeConvGeometry g_;
  int32_t zp_in_ = 0;
  std::vector<int32_t> bias_;
  std::vector<int16_t> wide_;
  Requant rq_;
};

// ------------------------------------------------------------------------ DEPTHWISE_CONV_2D
class QDepthwise : public Op {
 public:
  QDepthwise(const QCtx& c, const OpOptions& o) : isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &w = c.typed(c.constant(1), DType::i8), &y = c.act(c.out());
    c.rank(x, 4);
    c.rank(w, 4);
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], cin_ = x.shape[3];
    kh_ = w.shape[1], kw_ = w.shape[2], cout_ = w.shape[3];
    if (n_ < 1 || h_ < 1 || w_ < 1 || w.shape[0] != 1 || cin_ < 1 || cout_ < 1 || kh_ < 1 ||
        kw_ < 1 || cout_ % cin_)
      c.bad("filter must be [1, KH, KW, C * depth_multiplier]");
    if (w.scale.size() > 1 && w.quantized_dimension != 3)
      c.bad("per-channel weight scales must be on dimension 3");
    dm_ = cout_ / cin_;
    if (kh_ * kw_ > kMaxTerms) c.unsupported("more than 65536 taps (int32 sums could overflow)");
    sh_ = c.d.stride_h, sw_ = c.d.stride_w, dh_ = c.d.dilation_h, dw_ = c.d.dilation_w;
    oh_ = out_dim(c, h_, kh_, sh_, dh_, &pt_, 0);
    ow_ = out_dim(c, w_, kw_, sw_, dw_, &pl_, 1);
    c.shape_is(y, {n_, oh_, ow_, cout_});
    zp_in_ = zp(x);
    rq_ = make_requant(c, x, w, y, cout_, false);
    const int64_t cp = (cout_ + 15) / 16 * 16;
    fscale_.resize(size_t(cp)), fpos_.resize(size_t(cp)), fneg_.resize(size_t(cp));
    float_rq_ = float_requant(rq_.mult.data(), rq_.shift.data(), cout_, cp, rq_.zp_out,
                              fscale_.data(), fpos_.data(), fneg_.data());
    wt_ = w.as<int8_t>();
    for (int64_t i = 0; i < kh_ * kw_ * cout_; ++i) wide_.push_back(int32_t(uint16_t(wt_[i])));
    bias_.assign(size_t(cout_), 0);
    if (c.has_in(2)) {
      const Tensor& b = c.typed(c.constant(2), DType::i32);
      if (b.elems != cout_) c.bad("the bias does not have one value per output channel");
      for (int64_t i = 0; i < cout_; ++i) bias_[size_t(i)] = b.as<int32_t>()[i];
    }
    macs = double(n_) * oh_ * ow_ * cout_ * kh_ * kw_;
    kind = "DEPTHWISE_CONV_2D";
    label = kind + " int8 " + std::to_string(kh_) + "x" + std::to_string(kw_) + "/" +
            std::to_string(sh_) + " " + std::to_string(cout_) + " " + std::to_string(oh_) + "x" +
            std::to_string(ow_);
  }
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    // a depthwise multiply-add costs about 5 of the GEMM's (no input reuse across channels, a
    // requantization per KH * KW of them): weigh it so, or mid-sized layers never split
    const int t = threads_for(r.threads, macs * 5.0);
    // Bands of output rows whose input rows span about 64 KiB (the rows of a band share each
    // channel block's weights and constants, and the band's input stays in L2 across blocks),
    // about 4 per thread when split.
    int64_t band = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, sh_ * w_ * cin_));
    if (t > 1) band = std::min(band, (oh_ + 4 * t - 1) / (4 * t));
    band = std::max<int64_t>(1, std::min(band, oh_));
    const int64_t tasks = (oh_ + band - 1) / band;
    for (int64_t b = 0; b < n_; ++b) {
      const int8_t* xb = x + b * h_ * w_ * cin_;
      int8_t* yb = y + b * oh_ * ow_ * cout_;
      parallel_for(t, tasks, [&](int64_t i) {
        const int64_t oy = i * band;
        rows(xb, yb + oy * ow_ * cout_, oy, std::min(band, oh_ - oy));
      });
    }
  }
  int in_ = 0, out_ = 0;

 private:
  // output rows [oy, oy + n), y at row oy
  void rows(const int8_t* x, int8_t* y, int64_t oy, int64_t n) const {
#if defined(EP_HAVE_AVX512)
    if (isa_ == Isa::avx512 && dm_ == 1) {
      QDwRowArgs a;
      a.x = x, a.h = h_, a.w = w_, a.c = cout_, a.kh = kh_, a.kw = kw_, a.sh = sh_, a.sw = sw_;
      a.dh = dh_, a.dw = dw_, a.pt = pt_, a.pl = pl_, a.oy = oy, a.rows = n, a.ow = ow_;
      a.wt = wide_.data(), a.bias = bias_.data(), a.mult = rq_.mult.data();
      a.shift = rq_.shift.data(), a.zp_in = zp_in_, a.zp_out = rq_.zp_out, a.lo = rq_.lo;
      a.hi = rq_.hi, a.y = y, a.vnni = cpu_features().avx512vnni;
      const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
      if (float_rq_) a.fr = &fr;
      return avx512::qdw_rows(a);
    }
#endif
#if defined(EP_HAVE_AVX2)
    if ((isa_ == Isa::avx2 || isa_ == Isa::avx512) && dm_ == 1) {
      QDwRowArgs a;
      a.x = x, a.h = h_, a.w = w_, a.c = cout_, a.kh = kh_, a.kw = kw_, a.sh = sh_, a.sw = sw_;
      a.dh = dh_, a.dw = dw_, a.pt = pt_, a.pl = pl_, a.oy = oy, a.rows = n, a.ow = ow_;
      a.wt = wide_.data(), a.bias = bias_.data(), a.mult = rq_.mult.data();
      a.shift = rq_.shift.data(), a.zp_in = zp_in_, a.zp_out = rq_.zp_out, a.lo = rq_.lo;
      a.hi = rq_.hi, a.y = y;
      const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
      if (float_rq_) a.fr = &fr;
      return avx2::qdw_rows(a);
    }
#endif
    for (int64_t i = 0; i < n; ++i) row(x, y + i * ow_ * cout_, oy + i);
  }
  void row(const int8_t* x, int8_t* y, int64_t oy) const {
    std::vector<int32_t> acc(static_cast<size_t>(cout_));
    for (int64_t ox = 0; ox < ow_; ++ox) {
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t ky = 0; ky < kh_; ++ky) {
        const int64_t iy = oy * sh_ - pt_ + ky * dh_;
        if (iy < 0 || iy >= h_) continue;
        for (int64_t kx = 0; kx < kw_; ++kx) {
          const int64_t ix = ox * sw_ - pl_ + kx * dw_;
          if (ix < 0 || ix >= w_) continue;
          const int8_t* xp = x + (iy * w_ + ix) * cin_;
          const int8_t* wp = wt_ + (ky * kw_ + kx) * cout_;
          if (dm_ == 1) {
            for (int64_t ch = 0; ch < cout_; ++ch)
              acc[size_t(ch)] += (int32_t(xp[ch]) - zp_in_) * int32_t(wp[ch]);
          } else {
            for (int64_t ch = 0; ch < cout_; ++ch)
              acc[size_t(ch)] += (int32_t(xp[ch / dm_]) - zp_in_) * int32_t(wp[ch]);
          }
        }
      }
      int8_t* yp = y + ox * cout_;
      for (int64_t ch = 0; ch < cout_; ++ch)
        yp[ch] = rq_.apply(wrap(int64_t(acc[size_t(ch)]) + bias_[size_t(ch)]), ch);
    }
  }
  Isa isa_;
  int64_t n_, h_, w_, cin_, cout_, kh_, kw_, dm_, sh_, sw_, dh_, dw_, oh_, ow_, pt_, pl_;
  int32_t zp_in_ = 0;
  const int8_t* wt_ = nullptr;
  std::vector<int32_t> wide_;  // the weights as int16 in 32-bit lanes (the AVX-512 row)
  std::vector<int32_t> bias_;
  Requant rq_;
  std::vector<float> fscale_, fpos_, fneg_;  // the float requantization, padded to 16 channels
  bool float_rq_ = false;                    // every channel's requantization has the float form
};

// ------------------------------------------------------------------------ broadcasting
// Offsets of both inputs for every output element in order (numpy broadcasting, rank <= 6).
class ElementPairs {
 public:
  ElementPairs(const QCtx& c, const Tensor& a, const Tensor& b, const Tensor& y) {
    const size_t r = y.shape.size();
    if (a.shape.size() > r || b.shape.size() > r || r > 6) c.bad("inputs do not broadcast");
    shape_ = y.shape;
    sa_.assign(r, 0);
    sb_.assign(r, 0);
    int64_t st_a = 1, st_b = 1;
    for (size_t k = 0; k < r; ++k) {
      const size_t i = r - 1 - k;
      const int64_t da = k < a.shape.size() ? a.shape[a.shape.size() - 1 - k] : 1;
      const int64_t db = k < b.shape.size() ? b.shape[b.shape.size() - 1 - k] : 1;
      if ((da != 1 && da != y.shape[i]) || (db != 1 && db != y.shape[i]))
        c.bad("inputs do not broadcast to the output shape");
      sa_[i] = da == 1 ? 0 : st_a;
      sb_[i] = db == 1 ? 0 : st_b;
      st_a *= da;
      st_b *= db;
    }
    same_ = a.shape == y.shape && b.shape == y.shape;
    elems_ = y.elems;
  }
  template <class F>
  void each(F f) const {
    if (same_) {
      for (int64_t e = 0; e < elems_; ++e) f(e, e, e);
      return;
    }
    const size_t r = shape_.size();
    std::vector<int64_t> idx(r, 0);
    int64_t oa = 0, ob = 0;
    for (int64_t e = 0; e < elems_; ++e) {
      f(e, oa, ob);
      for (size_t k = 0; k < r; ++k) {
        const size_t i = r - 1 - k;
        oa += sa_[i], ob += sb_[i];
        if (++idx[i] < shape_[i]) break;
        oa -= sa_[i] * shape_[i], ob -= sb_[i] * shape_[i];
        idx[i] = 0;
      }
    }
  }

 private:
  std::vector<int64_t> shape_, sa_, sb_;
  bool same_ = false;
  int64_t elems_ = 0;
};

// ------------------------------------------------------------------------ ADD / MUL
class QBinary : public Op {
 public:
  QBinary(const QCtx& c, const OpOptions& o, bool mul)
      : mul_(mul), bc_(c, c.act(c.in(0)), c.act(c.in(1)), c.act(c.out())) {
    vec_ = (o.isa == Isa::avx512 || o.isa == Isa::avx2) && c.in(0).shape == c.out().shape &&
           c.in(1).shape == c.out().shape;
    avx2_ = o.isa == Isa::avx2;
    // One operand the output's shape and the other its trailing dimensions (a squeeze-excite
    // scale [1, 1, 1, C], a bias [C], a scalar): the small one repeats every `period_` values,
    // so the AVX-512 loops run row by row against it.
    if ((o.isa == Isa::avx512 || o.isa == Isa::avx2) && !vec_) {
      const auto repeats = [&](const Tensor& small) {
        const auto& ys = c.out().shape;
        if (small.shape.size() > ys.size()) return false;
        const size_t off = ys.size() - small.shape.size();
        size_t i = 0;
        while (i < small.shape.size() && small.shape[i] == 1) ++i;
        for (size_t k = i; k < small.shape.size(); ++k)
          if (small.shape[k] != ys[off + k]) return false;
        return small.elems > 0;
      };
      if (c.in(0).shape == c.out().shape && repeats(c.in(1))) {
        period_ = c.in(1).elems, small_a_ = false;
      } else if (c.in(1).shape == c.out().shape && repeats(c.in(0))) {
        period_ = c.in(0).elems, small_a_ = true;
      }
    }
    const Tensor &a = c.in(0), &b = c.in(1), &y = c.out();
    za_ = zp(a), zb_ = zp(b), zy_ = zp(y);
    act_range(c.d.act, y, &lo_, &hi_);
    const float sa = a.scale[0], sb = b.scale[0], sy = y.scale[0];
    if (mul) {
      multiplier(c, double(sa * sb / sy), &om_, &os_);  // float product, as TFLite
    } else {
      const double twice = 2.0 * double(std::max(sa, sb));
      multiplier(c, double(sa) / twice, &m1_, &s1_);
      multiplier(c, double(sb) / twice, &m2_, &s2_);
      multiplier(c, twice / double(float(1 << 20) * sy), &om_, &os_);
    }
    elems_ = y.elems;
#if defined(EP_HAVE_AVX512)
    // On AVX-512 the output's requantization runs in float where that keeps TFLite's bits; ADD
    // on VBMI also looks each input's scaled value (one of 256) up from byte planes
    static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
    float_out_ =
        o.isa == Isa::avx512 && float_requant(&om_, &os_, 1, 1, zy_, &fo_[0], &fo_[1], &fo_[2]);
    if (!mul && vbmi && float_out_) {
      planes_.resize(2 * 1024);
      qadd_planes(za_, m1_, s1_, planes_.data());
      qadd_planes(zb_, m2_, s2_, planes_.data() + 1024);
    }
#endif
    kind = mul ? "MUL" : "ADD";
    label = kind + " int8 " + dims(y.shape);
    macs = double(y.elems);
  }
  void run(const RunCtx& r) const override {
    const int8_t* a = reinterpret_cast<const int8_t*>(r.ptr[ia_]);
    const int8_t* b = reinterpret_cast<const int8_t*>(r.ptr[ib_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    if (vec_) {
#if defined(EP_HAVE_AVX2)
      // ADD: three requantizations per element (64-bit products), measured at about the time of
      // 100 int8 GEMM multiply-adds (threads_for's unit), so MobileNetV2's 56x56x24 ADD (28 us)
      // splits; from the tables about 50 (15.5 us); MUL: one, weighed a third of ADD's
      const int64_t chunk = int64_t(1) << 14, tasks = (elems_ + chunk - 1) / chunk;
      parallel_for(threads_for(r.threads, double(elems_) * cost_per_value()), tasks,
                   [&](int64_t t) {
                     const int64_t e0 = t * chunk;
                     QAddArgs q;
                     q.a = a + e0, q.b = b + e0, q.y = y + e0, q.n = std::min(chunk, elems_ - e0);
                     q.za = za_, q.zb = zb_, q.zy = zy_, q.lo = lo_, q.hi = hi_;
                     q.m1 = m1_, q.m2 = m2_, q.om = om_, q.s1 = s1_, q.s2 = s2_, q.os = os_;
                     binary(q);
                   });
#endif
    } else if (period_ > 0) {
#if defined(EP_HAVE_AVX2)
      // rows of at least 256 values: a short period (a scalar, a few channels) is tiled first
      const int64_t reps = period_ >= 256 ? 1 : (256 + period_ - 1) / period_;
      const int64_t row = period_ * reps, rows = (elems_ + row - 1) / row;
      std::vector<int8_t> tiled;
      const int8_t* small = small_a_ ? a : b;
      if (reps > 1) {
        tiled.resize(size_t(row));
        for (int64_t k = 0; k < reps; ++k)
          std::copy(small, small + period_, tiled.data() + k * period_);
        small = tiled.data();
      }
      parallel_for(threads_for(r.threads, double(elems_) * cost_per_value()), rows, [&](int64_t t) {
        const int64_t e0 = t * row;
        QAddArgs q;
        q.a = small_a_ ? small : a + e0, q.b = small_a_ ? b + e0 : small;
        q.y = y + e0, q.n = std::min(row, elems_ - e0);
        q.za = za_, q.zb = zb_, q.zy = zy_, q.lo = lo_, q.hi = hi_;
        q.m1 = m1_, q.m2 = m2_, q.om = om_, q.s1 = s1_, q.s2 = s2_, q.os = os_;
        binary(q);
      });
#endif
    } else {
      // the portable loops: the constants as locals, so the int8 stores (which may alias the
      // operator's fields) do not reload them for every value
      const int32_t za = za_, zb = zb_, zy = zy_, lo = lo_, hi = hi_, om = om_, m1 = m1_, m2 = m2_;
      const int os = os_, s1 = s1_, s2 = s2_;
      if (mul_) {
        bc_.each([&](int64_t e, int64_t i, int64_t j) {
          const int32_t v = zy + mbqm((a[i] - za) * (b[j] - zb), om, os);
          y[e] = int8_t(std::min(hi, std::max(lo, v)));
        });
      } else {
        bc_.each([&](int64_t e, int64_t i, int64_t j) {
          const int32_t x1 = mbqm((a[i] - za) * (1 << 20), m1, s1);
          const int32_t x2 = mbqm((b[j] - zb) * (1 << 20), m2, s2);
          const int32_t v = mbqm(x1 + x2, om, os) + zy;
          y[e] = int8_t(std::min(hi, std::max(lo, v)));
        });
      }
    }
  }
  int ia_ = 0, ib_ = 0, out_ = 0;

 private:
  // threads_for's weight of one value (in int8 GEMM multiply-adds; see run())
  double cost_per_value() const { return mul_ ? 35.0 : planes_.empty() ? 100.0 : 50.0; }
#if defined(EP_HAVE_AVX2)
  void binary(QAddArgs& q) const {
    if (avx2_) return mul_ ? avx2::qmul(q) : avx2::qadd(q);
#if defined(EP_HAVE_AVX512)
    if (mul_) {
      if (float_out_) q.fo = fo_;
      return avx512::qmul(q);
    }
    if (planes_.empty()) return avx512::qadd(q);
    q.ta = planes_.data(), q.tb = planes_.data() + 1024, q.fo = fo_;
    avx512::qadd_tables(q);
#endif
  }
#endif
  bool mul_, vec_ = false, small_a_ = false, avx2_ = false;
  int64_t elems_ = 0, period_ = 0;
  ElementPairs bc_;
  std::vector<uint8_t> planes_;  // ADD's input tables (qadd_tables), when used
  float fo_[3] = {0, 0, 0};      // the output requantization's float form
  bool float_out_ = false;       // fo_ is set
  int32_t za_, zb_, zy_, lo_, hi_, m1_ = 0, m2_ = 0, om_ = 0;
  int s1_ = 0, s2_ = 0, os_ = 0;
};

// ------------------------------------------------------------------------ BATCH_MATMUL
// Y = requant(sum_k (A[i, k] - za) (B[k, j] - zb)) with both operands int8 activations, as
// TFLite's int8 BATCH_MATMUL: one multiplier float(sa * sb) / sy, no fused activation.
// AVX-512 VNNI: each call packs B's matrices as the GEMM's weights (columns as channels, raw
// int8) and A's rows as its uint8 rows (a + 128); the zero points become a per-column bias,
// -(128 + za) sum_k B[k, j] + (128 + za) zb K, and a per-row one, -zb sum_k (A[i, k] + 128).
// Packing costs O((M + N) K) per matrix against the product's O(M N K).
// Elsewhere both operands are widened to int16 with their zero points removed, A by rows and B
// by columns (a transpose unless adj_y), so each output is one int16 dot product over k
// (vpmaddwd / smlal). Both give the exact int32 sum, so the same bits.
class QBatchMatMul : public Op {
 public:
  QBatchMatMul(const QCtx& c, const OpOptions& o) {
    const Tensor &a = c.act(c.in(0)), &b = c.act(c.in(1)), &y = c.act(c.out());
    mm_.init(c, a, b, y);
    adj_x_ = mm_.adj_x, adj_y_ = mm_.adj_y, m_ = mm_.m, k_ = mm_.k, n_ = mm_.n;
    // |(a - za)(b - zb)| <= 255 * 255: int32 sums stay exact up to this depth
    if (k_ > kMaxDepth)
      c.unsupported("an inner dimension of " + std::to_string(k_) + " (int32 sums hold " +
                    std::to_string(kMaxDepth) + ")");
    amats_ = a.elems / (m_ * k_), bmats_ = b.elems / (k_ * n_);
    za_ = zp(a), zb_ = zp(b), zy_ = zp(y);
    multiplier(c, double(a.scale[0] * b.scale[0]) / double(y.scale[0]), &mult_, &shift_);
    kind = "BATCH_MATMUL";
    macs = double(mm_.count) * m_ * k_ * n_;
    label = kind + " int8 " + dims(a.shape) + (adj_x_ ? "T" : "") + " x " + dims(b.shape) +
            (adj_y_ ? "T" : "");
#if defined(EP_HAVE_AVX512)
    vnni_ = o.isa == Isa::avx512 && cpu_features().avx512vnni;
    if (vnni_) {
      kp_ = (k_ + 3) / 4 * 4, np_ = (n_ + 15) / 16 * 16;
      in_place_ = !adj_x_ && k_ == kp_;
      vmult_.assign(size_t(np_), mult_), vshift_.assign(size_t(np_), shift_);
      fscale_.resize(size_t(np_)), fpos_.resize(size_t(np_)), fneg_.resize(size_t(np_));
      float_rq_ = float_requant(vmult_.data(), vshift_.data(), n_, np_, zy_, fscale_.data(),
                                fpos_.data(), fneg_.data());
    }
#endif
#if defined(EP_HAVE_AVX2)
    // x86 without VNNI: B packed as the AVX2 tiles' weights. B's zero point would need a per-row
    // term the tiles do not take; our quantizer gives keys and values zero point 0 (symmetric).
    avx2_ = !vnni_ && (o.isa == Isa::avx2 || o.isa == Isa::avx512) && zb_ == 0;
    if (avx2_) {
      np_ = (n_ + 15) / 16 * 16;
      vmult_.assign(size_t(np_), mult_), vshift_.assign(size_t(np_), shift_);
      fscale_.resize(size_t(np_)), fpos_.resize(size_t(np_)), fneg_.resize(size_t(np_));
      float_rq_ = float_requant(vmult_.data(), vshift_.data(), n_, np_, zy_, fscale_.data(),
                                fpos_.data(), fneg_.data());
    }
#endif
    (void)o;
  }
  int64_t scratch_bytes() const override {
    if (vnni_)  // column and row biases, packed B, one B of adj_y made [k, n], A as uint8 rows
      return (bmats_ * np_ + amats_ * m_) * 4 + bmats_ * np_ * kp_ + n_ * k_ +
             (in_place_ ? 0 : amats_ * m_ * kp_);
#if defined(EP_HAVE_AVX2)
    if (avx2_)  // column biases, packed B, A made [m, k] when transposed
      return bmats_ * np_ * 4 + bmats_ * packed_gemm_s8_size(n_, k_, 16, 2) +
             (adj_x_ ? amats_ * m_ * k_ : 0) + 64;
#endif
    return (amats_ * m_ + bmats_ * n_) * k_ * 2;
  }
  void run(const RunCtx& r) const override {
    const int8_t* a = reinterpret_cast<const int8_t*>(r.ptr[ia_]);
    const int8_t* b = reinterpret_cast<const int8_t*>(r.ptr[ib_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
#if defined(EP_HAVE_AVX512)
    if (vnni_) return run_vnni(a, b, y, r);
#endif
#if defined(EP_HAVE_AVX2)
    if (avx2_) return run_avx2(a, b, y, r);
#endif
    int16_t* aw = static_cast<int16_t*>(r.scratch);  // [amats, m, k]
    int16_t* bw = aw + amats_ * m_ * k_;             // [bmats, n, k]
    widen(a, amats_, m_, k_, adj_x_, za_, aw);
    widen(b, bmats_, n_, k_, !adj_y_, zb_, bw);
    const int64_t blocks = (m_ + kRows - 1) / kRows;
    parallel_for(threads_for(r.threads, macs), mm_.count * blocks, [&](int64_t t) {
      const int64_t mat = t / blocks, i0 = t % blocks * kRows, i1 = std::min(m_, i0 + kRows);
      const auto [ia, ib] = mm_(mat);
      const int16_t* am = aw + ia * m_ * k_;
      const int16_t* bm = bw + ib * n_ * k_;
      int8_t* ym = y + mat * m_ * n_;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j < n_; ++j) {
          const int32_t v = mbqm(dot16(am + i * k_, bm + j * k_, k_), mult_, shift_) + zy_;
          ym[i * n_ + j] = int8_t(std::min(127, std::max(-128, v)));
        }
    });
  }
  int ia_ = 0, ib_ = 0, out_ = 0;

 private:
  static constexpr int64_t kRows = 16, kMaxDepth = 33025;  // 33025 * 65025 < 2^31
  // mats matrices of [rows, k] (or [k, rows] when transposed) to int16 [rows, k] minus z
  static void widen(const int8_t* x, int64_t mats, int64_t rows, int64_t k, bool transposed,
                    int32_t z, int16_t* out) {
    for (int64_t mt = 0; mt < mats; ++mt) {
      const int8_t* xm = x + mt * rows * k;
      int16_t* om = out + mt * rows * k;
      if (!transposed) {
        for (int64_t i = 0; i < rows * k; ++i) om[i] = int16_t(xm[i] - z);
      } else {
        for (int64_t kk = 0; kk < k; ++kk)
          for (int64_t i = 0; i < rows; ++i) om[i * k + kk] = int16_t(xm[kk * rows + i] - z);
      }
    }
  }
#if defined(EP_HAVE_AVX512)
  static constexpr int64_t kVnniRows = 64;  // rows per task
  void run_vnni(const int8_t* a, const int8_t* b, int8_t* y, const RunCtx& r) const {
    const int64_t m = m_, k = k_, n = n_, kp = kp_, np = np_;
    int32_t* bias = static_cast<int32_t*>(r.scratch);               // [bmats, np]
    int32_t* rows = bias + bmats_ * np;                             // [amats, m]
    int8_t* packed = reinterpret_cast<int8_t*>(rows + amats_ * m);  // [bmats, np * kp]
    int8_t* bt = packed + bmats_ * np * kp;                         // [k, n]
    uint8_t* au = reinterpret_cast<uint8_t*>(bt + n * k);           // [amats, m, kp]
    const int64_t cz = 128 + int64_t(za_);
    for (int64_t bm = 0; bm < bmats_; ++bm) {  // W[j, kk] = B[kk, j]; adj_y: B[j, kk]
      const int8_t* src = b + bm * k * n;
      if (adj_y_) {
        for (int64_t j = 0; j < n; ++j)
          for (int64_t kk = 0; kk < k; ++kk) bt[kk * n + j] = src[j * k + kk];
        src = bt;
      }
      int32_t* bb = bias + bm * np;
      avx512::pack_kn_vnni(src, k, n, kp, packed + bm * np * kp, bb);
      for (int64_t j = 0; j < n; ++j) bb[j] = wrap(-cz * bb[j] + cz * zb_ * k);
      std::fill(bb + n, bb + np, 0);
    }
    // A as uint8 rows (unless read in place), and its row sums when B has a zero point (our
    // quantizer gives B zero point 0: keys and values, symmetric)
    for (int64_t am = 0; am < amats_; ++am) {
      const int8_t* src = a + am * m * k;
      if (in_place_) {
        if (zb_ != 0) avx512::row_sums_u8(src, m, k, k, rows + am * m);
      } else {
        uint8_t* dst = au + am * m * kp;
        for (int64_t i = 0; i < m; ++i) {
          int64_t sum = 0;
          for (int64_t kk = 0; kk < k; ++kk) {
            const int8_t v = adj_x_ ? src[kk * m + i] : src[i * k + kk];
            dst[i * kp + kk] = uint8_t(v + 128);
            sum += v + 128;
          }
          std::fill(dst + i * kp + k, dst + (i + 1) * kp, uint8_t(0));
          rows[am * m + i] = int32_t(sum);
        }
      }
      if (zb_ != 0)
        for (int64_t i = 0; i < m; ++i) rows[am * m + i] = wrap(-int64_t(zb_) * rows[am * m + i]);
    }
    const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
    const int64_t blocks = (m + kVnniRows - 1) / kVnniRows;
    parallel_for(threads_for(r.threads, macs), mm_.count * blocks, [&](int64_t t) {
      const int64_t mat = t / blocks, i0 = t % blocks * kVnniRows;
      const auto [ia, ib] = mm_(mat);
      QGemmVnniArgs g;
      g.signed_x = in_place_;
      g.x = in_place_ ? reinterpret_cast<const uint8_t*>(a + (ia * m + i0) * k)
                      : au + (ia * m + i0) * kp;
      g.n = std::min(kVnniRows, m - i0), g.kp = kp, g.m = n;
      g.w = packed + ib * np * kp;
      g.bias = bias + ib * np, g.row_bias = zb_ != 0 ? rows + ia * m + i0 : nullptr;
      g.mult = vmult_.data(), g.shift = vshift_.data();
      if (float_rq_) g.fr = &fr;
      g.zp_out = zy_, g.lo = -128, g.hi = 127;
      g.y = y + mat * m * n + i0 * n, g.ldy = n;
      avx512::qgemm_vnni(g);
    });
  }
#endif
#if defined(EP_HAVE_AVX2)
  static constexpr int64_t kAvx2Rows = 48;  // rows per task: whole strips of the tiles' 6
  void run_avx2(const int8_t* a, const int8_t* b, int8_t* y, const RunCtx& r) const {
    const int64_t m = m_, k = k_, n = n_, np = np_, psize = packed_gemm_s8_size(n, k, 16, 2);
    int32_t* bias = static_cast<int32_t*>(r.scratch);                // [bmats, np]
    int8_t* packed = reinterpret_cast<int8_t*>(bias + bmats_ * np);  // [bmats, psize]
    int8_t* at = packed + bmats_ * psize;                            // [amats, m, k] (adj_x)
    for (int64_t bm = 0; bm < bmats_; ++bm) {  // W[j, kk] = B[kk, j]; adj_y: B is W already
      const int8_t* src = b + bm * k * n;
      int32_t* bb = bias + bm * np;  // sum (a - za) b = sum a b - za * sum b (zb is 0)
      if (!adj_y_) {
        avx2::pack_kn_s8(src, n, k, n, packed + bm * psize, bb);  // bb: the column sums
      } else {
        pack_gemm_s8(src, n, k, 16, 2, packed + bm * psize);
        for (int64_t j = 0; j < n; ++j) {
          int32_t sum = 0;
          for (int64_t kk = 0; kk < k; ++kk) sum += src[j * k + kk];
          bb[j] = sum;
        }
      }
      for (int64_t j = 0; j < n; ++j) bb[j] = wrap(-int64_t(za_) * bb[j]);
      std::fill(bb + n, bb + np, 0);
    }
    if (adj_x_)
      for (int64_t am = 0; am < amats_; ++am)
        for (int64_t kk = 0; kk < k; ++kk)
          for (int64_t i = 0; i < m; ++i) at[(am * m + i) * k + kk] = a[(am * k + kk) * m + i];
    const int8_t* rows = adj_x_ ? at : a;
    const FloatRequant fr{fscale_.data(), fpos_.data(), fneg_.data()};
    const int64_t blocks = (m + kAvx2Rows - 1) / kAvx2Rows;
    parallel_for(threads_for(r.threads, macs), mm_.count * blocks, [&](int64_t t) {
      const int64_t mat = t / blocks, i0 = t % blocks * kAvx2Rows;
      const auto [ia, ib] = mm_(mat);
      QGemmAvx2Args g;
      g.x = rows + (ia * m + i0) * k, g.ldx = k, g.n = std::min(kAvx2Rows, m - i0), g.k = k;
      g.m = n, g.wp = packed + ib * psize;
      g.bias = bias + ib * np, g.mult = vmult_.data(), g.shift = vshift_.data();
      if (float_rq_) g.fr = &fr;
      g.zp_out = zy_, g.lo = -128, g.hi = 127;
      g.y = y + mat * m * n + i0 * n, g.ldy = n;
      avx2::qgemm_rows(g);
    });
  }
#endif
  bool adj_x_ = false, adj_y_ = false, vnni_ = false, in_place_ = false, float_rq_ = false;
  bool avx2_ = false;
  int64_t m_ = 0, k_ = 0, n_ = 0, amats_ = 1, bmats_ = 1, kp_ = 0, np_ = 0;
  int32_t za_ = 0, zb_ = 0, zy_ = 0, mult_ = 0;
  int shift_ = 0;
  std::vector<int32_t> vmult_, vshift_;
  std::vector<float> fscale_, fpos_, fneg_;
  MatmulGeometry mm_;
};

// ------------------------------------------------------------------------ MEAN
class QMean : public Op {
 public:
  QMean(const QCtx& c, const OpOptions& o) : isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    const Tensor& ax = c.constant(1);
    if (ax.type != DType::i32) c.bad("axes must be int32");
    const int r = int(x.shape.size());
    red_.assign(size_t(r), false);
    for (int64_t i = 0; i < ax.elems; ++i) {
      const int64_t a = ax.as<int32_t>()[i];
      if (a < -r || a >= r) c.bad("axis " + std::to_string(a) + " is out of range");
      red_[size_t(a < 0 ? a + r : a)] = true;
    }
    count_ = 1;
    int64_t outs = 1;
    for (int i = 0; i < r; ++i) (red_[size_t(i)] ? count_ : outs) *= x.shape[i];
    if (y.elems != outs) c.bad("the output size is not the input's without the reduced axes");
    if (count_ < 1) c.bad("mean over an empty axis");
    shape_ = x.shape;
    zin_ = zp(x), zout_ = zp(y);
    int32_t mult;
    int shift;
    multiplier(c, double(x.scale[0]) / double(y.scale[0]), &mult, &shift);
    // TFLite divides the multiplier by the element count in fixed point
    int s = 63 - __builtin_clzll(uint64_t(count_));
    s = std::min(s, 32);
    s = std::min(s, 31 + shift);
    mult_ = int32_t((int64_t(mult) << s) / count_);
    shift_ = shift - s;
    kind = "MEAN";
    label = kind + " int8 " + dims(x.shape);
    macs = double(x.elems);
  }
  int64_t scratch_bytes() const override {  // int64 sums, then sum_blocks' int32 row
    int64_t outs = 1;
    for (size_t i = 0; i < shape_.size(); ++i)
      if (!red_[i]) outs *= shape_[i];
    return outs * 8 + outs * 4;
  }
  void run(const RunCtx& rc) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(rc.ptr[in_]);
    int8_t* y = reinterpret_cast<int8_t*>(rc.ptr[out_]);
    int64_t* sum = static_cast<int64_t*>(rc.scratch);
    const int r = int(shape_.size());
    std::vector<int64_t> ostride(size_t(r), 0);
    int64_t s = 1, total = 1;
    for (int i = r - 1; i >= 0; --i) {
      if (!red_[size_t(i)]) ostride[size_t(i)] = s, s *= shape_[size_t(i)];
      total *= shape_[size_t(i)];
    }
    std::fill(sum, sum + s, 0);
    if (sum_blocks(x, sum)) return finish(sum, s, y);
    std::vector<int64_t> idx(size_t(r), 0);
    int64_t o = 0;
    for (int64_t e = 0; e < total; ++e) {
      sum[o] += x[e];
      for (int i = r - 1; i >= 0; --i) {
        o += ostride[size_t(i)];
        if (++idx[size_t(i)] < shape_[size_t(i)]) break;
        o -= ostride[size_t(i)] * shape_[size_t(i)];
        idx[size_t(i)] = 0;
      }
    }
    finish(sum, s, y);
  }
  int in_ = 0, out_ = 0;

 private:
  void finish(const int64_t* sum, int64_t s, int8_t* y) const {
    for (int64_t i = 0; i < s; ++i) {
      const int32_t v = mbqm(wrap(sum[i] - int64_t(zin_) * count_), mult_, shift_) + zout_;
      y[i] = int8_t(std::min(127, std::max(-128, v)));
    }
  }
  // The common layout, reduced axes in one run ([outer, reduced..., inner], e.g. a global pool
  // over H and W of NHWC): whole inner rows are added, in int32 (at most 2^24 terms of |x| <= 128
  // each), a loop the compiler vectorises, instead of the per-element index walk. False when the
  // axes are not one run.
  bool sum_blocks(const int8_t* x, int64_t* sum) const {
    const int r = int(shape_.size());
    int a = 0;
    while (a < r && !red_[size_t(a)]) ++a;
    int b = a;
    while (b < r && red_[size_t(b)]) ++b;
    for (int i = b; i < r; ++i)
      if (red_[size_t(i)]) return false;
    int64_t outer = 1, mid = 1, inner = 1;
    for (int i = 0; i < r; ++i) (i < a ? outer : i < b ? mid : inner) *= shape_[size_t(i)];
    if (mid >= (int64_t(1) << 24)) return false;
    int32_t* ap = reinterpret_cast<int32_t*>(sum + outer * inner);  // scratch past the sums
    for (int64_t o = 0; o < outer; ++o) {
#if defined(EP_HAVE_AVX512)
      if (isa_ == Isa::avx512) {
        avx512::column_sums_s8(x + o * mid * inner, mid, inner, ap);
        for (int64_t i = 0; i < inner; ++i) sum[o * inner + i] = ap[i];
        continue;
      }
#endif
      std::fill(ap, ap + inner, 0);
      for (int64_t m = 0; m < mid; ++m) {
        const int8_t* xp = x + (o * mid + m) * inner;
        for (int64_t i = 0; i < inner; ++i) ap[i] += xp[i];
      }
      for (int64_t i = 0; i < inner; ++i) sum[o * inner + i] = ap[i];
    }
    return true;
  }
  Isa isa_;
  std::vector<int64_t> shape_;
  std::vector<bool> red_;
  int64_t count_ = 1;
  int32_t zin_ = 0, zout_ = 0, mult_ = 0;
  int shift_ = 0;
};

// ------------------------------------------------------------------------ pools
class QPool : public Op {
 public:
  QPool(const QCtx& c, bool max, const OpOptions& o) : max_(max), isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    c.rank(x, 4);
    if (x.scale[0] != y.scale[0] || zp(x) != zp(y))
      c.unsupported("an int8 pool whose input and output quantization differ");
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], ch_ = x.shape[3];
    fh_ = c.d.filter_h, fw_ = c.d.filter_w, sh_ = c.d.stride_h, sw_ = c.d.stride_w;
    oh_ = out_dim(c, h_, fh_, sh_, 1, &pt_, -1);
    ow_ = out_dim(c, w_, fw_, sw_, 1, &pl_, -1);
    c.shape_is(y, {n_, oh_, ow_, ch_});
    act_range(c.d.act, y, &lo_, &hi_);
    kind = max ? "MAX_POOL_2D" : "AVERAGE_POOL_2D";
    label = kind + " int8 " + std::to_string(fh_) + "x" + std::to_string(fw_) + "/" +
            std::to_string(sh_) + " " + dims(y.shape);
    macs = double(y.elems) * fh_ * fw_;
  }
  // Output rows on threads; per pixel the channel loops vectorise: a max of int8 lanes, or int32
  // sums whose mean TFLite rounds half away from zero in integers. That rounding is one float
  // division: with count <= 65536 taps, n = sum +- count / 2 is exact in float and n / count is
  // within 2^-17 of the true quotient (|n / count| <= 128.5), nearer than any non-integer
  // quotient comes to an integer (1 / count), so truncating it gives the integer division's result.
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    parallel_for(threads_for(r.threads, 4.0 * macs), n_ * oh_, [&](int64_t row) {
#if defined(EP_HAVE_AVX512)
      if (max_ && isa_ == Isa::avx512) {  // 64 channels a vector (the loop below gets SSE2)
        const int64_t b = row / oh_, oy = row % oh_;
        return avx512::max_pool_row_s8(x + b * h_ * w_ * ch_, h_, w_, ch_, fh_, fw_, sh_, sw_, pt_,
                                       pl_, oy, ow_, int8_t(lo_), int8_t(hi_),
                                       y + (b * oh_ + oy) * ow_ * ch_);
      }
#endif
      // the fields as locals of this call: a byte store may alias `this` or the lambda's
      // captures, and the compiler would reload the channel count after every one (no loop
      // below vectorised)
      const int64_t C = ch_, H = h_, W = w_, OH = oh_, OW = ow_, FH = fh_, FW = fw_;
      const int64_t SH = sh_, SW = sw_, PT = pt_, PL = pl_;
      const int32_t lo = lo_, hi = hi_;
      const int8_t* const xin = x;
      int8_t* const yout = y;
      const int64_t b = row / OH, oy = row % OH;
      std::vector<int32_t> acc(static_cast<size_t>(C));
      std::vector<uint8_t> top(static_cast<size_t>(C));
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t y0 = oy * SH - PT, x0 = ox * SW - PL;
        const int64_t ky0 = std::max<int64_t>(0, -y0), ky1 = std::min(FH, H - y0);
        const int64_t kx0 = std::max<int64_t>(0, -x0), kx1 = std::min(FW, W - x0);
        const int64_t count = std::max<int64_t>(0, ky1 - ky0) * std::max<int64_t>(0, kx1 - kx0);
        int8_t* __restrict__ yp = yout + ((b * OH + oy) * OW + ox) * C;
        const auto tap = [&](int64_t ky, int64_t kx) {
          return xin + ((b * H + y0 + ky) * W + x0 + kx) * C;
        };
        if (max_) {
          // as uint8 (x ^ 0x80 keeps the order): this file is built for the baseline ISA, whose
          // SSE2 has an unsigned byte max but no signed one
          uint8_t* __restrict__ m = top.data();
          std::fill(m, m + C, uint8_t(0));
          for (int64_t ky = ky0; ky < ky1; ++ky)
            for (int64_t kx = kx0; kx < kx1; ++kx) {
              const uint8_t* __restrict__ xp = reinterpret_cast<const uint8_t*>(tap(ky, kx));
              for (int64_t ch = 0; ch < C; ++ch) m[ch] = std::max(m[ch], uint8_t(xp[ch] ^ 0x80));
            }
          for (int64_t ch = 0; ch < C; ++ch)
            yp[ch] = int8_t(std::min<int32_t>(hi, std::max<int32_t>(lo, int32_t(m[ch]) - 128)));
          continue;
        }
        int32_t* __restrict__ a = acc.data();
        std::fill(a, a + C, 0);
        for (int64_t ky = ky0; ky < ky1; ++ky)
          for (int64_t kx = kx0; kx < kx1; ++kx) {
            const int8_t* __restrict__ xp = tap(ky, kx);
            for (int64_t ch = 0; ch < C; ++ch) a[ch] += xp[ch];
          }
        if (count == 0) {
          for (int64_t ch = 0; ch < C; ++ch) yp[ch] = int8_t(std::min(hi, std::max(lo, 0)));
        } else if (count <= 65536) {
          const float d = float(count);
          const int32_t half = int32_t(count / 2);
          for (int64_t ch = 0; ch < C; ++ch) {
            const int32_t n = a[ch] > 0 ? a[ch] + half : a[ch] - half;
            const int32_t v = int32_t(float(n) / d);
            yp[ch] = int8_t(std::min(hi, std::max(lo, v)));
          }
        } else {
          for (int64_t ch = 0; ch < C; ++ch) {
            const int64_t v = a[ch] > 0 ? (int64_t(a[ch]) + count / 2) / count
                                        : (int64_t(a[ch]) - count / 2) / count;
            yp[ch] = int8_t(std::min<int64_t>(hi, std::max<int64_t>(lo, v)));
          }
        }
      }
    });
  }
  int in_ = 0, out_ = 0;

 private:
  bool max_;
  Isa isa_;
  int64_t n_, h_, w_, ch_, fh_, fw_, sh_, sw_, oh_, ow_, pt_, pl_;
  int32_t lo_, hi_;
};

// ------------------------------------------------------------------------ QUANTIZE / DEQUANTIZE
// TFLite computes scale * (x - zero point) in double and rounds once to float. x - zp is an
// integer of at most 9 bits, so that double product is exact and its rounding to float is the
// float product's: the same bits from float arithmetic, which vectorises.
void dequantize(const int8_t* x, int64_t n, float scale, int32_t zin, float* y, Isa isa) {
#if defined(EP_HAVE_AVX512)
  if (isa == Isa::avx512) return avx512::dequantize_s8(x, n, scale, zin, y);
#endif
#if defined(EP_HAVE_AVX2)
  if (isa == Isa::avx2) return avx2::dequantize_s8(x, n, scale, zin, y);
#endif
  (void)isa;
  for (int64_t i = 0; i < n; ++i) y[i] = scale * float(int32_t(x[i]) - zin);
}

class QQuantize : public Op {
 public:
  QQuantize(const QCtx& c, const OpOptions& o) : isa_(o.isa) {
    const Tensor &x = c.in(0), &y = c.act(c.out());
    if (x.elems != y.elems) c.bad("input and output sizes differ");
    elems_ = y.elems;
    zout_ = zp(y);
    scale_ = y.scale[0];
    if (c.d.float_table) {  // DEQUANTIZE -> F -> QUANTIZE fused by the planner: a table
      build_float_table(c, c.act(x), o);
    } else if (x.type == DType::i8) {  // requantize int8 -> int8
      c.act(x);
      zin_ = zp(x);
      by_table_ = true;
      int32_t mult;
      int shift;
      multiplier(c, double(x.scale[0]) / double(y.scale[0]), &mult, &shift);
      for (int v = -128; v < 128; ++v)  // a function of one byte: a table
        lut_[uint8_t(int8_t(v))] =
            int8_t(std::min(127, std::max(-128, mbqm(v - zin_, mult, shift) + zout_)));
    } else {
      c.typed(x, DType::f32);
    }
    kind = "QUANTIZE";
    label = kind +
            (c.d.float_table
                 ? " int8->" + std::string(op_name(int32_t(c.d.table_op))) + "->int8 (table) "
             : by_table_ ? " int8->int8 "
                         : " float->int8 ") +
            dims(y.shape);
    macs = double(elems_);
  }
  void run(const RunCtx& r) const override {
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    if (by_table_) {  // int8 input: requantization or a fused float chain, a table either way
      const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
      return apply_lut(lut_, x, elems_, y, isa_);
    }
    // A model's float input (224x224 RGB: 150k values, about 20 us) is split over the threads;
    // each element is quantized alone, so the split changes no bit. A division and a rounding
    // per element weigh about 40 int8 GEMM multiply-adds (threads_for's unit).
    const int64_t chunk = int64_t(1) << 14, tasks = (elems_ + chunk - 1) / chunk;
    parallel_for(threads_for(r.threads, double(elems_) * 40.0), tasks, [&](int64_t t) {
      const int64_t e0 = t * chunk;
      quantize(r.ptr[in_] + e0, std::min(chunk, elems_ - e0), scale_, zout_, y + e0, isa_);
    });
  }
  // The fused chain's table: the 256 bytes through this path's own DEQUANTIZE, float op and
  // QUANTIZE loops (each value computed alone in all three), so the bits are the unfused chain's
  void build_float_table(const QCtx& c, const Tensor& x, const OpOptions& o) {
    const ActKind k = activation_kind(c.d.table_op, c.d.approximate);
    const bool leaky = c.d.table_op == OpCode::leaky_relu;
    if (k == ActKind::none && !leaky) c.bad("no float table for this operator");
    int8_t bytes[256];
    float f[256], g[256];
    for (int i = 0; i < 256; ++i) bytes[i] = int8_t(i);
    dequantize(bytes, 256, x.scale[0], zp(x), f, isa_);
    if (leaky) {  // the LEAKY_RELU operator's own loop (ops.cpp)
      const float inf = std::numeric_limits<float>::infinity();
      vec_ops(o.isa).binary(BinOp::prelu, f, 1, &c.d.alpha, 0, g, 256, -inf, inf);
    } else {
      vec_ops(o.isa).activation(k, f, g, 256);
    }
    quantize(g, 256, scale_, zout_, lut_, isa_);
    by_table_ = true;
  }
  static void quantize(const float* x, int64_t n, float scale, int32_t zout, int8_t* y, Isa isa) {
#if defined(EP_HAVE_AVX512)
    if (isa == Isa::avx512) return avx512::quantize_f32(x, n, scale, zout, y);
#endif
#if defined(EP_HAVE_AVX2)
    if (isa == Isa::avx2) return avx2::quantize_f32(x, n, scale, zout, y);
#endif
    (void)isa;
    quantize_row(x, n, scale, zout, y);
  }
  // TFLite's AffineQuantize: x / scale in float, rounded half away from zero; a NaN gives the
  // zero point and a huge input saturates instead of overflowing the cast. The rounding is
  // spelled with a truncating cast (exact below 1e9, where floats of 2^23 and more are integers
  // already) rather than std::round, a libm call that keeps the loop scalar.
  static void quantize_row(const float* x, int64_t n, float scale, int32_t zout, int8_t* y) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i] / scale;
      const float c = v == v ? std::min(1e9f, std::max(-1e9f, v)) : 0.0f;
      const int32_t t = int32_t(c);
      const float frac = c - float(t);
      const int32_t q = t + (frac >= 0.5f ? 1 : 0) - (frac <= -0.5f ? 1 : 0);
      y[i] = int8_t(std::min(127, std::max(-128, q + zout)));
    }
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t elems_;
  Isa isa_;
  int32_t zin_ = 0, zout_ = 0;
  int8_t lut_[256] = {};
  float scale_ = 1.0f;
  bool by_table_ = false;  // run() maps bytes through lut_
};

class QDequantize : public Op {
 public:
  QDequantize(const QCtx& c, const OpOptions& o) : isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &y = c.typed(c.out(), DType::f32);
    if (x.elems != y.elems) c.bad("input and output sizes differ");
    elems_ = y.elems;
    zin_ = zp(x);
    scale_ = x.scale[0];
    kind = "DEQUANTIZE";
    label = kind + " " + dims(y.shape);
    macs = double(elems_);
  }
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    dequantize(x, elems_, scale_, zin_, r.ptr[out_], isa_);
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t elems_;
  Isa isa_;
  int32_t zin_;
  float scale_;
};

// The planner's fused int8 softmax (OpDesc::softmax_rows): int8 scores -> DEQUANTIZE -> [MUL by
// a scalar] -> [ADD a bias, broadcast] -> SOFTMAX -> QUANTIZE, blocks of rows in buffers that
// stay in L1. Each step is the unfused operator's own loop (the DEQUANTIZE and QUANTIZE
// functions, the float tier's binary and softmax_row) on the same rows, so the bits are the
// unfused chain's; on AVX-512 one kernel (softmax_rows_s8) does the same float operations a row
// at a time in registers. Rows go to threads whole.
class QSoftmaxRows : public Op {
 public:
  QSoftmaxRows(const QCtx& c, const OpOptions& o) : vec_(vec_ops(o.isa)), isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    c.shape_is(y, x.shape);
    inner_ = x.shape.back();
    rows_ = inner_ ? x.elems / inner_ : 0;
    zin_ = zp(x), zout_ = zp(y), sin_ = x.scale[0], sout_ = y.scale[0];
    scaled_ = c.d.softmax_scaled, scale_ = c.d.softmax_scale, beta_ = c.d.beta;
    shape_ = x.shape;
    if (c.d.inputs.size() > 1) {  // bias strides over the input's dimensions, 0 where broadcast
      const Tensor& b = c.typed(c.in(1), DType::f32);
      if (b.shape.size() > x.shape.size()) c.bad("the bias has more dimensions than the scores");
      const size_t r = x.shape.size(), off = r - b.shape.size();
      bstride_.assign(r, 0);
      int64_t st = 1;
      for (size_t i = r; i-- > off;) {
        const int64_t d = b.shape[i - off];
        if (d != 1 && d != x.shape[i]) c.bad("the bias does not broadcast to the scores");
        bstride_[i] = d == 1 ? 0 : st;
        st *= d;
      }
      has_bias_ = true;
    }
    kind = "SOFTMAX";
    label = kind + " int8->int8 (" + (scaled_ ? "scaled, " : "") + (has_bias_ ? "bias, " : "") +
            "rows) " + dims(x.shape);
    macs = 24.0 * double(x.elems);
  }
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    const float* bias = has_bias_ ? r.ptr[ib_] : nullptr;
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    const int64_t n = inner_, rank = int64_t(bstride_.size());
    const int64_t inner_step = has_bias_ ? bstride_.back() : 0;
    // blocks of rows of about 4096 values: the two buffers stay in L1, and the whole-block steps
    // (DEQUANTIZE, MUL, QUANTIZE) run long loops
    const int64_t per = std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1));
    const int64_t blocks = (rows_ + per - 1) / per;
    const auto bias_offset = [&](int64_t i) {  // row i's offset into the bias
      int64_t off = 0, rest = i;
      for (int64_t d = rank - 2; d >= 0; --d) {
        const int64_t dim = shape_[size_t(d)];
        off += (rest % dim) * bstride_[size_t(d)];
        rest /= dim;
      }
      return off;
    };
    parallel_for(threads_for(r.threads, macs), blocks, [&](int64_t blk) {
      const int64_t i0 = blk * per, cnt = std::min(per, rows_ - i0), len = cnt * n;
#if defined(EP_HAVE_AVX512)
      if (isa_ == Isa::avx512) {  // softmax_rows_s8: four rows at a time, a buffer of four rows
        float* buf =
            static_cast<float*>(thread_scratch(3, size_t(4 * n + 1 + per * 2) * sizeof(float)));
        int64_t* offs = reinterpret_cast<int64_t*>(buf + 4 * n + (n & 1));
        avx512::QSoftmaxRowsArgs a;
        a.x = x + i0 * n, a.y = y + i0 * n, a.n = n, a.rows = cnt;
        a.s_in = sin_, a.z_in = zin_, a.scaled = scaled_, a.scale = scale_, a.beta = beta_;
        a.s_out = sout_, a.z_out = zout_, a.buf = buf;
        if (has_bias_) {
          for (int64_t i = 0; i < cnt; ++i) offs[i] = bias_offset(i0 + i);
          a.bias = bias, a.bias_off = offs, a.bias_step = inner_step;
        }
        return avx512::softmax_rows_s8(a);
      }
#endif
      float* buf = static_cast<float*>(thread_scratch(3, size_t(2 * per * n) * sizeof(float)));
      float* p = buf + per * n;
#if defined(EP_HAVE_AVX2)
      if (isa_ == Isa::avx2 && inner_step <= 1) {  // the three steps in one pass per row
        for (int64_t i = i0; i < i0 + cnt; ++i) {
          float* row = buf + (i - i0) * n;
          avx2::softmax_input_row(x + i * n, n, sin_, zin_, scaled_ ? &scale_ : nullptr,
                                  has_bias_ ? bias + bias_offset(i) : nullptr, inner_step, row);
          vec_.softmax_row(row, p + (i - i0) * n, n, beta_);
        }
        return QQuantize::quantize(p, len, sout_, zout_, y + i0 * n, isa_);
      }
#endif
      dequantize(x + i0 * n, len, sin_, zin_, buf, isa_);
      if (scaled_) vec_.binary(BinOp::mul, buf, 1, &scale_, 0, buf, len, -kInf, kInf);
      for (int64_t i = i0; i < i0 + cnt; ++i) {
        float* row = buf + (i - i0) * n;
        if (has_bias_)
          vec_.binary(BinOp::add, row, 1, bias + bias_offset(i), inner_step, row, n, -kInf, kInf);
        vec_.softmax_row(row, p + (i - i0) * n, n, beta_);
      }
      QQuantize::quantize(p, len, sout_, zout_, y + i0 * n, isa_);
    });
  }
  int in_ = 0, ib_ = 0, out_ = 0;

 private:
  static constexpr float kInf = std::numeric_limits<float>::infinity();
  const VecOps& vec_;
  Isa isa_;
  int64_t inner_ = 0, rows_ = 0;
  int32_t zin_ = 0, zout_ = 0;
  float sin_ = 1, sout_ = 1, scale_ = 1, beta_ = 1;
  bool scaled_ = false, has_bias_ = false;
  std::vector<int64_t> shape_, bstride_;
};

// ------------------------------------------------------------------------ lookup tables
class QTable : public Op {
 public:
  QTable(const QCtx& c, const OpOptions& o) : isa_(o.isa) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    if (x.elems != y.elems) c.bad("input and output sizes differ");
    elems_ = x.elems;
    const float inf = std::numeric_limits<float>::infinity();
    switch (c.d.code) {
      case OpCode::hard_swish:
        hard_swish_table(c, x, y);
        break;
      case OpCode::logistic:
        if (c.d.silu) {
          silu_table(c, x, c.act(c.m.tensors[size_t(c.d.silu_gate)]), y);
          break;
        }
        logistic_table(c, x, y);
        break;
      case OpCode::relu:
        relu_table(c, x, y, 0.0f, inf);
        break;
      case OpCode::relu6:
        relu_table(c, x, y, 0.0f, 6.0f);
        break;
      case OpCode::leaky_relu:
        leaky_relu_table(c, x, y);
        break;
      default:  // RELU_N1_TO_1
        relu_table(c, x, y, -1.0f, 1.0f);
        break;
    }
    kind = op_name(int32_t(c.d.code));
    label = kind + (c.d.silu ? " x MUL (SiLU) int8 " : " int8 ") + dims(x.shape);
    macs = double(elems_);
  }
  void run(const RunCtx& r) const override {
    const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[in_]);
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    apply_lut(lut_, x, elems_, y, isa_);
  }
  int in_ = 0, out_ = 0;

 private:
  // TFLite's reference HardSwish for int8 (16-bit fixed point), evaluated for every input
  void hard_swish_table(const QCtx& c, const Tensor& x, const Tensor& y) {
    const float hires = (1.0f / 128.0f) * x.scale[0];
    int32_t om32, rm32;
    int oexp, rexp;
    multiplier(c, double(hires / y.scale[0]), &om32, &oexp);
    multiplier(c, double(hires / (3.0f / 32768.0f)), &rm32, &rexp);
    if (rexp > 15) c.bad("HARD_SWISH input scale too large for TFLite's 16-bit arithmetic");
    if (oexp > 0) c.unsupported("HARD_SWISH whose output scale is below its input scale / 128");
    const int16_t om = down_scale_to_int16(om32), rm = down_scale_to_int16(rm32);
    for (int v = -128; v < 128; ++v) {
      const int16_t in = int16_t(v - zp(x));
      const int16_t hi_in = int16_t(in * (1 << 7));
      const int16_t pre_out = rounding_doubling_high_mul16(hi_in, om);
      int16_t relu = hi_in;
      if (rexp > 0) relu = saturating_left_shift16(relu, rexp - 1);
      relu = rounding_doubling_high_mul16(relu, rm);
      if (rexp > 0) relu = saturating_left_shift16(relu, 1);
      if (rexp < 0) relu = int16_t(rounding_divide_by_pot(relu, -rexp));
      relu = int16_t((int32_t(relu) + (1 << 15)) >> 1);
      const int16_t pre = doubling_high_mul16(relu, pre_out);
      int32_t o = rounding_divide_by_pot(pre, -oexp) + zp(y);
      lut_[uint8_t(int8_t(v))] = int8_t(std::min(127, std::max(-128, o)));
    }
  }
  // TFLite's LUTPopulate with the float sigmoid. The sum is clamped in float before the
  // conversion: a hostile output scale makes it larger than any int32 (undefined to convert);
  // inside the int8 range the result is TFLite's.
  // MUL(x, LOGISTIC(x)) for every input byte: the LOGISTIC table into the gate's quantization,
  // then TFLite's int8 MUL of x and that gate (one multiplier float(s_x * s_g) / s_y) and the
  // output's clamp: the pair's bits, one lookup
  void silu_table(const QCtx& c, const Tensor& x, const Tensor& g, const Tensor& y) {
    logistic_table(c, x, g);
    int32_t om;
    int os;
    multiplier(c, double(x.scale[0] * g.scale[0] / y.scale[0]), &om, &os);
    const int32_t zx = zp(x), zg = zp(g), zy = zp(y);
    int8_t out[256];
    for (int v = -128; v < 128; ++v) {
      const int32_t t = lut_[uint8_t(int8_t(v))];
      const int32_t q = zy + multiply_by_quantized_multiplier((v - zx) * (t - zg), om, os);
      out[uint8_t(int8_t(v))] = int8_t(std::min(127, std::max(-128, q)));
    }
    std::copy(out, out + 256, lut_);
  }
  void logistic_table(const QCtx&, const Tensor& x, const Tensor& y) {
    const float inv = 1.0f / y.scale[0];
    for (int v = -128; v < 128; ++v) {
      const float d = x.scale[0] * float(v - zp(x));
      const float t = 1.0f / (1.0f + std::exp(-d));
      const float q = std::round(t * inv) + float(zp(y));
      const float o = q > 127.0f ? 127.0f : q >= -128.0f ? q : -128.0f;  // NaN -> -128
      lut_[uint8_t(int8_t(v))] = int8_t(int32_t(o));
    }
  }
  // TFLite's int8 LeakyRelu: x - zp_in rescaled to the output by s_in / s_out at or above the zero
  // point and by s_in * alpha / s_out below it (both ratios in float, as its Prepare computes
  // them), plus zp_out, clamped
  void leaky_relu_table(const QCtx& c, const Tensor& x, const Tensor& y) {
    if (!(c.d.alpha >= 0.0f)) c.unsupported("int8 LEAKY_RELU with a negative alpha");
    int32_t im, am;
    int is, as;
    multiplier(c, double(x.scale[0] / y.scale[0]), &im, &is);
    multiplier(c, double(x.scale[0] * c.d.alpha / y.scale[0]), &am, &as);
    for (int v = -128; v < 128; ++v) {
      const int32_t in = v - zp(x);
      const int32_t o = zp(y) + (in >= 0 ? mbqm(in, im, is) : mbqm(in, am, as));
      lut_[uint8_t(int8_t(v))] = int8_t(std::min(127, std::max(-128, o)));
    }
  }
  // TFLite's QuantizedReluX: rescale to the output (float ratio of the scales), then clamp to
  // the bounds rounded onto the output's grid
  void relu_table(const QCtx& c, const Tensor& x, const Tensor& y, float lo, float hi) {
    int32_t mult;
    int shift;
    multiplier(c, double(x.scale[0] / y.scale[0]), &mult, &shift);
    const int32_t qlo = std::max(-128, quantized_bound(lo, y.scale[0], zp(y)));
    const int32_t qhi =
        std::isinf(hi) ? 127 : std::min(127, quantized_bound(hi, y.scale[0], zp(y)));
    for (int v = -128; v < 128; ++v) {
      const int32_t o = zp(y) + mbqm(v - zp(x), mult, shift);
      lut_[uint8_t(int8_t(v))] = int8_t(std::min(qhi, std::max(qlo, o)));
    }
  }
  Isa isa_;
  int64_t elems_;
  int8_t lut_[256];
};

// The byte-moving operators copy int8 values unchanged, so their input and output must share one
// quantization (a converter that wanted a rescale writes a QUANTIZE).
void same_quantization(const QCtx& c, const Tensor& x, const Tensor& y) {
  if (x.scale[0] != y.scale[0] || zp(x) != zp(y))
    c.unsupported("input and output quantization differ");
}

// ------------------------------------------------------------------------ layout ops
// RESHAPE / SQUEEZE / EXPAND_DIMS of int8 data: the bytes stay, the quantization must too.
// The fp32 and int8 tiers keep their own operator classes on purpose (as XNNPACK keeps an
// operator per datatype): the int8 constructors also check that input and output share one
// quantization, and run() moves 1-byte elements; shape rules and copy loops are shared through
// movement.h and op_context.h.
class QCopy : public Op {
 public:
  QCopy(const QCtx& c, const char* name) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    if (x.elems != y.elems) c.bad("input and output sizes differ");
    same_quantization(c, x, y);
    elems_ = x.elems;
    kind = name;
    label = kind + " int8 " + dims(x.shape) + "->" + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    if (r.ptr[in_] != r.ptr[out_]) std::memmove(r.ptr[out_], r.ptr[in_], size_t(elems_));
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t elems_;
};

class QTranspose : public Op {
 public:
  QTranspose(const QCtx& c) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    same_quantization(c, x, y);
    shape_ = transpose_geometry(c, x, &stride_);
    c.shape_is(y, shape_);
    elems_ = y.elems;
    kind = "TRANSPOSE";
    label = kind + " int8 " + dims(x.shape);
  }
  void run(const RunCtx& rc) const override {
    transpose_copy(reinterpret_cast<const int8_t*>(rc.ptr[in_]),
                   reinterpret_cast<int8_t*>(rc.ptr[out_]), shape_, stride_, elems_);
  }
  int in_ = 0, out_ = 0;

 private:
  std::vector<int64_t> shape_, stride_;
  int64_t elems_;
};

// STRIDED_SLICE: a byte gather through the geometry the fp32 op uses (movement.h).
class QStridedSlice : public Op {
 public:
  QStridedSlice(const QCtx& c) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    same_quantization(c, x, y);
    c.shape_is(y, g_.init(c, x));
    elems_ = y.elems;
    kind = "STRIDED_SLICE";
    label = kind + " int8 " + dims(x.shape) + "->" + dims(y.shape);
  }
  void run(const RunCtx& rc) const override {
    g_.copy(reinterpret_cast<const int8_t*>(rc.ptr[in_]), reinterpret_cast<int8_t*>(rc.ptr[out_]),
            elems_);
  }
  int in_ = 0, out_ = 0;

 private:
  SliceGeometry g_;
  int64_t elems_ = 0;
};

// PAD / PADV2: the pad value is the output zero point (PADV2: its int8 constant).
class QPad : public Op {
 public:
  QPad(const QCtx& c, bool v2) {
    const Tensor &x = c.act(c.in(0)), &y = c.act(c.out());
    same_quantization(c, x, y);
    yshape_ = pad_geometry(c, x, &before_);
    c.shape_is(y, yshape_);
    value_ = int8_t(zp(y));
    if (v2 && c.has_in(2)) {
      // TFLite requires a quantized pad value to share the output's zero point; one without
      // quantization parameters is taken as already on the output's scale
      const Tensor& v = c.typed(c.constant(2), DType::i8);
      if (v.elems != 1) c.bad("the pad value must be a scalar");
      if (v.quantized() && zp(v) != zp(y))
        c.bad("the pad value's zero point differs from the output's");
      value_ = v.as<int8_t>()[0];
    }
    xshape_ = x.shape;
    yelems_ = y.elems;
    kind = v2 ? "PADV2" : "PAD";
    label = kind + " int8 " + dims(x.shape);
  }
  void run(const RunCtx& rc) const override {
    int8_t* y = reinterpret_cast<int8_t*>(rc.ptr[out_]);
    std::memset(y, value_, size_t(yelems_));
    pad_copy(reinterpret_cast<const int8_t*>(rc.ptr[in_]), y, xshape_, yshape_, before_);
  }
  int in_ = 0, out_ = 0;

 private:
  std::vector<int64_t> before_, xshape_, yshape_;
  int64_t yelems_;
  int8_t value_ = 0;
};

// CONCATENATION: inputs quantized as the output are copied; any other input is requantized as
// TFLite's int8 QUANTIZE does (LiteRT itself refuses int8 inputs of differing scales).
class QConcat : public Op {
 public:
  QConcat(const QCtx& c) {
    const Tensor& y = c.act(c.out());
    for (size_t i = 0; i < c.d.inputs.size(); ++i) c.act(c.in(i));
    const ConcatGeometry g = concat_geometry(c, y);
    outer_ = g.outer;
    out_row_ = g.out_row;
    for (size_t i = 0; i < c.d.inputs.size(); ++i) {
      const Tensor& x = c.in(i);
      Part p;
      p.tensor = c.d.inputs[i];
      p.chunk = g.chunk[i];
      p.same = x.scale[0] == y.scale[0] && zp(x) == zp(y);
      p.zin = zp(x);
      multiplier(c, double(x.scale[0]) / double(y.scale[0]), &p.mult, &p.shift);
      parts_.push_back(p);
    }
    zout_ = zp(y);
    kind = "CONCATENATION";
    label = kind + " int8 " + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    int8_t* y = reinterpret_cast<int8_t*>(r.ptr[out_]);
    int64_t off = 0;
    for (const Part& p : parts_) {
      const int8_t* x = reinterpret_cast<const int8_t*>(r.ptr[p.tensor]);
      for (int64_t o = 0; o < outer_; ++o) {
        int8_t* dst = y + o * out_row_ + off;
        const int8_t* src = x + o * p.chunk;
        if (p.same) {
          std::memcpy(dst, src, size_t(p.chunk));
          continue;
        }
        for (int64_t i = 0; i < p.chunk; ++i) {
          const int32_t v = mbqm(src[i] - p.zin, p.mult, p.shift) + zout_;
          dst[i] = int8_t(std::min(127, std::max(-128, v)));
        }
      }
      off += p.chunk;
    }
  }
  int out_ = 0;

 private:
  struct Part {
    int tensor = 0;
    int64_t chunk = 0;
    bool same = true;
    int32_t zin = 0, mult = 0;
    int shift = 0;
  };
  std::vector<Part> parts_;
  int64_t outer_ = 1, out_row_ = 0;
  int32_t zout_ = 0;
};

}  // namespace

bool is_int8_op(const Model& model, const OpDesc& d) {
  if (d.code == OpCode::quantize) return true;
  if (model.tensors[d.outputs[0]].type == DType::i8) return true;
  return !d.inputs.empty() && d.inputs[0] >= 0 && model.tensors[d.inputs[0]].type == DType::i8;
}

// One switch per tier on purpose: each tier accepts its own set of ops and types (make_op in
// ops.cpp for fp32, make_int8_op in ops_int8.cpp for int8), and the executor asks is_int8_op
// which of the two to call.
std::unique_ptr<Op> make_int8_op(const Model& model, const OpDesc& d, const OpOptions& o) {
  QCtx c{{model, d, "operator " + std::to_string(d.index) + " (" + op_name(int32_t(d.code)) + ")"}};
  switch (d.code) {
    case OpCode::conv_2d:
      return wire(std::make_unique<QConv2D>(c, o), d);
    case OpCode::depthwise_conv_2d:
      return wire(std::make_unique<QDepthwise>(c, o), d);
    case OpCode::fully_connected:
      return wire(std::make_unique<QFullyConnected>(c, o), d);
    case OpCode::transpose_conv: {  // the data is input 2 (0: output_shape, 1: weights)
      auto op = std::make_unique<QTransposeConv>(c);
      op->in_ = d.inputs[2];
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::add:
    case OpCode::mul: {
      auto b = std::make_unique<QBinary>(c, o, d.code == OpCode::mul);
      b->ia_ = d.inputs[0];
      b->ib_ = d.inputs[1];
      b->out_ = d.outputs[0];
      return b;
    }
    case OpCode::batch_matmul: {
      auto op = std::make_unique<QBatchMatMul>(c, o);
      op->ia_ = d.inputs[0];
      op->ib_ = d.inputs[1];
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::mean:
      return wire(std::make_unique<QMean>(c, o), d);
    case OpCode::average_pool_2d:
      return wire(std::make_unique<QPool>(c, false, o), d);
    case OpCode::max_pool_2d:
      return wire(std::make_unique<QPool>(c, true, o), d);
    case OpCode::quantize: {
      if (!d.softmax_rows) return wire(std::make_unique<QQuantize>(c, o), d);
      auto op = std::make_unique<QSoftmaxRows>(c, o);
      op->in_ = d.inputs[0];
      op->ib_ = d.inputs.size() > 1 ? d.inputs[1] : 0;
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::dequantize:
      return wire(std::make_unique<QDequantize>(c, o), d);
    case OpCode::hard_swish:
    case OpCode::leaky_relu:
    case OpCode::logistic:
    case OpCode::relu:
    case OpCode::relu6:
    case OpCode::relu_n1_to_1:
      return wire(std::make_unique<QTable>(c, o), d);
    case OpCode::reshape:
      return wire(std::make_unique<QCopy>(c, "RESHAPE"), d);
    case OpCode::squeeze:
      return wire(std::make_unique<QCopy>(c, "SQUEEZE"), d);
    case OpCode::expand_dims:
      return wire(std::make_unique<QCopy>(c, "EXPAND_DIMS"), d);
    case OpCode::transpose:
      return wire(std::make_unique<QTranspose>(c), d);
    case OpCode::strided_slice:
      return wire(std::make_unique<QStridedSlice>(c), d);
    case OpCode::pad:
      return wire(std::make_unique<QPad>(c, false), d);
    case OpCode::padv2:
      return wire(std::make_unique<QPad>(c, true), d);
    case OpCode::concatenation: {
      auto op = std::make_unique<QConcat>(c);
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::gather:  // an int8 embedding table: rows copied as bytes (ops_tensor.cpp)
    case OpCode::resize_nearest_neighbor:  // pixels copied as bytes, the scale kept
    case OpCode::split_v:                  // parts and repeats copied as bytes, the scale kept
    case OpCode::broadcast_to:
    case OpCode::mirror_pad:  // bytes reflected, the scale kept
      return make_tensor_op(model, d, o);
    default:
      throw UnsupportedError(c.where + ": not supported with int8 data");
  }
}

}  // namespace rt
}  // namespace ep
