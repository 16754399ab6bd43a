// Running one pool member until SIGINT/SIGTERM: the runtime's ServerNode serving a service.
// Shared by `mtcpd` and `mtcp-perf -s`.
#pragma once
#include <string>

#include "runtime/pool_config.h"
#include "services/services.h"

namespace mtcp::svc {

struct MemberOptions {
  core::ServerId id = 0;
  Kind service = Kind::ref;
  Params params;
  std::string admin_path;  // local admin socket (mtcpctl); empty: none
  bool quiet = false;      // no per-connection log lines
  std::string prog = "mtcpd";
};

// Returns the process exit status: 0 after a clean stop, 2 if the member could not start
// (the reason is printed on stderr, prefixed with the program name).
int run_member(const rt::PoolConfig& pool, const MemberOptions& opt);

}  // namespace mtcp::svc
