// client::Connection: the glue between the engine (through rt::ClientConn), the policy and the
// application that mtcp-perf and mtcp-proxy used to carry each by hand.
//
// Theory of operation. Everything happens in on_change(), which rt::ClientConn calls after
// every service round (an input was handled or an output sent):
//   1. the engine's events become Events, and the policy hears about them;
//   2. an attempt the engine started by itself (a recovery) is announced;
//   3. new received bytes are counted (policy, stats) and announced (on_readable), room in the
//      send log after a refused write is announced (on_writable);
//   4. a close in both directions that is complete ends the connection (check_closed);
//   5. the policy is asked (run_policy) and its one timer re-armed.
// Application calls (write, read, migrate) re-enter the engine and call service(); inside a
// round, ClientConn turns that into one more round instead of recursing.
#include "client/connection.h"

#include <algorithm>

#include "runtime/client_conn.h"
#include "runtime/os.h"

namespace mtcp::client {

using Clock = std::chrono::steady_clock;

TimeMs steady_ms() {
  using namespace std::chrono;
  return static_cast<TimeMs>(duration_cast<milliseconds>(Clock::now().time_since_epoch()).count());
}

namespace {

std::string member_list(const rt::PoolConfig& pool) {
  std::string s;
  for (const auto& m : pool.members) s += (s.empty() ? "" : ", ") + std::to_string(m.id);
  return s;
}

}  // namespace

std::unique_ptr<Connection> Connection::create(asio::io_context& io, const rt::PoolConfig& pool, Options opt,
                                               std::string& why) {
  if (pool.members.empty()) {
    why = "the pool has no members: a client needs at least one to connect to";
    return nullptr;
  }
  if (opt.first == 0) opt.first = pool.members.front().id;
  if (!pool.find(opt.first)) {
    why = "member " + std::to_string(opt.first) + " is not in the pool (members: " + member_list(pool) + ")";
    return nullptr;
  }
  if (opt.close_timeout_ms > kCloseTimeoutMaxMs) {
    why = "close_timeout_ms must be at most " + std::to_string(kCloseTimeoutMaxMs) + " (0: no limit)";
    return nullptr;
  }
  std::unique_ptr<Policy> policy = std::move(opt.policy_impl);
  if (!policy) policy = make_default_policy(opt.policy, why);
  if (!policy) return nullptr;
  return std::unique_ptr<Connection>(new Connection(io, pool, std::move(opt), std::move(policy)));
}

Connection::Connection(asio::io_context& io, const rt::PoolConfig& pool, Options opt, std::unique_ptr<Policy> policy)
    : io_(io),
      first_(opt.first),
      close_timeout_ms_(opt.close_timeout_ms),
      policy_(std::move(policy)),
      conn_(std::make_unique<rt::ClientConn>(io, pool)),
      policy_timer_(io),
      close_timer_(io) {
  // on_change runs inside conn_->service(), which only runs while conn_ (and so this) lives.
  conn_->on_change = [this](std::vector<core::ClientEvent>& events) { on_change(events); };
}

Connection::~Connection() {
  *alive_ = false;  // timer handlers still queued must not touch this object
  conn_.reset();    // closes every subflow; its own handlers check its own token
}

void Connection::connect() {
  AppCall call(app_depth_);
  if (connect_called_ || terminal_) return;
  connect_called_ = true;
  conn_->connect(first_);
}

// ---- data ------------------------------------------------------------------------------------

size_t Connection::write(Slice s) {
  AppCall call(app_depth_);
  auto& e = conn_->engine();
  if (terminal_ || close_requested_ || e.state() == core::ClientState::failed || s.empty()) return 0;
  size_t offered = s.len;
  size_t n = std::min(e.write_space(), offered);
  if (n > 0 && !e.write(n == offered ? std::move(s) : s.sub(0, n))) n = 0;
  return accepted(n, offered);
}

size_t Connection::write_copy(std::span<const uint8_t> bytes) {
  AppCall call(app_depth_);
  auto& e = conn_->engine();
  if (terminal_ || close_requested_ || e.state() == core::ClientState::failed || bytes.empty()) return 0;
  return accepted(e.write_copy(bytes), bytes.size());
}

size_t Connection::accepted(size_t n, size_t offered) {
  if (n < offered) {
    write_blocked_ = true;
    ++stats_.writes_refused;
  }
  if (n > 0) {
    stats_.bytes_sent += n;
    policy_->on_bytes_sent(n, steady_ms());
    kick();
  }
  return n;
}

size_t Connection::write_space() const {
  if (terminal_ || close_requested_) return 0;
  size_t room = conn_->engine().write_space();
  if (room == 0) write_blocked_ = true;
  return room;
}

size_t Connection::read_slices(size_t max_bytes, std::vector<Slice>& out) {
  AppCall call(app_depth_);
  auto& e = conn_->engine();
  size_t before = e.readable();
  e.read_slices(max_bytes, out);
  size_t n = before - e.readable();
  // Reading freed receive buffer: the engine may want to read its subflows again.
  if (n > 0 && !terminal_ && !closing_subflows_) kick();
  return n;
}

size_t Connection::read(std::span<uint8_t> dst) {
  AppCall call(app_depth_);
  size_t n = conn_->engine().read(dst);
  if (n > 0 && !terminal_ && !closing_subflows_) kick();
  return n;
}

size_t Connection::readable() const { return conn_->engine().readable(); }
bool Connection::peer_closed() const { return conn_->engine().peer_closed(); }

void Connection::set_app_limited(bool limited) { policy_->on_app_limited(limited, steady_ms()); }

// ---- state -----------------------------------------------------------------------------------

core::ConnId Connection::conn_id() const { return conn_->engine().conn_id(); }
ServerId Connection::server() const { return conn_->engine().server(); }
const std::vector<ServerId>& Connection::pool() const { return conn_->engine().pool(); }
bool Connection::established() const { return conn_->engine().state() == core::ClientState::established; }
bool Connection::migrating() const { return conn_->engine().migrating(); }
std::optional<ServerId> Connection::migration_target() const { return conn_->engine().migration_target(); }
const Counters& Connection::counters() const { return conn_->engine().counters(); }
uint64_t Connection::unacknowledged_bytes() const {
  const auto& log = conn_->engine().send_log();
  return log.end() - log.base();
}

// ---- events ----------------------------------------------------------------------------------

void Connection::on_change(std::vector<core::ClientEvent>& events) {
  if (terminal_) return;
  ++round_depth_;
  TimeMs now = steady_ms();
  for (const auto& ev : events) {
    handle(ev, now);
    if (terminal_) break;
  }
  if (!terminal_) {
    notice_recovery();
    notify_data(now);
    check_closed();
    run_policy(now);
  }
  --round_depth_;
}

// From the library's own work (a service round, a timer) the event goes out now; from a call
// of the application it is posted, so that no callback runs inside a call the application
// makes.
void Connection::emit(Event e) {
  if (app_depth_ == 0) {
    if (on_event) on_event(e);
    return;
  }
  asio::post(io_, [this, alive = alive_, e = std::move(e)] {
    if (*alive && on_event) on_event(e);
  });
}

// The engine has new work (bytes written or read, a migration, a close). Inside a service
// round ClientConn runs one more round. From a call of the application the round is posted
// (once), because a round runs the callbacks: an application's write() inside its own pump
// loop would otherwise re-enter that loop.
void Connection::kick() {
  if (round_depth_ > 0 || app_depth_ == 0) return conn_->service();
  if (service_posted_) return;
  service_posted_ = true;
  asio::post(io_, [this, alive = alive_] {
    if (!*alive) return;
    service_posted_ = false;
    conn_->service();
  });
}

void Connection::handle(const core::ClientEvent& ev, TimeMs now) {
  using K = core::ClientEvent::Kind;
  auto& e = conn_->engine();
  switch (ev.kind) {
    case K::connected: {
      policy_->on_connected(e.server(), e.pool(), now);
      Event out;
      out.kind = EventKind::connected;
      out.to = e.server();
      emit(std::move(out));
      return;
    }
    case K::hint: {
      policy_->on_hint(ev.to, now);
      Event out;
      out.kind = EventKind::hint;
      out.from = ev.from;
      out.to = ev.to;
      out.hint = ev.hint;
      emit(std::move(out));
      return;
    }
    case K::peer_closed:
      peer_fin_ = true;
      peer_closed_due_ = true;  // announced after the bytes before it (notify_data)
      policy_->on_peer_closed(now);
      return;
    case K::migrated:
    case K::migration_failed:
      return migration_ended(ev, now);
    case K::failed: {
      // Both directions closed: the member may free the connection before our last ACK, and
      // the engine takes the lost subflow for a failure. That is the end, not a failure.
      if (close_requested_ && peer_fin_) {
        uint64_t unacked = unacknowledged_bytes();
        return finish_close(unacked == 0 ? "done" : "done; the member ended the connection without acknowledging the last " + std::to_string(unacked) + " bytes");
      }
      Event out;
      out.kind = EventKind::failed;
      out.from = ev.from;
      out.error = ev.error;
      out.last_attempt = ev.last_attempt;
      out.attempt_errors = ev.attempt_errors;
      terminate();
      emit(std::move(out));
      return;
    }
  }
}

void Connection::migration_ended(const core::ClientEvent& ev, TimeMs now) {
  bool ours = pending_ && pending_->target == ev.to;
  if (!ours && !recovery_seen_) notice_recovery_of(ev.from, ev.to);
  Event out;
  out.from = ev.from;
  out.to = ev.to;
  if (ours) {
    out.reason = pending_->reason;
    out.detail = pending_->detail;
    out.downtime_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - pending_->started).count();
  } else {
    out.reason = kReasonRecovery;
    out.detail = "the engine moved by itself: the subflow to member " + std::to_string(ev.from) + " was lost";
    out.downtime_us = static_cast<int64_t>(ev.done_ms - ev.started_ms) * 1000;
  }
  pending_.reset();
  recovery_seen_ = false;
  if (ev.kind == core::ClientEvent::Kind::migrated) {
    ++stats_.migrations_done;
    out.kind = EventKind::migrated;
    out.rcv_at = ev.rcv_at;
    out.snd_at = ev.snd_at;
    policy_->on_migrated(ev.from, ev.to, now);
  } else {
    ++stats_.migrations_failed;
    out.kind = EventKind::migration_failed;
    out.error = ev.error;
    policy_->on_migration_failed(ev.to, now);
  }
  emit(std::move(out));
}

