// The C API (include/edgeprune/edgeprune.h) over the layers. Every entry point catches every
// C++ exception and turns it into an ep_status plus a per-thread message.
//
// Consumes: C callers' pointers and sizes. Produces: handles, outputs, status codes.
#include "edgeprune/edgeprune.h"

#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "dispatch/isa.h"
#include "layers/layers.h"
#include "runtime/executor.h"

struct ep_linear {
  std::unique_ptr<ep::DenseLinear> dense;
  std::unique_ptr<ep::SparseLinear> sparse;
};

struct ep_qlinear {
  std::unique_ptr<ep::QLinear> q;
};

struct ep_model {
  std::shared_ptr<const ep::rt::CompiledModel> m;
};

struct ep_context {
  std::unique_ptr<ep::rt::Context> c;
};

namespace {

thread_local std::string g_error;

ep_status fail(ep_status s, const std::string& msg) {
  g_error = msg;
  return s;
}

template <class F>
ep_status guard(F&& f) {
  g_error.clear();
  try {
    return f();
  } catch (const ep::rt::ModelError& e) {
    return fail(EP_INVALID_MODEL, e.what());
  } catch (const std::invalid_argument& e) {
    return fail(EP_INVALID_ARGUMENT, e.what());
  } catch (const std::bad_alloc&) {
    return fail(EP_OUT_OF_MEMORY, "out of memory");
  } catch (const std::runtime_error& e) {  // dispatch: an impossible EDGEPRUNE_ISA
    return fail(EP_UNSUPPORTED, e.what());
  } catch (const std::exception& e) {
    return fail(EP_INTERNAL, e.what());
  } catch (...) {
    return fail(EP_INTERNAL, "unknown error");
  }
}

// A C caller may pass any int as an enum argument; reading it as the C++ enum type would be
// undefined for values outside the enumerators (UBSan's -fsanitize=enum), so the argument's bytes
// are read as the int a C enum is.
template <class E>
int raw(const E* e) {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized on the supported ABIs");
  int v;
  std::memcpy(&v, e, sizeof v);
  return v;
}

ep::Act act_of(int a) {
  switch (a) {
    case EP_ACT_NONE:
      return ep::Act::none;
    case EP_ACT_RELU:
      return ep::Act::relu;
    case EP_ACT_RELU6:
      return ep::Act::relu6;
  }
  throw std::invalid_argument("activation must be EP_ACT_NONE, EP_ACT_RELU or EP_ACT_RELU6");
}

ep::SparseKernel kernel_of(int k) {
  switch (k) {
    case EP_KERNEL_AUTO:
      return ep::SparseKernel::automatic;
    case EP_KERNEL_SPARSE:
      return ep::SparseKernel::sparse;
    case EP_KERNEL_DENSE:
      return ep::SparseKernel::dense;
  }
  throw std::invalid_argument("kernel must be EP_KERNEL_AUTO, EP_KERNEL_SPARSE or EP_KERNEL_DENSE");
}

void check_shape(const void* weight, int64_t m, int64_t k) {
  if (!weight) throw std::invalid_argument("weight is NULL");
  if (m <= 0 || k <= 0)
    throw std::invalid_argument("out_features and in_features must be positive");
  if (m > (int64_t(1) << 31) / k) throw std::invalid_argument("weight has more than 2^31 entries");
}

void check_run(const void* layer, const void* x, int64_t n, const void* y, int threads) {
  if (!layer) throw std::invalid_argument("layer is NULL");
  if (n < 0) throw std::invalid_argument("n must not be negative");
  if (n > 0 && (!x || !y)) throw std::invalid_argument("x and y must not be NULL");
  if (threads < 1 || threads > 256) throw std::invalid_argument("threads must be in 1..256");
}

}  // namespace

