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

// The whole command line of a member program (mtcpd, and each app's own server binary such as
// mtcp-stream-server): --pool, --id, --service (default `default_service`; `list` prints the
// registry), --admin, -q, and the chosen service's own options; then run_member(). `about` is
// the --help banner. Returns the exit status (0 after a clean stop or --help, 2 on bad usage or
// when the member cannot start).
int member_main(int argc, char** argv, sdk::Registry& registry, const std::string& prog,
                const std::string& default_service, const std::string& about);

}  // namespace mtcp::rt
