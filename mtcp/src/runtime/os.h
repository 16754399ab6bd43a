// What the runtime gives the sans-IO core from the operating system: the time (Unix
// milliseconds, so certificate times compare across pool members) and cryptographic
// randomness (OpenSSL's RAND_bytes) for nonces and connection ids.
#pragma once
#include <chrono>
#include <cstdlib>
#include <openssl/rand.h>

#include "core/types.h"

namespace mtcp::rt {

inline core::TimeMs now_ms() {
  using namespace std::chrono;
  return static_cast<core::TimeMs>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

class OsRandom final : public core::Random {
 public:
  void fill(std::span<uint8_t> out) override {
    // RAND_bytes only fails when the OS cannot seed the generator: nothing sane can follow.
    if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) std::abort();
  }
};

}  // namespace mtcp::rt
