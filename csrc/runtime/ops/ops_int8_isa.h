// Vectorised loops of the int8 operators (ops_int8.cpp), one build per path with that path's
// compiler flags (ops/isa/int8_<path>.cpp). Each computes exactly what the portable loop in
// ops_int8.cpp computes: int32 sums, then TFLite's requantization (Q31 multiplier, double
// rounding), so every path gives the same bits.
//
// Consumes: packed weights and int8 rows. Produces: int8 rows.
#pragma once

#include <cstdint>
#include <vector>

namespace ep {
namespace rt {

// TFLite's requantization of a channel with a right shift e in [1, 22] (multiplier below 1/2),
// in float: with y = acc * mult / 2^(31 + e) and d = 2^-(e + 1), its two roundings (the doubling
// high multiply's, then the division by 2^e rounding half away from zero) give exactly
// floor(y + 1/2 + d) for y >= 0 and floor(y + 1/2 - d) below 0. The vector loops compute
// W = 65536 * (y + 1/2 +- d + zp_out) + 8 as one fused multiply-add, float(acc) * scale + pos (or
// neg), and round it to the integer V. While |y| < 256, |V - W| <= 4 (the product's input
// roundings cost at most 2, the constant's 0.5, the add's 1, the conversion's 0.5), so wherever
// V mod 65536 >= 16, V >> 16 is floor(y + 1/2 +- d) + zp_out, TFLite's result; at |y| >= 256 the
// result saturates to -128 or 127 either way. Lanes with V mod 65536 < 16 (about one in 4000)
// take the integer steps. The result in V's high half is taken by a word permute, and the zero
// point inside the constant saves an add.
// Per-channel arrays as the multipliers, padded to a multiple of 16 channels.
struct FloatRequant {
  const float *scale = nullptr, *pos = nullptr, *neg = nullptr;  // 65536 mult / 2^(31+e), W's rest
};
// Fills scale / pos / neg (each `padded` long) for channels [0, n) and output zero point zp_out,
// and returns true when every channel's shift is in [-22, -1] (no left shift); else false.
bool float_requant(const int32_t* mult, const int32_t* shift, int64_t n, int64_t padded,
                   int32_t zp_out, float* scale, float* pos, float* neg);

// y[r, j] = clamp(zp_out + mbqm(sum_k (x[r, k] + 128) * W[j, k] + bias[j] + row_bias[r],
// mult[j], shift[j])) for rows r < n: x holds uint8 rows (int8 ^ 0x80) of `kp` bytes (K rounded
// up to 4, zero padded), W is packed by pack_qgemm_vnni, bias[j] = bias_q[j] - (zp_in + 128) *
// sum_k W[j, k]. row_bias (optional) carries a per-row term: the other operand's zero point
// times the row's sum when W is an activation (BATCH_MATMUL). Sums wrap modulo 2^32, so only
// the final value must fit int32. Per-channel arrays are padded to a multiple of 16 channels.
struct QGemmVnniArgs {
  const uint8_t* x = nullptr;
  int64_t n = 0, kp = 0, m = 0;
  const int8_t* w = nullptr;
  const int32_t *bias = nullptr, *mult = nullptr, *shift = nullptr;
  const int32_t* row_bias = nullptr;  // [n], or none
  const FloatRequant* fr = nullptr;   // when set, the float form of the same requantization
  // x holds int8 rows instead (K a multiple of 4, so every 4-byte group is inside its row), made
  // uint8 as they are read
  bool signed_x = false;
  int32_t zp_out = 0, lo = -128, hi = 127;
  int8_t* y = nullptr;
  int64_t ldy = 0;
};
// W[M, K] -> blocks of 16 channels, K in groups of 4: out[((b * kp/4 + q) * 16 + j) * 4 + t] =
// W[16 b + j, 4 q + t] (zero outside W). Size: round16(M) * kp bytes.
void pack_qgemm_vnni(const int8_t* w, int64_t m, int64_t k, int64_t kp, int8_t* out);

// Output rows [oy, oy + rows) of a depthwise convolution with depth multiplier 1 (NHWC, C
// channels): y[oy, ox, c] = requant(sum over the taps inside the input of (x - zp_in) * w +
// bias[c]). The rows of one call share each block of 16 channels' weights and constants.
struct QDwRowArgs {
  const int8_t* x = nullptr;  // the image [H, W, C]
  int64_t h = 0, w = 0, c = 0, kh = 0, kw = 0, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  int64_t oy = 0, rows = 1, ow = 0;
  const int32_t* wt = nullptr;  // [KH, KW, C]: each weight as int16 in the low half, 0 above
  const int32_t *bias = nullptr, *mult = nullptr, *shift = nullptr;
  const FloatRequant* fr = nullptr;  // when set, the float form of the same requantization
  int32_t zp_in = 0, zp_out = 0, lo = -128, hi = 127;
  bool vnni = false;    // the CPU has AVX-512 VNNI (vpdpwssd)
  int8_t* y = nullptr;  // output row oy [OW, C], the next rows after it
};

// Elementwise int8 ADD of equal shapes, TFLite's arithmetic: both inputs (x - zp) << 20 scaled
// by their multipliers, summed, scaled by the output multiplier.
struct QAddArgs {
  const int8_t *a = nullptr, *b = nullptr;
  int8_t* y = nullptr;
  int64_t n = 0;
  int32_t za = 0, zb = 0, zy = 0, lo = -128, hi = 127;
  int32_t m1 = 0, m2 = 0, om = 0;
  int s1 = 0, s2 = 0, os = 0;
  // qadd_tables: each input's scaled value, mbqm((x - z) << 20, m, s), for every int8 x, as four
  // byte planes of 256 entries by uint8(x) (plane k holds byte k of the int32); and the output
  // requantization's float form for one channel (scale, pos, neg of FloatRequant)
  const uint8_t *ta = nullptr, *tb = nullptr;
  const float* fo = nullptr;
};
// The [4][256] byte planes of an ADD input's scaled values (QAddArgs::ta / tb)
void qadd_planes(int32_t z, int32_t m, int s, uint8_t* planes);

// Sparse weights in 1x4 blocks (4 consecutive input channels of one output channel), rows
// vectorised 16 at a time: xq holds the uint8 rows (int8 ^ 0x80) as quads, xq[(q * ldn + r) * 4
// + t] = x[r, 4q + t] (0 past K), ldn >= n a multiple of 16, n <= 64. Per output channel j its
// nnz[j] blocks follow in stream order: quad[e] the quad index, w[e] the 4 weights (byte t =
// weight of input channel 4q + t). bias / mult / shift as QGemmVnniArgs.
struct QSpmmVnniArgs {
  const uint8_t* xq = nullptr;
  int64_t n = 0, ldn = 0, m = 0;
  const int32_t *nnz = nullptr, *quad = nullptr, *w = nullptr;
  const int32_t *bias = nullptr, *mult = nullptr, *shift = nullptr;
  const FloatRequant* fr = nullptr;  // when set, the float form of the same requantization
  int32_t zp_out = 0, lo = -128, hi = 127;
  int8_t* y = nullptr;
  int64_t ldy = 0;
};

// One row through channel groups (the kernel tier's pack_sparse_s8_groups form: 16 channels per
// group, input quads in windows of 32): y[j] = clamp(zp_out + mbqm(sum_k (x[k] + 128) W[j, k] +
// bias[j], mult[j], shift[j])) for j < m, x being K int8 values read in place. bias, mult,
// shift and fr's arrays are padded to whole groups of 16.
struct QSpmvGroupArgs {
  const int8_t* x = nullptr;
  int64_t k = 0, m = 0;
  const int32_t* gslots = nullptr;
  const uint8_t* gquad = nullptr;
  const int32_t* gw = nullptr;
  const int32_t *bias = nullptr, *mult = nullptr, *shift = nullptr;
  const FloatRequant* fr = nullptr;
  int32_t zp_out = 0, lo = -128, hi = 127;
  int8_t* y = nullptr;
};

// y[r, j] = clamp(zp_out + mbqm(sum_k x[r, k] * W[j, k] + bias[j], mult[j], shift[j])) for rows
// r < n (stride ldx) and channels j < m, x int8 as it stands (the input zero point is in bias), W
// packed by pack_gemm_s8 with tile 16 and k-group 2. bias / mult / shift (and fr's arrays) are
// padded to a multiple of 16 channels.
struct QGemmAvx2Args {
  const int8_t* x = nullptr;
  int64_t ldx = 0, n = 0, k = 0, m = 0;
  const int8_t* wp = nullptr;
  const int32_t *bias = nullptr, *mult = nullptr, *shift = nullptr;
  const FloatRequant* fr = nullptr;  // when set, the float form of the same requantization
  int32_t zp_out = 0, lo = -128, hi = 127;
  int8_t* y = nullptr;
  int64_t ldy = 0;
};

// Sparse weights in 1x4 blocks (4 consecutive input channels of one output channel) on x86
// without VNNI, rows vectorised 8 at a time as int16 pairs: xp holds rows [0, n) of x (n <= 32)
// as xp[p * ldn + r] = x[r, 2p] | x[r, 2p + 1] << 16 (each as int16; 0 past K and for rows n ..
// ldn), ldn = n rounded up to 8, 2 * ceil(K / 4) pairs, 32-byte aligned. Per output channel j its
// nnz[j] blocks follow in stream order: quad[e] the block's quad index, w[2 e] and w[2 e + 1] its
// weights as two int16 pairs (input channels 4q, 4q + 1, then 4q + 2, 4q + 3). x int8 as it
// stands (the input zero point is in bias); bias / mult / shift / fr as QGemmAvx2Args, read at
// channels < m only.
// W[M, K] as that block stream: appends nnz (per channel), quad and pairs (two per block)
void pack_blocks_avx2(const int8_t* w, int64_t m, int64_t k, std::vector<int32_t>* nnz,
                      std::vector<int32_t>* quad, std::vector<int32_t>* pairs);
struct QSpmmAvx2Args {
  const int32_t* xp = nullptr;
  int64_t n = 0, ldn = 0, m = 0;
  const int32_t *nnz = nullptr, *quad = nullptr, *w = nullptr;
  const int32_t *bias = nullptr, *mult = nullptr, *shift = nullptr;
  const FloatRequant* fr = nullptr;
  int32_t zp_out = 0, lo = -128, hi = 127;
  int8_t* y = nullptr;
  int64_t ldy = 0;
};

#if defined(EP_HAVE_AVX2)
namespace avx2 {
void qgemm_rows(const QGemmAvx2Args& a);
void qspmm_rows(const QSpmmAvx2Args& a);
// B [k, n] (int8 rows ldb apart) as qgemm_rows reads the weights W = B^T (pack_gemm_s8 of W
// with tile 16 and k-group 2, without the transpose), and colsum[j] = sum over kk of B[kk, j]
// for j < n
void pack_kn_s8(const int8_t* b, int64_t ldb, int64_t k, int64_t n, int8_t* out, int32_t* colsum);
// Rows [0, n) of x (K int8 each, stride ldx; n <= 32) as QSpmmAvx2Args::xp wants them
void pair_rows(const int8_t* x, int64_t ldx, int64_t n, int64_t k, int64_t ldn, int32_t* xp);
// QDwRowArgs's rows 8 channels at a time (vnni unused; bias, mult, shift and fr's arrays read up
// to channel C rounded down to 8, the last C % 8 channels taking the portable steps)
void qdw_rows(const QDwRowArgs& a);
// QUANTIZE and DEQUANTIZE, the same bits as the portable loops (as avx512::quantize_f32 and
// avx512::dequantize_s8)
void quantize_f32(const float* x, int64_t n, float scale, int32_t zout, int8_t* y);
void dequantize_s8(const int8_t* x, int64_t n, float scale, int32_t zin, float* y);
// y[i] = lut[uint8(x[i])] for a 256-byte table, 32 values at a time through byte shuffles
void lut_s8(const int8_t* x, int64_t n, const int8_t* lut, int8_t* y);
// One row of the fused int8 softmax's float input (QSoftmaxRows): y[i] = (scale * (x[i] - zin))
// [* *mul] [+ bias[i * bias_step]], bias_step 0 or 1, each step rounded as the separate
// DEQUANTIZE, MUL and ADD passes round it
void softmax_input_row(const int8_t* x, int64_t n, float scale, int32_t zin, const float* mul,
                       const float* bias, int64_t bias_step, float* y);
// QAddArgs's ADD and MUL of equal shapes 8 values at a time (the tables and fo unused)
void qadd(const QAddArgs& a);
void qmul(const QAddArgs& a);
}  // namespace avx2
#endif

#if defined(EP_HAVE_AVX512)
namespace avx512 {
void qspmm_vnni(const QSpmmVnniArgs& a);
void qspmv_groups(const QSpmvGroupArgs& a);
// The quads of rows [0, n) of x (K bytes each, stride ldx) as QSpmmVnniArgs::xq wants them:
// xq[q * ldn + r] = the 4 bytes of x[r, 4q..4q+3] ^ 0x80 each (bytes past K: 0x80, which meet zero
// weights). Rows n .. round16(n) get the 0x80 bytes too; ldn >= round16(n).
void quad_rows(const int8_t* x, int64_t ldx, int64_t n, int64_t k, int64_t ldn, uint32_t* xq);
void qdw_rows(const QDwRowArgs& a);
void qadd(const QAddArgs& a);
// The same bits from the inputs' tables (a.ta, a.tb) and the float form of the output's
// requantization (a.fo): byte permutes instead of two of the three requantizations per value
// (check the CPU has VBMI first)
void qadd_tables(const QAddArgs& a);
// y = clamp(zy + mbqm((a - za) * (b - zb), om, os)): TFLite's int8 MUL (reads om / os, and fo
// when set: the float form of that requantization)
void qmul(const QAddArgs& a);
// The im2col rows of n pixels whose taps all lie inside the input (one group, no column dilation;
// kernel rows row_bytes apart): pixel p takes kh runs of len (<= 64) bytes, run ky at
// x + p * step + ky * row_bytes, into dst + p * ldc, and zeros in its last 4 bytes first (past K
// they meet zero weights)
void im2col_pixels_s8(const int8_t* x, int64_t row_bytes, int64_t kh, int64_t len, int64_t step,
                      int64_t n, int8_t* dst, int64_t ldc);
// out[j] = sum over rows r < n of x[r * cols + j], j < cols (n < 2^24, so int32 holds it): the
// sums of a global pool over H and W in NHWC, 64 columns at a time in int16 for up to 256 rows
void column_sums_s8(const int8_t* x, int64_t n, int64_t cols, int32_t* out);
// y[i] = lut[uint8(x[i])] with AVX-512 VBMI byte permutes (check the CPU has VBMI first)
void lut_s8_vbmi(const int8_t* x, int64_t n, const int8_t* lut, int8_t* y);
// One output row of an int8 MAX_POOL_2D (NHWC, C channels, input and output quantized alike):
// y[ox, c] = clamp(max over the taps inside the image of x[iy, ix, c], lo, hi); `x` is the batch
// image [H, W, C], taps start at (oy * sh - pt, ox * sw - pl). A window with no tap inside gives
// clamp(-128), as the portable loop.
void max_pool_row_s8(const int8_t* x, int64_t h, int64_t w, int64_t c, int64_t fh, int64_t fw,
                     int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t oy, int64_t ow,
                     int8_t lo, int8_t hi, int8_t* y);
// An activation B[K, N] (row stride N) as GEMM weights: out is pack_qgemm_vnni's layout of
// W[j, k] = B[k, j] (round16(N) * kp bytes), and col_sums[j] = sum_k B[k, j] for j < N
void pack_kn_vnni(const int8_t* b, int64_t k, int64_t n, int64_t kp, int8_t* out,
                  int32_t* col_sums);
// out[r] = sum_k (x[r * ld + k] + 128), k < K: the row sums of int8 rows read as uint8
void row_sums_u8(const int8_t* x, int64_t rows, int64_t k, int64_t ld, int32_t* out);
// The fused int8 softmax of `rows` rows of n (QSoftmaxRows): per row, t = float(x - z_in) * s_in,
// times `scale` (when scaled), plus bias[bias_off[r] + j * bias_step] (when bias), then the float
// softmax_row's steps (vec_impl.h) and QUANTIZE's (quantize_f32) in registers and a buffer
// `buf` of 4 rows: each value the same float operations in the same order as the unfused
// operators, so the same bits.
struct QSoftmaxRowsArgs {
  const int8_t* x = nullptr;
  int8_t* y = nullptr;
  int64_t n = 0, rows = 0;
  float s_in = 1, scale = 1, beta = 1, s_out = 1;
  int32_t z_in = 0, z_out = 0;
  bool scaled = false;
  const float* bias = nullptr;  // or none
  const int64_t* bias_off = nullptr;
  int64_t bias_step = 0;
  float* buf = nullptr;
};
void softmax_rows_s8(const QSoftmaxRowsArgs& a);
void qgemm_vnni(const QGemmVnniArgs& a);
// float -> int8 QUANTIZE, the same bits as QQuantize's portable loop (TFLite's AffineQuantize)
void quantize_f32(const float* x, int64_t n, float scale, int32_t zout, int8_t* y);
// int8 -> float DEQUANTIZE, the same bits as QDequantize's portable loop
void dequantize_s8(const int8_t* x, int64_t n, float scale, int32_t zin, float* y);
}  // namespace avx512
#endif

}  // namespace rt
}  // namespace ep
