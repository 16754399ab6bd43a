// libFuzzer harness for the pool file parser (runtime/pool_config.h): any text is either a
// valid configuration or refused with a message; never a crash, an exception or an abort.
// Checked: a refusal names the file; an accepted configuration has members and its limits are
// within the bounds the core's validate() demands (so a member never aborts on it).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "runtime/pool_config.h"

namespace {
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_pool_config: check failed: %s\n", what);
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  mtcp::rt::PoolConfig cfg;
  std::string why;
  // A key file named by the input resolves beside a folder that does not exist.
  const std::string path = "/nonexistent-mtcp-fuzz/pool.json";
  if (!mtcp::rt::parse_pool_config(text, path, cfg, why)) {
    check(why.rfind(path, 0) == 0, "a refusal names the file");
    return 0;
  }
  check(!cfg.members.empty() && cfg.members.size() <= mtcp::kAlternatesMax + 1, "an accepted pool has 1..17 members");
  const mtcp::Limits& l = cfg.limits;
  check(l.frame_payload_bytes_max >= 1 && l.frame_payload_bytes_max <= mtcp::kFramePayloadBytesMax, "frame cap");
  check(l.snapshot_bytes_max <= mtcp::kSnapshotBytesMax && l.input_log_bytes_max <= mtcp::kStateLogBytesMax, "state caps");
  check(l.send_log_bytes_max >= 1 && l.send_log_bytes_max <= mtcp::kStateLogBytesMax && l.recv_buffer_bytes_max >= 1,
        "log caps");
  check(l.cert_lifetime_ms >= 2 && l.migrate_requests_per_s_max >= 1, "lifetime and rate");
  check(!l.ack_after_replication || l.transfer_mode == mtcp::TransferMode::eager, "ack-after-replication is eager");
  for (const auto& m : cfg.members) check(m.id != 0 && !m.data.empty() && !m.control.empty(), "member fields");
  return 0;
}
