// The runtime's operator loops (vec_impl.h) built with the avx2 path's compiler flags.
#define EP_VEC_NS avx2
#define EP_VEC_ISA Isa::avx2  // whose kernel-tier transpose the layout changes use
#include "runtime/ops/vec_impl.h"
