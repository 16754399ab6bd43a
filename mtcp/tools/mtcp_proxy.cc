// mtcp-proxy: the client side of M-TCP for unmodified programs (docs/PROXY.md).
//   mtcp-proxy --pool pool.json [--listen 127.0.0.1:7000] [--policy throughput,stall,hint,manual]
// Listens on a local TCP address; each accepted connection is carried to the pool over one
// M-TCP connection (rt::ClientConn) with its own migration policy (rt::MigrationPolicy).
// Bytes are pumped with back-pressure both ways: the local socket is read only while the
// engine has room in its send log, and the engine is read only once the previous local write
// has finished, so nothing is buffered without bound.
// SIGUSR1: migrate every connection now (manual policy). SIGINT/SIGTERM: close all, exit 0.
// Exit status: 0 after a signal, 2 on bad usage, a bad configuration or a listen failure.
#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "runtime/address.h"
#include "runtime/client_conn.h"
#include "runtime/os.h"
#include "runtime/policy.h"

namespace {

using namespace mtcp;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kLocalReadBytes = 256u << 10;   // one read from the local program, at most
constexpr size_t kLocalWriteBytes = 1u << 20;    // one gathered write to the local program
constexpr core::TimeMs kPolicyRetryTickMs = 20;  // a decision the engine cannot take yet

const char* hint_name(wire::HintReason r) {
  switch (r) {
    case wire::HintReason::overload:
      return "overload";
    case wire::HintReason::draining:
      return "draining";
    case wire::HintReason::operator_request:
      return "operator request";
  }
  return "unknown";
}

// One line per event: JSON on stdout (--json) or a human line on stderr.
class Log {
 public:
  explicit Log(bool json) : json_(json) {}
  void event(nlohmann::json j, const std::string& human) {
    if (json_) {
      j["ts_ms"] = rt::now_ms();
      std::string s = j.dump();
      std::fprintf(stdout, "%s\n", s.c_str());
      std::fflush(stdout);
    } else {
      std::fprintf(stderr, "mtcp-proxy: %s\n", human.c_str());
    }
  }
  bool json() const { return json_; }

 private:
  bool json_;
};

struct Options {
  std::string pool_path;
  std::string listen = "127.0.0.1:7000";
  core::ServerId first = 0;
  rt::PolicyConfig policy;
  bool json = false;
  size_t max_connections = 64;
};

class Proxy;

// One accepted local connection and its M-TCP connection.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Proxy& proxy, uint64_t id, tcp::socket local, std::string peer);
  void start();
  void manual();                      // SIGUSR1
  void stop(const std::string& why);  // proxy shutting down
  uint64_t id() const { return id_; }

 private:
  struct Pending {
    core::ServerId target = 0;
    std::string reason;
    Clock::time_point started;
  };

  void on_change(std::vector<core::ClientEvent>& events);
  void pump(core::TimeMs now);
  void read_local();
  void write_local();
  void run_policy(core::TimeMs now);
  void arm_timer(core::TimeMs now);
  void check_done();
  void maybe_detach();
  void after_local_write();
  void finish(const std::string& event, const std::string& why, bool reset_local,
              nlohmann::json extra = {});
  nlohmann::json base(const char* event) const { return {{"event", event}, {"conn", id_}}; }
  std::string tag() const { return "[conn " + std::to_string(id_) + "] "; }

  Proxy& proxy_;
  uint64_t id_;
  tcp::socket local_;
  std::string peer_;
  std::unique_ptr<rt::ClientConn> conn_;
  rt::MigrationPolicy policy_;
  asio::steady_timer timer_;
  core::TimeMs armed_ = core::kNever;
  Clock::time_point opened_;

  std::vector<Slice> out_;  // being written to the local program
  bool local_reading_ = false;
  bool local_writing_ = false;
  bool local_eof_ = false;   // the local program closed its sending side
  bool peer_fin_ = false;    // the server closed its side (engine peer_closed)
  bool local_shut_ = false;  // we shut down our sending side towards the local program
  bool detached_ = false;    // the M-TCP connection is complete and closed; delivering its tail
  std::string end_note_;     // added to the "done" reason
  bool done_ = false;
  uint64_t rcv_seen_ = 0;    // engine rcv_nxt last reported to the policy
  uint64_t bytes_up_ = 0;    // local program -> pool
  uint64_t bytes_down_ = 0;  // pool -> local program
  uint64_t migrations_ = 0;
  std::optional<Pending> pending_;
};

