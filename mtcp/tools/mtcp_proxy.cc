// mtcp-proxy: the client side of M-TCP for unmodified programs (docs/PROXY.md).
//   mtcp-proxy --pool pool.json [--listen 127.0.0.1:7000] [--policy throughput,stall,hint,manual]
// Listens on a local TCP address; each accepted connection is carried to the pool over one
// M-TCP connection (client::Connection, client/connection.h) with its own migration policy.
// Bytes are pumped with back-pressure both ways: the local socket is read only while the
// connection has room in its send log, and the connection is read only once the previous
// local write has finished, so nothing is buffered without bound.
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

#include "client/connection.h"
#include "runtime/address.h"
#include "runtime/os.h"
#include "runtime/policy.h"
#include "runtime/read_block.h"

namespace {

using namespace mtcp;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kLocalReadBytes = 256u << 10;  // one read from the local program, at most
constexpr size_t kLocalWriteBytes = 1u << 20;   // one gathered write to the local program

// The text logged as a migration's reason (docs/PROXY.md): the default policy's explanation
// ("schedule: every 100 ms", "stall: ..."), "manual" for SIGUSR1, "recovery: subflow lost".
std::string reason_text(const client::Event& e) {
  if (e.reason == client::kReasonRecovery) return "recovery: subflow lost";
  if (e.reason == client::kReasonManual || e.detail.empty()) return e.reason;
  return e.detail;
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
  void on_event(const client::Event& ev);
  void pump();
  void read_local();
  bool push_up(Slice s);
  void write_local();
  void check_done();
  void finish(const std::string& event, const std::string& why, bool reset_local,
              nlohmann::json extra = {});
  nlohmann::json base(const char* event) const { return {{"event", event}, {"conn", id_}}; }
  std::string tag() const { return "[conn " + std::to_string(id_) + "] "; }

  Proxy& proxy_;
  uint64_t id_;
  tcp::socket local_;
  std::string peer_;
  std::unique_ptr<client::Connection> conn_;
  Clock::time_point opened_;

  std::vector<Slice> out_;   // being written to the local program
  Slice up_rest_;            // read from the local program, not yet taken by the send log
  // Where the local program's bytes are read: blocks come back for reuse when the send log
  // lets go of them (a fresh zero-filled 256 KiB block per read was 7 % of the proxy's time).
  rt::ReadBlock up_block_;
  bool local_reading_ = false;
  bool local_writing_ = false;
  bool local_eof_ = false;   // the local program closed its sending side
  bool peer_fin_ = false;    // the server closed its side
  bool local_shut_ = false;  // we shut down our sending side towards the local program
  bool detached_ = false;    // the M-TCP connection is complete and closed; delivering its tail
  std::string end_reason_;   // the `closed` event's detail: "done", ...
  bool done_ = false;
  uint64_t bytes_up_ = 0;    // local program -> pool
  uint64_t bytes_down_ = 0;  // pool -> local program
  uint64_t migrations_ = 0;
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
    : proxy_(proxy), id_(id), local_(std::move(local)), peer_(std::move(peer)), opened_(Clock::now()) {}

void Session::start() {
  asio::error_code ignore;
  local_.set_option(tcp::no_delay(true), ignore);
  proxy_.log().event(
      {{"event", "accepted"}, {"conn", id_}, {"peer", peer_}, {"server", proxy_.opt().first}},
      tag() + "accepted " + peer_ + ", connecting to member " + std::to_string(proxy_.opt().first));
  client::Options o;
  o.first = proxy_.opt().first;
  o.policy = proxy_.opt().policy;
  o.close_timeout_ms = 0;  // the local program decides how long a half-closed connection lasts
  std::string why;
  conn_ = client::Connection::create(proxy_.io(), proxy_.pool(), std::move(o), why);
  if (!conn_) return finish("failed", why, true);  // main() checked the same: not expected
  // The callbacks run only while conn_ (and so this) lives.
  conn_->on_event = [this](const client::Event& ev) { on_event(ev); };
  conn_->on_readable = [this] { pump(); };
  conn_->on_writable = [this] { read_local(); };
  conn_->connect();
  // The local program may talk first: its bytes wait in the send log until WELCOME.
  read_local();
}

void Session::manual() {
  if (done_ || !(proxy_.opt().policy.enabled & rt::kPolicyManual)) return;
  conn_->request_migration();
}

void Session::stop(const std::string& why) { finish("closed", why, false); }

void Session::on_event(const client::Event& ev) {
  if (done_) return;
  switch (ev.kind) {
    case client::EventKind::connected: {
      auto j = base("connected");
      j["server"] = conn_->server();
      j["conn_id"] = conn_->conn_id();
      proxy_.log().event(j, tag() + "connected to member " + std::to_string(conn_->server()) +
                                " (M-TCP connection " + std::to_string(conn_->conn_id()) + ")");
      break;
    }
    case client::EventKind::migration_started:
      break;  // logged when it ends
    case client::EventKind::migrated: {
      ++migrations_;
      std::string reason = reason_text(ev);
      auto j = base("migration");
      j.update({{"from", ev.from},
                {"to", ev.to},
                {"reason", reason},
                {"downtime_us", ev.downtime_us},
                {"output_at", ev.rcv_at},
                {"input_at", ev.snd_at},
                {"bytes_up", bytes_up_},
                {"bytes_down", bytes_down_},
                {"migrations", migrations_}});
      proxy_.log().event(j, tag() + "migrated " + std::to_string(ev.from) + " -> " +
                                std::to_string(ev.to) + " in " + std::to_string(ev.downtime_us) +
                                " us (" + reason + "; output at " + std::to_string(ev.rcv_at) +
                                ", input at " + std::to_string(ev.snd_at) + ")");
      break;
    }
    case client::EventKind::migration_failed: {
      std::string reason = reason_text(ev);
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
    case client::EventKind::hint: {
      auto j = base("hint");
      j.update({{"from", ev.from}, {"to", ev.to}, {"hint", client::to_string(ev.hint)}});
      proxy_.log().event(j, tag() + client::to_string(ev));
      break;
    }
    case client::EventKind::peer_closed:
      peer_fin_ = true;
      pump();  // nothing left to deliver: shut the local side now
      break;
    case client::EventKind::failed: {
      std::string why = std::string(to_string(ev.error));
      why += client::describe_attempts(ev);
      // Reset the local connection: the program must see an error, never a clean end.
      nlohmann::json counts = nlohmann::json::object();
      for (const auto& [err, n] : ev.attempt_errors) counts[std::string(to_string(err))] = n;
      finish("failed", why, true,
             {{"error", std::string(to_string(ev.error))},
              {"last_attempt", std::string(to_string(ev.last_attempt))},
              {"attempt_errors", counts}});
      break;
    }
    case client::EventKind::closed:
      // Both directions closed and acknowledged: deliver what is still readable, then end.
      detached_ = true;
      end_reason_ = ev.detail;
      pump();
      check_done();
      break;
  }
}

// Moves bytes towards the local program as far as its socket takes them, and reads it again
// if the send log has room.
void Session::pump() {
  if (done_) return;
  if (!local_writing_ && !local_shut_) {
    if (conn_->readable() > 0) {
      out_.clear();
      conn_->read_slices(kLocalWriteBytes, out_);
      write_local();
    } else if (peer_fin_) {
      asio::error_code ignore;
      local_.shutdown(tcp::socket::shutdown_send, ignore);
      local_shut_ = true;
    }
  }
  // Data the local program has not taken yet: a slow reader, not a slow server.
  conn_->set_app_limited(local_writing_ && conn_->readable() > 0);
  if (!local_reading_) read_local();
}

// Hands bytes read from the local program to the connection; false if some are left for
// on_writable (only if the send log has less room than when the read started).
bool Session::push_up(Slice s) {
  size_t took = conn_->write(s);
  if (took < s.len) {
    up_rest_ = s.sub(took, s.len - took);
    return false;
  }
  up_rest_ = {};
  return true;
}

void Session::read_local() {
  if (local_reading_ || done_) return;
  if (!up_rest_.empty() && !push_up(up_rest_)) return;
  if (local_eof_) {
    conn_->close();  // a CLOSE follows the last byte written (once: close() ignores repeats)
    return;
  }
  size_t room = std::min({conn_->write_space(), kLocalReadBytes, rt::ReadBlock::kBytes});
  if (room == 0) return;  // on_writable comes back
  std::span<uint8_t> buf = up_block_.buffer().first(room);
  local_reading_ = true;
  local_.async_read_some(asio::buffer(buf.data(), buf.size()), [self = shared_from_this()](asio::error_code ec, size_t n) {
    self->local_reading_ = false;
    if (self->done_) return;
    if (ec == asio::error::eof) {
      self->local_eof_ = true;
      return self->read_local();
    }
    if (ec) return self->finish("closed", "local connection: " + ec.message(), true);
    self->bytes_up_ += n;
    // A small read is copied into a block of its size, so it does not pin the whole block.
    if (self->push_up(self->up_block_.take(n))) self->read_local();
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
    self->pump();
    self->check_done();
  });
}

// The M-TCP connection is complete (the `closed` event) and everything the pool sent is
// delivered: a clean end on both sides.
void Session::check_done() {
  if (done_ || !detached_ || !local_shut_ || local_writing_) return;
  finish("closed", end_reason_, false);
}

void Session::finish(const std::string& event, const std::string& why, bool reset_local,
                     nlohmann::json extra) {
  if (done_) return;
  done_ = true;
  asio::error_code ignore;
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
  // finish may run inside a callback of conn_: the session (and conn_) must outlive it, and
  // the aborted socket operations, whose handlers are queued before the second post below.
  asio::post(proxy_.io(), [self] {
    if (self->conn_) self->conn_->abort();
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
