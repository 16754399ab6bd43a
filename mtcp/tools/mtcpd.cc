// mtcpd: run one M-TCP pool member serving a registered service.
//   mtcpd --pool pool.json --id N [--service NAME] [service options] [--admin PATH]
//   mtcpd --service list            the registered services
//   mtcpd --service NAME --help     that service's options
// Exit status: 0 after SIGINT/SIGTERM, 2 on bad usage or when the member cannot start.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "runtime/member.h"
#include "services/builtin.h"

int main(int argc, char** argv) {
  using namespace mtcp;
  sdk::Registry registry;
  svc::register_builtin_services(registry);
  // The service is found first, so that only its own options are offered and checked.
  std::string service = sdk::find_flag_value(argc, argv, "--service");
  if (service.empty()) service = "echo";
  if (service == "list") {
    for (const auto* d : registry.all()) std::printf("%-10s %s\n", d->name().c_str(), d->summary().c_str());
    return 0;
  }
  sdk::ServiceDef* def = registry.find(service);
  if (!def) {
    std::fprintf(stderr, "mtcpd: unknown service '%s' (registered: %s; see --service list)\n", service.c_str(),
                 registry.names().c_str());
    return 2;
  }
  CLI::App app{"mtcpd: an M-TCP pool member. Clients' connections can move to and from the other members."};
  std::string pool_path, service_flag = service;
  rt::MemberOptions opt;
  opt.prog = "mtcpd";
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
  rt::PoolConfig pool;
  std::string why;
  if (!rt::load_pool_config(pool_path, pool, why)) {
    std::fprintf(stderr, "mtcpd: %s\n", why.c_str());
    return 2;
  }
  return rt::run_member(pool, opt);
}
