// Running XXH3-128 digest of a byte stream (libxxhash). Used to check that a new owner's replay
// regenerates the output an old owner sent (docs/PROTOCOL.md §4.3). A determinism check between
// pool members that share a key, not a security function: XXH3 hashes at memory speed.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <span>

namespace mtcp {

using Digest128 = std::array<uint8_t, 16>;  // canonical (big-endian) XXH128 value

class StreamDigest {
 public:
  StreamDigest();
  ~StreamDigest();
  StreamDigest(StreamDigest&&) noexcept;
  StreamDigest& operator=(StreamDigest&&) noexcept;
  void reset();
  void update(std::span<const uint8_t> bytes);
  Digest128 value() const;  // of everything since reset(); the state is unchanged

 private:
  struct State;
  std::unique_ptr<State> st_;
};

Digest128 digest_of(std::span<const uint8_t> bytes);

}  // namespace mtcp