class Proxy {
 public:
  Proxy(asio::io_context& io, const rt::PoolConfig& pool, const Options& opt)
      : io_(io),
        pool_(pool),
        opt_(opt),
        log_(opt.json),
        acceptor_(io),
        usr1_(io, SIGUSR1),
        stop_(io, SIGINT, SIGTERM) {}

  // Returns false with `why` if the listening socket cannot be set up.
  bool start(std::string& why) {
    tcp::endpoint ep;
    if (!rt::parse_endpoint(opt_.listen, ep, why)) {
      why = "bad --listen address '" + opt_.listen + "': " + why;
      return false;
    }
    asio::error_code ec;
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      why = "cannot listen on " + opt_.listen + ": " + ec.message();
      return false;
    }
    log_.event({{"event", "listening"},
                {"address", rt::to_string(acceptor_.local_endpoint(ec))},
                {"pool", opt_.pool_path},
                {"first", opt_.first},
                {"policies", rt::policies_to_string(opt_.policy.enabled)}},
               "listening on " + opt_.listen + ", pool " + opt_.pool_path + " (first member " +
                   std::to_string(opt_.first) + "), policies " +
                   rt::policies_to_string(opt_.policy.enabled));
    accept();
    wait_usr1();
    stop_.async_wait([this](asio::error_code ec2, int sig) {
      if (ec2) return;
      shutdown(sig);
    });
    return true;
  }

  void remove(uint64_t id) { sessions_.erase(id); }
  asio::io_context& io() { return io_; }
  const rt::PoolConfig& pool() const { return pool_; }
  const Options& opt() const { return opt_; }
  Log& log() { return log_; }

 private:
  void accept() {
    acceptor_.async_accept([this](asio::error_code ec, tcp::socket s) {
      if (stopping_) return;
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        // EMFILE and friends: say so and keep accepting (after a breath, not in a tight loop).
        log_.event({{"event", "accept_error"}, {"error", ec.message()}},
                   "accept failed: " + ec.message());
        auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
        t->async_wait([this, t](asio::error_code) {
          if (!stopping_) accept();
        });
        return;
      }
      asio::error_code ignore;
      auto rep = s.remote_endpoint(ignore);
      std::string peer = ignore ? "?" : rt::to_string(rep);
      if (sessions_.size() >= opt_.max_connections) {
        log_.event({{"event", "refused"},
                    {"peer", peer},
                    {"reason", "max-connections"},
                    {"max_connections", opt_.max_connections}},
                   "refused " + peer + ": " + std::to_string(opt_.max_connections) +
                       " connections already open (--max-connections)");
        s.close(ignore);
      } else {
        uint64_t id = ++next_id_;
        auto sess = std::make_shared<Session>(*this, id, std::move(s), peer);
        sessions_.emplace(id, sess);
        sess->start();
      }
      accept();
    });
  }

  void wait_usr1() {
    usr1_.async_wait([this](asio::error_code ec, int) {
      if (ec || stopping_) return;
      log_.event({{"event", "manual"}, {"connections", sessions_.size()}},
                 "SIGUSR1: migrating " + std::to_string(sessions_.size()) + " connection(s)");
      for (auto& s : snapshot()) s->manual();
      wait_usr1();
    });
  }

  void shutdown(int sig) {
    stopping_ = true;
    log_.event({{"event", "stopping"}, {"signal", sig}, {"connections", sessions_.size()}},
               std::string("stopping on ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", closing " +
                   std::to_string(sessions_.size()) + " connection(s)");
    asio::error_code ignore;
    acceptor_.close(ignore);
    usr1_.cancel(ignore);
    for (auto& s : snapshot()) s->stop("proxy stopping");
    // Let the aborted operations drain (they hold the sessions), then leave run().
    asio::post(io_, [this] { asio::post(io_, [this] { io_.stop(); }); });
  }

  // Sessions may remove themselves while we walk them.
  std::vector<std::shared_ptr<Session>> snapshot() const {
    std::vector<std::shared_ptr<Session>> v;
    for (auto& [id, s] : sessions_) v.push_back(s);
    return v;
  }

  asio::io_context& io_;
  rt::PoolConfig pool_;
  Options opt_;
  Log log_;
  tcp::acceptor acceptor_;
  asio::signal_set usr1_;
  asio::signal_set stop_;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;
  uint64_t next_id_ = 0;
  bool stopping_ = false;
};

