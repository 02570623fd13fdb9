// load_model (model.h): the flatbuffers Verifier generated from tflite_subset.fbs runs over the
// whole file first; only then are tables read, and every index, shape and size is checked before
// it is used. Sparse constants (TFLite's TACO-style encoding) are densified here with every
// segment and index bounds-checked; fp16 constants feeding DEQUANTIZE become fp32.
//
// Consumes: untrusted bytes. Produces: a Model, or a ModelError / UnsupportedError.
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>
#include <vector>

#include "runtime/model.h"
#include "tflite_subset_generated.h"

namespace ep {
namespace rt {

int dtype_size(DType t) {
  switch (t) {
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f16:
    case DType::i16:
      return 2;
    case DType::u8:
    case DType::i8:
    case DType::boolean:
      return 1;
    case DType::i64:
      return 8;
    default:
      return 0;
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "float32";
    case DType::f16:
      return "float16";
    case DType::i32:
      return "int32";
    case DType::u8:
      return "uint8";
    case DType::i64:
      return "int64";
    case DType::boolean:
      return "bool";
    case DType::i16:
      return "int16";
    case DType::i8:
      return "int8";
    default:
      return "unknown";
  }
}

bool io_type(DType t) {
  // int8: the integer I/O of a full-int8 file (`export --io int8`), quantized as the file says
  return t == DType::f32 || t == DType::i8 || t == DType::i32 || t == DType::i64 ||
         t == DType::boolean;
}

const char* op_name(int32_t code) {
  switch (OpCode(code)) {
#define EP_OPNAME(c, s) \
  case OpCode::c:       \
    return s;
    EP_OPNAME(add, "ADD")
    EP_OPNAME(average_pool_2d, "AVERAGE_POOL_2D")
    EP_OPNAME(concatenation, "CONCATENATION")
    EP_OPNAME(conv_2d, "CONV_2D")
    EP_OPNAME(depthwise_conv_2d, "DEPTHWISE_CONV_2D")
    EP_OPNAME(dequantize, "DEQUANTIZE")
    EP_OPNAME(fully_connected, "FULLY_CONNECTED")
    EP_OPNAME(logistic, "LOGISTIC")
    EP_OPNAME(max_pool_2d, "MAX_POOL_2D")
    EP_OPNAME(mul, "MUL")
    EP_OPNAME(relu, "RELU")
    EP_OPNAME(relu_n1_to_1, "RELU_N1_TO_1")
    EP_OPNAME(relu6, "RELU6")
    EP_OPNAME(reshape, "RESHAPE")
    EP_OPNAME(softmax, "SOFTMAX")
    EP_OPNAME(tanh, "TANH")
    EP_OPNAME(pad, "PAD")
    EP_OPNAME(transpose, "TRANSPOSE")
    EP_OPNAME(mean, "MEAN")
    EP_OPNAME(sum, "SUM")
    EP_OPNAME(sub, "SUB")
    EP_OPNAME(div, "DIV")
    EP_OPNAME(squeeze, "SQUEEZE")
    EP_OPNAME(strided_slice, "STRIDED_SLICE")
    EP_OPNAME(padv2, "PADV2")
    EP_OPNAME(expand_dims, "EXPAND_DIMS")
    EP_OPNAME(quantize, "QUANTIZE")
    EP_OPNAME(hard_swish, "HARD_SWISH")
    EP_OPNAME(densify, "DENSIFY")
    EP_OPNAME(gather, "GATHER")
    EP_OPNAME(cumsum, "CUMSUM")
    EP_OPNAME(resize_bilinear, "RESIZE_BILINEAR")
    EP_OPNAME(resize_nearest_neighbor, "RESIZE_NEAREST_NEIGHBOR")
    EP_OPNAME(arg_max, "ARG_MAX")
    EP_OPNAME(cast, "CAST")
    EP_OPNAME(maximum, "MAXIMUM")
    EP_OPNAME(minimum, "MINIMUM")
    EP_OPNAME(less, "LESS")
    EP_OPNAME(neg, "NEG")
    EP_OPNAME(greater, "GREATER")
    EP_OPNAME(greater_equal, "GREATER_EQUAL")
    EP_OPNAME(less_equal, "LESS_EQUAL")
    EP_OPNAME(equal, "EQUAL")
    EP_OPNAME(not_equal, "NOT_EQUAL")
    EP_OPNAME(sqrt, "SQRT")
    EP_OPNAME(rsqrt, "RSQRT")
    EP_OPNAME(logical_or, "LOGICAL_OR")
    EP_OPNAME(logical_and, "LOGICAL_AND")
    EP_OPNAME(logical_not, "LOGICAL_NOT")
    EP_OPNAME(select_v2, "SELECT_V2")
    EP_OPNAME(batch_matmul, "BATCH_MATMUL")
    EP_OPNAME(broadcast_to, "BROADCAST_TO")
    EP_OPNAME(gelu, "GELU")
    EP_OPNAME(pow, "POW")
    EP_OPNAME(split_v, "SPLIT_V")
    EP_OPNAME(abs, "ABS")
    EP_OPNAME(transpose_conv, "TRANSPOSE_CONV")
    EP_OPNAME(exp, "EXP")
    EP_OPNAME(floor, "FLOOR")
    EP_OPNAME(ceil, "CEIL")
    EP_OPNAME(round, "ROUND")
    EP_OPNAME(sign, "SIGN")
    EP_OPNAME(sin, "SIN")
    EP_OPNAME(cos, "COS")
    EP_OPNAME(atan2, "ATAN2")
    EP_OPNAME(log_softmax, "LOG_SOFTMAX")
    EP_OPNAME(reduce_max, "REDUCE_MAX")
    EP_OPNAME(reduce_min, "REDUCE_MIN")
    EP_OPNAME(prelu, "PRELU")
    EP_OPNAME(log, "LOG")
    EP_OPNAME(leaky_relu, "LEAKY_RELU")
    EP_OPNAME(mirror_pad, "MIRROR_PAD")
    EP_OPNAME(elu, "ELU")
#undef EP_OPNAME
  }
  static thread_local char buf[32];
  std::snprintf(buf, sizeof buf, "BUILTIN_%d", int(code));
  return buf;
}

namespace {

// The elements of a verified vector, copied byte-wise. The flatbuffers verifier checks a
// vector's alignment only to its 4-byte length, and the accessors read each element in place: a
// crafted file can put a [long] vector (zero points) at an address that is not 8-byte aligned,
// where an in-place int64 read is undefined behaviour. memcpy reads any address; flatbuffers
// stores little-endian, which is every host we build for (x86-64, aarch64).
template <class T>
std::vector<T> copy_elements(const flatbuffers::Vector<T>& v) {
  static_assert(std::is_arithmetic<T>::value, "scalars only");
  std::vector<T> out(v.size());
  if (!out.empty()) std::memcpy(out.data(), v.Data(), out.size() * sizeof(T));
  return out;
}

constexpr int kMaxRank = 6;
constexpr int64_t kMaxElems = int64_t(1) << 31;

bool known_op(int32_t code) {
  std::string n = op_name(code);
  return n.rfind("BUILTIN_", 0) != 0;
}

std::string tensor_where(int index, const std::string& name) {
  return "tensor " + std::to_string(index) + (name.empty() ? "" : " '" + name + "'");
}

[[noreturn]] void bad(const std::string& msg) { throw ModelError(msg); }

FusedAct fused(eptfl::ActivationFunctionType a, const std::string& where) {
  switch (a) {
    case eptfl::ActivationFunctionType_NONE:
      return FusedAct::none;
    case eptfl::ActivationFunctionType_RELU:
      return FusedAct::relu;
    case eptfl::ActivationFunctionType_RELU_N1_TO_1:
      return FusedAct::relu_n1_to_1;
    case eptfl::ActivationFunctionType_RELU6:
      return FusedAct::relu6;
    case eptfl::ActivationFunctionType_TANH:
      // TFLite's own kernels clamp only the ReLU family and skip a fused TANH on most ops: a
      // file with one has no single meaning, so it is refused
      throw UnsupportedError(where +
                             ": fused TANH activation (LiteRT ignores it on this op); "
                             "export the TANH as its own operator");
    default:
      throw UnsupportedError(where + ": fused activation " + std::to_string(int(a)) +
                             " is not supported");
  }
}

Padding padding_of(eptfl::Padding p, const std::string& where) {
  if (p == eptfl::Padding_SAME) return Padding::same;
  if (p == eptfl::Padding_VALID) return Padding::valid;
  bad(where + ": padding " + std::to_string(int(p)) + " is neither SAME nor VALID");
}

// One level of a sparse index vector (Int32/Uint16/Uint8), read through bounds-checked access.
struct IndexVec {
  const flatbuffers::Vector<int32_t>* i32 = nullptr;
  const flatbuffers::Vector<uint16_t>* u16 = nullptr;
  const flatbuffers::Vector<uint8_t>* u8 = nullptr;
  int64_t size() const { return i32 ? i32->size() : u16 ? u16->size() : u8 ? u8->size() : 0; }
  int64_t at(int64_t i) const {
    return i32   ? int64_t(i32->Get(flatbuffers::uoffset_t(i)))
           : u16 ? int64_t(u16->Get(flatbuffers::uoffset_t(i)))
                 : int64_t(u8->Get(flatbuffers::uoffset_t(i)));
  }
};

IndexVec index_vec(eptfl::SparseIndexVector type, const void* v) {
  IndexVec r;
  if (!v) return r;
  switch (type) {
    case eptfl::SparseIndexVector_Int32Vector:
      r.i32 = static_cast<const eptfl::Int32Vector*>(v)->values();
      break;
    case eptfl::SparseIndexVector_Uint16Vector:
      r.u16 = static_cast<const eptfl::Uint16Vector*>(v)->values();
      break;
    case eptfl::SparseIndexVector_Uint8Vector:
      r.u8 = static_cast<const eptfl::Uint8Vector*>(v)->values();
      break;
    default:
      break;
  }
  return r;
}

// Densifies TFLite's sparse encoding: dims in traversal order, each DENSE (size only) or
// SPARSE_CSR (segments per position of the previous level, then indices); a k-dimensional block
// splits the dims block_map names. The value of a leaf is the leaf's position in the last level.
class Densifier {
 public:
  Densifier(const eptfl::SparsityParameters* sp, const std::vector<int64_t>& shape,
            const std::string& where)
      : where_(where), shape_(shape) {
    const int n = int(shape.size());
    const auto* order = sp->traversal_order();
    const auto* dims = sp->dim_metadata();
    if (!order || !dims || order->size() != dims->size() || int(order->size()) < n ||
        int(order->size()) > 2 * n)
      bad(where +
          ": sparsity needs traversal_order and dim_metadata of equal length, between "
          "the tensor's rank and twice it");
    levels_ = int(order->size());
    const int k = levels_ - n;
    const auto* bmap = sp->block_map();
    if (k > 0 && (!bmap || int(bmap->size()) != k))
      bad(where + ": sparsity block_map must name one tensor dimension per block dimension");
    std::vector<bool> seen(levels_, false);
    order_.resize(levels_);
    for (int l = 0; l < levels_; ++l) {
      const int o = order->Get(l);
      if (o < 0 || o >= levels_ || seen[o])
        bad(where + ": sparsity traversal_order is not a permutation");
      seen[o] = true;
      order_[l] = o;
    }
    // the size of each expanded dim (d < n: blocks along d; n + b: inside a block)
    block_of_.assign(n, -1);
    size_.assign(levels_, 0);
    for (int d = 0; d < n; ++d) size_[d] = shape[d];
    for (int b = 0; b < k; ++b) {
      const int d = bmap->Get(b);
      if (d < 0 || d >= n || block_of_[d] >= 0)
        bad(where + ": sparsity block_map names a dimension twice or out of range");
      block_of_[d] = b;
    }
    for (int l = 0; l < levels_; ++l) {
      const auto* dm = dims->Get(l);
      if (!dm) bad(where + ": sparsity dim_metadata has a null entry");
      if (order_[l] >= n) {
        if (dm->format() != eptfl::DimensionType_DENSE || dm->dense_size() <= 0)
          bad(where + ": a block dimension must be DENSE with a positive size");
        size_[order_[l]] = dm->dense_size();
      }
    }
    for (int b = 0; b < k; ++b) {
      const int d = bmap->Get(b);
      const int64_t bs = size_[n + b];
      if (bs <= 0 || shape[d] % bs != 0)
        bad(where + ": block size " + std::to_string(bs) + " does not divide dimension " +
            std::to_string(d));
      size_[d] = shape[d] / bs;
    }
    level_.resize(levels_);
    for (int l = 0; l < levels_; ++l) {
      const auto* dm = dims->Get(l);
      Level& lv = level_[l];
      lv.sparse = dm->format() == eptfl::DimensionType_SPARSE_CSR;
      if (!lv.sparse && dm->format() != eptfl::DimensionType_DENSE)
        bad(where + ": sparsity dimension format " + std::to_string(int(dm->format())) +
            " is unknown");
      if (!lv.sparse) {
        if (dm->dense_size() != size_[order_[l]])
          bad(where + ": DENSE sparsity dimension " + std::to_string(l) + " has size " +
              std::to_string(dm->dense_size()) + ", the tensor needs " +
              std::to_string(size_[order_[l]]));
      } else {
        lv.seg = index_vec(dm->array_segments_type(), dm->array_segments());
        lv.idx = index_vec(dm->array_indices_type(), dm->array_indices());
        if (lv.seg.size() == 0)
          bad(where + ": SPARSE_CSR dimension " + std::to_string(l) + " has no array_segments");
      }
    }
  }

