// The `stream` service (docs/streaming.md): video on demand of one MPEG-TS file per member,
// paced in real time by the stream's own clock (its PCRs), capped by a degradation profile.
#pragma once
#include <memory>

#include "sdk/service.h"

namespace mtcp::stream {

std::unique_ptr<sdk::ServiceDef> make_stream_service();

}  // namespace mtcp::stream
