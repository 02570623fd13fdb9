/* classify: run a .tflite image classifier on edgeprune's runtime and print the top-5 classes.
 * Usage: classify model.tflite image.{npy,raw} [threads]
 * The image is float32 in the model's input shape (NHWC): a .npy file ('<f4', C order) or raw
 * little-endian floats. */
#include <edgeprune/edgeprune.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float* read_input(const char* path, int64_t count) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  char head[10];
  long skip = 0; /* .npy: magic, version, header length, header */
  if (fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY", 6) == 0)
    skip = 10 + (unsigned char)head[8] + 256L * (unsigned char)head[9];
  float* x = malloc((size_t)count * sizeof(float));
  int ok = x && fseek(f, skip, SEEK_SET) == 0 &&
           fread(x, sizeof(float), (size_t)count, f) == (size_t)count;
  fclose(f);
  if (!ok) free(x);
  return ok ? x : NULL;
}

int main(int argc, char** argv) {
  if (argc < 3)
    return fprintf(stderr, "usage: %s model.tflite image.{npy,raw} [threads]\n", argv[0]), 2;
  ep_model* model = NULL;
  ep_context* ctx = NULL;
  if (ep_model_load_file(argv[1], NULL, &model) != EP_OK ||
      ep_context_create(model, argc > 3 ? atoi(argv[3]) : 1, &ctx) != EP_OK)
    return fprintf(stderr, "error: %s\n", ep_last_error()), 1;
  ep_tensor_info in, out;
  ep_model_input_info(model, 0, &in);
  ep_model_output_info(model, 0, &out);
  float* x = read_input(argv[2], in.elements);
  float* y = malloc((size_t)out.elements * sizeof(float));
  if (!x || !y)
    return fprintf(stderr, "error: cannot read %lld floats from %s\n", (long long)in.elements,
                   argv[2]),
           1;
  const void* inputs[1] = {x};
  void* outputs[1] = {y};
  if (ep_context_run(ctx, inputs, 1, outputs, 1) != EP_OK)
    return fprintf(stderr, "error: %s\n", ep_last_error()), 1;
  printf("%s on %s\n", argv[1], ep_model_isa(model));
  for (int k = 0; k < 5 && k < out.elements; ++k) { /* top-5 by repeated selection */
    int64_t best = -1;
    for (int64_t i = 0; i < out.elements; ++i)
      if (y[i] == y[i] && (best < 0 || y[i] > y[best])) best = i;
    if (best < 0) break;
    printf("%d. class %lld  score %.6f\n", k + 1, (long long)best, y[best]);
    y[best] = NAN; /* never picked again */
  }
  ep_context_destroy(ctx);
  ep_model_destroy(model);
  free(x);
  free(y);
  return 0;
}
