// Running one pool member until SIGINT/SIGTERM: the runtime's ServerNode serving a registered
// service (sdk/service.h). Shared by `mtcpd` and `mtcp-perf -s`.
#pragma once
#include <string>

#include "runtime/pool_config.h"
#include "sdk/service.h"

namespace mtcp::rt {

struct MemberOptions {
  core::ServerId id = 0;
  sdk::ServiceDef* service = nullptr;  // options already set from the command line
  std::string admin_path;  // local admin socket (mtcpctl); empty: none
  bool quiet = false;      // no per-connection log lines
  std::string prog = "mtcpd";
};

// Applies the pool file's section for the service (command-line options win), starts the
// service with the member's io_context and serves until SIGINT/SIGTERM. Returns the process
// exit status: 0 after a clean stop, 2 if the member could not start (the reason is printed on
// stderr, prefixed with the program name).
int run_member(const PoolConfig& pool, const MemberOptions& opt);

}  // namespace mtcp::rt
