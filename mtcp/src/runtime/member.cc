#include "runtime/member.h"

#include <csignal>
#include <cstdio>
#include <memory>

#include "runtime/admin.h"
#include "runtime/os.h"
#include "runtime/server_node.h"

namespace mtcp::rt {

int run_member(const PoolConfig& pool, const MemberOptions& opt) {
  const Member* me = pool.find(opt.id);
  if (!me) {
    std::fprintf(stderr, "%s: member %u is not in the pool\n", opt.prog.c_str(), opt.id);
    return 2;
  }
  std::string why;
  if (auto it = pool.services.find(opt.service->name()); it != pool.services.end()) {
    if (!opt.service->configure_json(it->second, why)) {
      std::fprintf(stderr, "%s: pool file: %s\n", opt.prog.c_str(), why.c_str());
      return 2;
    }
  }
  raise_open_files_limit();  // one socket per client connection
  tune_allocator_for_states();
  asio::io_context io(1);  // one thread: posted handlers skip waking the reactor (docs/profiling.md)
  auto log = [&](const std::string& line) {
    if (!opt.quiet) std::fprintf(stderr, "%s[%u]: %s\n", opt.prog.c_str(), opt.id, line.c_str());
  };
  sdk::ServiceEnv env{&io, log};
  std::unique_ptr<sdk::AppFactory> factory = opt.service->start(env, why);
  if (!factory) {
    std::fprintf(stderr, "%s: service %s cannot start: %s\n", opt.prog.c_str(), opt.service->name().c_str(), why.c_str());
    return 2;
  }
  ServerNode node(io, pool, opt.id, *factory, log);
  if (!node.start(why)) {
    std::fprintf(stderr, "%s: member %u: %s\n", opt.prog.c_str(), opt.id, why.c_str());
    return 2;
  }
  std::unique_ptr<AdminServer> admin;
  if (!opt.admin_path.empty()) {
    admin = std::make_unique<AdminServer>(io, node, opt.admin_path);
    if (!admin->start(why)) {
      std::fprintf(stderr, "%s: admin socket %s: %s\n", opt.prog.c_str(), opt.admin_path.c_str(), why.c_str());
      node.stop();
      return 2;
    }
  }
  std::fprintf(stderr, "%s: member %u serving %s on %s (control %s)%s%s\n", opt.prog.c_str(), opt.id,
               opt.service->name().c_str(), me->data.c_str(), me->control.c_str(), admin ? ", admin socket " : "",
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

}  // namespace mtcp::rt
