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
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
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
  using Notify = std::function<void()>;  // called when poll() may have progress to report
  PgAsync(asio::io_context& io, Notify notify) : io_(io), notify_(std::move(notify)) {}
  PgAsync(asio::io_context& io, sdk::Waker waker) : PgAsync(io, Notify([waker] { waker.wake(); })) {}
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
  // or the query sent last. A connect or query that has not finished within timeout_ms is
  // given up: the connection is dropped and the result is `lost` ("did not answer within").
  std::optional<PgResult> poll();
  // How long a connect or a query may take (0: no limit). A database that hangs instead of
  // refusing (stopped, or its host unreachable) would otherwise hold the request for as long
  // as the kernel keeps the TCP connection; a Unix socket, for ever.
  void set_timeout_ms(uint64_t ms) { timeout_ms_ = ms; }
  // Drops the connection (its backend ends; an open transaction there is rolled back).
  void reset();
  // Tells `notify` from now on (a spare session handed to an app); waits armed before are dropped.
  void rebind(Notify notify);
  // Idle, connected, and outside any transaction (libpq's PQTRANS_IDLE).
  bool idle_outside_tx() const;
  // Idle and still connected (reads what the server sent; a closed session shows here).
  bool alive();

 private:
  void watch(bool read, bool write);
  void adopt_socket(bool fresh = false);  // fresh: a new descriptor object even for the same fd
  void sent();                            // after PQsendQuery*: busy, flush, wait for the answer
  PgResult lost(const char* what);
  void start_clock();  // a connect or query begins: the deadline starts
  bool overdue() const;
  void arm_deadline();  // wake the app when the deadline passes (at most one wait armed)

  asio::io_context& io_;
  Notify notify_;
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
  uint64_t timeout_ms_ = 0;
  std::chrono::steady_clock::time_point started_{};
  std::unique_ptr<asio::steady_timer> timer_;
  // Whether the timer's wait is armed, shared with its handler (stale after rebind()).
  std::shared_ptr<bool> timer_armed_ = std::make_shared<bool>(false);
};

// Spare database sessions of one member, connected ahead of need: an app that needs a new
// session (a new connection, a new owner after a migration, the reply journal) takes a
// connected one instead of waiting for a backend to start. At most `max` are kept, each an
// idle backend. Once connected, a spare runs `warm_sql` (the caller's functions called once
// inside a transaction that is rolled back, so that the backend has them compiled and its
// caches filled before an app waits on it); a spare whose connect or warm-up fails is dropped
// and replaced only at the next take(), so a database that is down costs at most `max` connect
// attempts per take().
class PgSpares : public std::enable_shared_from_this<PgSpares> {
 public:
  PgSpares(asio::io_context& io, std::string conninfo, size_t max, std::string warm_sql, uint64_t timeout_ms = 0)
      : io_(io), conninfo_(std::move(conninfo)), max_(max), warm_sql_(std::move(warm_sql)), timeout_ms_(timeout_ms) {}
  // A connected idle session, telling `notify` from now on; null if none is ready. Refills.
  std::unique_ptr<PgAsync> take(PgAsync::Notify notify);
  // An app's session it no longer needs, kept as a spare (up to kept_max()) if it is idle
  // outside any transaction, else closed. Only for a session whose backend no
  // bank_session row records (the reply journal's): a claimed one could be terminated by the
  // connection's next owner while it serves another (docs/dbfrontend.md "Spare sessions").
  void give_back(std::unique_ptr<PgAsync> s);
  // An app's claimed session it no longer needs: `release_sql` runs first (it must leave the
  // session outside any transaction, as a fresh one, and recorded in no bank_session row); the
  // session is a spare once that succeeded, and closed if it failed. Kept up to kept_max(),
  // like give_back.
  void release(std::unique_ptr<PgAsync> s, const std::string& release_sql);
  void refill();

 private:
  // Sessions handed back are kept up to 8 times the configured number: a member that hands
  // back more than it takes for a while (connections migrate away from it) would otherwise
  // close them, while another member starts new backends. At 2x, a third of the releases of
  // a migration workload were closed.
  size_t kept_max() const { return 8 * max_; }
  void pump();
  PgAsync::Notify pump_notify();
  asio::io_context& io_;
  const std::string conninfo_;
  const size_t max_;
  const std::string warm_sql_;
  const uint64_t timeout_ms_;  // each session's PgAsync::set_timeout_ms
  std::vector<std::unique_ptr<PgAsync>> s_;  // connecting or idle
};

// The connection string for log lines, with any password replaced by "***" (keyword/value
// and URI forms, through libpq's own parser); "(unparsable connection string)" otherwise.
std::string redact_conninfo(const std::string& conninfo);

}  // namespace mtcp::bank
