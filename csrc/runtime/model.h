// The loaded form of a .tflite file: tensors with shapes, types and (for constants) data, and the
// operators of subgraph 0 in execution order, every index and size already validated.
//
// Consumes: the bytes of a .tflite file (untrusted). Produces: a Model whose every tensor index,
// shape and buffer size has been checked, or a ModelError naming what is wrong and where.
// Invariants after load_model returns: op inputs/outputs index existing tensors (optional inputs
// are -1), constant tensors hold exactly elems * element size bytes, shapes have no negative
// dimension and fewer than 2^31 elements, and op-specific input counts are right.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ep {
namespace rt {

// A file the runtime cannot load: the message says what is wrong and where ("tensor 5 'conv1':
// ...").
class ModelError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};
// A valid file that uses something this runtime does not run (an op, a type).
class UnsupportedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// A run whose input data the model cannot take (a token id outside the embedding table): the
// run stops before any out-of-range read; the message names the operator and the value.
class InputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// TFLite's TensorType values for the types we know.
enum class DType : int8_t {
  f32 = 0,
  f16 = 1,
  i32 = 2,
  u8 = 3,
  i64 = 4,
  boolean = 6,
  i16 = 7,
  i8 = 9,
  unknown = -1
};
int dtype_size(DType t);  // bytes per element; 0 for unknown
const char* dtype_name(DType t);
// the types a model's inputs and outputs may have: float32 data, int32/int64 token ids and masks,
// bool masks (int8 I/O files are refused: their QUANTIZE/DEQUANTIZE live outside the graph)
bool io_type(DType t);

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t elems = 1;
  DType type = DType::unknown;
  // constant data (little-endian, as in the file), or nullptr for an activation
  const uint8_t* data = nullptr;
  std::vector<uint8_t> owned;  // data made at load (densified sparse, fp16 -> fp32), if any
  bool sparse_source = false;  // the data came from TFLite's sparse encoding
  // affine quantization, checked at load: real = scale * (q - zero_point); empty when the tensor
  // has none; one entry per tensor, or one per index of quantized_dimension (per channel). Every
  // scale is positive and finite, every zero point fits the tensor's integer type.
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  int quantized_dimension = 0;
  bool quantized() const { return !scale.empty(); }
  bool is_const() const { return data != nullptr; }
  int64_t bytes() const { return elems * dtype_size(type); }
  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(data);
  }
};

enum class Padding { same, valid };
enum class FusedAct { none, relu, relu_n1_to_1, relu6 };  // fused TANH is refused at load

// TFLite builtin operator codes we run.
enum class OpCode : int32_t {
  add = 0,
  average_pool_2d = 1,
  concatenation = 2,
  conv_2d = 3,
  depthwise_conv_2d = 4,
  dequantize = 6,
  fully_connected = 9,
  logistic = 14,
  max_pool_2d = 17,
  mul = 18,
  relu = 19,
  relu_n1_to_1 = 20,
  relu6 = 21,
  reshape = 22,
  softmax = 25,
  tanh = 28,
  pad = 34,
  gather = 36,
  transpose = 39,
  mean = 40,
  sum = 74,
  sub = 41,
  div = 42,
  squeeze = 43,
  strided_slice = 45,
  cast = 53,
  maximum = 55,
  minimum = 57,
  less = 58,
  neg = 59,
  padv2 = 60,
  greater = 61,
  greater_equal = 62,
  less_equal = 63,
  expand_dims = 70,
  equal = 71,
  not_equal = 72,
  sqrt = 75,
  rsqrt = 76,
  pow = 78,
  abs = 101,
  split_v = 102,
  logical_or = 84,
  logical_and = 86,
  logical_not = 87,
  transpose_conv = 67,
  cumsum = 128,
  resize_bilinear = 23,
  resize_nearest_neighbor = 97,
  arg_max = 56,
  quantize = 114,
  hard_swish = 117,
  select_v2 = 123,
  densify = 124,
  batch_matmul = 126,
  broadcast_to = 130,
  gelu = 150,
  floor = 8,
  exp = 47,
  log_softmax = 50,
  prelu = 54,
  log = 73,
  reduce_max = 82,
  reduce_min = 89,
  leaky_relu = 98,
  mirror_pad = 100,
  elu = 111,
  ceil = 104,
  round = 116,
  sign = 158,
  sin = 66,
  cos = 108,
  atan2 = 156,
};
const char* op_name(int32_t code);  // "CONV_2D", ... or "BUILTIN_<n>"

