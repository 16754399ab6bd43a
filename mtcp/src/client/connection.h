// client::Connection: one M-TCP client connection for an application that runs its own Asio
// loop. It drives the sans-IO engine on real sockets (rt::ClientConn), feeds the migration
// policy, acts on its decisions, times migrations and tells the application what happened.
//
// Threading rule: everything runs on the thread that runs the io_context passed at creation.
// No method may be called from another thread and no callback runs on another thread; there
// is no locking. Another thread hands work in with asio::post(io, ...), which runs it on the
// loop thread. Callbacks (on_event, on_readable, on_writable) run from the io_context only,
// never inside a call the application makes (write, read, migrate, close, ...), so an
// application loop that writes is never re-entered. Callbacks may call any method, except
// that a Connection must not be destroyed from inside its own callback: post the destruction.
//
// Data:
//   write(Slice) / write_copy(span) return how many bytes were accepted into the send log
//   (at most Limits::send_log_bytes_max waiting for the server's acknowledgement); fewer than
//   offered, or 0, means the log is full: on_writable runs once there is room again. It runs
//   too after write_space() returned 0, for an application that asks before it produces.
//   read_slices(max, out) hands over received bytes without a copy (read() copies);
//   on_readable runs when new bytes arrived or the peer closed. Bytes left unread stay
//   readable (up to Limits::recv_buffer_bytes_max; the server is held back beyond that) and are
//   not announced again: read them when the application is ready.
//
// Life cycle: create() -> connect() -> `connected` -> ... -> close() -> `closed`, or `failed`
// at any point after connect(). Writes before `connected` wait in the send log.
#pragma once
#include <asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "client/event.h"
#include "client/policy.h"
#include "common/buffer.h"
#include "common/counters.h"
#include "runtime/pool_config.h"

namespace mtcp::core {
struct ClientEvent;
}
namespace mtcp::rt {
class ClientConn;
}

namespace mtcp::client {

// How long close() waits for the server to close its side and acknowledge every byte
// (0: as long as the server keeps the connection open, as a TCP half-close would).
inline constexpr TimeMs kDefaultCloseTimeoutMs = 10'000;
inline constexpr TimeMs kCloseTimeoutMaxMs = rt::kPolicyTimeMaxMs;

struct Options {
  ServerId first = 0;            // member to connect to; 0: the pool's first member
  rt::PolicyConfig policy;       // settings of the default policy (checked by rt::validate)
  // The application's own policy; if set, `policy` is not used.
  std::unique_ptr<Policy> policy_impl;
  TimeMs close_timeout_ms = kDefaultCloseTimeoutMs;  // <= kCloseTimeoutMaxMs; 0: no limit
};

// What the Connection itself counts (the engine's counters are counters()).
struct Stats {
  uint64_t bytes_sent = 0;      // accepted by write()/write_copy()
  uint64_t bytes_received = 0;  // received from the pool (readable or already read)
  uint64_t writes_refused = 0;  // write()/write_copy() calls that accepted fewer bytes than offered
  uint64_t migrations_started = 0;
  uint64_t migrations_done = 0;
  uint64_t migrations_failed = 0;
  uint64_t recoveries = 0;      // migrations the engine started by itself
};

class Connection {
 public:
  // Checks the pool (members, Options::first) and the policy settings. nullptr with `why`
  // naming the problem if they are unusable.
  static std::unique_ptr<Connection> create(asio::io_context& io, const rt::PoolConfig& pool,
                                            Options opt, std::string& why);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Opens the first subflow; `connected` or `failed` follows. Once only.
  void connect();

  // Application data (see the header comment for back-pressure). Both return 0 after close()
  // or once the connection failed.
  size_t write(Slice s);
  size_t write_copy(std::span<const uint8_t> bytes);
  size_t write_space() const;
  // Received bytes as slices of the receive blocks (no copy), at most max_bytes; returns the
  // count. read() copies into dst.
  size_t read_slices(size_t max_bytes, std::vector<Slice>& out);
  size_t read(std::span<uint8_t> dst);
  size_t readable() const;
  // The server closed its side and every byte it sent has been read.
  bool peer_closed() const;
  // The application holds received data back (its own sink is full): a slow reader, not a
  // slow server. Told to the policy; the default one then does not judge throughput.
  void set_app_limited(bool limited);

