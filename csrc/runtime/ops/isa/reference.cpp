// The runtime's operator loops (vec_impl.h) built with the reference path's compiler flags.
#define EP_VEC_NS reference
#define EP_VEC_ISA Isa::reference  // whose kernel-tier transpose the layout changes use
#include "runtime/ops/vec_impl.h"