// ---- session ------------------------------------------------------------------------------

Session::Session(Proxy& proxy, uint64_t id, tcp::socket local, std::string peer)
    : proxy_(proxy),
      id_(id),
      local_(std::move(local)),
      peer_(std::move(peer)),
      policy_(proxy.opt().policy),
      timer_(proxy.io()),
      opened_(Clock::now()) {}

void Session::start() {
  asio::error_code ignore;
  local_.set_option(tcp::no_delay(true), ignore);
  proxy_.log().event(
      {{"event", "accepted"}, {"conn", id_}, {"peer", peer_}, {"server", proxy_.opt().first}},
      tag() + "accepted " + peer_ + ", connecting to member " + std::to_string(proxy_.opt().first));
  conn_ = std::make_unique<rt::ClientConn>(proxy_.io(), proxy_.pool());
  // on_change runs inside conn_->service(), which only runs while conn_ (and so this) lives.
  conn_->on_change = [this](std::vector<core::ClientEvent>& evs) { on_change(evs); };
  conn_->connect(proxy_.opt().first);
  // The local program may talk first: its bytes wait in the send log until WELCOME.
  read_local();
}

void Session::manual() {
  if (done_) return;
  policy_.request_manual();
  run_policy(rt::now_ms());
}

void Session::stop(const std::string& why) { finish("closed", why, false); }

void Session::on_change(std::vector<core::ClientEvent>& events) {
  if (done_ || detached_) return;
  auto& e = conn_->engine();
  core::TimeMs now = rt::now_ms();
  using K = core::ClientEvent::Kind;
  for (const auto& ev : events) {
    switch (ev.kind) {
      case K::connected: {
        policy_.on_connected(e.server(), e.pool(), now);
        auto j = base("connected");
        j["server"] = e.server();
        j["conn_id"] = e.conn_id();
        proxy_.log().event(j, tag() + "connected to member " + std::to_string(e.server()) +
                                  " (M-TCP connection " + std::to_string(e.conn_id()) + ")");
        break;
      }
      case K::migrated: {
        ++migrations_;
        std::string reason;
        int64_t down_us = 0;
        if (pending_ && pending_->target == ev.to) {
          reason = pending_->reason;
          down_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() -
                                                                          pending_->started)
                        .count();
        } else {
          // The engine moved by itself: the subflow was lost (a crashed or unreachable member).
          reason = "recovery: subflow lost";
          down_us = static_cast<int64_t>(ev.done_ms - ev.started_ms) * 1000;
        }
        pending_.reset();
        policy_.on_migrated(ev.from, ev.to, now);
        auto j = base("migration");
        j.update({{"from", ev.from},
                  {"to", ev.to},
                  {"reason", reason},
                  {"downtime_us", down_us},
                  {"output_at", ev.rcv_at},
                  {"input_at", ev.snd_at},
                  {"bytes_up", bytes_up_},
                  {"bytes_down", bytes_down_},
                  {"migrations", migrations_}});
        proxy_.log().event(j, tag() + "migrated " + std::to_string(ev.from) + " -> " +
                                  std::to_string(ev.to) + " in " + std::to_string(down_us) +
                                  " us (" + reason + "; output at " + std::to_string(ev.rcv_at) +
                                  ", input at " + std::to_string(ev.snd_at) + ")");
        break;
      }
      case K::migration_failed: {
        std::string reason =
            pending_ && pending_->target == ev.to ? pending_->reason : "recovery: subflow lost";
        pending_.reset();
        policy_.on_migration_failed(ev.to, now);
        auto j = base("migration_failed");
        j.update({{"from", ev.from},
                  {"to", ev.to},
                  {"reason", reason},
                  {"error", std::string(to_string(ev.error))}});
        proxy_.log().event(
            j, tag() + "migration " + std::to_string(ev.from) + " -> " + std::to_string(ev.to) +
                   " failed: " + std::string(to_string(ev.error)) + " (" + reason + ")");
        break;
      }
      case K::hint: {
        policy_.on_hint(ev.to, now);
        auto j = base("hint");
        j.update({{"from", ev.from}, {"to", ev.to}, {"hint", hint_name(ev.hint)}});
        proxy_.log().event(j, tag() + "member " + std::to_string(ev.from) + " hints: move" +
                                  (ev.to ? " to " + std::to_string(ev.to) : std::string()) + " (" +
                                  hint_name(ev.hint) + ")");
        break;
      }
      case K::peer_closed:
        peer_fin_ = true;
        policy_.on_peer_closed(now);
        break;
      case K::failed: {
        if (peer_fin_ && local_eof_) {  // after both sides closed: the end, not a failure
          maybe_detach();
          break;
        }
        std::string why = std::string(to_string(ev.error));
        if (ev.last_attempt != Error::ok)
          why += " (last attempt: " + std::string(to_string(ev.last_attempt)) + ")";
        // Reset the local connection: the program must see an error, never a clean end.
        finish("failed", why, true,
               {{"error", std::string(to_string(ev.error))},
                {"last_attempt", std::string(to_string(ev.last_attempt))}});
        return;
      }
    }
  }
  if (uint64_t r = e.rcv_nxt(); r > rcv_seen_) {
    policy_.on_bytes_received(r - rcv_seen_, now);
    rcv_seen_ = r;
  }
  pump(now);
  maybe_detach();
  run_policy(now);
  check_done();
}