// The engine has no event for an attempt it starts by itself (the primary subflow was lost):
// an attempt under way that this Connection did not start is one.
void Connection::notice_recovery() {
  auto& e = conn_->engine();
  if (!e.migrating() || pending_ || recovery_seen_) return;
  notice_recovery_of(e.server(), e.migration_target().value_or(0));
}

void Connection::notice_recovery_of(ServerId from, ServerId to) {
  recovery_seen_ = true;
  ++stats_.recoveries;
  ++stats_.migrations_started;
  Event out;
  out.kind = EventKind::migration_started;
  out.from = from;
  out.to = to;
  out.reason = kReasonRecovery;
  out.detail = "the subflow to member " + std::to_string(from) + " was lost";
  emit(std::move(out));
}

void Connection::notify_data(TimeMs now) {
  auto& e = conn_->engine();
  bool grew = e.rcv_nxt() > rcv_seen_;
  if (grew) {
    uint64_t n = e.rcv_nxt() - rcv_seen_;
    rcv_seen_ = e.rcv_nxt();
    stats_.bytes_received += n;
    policy_->on_bytes_received(n, now);
  }
  bool closed_now = std::exchange(peer_closed_due_, false);
  if ((grew || closed_now) && on_readable) on_readable();
  if (terminal_) return;
  if (closed_now) {
    Event out;
    out.kind = EventKind::peer_closed;
    out.from = e.server();
    emit(std::move(out));
  }
  if (write_blocked_ && !close_requested_ && e.write_space() > 0) {
    write_blocked_ = false;
    if (on_writable) on_writable();
  }
}

