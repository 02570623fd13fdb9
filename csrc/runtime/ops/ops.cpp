// The operators (ops.h). Convolutions and FULLY_CONNECTED run on the GEMM / SpMM kernels
// through the layer objects (layers.h: packed weights, thread split); everything else runs the
// per-path loops of vec.h. Every constructor validates its shapes against the file before any
// pointer arithmetic can depend on them.
//
// Consumes: a validated Model. Produces: Op objects.
#include "runtime/ops/ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "layers/layers.h"
#include "layers/parallel.h"
#include "runtime/ops/movement.h"
#include "runtime/ops/op_context.h"
#include "runtime/ops/ops_int8.h"
#include "runtime/ops/ops_tensor.h"
#include "runtime/ops/vec.h"

namespace ep {
namespace rt {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The fp32 tier's construction context: the shared checks plus "this tensor is float32".
struct Ctx : OpContext {
  const Tensor& f32(const Tensor& t) const {
    if (t.type != DType::f32)
      throw UnsupportedError(where + ": tensor '" + t.name + "' is " + dtype_name(t.type) +
                             " (this operator runs on float32 tensors here)");
    return t;
  }
};

std::vector<int64_t> int_values(const Ctx& c, size_t i) { return c.int_values(i); }

// dst = src^T for a [rows, cols] matrix, source rows split over `use` threads (already decided:
// the caller's own op splits, or the moves are enough work) in runs of 16 (a move: any split
// gives the same result).
void transpose_rows(const VecOps& vec, const float* src, int64_t rows, int64_t cols, float* dst,
                    int use) {
  const int64_t per = std::max<int64_t>(16, (rows + use - 1) / use + 15) / 16 * 16;
  parallel_for(use, (rows + per - 1) / per, [&](int64_t t) {
    const int64_t r0 = t * per, r1 = std::min(rows, r0 + per);
    vec.transpose(src + r0 * cols, r1 - r0, cols, dst + r0, rows);
  });
}

void bounds(FusedAct a, float* lo, float* hi) {
  *lo = a == FusedAct::relu || a == FusedAct::relu6 ? 0.0f
        : a == FusedAct::relu_n1_to_1               ? -1.0f
                                                    : -kInf;
  *hi = a == FusedAct::relu6 ? 6.0f : a == FusedAct::relu_n1_to_1 ? 1.0f : kInf;
}

// Whether every 4 consecutive rows of W[m, k] share their pattern of zeros (a 4x1-block pruned
// layer): the sparse kernels then load each input vector once for 4 output channels.
bool block4(const float* w, int64_t m, int64_t k) {
  if (m % 4) return false;
  for (int64_t r = 0; r < m; r += 4)
    for (int64_t j = 0; j < k; ++j) {
      const bool nz = w[r * k + j] != 0.0f;
      for (int64_t t = 1; t < 4; ++t)
        if ((w[(r + t) * k + j] != 0.0f) != nz) return false;
    }
  return true;
}

// A GEMM over packed weights, dense or sparse: y[N, M] = act(x[N, K] W^T + b).
class Linear {
 public:
  // dense_form: build the dense form when the weight is not sparse (false: the caller computes
  // the dense case another way, Conv2D's Winograd form, and calls forward only when sparse())
  Linear(const float* w, int64_t m, int64_t k, const float* bias, Act act, const OpOptions& o,
         bool dense_form = true) {
    int64_t zeros = 0;
    for (int64_t i = 0; i < m * k; ++i) zeros += w[i] == 0.0f;
    if (o.sparse && zeros * 2 >= m * k) {
      sparse_ = std::make_unique<SparseLinear>(w, m, k, bias, block4(w, m, k) ? 4 : 1, act,
                                               SparseKernel::automatic, o.isa);
      if (!sparse_->uses_sparse()) sparse_.reset();
    }
    if (!sparse_ && dense_form) dense_ = std::make_unique<DenseLinear>(w, m, k, bias, act, o.isa);
  }
  void forward(const float* x, int64_t n, float* y, int threads) const {
    if (sparse_)
      sparse_->forward(x, n, y, threads);
    else
      dense_->forward(x, n, y, threads);
  }
  // the channel-major form: Y[M, N] = act(W X[K, N] + b)
  void forward_kn(const float* x, int64_t n, float* y, int threads) const {
    if (sparse_)
      sparse_->forward_kn(x, n, y, threads);
    else
      dense_->forward_kn(x, n, y, threads);
  }
  // one thread, sparse layers only: Y[:, 0:n) = act(W X[:, 0:n) + b) with X's rows ldx apart and
  // Y's ldy apart (SparseLinear::forward_kn_part)
  void forward_kn_part(const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy) const {
    sparse_->forward_kn_part(x, ldx, n, y, ldy);
  }
  int64_t part_align() const { return sparse_->part_align(); }  // (sparse layers)
  bool sparse() const { return sparse_ != nullptr; }
  const DenseLinear* dense() const { return dense_.get(); }