// Both directions are closed and everything the program sent is acknowledged: the M-TCP
// connection is complete, whatever happens to its subflow now. The member frees it and closes
// the subflow; the engine would take that for a lost server and try to recover (ending in
// "unknown connection" failures). So close the subflows ourselves and deliver the bytes the
// engine still holds (at most its receive buffer) to the local program.
// A member may also free the connection before its last ACK went out (seen with eager
// transfer and ack-after-replication): once both sides have closed, losing the subflow (or
// the engine giving up after that) is taken as the end too, and the log says how many bytes
// were left unacknowledged.
void Session::maybe_detach() {
  if (detached_ || done_ || !peer_fin_ || !local_eof_) return;
  auto& e = conn_->engine();
  uint64_t unacked = e.send_log().end() - e.send_log().base();
  bool gone = !e.primary() || e.state() == core::ClientState::failed;
  if (unacked != 0 && !gone) return;
  if (unacked != 0)
    end_note_ =
        " (the member closed without acknowledging the last " + std::to_string(unacked) + " bytes)";
  detached_ = true;
  timer_.cancel();
  asio::post(proxy_.io(), [self = shared_from_this()] { self->conn_->close_all(); });
}

// Moves bytes in both directions as far as back-pressure allows.
void Session::pump(core::TimeMs now) {
  if (done_) return;
  auto& e = conn_->engine();
  if (!local_writing_ && !local_shut_) {
    if (e.readable() > 0) {
      out_.clear();
      e.read_slices(kLocalWriteBytes, out_);
      write_local();
      // Reading freed receive buffer: the engine may want to read its subflows again.
      if (!detached_) conn_->service();
    } else if (peer_fin_) {
      asio::error_code ignore;
      local_.shutdown(tcp::socket::shutdown_send, ignore);
      local_shut_ = true;
    }
  }
  // Data the local program has not taken yet: a slow reader, not a slow server.
  policy_.on_app_limited(local_writing_ && e.readable() > 0, now);
  if (!local_reading_ && !local_eof_ && e.write_space() > 0) read_local();
}

void Session::after_local_write() {
  if (!detached_) return conn_->service();  // runs on_change: the next write, the policy, the end
  pump(rt::now_ms());
  check_done();
}

