// The dispatch table: one KernelTable per compiled path, built from kernels.inc with parent
// inheritance, plus the flat listing used by tests and benchmarks.
//
// Consumes: the kernel symbols declared from kernels.inc. Produces: kernel_table(isa), kernels().
#include <array>
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace ep {

namespace {

int isa_index(Isa isa) {
  int i = 0;
  for (uint32_t v = uint32_t(isa); v > 1; v >>= 1) ++i;
  return i;
}

// Fill `t` with the entries implemented directly by `isa`.
void overlay(Isa isa, KernelTable& t) {
#define EP_KERNEL(name, is, tl) \
  if (isa == Isa::is) {         \
    t.name.fn = &ep::is::name;  \
    t.name.tile = tl;           \
    t.name.isa = Isa::is;       \
  }
#include "kernels/kernels.inc"
}

KernelTable build(Isa isa) {
  KernelTable t = isa == Isa::reference ? KernelTable{} : build(isa_parent(isa));
  overlay(isa, t);
  return t;
}

}  // namespace

const KernelTable& kernel_table(Isa isa) {
  // a function-local static (a guard byte read per call), not std::call_once, which writes
  // thread-locals on every call
  static const std::array<KernelTable, 5> tables = [] {
    std::array<KernelTable, 5> t{};
    for (Isa i : kAllIsas)
      if (compiled_isas() & IsaSet(i)) t[isa_index(i)] = build(i);
    return t;
  }();
  if (!(compiled_isas() & IsaSet(isa)))
    throw std::runtime_error(std::string("kernel path ") + isa_name(isa) +
                             " is not compiled into this build");
  return tables[isa_index(isa)];
}

const KernelTable& kernels() { return kernel_table(selected_isa()); }

const std::vector<KernelListing>& kernel_listing() {
  static const std::vector<KernelListing> listing = {
#define EP_KERNEL(name, is, tl) KernelListing{#name, Isa::is, tl},
#include "kernels/kernels.inc"
  };
  return listing;
}

}  // namespace ep