  // Graceful close: a CLOSE follows the last byte written; the peer's bytes keep arriving.
  // Once the server has closed its side and acknowledged every byte (or close_timeout_ms
  // passed, unless it is 0), what the engine still has to send goes out, the subflows close and `closed`
  // follows. Bytes still readable can be read after `closed`.
  void close();
  // Closes every subflow now; no event follows. Bytes in flight are lost.
  void abort();

  // Migrations requested by the application (reason "manual"). migrate() starts one now to
  // `target` (0: the next member): Error::closed if not established (or closed both ways),
  // pending_table_full while an attempt runs or the engine is recovering, bad_field for a
  // member not in the pool. request_migration() remembers the request and acts on it as soon
  // as the engine can migrate (one request at a time; a later one replaces it).
  Status migrate(ServerId target = 0);
  void request_migration(ServerId target = 0);

  // Read-only state.
  core::ConnId conn_id() const;
  ServerId server() const;  // member serving the connection now (0 before connected)
  const std::vector<ServerId>& pool() const;
  bool established() const;
  bool migrating() const;
  std::optional<ServerId> migration_target() const;
  bool closing() const { return close_requested_; }
  bool done() const { return terminal_; }  // `closed` or `failed` was delivered (or abort())
  uint64_t unacknowledged_bytes() const;   // written but not yet acknowledged by the server
  const Counters& counters() const;        // the engine's counters (docs/API.md)
  const Stats& stats() const { return stats_; }
  Policy& policy() { return *policy_; }

  std::function<void(const Event&)> on_event;
  std::function<void()> on_readable;
  std::function<void()> on_writable;

 private:
  struct Pending {  // a migration this Connection started
    ServerId target = 0;
    std::string reason;
    std::string detail;
    std::chrono::steady_clock::time_point started;
  };

  Connection(asio::io_context& io, const rt::PoolConfig& pool, Options opt, std::unique_ptr<Policy> policy);
  void on_change(std::vector<core::ClientEvent>& events);
  void handle(const core::ClientEvent& ev, TimeMs now);
  void migration_ended(const core::ClientEvent& ev, TimeMs now);
  void notice_recovery();
  void notice_recovery_of(ServerId from, ServerId to);
  void notify_data(TimeMs now);
  void run_policy(TimeMs now);
  void arm_policy_timer(TimeMs now);
  bool can_migrate() const;
  Status start_migration(ServerId target, std::string reason, std::string detail);
  ServerId resolve(ServerId target) const;
  size_t accepted(size_t n, size_t offered);
  void check_closed();
  void arm_close_timer();
  void finish_close(std::string detail);
  void terminate();
  void emit(Event e);
  void kick();

  asio::io_context& io_;
  ServerId first_;
  TimeMs close_timeout_ms_;
  std::unique_ptr<Policy> policy_;
  std::unique_ptr<rt::ClientConn> conn_;
  asio::steady_timer policy_timer_;
  TimeMs policy_armed_ = core::kNever;
  asio::steady_timer close_timer_;
  std::optional<Pending> pending_;
  bool recovery_seen_ = false;  // the running attempt is a recovery already announced
  std::optional<ServerId> manual_request_;
  Stats stats_;
  uint64_t rcv_seen_ = 0;       // engine rcv_nxt already counted and announced
  bool connect_called_ = false;
  // A write accepted less than offered, or write_space() said 0: on_writable is owed.
  mutable bool write_blocked_ = false;
  bool peer_fin_ = false;
  bool peer_closed_due_ = false;  // peer_closed seen, announced after the bytes before it
  bool close_requested_ = false;
  bool closing_subflows_ = false;  // flush_and_close is under way
  bool terminal_ = false;
  int round_depth_ = 0;  // > 0 while inside the engine's service round (on_change)
  int app_depth_ = 0;    // > 0 while inside a call of the application
  struct AppCall {
    explicit AppCall(int& d) : depth(d) { ++depth; }
    ~AppCall() { --depth; }
    AppCall(const AppCall&) = delete;
    AppCall& operator=(const AppCall&) = delete;
    int& depth;
  };
  bool service_posted_ = false;  // kick() posted a service round that has not run yet
  // Shared with pending handlers: false once this object is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Clock of the policy and of Event::downtime_us: milliseconds on the steady clock.
TimeMs steady_ms();

}  // namespace mtcp::client