// ---- migrations ------------------------------------------------------------------------------

bool Connection::can_migrate() const {
  const auto& e = conn_->engine();
  return e.state() == core::ClientState::established && !e.migrating() && e.primary().has_value();
}

// 0 or the current member: the next member after the current one (pool order) that has not
// just failed.
ServerId Connection::resolve(ServerId target) const {
  const auto& e = conn_->engine();
  if (target != 0 && target != e.server()) return target;
  return e.pick_alternate(rt::now_ms());  // skips members that just failed (core::MemberBackoff)
}

Status Connection::start_migration(ServerId target, std::string reason, std::string detail) {
  auto& e = conn_->engine();
  if (terminal_ || closing_subflows_ || (close_requested_ && peer_fin_) ||
      e.state() != core::ClientState::established)
    return Error::closed;
  if (e.migrating() || !e.primary()) return Error::pending_table_full;
  target = resolve(target);
  if (target == 0 || target == e.server()) return Error::no_alternate;
  auto started = Clock::now();
  TimeMs now = steady_ms();
  if (Status st = e.migrate(target, rt::now_ms()); !st) return st;
  pending_ = Pending{target, reason, detail, started};
  ++stats_.migrations_started;
  policy_->on_migration_started(target, now);
  Event out;
  out.kind = EventKind::migration_started;
  out.from = e.server();
  out.to = target;
  out.reason = std::move(reason);
  out.detail = std::move(detail);
  emit(std::move(out));
  kick();
  return {};
}

Status Connection::migrate(ServerId target) {
  AppCall call(app_depth_);
  return start_migration(target, kReasonManual, "requested by the application");
}

void Connection::request_migration(ServerId target) {
  AppCall call(app_depth_);
  if (terminal_) return;
  manual_request_ = target;
  if (round_depth_ == 0) run_policy(steady_ms());  // inside a round, the round's end asks
}

