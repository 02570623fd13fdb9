// The runtime's operator loops (vec_impl.h) built with the neon path's compiler flags.
#define EP_VEC_NS neon
#include "runtime/ops/vec_impl.h"
