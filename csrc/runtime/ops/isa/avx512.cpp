// The runtime's operator loops (vec_impl.h) built with the avx512 path's compiler flags.
#define EP_VEC_NS avx512
#define EP_VEC_ISA Isa::avx512  // whose kernel-tier transpose the layout changes use
#include "runtime/ops/vec_impl.h"
