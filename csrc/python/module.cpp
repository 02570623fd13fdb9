// pybind11 module edgeprune._core: ISA queries, the fp32 dense / sparse layers, the int8 layer.
//
// Consumes: numpy arrays from Python. Produces: numpy arrays; RuntimeError for an impossible
// EDGEPRUNE_ISA, ValueError naming the argument for a wrong dtype, rank, shape or layout.
// Inputs are used in place (no copy) and the GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <mutex>
#include <optional>
#include <string_view>
#include <string>
#include <type_traits>

#include "dispatch/isa.h"
#include "kernels/kernels.h"
#include "layers/layers.h"
#include "runtime/executor.h"

namespace py = pybind11;

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A read-only view of a C-contiguous 2-D [rows, cols] array of T (float or int8; -1: any
// size); ValueError naming `name` otherwise.
template <class T>
const T* matrix(const py::array& a, const char* name, int64_t rows, int64_t cols,
                const char* rows_what, const char* cols_what) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, int8_t>);
  const std::string n(name);
  if (!a.dtype().is(py::dtype::of<T>())) {
    const std::string got = " array (got " + dtype_name(a) + "); ";
    throw py::value_error(std::is_same_v<T, float>
                              ? n + " must be a float32" + got +
                                    "convert it with .astype(numpy.float32)"
                              : n + " must be an int8" + got + "quantize it first");
  }
  if (a.ndim() != 2)
    throw py::value_error(n + " must be 2-D [" + rows_what + ", " + cols_what + "] (got " +
                          std::to_string(a.ndim()) + "-D)");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(n + " must be C-contiguous; pass numpy.ascontiguousarray(" + n + ")");
  if (rows >= 0 && a.shape(0) != rows)
    throw py::value_error(n + " must have " + std::to_string(rows) + " rows (" + rows_what +
                          ") (got " + std::to_string(a.shape(0)) + ")");
  if (cols >= 0 && a.shape(1) != cols)
    throw py::value_error(n + " must have " + std::to_string(cols) + " columns (" + cols_what +
                          ") (got " + std::to_string(a.shape(1)) + ")");
  return static_cast<const T*>(a.data());
}

struct Weights {
  const float* w;
  int64_t m, k;
  const float* bias;
};

Weights weights(const py::array& weight, const std::optional<py::array>& bias) {
  const float* w = matrix<float>(weight, "weight", -1, -1, "out_features", "in_features");
  Weights r{w, weight.shape(0), weight.shape(1), nullptr};
  if (r.m == 0 || r.k == 0)
    throw py::value_error("weight must not be empty (got shape [" + std::to_string(r.m) + ", " +
                          std::to_string(r.k) + "])");
  if (bias) {
    const py::array& b = *bias;
    if (!b.dtype().is(py::dtype::of<float>()))
      throw py::value_error("bias must be a float32 array (got " + dtype_name(b) + ")");
    if (b.ndim() != 1 || b.shape(0) != r.m)
      throw py::value_error("bias must be 1-D with " + std::to_string(r.m) +
                            " entries (out_features)");
    if (!(b.flags() & py::array::c_style)) throw py::value_error("bias must be C-contiguous");
    r.bias = static_cast<const float*>(b.data());
  }
  return r;
}

ep::Isa isa_arg(const std::optional<std::string>& name) {
  if (!name) return ep::selected_isa();
  ep::Isa isa;
  if (!ep::isa_from_name(*name, &isa))
    throw py::value_error("isa must be one of reference, avx2, avx512, neon, neon-dotprod (got '" +
                          *name + "')");
  if (!(ep::supported_isas() & ep::IsaSet(isa)))
    throw py::value_error("isa '" + *name +
                          "' is not compiled or not supported by this CPU (available: " +
                          [] {
                            std::string s;
                            for (auto& x : ep::isa_names(ep::supported_isas()))
                              s += (s.empty() ? "" : ", ") + x;
                            return s;
                          }() +
                          ")");
  return isa;
}

