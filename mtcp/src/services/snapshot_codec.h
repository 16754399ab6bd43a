// The snapshot layout the echo and source services share (big-endian):
//   magic u32 | input consumed u64 | output written u64 | state length u32 | state bytes
// The state bytes are derived from the two positions, so an import checks every byte.
#pragma once
#include <string>

#include "common/buffer.h"
#include "sdk/app.h"

namespace mtcp::svc {

struct Positions {
  uint64_t in = 0;
  uint64_t out = 0;
};

Bytes encode_positions(uint32_t magic, Positions pos, uint32_t state_bytes);
bool decode_positions(uint32_t magic, std::span<const uint8_t> b, uint32_t state_bytes, Positions& pos, std::string& why);
// The positions an app instance starts from: the snapshot's (none: zero), decoded and checked
// against the positions the protocol recorded with it.
bool import_positions(const sdk::Import& imp, uint32_t magic, uint32_t state_bytes, Positions& pos, std::string& why);

}  // namespace mtcp::svc
