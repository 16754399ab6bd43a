// mtcpd: run one M-TCP pool member serving a registered service.
//   mtcpd --pool pool.json --id N [--service NAME] [service options] [--admin PATH]
//   mtcpd --service list            the registered services
//   mtcpd --service NAME --help     that service's options
// Exit status: 0 after SIGINT/SIGTERM, 2 on bad usage or when the member cannot start.
#include "runtime/member.h"
#include "services/builtin.h"

int main(int argc, char** argv) {
  mtcp::sdk::Registry registry;
  mtcp::svc::register_builtin_services(registry);
  return mtcp::rt::member_main(
      argc, argv, registry, "mtcpd", "echo",
      "mtcpd: an M-TCP pool member. Clients' connections can move to and from the other members.");
}