ep::Act act_arg(const std::string& name) {
  try {
    return ep::act_from_name(name);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// `value` of the argument `arg`: auto, sparse or dense.
ep::SparseKernel sparse_kernel_arg(const std::string& value, const char* arg) {
  if (value == "auto") return ep::SparseKernel::automatic;
  if (value == "sparse") return ep::SparseKernel::sparse;
  if (value == "dense") return ep::SparseKernel::dense;
  throw py::value_error(std::string(arg) + " must be one of auto, sparse, dense (got '" + value +
                        "')");
}

int threads_arg(int threads) {
  if (threads < 1 || threads > 256)
    throw py::value_error("threads must be in 1..256 (got " + std::to_string(threads) + ")");
  return threads;
}

// A new C-contiguous [rows, cols] array whose data starts on a 64-byte boundary (numpy's own
// allocation of a large array starts 16 bytes past a page): vector stores then never split a
// cache line, and threads that split a row at a 64-column boundary never share one (for an
// int8 [3072, 128] output, sharing made 2 threads 3x slower than 1). numpy allocates it, 64 bytes
// over, and the result views it from its first 64-byte boundary: numpy reuses the block from
// call to call, where aligned_alloc memory owned by a capsule took 2.4 page faults a call on a
// [256, 784] float output (3 % of a 90 %-sparse SpMM call). `plain`: numpy's own array, for
// the output of a call too small to split or to notice a split line (one allocation, not two).
template <class T>
py::array_t<T> aligned_matrix(int64_t rows, int64_t cols, bool plain = false) {
  constexpr int64_t pad = 64 / int64_t(sizeof(T));
  if (plain) return py::array_t<T>({rows, cols});
  py::array_t<T> whole(std::max<int64_t>(rows * cols, 1) + pad);
  T* data = whole.mutable_data();
  data += (pad - int64_t(reinterpret_cast<uintptr_t>(data) % 64) / int64_t(sizeof(T))) % pad;
  return py::array_t<T>({rows, cols}, {cols * int64_t(sizeof(T)), int64_t(sizeof(T))}, data, whole);
}

// A call of at most 64 K multiply-adds takes a few microseconds at most: it keeps the GIL, as
// numpy's small products do, since releasing and taking it back cost as much as the work.
template <class Layer>
bool tiny(int64_t n, const Layer& layer) {
  return double(n) * double(layer.m()) * double(layer.k()) <= 65536.0;
}

// layer.forward(x [n, k]) -> y [n, m] and layer.forward_kn(x [k, n]) -> y [m, n], with x of
// element type T checked; the GIL is released while the layer runs.
template <class T, class Layer>
py::array_t<T> run_nk(const Layer& layer, const py::array& x, int threads) {
  threads = threads_arg(threads);
  const T* xp = matrix<T>(x, "x", -1, layer.k(), "N", "in_features");
  const int64_t n = x.shape(0);
  const bool small = tiny(n, layer);
  py::array_t<T> y = aligned_matrix<T>(n, layer.m(), small);
  T* yp = y.mutable_data();
  if (small) {
    layer.forward(xp, n, yp, threads);
  } else {
    py::gil_scoped_release nogil;
    layer.forward(xp, n, yp, threads);
  }
  return y;
}

template <class T, class Layer>
py::array_t<T> run_kn(const Layer& layer, const py::array& x, int threads) {
  threads = threads_arg(threads);
  const T* xp = matrix<T>(x, "x", layer.k(), -1, "in_features", "N");
  const int64_t n = x.shape(1);
  const bool small = tiny(n, layer);
  py::array_t<T> y = aligned_matrix<T>(layer.m(), n, small);
  T* yp = y.mutable_data();
  if (small) {
    layer.forward_kn(xp, n, yp, threads);
  } else {
    py::gil_scoped_release nogil;
    layer.forward_kn(xp, n, yp, threads);
  }
  return y;
}

// The layers' per-call entry, _call(layer, x, threads, kn), as a plain CPython fast call.
// pybind11's generic dispatch (overload lookup, keyword defaults, argument and result casters)
// cost about 0.25 us a call, most of a one-column product, where numpy's matmul on the same call
// takes 0.7 us. A small call whose x is exactly what the layer reads (a C-contiguous 2-D array of
// its element type with the right width) runs here; anything else goes through run_nk / run_kn,
// which raise the usual messages. Consumes: a _core layer and a numpy array. Produces: the output.
template <class T, class Layer>
py::object call_fast(const Layer& l, PyObject* x, int threads, bool kn) {
  const auto& api = py::detail::npy_api::get();
  if (!api.PyArray_Check_(x))
    throw py::type_error("x must be a numpy array (got " + std::string(Py_TYPE(x)->tp_name) + ")");
  const auto* a = py::detail::array_proxy(x);
  constexpr int type =
      std::is_same_v<T, float> ? py::detail::npy_api::NPY_FLOAT_ : py::detail::npy_api::NPY_BYTE_;
  const bool plain = a->nd == 2 && (a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
                     py::detail::array_descriptor_proxy(a->descr)->type_num == type &&
                     a->dimensions[kn ? 0 : 1] == l.k();
  const int64_t n = plain ? a->dimensions[kn ? 1 : 0] : 0;
  if (!plain || !tiny(n, l)) {
    const auto arr = py::reinterpret_borrow<py::array>(x);
    return kn ? py::object(run_kn<T>(l, arr, threads)) : py::object(run_nk<T>(l, arr, threads));
  }
  const Py_intptr_t dims[2] = {Py_intptr_t(kn ? l.m() : n), Py_intptr_t(kn ? n : l.m())};
  PyObject* y = api.PyArray_NewFromDescr_(api.PyArray_Type_, api.PyArray_DescrFromType_(type), 2,
                                          dims, nullptr, nullptr, 0, nullptr);
  if (!y) throw py::error_already_set();
  auto out = py::reinterpret_steal<py::object>(y);
  const T* xp = reinterpret_cast<const T*>(a->data);
  T* yp = reinterpret_cast<T*>(py::detail::array_proxy(y)->data);
  kn ? l.forward_kn(xp, n, yp, threads) : l.forward(xp, n, yp, threads);
  return out;
}

PyObject* layer_call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  try {
    if (nargs != 4) throw py::type_error("_call(layer, x, threads, kn) takes 4 arguments");
    const long t = PyLong_AsLong(args[2]);
    if (t == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (t < 1 || t > 256)
      throw py::value_error("threads must be in 1..256 (got " + std::to_string(t) + ")");
    const int threads = int(t);
    const bool kn = args[3] == Py_True;
    const py::handle layer(args[0]);
    // the three classes' type objects, looked up once: a type comparison per call where
    // py::isinstance searches pybind11's registry (tens of ns each)
    static PyTypeObject* const q =
        reinterpret_cast<PyTypeObject*>(py::type::of<ep::QLinear>().ptr());
    static PyTypeObject* const sp =
        reinterpret_cast<PyTypeObject*>(py::type::of<ep::SparseLinear>().ptr());
    static PyTypeObject* const dense =
        reinterpret_cast<PyTypeObject*>(py::type::of<ep::DenseLinear>().ptr());
    PyTypeObject* const type = Py_TYPE(layer.ptr());
    py::object y;
    if (type == q)
      y = call_fast<int8_t>(layer.cast<const ep::QLinear&>(), args[1], threads, kn);
    else if (type == sp)
      y = call_fast<float>(layer.cast<const ep::SparseLinear&>(), args[1], threads, kn);
    else if (type == dense)
      y = call_fast<float>(layer.cast<const ep::DenseLinear&>(), args[1], threads, kn);
    else
      throw py::type_error("_call: layer must be a _core Linear, SparseLinear or QLinear");
    return y.release().ptr();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// One loaded model with one execution context (the Python object is the context; a mutex keeps
// two Python threads from running it at once while the GIL is released).
class RuntimeModel {
 public:
  RuntimeModel(const py::bytes& data, int threads, const std::string& isa, bool sparse) {
    ep::rt::RuntimeOptions o;
    if (isa.empty()) {
      o.isa = ep::selected_isa();
    } else if (!ep::isa_from_name(isa, &o.isa) || !(ep::supported_isas() & ep::IsaSet(o.isa))) {
      throw std::runtime_error("kernel path '" + isa + "' is unknown or not supported here");
    }
    o.sparse = sparse;
    if (threads < 1 || threads > 256) throw py::value_error("threads must be in 1..256");
    const std::string_view bytes(data);
    {
      py::gil_scoped_release nogil;
      auto model = ep::rt::load_model(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      model_ = std::make_shared<const ep::rt::CompiledModel>(std::move(model), o);
      ctx_ = std::make_unique<ep::rt::Context>(model_, threads);
    }
    // numpy types made once at load rather than on every run
    for (int t : model_->model().inputs)
      in_types_.push_back(numpy_dtype(model_->model().tensors[t].type));
    for (int t : model_->model().outputs)
      out_types_.push_back(numpy_dtype(model_->model().tensors[t].type));
  }

  // the numpy type of a model input or output (io_type: float32, int8, int32, int64, bool)
  static py::dtype numpy_dtype(ep::rt::DType t) {
    switch (t) {
      case ep::rt::DType::i8:
        return py::dtype::of<int8_t>();
      case ep::rt::DType::i32:
        return py::dtype::of<int32_t>();
      case ep::rt::DType::i64:
        return py::dtype::of<int64_t>();
      case ep::rt::DType::boolean:
        return py::dtype::of<bool>();
      default:
        return py::dtype::of<float>();
    }
  }

  static py::dict info(const ep::rt::Tensor& t) {
    py::dict d;
    d["name"] = t.name;
    d["shape"] = py::tuple(py::cast(t.shape));
    d["dtype"] = ep::rt::dtype_name(t.type);
    d["scale"] = py::cast(t.scale);
    d["zero_point"] = py::cast(t.zero_point);
    return d;
  }
  py::list infos(bool inputs) const {
    py::list out;
    const auto& m = model_->model();
    for (int t : inputs ? m.inputs : m.outputs) out.append(info(m.tensors[t]));
    return out;
  }

  py::list run(const std::vector<py::array>& inputs) {
    const auto& m = model_->model();
    if (inputs.size() != m.inputs.size())
      throw py::value_error("the model takes " + std::to_string(m.inputs.size()) + " inputs (got " +
                            std::to_string(inputs.size()) + ")");
    std::vector<const float*> in;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& t = m.tensors[m.inputs[i]];
      const py::array& a = inputs[i];
      if (!a.dtype().is(in_types_[i]))
        throw py::value_error("input " + std::to_string(i) + " ('" + t.name + "') must be " +
                              ep::rt::dtype_name(t.type) + " (got " + dtype_name(a) + ")");
      if (!(a.flags() & py::array::c_style))
        throw py::value_error("input " + std::to_string(i) + " must be C-contiguous");
      std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
      if (shape != t.shape) {
        std::string want;
        for (auto d : t.shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
        throw py::value_error("input " + std::to_string(i) + " ('" + t.name +
                              "') must have shape (" + want + ")");
      }
      in.push_back(static_cast<const float*>(a.data()));
    }
    std::vector<py::array> outs;
    std::vector<float*> out;
    for (size_t o = 0; o < m.outputs.size(); ++o) {
      outs.emplace_back(out_types_[o], m.tensors[m.outputs[o]].shape);
      out.push_back(static_cast<float*>(outs.back().mutable_data()));
    }
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      ctx_->run(in.data(), out.data());
    }
    py::list r;
    for (auto& o : outs) r.append(o);
    return r;
  }

  void set_threads(int threads) {
    if (threads < 1 || threads > 256) throw py::value_error("threads must be in 1..256");
    std::lock_guard<std::mutex> lock(mu_);
    ctx_->set_threads(threads);
  }
  void set_profiling(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    ctx_->set_profiling(on);
  }
  // [(kind, label, mean ms per profiled run)] in execution order
  py::list profile() {
    std::lock_guard<std::mutex> lock(mu_);
    py::list r;
    const auto& ops = model_->ops();
    const double runs = double(std::max<int64_t>(ctx_->profiled_runs(), 1));
    for (size_t k = 0; k < ops.size(); ++k)
      r.append(py::make_tuple(ops[k]->kind, ops[k]->label, ctx_->op_ns()[k] / 1e6 / runs));
    return r;
  }
  bool tuning() {
    std::lock_guard<std::mutex> lock(mu_);
    return ctx_->tuning();
  }
  // per operator in execution order: the threads it runs with (after the tuning runs)
  std::vector<int> op_threads() {
    std::lock_guard<std::mutex> lock(mu_);
    return ctx_->op_threads();
  }
  // (kind, label) per operator in execution order, as planned at load (no run needed)
  py::list operators() const {
    py::list r;
    for (const auto& op : model_->ops()) r.append(py::make_tuple(op->kind, op->label));
    return r;
  }
  std::string isa() const { return ep::isa_name(model_->isa()); }
  int64_t arena_bytes() const { return model_->arena_bytes(); }

 private:
  std::shared_ptr<const ep::rt::CompiledModel> model_;
  std::unique_ptr<ep::rt::Context> ctx_;
  std::mutex mu_;
  std::vector<py::dtype> in_types_, out_types_;  // per model input / output
};

}  // namespace

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "edgeprune compiled core: ISA dispatch, fp32 dense/sparse and int8 kernels";

  mod.def(
      "cpu_features", [] { return ep::cpu_features().names(); },
      "CPU features relevant to the kernel paths (avx2, fma, avx512f, ..., asimd, asimddp).");
  mod.def(
      "l1d_bytes", [] { return ep::cpu_features().l1d_bytes; },
      "L1 data cache per core in bytes as the OS reports it (0: unknown); sparse tile plans are "
      "sized by it.");
  mod.def(
      "compiled_isas", [] { return ep::isa_names(ep::compiled_isas()); },
      "Kernel paths compiled into this build.");
  mod.def(
      "supported_isas", [] { return ep::isa_names(ep::supported_isas()); },
      "Compiled kernel paths this CPU can run.");
  mod.def(
      "selected_isa", [] { return std::string(ep::isa_name(ep::selected_isa())); },
      "The path in use (EDGEPRUNE_ISA or the best supported). RuntimeError if the override is "
      "impossible.");
  mod.def(
      "kernel_listing",
      [] {
        py::list out;
        for (const auto& e : ep::kernel_listing())
          out.append(py::make_tuple(e.name, ep::isa_name(e.isa), e.tile));
        return out;
      },
      "Every (kernel, isa, tile) of kernels.inc compiled into this build.");

  static PyMethodDef call_def = {"_call", reinterpret_cast<PyCFunction>(layer_call), METH_FASTCALL,
                                 "_call(layer, x, threads, kn): the layer on x (kn: the "
                                 "channel-major [K, N] layout), as __call__ / forward_kn do."};
  mod.add_object("_call", py::reinterpret_steal<py::object>(PyCFunction_New(&call_def, nullptr)));

  py::class_<ep::DenseLinear>(mod, "Linear")
      .def(py::init([](const py::array& weight, const std::optional<py::array>& bias,
                       const std::string& activation, const std::optional<std::string>& isa) {
             const Weights w = weights(weight, bias);
             const ep::Act act = act_arg(activation);
             return new ep::DenseLinear(w.w, w.m, w.k, w.bias, act, isa_arg(isa));
           }),
           py::arg("weight"), py::arg("bias") = py::none(), py::arg("activation") = "none",
           py::arg("isa") = py::none())
      .def(
          "__call__",
          [](const ep::DenseLinear& l, const py::array& x, int threads) {
            return run_nk<float>(l, x, threads);
          },
          py::arg("x"), py::arg("threads") = 1)
      .def(
          "forward_kn",
          [](const ep::DenseLinear& l, const py::array& x, int threads) {
            return run_kn<float>(l, x, threads);
          },
          py::arg("x"), py::arg("threads") = 1)
      .def_property_readonly("in_features", &ep::DenseLinear::k)
      .def_property_readonly("out_features", &ep::DenseLinear::m)
      .def_property_readonly(
          "isa", [](const ep::DenseLinear& l) { return std::string(ep::isa_name(l.isa())); });

  py::class_<ep::SparseLinear>(mod, "SparseLinear")
      .def(py::init([](const py::array& weight, const std::optional<py::array>& bias, int block,
                       const std::string& activation, const std::string& kernel,
                       const std::optional<std::string>& isa) {
             const Weights w = weights(weight, bias);
             const ep::Act act = act_arg(activation);
             if (block != 1 && block != 4)
               throw py::value_error("block must be 1 or 4 output channels (got " +
                                     std::to_string(block) + ")");
             const ep::SparseKernel k = sparse_kernel_arg(kernel, "kernel");
             return new ep::SparseLinear(w.w, w.m, w.k, w.bias, block, act, k, isa_arg(isa));
           }),
           py::arg("weight"), py::arg("bias") = py::none(), py::arg("block") = 1,
           py::arg("activation") = "none", py::arg("kernel") = "auto", py::arg("isa") = py::none())
      .def(
          "__call__",
          [](const ep::SparseLinear& l, const py::array& x, int threads) {
            return run_nk<float>(l, x, threads);
          },
          py::arg("x"), py::arg("threads") = 1)
      .def(
          "spmm",
          [](const ep::SparseLinear& l, const py::array& x, int threads) {
            return run_kn<float>(l, x, threads);
          },
          py::arg("x"), py::arg("threads") = 1)
      .def_property_readonly("in_features", &ep::SparseLinear::k)
      .def_property_readonly("out_features", &ep::SparseLinear::m)
      .def_property_readonly("nnz", &ep::SparseLinear::nnz)
      .def_property_readonly("stored", &ep::SparseLinear::stored)
      .def_property_readonly(
          "kernel", [](const ep::SparseLinear& l) { return l.uses_sparse() ? "sparse" : "dense"; })
      .def_property_readonly(
          "isa", [](const ep::SparseLinear& l) { return std::string(ep::isa_name(l.isa())); });
  py::class_<ep::QLinear>(mod, "QLinear")
      .def(py::init([](const py::array& weight, const std::optional<py::array>& bias,
                       float input_scale, int input_zero_point, float output_scale,
                       int output_zero_point, const std::string& activation,
                       const std::string& sparse, const std::optional<std::string>& isa) {
             const Weights w = weights(weight, bias);
             const ep::SparseKernel mode = sparse_kernel_arg(sparse, "sparse");
             try {
               return new ep::QLinear(w.w, w.m, w.k, w.bias, input_scale, input_zero_point,
                                      output_scale, output_zero_point,
                                      ep::act_from_name(activation), mode, isa_arg(isa));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("weight"), py::arg("bias") = py::none(), py::arg("input_scale"),
           py::arg("input_zero_point"), py::arg("output_scale"), py::arg("output_zero_point"),
           py::arg("activation") = "none", py::arg("sparse") = "auto", py::arg("isa") = py::none())
      .def(
          "__call__",
          [](const ep::QLinear& l, const py::array& x, int threads) {
            return run_nk<int8_t>(l, x, threads);
          },
          py::arg("x"), py::arg("threads") = 1)
      .def(
          "gemm_kn",
          [](const ep::QLinear& l, const py::array& x, int threads) {
            return run_kn<int8_t>(l, x, threads);
          },
          py::arg("x"), py::arg("threads") = 1)
      .def_property_readonly("in_features", &ep::QLinear::k)
      .def_property_readonly("out_features", &ep::QLinear::m)
      .def_property_readonly("qweight",
                             [](const ep::QLinear& l) {
                               py::array_t<int8_t> a({l.m(), l.k()});
                               std::copy(l.qweight().begin(), l.qweight().end(), a.mutable_data());
                               return a;
                             })
      .def_property_readonly("weight_scales",
                             [](const ep::QLinear& l) {
                               py::array_t<float> a(l.m());
                               std::copy(l.weight_scales().begin(), l.weight_scales().end(),
                                         a.mutable_data());
                               return a;
                             })
      .def_property_readonly("qbias",
                             [](const ep::QLinear& l) {
                               py::array_t<int32_t> a(l.m());
                               std::copy(l.qbias().begin(), l.qbias().end(), a.mutable_data());
                               return a;
                             })
      .def_property_readonly(
          "kernel", [](const ep::QLinear& l) { return l.uses_sparse() ? "sparse" : "dense"; })
      .def_property_readonly("nnz", &ep::QLinear::nnz)
      .def_property_readonly("stored_blocks", &ep::QLinear::stored_blocks)
      .def_property_readonly(
          "output_range", [](const ep::QLinear& l) { return py::make_tuple(l.qmin(), l.qmax()); })
      .def_property_readonly(
          "isa", [](const ep::QLinear& l) { return std::string(ep::isa_name(l.isa())); });

  // .tflite files on the runtime. Load errors: ValueError (ModelError: a corrupt or inconsistent
  // file) or RuntimeError (UnsupportedError: an operator or type this runtime does not run).
  py::class_<RuntimeModel>(mod, "RuntimeModel")
      .def(py::init<const py::bytes&, int, const std::string&, bool>(), py::arg("data"),
           py::arg("threads") = 1, py::arg("isa") = "", py::arg("sparse") = true)
      .def_property_readonly("inputs", [](const RuntimeModel& m) { return m.infos(true); })
      .def_property_readonly("outputs", [](const RuntimeModel& m) { return m.infos(false); })
      .def("run", &RuntimeModel::run, py::arg("inputs"))
      .def("set_threads", &RuntimeModel::set_threads)
      .def("set_profiling", &RuntimeModel::set_profiling)
      .def("profile", &RuntimeModel::profile)
      .def_property_readonly("tuning", &RuntimeModel::tuning)
      .def_property_readonly("op_threads", &RuntimeModel::op_threads)
      .def_property_readonly("operators", &RuntimeModel::operators)
      .def_property_readonly("isa", &RuntimeModel::isa)
      .def_property_readonly("arena_bytes", &RuntimeModel::arena_bytes);
  py::register_exception<ep::rt::UnsupportedError>(mod, "UnsupportedModel", PyExc_RuntimeError);
  py::register_exception<ep::rt::ModelError>(mod, "InvalidModel", PyExc_ValueError);
}
