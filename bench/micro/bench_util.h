// Shared helpers for the micro-benchmarks (bench/micro): deterministic bytes, a deterministic
// core::Random, and the byte sizes the benchmarks sweep.
#pragma once
#include <cstdint>
#include <span>

#include "cert/cert.h"
#include "common/buffer.h"
#include "core/types.h"

namespace mtcp::bench {

inline constexpr int64_t kKiB = 1024;
inline constexpr int64_t kMiB = 1024 * 1024;

// Byte i of a deterministic pattern (not constant, so a bug that drops or shifts bytes shows).
inline uint8_t pattern_byte(uint64_t i, uint8_t seed = 0) {
  return static_cast<uint8_t>(seed + i * 131 + (i >> 9) * 7);
}
inline Bytes pattern_bytes(size_t n, uint8_t seed = 0) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = pattern_byte(i, seed);
  return b;
}

// splitmix64: reproducible, not for cryptography (the benchmarks need determinism only).
class BenchRandom final : public core::Random {
 public:
  explicit BenchRandom(uint64_t seed) : x_(seed) {}
  uint64_t next() {
    uint64_t z = (x_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  void fill(std::span<uint8_t> out) override {
    for (auto& b : out) b = static_cast<uint8_t>(next());
  }

 private:
  uint64_t x_;
};

inline cert::Key bench_pool_key() {
  cert::Key k{};
  BenchRandom r(0xC0FFEE);
  r.fill(k);
  return k;
}

}  // namespace mtcp::bench
