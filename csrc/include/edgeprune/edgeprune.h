/* edgeprune C API: the compiled kernels as layers an application can embed.
 *
 * Consumes: float weights (zeros = pruned), int8/float activations in caller memory.
 * Produces: outputs in caller memory, ep_status codes and a per-thread error message.
 * Conventions: ep_ prefix, opaque handles with create/destroy pairs, no C++ exception ever
 * crosses this boundary, every pointer and size is checked before use. The kernel path is the
 * process-wide choice (EDGEPRUNE_ISA or the best the CPU supports).
 */
#ifndef EDGEPRUNE_EDGEPRUNE_H
#define EDGEPRUNE_EDGEPRUNE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ep_status {
  EP_OK = 0,
  EP_INVALID_ARGUMENT = 1, /* a null pointer, a bad size or option; see ep_last_error() */
  EP_UNSUPPORTED = 2,      /* e.g. EDGEPRUNE_ISA names a path this build or CPU cannot run */
  EP_OUT_OF_MEMORY = 3,
  EP_INTERNAL = 4 /* a bug: please report it with ep_last_error() */
} ep_status;

typedef enum ep_activation { EP_ACT_NONE = 0, EP_ACT_RELU = 1, EP_ACT_RELU6 = 2 } ep_activation;

/* Which kernel a layer runs: the sparse one when the weights are sparse enough (AUTO), or forced.
 */
typedef enum ep_kernel { EP_KERNEL_AUTO = 0, EP_KERNEL_SPARSE = 1, EP_KERNEL_DENSE = 2 } ep_kernel;

typedef struct ep_linear ep_linear;   /* fp32 y = act(x W^T + b), dense or sparse */
typedef struct ep_qlinear ep_qlinear; /* int8, TFLite arithmetic, dense or 1x4-block sparse */

const char* ep_version(void);
/* The kernel path in use ("reference", "avx2", "avx512", "neon", "neon-dotprod"), or NULL when
 * EDGEPRUNE_ISA asks for one that cannot run (ep_last_error() says why). */
const char* ep_selected_isa(void);
/* The message of the last call that failed on this thread ("" if none). Valid until the next call.
 */
const char* ep_last_error(void);

/* weight: [out_features, in_features] row-major; bias: [out_features] or NULL.
 * block: 0 for a dense layer, 1 (unstructured) or 4 (4 output channels sharing a pattern) for
 * a sparse one, whose kernel choice is `kernel`. The weights are copied. */
ep_status ep_linear_create(const float* weight, int64_t out_features, int64_t in_features,
                           const float* bias, ep_activation activation, int block, ep_kernel kernel,
                           ep_linear** out);
/* x [n, in_features] -> y [n, out_features] */
ep_status ep_linear_run(const ep_linear* layer, const float* x, int64_t n, float* y, int threads);
/* channel-major: X [in_features, n] -> Y [out_features, n] */
ep_status ep_linear_run_kn(const ep_linear* layer, const float* x, int64_t n, float* y,
                           int threads);
void ep_linear_destroy(ep_linear* layer);

/* Weights are quantized per output channel (symmetric, [-127, 127]); bias to int32. */
ep_status ep_qlinear_create(const float* weight, int64_t out_features, int64_t in_features,
                            const float* bias, float input_scale, int32_t input_zero_point,
                            float output_scale, int32_t output_zero_point, ep_activation activation,
                            ep_kernel kernel, ep_qlinear** out);
ep_status ep_qlinear_run(const ep_qlinear* layer, const int8_t* x, int64_t n, int8_t* y,
                         int threads);
ep_status ep_qlinear_run_kn(const ep_qlinear* layer, const int8_t* x, int64_t n, int8_t* y,
                            int threads);
void ep_qlinear_destroy(ep_qlinear* layer);

#ifdef __cplusplus
}
#endif

#endif /* EDGEPRUNE_EDGEPRUNE_H */