void Session::read_local() {
  if (local_reading_ || local_eof_ || done_) return;
  auto& e = conn_->engine();
  size_t room = std::min(e.write_space(), kLocalReadBytes);
  if (room == 0 || e.state() == core::ClientState::failed) return;
  auto block = std::make_shared<Bytes>(room);
  local_reading_ = true;
  local_.async_read_some(
      asio::buffer(*block), [self = shared_from_this(), block](asio::error_code ec, size_t n) {
        self->local_reading_ = false;
        if (self->done_) return;
        auto& eng = self->conn_->engine();
        if (ec == asio::error::eof) {
          self->local_eof_ = true;
          eng.close();  // a CLOSE follows the last byte written
          self->conn_->service();
          return;
        }
        if (ec) return self->finish("closed", "local connection: " + ec.message(), true);
        // n <= write_space at the time of the read, and only we write: it fits. A small read is
        // copied into a block of its size, so it does not pin the whole read buffer.
        if (n * 2 < block->size()) {
          (void)eng.write_copy(std::span<const uint8_t>(block->data(), n));
        } else {
          (void)eng.write(Slice(BlockPtr(block), 0, n));
        }
        self->bytes_up_ += n;
        self->policy_.on_bytes_sent(n, rt::now_ms());
        self->conn_->service();
      });
}

void Session::write_local() {
  std::vector<asio::const_buffer> bufs;
  bufs.reserve(out_.size());
  size_t total = 0;
  for (const auto& s : out_) {
    bufs.emplace_back(s.data(), s.len);
    total += s.len;
  }
  if (total == 0) return;
  local_writing_ = true;
  asio::async_write(local_, bufs, [self = shared_from_this()](asio::error_code ec, size_t n) {
    self->local_writing_ = false;
    self->out_.clear();
    if (self->done_) return;
    if (ec) return self->finish("closed", "local connection: " + ec.message(), true);
    self->bytes_down_ += n;
    self->after_local_write();
  });
}

void Session::run_policy(core::TimeMs now) {
  // Nothing left to move once both directions are closed.
  if (done_ || detached_ || (peer_fin_ && local_eof_)) return;
  auto& e = conn_->engine();
  if (e.state() == core::ClientState::established && !e.migrating() && e.primary()) {
    if (auto d = policy_.poll(now)) {
      core::ServerId target = d->target;
      if (target != 0 && e.migrate(target, now)) {
        policy_.on_migration_started(target, now);
        pending_ = Pending{target, d->reason, Clock::now()};
        conn_->service();
        if (done_) return;
      }
    }
  }
  arm_timer(now);
}

void Session::arm_timer(core::TimeMs now) {
  core::TimeMs d = policy_.next_deadline();
  if (d == core::kNever) return;
  // Due already but not taken (the engine is busy): look again a little later; the events
  // that end the engine's business call run_policy too.
  if (d <= now) d = now + kPolicyRetryTickMs;
  if (armed_ != core::kNever && armed_ <= d) return;  // an earlier wake-up is set: it re-arms
  armed_ = d;
  timer_.expires_after(std::chrono::milliseconds(d - now));
  timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
    if (ec || self->done_) return;
    self->armed_ = core::kNever;
    self->run_policy(rt::now_ms());
  });
}

// The M-TCP connection is complete (maybe_detach) and everything the pool sent is delivered:
// a clean end on both sides.
void Session::check_done() {
  if (done_ || !detached_ || !local_shut_ || local_writing_) return;
  finish("closed", "done" + end_note_, false);
}