 private:
  std::unique_ptr<DenseLinear> dense_;
  std::unique_ptr<SparseLinear> sparse_;
};

Act linear_act(FusedAct a) {
  return a == FusedAct::relu ? Act::relu : a == FusedAct::relu6 ? Act::relu6 : Act::none;
}
// the part of a fused activation a Linear cannot clamp
ActKind post_act(FusedAct a) {
  return a == FusedAct::relu_n1_to_1 ? ActKind::relu_n1_to_1 : ActKind::none;
}

std::string dims(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

class ExpandDepthwise;
class ExpandProject;

// ------------------------------------------------------------------------ CONV_2D
class Conv2D : public Op {
 public:
  Conv2D(const Ctx& c, const OpOptions& o) : vec_(vec_ops(o.isa)) {
    const Tensor &x = c.f32(c.in(0)), &w = c.f32(c.constant(1)), &y = c.f32(c.out());
    c.rank(x, 4);
    c.rank(w, 4);
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], cin_ = x.shape[3];
    cout_ = w.shape[0], kh_ = w.shape[1], kw_ = w.shape[2], cg_ = w.shape[3];
    if (n_ < 1 || h_ < 1 || w_ < 1 || cout_ < 1 || kh_ < 1 || kw_ < 1)
      c.bad("input and filter dimensions must be positive");
    // cin_ >= cg_ before dividing: a hostile file's filter may claim more channels than the input
    if (cg_ < 1 || cin_ < cg_ || cin_ % cg_ || cout_ % (cin_ / cg_))
      c.bad("filter input channels " + std::to_string(cg_) + " do not divide the input's " +
            std::to_string(cin_) + " into groups that divide the output channels");
    groups_ = cin_ / cg_;
    sh_ = c.d.stride_h, sw_ = c.d.stride_w, dh_ = c.d.dilation_h, dw_ = c.d.dilation_w;
    oh_ = conv_dim(c, h_, kh_, sh_, dh_, c.d.padding, &pt_, 0);
    ow_ = conv_dim(c, w_, kw_, sw_, dw_, c.d.padding, &pl_, 1);
    c.shape_is(y, {n_, oh_, ow_, cout_});
    const float* bias = nullptr;
    if (c.has_in(2)) {
      const Tensor& b = c.f32(c.constant(2));
      c.shape_is(b, {cout_});
      bias = b.as<float>();
    }
    post_ = post_act(c.d.act);
    const int64_t og = cout_ / groups_, kk = kh_ * kw_ * cg_;
    // the Winograd form's shapes (wino_init): a dense weight then needs no packed GEMM form. On
    // AVX-512, whose GEMM runs about twice AVX2's rate, a plane of 16 tiles or fewer (7x7) keeps
    // the direct form: its 16 GEMMs of at most 16 tile rows read 16/9 of the direct weight for
    // them, and ResNet-18's 256->256 at 7x7 ran 6 % faster direct (docs/runtime.md)
    const bool wino_shape = groups_ == 1 && kh_ == 3 && kw_ == 3 && sh_ == 1 && sw_ == 1 &&
                            dh_ == 1 && dw_ == 1 && cin_ >= 8 && cout_ >= 8 &&
                            cin_ * cout_ >= 128 && oh_ >= 2 && ow_ >= 2 &&
                            (o.isa != Isa::avx512 || (oh_ + 1) / 2 * ((ow_ + 1) / 2) > 16);
    std::vector<float> wg(size_t(og * kk));
    for (int64_t g = 0; g < groups_; ++g) {
      // rows g*og.. of W[Cout, KH, KW, Cg]: the im2col order (ky, kx, ci) already
      std::memcpy(wg.data(), w.as<float>() + g * og * kk, wg.size() * 4);
      lin_.push_back(std::make_unique<Linear>(wg.data(), og, kk, bias ? bias + g * og : nullptr,
                                              linear_act(c.d.act), o, !wino_shape));
    }
    direct_ = kh_ == 1 && kw_ == 1 && sh_ == 1 && sw_ == 1 && groups_ == 1 && pt_ == 0 &&
              pl_ == 0 && oh_ == h_ && ow_ == w_;
    const_in_ = x.is_const();
    if (direct_ && lin_[0]->sparse()) {  // what ExpandDepthwise reads: the file's W[Cout, Cin]
      wsrc_ = w.as<float>(), bias_src_ = bias;
      bounds(c.d.act, &act_lo_, &act_hi_);
    }
    // Up to 4 input channels (RGB stems, grayscale or RGBA inputs) a direct loop beats the
    // im2col + GEMM, whose column buffer is kh * kw * cin floats per output pixel and whose GEMM
    // has a short K (docs/runtime.md, "Speed")
    small_ = groups_ == 1 && cin_ <= 4 && !direct_ && !lin_[0]->sparse();
    if (small_) {
      co16_ = (cout_ + 15) / 16 * 16;
      wt16_.assign(size_t(kk * co16_), 0.0f);
      bias16_.assign(size_t(co16_), 0.0f);
      const float* wsrc = w.as<float>();
      for (int64_t co = 0; co < cout_; ++co)
        for (int64_t k = 0; k < kk; ++k) wt16_[size_t(k * co16_ + co)] = wsrc[co * kk + k];
      if (bias) std::copy(bias, bias + cout_, bias16_.begin());
      bounds(c.d.act, &lo_, &hi_);
    }
    // im2col in blocks of pixels that stay in L2 with the packed weight, where the weight is
    // small enough to be read again per block (a full-image column buffer of a 56x56 layer is
    // megabytes, written and read back through memory)
    chunk_ = oh_ * ow_;
    if (groups_ == 1 && !lin_[0]->sparse()) {
      const int64_t rows = std::max<int64_t>(64, (kColBytes / (kk * 4) + 7) / 8 * 8);
      if (cout_ * kk * 4 <= kColBytes && chunk_ > rows + rows / 2) chunk_ = rows;
    }
    // The im2col read in place (DenseF32Args::a_seg): output row oy's pixels are GEMM rows cin
    // floats apart in the (zero-padded) input, each filter row ky a segment of kw * cin floats,
    // ky * dh input rows on. No column buffer is written; the padded copy costs one pass over the
    // input. Measured against the im2col on AVX2, 3x3 layers interleaved in one process: 1.14-1.18x
    // at 8 and 16 channels, 1.03-1.07x at 32-128 channels and 28-112 pixels a row, but 0.94-0.96x
    // at 14 and 7 (one GEMM call per output row of 14 pixels: short row strips, and a weight
    // larger than L2 read once per row) and 0.93-0.98x at stride 2, which keep the im2col, but
    // on AVX-512, where the stride-2 rows gained (ResNet-18's 32->64 at 28x28: 230-236 -> 207-219
    // us on a Xeon).
    const bool strides = (sh_ == 1 && sw_ == 1) || (o.isa == Isa::avx512 && sh_ == 2 && sw_ == 2);
    in_place_im2col_ = groups_ == 1 && dw_ == 1 && !direct_ && !small_ && !lin_[0]->sparse() &&
                       strides && ow_ >= kInPlaceMinWidth;
    if (in_place_im2col_) {
      hp_ = (oh_ - 1) * sh_ + (kh_ - 1) * dh_ + 1;
      wp_ = (ow_ - 1) * sw_ + kw_;
      padded_ = pt_ > 0 || pl_ > 0 || hp_ > h_ || wp_ > w_;
      // a padded copy no larger than a few inputs (a file's dilation can make it any size)
      in_place_im2col_ = double(hp_) * double(wp_) <= 4.0 * double(h_ + kh_) * double(w_ + kw_);
    }
    wino_ = wino_shape && !lin_[0]->sparse();
    if (wino_) wino_init(w.as<float>(), bias, c.d.act, o);
    macs = double(n_) * oh_ * ow_ * cout_ * kk;
    kind = "CONV_2D";
    label = kind + " " + std::to_string(kh_) + "x" + std::to_string(kw_) + "/" +
            std::to_string(sh_) + " " + std::to_string(cin_) + "->" + std::to_string(cout_) +
            (groups_ > 1 ? " g" + std::to_string(groups_) : "") +
            (lin_[0]->sparse() ? " sparse" : "") + " " + std::to_string(oh_) + "x" +
            std::to_string(ow_) + (wino_ ? " winograd" : "");
  }
  bool chw_capable() const override { return direct_ && !const_in_; }
  bool chw_seed() const override { return chw_capable() && lin_[0]->sparse(); }
  bool chw_out_capable() const override { return !direct_ && !wino_ && groups_ == 1 && !const_in_; }
  int64_t scratch_bytes() const override {
    if (direct_ || small_) return 0;         // (planes out: one row per thread, thread_local)
    if (wino_) return hp_ * wp_ * cin_ * 4;  // the padded copy (tile buffers: thread_local)
    const int64_t pix = oh_ * ow_;
    if (chw_out_) return kh_ * kw_ * cg_ * pix * 4;  // the transposed im2col
    if (in_place_im2col_) return padded_ ? hp_ * wp_ * cin_ * 4 : 0;
    return (chunk_ * kh_ * kw_ * cg_ + (groups_ > 1 ? pix * (cout_ / groups_) : 0)) * 4;
  }
  void run(const RunCtx& r) const override {
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    const int64_t pix = oh_ * ow_, og = cout_ / groups_, kk = kh_ * kw_ * cg_;
    if (wino_) {
      wino_run(x, y, static_cast<float*>(r.scratch), r.threads);
    } else if (chw_) {  // per image: Y[Cout, HW] = W X[Cin, HW]
      for (int64_t b = 0; b < n_; ++b)
        lin_[0]->forward_kn(x + b * cin_ * pix, pix, y + b * cout_ * pix, r.threads);
    } else if (chw_out_ && small_) {
      // NHWC in, planes out, few input channels (an RGB stem): the direct rows, each transposed
      // into the planes from a one-row buffer per thread that stays in L1 (a whole-image buffer
      // was written and read back through memory: 0.5 of the 112x112 stem's 1.5 ms on AVX2). The
      // strided gather of the transposed im2col below took 100 of the stem's 214 us at 112x112
      // (this way: about 150).
      for (int64_t b = 0; b < n_; ++b)
        parallel_for(threads_for(r.threads, macs / double(n_)), oh_, [&](int64_t oy) {
          thread_local std::vector<float> row;
          if (int64_t(row.size()) < ow_ * cout_) row.resize(size_t(ow_ * cout_));
          conv_row(x + b * h_ * w_ * cin_, oy, row.data());
          vec_.transpose(row.data(), ow_, cout_, y + b * cout_ * pix + oy * ow_, pix);
        });
    } else if (chw_out_) {  // NHWC in, planes out: Y[Cout, HW] = W col[KK, HW]
      float* col = static_cast<float*>(r.scratch);
      for (int64_t b = 0; b < n_; ++b) {
        // a strided scalar gather per element (the stem's 27 x 12544 take about 100 us): weigh
        // each as 8 multiply-adds, so it splits over threads like the GEMM after it
        const double moves = double(kh_ * kw_ * cin_) * double(pix);
        parallel_for(threads_for(r.threads, 8.0 * moves), oh_,
                     [&](int64_t oy) { im2col_kn(x + b * h_ * w_ * cin_, col, oy); });
        lin_[0]->forward_kn(col, pix, y + b * cout_ * pix, r.threads);
      }
    } else if (in_place_im2col_) {
      float* xp = static_cast<float*>(r.scratch);
      const DenseLinear& d = *lin_[0]->dense();
      const int64_t row = padded_ ? wp_ : w_;  // floats of an input row, over cin
      for (int64_t b = 0; b < n_; ++b) {
        const float* xb = x + b * h_ * w_ * cin_;
        if (padded_) pad_input(xb, xp);
        const float* src = padded_ ? xp : xb;
        float* yb = y + b * pix * cout_;
        parallel_for(threads_for(r.threads, macs / double(n_)), oh_, [&](int64_t oy) {
          d.forward_segments(src + oy * sh_ * row * cin_, sw_ * cin_, kw_ * cin_, dh_ * row * cin_,
                             ow_, yb + oy * ow_ * cout_);
        });
      }
    } else if (direct_) {
      lin_[0]->forward(x, n_ * pix, y, r.threads);
    } else if (small_) {
      for (int64_t b = 0; b < n_; ++b)
        parallel_for(threads_for(r.threads, macs / double(n_)), oh_, [&](int64_t oy) {
          conv_row(x + b * h_ * w_ * cin_, oy, y + (b * oh_ + oy) * ow_ * cout_);
        });
    } else {
      float* col = static_cast<float*>(r.scratch);
      float* tmp = col + chunk_ * kk;
      for (int64_t b = 0; b < n_; ++b) {
        const float* xb = x + b * h_ * w_ * cin_;
        float* yb = y + b * pix * cout_;
        for (int64_t g = 0; g < groups_; ++g) {
          if (groups_ == 1) {
            for (int64_t p0 = 0; p0 < pix; p0 += chunk_) {
              const int64_t p1 = std::min(pix, p0 + chunk_);
              im2col(xb, 0, p0, p1, col);
              lin_[0]->forward(col, p1 - p0, yb + p0 * cout_, r.threads);
            }
          } else {
            im2col(xb, g, 0, pix, col);
            lin_[g]->forward(col, pix, tmp, r.threads);
            for (int64_t p = 0; p < pix; ++p)
              std::memcpy(yb + p * cout_ + g * og, tmp + p * og, size_t(og) * 4);
          }
        }
      }
    }
    if (post_ != ActKind::none) vec_.activation(post_, y, y, n_ * pix * cout_);
  }
  int in_ = 0, out_ = 0;

 private:
  friend class ExpandDepthwise;
  friend class ExpandProject;
  friend class DepthwiseProject;
  friend bool projects(const Conv2D* pw, int64_t n, int64_t c, int64_t h, int64_t w);
  const float *wsrc_ = nullptr, *bias_src_ = nullptr;  // a sparse 1x1's weight and bias, or null
  float act_lo_ = 0, act_hi_ = 0;                      // and its fused activation as a clamp
  // output row oy of one image (x: [H, W, Cin]) by the direct loop, as [OW, Cout] at y
  void conv_row(const float* x, int64_t oy, float* y) const {
    ConvRowArgs a;
    a.x = x, a.h = h_, a.w = w_, a.c = cin_;
    a.wt = wt16_.data(), a.bias = bias16_.data();
    a.kh = kh_, a.kw = kw_, a.stride_h = sh_, a.stride_w = sw_, a.dil_h = dh_, a.dil_w = dw_;
    a.pad_t = pt_, a.pad_l = pl_, a.cout = cout_, a.co16 = co16_;
    a.y = y, a.oy = oy, a.ow = ow_;
    a.lo = lo_, a.hi = hi_;
    vec_.conv_row(a);
  }
  // dst[0, n) = src[0, n). A stem's filter row is a few floats (3x3 on RGB: 9), where a memmove
  // call per row costs more than the copy: runs of 4 to 16 are two overlapping fixed-size copies
  // the compiler turns into vector moves.
  static void copy_run(const float* __restrict__ src, int64_t n, float* __restrict__ dst) {
    if (n >= 8 && n <= 16) {
      std::memcpy(dst, src, 32);
      std::memcpy(dst + n - 8, src + n - 8, 32);
    } else if (n >= 4 && n < 8) {
      std::memcpy(dst, src, 16);
      std::memcpy(dst + n - 4, src + n - 4, 16);
    } else {
      std::copy(src, src + n, dst);
    }
  }
  // the rows of output pixels [p0, p1) of group g
  void im2col(const float* x, int64_t g, int64_t p0, int64_t p1, float* col) const {
    const int64_t kk = kh_ * kw_ * cg_;
    // without groups or dilation, a filter row inside the image is kw * cin contiguous floats
    const bool rows = groups_ == 1 && dw_ == 1;
    int64_t oy = p0 / ow_, ox = p0 % ow_;  // stepped, not divided, per pixel
    for (int64_t p = p0; p < p1; ++p, ox = ox + 1 == ow_ ? (++oy, 0) : ox + 1) {
      float* dst = col + (p - p0) * kk;
      const int64_t ix0 = ox * sw_ - pl_;
      for (int64_t ky = 0; ky < kh_; ++ky) {
        const int64_t iy = oy * sh_ - pt_ + ky * dh_;
        if (rows && iy >= 0 && iy < h_ && ix0 >= 0 && ix0 + kw_ <= w_) {
          copy_run(x + (iy * w_ + ix0) * cin_, kw_ * cin_, dst);
          dst += kw_ * cin_;
          continue;
        }
        for (int64_t kx = 0; kx < kw_; ++kx, dst += cg_) {
          const int64_t ix = ox * sw_ - pl_ + kx * dw_;
          if (iy < 0 || iy >= h_ || ix < 0 || ix >= w_)
            std::memset(dst, 0, size_t(cg_) * 4);
          else
            std::memcpy(dst, x + (iy * w_ + ix) * cin_ + g * cg_, size_t(cg_) * 4);
        }
      }
    }
  }
  // Winograd F(2x2, 3x3): each 2x2 block of outputs ("tile") from the 4x4 input block around it
  // as 16 element-wise products of transformed input and filter, summed over input channels: 16
  // GEMMs V_ij[tiles, Cin] U_ij[Cin, Cout] in place of one [pixels, 9 Cin] x [9 Cin, Cout], so
  // 2.25x fewer multiply-adds for the cost of the transforms (a few adds per input and output
  // value, linear in the channels where the GEMMs are quadratic). The transforms use only adds
  // and halves, so the rounding stays near the direct sum's (docs/runtime.md measures it).
  void wino_init(const float* w, const float* bias, FusedAct act, const OpOptions& o) {
    th_ = (oh_ + 1) / 2, tw_ = (ow_ + 1) / 2;
    hp_ = 2 * th_ + 2, wp_ = 2 * tw_ + 2;
    // U = G g G^T per (cout, cin), G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], in double
    std::vector<float> u(size_t(16 * cout_ * cin_));
    for (int64_t co = 0; co < cout_; ++co)
      for (int64_t ci = 0; ci < cin_; ++ci) {
        double g[3][3], gg[4][3];
        for (int ky = 0; ky < 3; ++ky)
          for (int kx = 0; kx < 3; ++kx) g[ky][kx] = w[((co * 3 + ky) * 3 + kx) * cin_ + ci];
        for (int kx = 0; kx < 3; ++kx) {
          gg[0][kx] = g[0][kx];
          gg[1][kx] = 0.5 * (g[0][kx] + g[1][kx] + g[2][kx]);
          gg[2][kx] = 0.5 * (g[0][kx] - g[1][kx] + g[2][kx]);
          gg[3][kx] = g[2][kx];
        }
        for (int i = 0; i < 4; ++i) {
          const double row[4] = {gg[i][0], 0.5 * (gg[i][0] + gg[i][1] + gg[i][2]),
                                 0.5 * (gg[i][0] - gg[i][1] + gg[i][2]), gg[i][2]};
          for (int j = 0; j < 4; ++j)
            u[size_t(((4 * i + j) * cout_ + co) * cin_ + ci)] = float(row[j]);
        }
      }
    for (int64_t t = 0; t < 16; ++t)
      wlin_.push_back(std::make_unique<DenseLinear>(u.data() + t * cout_ * cin_, cout_, cin_,
                                                    nullptr, Act::none, o.isa));
    if (bias) wbias_.assign(bias, bias + cout_);
    bounds(act, &lo_, &hi_);
    if (act == FusedAct::relu_n1_to_1) post_ = ActKind::none;  // (bounds clamps it already)
    // Tile rows per task: the task's transformed input and products (16 x (Cin + Cout) floats a
    // tile) within about L2, so they are written and read back there. A transformed filter larger
    // than that is read once per task, so the budget grows to its size: the filter's reads stay
    // at most the tile buffers' traffic, and the buffers at most the filter's size. A function of
    // the shape alone, so every output has the same bits on any number of threads.
    const int64_t per_tile = 16 * (cin_ + cout_) * 4, filter = 16 * cin_ * cout_ * 4;
    const int64_t budget = std::max(kWinoBandBytes, filter);
    band_ = std::max<int64_t>(1, std::min(th_, budget / (per_tile * tw_)));
    in_place_im2col_ = false;
  }
  void wino_run(const float* x, float* y, float* xp, int threads) const {
    const int64_t bands = (th_ + band_ - 1) / band_;
    const int64_t pix = oh_ * ow_;
    for (int64_t b = 0; b < n_; ++b) {
      pad_input(x + b * h_ * w_ * cin_, xp);
      float* yb = y + b * pix * cout_;
      // several bands: one per task, its GEMMs on that thread; one band: the GEMMs split instead
      const int use = bands > 1 ? threads_for(threads, macs / double(n_)) : 1;
      const int gemm_threads = bands > 1 ? 1 : threads;
      parallel_for(use, bands, [&](int64_t band) {
        const int64_t ty0 = band * band_, ty1 = std::min(th_, ty0 + band_);
        const int64_t tiles = (ty1 - ty0) * tw_;
        thread_local std::vector<float> buf;
        const size_t need = size_t(16 * tiles * (cin_ + cout_));
        if (buf.size() < need) buf.resize(need);
        float* v = buf.data();
        float* m = v + 16 * tiles * cin_;
        for (int64_t ty = ty0; ty < ty1; ++ty)
          vec_.wino_in(xp + 2 * ty * wp_ * cin_, wp_ * cin_, cin_, tw_, v + (ty - ty0) * tw_ * cin_,
                       tiles * cin_);
        for (int64_t t = 0; t < 16; ++t)
          wlin_[size_t(t)]->forward(v + t * tiles * cin_, tiles, m + t * tiles * cout_,
                                    gemm_threads);
        for (int64_t ty = ty0; ty < ty1; ++ty)
          vec_.wino_out(m + (ty - ty0) * tw_ * cout_, tiles * cout_, cout_, tw_,
                        wbias_.empty() ? nullptr : wbias_.data(), lo_, hi_,
                        yb + 2 * ty * ow_ * cout_, ow_ * cout_, ow_,
                        std::min<int64_t>(2, oh_ - 2 * ty));
      });
    }
  }
  // xp[hp, wp, cin] = x placed at (pt, pl) in zeros, rows and columns past hp / wp left out
  void pad_input(const float* x, float* xp) const {
    const int64_t rows = std::max<int64_t>(0, std::min(h_, hp_ - pt_));
    const int64_t cols = std::max<int64_t>(0, std::min(w_, wp_ - pl_));
    const int64_t left = std::min(pl_, wp_);
    for (int64_t py = 0; py < hp_; ++py) {
      float* d = xp + py * wp_ * cin_;
      const int64_t iy = py - pt_;
      if (iy < 0 || iy >= rows) {
        std::memset(d, 0, size_t(wp_ * cin_) * 4);
        continue;
      }
      std::memset(d, 0, size_t(left * cin_) * 4);
      std::memcpy(d + left * cin_, x + iy * w_ * cin_, size_t(cols * cin_) * 4);
      std::memset(d + (left + cols) * cin_, 0, size_t((wp_ - left - cols) * cin_) * 4);
    }
  }
  // The im2col transposed, one group, output row oy: row (ky, kx, ci) holds that tap's input
  // value for every output pixel in order (0 outside the input), so W[Cout, KK] col gives the
  // output planes.
  void im2col_kn(const float* x, float* col, int64_t oy) const {
    const int64_t pix = oh_ * ow_;
    for (int64_t ky = 0; ky < kh_; ++ky) {
      const int64_t iy = oy * sh_ - pt_ + ky * dh_;
      for (int64_t kx = 0; kx < kw_; ++kx) {
        float* rows = col + (ky * kw_ + kx) * cin_ * pix;
        // output columns [ox0, ox1) read inside the input; the ones outside are zeros
        const int64_t off = kx * dw_ - pl_;
        const int64_t ox0 = std::min(ow_, off >= 0 ? 0 : (-off + sw_ - 1) / sw_);
        const int64_t ox1 =
            std::max(ox0, std::min(ow_, w_ - off > 0 ? (w_ - off + sw_ - 1) / sw_ : 0));
        for (int64_t ci = 0; ci < cin_; ++ci) {
          float* __restrict__ d = rows + ci * pix + oy * ow_;
          if (iy < 0 || iy >= h_) {
            std::fill(d, d + ow_, 0.0f);
            continue;
          }
          std::fill(d, d + ox0, 0.0f);
          const float* __restrict__ s = x + (iy * w_ + off) * cin_ + ci;
          const int64_t step = sw_ * cin_;
          for (int64_t ox = ox0; ox < ox1; ++ox) d[ox] = s[ox * step];
          std::fill(d + ox1, d + ow_, 0.0f);
        }
      }
    }
  }
  const VecOps& vec_;
  int64_t n_, h_, w_, cin_, cout_, kh_, kw_, cg_, groups_, sh_, sw_, dh_, dw_, oh_, ow_, pt_, pl_;
  static constexpr int64_t kColBytes = 256 * 1024;
  static constexpr int64_t kInPlaceMinWidth = 28;
  static constexpr int64_t kWinoBandBytes = 384 * 1024;
  bool wino_ = false;
  int64_t th_ = 0, tw_ = 0, band_ = 1;              // tiles down and across; tile rows per task
  std::vector<std::unique_ptr<DenseLinear>> wlin_;  // U_ij [Cout, Cin], i, j < 4
  std::vector<float> wbias_;
  int64_t chunk_ = 1;                              // output pixels per im2col block
  bool in_place_im2col_ = false, padded_ = false;  // im2col read in place; from a padded copy
  int64_t hp_ = 0, wp_ = 0;                        // the padded copy's rows and columns
  bool direct_ = false, const_in_ = false;
  // the direct loop for few input channels (vec.h, ConvRowArgs) and its packed weight
  bool small_ = false;
  int64_t co16_ = 0;
  std::vector<float> wt16_, bias16_;
  float lo_ = 0, hi_ = 0;
  ActKind post_ = ActKind::none;
  std::vector<std::unique_ptr<Linear>> lin_;
};

// ------------------------------------------------------------------------ TRANSPOSE_CONV
// The geometry is TransposeConvGeometry's (op_context.h); an optional bias [O] and a fused ReLU
// family activation follow. One GEMM gives every input pixel's KH * KW * O contributions (col2im
// then adds them in a fixed order, so threads change no bit).
class TransposeConv : public Op {
 public:
  TransposeConv(const Ctx& c, const OpOptions& o) : vec_(vec_ops(o.isa)) {
    const Tensor &w = c.f32(c.constant(1)), &x = c.f32(c.in(2)), &y = c.f32(c.out());
    g_.init(c, c.constant(0), w, x, y);
    const float* bias = nullptr;
    if (c.has_in(3)) {
      const Tensor& b = c.f32(c.constant(3));
      c.shape_is(b, {g_.cout});
      bias = b.as<float>();
    }
    bias_.assign(size_t(g_.cout), 0.0f);
    if (bias) std::copy(bias, bias + g_.cout, bias_.begin());
    bounds(c.d.act, &lo_, &hi_);
    // GEMM rows (ky, kx, o) of K = I: the filter [O, KH, KW, I] reordered
    const int64_t taps = g_.kh * g_.kw;
    std::vector<float> wt(size_t(taps * g_.cout * g_.cin));
    const float* src = w.as<float>();
    for (int64_t oc = 0; oc < g_.cout; ++oc)
      for (int64_t t = 0; t < taps; ++t)
        std::copy(src + (oc * taps + t) * g_.cin, src + (oc * taps + t + 1) * g_.cin,
                  wt.begin() + (t * g_.cout + oc) * g_.cin);
    lin_ = std::make_unique<Linear>(wt.data(), taps * g_.cout, g_.cin, nullptr, Act::none, o);
    macs = double(g_.n) * g_.h * g_.w * taps * g_.cout * g_.cin;
    kind = "TRANSPOSE_CONV";
    label = kind + " " + std::to_string(g_.kh) + "x" + std::to_string(g_.kw) + "/" +
            std::to_string(g_.sh) + " " + std::to_string(g_.cin) + "->" + std::to_string(g_.cout) +
            " " + std::to_string(g_.oh) + "x" + std::to_string(g_.ow);
  }
  int64_t scratch_bytes() const override { return g_.h * g_.w * g_.kh * g_.kw * g_.cout * 4; }
  void run(const RunCtx& r) const override {
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    float* col = static_cast<float*>(r.scratch);
    const int64_t taps = g_.kh * g_.kw;
    for (int64_t b = 0; b < g_.n; ++b) {
      float* yb = y + b * g_.oh * g_.ow * g_.cout;
      for (int64_t p = 0; p < g_.oh * g_.ow; ++p)
        std::copy(bias_.begin(), bias_.end(), yb + p * g_.cout);
      lin_->forward(x + b * g_.h * g_.w * g_.cin, g_.h * g_.w, col, r.threads);
      g_.scatter([&](int64_t in, int64_t tap, int64_t out) {
        vec_.accumulate(col + (in * taps + tap) * g_.cout, yb + out * g_.cout, g_.cout);
      });
    }
    const int64_t n = g_.n * g_.oh * g_.ow * g_.cout;
    if (lo_ > -INFINITY || hi_ < INFINITY)
      for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(y[i], lo_), hi_);
  }
  int in_ = 0, out_ = 0;