  // values: the stored nonzeros (elem bytes each); out: the dense tensor (zero filled)
  void run(const uint8_t* values, int64_t count, int elem, uint8_t* out) {
    values_ = values;
    count_ = count;
    elem_ = elem;
    out_ = out;
    coords_.assign(levels_, 0);
    leaves_ = 0;
    walk(0, 0);
    if (leaves_ != count_)
      bad(where_ + ": the sparse encoding addresses " + std::to_string(leaves_) +
          " values but the buffer holds " + std::to_string(count_));
  }

 private:
  struct Level {
    bool sparse = false;
    IndexVec seg, idx;
  };

  void walk(int l, int64_t pos) {
    if (l == levels_) return leaf(pos);
    const Level& lv = level_[l];
    const int64_t size = size_[order_[l]];
    if (!lv.sparse) {
      for (int64_t i = 0; i < size; ++i) {
        coords_[order_[l]] = i;
        walk(l + 1, pos * size + i);
      }
      return;
    }
    if (pos + 1 >= lv.seg.size())
      bad(where_ + ": sparse dimension " + std::to_string(l) + " has too few array_segments");
    const int64_t s0 = lv.seg.at(pos), s1 = lv.seg.at(pos + 1);
    if (s0 < 0 || s1 < s0 || s1 > lv.idx.size())
      bad(where_ + ": sparse dimension " + std::to_string(l) +
          " has array_segments out of order or past its array_indices");
    for (int64_t j = s0; j < s1; ++j) {
      const int64_t c = lv.idx.at(j);
      if (c < 0 || c >= size)
        bad(where_ + ": sparse dimension " + std::to_string(l) + " has index " + std::to_string(c) +
            " outside [0, " + std::to_string(size) + ")");
      coords_[order_[l]] = c;
      walk(l + 1, j);
    }
  }