void Session::finish(const std::string& event, const std::string& why, bool reset_local,
                     nlohmann::json extra) {
  if (done_) return;
  done_ = true;
  asio::error_code ignore;
  timer_.cancel();
  if (reset_local) local_.set_option(asio::socket_base::linger(true, 0), ignore);  // RST, not FIN
  local_.close(ignore);
  double secs = std::chrono::duration<double>(Clock::now() - opened_).count();
  auto j = base(event.c_str());
  j.update({{"reason", why},
            {"bytes_up", bytes_up_},
            {"bytes_down", bytes_down_},
            {"migrations", migrations_},
            {"seconds", secs},
            {"local_reset", reset_local}});
  if (extra.is_object()) j.update(extra);
  char secs_text[32];
  std::snprintf(secs_text, sizeof secs_text, "%.3f", secs);
  proxy_.log().event(j, tag() + (event == "failed" ? "connection failed: " : "closed: ") + why +
                            " (" + std::to_string(bytes_up_) + " bytes up, " +
                            std::to_string(bytes_down_) + " down, " + std::to_string(migrations_) +
                            " migrations, " + secs_text + " s" +
                            (reset_local ? "; local connection reset)" : ")"));
  auto self = shared_from_this();
  proxy_.remove(id_);
  // close_all() is not called from inside conn_->service() (finish may run there), and the
  // ClientConn outlives its aborted socket operations: their handlers use it, so it is freed
  // only after they have run (they are queued before the second post below).
  asio::post(proxy_.io(), [self] {
    self->conn_->close_all();
    asio::post(self->proxy_.io(), [self] {});
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mtcp-proxy: carry local TCP connections to an M-TCP pool, migrating them by policy"};
  Options opt;
  std::string policies = rt::policies_to_string(rt::kDefaultPolicies);
  std::string stall_expect = rt::to_string(opt.policy.stall_expect);
  app.add_option("--pool", opt.pool_path, "Pool configuration file (JSON, see docs/API.md)")
      ->required();
  app.add_option("--listen", opt.listen,
                 "Local address to listen on (IPv4 a.b.c.d:port or [v6]:port)")
      ->capture_default_str();
  app.add_option("--server-id", opt.first,
                 "Member to connect to first (default: the first member of the pool)");
  app.add_option(
         "--policy", policies,
         "Migration policies: comma list of throughput,stall,hint,manual,schedule (or none)")
      ->capture_default_str();
  app.add_option("--fraction", opt.policy.fraction,
                 "throughput: migrate below this fraction of the best window rate")
      ->capture_default_str();
  app.add_option("--warmup-ms", opt.policy.warmup_ms,
                 "throughput: not measured for this long after connecting")
      ->capture_default_str();
  app.add_option("--window-ms", opt.policy.window_ms, "throughput: measurement window")
      ->capture_default_str();
  app.add_option("--hysteresis", opt.policy.hysteresis,
                 "throughput: bad windows in a row before migrating")
      ->capture_default_str();
  app.add_option("--cooldown-ms", opt.policy.cooldown_ms,
                 "throughput: not measured for this long after a migration")
      ->capture_default_str();
  app.add_option("--stall-ms", opt.policy.stall_ms,
                 "stall: migrate after this long without a byte while data is expected")
      ->capture_default_str();
  app.add_option("--stall-expect", stall_expect,
                 "stall: when data is expected: any, stream, reply or echo")
      ->capture_default_str();
  app.add_option("--every-ms", opt.policy.every_ms,
                 "schedule: migrate this long after the last migration")
      ->capture_default_str();
  app.add_option("--retry-ms", opt.policy.retry_ms,
                 "wait after a failed attempt before an automatic policy tries again")
      ->capture_default_str();
  app.add_option("--max-connections", opt.max_connections,
                 "Accepted connections open at once; more are refused")
      ->capture_default_str();
  app.add_flag("--json", opt.json,
               "One JSON object per event on stdout (otherwise human lines on stderr)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  std::string why;
  if (!rt::parse_policies(policies, opt.policy.enabled, why)) {
    std::fprintf(stderr, "mtcp-proxy: --policy: %s\n", why.c_str());
    return 2;
  }
  if (!rt::parse_stall_expect(stall_expect, opt.policy.stall_expect)) {
    std::fprintf(stderr, "mtcp-proxy: --stall-expect '%s': use any, stream, reply or echo\n",
                 stall_expect.c_str());
    return 2;
  }
  if (std::string bad = rt::validate(opt.policy); !bad.empty()) {
    std::fprintf(stderr, "mtcp-proxy: bad policy setting: %s\n", bad.c_str());
    return 2;
  }
  if (opt.max_connections == 0) {
    std::fprintf(stderr, "mtcp-proxy: --max-connections must be at least 1\n");
    return 2;
  }
  rt::PoolConfig pool;
  if (!rt::load_pool_config(opt.pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-proxy: %s\n", why.c_str());
    return 2;
  }
  if (opt.first == 0) opt.first = pool.members.front().id;
  if (!pool.find(opt.first)) {
    std::fprintf(stderr, "mtcp-proxy: --server-id %u is not a member of %s\n", opt.first,
                 opt.pool_path.c_str());
    return 2;
  }
  asio::io_context io(1);  // one thread: posted handlers skip waking the reactor (docs/profiling.md)
  Proxy proxy(io, pool, opt);
  if (!proxy.start(why)) {
    std::fprintf(stderr, "mtcp-proxy: %s\n", why.c_str());
    return 2;
  }
  io.run();
  return 0;
}
