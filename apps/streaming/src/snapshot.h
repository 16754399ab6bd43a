// The stream service's per-connection snapshot (docs/streaming.md): which stream, how far, and
// the pacing origin. Big-endian: magic u32 "STRM" | stream id u64 | byte offset u64 |
// origin u64 (µs, the member's wall clock when byte 0 was due). Exactly 28 bytes.
#pragma once
#include <cstdint>
#include <span>

#include "common/bytes.h"

namespace mtcp::stream {

inline constexpr uint32_t kSnapshotMagic = 0x5354524Du;  // "STRM"
inline constexpr size_t kSnapshotBytes = 28;

struct StreamSnapshot {
  uint64_t id = 0;
  uint64_t offset = 0;
  uint64_t origin_us = 0;
};

inline Bytes encode_stream_snapshot(const StreamSnapshot& s) {
  Bytes b;
  Writer w(b);
  w.u32(kSnapshotMagic);
  w.u64(s.id);
  w.u64(s.offset);
  w.u64(s.origin_us);
  return b;
}

// False unless the bytes are exactly a stream snapshot.
inline bool decode_stream_snapshot(std::span<const uint8_t> bytes, StreamSnapshot& s) {
  Reader r(bytes);
  uint32_t magic = r.u32();
  s.id = r.u64();
  s.offset = r.u64();
  s.origin_us = r.u64();
  return magic == kSnapshotMagic && r.done();
}

}  // namespace mtcp::stream
