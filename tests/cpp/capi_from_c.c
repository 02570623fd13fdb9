/* The C API used from C: builds a dense, a sparse and an int8 layer, runs them, checks results
 * against plain loops and checks the error paths. Called by test_capi.cpp. Returns 0 when all
 * is well, else writes the first problem to msg. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "edgeprune/edgeprune.h"

#define M 5
#define K 7
#define N 3

int ep_capi_c_check(char* msg, int len) {
  float w[M * K], b[M], x[N * K], y[N * M];
  for (int i = 0; i < M * K; ++i) w[i] = (i % 3 == 0) ? 0.0f : (float)((i * 7) % 11) / 10.0f - 0.5f;
  for (int i = 0; i < M; ++i) b[i] = 0.1f * (float)i;
  for (int i = 0; i < N * K; ++i) x[i] = (float)((i * 5) % 13) / 6.0f - 1.0f;
  for (int block = 0; block <= 4; block += (block == 1 ? 3 : 1)) {
    ep_linear* layer = NULL;
    if (ep_linear_create(w, M, K, b, EP_ACT_RELU, block, EP_KERNEL_SPARSE, &layer) != EP_OK) {
      snprintf(msg, (size_t)len, "create block %d: %s", block, ep_last_error());
      return 1;
    }
    if (ep_linear_run(layer, x, N, y, 1) != EP_OK) {
      snprintf(msg, (size_t)len, "run: %s", ep_last_error());
      return 1;
    }
    for (int r = 0; r < N; ++r)
      for (int j = 0; j < M; ++j) {
        double acc = b[j];
        for (int k = 0; k < K; ++k) acc += (double)x[r * K + k] * w[j * K + k];
        if (acc < 0) acc = 0;
        if (fabs(acc - y[r * M + j]) > 1e-5) {
          snprintf(msg, (size_t)len, "block %d y[%d,%d] = %g, want %g", block, r, j, y[r * M + j],
                   acc);
          return 1;
        }
      }
    ep_linear_destroy(layer);
  }
  ep_qlinear* q = NULL;
  if (ep_qlinear_create(w, M, K, b, 0.02f, 0, 0.05f, 0, EP_ACT_NONE, EP_KERNEL_AUTO, &q) != EP_OK) {
    snprintf(msg, (size_t)len, "qlinear create: %s", ep_last_error());
    return 1;
  }
  int8_t xq[N * K], yq[N * M];
  for (int i = 0; i < N * K; ++i) xq[i] = (int8_t)(i * 37 % 256 - 128);
  if (ep_qlinear_run(q, xq, N, yq, 2) != EP_OK) {
    snprintf(msg, (size_t)len, "qlinear run: %s", ep_last_error());
    return 1;
  }
  ep_qlinear_destroy(q);
  /* errors: status codes and messages, never a crash */
  ep_linear* bad = (ep_linear*)1;
  if (ep_linear_create(NULL, M, K, NULL, EP_ACT_NONE, 0, EP_KERNEL_AUTO, &bad) !=
          EP_INVALID_ARGUMENT ||
      bad != NULL || strstr(ep_last_error(), "weight is NULL") == NULL) {
    snprintf(msg, (size_t)len, "NULL weight not refused (%s)", ep_last_error());
    return 1;
  }
  if (ep_linear_create(w, M, K, NULL, EP_ACT_NONE, 3, EP_KERNEL_AUTO, &bad) !=
      EP_INVALID_ARGUMENT) {
    snprintf(msg, (size_t)len, "block 3 not refused");
    return 1;
  }
  if (ep_linear_run(NULL, x, N, y, 1) != EP_INVALID_ARGUMENT ||
      strstr(ep_last_error(), "layer is NULL") == NULL) {
    snprintf(msg, (size_t)len, "NULL layer not refused");
    return 1;
  }
  if (ep_qlinear_create(w, M, K, b, -1.0f, 0, 0.05f, 0, EP_ACT_NONE, EP_KERNEL_AUTO, &q) !=
          EP_INVALID_ARGUMENT ||
      strstr(ep_last_error(), "input_scale") == NULL) {
    snprintf(msg, (size_t)len, "negative scale not refused (%s)", ep_last_error());
    return 1;
  }
  if (ep_selected_isa() == NULL || ep_version()[0] == '\0') {
    snprintf(msg, (size_t)len, "no isa/version");
    return 1;
  }
  return 0;
}
