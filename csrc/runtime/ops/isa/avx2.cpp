// The runtime's operator loops (vec_impl.h) built with the avx2 path's compiler flags.
#define EP_VEC_NS avx2
#include "runtime/ops/vec_impl.h"
