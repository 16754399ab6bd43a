// What the runtime gives the sans-IO core from the operating system: the time (Unix
// milliseconds, so certificate times compare across pool members) and cryptographic
// randomness (OpenSSL's RAND_bytes) for nonces and connection ids.
#pragma once
#include <chrono>
#include <cstdlib>
#include <openssl/rand.h>
#include <malloc.h>
#include <sys/resource.h>

#include "core/types.h"

namespace mtcp::rt {

inline core::TimeMs now_ms() {
  using namespace std::chrono;
  return static_cast<core::TimeMs>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

// Raises the soft limit on open files to the hard limit (a member or a load client may hold
// tens of thousands of sockets) and returns the new soft limit.
inline rlim_t raise_open_files_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur;
}

// Keeps buffers of up to 64 MiB on the heap and freed memory up to 128 MiB for reuse (glibc's
// default maps each buffer over 32 MiB, and often over a few MiB, afresh). A migration of a
// 16 MiB state allocates several such buffers; faulting in fresh pages for each cost about
// 10 ms per buffer, a third of the migration (docs/profiling.md).
inline void tune_allocator_for_states() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

class OsRandom final : public core::Random {
 public:
  void fill(std::span<uint8_t> out) override {
    // RAND_bytes only fails when the OS cannot seed the generator: nothing sane can follow.
    if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) std::abort();
  }
};

}  // namespace mtcp::rt