 private:
  const VecOps& vec_;
  TransposeConvGeometry g_;
  float lo_ = -INFINITY, hi_ = INFINITY;
  std::vector<float> bias_;
  std::unique_ptr<Linear> lin_;
};

// ------------------------------------------------------------------------ FULLY_CONNECTED
class FullyConnected : public Op {
 public:
  FullyConnected(const Ctx& c, const OpOptions& o) : vec_(vec_ops(o.isa)) {
    const Tensor &x = c.f32(c.in(0)), &w = c.f32(c.constant(1)), &y = c.f32(c.out());
    c.rank(w, 2);
    m_ = w.shape[0], k_ = w.shape[1];
    if (k_ < 1 || m_ < 1 || x.elems % k_) c.bad("input size is not a multiple of the weight's K");
    n_ = x.elems / k_;
    if (n_ < 1) c.bad("the input is empty");
    if (y.elems != n_ * m_) c.bad("output size is not N * M");
    const float* bias = nullptr;
    if (c.has_in(2)) {
      const Tensor& b = c.f32(c.constant(2));
      c.shape_is(b, {m_});
      bias = b.as<float>();
    }
    post_ = post_act(c.d.act);
    lin_ = std::make_unique<Linear>(w.as<float>(), m_, k_, bias, linear_act(c.d.act), o);
    macs = double(n_) * m_ * k_;
    kind = "FULLY_CONNECTED";
    label = kind + " " + std::to_string(k_) + "->" + std::to_string(m_) +
            (lin_->sparse() ? " sparse" : "");
  }
  void run(const RunCtx& r) const override {
    float* y = r.ptr[out_];
    lin_->forward(r.ptr[in_], n_, y, r.threads);
    if (post_ != ActKind::none) vec_.activation(post_, y, y, n_ * m_);
  }
  int in_ = 0, out_ = 0;

