// One libpq connection driven by the member's event loop (docs/API.md "Async work and
// threads"): PQconnectStart/PQconnectPoll and PQsendQuery(Params), the connection's socket
// waited for with an asio descriptor, completion told to the app through its Waker. No call
// here blocks. The app calls poll() from on_wake and gets each finished step back.
//
// Handlers hold only a weak "alive" token and a Waker copy, never the object, so one that runs
// after the app is gone does nothing.
#pragma once
#include <libpq-fe.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sdk/app.h"

namespace mtcp::bank {

struct PgResult {
  enum class Kind { ok, sql_error, lost } kind = Kind::ok;
  std::string sqlstate;  // with sql_error: the SQLSTATE (40001, 40P01, MT001, ...)
  std::string message;   // with sql_error or lost: libpq's message, one line
  std::string value;     // the first column of the first row of the last result that had rows
  bool has_value = false;
  bool ok() const { return kind == Kind::ok; }
};

class PgAsync {
 public:
  PgAsync(asio::io_context& io, sdk::Waker waker) : io_(io), waker_(std::move(waker)) {}
  ~PgAsync() { reset(); }
  PgAsync(const PgAsync&) = delete;
  PgAsync& operator=(const PgAsync&) = delete;

  enum class State { down, connecting, idle, busy };
  State state() const { return st_; }

  // Starts connecting (state connecting). False (state down) if libpq refused at once.
  bool connect(const std::string& conninfo, std::string& why);
  // One statement with text parameters, or a simple query (several statements, no params).
  // Only in state idle; the state becomes busy until poll() returns the result.
  bool send(const std::string& sql, const std::vector<std::string>& params);
  bool send_simple(const std::string& sql);
  // Advances the connection. Returns a result when a step finished: the connect (ok or lost),
  // or the query sent last.
  std::optional<PgResult> poll();
  // Drops the connection (its backend ends; an open transaction there is rolled back).
  void reset();

 private:
  void watch(bool read, bool write);
  void adopt_socket();
  PgResult lost(const char* what);

  asio::io_context& io_;
  sdk::Waker waker_;
  PGconn* pg_ = nullptr;
  State st_ = State::down;
  bool flushing_ = false;
  std::unique_ptr<asio::posix::stream_descriptor> sd_;
  int sd_fd_ = -1;
  // Shared with the handlers: which waits are armed, and whether this object still exists.
  struct Waits {
    bool read = false, write = false;
  };
  std::shared_ptr<Waits> waits_ = std::make_shared<Waits>();
  PgResult acc_;  // the result being gathered
};

}  // namespace mtcp::bank
