#include "services/snapshot_codec.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "common/bytes.h"
#include "common/mix.h"
#include "services/builtin.h"

namespace mtcp::svc {
namespace {
// The state bytes of a snapshot are a stream seeded by its positions (so a stale or misplaced
// snapshot fails the check), generated and checked a word at a time: byte by byte, a 16 MiB
// state took about 80 ms to write and again to check on import (docs/profiling.md).
uint64_t state_seed(Positions pos) { return pos.in ^ (pos.out << 1); }
constexpr size_t kHeader = 4 + 8 + 8 + 4;
}  // namespace

Bytes encode_positions(uint32_t magic, Positions pos, uint32_t state_bytes) {
  Bytes b;
  b.reserve(kHeader + state_bytes);
  Writer w(b);
  w.u32(magic);
  w.u64(pos.in);
  w.u64(pos.out);
  w.u32(state_bytes);
  b.resize(kHeader + state_bytes);
  seeded_fill(state_seed(pos), 0, std::span<uint8_t>(b).subspan(kHeader));
  return b;
}

bool decode_positions(uint32_t magic, std::span<const uint8_t> b, uint32_t state_bytes, Positions& pos, std::string& why) {
  Reader r(b);
  uint32_t got_magic = r.u32();
  Positions p{r.u64(), r.u64()};
  uint64_t len = r.u32();
  if (!r.ok()) {
    why = "snapshot shorter than its header";
    return false;
  }
  if (got_magic != magic) {
    why = "snapshot written by another service";
    return false;
  }
  if (len != state_bytes || b.size() != kHeader + len) {
    why = "snapshot state length " + std::to_string(len) + " does not match this member's " + std::to_string(state_bytes);
    return false;
  }
  if (size_t at = seeded_mismatch(state_seed(p), 0, b.subspan(kHeader)); at != len) {
    why = "snapshot state corrupted at byte " + std::to_string(at);
    return false;
  }
  pos = p;
  return true;
}

bool import_positions(const sdk::Import& imp, uint32_t magic, uint32_t state_bytes, Positions& pos, std::string& why) {
  pos = {};
  if (imp.snap_id == 0) return true;
  if (!decode_positions(magic, imp.snapshot, state_bytes, pos, why)) return false;
  if (pos.in != imp.snap_in || pos.out != imp.snap_out) {
    why = "snapshot positions disagree with the protocol's record";
    return false;
  }
  return true;
}

}  // namespace mtcp::svc