void Connection::run_policy(TimeMs now) {
  if (terminal_ || closing_subflows_ || (close_requested_ && peer_fin_)) return;
  if (can_migrate()) {
    if (manual_request_) {
      ServerId target = *manual_request_;
      Status st = start_migration(target, kReasonManual, "requested by the application");
      // Refused for good (not a member, nowhere to go): say so instead of retrying forever.
      if (st || st.error() == Error::bad_field || st.error() == Error::no_alternate) manual_request_.reset();
      if (!st && !manual_request_) {
        Event out;
        out.kind = EventKind::migration_failed;
        out.from = server();
        out.to = target;
        out.reason = kReasonManual;
        out.error = st.error();
        out.detail = "refused before it started";
        ++stats_.migrations_failed;
        emit(std::move(out));
      }
    } else if (auto d = policy_->poll(now)) {
      // A decision the engine refuses stays pending; the policy is asked again on the next
      // input or event.
      (void)start_migration(d->target, d->reason, d->detail);
    }
    if (terminal_) return;
  }
  arm_policy_timer(steady_ms());
}

// One timer for the policy's next deadline, re-armed only when the deadline moves. A deadline
// already passed is not armed: the policy is due but the engine cannot act (connecting, an
// attempt running, recovering) or refused the decision, and the event that changes that
// (connected, migrated, migration_failed, new bytes) runs run_policy anyway.
void Connection::arm_policy_timer(TimeMs now) {
  TimeMs d = policy_->next_deadline();
  if (d == core::kNever || d <= now) return;
  if (policy_armed_ == d) return;
  policy_armed_ = d;
  policy_timer_.expires_after(std::chrono::milliseconds(d - now));
  policy_timer_.async_wait([this, alive = alive_](asio::error_code ec) {
    if (ec || !*alive) return;
    policy_armed_ = core::kNever;
    run_policy(steady_ms());
  });
}

// ---- closing ---------------------------------------------------------------------------------

void Connection::close() {
  AppCall call(app_depth_);
  if (terminal_ || close_requested_) return;
  close_requested_ = true;
  manual_request_.reset();
  conn_->engine().close();
  if (close_timeout_ms_ != 0) arm_close_timer();
  kick();
}

void Connection::arm_close_timer() {
  close_timer_.expires_after(std::chrono::milliseconds(close_timeout_ms_));
  close_timer_.async_wait([this, alive = alive_](asio::error_code ec) {
    if (ec || !*alive || terminal_ || closing_subflows_) return;
    finish_close("close timeout: the member did not finish the connection within " +
                 std::to_string(close_timeout_ms_) + " ms");
  });
}

// Both directions are closed and everything written is acknowledged: the connection is
// complete, whatever happens to its subflow now. The member frees it and closes the subflow;
// the engine would take that for a lost server and try to recover, so end it here.
void Connection::check_closed() {
  if (!close_requested_ || !peer_fin_ || closing_subflows_ || terminal_) return;
  const auto& e = conn_->engine();
  uint64_t unacked = unacknowledged_bytes();
  bool gone = !e.primary() || e.state() == core::ClientState::failed;
  if (unacked != 0 && !gone) return;
  finish_close(unacked == 0 ? "done"
                            : "done; the member closed without acknowledging the last " + std::to_string(unacked) + " bytes");
}

// Sends what the engine still has queued (the last ACK), closes the subflows, then `closed`.
// Posted: it must not run inside a service round.
void Connection::finish_close(std::string detail) {
  closing_subflows_ = true;
  policy_timer_.cancel();
  close_timer_.cancel();
  asio::post(io_, [this, alive = alive_, detail = std::move(detail)]() mutable {
    if (!*alive) return;
    conn_->flush_and_close([this, alive, detail = std::move(detail)]() mutable {
      if (!*alive || terminal_) return;
      terminal_ = true;
      Event out;
      out.kind = EventKind::closed;
      out.from = conn_->engine().server();
      out.detail = std::move(detail);
      emit(std::move(out));
    });
  });
}

void Connection::terminate() {
  terminal_ = true;
  policy_timer_.cancel();
  close_timer_.cancel();
  // Not inside a service round: the round still walks the subflows after on_change.
  asio::post(io_, [this, alive = alive_] {
    if (*alive) conn_->close_all();
  });
}

void Connection::abort() {
  if (terminal_ && closing_subflows_) return;
  closing_subflows_ = true;
  if (round_depth_ > 0) return terminate();
  terminal_ = true;
  policy_timer_.cancel();
  close_timer_.cancel();
  conn_->close_all();
}

}  // namespace mtcp::client
