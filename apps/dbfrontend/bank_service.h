// The `bank` service: the banking line protocol (bank_protocol.h) over PostgreSQL through
// libpq's asynchronous API on the member's event loop. docs/dbfrontend.md has the design and
// its argument (exactly-once replies, fencing by epoch, interactive transactions re-executed
// after a migration).
#pragma once
#include <memory>

#include "sdk/service.h"

namespace mtcp::bank {

struct BankOptions {
  std::string conninfo = "dbname=bank";  // libpq connection string
  uint64_t retries = 30;                 // serialization failures/deadlocks retried per request
  uint64_t reconnects = 3;               // database reconnects per request before ERR
  asio::io_context* io = nullptr;
};

std::unique_ptr<sdk::ServiceDef> make_bank_service();

}  // namespace mtcp::bank
