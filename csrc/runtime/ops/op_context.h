// The construction context every operator constructor checks the file through (fp32 and int8
// tiers alike): input/output lookup and the shape checks that must pass before any pointer
// arithmetic depends on a tensor. Errors name the operator.
//
// Consumes: a validated Model and one OpDesc. Produces: checked tensor references, or throws
// ModelError (the file is inconsistent) / UnsupportedError (valid, but not something we run).
#pragma once

#include <string>
#include <vector>

#include "runtime/model.h"

namespace ep {
namespace rt {

struct OpContext {
  const Model& m;
  const OpDesc& d;
  std::string where;

  [[noreturn]] void bad(const std::string& msg) const { throw ModelError(where + ": " + msg); }
  [[noreturn]] void unsupported(const std::string& msg) const {
    throw UnsupportedError(where + ": " + msg);
  }
  bool has_in(size_t i) const { return i < d.inputs.size() && d.inputs[i] >= 0; }
  const Tensor& in(size_t i) const {
    if (!has_in(i)) bad("input " + std::to_string(i) + " is missing");
    return m.tensors[d.inputs[i]];
  }
  const Tensor& out() const { return m.tensors[d.outputs[0]]; }
  const Tensor& constant(size_t i) const {
    const Tensor& t = in(i);
    if (!t.is_const()) bad("input " + std::to_string(i) + " must be a constant");
    return t;
  }
  void rank(const Tensor& t, size_t r) const {
    if (t.shape.size() != r)
      bad("tensor '" + t.name + "' has rank " + std::to_string(t.shape.size()) + ", expected " +
          std::to_string(r));
  }
  void shape_is(const Tensor& t, const std::vector<int64_t>& s) const {
    if (t.shape != s) {
      std::string got, want;
      for (auto v : t.shape) got += std::to_string(v) + ",";
      for (auto v : s) want += std::to_string(v) + ",";
      bad("tensor '" + t.name + "' has shape [" + got + "], the operator computes [" + want + "]");
    }
  }
  // An int32/int64 constant vector (axes, perm, paddings).
  std::vector<int64_t> int_values(size_t i) const {
    const Tensor& t = constant(i);
    std::vector<int64_t> v(size_t(t.elems));
    if (t.type == DType::i32)
      for (int64_t k = 0; k < t.elems; ++k) v[size_t(k)] = t.as<int32_t>()[k];
    else if (t.type == DType::i64)
      for (int64_t k = 0; k < t.elems; ++k) v[size_t(k)] = t.as<int64_t>()[k];
    else
      bad("input " + std::to_string(i) + " must be int32 or int64");
    return v;
  }
};

}  // namespace rt
}  // namespace ep
