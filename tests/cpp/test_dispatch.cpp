// Dispatch: the selected path is the one the CPU model calls for (EDGEPRUNE_EXPECT_ISA, set per
// qemu CPU by CMake), it is runnable, and every compiled path has a full kernel table.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "dispatch/isa.h"
#include "kernels/kernels.h"

using namespace ep;

TEST(Dispatch, SelectedIsaMatchesTheCpu) {
  const char* expect = std::getenv("EDGEPRUNE_EXPECT_ISA");
  const Isa isa = selected_isa();
  EXPECT_TRUE(supported_isas() & IsaSet(isa)) << isa_name(isa);
  if (expect && *expect) EXPECT_EQ(std::string(isa_name(isa)), std::string(expect));
  std::printf("selected %s; cpu features:", isa_name(isa));
  for (const auto& f : cpu_features().names()) std::printf(" %s", f.c_str());
  std::printf("\n");
}

TEST(Dispatch, SelectionIsStable) { EXPECT_EQ(selected_isa(), selected_isa()); }

TEST(Dispatch, EveryCompiledPathHasEveryKernel) {
  for (Isa isa : kAllIsas) {
    if (!(compiled_isas() & IsaSet(isa))) {
      EXPECT_THROW(kernel_table(isa), std::runtime_error);
      continue;
    }
    const KernelTable& t = kernel_table(isa);
#define EP_KERNEL_KIND(name, Args) \
  EXPECT_NE(t.name.fn, nullptr) << #name << " on " << isa_name(isa);
#include "kernels/kernels.inc"
  }
}

TEST(Dispatch, NamesRoundTrip) {
  for (Isa isa : kAllIsas) {
    Isa back;
    ASSERT_TRUE(isa_from_name(isa_name(isa), &back));
    EXPECT_EQ(back, isa);
  }
  Isa unused;
  EXPECT_FALSE(isa_from_name("sse9", &unused));
}

TEST(Dispatch, ParentsEndAtReference) {
  for (Isa isa : kAllIsas) {
    Isa i = isa;
    for (int steps = 0; i != Isa::reference && steps < 5; ++steps) i = isa_parent(i);
    EXPECT_EQ(i, Isa::reference);
  }
}