 private:
  const VecOps& vec_;
  int64_t n_, m_, k_;
  ActKind post_;
  std::unique_ptr<Linear> lin_;
};

// ------------------------------------------------------------------------ DEPTHWISE_CONV_2D
class Depthwise : public Op {
 public:
  Depthwise(const Ctx& c, const OpOptions& o) : vec_(vec_ops(o.isa)) {
    const Tensor &x = c.f32(c.in(0)), &w = c.f32(c.constant(1)), &y = c.f32(c.out());
    c.rank(x, 4);
    c.rank(w, 4);
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], cin_ = x.shape[3];
    kh_ = w.shape[1], kw_ = w.shape[2], cout_ = w.shape[3];
    if (w.shape[0] != 1 || cin_ < 1 || cout_ < 1 || kh_ < 1 || kw_ < 1 || cout_ % cin_)
      c.bad("filter must be [1, KH, KW, C * depth_multiplier]");
    dm_ = cout_ / cin_;
    a_.stride_h = c.d.stride_h, a_.stride_w = c.d.stride_w;
    a_.dil_h = c.d.dilation_h, a_.dil_w = c.d.dilation_w;
    oh_ = conv_dim(c, h_, kh_, a_.stride_h, a_.dil_h, c.d.padding, &a_.pad_t, 0);
    a_.ow = conv_dim(c, w_, kw_, a_.stride_w, a_.dil_w, c.d.padding, &a_.pad_l, 1);
    c.shape_is(y, {n_, oh_, a_.ow, cout_});
    wt_ = w.as<float>();
    if (c.has_in(2)) {
      const Tensor& b = c.f32(c.constant(2));
      c.shape_is(b, {cout_});
      a_.bias = b.as<float>();
    }
    a_.h = h_, a_.w = w_, a_.c = cout_, a_.kh = kh_, a_.kw = kw_, a_.wt = wt_;
    bounds(c.d.act, &a_.lo, &a_.hi);
    const_in_ = x.is_const();
    if (dm_ == 1) {  // the taps per channel, for the channel-major form
      taps_.resize(size_t(cout_ * kh_ * kw_));
      for (int64_t ch = 0; ch < cout_; ++ch)
        for (int64_t t = 0; t < kh_ * kw_; ++t) taps_[ch * kh_ * kw_ + t] = wt_[t * cout_ + ch];
    }
    // one plane's geometry and clamp (run_chw adds the plane's pointers, taps and bias)
    plane_.h = h_, plane_.w = w_, plane_.kh = kh_, plane_.kw = kw_;
    plane_.stride_h = a_.stride_h, plane_.stride_w = a_.stride_w;
    plane_.dil_h = a_.dil_h, plane_.dil_w = a_.dil_w;
    plane_.pad_t = a_.pad_t, plane_.pad_l = a_.pad_l;
    plane_.oh = oh_, plane_.ow = a_.ow, plane_.lo = a_.lo, plane_.hi = a_.hi;
    via_rows_ = oh_ * a_.ow <= kRowsMaxPlane && !dw_plane_direct(plane_, vec_.plane_lanes);
    macs = double(n_) * oh_ * a_.ow * cout_ * kh_ * kw_;
    kind = "DEPTHWISE_CONV_2D";
    label = kind + " " + std::to_string(kh_) + "x" + std::to_string(kw_) + "/" +
            std::to_string(a_.stride_h) + " " + std::to_string(cout_) + " " + std::to_string(oh_) +
            "x" + std::to_string(a_.ow);
  }
  bool chw_capable() const override { return dm_ == 1 && !const_in_; }
  int64_t scratch_bytes() const override {
    if (chw_) return via_rows() ? (h_ * w_ + oh_ * a_.ow) * cout_ * 4 : 0;
    return dm_ > 1 ? h_ * w_ * cout_ * 4 : 0;
  }
  void run(const RunCtx& r) const override {
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    // A depthwise multiply-add reuses no input across channels: 20-40 GMAC/s here against the
    // GEMM's 134, and a 7x7 layer of 960 channels (0.4 M multiply-adds) takes 23 us: weighed as 8
    // of threads_for's unit, the 28x28, 14x14 and 7x7 layers of MobileNets split
    const int threads = threads_for(r.threads, 8.0 * macs);
    if (chw_ && via_rows()) return run_chw_rows(x, y, threads, static_cast<float*>(r.scratch));
    if (chw_) return run_chw(x, y, threads);
    for (int64_t b = 0; b < n_; ++b) {
      const float* xb = x + b * h_ * w_ * cin_;
      if (dm_ > 1) {  // repeat each channel dm times: then it is a multiplier-1 depthwise conv
        float* e = static_cast<float*>(r.scratch);
        for (int64_t p = 0; p < h_ * w_; ++p)
          for (int64_t ch = 0; ch < cout_; ++ch) e[p * cout_ + ch] = xb[p * cin_ + ch / dm_];
        xb = e;
      }
      run_rows(xb, y + b * oh_ * a_.ow * cout_, threads);
    }
  }
  int in_ = 0, out_ = 0;

 private:
  friend class ExpandDepthwise;
  friend class DepthwiseProject;
  // Small output planes (MobileNet's and EfficientNet's 14x14 and 7x7 layers, and the stride-2
  // layers that produce them) run channel-minor in scratch: dw_plane pays a fixed cost per plane
  // (filling its phase planes, dropping the padded columns) that a 7x7 plane cannot amortise,
  // while dw_row's vectors run over channels whatever the plane size. Two transposes (one
  // register tile at a time) are cheaper than that cost up to about 20x20 outputs; on 28x28 and
  // larger planes the plane kernel wins (docs/runtime.md has the measurements). The choice
  // depends on the shape only, so the bits do not depend on the thread count.
  // Planes the plane kernel runs straight from the input (dw_plane_direct) stay planes: no fixed
  // cost to amortise (a 14x14 layer of 384 channels 47 us that way, 67 through the transposes;
  // AVX2).
  static constexpr int64_t kRowsMaxPlane = 400;
  bool via_rows() const { return via_rows_; }
  std::string chw_strategy() const override { return via_rows() ? " (rows)" : ""; }
  // one image [H, W, C] -> its output [OH, OW, C], a task per output row
  void run_rows(const float* x, float* y, int threads) const {
    parallel_for(threads, oh_, [&](int64_t oy) {
      DwRowArgs a = a_;
      a.x = x;
      a.y = y + oy * a_.ow * cout_;
      a.oy = oy;
      vec_.dw_row(a);
    });
  }
  // NCHW in and out: transpose to [HW, C], dw_row per output row, transpose back.
  void run_chw_rows(const float* x, float* y, int threads, float* s) const {
    const int64_t in_plane = h_ * w_, out_plane = oh_ * a_.ow;
    float* xs = s;
    float* ys = s + in_plane * cout_;
    for (int64_t b = 0; b < n_; ++b) {
      transpose_rows(vec_, x + b * in_plane * cout_, cout_, in_plane, xs, threads);
      run_rows(xs, ys, threads);
      transpose_rows(vec_, ys, out_plane, cout_, y + b * out_plane * cout_, threads);
    }
  }
  // one task per channel plane: each plane is computed whole by one thread, in one order
  void run_chw(const float* x, float* y, int threads) const {
    const int64_t in_plane = h_ * w_, out_plane = oh_ * a_.ow, kk = kh_ * kw_;
    parallel_for(threads, n_ * cout_, [&](int64_t p) {
      const int64_t ch = p % cout_;
      DwPlaneArgs a = plane_;
      a.x = x + p * in_plane;
      a.wt = taps_.data() + ch * kk;
      a.bias = a_.bias ? a_.bias[ch] : 0.0f;
      a.y = y + p * out_plane;
      vec_.dw_plane(a);
    });
  }
  const VecOps& vec_;
  std::vector<float> taps_;  // [C, KH, KW] (depth multiplier 1)
  bool const_in_ = false;
  DwRowArgs a_;
  DwPlaneArgs plane_;
  bool via_rows_ = false;  // decided at load from the shape and the path (via_rows)
  const float* wt_ = nullptr;
  int64_t n_, h_, w_, cin_, cout_, kh_, kw_, dm_, oh_;
};

// ------------------------------------------------------------------------ 1x1 + depthwise
// A sparse 1x1 convolution whose output only a depthwise conv reads, both channel-major (an
// inverted residual's expansion and its depthwise conv): each task computes one channel's
// expanded plane (VecOps::sparse_plane) into a buffer of its thread and runs the depthwise conv
// on it at once, so the expanded tensor (MobileNetV2's first: 96 planes of 112x112, 4.8 MB) is
// never written out and read back; a plane stays in L2. Each plane is computed whole by one
// thread in one order, so the bits do not depend on the thread count.
class ExpandDepthwise : public Op {
 public:
  ExpandDepthwise(const Conv2D& pw, const Depthwise& dw) : vec_(dw.vec_), dw_(dw.plane_) {
    n_ = pw.n_, cin_ = pw.cin_, c_ = pw.cout_, hw_ = pw.h_ * pw.w_;
    out_plane_ = dw.oh_ * dw.a_.ow;
    const float* w = pw.wsrc_;
    // groups of 4 channels with one pattern of nonzeros share each load of an input vector
    rows_ = block4(w, c_, cin_) ? 4 : 1;
    start_.push_back(0);
    for (int64_t co = 0; co < c_; co += rows_) {
      for (int64_t ci = 0; ci < cin_; ++ci)
        if (w[co * cin_ + ci] != 0.0f) {
          idx_.push_back(int32_t(ci));
          for (int64_t r = 0; r < rows_; ++r) w_.push_back(w[(co + r) * cin_ + ci]);
        }
      start_.push_back(int64_t(idx_.size()));
    }
    bias_.assign(size_t(c_), 0.0f);
    if (pw.bias_src_) bias_.assign(pw.bias_src_, pw.bias_src_ + c_);
    lo_ = pw.act_lo_, hi_ = pw.act_hi_;
    taps_ = dw.taps_;
    dw_bias_ = dw.a_.bias ? std::vector<float>(dw.a_.bias, dw.a_.bias + c_) : std::vector<float>();
    // Stride-2 pairs write each expanded plane into zero padding, which the depthwise kernel
    // then reads in place (vec.h, DwPlaneArgs::ld): no phase planes or edge copies per plane,
    // so small planes too (14x14 outputs, which the unfused op runs channel-minor).
    // (Stride 1 the same way, read without dw_plane_s1's lane shifts at the row ends, was no
    // faster at 56x56 and slower at 14x14 and 28x28, whose short lines the expansion writes
    // with short strips.)
    h_ = pw.h_, w_cols_ = pw.w_;
    padded_ = dw_padded_fits(dw_, vec_.plane_lanes);
    bands_ok_ = padded_ || dw_plane_direct(dw_, vec_.plane_lanes);  // (dw_plane_bands)
    if (padded_) {
      dw_padded_extent(dw_, &bottom_, &right_);
      ld_ = dw_.pad_l + w_cols_ + right_;
      plane_ = (dw_.pad_t + h_ + bottom_) * ld_;
    } else {
      ld_ = w_cols_, plane_ = hw_;
    }
    // the depthwise conv's multiply-adds weigh 8 (Depthwise::run); the 1x1's at 1
    work_ = double(w_.size()) * double(hw_ * n_) + 8.0 * dw.macs;
    macs = pw.macs + dw.macs;
    kind = dw.kind;
    // (both end in " nchw" already; the depthwise one may say " (rows)", the kernel of its
    // small planes, which a padded plane does not use)
    std::string dl = dw.label;
    if (const size_t at = dl.rfind(" (rows)"); padded_ && at != std::string::npos) dl.erase(at);
    label = pw.label + " + " + dl;
    chw_ = true;
  }
  // the operator for the pair, or null where it does not qualify (ops.h, fuse_expand_depthwise)
  static std::unique_ptr<Op> fuse(const Op& expand, const Op& depthwise) {
    const auto* pw = dynamic_cast<const Conv2D*>(&expand);
    const auto* dw = dynamic_cast<const Depthwise*>(&depthwise);
    if (!pw || !dw || !pw->chw() || !dw->chw() || !pw->wsrc_ || dw->dm_ != 1 ||
        (dw->via_rows() && !dw_padded_fits(dw->plane_, dw->vec_.plane_lanes)) || dw->n_ != pw->n_ ||
        dw->h_ != pw->h_ || dw->w_ != pw->w_ || dw->cout_ != pw->cout_)
      return nullptr;
    auto op = std::make_unique<ExpandDepthwise>(*pw, *dw);
    op->in_ = pw->in_;
    op->out_ = dw->out_;
    return op;
  }
  bool chw_capable() const override { return true; }
  void run(const RunCtx& r) const override {
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    const int64_t groups = c_ / rows_, tasks = n_ * groups;
    // one contiguous range of channel groups per thread (the pool gives thread t the t-th part),
    // so each thread looks up its planes once
    const int use = threads_for(r.threads, work_);
    const int64_t parts = std::min<int64_t>(tasks, use);
    parallel_for(use, parts, [&](int64_t part) {
      Planes& tp = thread_planes();
      for (int64_t task = tasks * part / parts; task < tasks * (part + 1) / parts; ++task) {
        const int64_t b = task / groups, g = task % groups;
        channels(tp, x + b * cin_ * hw_, g, 0, dw_.oh, y + (b * c_ + g * rows_) * out_plane_,
                 out_plane_);
      }
    });
  }
  // A thread's expanded planes and the op whose zero padding they hold (see channels). Looked up
  // once per task, not per channel: from a shared library (the Python module) every access to a
  // thread_local is a call, which took 5 us of each of MobileNetV2's 14x14 blocks (384 channels).
  struct Planes {
    std::vector<float> buf;
    uint64_t zeroed_for = 0;
  };
  static Planes& thread_planes() {
    thread_local Planes p;
    return p;
  }
  // Output rows [oy0, oy1) of channel group g of one image (x: its input planes): each channel's
  // expanded lines that the rows' taps reach, then its depthwise rows, written to y + k * ldy
  // for the group's channel k (y at row oy0, rows ow apart). Less than all rows needs bands_ok_.
  void channels(Planes& tp, const float* x, int64_t g, int64_t oy0, int64_t oy1, float* y,
                int64_t ldy) const {
    const int64_t kk = dw_.kh * dw_.kw, ch0 = g * rows_;
    // the input lines the rows' taps reach (one or two past a band's ends)
    const int64_t l0 = std::max<int64_t>(0, oy0 * dw_.stride_h - dw_.pad_t);
    const int64_t l1 = std::min(h_, (oy1 - 1) * dw_.stride_h - dw_.pad_t + dw_.kh);
    // The padding's zeros stay between this op's tasks on a thread (the expansion writes only
    // the input's place): they are written again only after another op used the buffer. Ops
    // are told apart by a number never reused (an address can be, by the next model loaded).
    if (int64_t(tp.buf.size()) < rows_ * plane_) {
      tp.buf.resize(size_t(rows_ * plane_));
      tp.zeroed_for = 0;
    }
    // where each plane's input (0, 0) is
    float* at = tp.buf.data() + (padded_ ? dw_.pad_t * ld_ + dw_.pad_l : 0);
    if (padded_ && tp.zeroed_for != id_) {
      for (int64_t k = 0; k < rows_; ++k) zero_padding(tp.buf.data() + k * plane_);
      tp.zeroed_for = id_;
    } else if (!padded_) {
      tp.zeroed_for = 0;  // (unpadded planes overwrite the padding's place)
    }
    SparsePlaneArgs e;
    e.x = x + l0 * w_cols_, e.ld = hw_;
    e.idx = idx_.data() + start_[g], e.w = w_.data() + start_[g] * rows_;
    e.nnz = start_[g + 1] - start_[g];
    e.rows = rows_;
    e.bias = bias_.data() + ch0, e.lo = lo_, e.hi = hi_;
    e.y = at + l0 * ld_, e.ldy = plane_;
    if (padded_)
      e.n = w_cols_, e.lines = l1 - l0, e.ldl = ld_;
    else
      e.n = (l1 - l0) * w_cols_;
    vec_.sparse_plane(e);
    for (int64_t k = 0; k < rows_; ++k) {
      DwPlaneArgs a = dw_;
      a.x = at + k * plane_;
      if (padded_) a.ld = ld_;
      a.oy0 = oy0, a.oy1 = oy1;
      a.wt = taps_.data() + (ch0 + k) * kk;
      a.bias = dw_bias_.empty() ? 0.0f : dw_bias_[size_t(ch0 + k)];
      a.y = y + k * ldy;
      vec_.dw_plane(a);
    }
  }
  int in_ = 0, out_ = 0;

