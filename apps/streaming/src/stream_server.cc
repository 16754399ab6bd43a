// mtcp-stream-server: an M-TCP pool member serving the `stream` service (docs/streaming.md);
// the built-in services (mtcpd's) are available too.
//   mtcp-stream-server --pool pool.json --id N --media FILE.ts [--profile '0:max 10:400'] ...
// Exit status: 0 after SIGINT/SIGTERM, 2 on bad usage or when the member cannot start.
#include "runtime/member.h"
#include "services/builtin.h"
#include "stream_service.h"

int main(int argc, char** argv) {
  mtcp::sdk::Registry registry;
  registry.add(mtcp::stream::make_stream_service());
  mtcp::svc::register_builtin_services(registry);
  return mtcp::rt::member_main(
      argc, argv, registry, "mtcp-stream-server", "stream",
      "mtcp-stream-server: an M-TCP pool member streaming an MPEG-TS file in real time.");
}
