// The `bank` service: the banking line protocol (bank_protocol.h) over PostgreSQL through
// libpq's asynchronous API on the member's event loop. docs/dbfrontend.md has the design and
// its argument (exactly-once replies, fencing by epoch, interactive transactions re-executed
// after a migration).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "sdk/service.h"

namespace mtcp::bank {

class PgSpares;

struct BankOptions {
  std::string conninfo = "dbname=bank";  // libpq connection string
  uint64_t retries = 30;                 // serialization failures/deadlocks retried per request
  uint64_t reconnects = 3;               // database reconnects per request before ERR
  uint64_t db_timeout_ms = 10000;        // a connect or statement that takes longer is given up (0: never)
  // For the tests only: wait this long before sending an interactive COMMIT to the database,
  // so a test can stop the front-end or migrate the connection in between (0: no wait).
  uint64_t test_commit_delay_ms = 0;
  // For the tests only: wait this long after an interactive COMMIT succeeded before replying.
  uint64_t test_reply_delay_ms = 0;
  uint64_t spare_sessions = 2;           // database sessions each member keeps connected ahead
  asio::io_context* io = nullptr;
  std::shared_ptr<PgSpares> spares;      // the member's spare sessions (null: none)
  std::function<void(const std::string&)> log;
};

std::unique_ptr<sdk::ServiceDef> make_bank_service();

}  // namespace mtcp::bank