 private:
  friend class ExpandProject;
  const VecOps& vec_;
  DwPlaneArgs dw_;
  int64_t rows_ = 1;            // channels per group (1 or 4)
  std::vector<int64_t> start_;  // group g's nonzeros: [start_[g], start_[g + 1])
  std::vector<int32_t> idx_;
  std::vector<float> w_;  // [nonzero, rows_]
  std::vector<float> bias_, taps_, dw_bias_;
  float lo_ = 0, hi_ = 0;
  double work_ = 0;
  int64_t n_ = 0, cin_ = 0, c_ = 0, hw_ = 0, out_plane_ = 0;
  // an expanded plane's buffer: rows ld_ floats apart, plane_ floats a plane; padded_: zero rows
  // and columns around the input (pad_t / pad_l before, bottom_ / right_ after)
  bool padded_ = false;
  bool bands_ok_ = false;          // channels() computes any band of rows (dw_plane_bands)
  const uint64_t id_ = next_id();  // tells the thread buffers' owners apart
  static uint64_t next_id() {
    static std::atomic<uint64_t> n{0};
    return ++n;
  }
  int64_t h_ = 0, w_cols_ = 0, ld_ = 0, plane_ = 0, bottom_ = 0, right_ = 0;
  // the zeros around a padded plane's input (the expansion writes only the input's place)
  void zero_padding(float* p) const {
    const int64_t top = dw_.pad_t * ld_, rows = dw_.pad_t + h_;
    std::fill(p, p + top, 0.0f);
    for (int64_t r = dw_.pad_t; r < rows; ++r) {
      float* row = p + r * ld_;
      std::fill(row, row + dw_.pad_l, 0.0f);
      std::fill(row + dw_.pad_l + w_cols_, row + ld_, 0.0f);
    }
    std::fill(p + rows * ld_, p + plane_, 0.0f);
  }
};

// Band `band` of `bands` over an image's hw pixels in rows of ow, cut on multiples of `unit`
// pixels (a multiple of the projection's SpMM strip, so every column keeps its bits), the last
// band taking the rest: pixels [p0, p1), and the output rows [r0, r1) that cover them (px pixels).
struct PixelBand {
  int64_t p0, p1, r0, r1, px;
  PixelBand(int64_t units, int64_t bands, int64_t unit, int64_t band, int64_t hw, int64_t ow)
      : p0(units * band / bands * unit),
        p1(band + 1 == bands ? hw : units * (band + 1) / bands * unit),
        r0(p0 / ow),
        r1((p1 + ow - 1) / ow),
        px((r1 - r0) * ow) {}
};

// The calling thread's buffer of at least n floats for a band's depthwise planes.
float* band_buffer(int64_t n) {
  thread_local std::vector<float> mid;
  if (int64_t(mid.size()) < n) mid.resize(size_t(n));
  return mid.data();
}

// Whether `pw` can be the sparse projection of a fused block whose depthwise output is n images of
// c planes of h x w: a channel-major sparse 1x1 without a separate activation, over at least two
// of the SpMM's strips of pixels (a band holds at least one).
bool projects(const Conv2D* pw, int64_t n, int64_t c, int64_t h, int64_t w) {
  return pw && pw->chw() && pw->direct_ && pw->wsrc_ && pw->lin_[0]->sparse() &&
         pw->post_ == ActKind::none && pw->n_ == n && pw->cin_ == c && pw->h_ == h && pw->w_ == w &&
         h * w >= 2 * pw->lin_[0]->part_align();
}

// A residual ADD taken into the operator that writes one of its operands (fuse_residual_add):
// that operator adds the other operand to each band of its output while the band is still in
// cache, clamped by the ADD's fused activation, instead of a pass of its own over three tensors.
// IEEE addition is commutative, so either operand order gives the ADD's bits.
struct Residual {
  int in = -1;  // the other operand's tensor; -1: no ADD taken in
  float lo = -INFINITY, hi = INFINITY;
  // pixels [p0, p1) of m channel planes hw apart, of one image (y and r at its first plane)
  void add(const VecOps& v, const float* r, float* y, int64_t m, int64_t hw, int64_t p0,
           int64_t p1) const {
    for (int64_t c = 0; c < m; ++c) {
      float* yc = y + c * hw + p0;
      v.binary(BinOp::add, yc, 1, r + c * hw + p0, 1, yc, p1 - p0, lo, hi);
    }
  }
};

// The end of a fused block's band: the projection of its depthwise planes `mid` (rows r0..r1 of
// the band, ow wide) into pixels [p0, p1) of one image's m output planes (y_img: the image's
// first plane), then the residual ADD taken in, if any (r_img: the other operand's image).
void project_band(const Linear& proj, const PixelBand& p, const float* mid, int64_t ow,
                  float* y_img, int64_t m, int64_t hw, const Residual& res, const float* r_img,
                  const VecOps& v) {
  proj.forward_kn_part(mid + (p.p0 - p.r0 * ow), p.px, p.p1 - p.p0, y_img + p.p0, hw);
  if (res.in >= 0) res.add(v, r_img, y_img, m, hw, p.p0, p.p1);
}

// ------------------------------------------------------------------------ 1x1 + depthwise + 1x1
// An expansion and its depthwise conv (ExpandDepthwise) whose output only a channel-major sparse
// 1x1 conv reads (an inverted residual's projection). On one thread it runs as the two did: the
// pair's planes into scratch, then the projection over all pixels. Split, each thread takes a
// band of pixels instead: the depthwise rows covering it, every channel, into a buffer of its
// own, then the projection of the band from there. The middle tensor (MobileNetV2's second
// block: 144 planes of 56x56, 1.8 MB) is then never shared between cores, and each thread reads
// the input rows near its band, which an operator split by rows before it mostly wrote on the
// same core (band-major tasks; the pool gives thread t the t-th range of them): a core here
// reads what the other core wrote 4.5-5x slower than its own and overwrites it 3.4x slower
// (docs/runtime.md, "Two threads on the sparse chain"). Bands start on multiples of the SpMM's
// widest strip (SparseLinear::part_align) and the last holds at least one, where the SpMM
// computes every column as a call over all pixels does: the same bits on one thread and on
// several.
class ExpandProject : public Op {
 public:
  ExpandProject(std::unique_ptr<ExpandDepthwise> pair, Conv2D& pw)
      : pair_(std::move(pair)), proj_(std::move(pw.lin_[0])), m_(pw.cout_) {
    // a stored multiply-add of the projection weighs 8, as in SparseLinear::forward_kn
    const int64_t nnz =
        std::count_if(pw.wsrc_, pw.wsrc_ + m_ * pw.cin_, [](float v) { return v != 0.0f; });
    work_ = pair_->work_ + 8.0 * double(nnz) * double(pw.h_ * pw.w_ * pw.n_);
    macs = pair_->macs + pw.macs;
    kind = pair_->kind;
    label = pair_->label + " + " + pw.label;
    chw_ = true;
  }
  // The fused operator, taking `pair` (an ExpandDepthwise) and the projection's weights; null,
  // with both left as they are, where they do not qualify: a sparse 1x1 without a separate
  // activation, a depthwise kernel that computes bands of rows, and two bands' worth of pixels.
  static std::unique_ptr<Op> fuse(std::unique_ptr<Op>& pair, Op& projection) {
    const auto* e = dynamic_cast<const ExpandDepthwise*>(pair.get());
    auto* pw = dynamic_cast<Conv2D*>(&projection);
    if (!e || !e->bands_ok_ || !projects(pw, e->n_, e->c_, e->dw_.oh, e->dw_.ow)) return nullptr;
    const int in = e->in_, out = pw->out_;
    std::unique_ptr<ExpandDepthwise> owned(static_cast<ExpandDepthwise*>(pair.release()));
    auto op = std::make_unique<ExpandProject>(std::move(owned), *pw);
    op->in_ = in;
    op->out_ = out;
    return op;
  }
  bool chw_capable() const override { return true; }
  int64_t scratch_bytes() const override { return pair_->c_ * pair_->out_plane_ * 4; }
  void run(const RunCtx& r) const override {
    const ExpandDepthwise& e = *pair_;
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    const int64_t oh = e.dw_.oh, ow = e.dw_.ow, hw = oh * ow, groups = e.c_ / e.rows_;
    const int use = threads_for(r.threads, work_);
    const int64_t align = proj_->part_align(), units = hw / align;
    // On one thread, or where whole units of `align` pixels cannot give every thread about the
    // same band (the largest more than 1.25x an even share: a 14x14 plane on AVX-512, 3 units
    // of 64, which 2 threads took as 64 and 132 pixels), the pair's planes for all pixels first,
    // each thread a range of channel groups, then the projection split by its own rules: each
    // column's bits are a one-thread call's
    const int64_t most = (units + use - 1) / use * align + (hw - units * align);
    if (use <= 1 || units < use || 4 * most * use > 5 * hw) {
      float* mid = static_cast<float*>(r.scratch);
      for (int64_t b = 0; b < e.n_; ++b) {
        const float* xb = x + b * e.cin_ * e.hw_;
        const int64_t parts = std::min<int64_t>(groups, use);
        parallel_for(use, parts, [&](int64_t part) {
          ExpandDepthwise::Planes& tp = ExpandDepthwise::thread_planes();
          for (int64_t g = groups * part / parts; g < groups * (part + 1) / parts; ++g)
            e.channels(tp, xb, g, 0, oh, mid + g * e.rows_ * hw, hw);
        });
        proj_->forward_kn(mid, hw, y + b * m_ * hw, use);
        if (res.in >= 0)
          res.add(e.vec_, r.ptr[res.in] + b * m_ * hw, y + b * m_ * hw, m_, hw, 0, hw);
      }
      return;
    }
    // one band of whole units of `align` pixels per thread (the last takes the rest): bands of
    // 256 KB of depthwise output (several per thread, in L2) ran slower here, their extra input
    // lines and partial rows costing more than L2 saves (docs/runtime.md)
    const int64_t bands = std::min<int64_t>(units, use);
    parallel_for(use, bands * e.n_, [&](int64_t task) {
      const int64_t band = task / e.n_, b = task % e.n_;
      const PixelBand p(units, bands, align, band, hw, ow);
      float* mid = band_buffer(e.c_ * p.px);
      const float* xb = x + b * e.cin_ * e.hw_;
      ExpandDepthwise::Planes& tp = ExpandDepthwise::thread_planes();
      for (int64_t g = 0; g < groups; ++g)
        e.channels(tp, xb, g, p.r0, p.r1, mid + g * e.rows_ * p.px, p.px);
      project_band(*proj_, p, mid, ow, y + b * m_ * hw, m_, hw, res,
                   res.in >= 0 ? r.ptr[res.in] + b * m_ * hw : nullptr, e.vec_);
    });
  }
  int in_ = 0, out_ = 0;
  Residual res;

