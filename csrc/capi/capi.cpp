// The C API (include/edgeprune/edgeprune.h) over the layers. Every entry point catches every
// C++ exception and turns it into an ep_status plus a per-thread message.
//
// Consumes: C callers' pointers and sizes. Produces: handles, outputs, status codes.
#include "edgeprune/edgeprune.h"

#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "dispatch/isa.h"
#include "layers/layers.h"

struct ep_linear {
  std::unique_ptr<ep::DenseLinear> dense;
  std::unique_ptr<ep::SparseLinear> sparse;
};

struct ep_qlinear {
  std::unique_ptr<ep::QLinear> q;
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

ep::Act act_of(ep_activation a) {
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

ep::SparseKernel kernel_of(ep_kernel k) {
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
      layer->dense = std::make_unique<ep::DenseLinear>(weight, m, k, bias, act_of(activation));
    else
      layer->sparse = std::make_unique<ep::SparseLinear>(weight, m, k, bias, block,
                                                         act_of(activation), kernel_of(kernel));
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
    layer->q = std::make_unique<ep::QLinear>(weight, m, k, bias, input_scale, input_zero_point,
                                             output_scale, output_zero_point, act_of(activation),
                                             kernel_of(kernel), ep::selected_isa());
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

}  // extern "C"
