#include "services/member.h"

#include <csignal>
#include <cstdio>

#include "runtime/server_node.h"

namespace mtcp::svc {

int run_member(const rt::PoolConfig& pool, const MemberOptions& opt) {
  const rt::Member* me = pool.find(opt.id);
  if (!me) {
    std::fprintf(stderr, "%s: member %u is not in the pool\n", opt.prog.c_str(), opt.id);
    return 2;
  }
  asio::io_context io;
  ServiceHost host(opt.service, opt.params, [&](const std::string& line) {
    if (!opt.quiet) std::fprintf(stderr, "%s[%u]: %s\n", opt.prog.c_str(), opt.id, line.c_str());
  });
  rt::ServerNode node(io, pool, opt.id, host);
  std::string why;
  if (!node.start(why)) {
    std::fprintf(stderr, "%s: member %u: %s\n", opt.prog.c_str(), opt.id, why.c_str());
    return 2;
  }
  std::fprintf(stderr, "%s: member %u serving %s on %s (control %s)\n", opt.prog.c_str(), opt.id,
               kind_name(opt.service), me->data.c_str(), me->control.c_str());
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](asio::error_code, int) {
    node.stop();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace mtcp::svc