 private:
  std::unique_ptr<ExpandDepthwise> pair_;
  std::unique_ptr<Linear> proj_;
  int64_t m_ = 0;
  double work_ = 0;
};

// ------------------------------------------------------------------------ depthwise + 1x1
// A channel-major depthwise conv whose output only a channel-major sparse 1x1 conv reads (an
// inverted residual without expansion: MobileNetV2's and V3's first block), run over bands of
// pixels: the depthwise rows covering a band, every channel, into a buffer of the thread, then the
// projection of the band from there. The depthwise output (MobileNetV2's: 32 planes of 112x112,
// 1.6 MB) is then never written to memory and read back: a band's planes stay in L2. Unlike a
// fused expansion, a band's extra rows cost only the partial rows at its ends (recomputed by the
// next band), so bands are small. Bands start on multiples of the SpMM's widest strip
// (SparseLinear::part_align) and the last holds at least one, so every column gets the bits of a
// call over all pixels, on any number of threads.
class DepthwiseProject : public Op {
 public:
  DepthwiseProject(std::unique_ptr<Depthwise> dw, Conv2D& pw)
      : dw_(std::move(dw)), proj_(std::move(pw.lin_[0])), m_(pw.cout_) {
    const int64_t nnz =
        std::count_if(pw.wsrc_, pw.wsrc_ + m_ * pw.cin_, [](float v) { return v != 0.0f; });
    // the depthwise multiply-adds weigh 8 (Depthwise::run), a stored one of the SpMM 8
    work_ = 8.0 * dw_->macs + 8.0 * double(nnz) * double(pw.h_ * pw.w_ * pw.n_);
    macs = dw_->macs + pw.macs;
    kind = dw_->kind;
    label = dw_->label + " + " + pw.label;
    chw_ = true;
    // Pixels per band: about kBandBytes of depthwise output (a band's planes, read back by the
    // projection at once, stay in L2 beside the input rows the band reads), in units of whole
    // rows that are also whole strips of the SpMM where such a unit is small (a band's partial
    // end rows are computed twice, once per band), else in strips.
    const int64_t align = proj_->part_align(), ow = dw_->a_.ow, hw = dw_->oh_ * ow;
    const int64_t per_px = dw_->cout_ * 4;
    unit_ = std::lcm(ow, align);
    if (unit_ * per_px > kBandBytes / 2) unit_ = align;
    units_ = hw / unit_;
    band_units_ = std::max<int64_t>(1, kBandBytes / (per_px * unit_));
  }
  // the fused operator, or null where the pair does not qualify (ops.h, fuse_depthwise_project);
  // takes over `depthwise` and the projection's weights where it does
  static std::unique_ptr<Op> fuse(std::unique_ptr<Op>& depthwise, Op& projection) {
    auto* dw = dynamic_cast<Depthwise*>(depthwise.get());
    auto* pw = dynamic_cast<Conv2D*>(&projection);
    if (!dw || !dw->chw() || dw->via_rows() || dw->dm_ != 1 ||
        !dw_plane_direct(dw->plane_, dw->vec_.plane_lanes) ||
        !projects(pw, dw->n_, dw->cout_, dw->oh_, dw->a_.ow))
      return nullptr;
    const int in = dw->in_, out = pw->out_;
    std::unique_ptr<Depthwise> owned(static_cast<Depthwise*>(depthwise.release()));
    auto op = std::make_unique<DepthwiseProject>(std::move(owned), *pw);
    op->in_ = in;
    op->out_ = out;
    return op;
  }
  bool chw_capable() const override { return true; }
  void run(const RunCtx& r) const override {
    const Depthwise& d = *dw_;
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    const int64_t ow = d.a_.ow, hw = d.oh_ * ow, c = d.cout_, kk = d.kh_ * d.kw_;
    const int64_t in_plane = d.h_ * d.w_;
    const int64_t bands = std::max<int64_t>(1, units_ / band_units_);
    const int use = threads_for(r.threads, work_);
    parallel_for(use, bands * d.n_, [&](int64_t task) {
      const int64_t b = task / bands, band = task % bands;
      const PixelBand p(units_, bands, unit_, band, hw, ow);
      float* mid = band_buffer(c * p.px);
      for (int64_t ch = 0; ch < c; ++ch) {
        DwPlaneArgs a = d.plane_;
        a.x = x + (b * c + ch) * in_plane;
        a.wt = d.taps_.data() + ch * kk;
        a.bias = d.a_.bias ? d.a_.bias[ch] : 0.0f;
        a.oy0 = p.r0, a.oy1 = p.r1;
        a.y = mid + ch * p.px;
        d.vec_.dw_plane(a);
      }
      project_band(*proj_, p, mid, ow, y + b * m_ * hw, m_, hw, res,
                   res.in >= 0 ? r.ptr[res.in] + b * m_ * hw : nullptr, d.vec_);
    });
  }
  int in_ = 0, out_ = 0;
  Residual res;

 private:
  // (MobileNetV2's first block on AVX2: 96 KB bands 0.197 ms, 48 KB 0.237, 192 KB 0.198, the
  // unfused pair 0.267)
  static constexpr int64_t kBandBytes = 96 << 10;
  std::unique_ptr<Depthwise> dw_;
  std::unique_ptr<Linear> proj_;
  int64_t m_ = 0, unit_ = 1, band_units_ = 1, units_ = 1;
  double work_ = 0;
};

// ------------------------------------------------------------------------ pools
class Pool : public Op {
 public:
  Pool(const Ctx& c, const OpOptions& o, bool max) : vec_(vec_ops(o.isa)) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    c.rank(x, 4);
    n_ = x.shape[0], a_.h = x.shape[1], a_.w = x.shape[2], a_.c = x.shape[3];
    a_.fh = c.d.filter_h, a_.fw = c.d.filter_w, a_.stride_h = c.d.stride_h,
    a_.stride_w = c.d.stride_w;
    oh_ = conv_dim(c, a_.h, a_.fh, a_.stride_h, 1, c.d.padding, &a_.pad_t, 0);
    a_.ow = conv_dim(c, a_.w, a_.fw, a_.stride_w, 1, c.d.padding, &a_.pad_l, 1);
    c.shape_is(y, {n_, oh_, a_.ow, a_.c});
    a_.max = max;
    a_.pad_max = max && c.d.explicit_pad;  // the planner folds PADs only into max pools
    a_.pad_value = c.d.pad_value;
    bounds(c.d.act, &a_.lo, &a_.hi);
    macs = double(n_) * oh_ * a_.ow * a_.c * a_.fh * a_.fw;
    kind = max ? "MAX_POOL_2D" : "AVERAGE_POOL_2D";
    label = kind + " " + std::to_string(a_.fh) + "x" + std::to_string(a_.fw) + "/" +
            std::to_string(a_.stride_h);
  }
  void run(const RunCtx& r) const override {
    const int threads = threads_for(r.threads, macs);
    for (int64_t b = 0; b < n_; ++b) {
      const float* xb = r.ptr[in_] + b * a_.h * a_.w * a_.c;
      float* yb = r.ptr[out_] + b * oh_ * a_.ow * a_.c;
      parallel_for(threads, oh_, [&](int64_t oy) {
        PoolRowArgs a = a_;
        a.x = xb;
        a.y = yb + oy * a_.ow * a_.c;
        a.oy = oy;
        vec_.pool_row(a);
      });
    }
  }
  int in_ = 0, out_ = 0;

 private:
  const VecOps& vec_;
  PoolRowArgs a_;
  int64_t n_, oh_;
};

// ------------------------------------------------------------------------ elementwise binary
class Binary : public Op {
 public:
  Binary(const Ctx& c, const OpOptions& o, BinOp op) : vec_(vec_ops(o.isa)), op_(op) {
    const Tensor &a = c.f32(c.in(0)), &b = c.f32(c.in(1)), &y = c.f32(c.out());
    const size_t r = std::max(a.shape.size(), b.shape.size());
    std::vector<int64_t> out(r);
    auto dim = [&](const Tensor& t, size_t i) {  // right-aligned, 1 where t has no such dim
      const size_t off = r - t.shape.size();
      return i < off ? int64_t(1) : t.shape[i - off];
    };
    for (size_t i = 0; i < r; ++i) {
      const int64_t da = dim(a, i), db = dim(b, i);
      if (da != db && da != 1 && db != 1) c.bad("input shapes do not broadcast");
      out[i] = da == 1 ? db : da;
    }
    c.shape_is(y, out);
    // padded to kRank dims; strides 0 on broadcast dims
    for (size_t i = 0; i < kRank; ++i) {
      const bool have = i >= kRank - r;
      const size_t j = have ? i - (kRank - r) : 0;
      shape_[i] = have ? out[j] : 1;
      sa_[i] = have && dim(a, j) != 1 ? 1 : 0;
      sb_[i] = have && dim(b, j) != 1 ? 1 : 0;
    }
    int64_t st_a = 1, st_b = 1;
    for (int i = kRank - 1; i >= 0; --i) {
      const int64_t da = sa_[i] ? shape_[i] : 1, db = sb_[i] ? shape_[i] : 1;
      sa_[i] = sa_[i] ? st_a : 0;
      sb_[i] = sb_[i] ? st_b : 0;
      st_a *= da;
      st_b *= db;
    }
    same_ = a.shape == y.shape && b.shape == y.shape;
    const_operand_ = a.is_const() || b.is_const();  // stored NHWC: no channel-major form
    elems_ = y.elems;
    bounds(c.d.act, &lo_, &hi_);
    static const char* names[] = {"ADD",     "SUB", "MUL",   "DIV",  "MAXIMUM",
                                  "MINIMUM", "POW", "PRELU", "ATAN2"};
    kind = names[int(op)];
    label = kind + " " + dims(y.shape);
    macs = double(elems_);
  }
  // elementwise: any layout both operands share
  bool chw_capable() const override { return same_ && !const_operand_; }
  void run(const RunCtx& r) const override {
    const float *a = r.ptr[ia_], *b = r.ptr[ib_];
    float* y = r.ptr[out_];
    if (same_) return vec_.binary(op_, a, 1, b, 1, y, elems_, lo_, hi_);
    const int64_t inner = shape_[kRank - 1];
    const int64_t ia = sa_[kRank - 1] ? 1 : 0, ib = sb_[kRank - 1] ? 1 : 0;
    int64_t idx[kRank] = {0};
    for (int64_t row = 0; row < elems_ / std::max<int64_t>(inner, 1); ++row) {
      int64_t oa = 0, ob = 0;
      for (int i = 0; i < kRank - 1; ++i) oa += idx[i] * sa_[i], ob += idx[i] * sb_[i];
      vec_.binary(op_, a + oa, ia, b + ob, ib, y + row * inner, inner, lo_, hi_);
      for (int i = kRank - 2; i >= 0; --i) {
        if (++idx[i] < shape_[i]) break;
        idx[i] = 0;
      }
    }
  }
  int ia_ = 0, ib_ = 0, out_ = 0;

 private:
  friend bool take_residual_add(Op& block, const Op& add, int block_out);
  static constexpr int kRank = 6;
  const VecOps& vec_;
  BinOp op_;
  int64_t shape_[kRank], sa_[kRank], sb_[kRank];
  bool same_ = false, const_operand_ = false;
  int64_t elems_ = 0;
  float lo_, hi_;
};

