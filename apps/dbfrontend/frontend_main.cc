// mtcp-bank-frontend: a pool member serving the `bank` service (docs/dbfrontend.md).
//   mtcp-bank-frontend --pool pool.json --id N --conninfo "host=... dbname=bank" [--admin PATH]
#include "bank_service.h"
#include "runtime/member.h"

int main(int argc, char** argv) {
  mtcp::sdk::Registry registry;
  registry.add(mtcp::bank::make_bank_service());
  return mtcp::rt::member_main(argc, argv, registry, "mtcp-bank-frontend", "bank",
                               "mtcp-bank-frontend: a banking front-end over PostgreSQL on an M-TCP pool member.");
}
