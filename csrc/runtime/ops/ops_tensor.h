// The transformer tier's factory (ops_tensor.cpp): BATCH_MATMUL of two activations and the
// typed operators of attention masks and embeddings (GATHER, CAST, comparisons, LOGICAL_*,
// SELECT_V2, BROADCAST_TO), which also take int32, int64 and bool tensors.
//
// Consumes: a validated Model and one OpDesc. Produces: an Op, or throws ModelError /
// UnsupportedError naming the operator.
#pragma once

#include <memory>

#include "runtime/ops/ops.h"

namespace ep {
namespace rt {

std::unique_ptr<Op> make_tensor_op(const Model& model, const OpDesc& d, const OpOptions& o);

}  // namespace rt
}  // namespace ep