// The ADD that alone reads `block`'s output (a fused inverted residual or depthwise + 1x1), into
// `block` (Residual); false, with both untouched, where it does not qualify: an ADD of two
// channel-major tensors of one shape whose other operand is not the block's output too.
bool take_residual_add(Op& block, const Op& add, int block_out) {
  const auto* b = dynamic_cast<const Binary*>(&add);
  Residual* res = nullptr;
  int* out = nullptr;
  if (auto* e = dynamic_cast<ExpandProject*>(&block)) res = &e->res, out = &e->out_;
  if (auto* d = dynamic_cast<DepthwiseProject*>(&block)) res = &d->res, out = &d->out_;
  if (!b || !res || res->in >= 0 || b->op_ != BinOp::add || !b->same_ || !add.chw() ||
      (b->ia_ == block_out) == (b->ib_ == block_out))
    return false;
  res->in = b->ia_ == block_out ? b->ib_ : b->ia_;
  res->lo = b->lo_, res->hi = b->hi_;
  *out = b->out_;
  block.label += " + " + add.label;
  return true;
}

// ------------------------------------------------------------------------ unary activations
// LEAKY_RELU is one too: x >= 0 ? x : alpha x, PRELU's loop with one slope (leaky_)
class Activation : public Op {
 public:
  Activation(const Ctx& c, const OpOptions& o, ActKind k, const char* name, bool leaky = false)
      : vec_(vec_ops(o.isa)), k_(k), leaky_(leaky), alpha_(c.d.alpha) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    c.shape_is(y, x.shape);
    elems_ = x.elems;
    const_in_ = x.is_const();
    kind = name;
    label = kind + (k == ActKind::silu ? " x MUL (SiLU) " : " ") + dims(x.shape);
    macs = double(elems_);
  }
  bool chw_capable() const override { return !const_in_; }  // elementwise
  // Parts of whole vectors on threads (each value is computed alone, so the split does not change
  // bits); the functions built on exp cost about as much per value as 16 MACs of a GEMM.
  void run(const RunCtx& r) const override {
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    const bool heavy = k_ == ActKind::tanh || k_ == ActKind::logistic || k_ == ActKind::silu ||
                       k_ == ActKind::gelu || k_ == ActKind::gelu_tanh || k_ == ActKind::elu ||
                       k_ == ActKind::exp || k_ == ActKind::log || k_ == ActKind::sin ||
                       k_ == ActKind::cos;
    const int use = threads_for(r.threads, (heavy ? 16.0 : 2.0) * double(elems_));
    if (use <= 1) return apply(x, y, elems_);
    const int64_t part = (elems_ + use * 16 - 1) / (use * 16) * 16;
    parallel_for(use, use, [&](int64_t i) {
      const int64_t b = i * part, e = std::min(elems_, b + part);
      if (b < e) apply(x + b, y + b, e - b);
    });
  }
  int in_ = 0, out_ = 0;

 private:
  void apply(const float* x, float* y, int64_t n) const {
    if (!leaky_) return vec_.activation(k_, x, y, n);
    const float inf = std::numeric_limits<float>::infinity();
    vec_.binary(BinOp::prelu, x, 1, &alpha_, 0, y, n, -inf, inf);
  }
  const VecOps& vec_;
  ActKind k_;
  bool leaky_;
  float alpha_;
  int64_t elems_;
  bool const_in_ = false;
};

// ------------------------------------------------------------------------ SOFTMAX
// LOG_SOFTMAX: x - max - log(sum exp(x - max)) over the last axis, TFLite's float formula (a
// log of the softmax would give -inf where a probability underflows).
class Softmax : public Op {
 public:
  Softmax(const Ctx& c, const OpOptions& o, bool log = false) : vec_(vec_ops(o.isa)), log_(log) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    c.shape_is(y, x.shape);
    if (x.shape.empty()) c.bad("softmax of a scalar");
    inner_ = x.shape.back();
    rows_ = inner_ ? x.elems / inner_ : 0;
    beta_ = c.d.beta;
    kind = log ? "LOG_SOFTMAX" : "SOFTMAX";
    label = kind + " " + dims(x.shape);
  }
  // rows in parallel: each row is computed whole by one thread, so threads do not change bits
  void run(const RunCtx& r) const override {
    const float* x = r.ptr[in_];
    float* y = r.ptr[out_];
    parallel_for(threads_for(r.threads, 8.0 * rows_ * inner_), rows_, [&](int64_t i) {
      if (log_)
        log_softmax_row(x + i * inner_, y + i * inner_);
      else
        vec_.softmax_row(x + i * inner_, y + i * inner_, inner_, beta_);
    });
  }
  int in_ = 0, out_ = 0;

 private:
  void log_softmax_row(const float* x, float* y) const {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < inner_; ++j) m = std::max(m, x[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < inner_; ++j) sum += std::exp(x[j] - m);
    const float log_sum = std::log(sum);
    for (int64_t j = 0; j < inner_; ++j) y[j] = (x[j] - m) - log_sum;
  }
  const VecOps& vec_;
  bool log_;
  int64_t inner_, rows_;
  float beta_;
};

// ------------------------------------------------------------------------ MEAN, SUM
// One reduction; SUM divides by 1 (exact) where MEAN divides by the count (sentence embedders
// mean-pool with SUM over the masked tokens divided by the mask's SUM).
class Mean : public Op {
 public:
  Mean(const Ctx& c, const OpOptions& o, bool sum = false) : vec_(vec_ops(o.isa)) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    const int r = int(x.shape.size());
    std::vector<bool> red(r, false);
    for (int64_t a : int_values(c, 1)) {
      if (a < -r || a >= r) c.bad("axis " + std::to_string(a) + " is out of range");
      red[size_t(a < 0 ? a + r : a)] = true;
    }
    std::vector<int64_t> out, kept;
    for (int i = 0; i < r; ++i) {
      if (!red[i]) out.push_back(x.shape[i]);
      if (c.d.keep_dims || !red[i]) kept.push_back(red[i] ? 1 : x.shape[i]);
    }
    int64_t out_elems = 1;
    for (auto v : out) out_elems *= v;
    if (y.shape != kept && y.elems != out_elems) c.shape_is(y, kept);
    shape_ = x.shape;
    red_ = red;
    count_ = 1;
    for (int i = 0; i < r; ++i)
      if (red[i]) count_ *= x.shape[i];
    // the common case: [N, H, W, C] over H and W (global average pooling)
    spatial_ = r == 4 && !red[0] && red[1] && red[2] && !red[3];
    // the trailing axes (layer norm's statistics over the hidden size): one sum per row
    trailing_ = 0;
    while (trailing_ < r && red[size_t(r - 1 - trailing_)]) ++trailing_;
    bool leading_kept = true;
    for (int i = 0; i < r - trailing_; ++i) leading_kept = leading_kept && !red[size_t(i)];
    if (!leading_kept || trailing_ == 0) trailing_ = -1;
    const_in_ = x.is_const();
    x_elems_ = x.elems;
    div_ = sum ? 1.0f : float(count_);
    kind = sum ? "SUM" : "MEAN";
    label = kind + " " + dims(x.shape);
    macs = double(x.elems);
  }
  // its output ([N, C], or [N, 1, 1, C]) is the same in both layouts
  bool chw_capable() const override { return spatial_ && !const_in_; }
  void run(const RunCtx& rc) const override {
    const float* x = rc.ptr[in_];
    float* y = rc.ptr[out_];
    if (chw_) {
      // a plane's sum in vec_.sum's fixed order (a serial loop waited on each add: 26 us for
      // MobileNetV2's 1280 planes of 7x7 on AVX2)
      const int64_t planes = shape_[0] * shape_[3], hw = shape_[1] * shape_[2];
      for (int64_t p = 0; p < planes; ++p) y[p] = vec_.sum(x + p * hw, hw) / div_;
      return;
    }
    if (trailing_ > 0 && !spatial_) {
      const int64_t rows = count_ ? int64_t(x_elems_ / count_) : 0;
      for (int64_t i = 0; i < rows; ++i) y[i] = vec_.sum(x + i * count_, count_) / div_;
      return;
    }
    if (spatial_) {
      const int64_t n = shape_[0], hw = shape_[1] * shape_[2], ch = shape_[3];
      for (int64_t b = 0; b < n; ++b) {
        float* yb = y + b * ch;
        std::fill(yb, yb + ch, 0.0f);
        for (int64_t p = 0; p < hw; ++p) vec_.accumulate(x + (b * hw + p) * ch, yb, ch);
        for (int64_t i = 0; i < ch; ++i) yb[i] /= div_;
      }
      return;
    }
    // general: every input element adds into its output element
    const int r = int(shape_.size());
    std::vector<int64_t> ostride(r, 0);
    int64_t s = 1, total = 1;
    for (int i = r - 1; i >= 0; --i) {
      if (!red_[i]) {
        ostride[i] = s;
        s *= shape_[i];
      }
      total *= shape_[i];
    }
    std::fill(y, y + s, 0.0f);
    std::vector<int64_t> idx(r, 0);
    for (int64_t e = 0; e < total; ++e) {
      int64_t o = 0;
      for (int i = 0; i < r; ++i) o += idx[i] * ostride[i];
      y[o] += x[e];
      for (int i = r - 1; i >= 0; --i) {
        if (++idx[i] < shape_[i]) break;
        idx[i] = 0;
      }
    }
    for (int64_t i = 0; i < s; ++i) y[i] /= div_;
  }
  int in_ = 0, out_ = 0;

 private:
  const VecOps& vec_;
  std::vector<int64_t> shape_;
  std::vector<bool> red_;
  int64_t count_ = 1, x_elems_ = 0;
  float div_ = 1.0f;
  int trailing_ = -1;  // > 0: the reduced axes are exactly the last `trailing_`
  bool spatial_ = false, const_in_ = false;
};

// ------------------------------------------------------------------------ REDUCE_MAX, REDUCE_MIN
// Any axes, keep_dims or not: each output element is the extreme of its input elements, a NaN
// never replacing a number (the comparison is false), as TFLite's reference reducer.
class Extreme : public Op {
 public:
  Extreme(const Ctx& c, bool max) : max_(max) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    const int r = int(x.shape.size());
    std::vector<bool> red(size_t(r), false);
    for (int64_t a : int_values(c, 1)) {
      if (a < -r || a >= r) c.bad("axis " + std::to_string(a) + " is out of range");
      red[size_t(a < 0 ? a + r : a)] = true;
    }
    std::vector<int64_t> out, kept;
    for (int i = 0; i < r; ++i) {
      if (!red[size_t(i)]) out.push_back(x.shape[size_t(i)]);
      kept.push_back(red[size_t(i)] ? 1 : x.shape[size_t(i)]);
    }
    if (y.shape != kept && y.shape != out) c.shape_is(y, c.d.keep_dims ? kept : out);
    for (int i = 0; i < r; ++i)
      if (red[size_t(i)] && x.shape[size_t(i)] == 0) c.bad("reduces an empty dimension");
    shape_ = x.shape;
    red_ = red;
    out_elems_ = y.elems;
    kind = max ? "REDUCE_MAX" : "REDUCE_MIN";
    label = kind + " " + dims(x.shape);
    macs = double(x.elems);
  }
  void run(const RunCtx& rc) const override {
    const float* x = rc.ptr[in_];
    float* y = rc.ptr[out_];
    const int r = int(shape_.size());
    std::vector<int64_t> ostride(size_t(r), 0), idx(size_t(r), 0);
    int64_t s = 1, total = 1;
    for (int i = r - 1; i >= 0; --i) {
      if (!red_[size_t(i)]) {
        ostride[size_t(i)] = s;
        s *= shape_[size_t(i)];
      }
      total *= shape_[size_t(i)];
    }
    const float inf = std::numeric_limits<float>::infinity();
    std::fill(y, y + out_elems_, max_ ? -inf : inf);
    for (int64_t e = 0; e < total; ++e) {
      int64_t o = 0;
      for (int i = 0; i < r; ++i) o += idx[size_t(i)] * ostride[size_t(i)];
      if (max_ ? x[e] > y[o] : x[e] < y[o]) y[o] = x[e];
      for (int i = r - 1; i >= 0; --i) {
        if (++idx[size_t(i)] < shape_[size_t(i)]) break;
        idx[size_t(i)] = 0;
      }
    }
  }
  int in_ = 0, out_ = 0;

 private:
  bool max_;
  std::vector<int64_t> shape_;
  std::vector<bool> red_;
  int64_t out_elems_ = 0;
};