struct OpDesc {
  OpCode code;
  int index = 0;                     // position in the file's operator list (messages name it)
  std::vector<int> inputs, outputs;  // -1: an omitted optional input
  // options (those of the op's table; defaults as in TFLite's schema)
  Padding padding = Padding::same;
  int stride_w = 1, stride_h = 1, dilation_w = 1, dilation_h = 1;
  int filter_w = 1, filter_h = 1;
  int depth_multiplier = 1;
  FusedAct act = FusedAct::none;
  int axis = 0;
  bool keep_dims = false;
  float beta = 1.0f;
  // STRIDED_SLICE (bit i: dimension i)
  int32_t begin_mask = 0, end_mask = 0, ellipsis_mask = 0, new_axis_mask = 0, shrink_axis_mask = 0;
  bool slice_offset = false;
  // BATCH_MATMUL: use A / B transposed (their last two dimensions); GATHER: leading dimensions
  // params and indices share; GELU: the tanh form instead of erf
  bool adj_x = false, adj_y = false, approximate = false;
  // CUMSUM: the first sum leaves out its own element / the sums run from the end
  bool exclusive = false, reverse = false;
  // RESIZE_*: corner pixels aligned / pixel centres at +0.5
  bool align_corners = false, half_pixel_centers = false;
  // set by the planner: a SELECT_V2 fused with its NOT_EQUAL(x, x) into "NaN -> constant",
  // inputs {x, constant}
  bool nan_fill = false;
  // set by the planner: a MUL(x, LOGISTIC(x)) fused into one pass (SiLU); the op becomes a
  // LOGISTIC with this flag and input {x}, at the MUL's place. silu_gate: the dropped LOGISTIC's
  // output tensor, never written, kept for its quantization (int8 files)
  bool silu = false;
  int silu_gate = -1;
  // set by the planner: DEQUANTIZE -> a float elementwise op -> QUANTIZE, each middle tensor read
  // once, fused into the QUANTIZE, which then reads the DEQUANTIZE's int8 input (inputs {x}) and
  // maps each byte through a 256-entry table made by the three operators' own code; table_op is
  // the middle operator (GELU keeps `approximate`)
  bool float_table = false;
  OpCode table_op = OpCode::quantize;
  // set by the planner: DEQUANTIZE -> [MUL by a scalar constant] -> [ADD of a float tensor] ->
  // SOFTMAX -> QUANTIZE, each middle tensor read once (the probabilities of int8 attention),
  // fused into the QUANTIZE, which then reads {x} or {x, the ADD's other operand} and runs the
  // five operators' own float steps one row at a time; softmax_scale is the MUL's constant
  // (softmax_scaled) and `beta` the SOFTMAX's
  bool softmax_rows = false, softmax_scaled = false;
  float softmax_scale = 1.0f;
  int batch_dims = 0;
  // SPLIT_V: the file's operator has split_parts outputs; this part writes output split_part
  int split_parts = 1, split_part = 0;
  // set by the planner when it folds a zero PAD of H and W into a VALID convolution: the
  // explicit padding {top, bottom, left, right} replaces `padding`
  bool explicit_pad = false;
  int64_t pad[4] = {0, 0, 0, 0};
  float pad_value = 0.0f;  // what the folded PAD wrote (a MAX_POOL_2D's may be any constant)
  float alpha = 0.0f;      // LEAKY_RELU: the slope below zero (TFLite's default 0)
  bool symmetric = false;  // MIRROR_PAD: SYMMETRIC (edges repeated) instead of REFLECT
};

struct Model {
  std::vector<uint8_t> file;  // the bytes every constant `data` points into
  std::vector<Tensor> tensors;
  std::vector<OpDesc> ops;
  std::vector<int> inputs, outputs;
};

// Verifies the flatbuffer (before any offset is read), then the semantics above. DENSIFY and
// DEQUANTIZE of constants are done here (their outputs become constants and the ops are dropped).
// Throws ModelError (bad file) or UnsupportedError (valid, but not runnable here).
std::unique_ptr<Model> load_model(const uint8_t* data, size_t size);
std::unique_ptr<Model> load_model_file(const std::string& path);

}  // namespace rt
}  // namespace ep