  void leaf(int64_t pos) {
    if (pos < 0 || pos >= count_)
      bad(where_ + ": the sparse encoding addresses value " + std::to_string(pos) +
          " of a buffer of " + std::to_string(count_));
    ++leaves_;
    const int n = int(shape_.size());
    int64_t flat = 0;
    for (int d = 0; d < n; ++d) {
      int64_t c = coords_[d];
      if (block_of_[d] >= 0) c = c * size_[n + block_of_[d]] + coords_[n + block_of_[d]];
      flat = flat * shape_[d] + c;
    }
    std::memcpy(out_ + flat * elem_, values_ + pos * elem_, size_t(elem_));
  }

  std::string where_;
  std::vector<int64_t> shape_;
  int levels_ = 0;
  std::vector<int> order_, block_of_;
  std::vector<int64_t> size_, coords_;
  std::vector<Level> level_;
  const uint8_t* values_ = nullptr;
  uint8_t* out_ = nullptr;
  int64_t count_ = 0, leaves_ = 0;
  int elem_ = 4;
};

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  float f;
  if (exp == 0)
    f = std::ldexp(float(mant), -24);
  else if (exp == 31)
    f = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else
    f = std::ldexp(float(mant | 0x400), exp - 25);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= sign;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Affine quantization parameters must be usable as they stand: as many zero points as scales,
// scales positive and finite, zero points inside the integer type, and a per-channel set sized
// by its quantized dimension. A file breaking this would make every kernel's arithmetic wrong.
void check_quantization(const Tensor& t, const std::string& where) {
  if (t.scale.empty() && t.zero_point.empty()) return;
  if (t.scale.size() != t.zero_point.size())
    bad(where + ": quantization has " + std::to_string(t.scale.size()) + " scales but " +
        std::to_string(t.zero_point.size()) + " zero points");
  for (float s : t.scale)
    if (!(std::isfinite(s) && s > 0.0f)) {
      std::ostringstream v;
      v << s;
      bad(where + ": quantization scale " + v.str() + " is not a positive finite number");
    }
  int64_t lo = 0, hi = -1;
  switch (t.type) {
    case DType::i8:
      lo = -128, hi = 127;
      break;
    case DType::u8:
      lo = 0, hi = 255;
      break;
    case DType::i16:
      lo = -32768, hi = 32767;
      break;
    case DType::i32:
      lo = INT32_MIN, hi = INT32_MAX;
      break;
    default:
      break;
  }
  for (int64_t z : t.zero_point)
    if (hi >= lo && (z < lo || z > hi))
      bad(where + ": quantization zero point " + std::to_string(z) + " is outside the " +
          dtype_name(t.type) + " range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  if (t.scale.size() > 1) {
    const int qd = t.quantized_dimension;
    if (qd < 0 || qd >= int(t.shape.size()))
      bad(where + ": quantized_dimension " + std::to_string(qd) + " is outside the tensor's rank " +
          std::to_string(t.shape.size()));
    if (int64_t(t.scale.size()) != t.shape[qd])
      bad(where + ": " + std::to_string(t.scale.size()) +
          " per-channel scales for a quantized dimension of size " + std::to_string(t.shape[qd]));
  }
}

void read_tensor(const eptfl::Tensor* t, int index, const eptfl::Model* m, size_t file_size,
                 Tensor& out) {
  if (!t) bad("tensor " + std::to_string(index) + " is null");
  out.name = t->name() ? t->name()->str() : "";
  const std::string where = tensor_where(index, out.name);
  out.type = DType(t->type());
  if (dtype_size(out.type) == 0)
    throw UnsupportedError(where + ": tensor type " + std::to_string(int(t->type())) +
                           " is not supported");
  if (t->shape()) {
    if (t->shape()->size() > kMaxRank)
      throw UnsupportedError(where + ": rank " + std::to_string(t->shape()->size()) + " is above " +
                             std::to_string(kMaxRank));
    for (int32_t d : *t->shape()) {
      if (d < 0)
        throw UnsupportedError(where + ": dimension " + std::to_string(d) +
                               " is dynamic; export with a fixed input shape");
      out.shape.push_back(d);
      out.elems *= d;
      if (out.elems >= kMaxElems) bad(where + ": shape has 2^31 elements or more");
    }
  }
  if (const auto* q = t->quantization()) {
    if (q->scale()) out.scale.assign(q->scale()->begin(), q->scale()->end());
    if (q->zero_point()) out.zero_point = copy_elements(*q->zero_point());
    out.quantized_dimension = q->quantized_dimension();
    check_quantization(out, where);
  }
  const uint32_t b = t->buffer();
  const auto* buffers = m->buffers();
  if (b == 0) {
    if (t->sparsity()) bad(where + ": a sparse tensor has no buffer");
    return;
  }
  if (!buffers || b >= buffers->size())
    bad(where + ": buffer index " + std::to_string(b) + " is out of range");
  const auto* buf = buffers->Get(b);
  if (!buf) bad(where + ": buffer " + std::to_string(b) + " is null");
  if (buf->offset() > 1 || buf->size() > 0)
    throw UnsupportedError(where +
                           ": data stored outside the flatbuffer (models over 2 GB) is not "
                           "supported");
  const auto* data = buf->data();
  if (!data || data->size() == 0) {
    if (t->sparsity()) bad(where + ": a sparse tensor has an empty buffer");
    return;
  }
  const int es = dtype_size(out.type);
  if (t->sparsity()) {
    if (data->size() % es != 0)
      bad(where + ": sparse buffer of " + std::to_string(data->size()) +
          " bytes is not a whole number of " + dtype_name(out.type) + " values");
    // a densified tensor is bounded by the file: no plausible sparsity stores under 1 value in
    // 1024, so a tiny hostile file cannot make us allocate gigabytes
    if (out.elems > 1024 * int64_t(file_size) + (int64_t(1) << 20))
      bad(where + ": sparse tensor of " + std::to_string(out.elems) +
          " elements is implausibly large for a file of " + std::to_string(file_size) + " bytes");
    Densifier dz(t->sparsity(), out.shape, where);
    out.owned.assign(size_t(out.bytes()), 0);
    dz.run(data->data(), int64_t(data->size()) / es, es, out.owned.data());
    out.data = out.owned.data();
    out.sparse_source = true;
    return;
  }
  if (int64_t(data->size()) != out.bytes())
    bad(where + ": buffer holds " + std::to_string(data->size()) + " bytes, shape and type need " +
        std::to_string(out.bytes()));
  if (reinterpret_cast<uintptr_t>(data->data()) % es != 0) {  // misaligned: keep an aligned copy
    out.owned.assign(data->data(), data->data() + data->size());
    out.data = out.owned.data();
  } else {
    out.data = data->data();
  }
}

int min_inputs(OpCode c) {
  switch (c) {
    case OpCode::conv_2d:
    case OpCode::depthwise_conv_2d:
      return 2;  // bias optional
    case OpCode::fully_connected:
    case OpCode::add:
    case OpCode::mul:
    case OpCode::sub:
    case OpCode::div:
    case OpCode::pad:
    case OpCode::padv2:
    case OpCode::transpose:
    case OpCode::mean:
    case OpCode::sum:
    case OpCode::reduce_max:
    case OpCode::reduce_min:
    case OpCode::gather:
    case OpCode::cumsum:
    case OpCode::resize_bilinear:
    case OpCode::resize_nearest_neighbor:
    case OpCode::arg_max:
    case OpCode::maximum:
    case OpCode::minimum:
    case OpCode::less:
    case OpCode::less_equal:
    case OpCode::greater:
    case OpCode::greater_equal:
    case OpCode::equal:
    case OpCode::not_equal:
    case OpCode::logical_or:
    case OpCode::logical_and:
    case OpCode::batch_matmul:
    case OpCode::broadcast_to:
    case OpCode::pow:
    case OpCode::prelu:
    case OpCode::atan2:
    case OpCode::mirror_pad:
      return 2;
    case OpCode::select_v2:
    case OpCode::split_v:
    case OpCode::transpose_conv:  // output_shape, weights, input; bias optional
      return 3;
    case OpCode::concatenation:
      return 1;
    case OpCode::strided_slice:
      return 4;
    default:
      return 1;
  }
}

void read_options(const eptfl::Operator* op, OpDesc& d, const std::string& where) {
  switch (d.code) {
    case OpCode::conv_2d:
      if (const auto* o = op->builtin_options_as_Conv2DOptions()) {
        d.padding = padding_of(o->padding(), where);
        d.stride_w = o->stride_w();
        d.stride_h = o->stride_h();
        d.dilation_w = o->dilation_w_factor();
        d.dilation_h = o->dilation_h_factor();
        d.act = fused(o->fused_activation_function(), where);
      } else {
        bad(where + ": CONV_2D has no Conv2DOptions");
      }
      break;
    case OpCode::depthwise_conv_2d:
      if (const auto* o = op->builtin_options_as_DepthwiseConv2DOptions()) {
        d.padding = padding_of(o->padding(), where);
        d.stride_w = o->stride_w();
        d.stride_h = o->stride_h();
        d.dilation_w = o->dilation_w_factor();
        d.dilation_h = o->dilation_h_factor();
        d.depth_multiplier = o->depth_multiplier();
        d.act = fused(o->fused_activation_function(), where);
      } else {
        bad(where + ": DEPTHWISE_CONV_2D has no DepthwiseConv2DOptions");
      }
      break;
    case OpCode::transpose_conv:
      if (const auto* o = op->builtin_options_as_TransposeConvOptions()) {
        d.padding = padding_of(o->padding(), where);
        d.stride_w = o->stride_w();
        d.stride_h = o->stride_h();
        d.act = fused(o->fused_activation_function(), where);
      } else {
        bad(where + ": TRANSPOSE_CONV has no TransposeConvOptions");
      }
      break;
    case OpCode::average_pool_2d:
    case OpCode::max_pool_2d:
      if (const auto* o = op->builtin_options_as_Pool2DOptions()) {
        d.padding = padding_of(o->padding(), where);
        d.stride_w = o->stride_w();
        d.stride_h = o->stride_h();
        d.filter_w = o->filter_width();
        d.filter_h = o->filter_height();
        d.act = fused(o->fused_activation_function(), where);
      } else {
        bad(where + ": a pool has no Pool2DOptions");
      }
      break;
    case OpCode::fully_connected:
      if (const auto* o = op->builtin_options_as_FullyConnectedOptions()) {
        d.act = fused(o->fused_activation_function(), where);
        if (o->weights_format() != 0)
          throw UnsupportedError(where + ": shuffled FULLY_CONNECTED weights are not supported");
        d.keep_dims = o->keep_num_dims();
      }
      break;
    case OpCode::softmax:
      if (const auto* o = op->builtin_options_as_SoftmaxOptions()) d.beta = o->beta();
      break;
    case OpCode::concatenation:
      if (const auto* o = op->builtin_options_as_ConcatenationOptions()) {
        d.axis = o->axis();
        d.act = fused(o->fused_activation_function(), where);
      }
      break;
    case OpCode::add:
      if (const auto* o = op->builtin_options_as_AddOptions())
        d.act = fused(o->fused_activation_function(), where);
      break;
    case OpCode::mul:
      if (const auto* o = op->builtin_options_as_MulOptions())
        d.act = fused(o->fused_activation_function(), where);
      break;
    case OpCode::sub:
      if (const auto* o = op->builtin_options_as_SubOptions())
        d.act = fused(o->fused_activation_function(), where);
      break;
    case OpCode::div:
      if (const auto* o = op->builtin_options_as_DivOptions())
        d.act = fused(o->fused_activation_function(), where);
      break;
    case OpCode::mean:
    case OpCode::sum:
    case OpCode::reduce_max:
    case OpCode::reduce_min:
      if (const auto* o = op->builtin_options_as_ReducerOptions()) d.keep_dims = o->keep_dims();
      break;
    case OpCode::strided_slice:
      if (const auto* o = op->builtin_options_as_StridedSliceOptions()) {
        d.begin_mask = o->begin_mask();
        d.end_mask = o->end_mask();
        d.ellipsis_mask = o->ellipsis_mask();
        d.new_axis_mask = o->new_axis_mask();
        d.shrink_axis_mask = o->shrink_axis_mask();
        d.slice_offset = o->offset();
      }
      break;
    case OpCode::gather:
      if (const auto* o = op->builtin_options_as_GatherOptions()) {
        d.axis = o->axis();
        d.batch_dims = o->batch_dims();
      }
      break;
    case OpCode::cumsum:
      if (const auto* o = op->builtin_options_as_CumsumOptions()) {
        d.exclusive = o->exclusive();
        d.reverse = o->reverse();
      }
      break;
    case OpCode::resize_bilinear:
      if (const auto* o = op->builtin_options_as_ResizeBilinearOptions()) {
        d.align_corners = o->align_corners();
        d.half_pixel_centers = o->half_pixel_centers();
      }
      break;
    case OpCode::resize_nearest_neighbor:
      if (const auto* o = op->builtin_options_as_ResizeNearestNeighborOptions()) {
        d.align_corners = o->align_corners();
        d.half_pixel_centers = o->half_pixel_centers();
      }
      break;
    case OpCode::batch_matmul:
      if (const auto* o = op->builtin_options_as_BatchMatMulOptions()) {
        d.adj_x = o->adj_x();
        d.adj_y = o->adj_y();
      }
      break;
    case OpCode::gelu:
      if (const auto* o = op->builtin_options_as_GeluOptions()) d.approximate = o->approximate();
      break;
    case OpCode::leaky_relu:
      if (const auto* o = op->builtin_options_as_LeakyReluOptions()) d.alpha = o->alpha();
      if (!std::isfinite(d.alpha)) bad(where + ": LEAKY_RELU alpha is not a finite number");
      break;
    case OpCode::mirror_pad: {
      const auto* o = op->builtin_options_as_MirrorPadOptions();
      const int mode = o ? int(o->mode()) : 0;
      if (mode != eptfl::MirrorPadMode_REFLECT && mode != eptfl::MirrorPadMode_SYMMETRIC)
        bad(where + ": MIRROR_PAD mode " + std::to_string(mode) +
            " is neither REFLECT nor SYMMETRIC");
      d.symmetric = mode == eptfl::MirrorPadMode_SYMMETRIC;
      break;
    }
    case OpCode::split_v: {  // TFLite refuses a count that differs from the outputs too
      const auto* o = op->builtin_options_as_SplitVOptions();
      if (!o || o->num_splits() != d.split_parts)
        bad(where + ": num_splits " + std::to_string(o ? o->num_splits() : 0) + " is not the " +
            std::to_string(d.split_parts) + " outputs");
      break;
    }
    default:
      break;
  }
}

// DENSIFY and DEQUANTIZE of a constant: the output becomes a constant, the op disappears.
bool fold_constant(Model& model, const OpDesc& d, const std::string& where) {
  if (d.code != OpCode::densify && d.code != OpCode::dequantize) return false;
  if (d.inputs.size() != 1 || d.outputs.size() != 1 || d.inputs[0] < 0)
    bad(where + ": needs one input and one output");
  const Tensor& in = model.tensors[d.inputs[0]];
  Tensor& out = model.tensors[d.outputs[0]];
  if (!in.is_const()) {
    if (d.code == OpCode::densify) bad(where + ": DENSIFY of a tensor that is not a constant");
    return false;  // a runtime DEQUANTIZE: an op
  }
  if (in.shape != out.shape) bad(where + ": input and output shapes differ");
  if (d.code == OpCode::densify) {
    if (in.type != out.type) bad(where + ": input and output types differ");
    out.owned.assign(in.data, in.data + in.bytes());
    out.sparse_source = in.sparse_source;
  } else {
    if (out.type != DType::f32) throw UnsupportedError(where + ": DEQUANTIZE to a non-float32");
    out.owned.resize(size_t(out.elems) * 4);
    float* o = reinterpret_cast<float*>(out.owned.data());
    if (in.type == DType::f16) {
      for (int64_t i = 0; i < in.elems; ++i) {
        uint16_t h;
        std::memcpy(&h, in.data + 2 * i, 2);
        o[i] = half_to_float(h);
      }
    } else if (in.type == DType::i8 || in.type == DType::u8) {
      const bool per_channel = in.scale.size() > 1;
      const int qd = in.quantized_dimension;
      if (in.scale.empty() || in.scale.size() != in.zero_point.size() ||
          (per_channel &&
           (qd < 0 || qd >= int(in.shape.size()) || int64_t(in.scale.size()) != in.shape[qd])))
        bad(where + ": quantization parameters do not match the tensor");
      int64_t inner = 1;
      if (per_channel)
        for (size_t i = qd + 1; i < in.shape.size(); ++i) inner *= in.shape[i];
      for (int64_t i = 0; i < in.elems; ++i) {
        const size_t c = per_channel ? size_t((i / inner) % in.shape[qd]) : 0;
        const int32_t q = in.type == DType::i8 ? int32_t(int8_t(in.data[i])) : int32_t(in.data[i]);
        o[i] = float(q - in.zero_point[c]) * in.scale[c];
      }
    } else {
      throw UnsupportedError(where + ": DEQUANTIZE from " + dtype_name(in.type));
    }
  }
  out.data = out.owned.data();
  return true;
}

}  // namespace

std::unique_ptr<Model> load_model(const uint8_t* bytes, size_t size) {
  if (!bytes || size < 8) bad("not a .tflite file: " + std::to_string(size) + " bytes");
  if (size > (size_t(1) << 31) - 1)
    throw UnsupportedError("files over 2 GB (data outside the flatbuffer) are not supported");
  auto model = std::make_unique<Model>();
  model->file.assign(bytes, bytes + size);  // owned, 16-byte aligned by the allocator
  const uint8_t* buf = model->file.data();
  if (!flatbuffers::BufferHasIdentifier(buf, eptfl::ModelIdentifier()))
    bad("not a .tflite file: the flatbuffer identifier is not TFL3");
  flatbuffers::Verifier::Options vo;
  vo.max_depth = 64;
  vo.max_tables = 10000000;
  flatbuffers::Verifier verifier(buf, size, vo);
  if (!eptfl::VerifyModelBuffer(verifier))
    bad("corrupt .tflite file: the flatbuffer verifier rejects it (truncated or damaged)");
  const eptfl::Model* m = eptfl::GetModel(buf);
  if (m->version() != 3)
    throw UnsupportedError("schema version " + std::to_string(m->version()) + " (expected 3)");
  if (!m->subgraphs() || m->subgraphs()->size() == 0) bad("the model has no subgraph");
  if (m->subgraphs()->size() > 1)
    throw UnsupportedError("models with several subgraphs (control flow) are not supported");
  const auto* sg = m->subgraphs()->Get(0);
  if (!sg || !sg->tensors()) bad("subgraph 0 has no tensors");
  const int nt = int(sg->tensors()->size());
  model->tensors.resize(nt);
  for (int i = 0; i < nt; ++i) read_tensor(sg->tensors()->Get(i), i, m, size, model->tensors[i]);

  auto tensor_index = [&](int32_t i, bool optional, const std::string& where) {
    if (optional && i == -1) return -1;
    if (i < 0 || i >= nt)
      bad(where + ": tensor index " + std::to_string(i) + " is out of range (0.." +
          std::to_string(nt - 1) + ")");
    return int(i);
  };
  if (!sg->inputs() || !sg->outputs() || sg->inputs()->size() == 0 || sg->outputs()->size() == 0)
    bad("subgraph 0 has no inputs or no outputs");
  std::vector<bool> written(nt, false);
  for (int32_t i : *sg->inputs()) {
    const int t = tensor_index(i, false, "subgraph input");
    if (model->tensors[t].is_const())
      bad(tensor_where(t, model->tensors[t].name) + ": an input holds data");
    if (!io_type(model->tensors[t].type))
      throw UnsupportedError(tensor_where(t, model->tensors[t].name) + ": input of type " +
                             dtype_name(model->tensors[t].type) +
                             " (model inputs are float32, int8, int32, int64 or bool)");
    written[t] = true;
    model->inputs.push_back(t);
  }
  for (int32_t i : *sg->outputs())
    model->outputs.push_back(tensor_index(i, false, "subgraph output"));

  const auto* codes = m->operator_codes();
  const int nops = sg->operators() ? int(sg->operators()->size()) : 0;
  for (int k = 0; k < nops; ++k) {
    const auto* op = sg->operators()->Get(k);
    std::string where = "operator " + std::to_string(k);
    if (!op) bad(where + " is null");
    if (!codes || op->opcode_index() >= codes->size())
      bad(where + ": opcode_index " + std::to_string(op->opcode_index()) + " is out of range");
    const auto* oc = codes->Get(op->opcode_index());
    const int32_t code = std::max<int32_t>(oc->deprecated_builtin_code(), oc->builtin_code());
    where += std::string(" (") + op_name(code) + ")";
    if (code == 32 || oc->custom_code())
      throw UnsupportedError(where + ": custom operators are not supported");
    if (!known_op(code))
      throw UnsupportedError(where + ": operator " + op_name(code) + " is not supported");
    OpDesc d;
    d.code = OpCode(code);
    d.index = k;
    // SPLIT_V is the one operator with several outputs: it becomes one single-output part per
    // output (OpDesc::split_part), so every later stage keeps one output per operator
    const bool split = d.code == OpCode::split_v;
    if (!op->inputs() || !op->outputs() || op->outputs()->size() == 0 ||
        (!split && op->outputs()->size() != 1) || op->outputs()->size() > 4096)
      bad(where + (split ? ": needs inputs and outputs" : ": needs inputs and exactly one output"));
    for (int32_t i : *op->inputs()) d.inputs.push_back(tensor_index(i, true, where));
    d.outputs.push_back(tensor_index(op->outputs()->Get(0), false, where));
    d.split_parts = int(op->outputs()->size());
    if (int(d.inputs.size()) < min_inputs(d.code) || d.inputs.empty() || d.inputs[0] < 0)
      bad(where + ": has " + std::to_string(d.inputs.size()) + " inputs, needs at least " +
          std::to_string(min_inputs(d.code)));
    read_options(op, d, where);
    for (size_t j = 0; j < d.inputs.size(); ++j) {
      const int t = d.inputs[j];
      if (t >= 0 && !model->tensors[t].is_const() && !written[t])
        bad(where + ": reads " + tensor_where(t, model->tensors[t].name) +
            " before any operator writes it");
    }
    for (int j = 0; j < d.split_parts; ++j) {
      OpDesc part = d;
      part.split_part = j;
      part.outputs = {tensor_index(op->outputs()->Get(flatbuffers::uoffset_t(j)), false, where)};
      const int o = part.outputs[0];
      if (written[o] || model->tensors[o].is_const())
        bad(where + ": writes " + tensor_where(o, model->tensors[o].name) +
            ", which is an input, a constant or written twice");
      if (fold_constant(*model, part, where)) continue;
      written[o] = true;
      model->ops.push_back(std::move(part));
    }
  }
  for (int t : model->outputs)
    if (!written[t] && !model->tensors[t].is_const())
      bad("subgraph output " + tensor_where(t, model->tensors[t].name) + " is never written");
  return model;
}

std::unique_ptr<Model> load_model_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ModelError("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string s = ss.str();
  try {
    return load_model(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(path + ": " + e.what());
  }
}

}  // namespace rt
}  // namespace ep
