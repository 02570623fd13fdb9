// ISA dispatch: which instruction-set paths were compiled in, which the CPU supports, and the
// one path chosen for this process.
//
// Consumes: cpuid / xgetbv (x86) or getauxval(AT_HWCAP) (aarch64), and the EDGEPRUNE_ISA and
// EDGEPRUNE_LOG environment variables. Produces: Isa bit-sets, feature names, and the chosen Isa.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ep {

// One bit per kernel path. Order matters: a higher bit on the same architecture is "better".
enum class Isa : uint32_t {
  reference = 1u << 0,
  avx2 = 1u << 1,          // AVX2 + FMA
  avx512 = 1u << 2,        // AVX-512 F/BW/VL (+ VNNI where a kernel needs it, checked separately)
  neon = 1u << 3,          // AArch64 Advanced SIMD
  neon_dotprod = 1u << 4,  // + SDOT/UDOT (ARMv8.2 dotprod)
};

using IsaSet = uint32_t;

inline constexpr Isa kAllIsas[] = {Isa::reference, Isa::avx2, Isa::avx512, Isa::neon,
                                   Isa::neon_dotprod};

const char* isa_name(Isa isa);  // "reference", "avx2", "avx512", "neon", "neon-dotprod"
bool isa_from_name(const std::string& name, Isa* out);

// The "parent" whose kernels an ISA inherits when it has no kernel of its own for an entry
// (avx512 -> avx2 -> reference; neon-dotprod -> neon -> reference).
Isa isa_parent(Isa isa);

struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512vnni = false, os_avx = false, os_avx512 = false;  // OS saves the wide registers
  bool asimd = false, asimddp = false;
  // L1 data cache per core in bytes, as the OS reports it (sysconf, else sysfs); 0: unknown
  int64_t l1d_bytes = 0;
  std::vector<std::string> names() const;  // the features present, lower-case
};

const CpuFeatures& cpu_features();
IsaSet compiled_isas();   // paths built into this binary
IsaSet supported_isas();  // compiled paths this CPU can run
// The path in use: EDGEPRUNE_ISA if set (throws std::runtime_error with a one-line message when
// that path is unknown, not compiled or not supported), else the best supported one. Chosen
// once per process (std::call_once); a failed choice throws again on every call.
Isa selected_isa();

std::vector<std::string> isa_names(IsaSet set);

}  // namespace ep
