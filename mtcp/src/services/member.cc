#include "services/member.h"

#include <csignal>
#include <cstdio>
#include <memory>

#include "runtime/admin.h"
#include "runtime/os.h"
#include "runtime/server_node.h"

namespace mtcp::svc {

int run_member(const rt::PoolConfig& pool, const MemberOptions& opt) {
  const rt::Member* me = pool.find(opt.id);
  if (!me) {
    std::fprintf(stderr, "%s: member %u is not in the pool\n", opt.prog.c_str(), opt.id);
    return 2;
  }
  rt::raise_open_files_limit();  // one socket per client connection
  rt::tune_allocator_for_states();
  asio::io_context io(1);  // one thread: posted handlers skip waking the reactor (docs/profiling.md)
  ServiceHost host(opt.service, opt.params, [&](const std::string& line) {
    if (!opt.quiet) std::fprintf(stderr, "%s[%u]: %s\n", opt.prog.c_str(), opt.id, line.c_str());
  });
  rt::ServerNode node(io, pool, opt.id, host);
  std::string why;
  if (!node.start(why)) {
    std::fprintf(stderr, "%s: member %u: %s\n", opt.prog.c_str(), opt.id, why.c_str());
    return 2;
  }
  std::unique_ptr<rt::AdminServer> admin;
  if (!opt.admin_path.empty()) {
    admin = std::make_unique<rt::AdminServer>(io, node, opt.admin_path);
    if (!admin->start(why)) {
      std::fprintf(stderr, "%s: admin socket %s: %s\n", opt.prog.c_str(), opt.admin_path.c_str(), why.c_str());
      node.stop();
      return 2;
    }
  }
  std::fprintf(stderr, "%s: member %u serving %s on %s (control %s)%s%s\n", opt.prog.c_str(), opt.id,
               kind_name(opt.service), me->data.c_str(), me->control.c_str(), admin ? ", admin socket " : "",
               admin ? opt.admin_path.c_str() : "");
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](asio::error_code, int) {
    if (admin) admin->stop();
    node.stop();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace mtcp::svc
