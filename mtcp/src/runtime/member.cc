#include "runtime/member.h"

#include <CLI/CLI.hpp>
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
  for (const auto& w : pool.warnings) std::fprintf(stderr, "%s: %s\n", opt.prog.c_str(), w.c_str());
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

int member_main(int argc, char** argv, sdk::Registry& registry, const std::string& prog,
                const std::string& default_service, const std::string& about) {
  // The service is found first, so that only its own options are offered and checked.
  std::string service = sdk::find_flag_value(argc, argv, "--service");
  if (service.empty()) service = default_service;
  if (service == "list") {
    for (const auto* d : registry.all()) std::printf("%-10s %s\n", d->name().c_str(), d->summary().c_str());
    return 0;
  }
  sdk::ServiceDef* def = registry.find(service);
  if (!def) {
    std::fprintf(stderr, "%s: unknown service '%s' (registered: %s; see --service list)\n", prog.c_str(),
                 service.c_str(), registry.names().c_str());
    return 2;
  }
  CLI::App app{about};
  std::string pool_path, service_flag = service;
  MemberOptions opt;
  opt.prog = prog;
  opt.service = def;
  app.add_option("--pool", pool_path, "Pool configuration file (JSON, see docs/API.md)")->required();
  app.add_option("--id", opt.id, "This member's id in the pool file")->required();
  app.add_option("--service", service_flag, "Service for clients (" + registry.names() + "; 'list' describes them)")
      ->capture_default_str();
  app.add_option("--admin", opt.admin_path, "Local admin socket for mtcpctl (a filesystem path)");
  app.add_flag("-q,--quiet", opt.quiet, "No per-connection log lines");
  def->add_options(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is 0; any usage error is 2
  }
  PoolConfig pool;
  std::string why;
  if (!load_pool_config(pool_path, pool, why)) {
    std::fprintf(stderr, "%s: %s\n", prog.c_str(), why.c_str());
    return 2;
  }
  return run_member(pool, opt);
}

}  // namespace mtcp::rt
