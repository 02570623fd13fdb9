/* edgeprune C API: whole .tflite models on edgeprune's runtime, and the compiled kernels as
 * layers an application can embed.
 *
 * Consumes: float weights (zeros = pruned), int8/float activations in caller memory.
 * Produces: outputs in caller memory, ep_status codes and a per-thread error message.
 * Conventions: ep_ prefix, opaque handles with create/destroy pairs, no C++ exception ever
 * crosses this boundary, every pointer and size is checked before use. The kernel path is the
 * process-wide choice (EDGEPRUNE_ISA or the best the CPU supports).
 */
#ifndef EDGEPRUNE_EDGEPRUNE_H
#define EDGEPRUNE_EDGEPRUNE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ep_status {
  EP_OK = 0,
  EP_INVALID_ARGUMENT = 1, /* a null pointer, a bad size or option; see ep_last_error() */
  EP_UNSUPPORTED = 2,      /* e.g. EDGEPRUNE_ISA names a path this build or CPU cannot run */
  EP_OUT_OF_MEMORY = 3,
  EP_INTERNAL = 4,     /* a bug: please report it with ep_last_error() */
  EP_INVALID_MODEL = 5 /* a corrupt or inconsistent model file; ep_last_error() says where */
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

/* ---------------------------------------------------------------------------------------------
 * Models: a .tflite file run on edgeprune's runtime (float32 models; sparse weights in TFLite's
 * sparse encoding run on the sparse kernels).
 *
 * Thread safety: an ep_model is immutable once loaded and may be shared by any number of threads.
 * An ep_context holds the memory of one inference: use one context per thread (a context must not
 * run on two threads at once). A model may be destroyed while contexts made from it still exist;
 * it is freed with the last of them.
 *
 * Every load verifies the file (flatbuffers verifier, then indices, shapes and buffer sizes) before
 * any of it is used: a corrupt file gives EP_INVALID_MODEL and a message naming what is wrong, a
 * valid file using an operator or type this runtime does not run gives EP_UNSUPPORTED.
 * ------------------------------------------------------------------------------------------- */
typedef struct ep_model ep_model;
typedef struct ep_context ep_context;

/* TFLite's tensor type codes */
typedef enum ep_dtype {
  EP_FLOAT32 = 0,
  EP_FLOAT16 = 1,
  EP_INT32 = 2,
  EP_UINT8 = 3,
  EP_INT64 = 4,
  EP_BOOL = 6,
  EP_INT16 = 7,
  EP_INT8 = 9
} ep_dtype;

#define EP_MAX_RANK 6

typedef struct ep_tensor_info {
  const char* name; /* valid while the model lives */
  ep_dtype type;
  int32_t rank;
  int64_t shape[EP_MAX_RANK];
  int64_t elements;
  /* quantization of the first channel (scale 0 and zero_point 0: not quantized) */
  float scale;
  int64_t zero_point;
} ep_tensor_info;

typedef struct ep_model_options {
  /* the kernel path ("reference", "avx2", "avx512", "neon", "neon-dotprod"); NULL: the process
   * choice (EDGEPRUNE_ISA or the best the CPU supports) */
  const char* isa;
  /* 1 (default): layers whose weights are mostly zeros run the sparse kernels; 0: all dense */
  int32_t sparse;
} ep_model_options;

void ep_model_options_init(ep_model_options* options); /* the defaults */
/* options may be NULL (the defaults). The file is read whole; the bytes of load_memory are copied.
 */
ep_status ep_model_load_file(const char* path, const ep_model_options* options, ep_model** out);
ep_status ep_model_load_memory(const void* data, size_t size, const ep_model_options* options,
                               ep_model** out);
int32_t ep_model_input_count(const ep_model* model);  /* 0 for NULL */
int32_t ep_model_output_count(const ep_model* model); /* 0 for NULL */
ep_status ep_model_input_info(const ep_model* model, int32_t index, ep_tensor_info* out);
ep_status ep_model_output_info(const ep_model* model, int32_t index, ep_tensor_info* out);
/* the kernel path the model's operators run, or NULL for NULL */
const char* ep_model_isa(const ep_model* model);
void ep_model_destroy(ep_model* model);

/* threads: 1..256, the most threads one run splits an operator over. With more than one, the
 * context's first 9 runs time every operator split and on one thread; later runs split only the
 * operators that ran faster split, or none when splitting did not make the whole run at least 5 %
 * faster: threads never make a model slower. The choice is made again every 1024 runs after it
 * (the host may place the threads differently by then). Every run gives the same bits. */
ep_status ep_context_create(const ep_model* model, int32_t threads, ep_context** out);
/* inputs[i]: the i-th input, densely packed in its shape and type (float32; int8 quantized as
 * ep_model_input_info says, for files with integer I/O; int32/int64 token ids and bool masks of
 * transformer encoders); outputs[i]: room for the i-th output. The counts must
 * equal the model's. The run reads the inputs in place and writes most outputs straight into
 * their buffers (no copies); buffers may overlap (an output over its own input), which costs a
 * copy. An input value the model cannot take (a token id outside the embedding table) gives
 * EP_INVALID_ARGUMENT naming the operator and the value; nothing is read out of range, and the
 * output buffers then hold unspecified values. */
ep_status ep_context_run(ep_context* context, const void* const* inputs, int32_t input_count,
                         void* const* outputs, int32_t output_count);
/* Per-operator timing: on (1) resets the counters and times each operator of later runs (the
 * first runs of a context of several threads, which tune it, are not counted). */
ep_status ep_context_set_profiling(ep_context* context, int32_t on);
int32_t ep_context_op_count(const ep_context* context);
/* label: e.g. "CONV_2D 3x3/2 3->32 112x112"; kind: the TFLite operator; ms: mean per profiled run.
 * Strings are valid while the context lives. */
ep_status ep_context_op_profile(const ep_context* context, int32_t index, const char** kind,
                                const char** label, double* ms);
void ep_context_destroy(ep_context* context);

#ifdef __cplusplus
}
#endif

#endif /* EDGEPRUNE_EDGEPRUNE_H */
