// ISA detection and the one-time choice of a kernel path (see isa.h).
//
// Consumes: CPU identification and the environment. Produces: the chosen Isa, logged to stderr
// when EDGEPRUNE_LOG is set (never otherwise: library code must not chatter).
#include "dispatch/isa.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include <unistd.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define EP_ARCH_X86 1
#elif defined(__aarch64__)
#include <sys/auxv.h>
#define EP_ARCH_ARM64 1
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace ep {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::reference:
      return "reference";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    case Isa::neon:
      return "neon";
    case Isa::neon_dotprod:
      return "neon-dotprod";
  }
  return "unknown";
}

bool isa_from_name(const std::string& name, Isa* out) {
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa isa_parent(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return Isa::avx2;
    case Isa::neon_dotprod:
      return Isa::neon;
    default:
      return Isa::reference;
  }
}

std::vector<std::string> CpuFeatures::names() const {
  std::vector<std::string> out;
  auto add = [&](bool have, const char* name) {
    if (have) out.emplace_back(name);
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512vnni, "avx512vnni");
  add(os_avx, "os-avx-state");
  add(os_avx512, "os-avx512-state");
  add(asimd, "asimd");
  add(asimddp, "asimddp");
  return out;
}

#if EP_ARCH_X86
static uint64_t read_xcr0() {
  uint32_t lo, hi;
  // xgetbv via asm so this file needs no -mxsave flag (ISA flags stay per kernel file).
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

// glibc answers from cpuid on x86 and often 0 on ARM, where sysfs may know: the level-1 cache
// of cpu0 whose type is Data (or Unified), its size like "32K".
static int64_t detect_l1d_bytes() {
#ifdef _SC_LEVEL1_DCACHE_SIZE
  const long v = sysconf(_SC_LEVEL1_DCACHE_SIZE);
  if (v > 0) return v;
#endif
  auto read = [](int index, const char* file, char* buf, int len) {
    char path[96];
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/%s", index, file);
    FILE* f = std::fopen(path, "r");
    if (!f) return false;
    const bool ok = std::fgets(buf, len, f) != nullptr;
    std::fclose(f);
    return ok;
  };
  for (int index = 0; index < 4; ++index) {
    char level[16], type[32], size[32];
    if (!read(index, "level", level, sizeof level) || std::atoi(level) != 1) continue;
    if (!read(index, "type", type, sizeof type) || (type[0] != 'D' && type[0] != 'U')) continue;
    if (!read(index, "size", size, sizeof size)) continue;
    char* end = nullptr;
    const long n = std::strtol(size, &end, 10);
    if (n <= 0) continue;
    return *end == 'K' ? int64_t(n) * 1024 : *end == 'M' ? int64_t(n) << 20 : int64_t(n);
  }
  return 0;
}

static CpuFeatures detect() {
  CpuFeatures f;
#if EP_ARCH_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  f.fma = (c >> 12) & 1;
  const bool avx = (c >> 28) & 1;
  if (osxsave && avx) {
    const uint64_t xcr0 = read_xcr0();
    // The OS must save XMM+YMM (bits 1,2) for AVX, plus opmask/ZMM (5,6,7) for AVX-512.
    f.os_avx = (xcr0 & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (xcr0 & 0xE0) == 0xE0;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512vnni = (c >> 11) & 1;
  }
#elif EP_ARCH_ARM64
  const unsigned long hw = getauxval(AT_HWCAP);
  f.asimd = (hw & HWCAP_ASIMD) != 0;
  f.asimddp = (hw & HWCAP_ASIMDDP) != 0;
#endif
  f.l1d_bytes = detect_l1d_bytes();
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

IsaSet compiled_isas() {
  IsaSet s = IsaSet(Isa::reference);
#if EP_HAVE_AVX2
  s |= IsaSet(Isa::avx2);
#endif
#if EP_HAVE_AVX512
  s |= IsaSet(Isa::avx512);
#endif
#if EP_HAVE_NEON
  s |= IsaSet(Isa::neon);
#endif
#if EP_HAVE_NEON_DOTPROD
  s |= IsaSet(Isa::neon_dotprod);
#endif
  return s;
}

static bool cpu_supports(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::reference:
      return true;
    case Isa::avx2:
      return f.avx2 && f.fma && f.os_avx;
    case Isa::avx512:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.os_avx512;
    case Isa::neon:
      return f.asimd;
    case Isa::neon_dotprod:
      return f.asimd && f.asimddp;
  }
  return false;
}

IsaSet supported_isas() {
  // once: layers ask on every call (runnable_table), and the CPU does not change
  static const IsaSet supported = [] {
    IsaSet s = 0;
    for (Isa isa : kAllIsas)
      if ((compiled_isas() & IsaSet(isa)) && cpu_supports(isa)) s |= IsaSet(isa);
    return s;
  }();
  return supported;
}

std::vector<std::string> isa_names(IsaSet set) {
  std::vector<std::string> out;
  for (Isa isa : kAllIsas)
    if (set & IsaSet(isa)) out.emplace_back(isa_name(isa));
  return out;
}

static std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s.empty() ? "none" : s;
}

static Isa choose() {
  const char* env = std::getenv("EDGEPRUNE_ISA");
  Isa chosen = Isa::reference;
  if (env && *env) {
    Isa want;
    if (!isa_from_name(env, &want))
      throw std::runtime_error(std::string("EDGEPRUNE_ISA=") + env +
                               " is not a kernel path; use one of reference, avx2, avx512, neon, "
                               "neon-dotprod");
    if (!(compiled_isas() & IsaSet(want)))
      throw std::runtime_error(
          std::string("EDGEPRUNE_ISA=") + env + " is not compiled into this build (compiled: " +
          join(isa_names(compiled_isas())) + "); unset it or pick one of those");
    if (!cpu_supports(want))
      throw std::runtime_error(
          std::string("EDGEPRUNE_ISA=") + env + " is not supported by this CPU (supported: " +
          join(isa_names(supported_isas())) + "); unset it or pick one of those");
    chosen = want;
  } else {
    for (Isa isa : kAllIsas)  // ascending order, so the last supported one wins
      if (supported_isas() & IsaSet(isa)) chosen = isa;
  }
  const char* log = std::getenv("EDGEPRUNE_LOG");
  if (log && *log && std::string(log) != "0")
    std::fprintf(stderr, "edgeprune: kernel path %s (%s; compiled %s; cpu %s)\n", isa_name(chosen),
                 env && *env ? "forced by EDGEPRUNE_ISA" : "auto",
                 join(isa_names(compiled_isas())).c_str(), join(cpu_features().names()).c_str());
  return chosen;
}

Isa selected_isa() {
  static std::once_flag once;
  static Isa chosen = Isa::reference;
  // call_once leaves the flag unset when choose() throws, so a bad override keeps failing loudly.
  std::call_once(once, [] { chosen = choose(); });
  return chosen;
}

}  // namespace ep
