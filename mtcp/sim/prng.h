// Deterministic generator for the simulator (xoshiro256** seeded through splitmix64). Not for
// cryptography: certificates and nonces in the simulation only need to be reproducible.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>

#include "common/mix.h"
#include "core/types.h"

namespace mtcp::sim {

using mtcp::splitmix64;

class Prng final : public core::Random {
 public:
  explicit Prng(uint64_t seed) {
    for (auto& w : s_) w = splitmix64(seed);
  }
  // With a tape (the whole-connection fuzzer's input, or a file given to `mtcp-sim --tape`),
  // each draw takes the tape's next 8 bytes (little-endian; the last draw zero-padded) instead
  // of the generator's output, until the tape runs out; then the generator takes over. The
  // tape must outlive the generator.
  Prng(uint64_t seed, std::span<const uint8_t> tape) : Prng(seed) { tape_ = tape; }
  uint64_t next() {
    uint64_t g = generate();
    if (pos_ >= tape_.size()) return g;
    uint8_t w[8] = {};
    size_t n = std::min<size_t>(8, tape_.size() - pos_);
    std::memcpy(w, tape_.data() + pos_, n);
    pos_ += n;
    uint64_t t = 0;
    for (int i = 7; i >= 0; --i) t = (t << 8) | w[i];
    return t;
  }
  // Uniform in [lo, hi] (inclusive).
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + next() % (hi - lo + 1); }
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }
  void fill(std::span<uint8_t> out) override {
    for (auto& b : out) b = static_cast<uint8_t>(next());
  }

 private:
  uint64_t generate() {
    uint64_t result = rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  std::span<const uint8_t> tape_;
  size_t pos_ = 0;
};

}  // namespace mtcp::sim
