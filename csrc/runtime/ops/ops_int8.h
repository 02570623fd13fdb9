// The int8 operators of the runtime: a model.int8.tflite (int8 activations, int8 weights per
// channel, int32 biases) runs with TFLite's integer arithmetic, so its outputs equal LiteRT's
// builtin reference kernels bit for bit (docs/runtime.md, "int8"). make_op (ops.h) hands every
// op whose data is int8 here; float ops of a mixed graph stay in ops.cpp.
//
// Consumes: a validated Model (model.h: quantization parameters checked at load). Produces: Op
// objects whose run() reads and writes int8 (and, for QUANTIZE / DEQUANTIZE, float) tensors
// through the context's pointers.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/ops/ops.h"

namespace ep {
namespace rt {

// Whether `d` runs as an int8 op: QUANTIZE / DEQUANTIZE, or an op reading or writing int8 data.
bool is_int8_op(const Model& model, const OpDesc& d);
// Throws ModelError for inconsistent shapes or quantization, UnsupportedError for variants
// (per-channel activations, int8 ops we do not run).
std::unique_ptr<Op> make_int8_op(const Model& model, const OpDesc& d, const OpOptions& o);

// TFLite's fixed-point requantization (exposed for the tests): a real multiplier as a Q31
// significand and a power-of-two exponent, and x * multiplier with TFLite's rounding.
void quantize_multiplier(double m, int32_t* significand, int* shift);
int32_t multiply_by_quantized_multiplier(int32_t x, int32_t significand, int shift);

}  // namespace rt
}  // namespace ep