extern "C" {

const char* ep_version(void) { return EP_VERSION; }

const char* ep_selected_isa(void) {
  const char* name = nullptr;
  guard([&] {
    name = ep::isa_name(ep::selected_isa());
    return EP_OK;
  });
  return name;
}

const char* ep_last_error(void) { return g_error.c_str(); }

ep_status ep_linear_create(const float* weight, int64_t m, int64_t k, const float* bias,
                           ep_activation activation, int block, ep_kernel kernel, ep_linear** out) {
  return guard([&] {
    if (!out) throw std::invalid_argument("out is NULL");
    *out = nullptr;
    check_shape(weight, m, k);
    if (block != 0 && block != 1 && block != 4)
      throw std::invalid_argument("block must be 0 (dense), 1 or 4");
    auto layer = std::make_unique<ep_linear>();
    if (block == 0)
      layer->dense =
          std::make_unique<ep::DenseLinear>(weight, m, k, bias, act_of(raw(&activation)));
    else
      layer->sparse = std::make_unique<ep::SparseLinear>(
          weight, m, k, bias, block, act_of(raw(&activation)), kernel_of(raw(&kernel)));
    *out = layer.release();
    return EP_OK;
  });
}

ep_status ep_linear_run(const ep_linear* layer, const float* x, int64_t n, float* y, int threads) {
  return guard([&] {
    check_run(layer, x, n, y, threads);
    if (layer->dense)
      layer->dense->forward(x, n, y, threads);
    else
      layer->sparse->forward(x, n, y, threads);
    return EP_OK;
  });
}

ep_status ep_linear_run_kn(const ep_linear* layer, const float* x, int64_t n, float* y,
                           int threads) {
  return guard([&] {
    check_run(layer, x, n, y, threads);
    if (layer->dense)
      layer->dense->forward_kn(x, n, y, threads);
    else
      layer->sparse->forward_kn(x, n, y, threads);
    return EP_OK;
  });
}

void ep_linear_destroy(ep_linear* layer) { delete layer; }

ep_status ep_qlinear_create(const float* weight, int64_t m, int64_t k, const float* bias,
                            float input_scale, int32_t input_zero_point, float output_scale,
                            int32_t output_zero_point, ep_activation activation, ep_kernel kernel,
                            ep_qlinear** out) {
  return guard([&] {
    if (!out) throw std::invalid_argument("out is NULL");
    *out = nullptr;
    check_shape(weight, m, k);
    auto layer = std::make_unique<ep_qlinear>();
    layer->q = std::make_unique<ep::QLinear>(
        weight, m, k, bias, input_scale, input_zero_point, output_scale, output_zero_point,
        act_of(raw(&activation)), kernel_of(raw(&kernel)), ep::selected_isa());
    *out = layer.release();
    return EP_OK;
  });
}

ep_status ep_qlinear_run(const ep_qlinear* layer, const int8_t* x, int64_t n, int8_t* y,
                         int threads) {
  return guard([&] {
    check_run(layer, x, n, y, threads);
    layer->q->forward(x, n, y, threads);
    return EP_OK;
  });
}

ep_status ep_qlinear_run_kn(const ep_qlinear* layer, const int8_t* x, int64_t n, int8_t* y,
                            int threads) {
  return guard([&] {
    check_run(layer, x, n, y, threads);
    layer->q->forward_kn(x, n, y, threads);
    return EP_OK;
  });
}

void ep_qlinear_destroy(ep_qlinear* layer) { delete layer; }

void ep_model_options_init(ep_model_options* o) {
  if (!o) return;
  o->isa = nullptr;
  o->sparse = 1;
}

namespace {

ep::rt::RuntimeOptions runtime_options(const ep_model_options* o) {
  ep::rt::RuntimeOptions r;
  if (o && o->isa) {
    if (!ep::isa_from_name(o->isa, &r.isa))
      throw std::runtime_error(std::string("unknown kernel path '") + o->isa +
                               "' (reference, avx2, avx512, neon, neon-dotprod)");
    if (!(ep::supported_isas() & ep::IsaSet(r.isa)))
      throw std::runtime_error(std::string("kernel path ") + o->isa +
                               " is not compiled in or not supported by this CPU");
  } else {
    r.isa = ep::selected_isa();
  }
  r.sparse = !o || o->sparse != 0;
  return r;
}

ep_status load(std::unique_ptr<ep::rt::Model> (*read)(const void*, size_t, const char*),
               const void* data, size_t size, const char* path, const ep_model_options* options,
               ep_model** out) {
  return guard([&] {
    if (!out) throw std::invalid_argument("out is NULL");
    *out = nullptr;
    const auto opts = runtime_options(options);
    auto model = std::make_unique<ep_model>();
    model->m = std::make_shared<const ep::rt::CompiledModel>(read(data, size, path), opts);
    *out = model.release();
    return EP_OK;
  });
}

void fill_info(const ep::rt::Tensor& t, ep_tensor_info* out) {
  out->name = t.name.c_str();
  out->type = ep_dtype(int(t.type));
  out->rank = int32_t(t.shape.size());
  for (int i = 0; i < EP_MAX_RANK; ++i) out->shape[i] = i < out->rank ? t.shape[i] : 0;
  out->elements = t.elems;
  out->scale = t.scale.empty() ? 0.0f : t.scale[0];
  out->zero_point = t.zero_point.empty() ? 0 : t.zero_point[0];
}

ep_status info(const ep_model* model, int32_t index, ep_tensor_info* out, bool input) {
  return guard([&] {
    if (!model || !out) throw std::invalid_argument("model and out must not be NULL");
    const auto& m = model->m->model();
    const auto& list = input ? m.inputs : m.outputs;
    if (index < 0 || index >= int32_t(list.size()))
      throw std::invalid_argument(std::string(input ? "input" : "output") + " index " +
                                  std::to_string(index) + " is out of range (the model has " +
                                  std::to_string(list.size()) + ")");
    fill_info(m.tensors[list[index]], out);
    return EP_OK;
  });
}

}  // namespace

ep_status ep_model_load_file(const char* path, const ep_model_options* options, ep_model** out) {
  return load(
      [](const void*, size_t, const char* p) {
        if (!p) throw std::invalid_argument("path is NULL");
        return ep::rt::load_model_file(p);
      },
      nullptr, 0, path, options, out);
}

ep_status ep_model_load_memory(const void* data, size_t size, const ep_model_options* options,
                               ep_model** out) {
  return load(
      [](const void* d, size_t n, const char*) {
        if (!d) throw std::invalid_argument("data is NULL");
        return ep::rt::load_model(static_cast<const uint8_t*>(d), n);
      },
      data, size, nullptr, options, out);
}

int32_t ep_model_input_count(const ep_model* model) {
  return model ? int32_t(model->m->model().inputs.size()) : 0;
}
int32_t ep_model_output_count(const ep_model* model) {
  return model ? int32_t(model->m->model().outputs.size()) : 0;
}
ep_status ep_model_input_info(const ep_model* model, int32_t index, ep_tensor_info* out) {
  return info(model, index, out, true);
}
ep_status ep_model_output_info(const ep_model* model, int32_t index, ep_tensor_info* out) {
  return info(model, index, out, false);
}
const char* ep_model_isa(const ep_model* model) {
  return model ? ep::isa_name(model->m->isa()) : nullptr;
}
void ep_model_destroy(ep_model* model) { delete model; }

ep_status ep_context_create(const ep_model* model, int32_t threads, ep_context** out) {
  return guard([&] {
    if (!out) throw std::invalid_argument("out is NULL");
    *out = nullptr;
    if (!model) throw std::invalid_argument("model is NULL");
    if (threads < 1 || threads > 256) throw std::invalid_argument("threads must be in 1..256");
    auto ctx = std::make_unique<ep_context>();
    ctx->c = std::make_unique<ep::rt::Context>(model->m, threads);
    *out = ctx.release();
    return EP_OK;
  });
}

ep_status ep_context_run(ep_context* context, const void* const* inputs, int32_t input_count,
                         void* const* outputs, int32_t output_count) {
  return guard([&] {
    if (!context) throw std::invalid_argument("context is NULL");
    const auto& m = context->c->compiled().model();
    if (input_count != int32_t(m.inputs.size()) || output_count != int32_t(m.outputs.size()))
      throw std::invalid_argument("the model has " + std::to_string(m.inputs.size()) +
                                  " inputs and " + std::to_string(m.outputs.size()) +
                                  " outputs (got " + std::to_string(input_count) + " and " +
                                  std::to_string(output_count) + ")");
    if (!inputs || !outputs) throw std::invalid_argument("inputs and outputs must not be NULL");
    for (int32_t i = 0; i < input_count; ++i)
      if (!inputs[i]) throw std::invalid_argument("input " + std::to_string(i) + " is NULL");
    for (int32_t i = 0; i < output_count; ++i)
      if (!outputs[i]) throw std::invalid_argument("output " + std::to_string(i) + " is NULL");
    context->c->run(reinterpret_cast<const float* const*>(inputs),
                    reinterpret_cast<float* const*>(outputs));
    return EP_OK;
  });
}

ep_status ep_context_set_profiling(ep_context* context, int32_t on) {
  return guard([&] {
    if (!context) throw std::invalid_argument("context is NULL");
    context->c->set_profiling(on != 0);
    return EP_OK;
  });
}

int32_t ep_context_op_count(const ep_context* context) {
  return context ? int32_t(context->c->compiled().ops().size()) : 0;
}

ep_status ep_context_op_profile(const ep_context* context, int32_t index, const char** kind,
                                const char** label, double* ms) {
  return guard([&] {
    if (!context) throw std::invalid_argument("context is NULL");
    const auto& ops = context->c->compiled().ops();
    if (index < 0 || index >= int32_t(ops.size()))
      throw std::invalid_argument("operator index " + std::to_string(index) + " is out of range");
    if (kind) *kind = ops[index]->kind.c_str();
    if (label) *label = ops[index]->label.c_str();
    if (ms) {
      const int64_t runs = context->c->profiled_runs();
      *ms = runs ? context->c->op_ns()[index] / 1e6 / double(runs) : 0.0;
    }
    return EP_OK;
  });
}

void ep_context_destroy(ep_context* context) { delete context; }

}  // extern "C"
