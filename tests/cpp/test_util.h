// Shared helpers for the C++ tests: seeded random data, sparsity masks, error bounds.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dispatch/isa.h"
#include "layers/layers.h"

namespace ep::test {

// Layers split every call over the threads asked for, however small (layers.h threads_for), so
// the tests' small shapes still check that thread splits change no bit.
inline const bool kSplitEveryCall = (ep::set_min_macs_per_thread(0.0), true);

inline std::vector<float> random_floats(std::mt19937& rng, int64_t count, float lo = -1.f,
                                        float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(count);
  for (auto& x : v) x = d(rng);
  return v;
}

// Zero each entry with probability `sparsity` (1.0 zeroes everything).
inline void sparsify(std::mt19937& rng, std::vector<float>& v, double sparsity) {
  std::uniform_real_distribution<double> d(0.0, 1.0);
  for (auto& x : v)
    if (sparsity >= 1.0 || d(rng) < sparsity) x = 0.0f;
}

// The ISAs this machine can run, in ascending order.
inline std::vector<Isa> runnable_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (supported_isas() & IsaSet(isa)) out.push_back(isa);
  return out;
}

// A whole file's bytes (the runtime tests' fixtures: .tflite, .in, .out).
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Raw little-endian float32 bytes as floats.
inline std::vector<float> floats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

}  // namespace ep::test
