// The snapshot layout the echo and source services share (big-endian):
//   magic u32 | input consumed u64 | output written u64 | state length u32 | state bytes
// The state bytes are derived from the two positions, so an import checks every byte.
#pragma once
#include <string>

#include "common/buffer.h"
#include "core/server.h"

namespace mtcp::svc {

struct Positions {
  uint64_t in = 0;
  uint64_t out = 0;
};

Bytes encode_positions(uint32_t magic, Positions pos, uint32_t state_bytes);
bool decode_positions(uint32_t magic, const Bytes& b, uint32_t state_bytes, Positions& pos, std::string& why);
// Import for a connection: the engine's snapshot (none: start at zero), decoded and checked
// against the positions the protocol recorded with it.
bool import_positions(const core::ServerEngine& engine, core::ConnId conn, uint32_t magic, uint32_t state_bytes,
                      Positions& pos, std::string& why);

}  // namespace mtcp::svc
