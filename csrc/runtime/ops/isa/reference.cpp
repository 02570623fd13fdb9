// The runtime's operator loops (vec_impl.h) built with the reference path's compiler flags.
#define EP_VEC_NS reference
#include "runtime/ops/vec_impl.h"
