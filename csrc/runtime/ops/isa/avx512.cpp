// The runtime's operator loops (vec_impl.h) built with the avx512 path's compiler flags.
#define EP_VEC_NS avx512
#include "runtime/ops/vec_impl.h"
