#include "common/digest.h"

#include <cstdlib>
#include <xxhash.h>

namespace mtcp {

struct StreamDigest::State {
  XXH3_state_t* s = XXH3_createState();
  State() {
    if (s == nullptr) std::abort();  // allocation failure: not caused by input
    XXH3_128bits_reset(s);
  }
  ~State() { XXH3_freeState(s); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

StreamDigest::StreamDigest() : st_(std::make_unique<State>()) {}
StreamDigest::~StreamDigest() = default;
StreamDigest::StreamDigest(StreamDigest&&) noexcept = default;
StreamDigest& StreamDigest::operator=(StreamDigest&&) noexcept = default;

void StreamDigest::reset() { XXH3_128bits_reset(st_->s); }

void StreamDigest::update(std::span<const uint8_t> bytes) {
  if (!bytes.empty()) XXH3_128bits_update(st_->s, bytes.data(), bytes.size());
}

static Digest128 canonical(XXH128_hash_t h) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  Digest128 d;
  for (size_t i = 0; i < d.size(); ++i) d[i] = c.digest[i];
  return d;
}

Digest128 StreamDigest::value() const { return canonical(XXH3_128bits_digest(st_->s)); }

Digest128 digest_of(std::span<const uint8_t> bytes) { return canonical(XXH3_128bits(bytes.data(), bytes.size())); }

}  // namespace mtcp
