// vec_ops(isa): the table of the path, or of its parent where a path has no build of its own.
//
// Consumes: an Isa. Produces: a VecOps table compiled for it.
#include "runtime/ops/vec.h"

namespace ep {
namespace rt {

namespace reference {
extern const VecOps table;
}
#if EP_HAVE_AVX2
namespace avx2 {
extern const VecOps table;
}
#endif
#if EP_HAVE_AVX512
namespace avx512 {
extern const VecOps table;
}
#endif
#if EP_HAVE_NEON
namespace neon {
extern const VecOps table;
}
#endif

const VecOps& vec_ops(Isa isa) {
  switch (isa) {
#if EP_HAVE_AVX512
    case Isa::avx512:
      return avx512::table;
#endif
#if EP_HAVE_AVX2
    case Isa::avx2:
      return avx2::table;
#endif
#if EP_HAVE_NEON
    case Isa::neon:
    case Isa::neon_dotprod:
      return neon::table;
#endif
    default:
      return reference::table;
  }
}

}  // namespace rt
}  // namespace ep