// ------------------------------------------------------------------------ CONCATENATION
class Concat : public Op {
 public:
  Concat(const Ctx& c) {
    const Tensor& y = c.f32(c.out());
    for (size_t i = 0; i < c.d.inputs.size(); ++i) c.f32(c.in(i));
    g_ = concat_geometry(c, y);
    ins_.assign(c.d.inputs.begin(), c.d.inputs.end());
    kind = "CONCATENATION";
    label = kind + " " + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    float* y = r.ptr[out_];
    int64_t off = 0;
    for (size_t i = 0; i < ins_.size(); ++i) {
      const float* x = r.ptr[ins_[i]];
      const int64_t chunk = g_.chunk[i];
      for (int64_t o = 0; o < g_.outer; ++o)
        std::memcpy(y + o * g_.out_row + off, x + o * chunk, size_t(chunk) * 4);
      off += chunk;
    }
  }
  int out_ = 0;

 private:
  std::vector<int> ins_;
  ConcatGeometry g_;
};

// ------------------------------------------------------------------------ RESHAPE & co.
// The fp32 and int8 tiers keep their own operator classes on purpose (as XNNPACK keeps an
// operator per datatype): the int8 constructors also check that input and output share one
// quantization, and run() moves 1-byte elements; shape rules and copy loops are shared through
// movement.h and op_context.h.
class Copy : public Op {
 public:
  Copy(const Ctx& c, const char* name) {
    const Tensor &x = c.in(0), &y = c.out();
    if (x.elems != y.elems) c.bad("input and output sizes differ");
    if (x.type != y.type || x.quantized() || dtype_size(x.type) == 0)
      c.f32(x.type != DType::f32 ? x : y);  // says which tensor is not float32
    bytes_ = x.bytes();
    kind = name;
    label = kind + " " + dims(x.shape) + "->" + dims(y.shape);
  }
  void run(const RunCtx& r) const override {
    if (r.ptr[in_] != r.ptr[out_]) std::memmove(r.ptr[out_], r.ptr[in_], size_t(bytes_));
  }
  int in_ = 0, out_ = 0;

 private:
  int64_t bytes_;
};

// ------------------------------------------------------------------------ TRANSPOSE
class Transpose : public Op {
 public:
  Transpose(const Ctx& c) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    shape_ = transpose_geometry(c, x, &stride_);
    c.shape_is(y, shape_);
    elems_ = y.elems;
    kind = "TRANSPOSE";
    label = kind + " " + dims(x.shape);
  }
  void run(const RunCtx& rc) const override {
    transpose_copy(rc.ptr[in_], rc.ptr[out_], shape_, stride_, elems_);
  }
  int in_ = 0, out_ = 0;

 private:
  std::vector<int64_t> shape_, stride_;
  int64_t elems_;
};

// ------------------------------------------------------------------------ STRIDED_SLICE
class StridedSlice : public Op {
 public:
  StridedSlice(const Ctx& c) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    c.shape_is(y, g_.init(c, x));
    elems_ = y.elems;
    kind = "STRIDED_SLICE";
    label = kind + " " + dims(x.shape) + "->" + dims(y.shape);
  }
  void run(const RunCtx& rc) const override { g_.copy(rc.ptr[in_], rc.ptr[out_], elems_); }
  int in_ = 0, out_ = 0;

 private:
  SliceGeometry g_;
  int64_t elems_ = 0;
};

// ------------------------------------------------------------------------ PAD / PADV2
class Pad : public Op {
 public:
  Pad(const Ctx& c, bool v2) {
    const Tensor &x = c.f32(c.in(0)), &y = c.f32(c.out());
    yshape_ = pad_geometry(c, x, &before_);
    c.shape_is(y, yshape_);
    if (v2 && c.has_in(2)) {
      const Tensor& v = c.f32(c.constant(2));
      if (v.elems != 1) c.bad("the pad value must be a scalar");
      value_ = v.as<float>()[0];
    }
    xshape_ = x.shape;
    yelems_ = y.elems;
    kind = v2 ? "PADV2" : "PAD";
    label = kind + " " + dims(x.shape);
  }
  void run(const RunCtx& rc) const override {
    float* y = rc.ptr[out_];
    std::fill(y, y + yelems_, value_);
    pad_copy(rc.ptr[in_], y, xshape_, yshape_, before_);
  }
  int in_ = 0, out_ = 0;

 private:
  std::vector<int64_t> before_, xshape_, yshape_;
  int64_t yelems_;
  float value_ = 0.0f;
};

// ------------------------------------------------------------------------ layout changes
class Layout : public Op {
 public:
  Layout(int64_t n, int64_t hw, int64_t c, bool to_chw, Isa isa)
      : vec_(vec_ops(isa)), n_(n), hw_(hw), c_(c), to_chw_(to_chw) {
    kind = "TRANSPOSE";
    label = std::string(to_chw ? "layout NHWC->NCHW " : "layout NCHW->NHWC ") + std::to_string(n) +
            "x" + std::to_string(hw) + "x" + std::to_string(c);
    macs = double(n) * hw * c;
  }
  void run(const RunCtx& r) const override {
    for (int64_t b = 0; b < n_; ++b) {
      const float* x = r.ptr[in_] + b * hw_ * c_;
      float* y = r.ptr[out_] + b * hw_ * c_;
      // a float through the shuffle network costs about 12 multiply-adds (a 14x14x576 plane:
      // about 9 us): weighed as 16
      const int use = threads_for(r.threads, 16.0 * double(hw_) * double(c_));
      if (to_chw_)
        transpose_rows(vec_, x, hw_, c_, y, use);
      else
        transpose_rows(vec_, x, c_, hw_, y, use);
    }
  }
  int in_ = 0, out_ = 0;

 private:
  const VecOps& vec_;
  int64_t n_, hw_, c_;
  bool to_chw_;
};

}  // namespace

std::unique_ptr<Op> fuse_expand_depthwise(const Op& expand, const Op& depthwise) {
  return ExpandDepthwise::fuse(expand, depthwise);
}

std::unique_ptr<Op> fuse_expand_project(std::unique_ptr<Op>& pair, Op& projection) {
  return ExpandProject::fuse(pair, projection);
}

std::unique_ptr<Op> fuse_depthwise_project(std::unique_ptr<Op>& depthwise, Op& projection) {
  return DepthwiseProject::fuse(depthwise, projection);
}

bool fuse_residual_add(Op& block, const Op& add, int block_out) {
  return take_residual_add(block, add, block_out);
}

std::unique_ptr<Op> make_layout_op(int in, int out, int64_t n, int64_t hw, int64_t c, bool to_chw,
                                   Isa isa) {
  auto op = std::make_unique<Layout>(n, hw, c, to_chw, isa);
  op->in_ = in;
  op->out_ = out;
  return op;
}

ActKind activation_kind(OpCode code, bool approximate) {
  switch (code) {
    case OpCode::relu:
      return ActKind::relu;
    case OpCode::relu6:
      return ActKind::relu6;
    case OpCode::relu_n1_to_1:
      return ActKind::relu_n1_to_1;
    case OpCode::tanh:
      return ActKind::tanh;
    case OpCode::logistic:
      return ActKind::logistic;
    case OpCode::hard_swish:
      return ActKind::hard_swish;
    case OpCode::gelu:
      return approximate ? ActKind::gelu_tanh : ActKind::gelu;
    case OpCode::sqrt:
      return ActKind::sqrt;
    case OpCode::rsqrt:
      return ActKind::rsqrt;
    case OpCode::neg:
      return ActKind::neg;
    case OpCode::abs:
      return ActKind::abs;
    case OpCode::elu:
      return ActKind::elu;
    case OpCode::exp:
      return ActKind::exp;
    case OpCode::log:
      return ActKind::log;
    case OpCode::floor:
      return ActKind::floor;
    case OpCode::ceil:
      return ActKind::ceil;
    case OpCode::round:
      return ActKind::round;
    case OpCode::sign:
      return ActKind::sign;
    case OpCode::sin:
      return ActKind::sin;
    case OpCode::cos:
      return ActKind::cos;
    default:
      return ActKind::none;
  }
}

// One switch per tier on purpose: each tier accepts its own set of ops and types (make_op in
// ops.cpp for fp32, make_int8_op in ops_int8.cpp for int8), and the executor asks is_int8_op
// which of the two to call.
std::unique_ptr<Op> make_op(const Model& model, const OpDesc& d, const OpOptions& o) {
  if (is_int8_op(model, d)) return make_int8_op(model, d, o);  // int8 data: ops_int8.cpp
  // integer ADD / SUB / MUL (position ids computed from a padding mask): ops_tensor.cpp
  const bool integer = !d.inputs.empty() && d.inputs[0] >= 0 &&
                       (model.tensors[size_t(d.inputs[0])].type == DType::i32 ||
                        model.tensors[size_t(d.inputs[0])].type == DType::i64);
  if (integer && (d.code == OpCode::add || d.code == OpCode::sub || d.code == OpCode::mul))
    return make_tensor_op(model, d, o);
  Ctx c{{model, d, "operator " + std::to_string(d.index) + " (" + op_name(int32_t(d.code)) + ")"}};
  if (const ActKind k = activation_kind(d.code, d.approximate); k != ActKind::none && !d.silu)
    return wire(std::make_unique<Activation>(c, o, k, op_name(int32_t(d.code))), d);
  switch (d.code) {
    case OpCode::conv_2d:
      return wire(std::make_unique<Conv2D>(c, o), d);
    case OpCode::depthwise_conv_2d:
      return wire(std::make_unique<Depthwise>(c, o), d);
    case OpCode::fully_connected:
      return wire(std::make_unique<FullyConnected>(c, o), d);
    case OpCode::transpose_conv: {  // the data is input 2 (0: output_shape, 1: weights)
      auto op = std::make_unique<TransposeConv>(c, o);
      op->in_ = d.inputs[2];
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::average_pool_2d:
      return wire(std::make_unique<Pool>(c, o, false), d);
    case OpCode::max_pool_2d:
      return wire(std::make_unique<Pool>(c, o, true), d);
    case OpCode::add:
    case OpCode::sub:
    case OpCode::mul:
    case OpCode::div:
    case OpCode::maximum:
    case OpCode::minimum:
    case OpCode::pow:
    case OpCode::prelu:
    case OpCode::atan2: {
      const BinOp op = d.code == OpCode::add       ? BinOp::add
                       : d.code == OpCode::sub     ? BinOp::sub
                       : d.code == OpCode::mul     ? BinOp::mul
                       : d.code == OpCode::div     ? BinOp::div
                       : d.code == OpCode::maximum ? BinOp::max
                       : d.code == OpCode::minimum ? BinOp::min
                       : d.code == OpCode::prelu   ? BinOp::prelu
                       : d.code == OpCode::atan2   ? BinOp::atan2
                                                   : BinOp::pow;
      auto b = std::make_unique<Binary>(c, o, op);
      b->ia_ = d.inputs[0];
      b->ib_ = d.inputs[1];
      b->out_ = d.outputs[0];
      return b;
    }
    case OpCode::leaky_relu:
      return wire(std::make_unique<Activation>(c, o, ActKind::none, "LEAKY_RELU", true), d);
    case OpCode::logistic:  // the planner's SiLU (a plain LOGISTIC returned above)
      return wire(std::make_unique<Activation>(c, o, ActKind::silu, "LOGISTIC"), d);
    case OpCode::softmax:
      return wire(std::make_unique<Softmax>(c, o), d);
    case OpCode::log_softmax:
      return wire(std::make_unique<Softmax>(c, o, true), d);
    case OpCode::mean:
      return wire(std::make_unique<Mean>(c, o), d);
    case OpCode::sum:
      return wire(std::make_unique<Mean>(c, o, true), d);
    case OpCode::reduce_max:
      return wire(std::make_unique<Extreme>(c, true), d);
    case OpCode::reduce_min:
      return wire(std::make_unique<Extreme>(c, false), d);
    case OpCode::concatenation: {
      auto op = std::make_unique<Concat>(c);
      op->out_ = d.outputs[0];
      return op;
    }
    case OpCode::reshape:
      return wire(std::make_unique<Copy>(c, "RESHAPE"), d);
    case OpCode::squeeze:
      return wire(std::make_unique<Copy>(c, "SQUEEZE"), d);
    case OpCode::expand_dims:
      return wire(std::make_unique<Copy>(c, "EXPAND_DIMS"), d);
    case OpCode::transpose:
      return wire(std::make_unique<Transpose>(c), d);
    case OpCode::strided_slice:
      return wire(std::make_unique<StridedSlice>(c), d);
    case OpCode::pad:
      return wire(std::make_unique<Pad>(c, false), d);
    case OpCode::padv2:
      return wire(std::make_unique<Pad>(c, true), d);
    default:  // BATCH_MATMUL and the typed operators: ops_tensor.cpp
      return make_tensor_op(model, d, o);
  }
}

}  // namespace rt
}  // namespace ep
