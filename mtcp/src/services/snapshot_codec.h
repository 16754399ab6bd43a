// The snapshot layout the echo, source and discard services share (big-endian):
//   magic u32 | input consumed u64 | output written u64 | state length u32 | state bytes
// The state bytes are derived from the two positions, so an import checks every byte.
#pragma once
#include <string>

#include "common/buffer.h"
#include "sdk/app.h"
#include "sdk/service.h"

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

// The ServiceDef of a service with this snapshot layout: one App per connection, made from a
// copy of Options (which has snapshot_every and state_bytes); the two snapshot options are
// declared here, a subclass adds its own.
template <class App, class Options>
class PositionsService : public sdk::ServiceDef {
 public:
  PositionsService(std::string name, std::string summary, std::string every_help)
      : ServiceDef(std::move(name), std::move(summary)) {
    opt("snapshot-every", &o_.snapshot_every, std::move(every_help));
    opt("state-bytes", &o_.state_bytes, "Extra bytes of state in every snapshot", UINT32_MAX);
  }
  std::unique_ptr<sdk::AppFactory> start(const sdk::ServiceEnv&, std::string&) override {
    return std::make_unique<sdk::OptionsFactory<App, Options>>(o_);
  }

 protected:
  Options o_;
};

}  // namespace mtcp::svc
