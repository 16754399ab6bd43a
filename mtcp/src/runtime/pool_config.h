// The pool configuration file (JSON), shared by every member and by clients:
//
//   { "pool_key_file": "pool.key",          // 32 raw bytes or 64 hex digits; relative to this file
//     "transfer": "lazy" | "eager",
//     "ack_after_replication": false,
//     "members": [ {"id": 1, "data": "127.0.0.1:7001", "control": "127.0.0.1:7101"}, ... ],
//     "insecure_key_file": false,         // true: accept a key others can read, with a warning
//     "limits": { "claim_timeout_ms": 300, ... },   // optional overrides of core Limits
//     "services": { "echo": { "snapshot_every": 65536 }, ... } }  // optional service options
//
// Every problem is reported with the file name and what is wrong (docs/API.md "pool file").
#pragma once
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cert/cert.h"
#include "common/limits.h"
#include "core/types.h"

namespace mtcp::rt {

struct Member {
  core::ServerId id = 0;
  std::string data;     // where clients connect
  std::string control;  // where the other members connect
};

struct PoolConfig {
  std::vector<Member> members;
  cert::Key pool_key{};
  Limits limits;
  // Each service's section, as JSON text, checked by the service itself (sdk/service.h).
  std::map<std::string, std::string> services;
  // Things accepted but worth saying (a key file others can read, with insecure_key_file).
  std::vector<std::string> warnings;
  const Member* find(core::ServerId id) const;
};

// Loads and validates; on failure returns false with `why`.
bool load_pool_config(const std::string& path, PoolConfig& out, std::string& why);
// The same from the file's text; `path` names it in messages, and a relative pool_key_file is
// found beside it (fuzz_pool_config feeds arbitrary text here).
bool parse_pool_config(std::string_view text, const std::string& path, PoolConfig& out, std::string& why);

}  // namespace mtcp::rt
