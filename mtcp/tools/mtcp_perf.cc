// mtcp-perf: iperf-style load and correctness tool for M-TCP.
//   mtcp-perf -s --pool pool.json --id N [--app ref|echo|source]     run pool member N
//   mtcp-perf -c --pool pool.json [--app ...] [-n BYTES | -d SECONDS] [--migrate-every MS] [-J]
//   mtcp-perf -c --plain ...                                          the same over plain TCP
// Every reply byte is checked against a model of the service (a lost, duplicated or altered
// byte in either direction shows), both directions are hashed with SHA-256, migrations happen
// on a schedule or when the server hints, and each one is reported with its downtime.
// Exit status: 0 verified, 1 transfer failed or mismatched, 2 bad usage or configuration.
#include <openssl/evp.h>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/address.h"
#include "runtime/client_conn.h"
#include "runtime/policy.h"
#include "services/member.h"
#include "sim/ref_app.h"

namespace {

using namespace mtcp;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using asio::ip::tcp;

constexpr size_t kBlockBytes = 64u << 10;  // input generated and handed over per write

struct Options {
  svc::Kind app = svc::Kind::ref;
  svc::Params params;
  uint64_t bytes = 16u << 20;   // input to send (ref, echo) or output to receive (source)
  double duration_s = 0;        // instead of bytes: run this long
  double bitrate_mbit = 0;      // pace the input at this rate (0: as fast as possible)
  uint64_t migrate_every_ms = 0;
  bool back_to_back = false;     // migrate again as soon as a migration ends
  rt::PolicyConfig policy;  // client: when to migrate besides --migrate-every
  double interval_s = 1;
  double time_limit_s = 120;
  bool plain = false;
  bool json = false;
  core::ServerId first = 0;
};

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const uint8_t> b) { EVP_DigestUpdate(ctx_, b.data(), b.size()); }
  std::string hex() {
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, md, &n);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < n; ++i) {
      s.push_back(digits[md[i] >> 4]);
      s.push_back(digits[md[i] & 15]);
    }
    return s;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// ---- reply models ---------------------------------------------------------------------------

class Checker {
 public:
  virtual ~Checker() = default;
  // Checks `got` at the current reply position; `written` is the input sent so far.
  virtual bool check(std::span<const uint8_t> got, uint64_t written, std::string& why) = 0;
  virtual uint64_t received() const = 0;
  // Reply length once the input ends at input_total; nullopt: until the server closes.
  virtual std::optional<uint64_t> expected(uint64_t input_total) = 0;
};

// Compares against a generated stream, a block at a time; names the first differing byte.
bool compare_stream(std::span<const uint8_t> got, uint64_t at, Bytes& scratch,
                    const std::function<void(uint64_t, std::span<uint8_t>)>& fill, std::string& why) {
  scratch.resize(got.size());
  fill(at, scratch);
  if (std::memcmp(scratch.data(), got.data(), got.size()) == 0) return true;
  size_t i = 0;
  while (scratch[i] == got[i]) ++i;
  why = "reply byte " + std::to_string(at + i) + " differs";
  return false;
}

class EchoChecker final : public Checker {
 public:
  explicit EchoChecker(uint64_t seed) : seed_(seed) {}
  bool check(std::span<const uint8_t> got, uint64_t written, std::string& why) override {
    if (received_ + got.size() > written) {
      why = "echo: reply byte " + std::to_string(written) + " arrived before it was sent";
      return false;
    }
    auto fill = [this](uint64_t at, std::span<uint8_t> dst) { sim::input_fill(seed_, at, dst); };
    if (!compare_stream(got, received_, scratch_, fill, why)) return false;
    received_ += got.size();
    return true;
  }
  uint64_t received() const override { return received_; }
  std::optional<uint64_t> expected(uint64_t input_total) override { return input_total; }

 private:
  uint64_t seed_;
  uint64_t received_ = 0;
  Bytes scratch_;
};

class SourceChecker final : public Checker {
 public:
  explicit SourceChecker(uint64_t seed) : seed_(seed) {}
  bool check(std::span<const uint8_t> got, uint64_t, std::string& why) override {
    auto fill = [this](uint64_t at, std::span<uint8_t> dst) { svc::source_fill(seed_, at, dst); };
    if (!compare_stream(got, received_, scratch_, fill, why)) return false;
    received_ += got.size();
    return true;
  }
  uint64_t received() const override { return received_; }
  std::optional<uint64_t> expected(uint64_t) override { return std::nullopt; }

 private:
  uint64_t seed_;
  uint64_t received_ = 0;
  Bytes scratch_;
};

class RefChecker final : public Checker {
 public:
  explicit RefChecker(const sim::AppParams& p) : model_(p) {}
  bool check(std::span<const uint8_t> got, uint64_t written, std::string& why) override {
    return model_.check(got, written, why);
  }
  uint64_t received() const override { return model_.received(); }
  std::optional<uint64_t> expected(uint64_t input_total) override { return model_.total_after(input_total); }

 private:
  sim::OutputModel model_;
};

std::unique_ptr<Checker> make_checker(const Options& o) {
  switch (o.app) {
    case svc::Kind::echo: return std::make_unique<EchoChecker>(o.params.seed);
    case svc::Kind::source: return std::make_unique<SourceChecker>(o.params.seed);
    case svc::Kind::ref: break;
  }
  sim::AppParams a;
  a.stream_seed = o.params.seed;
  a.response_max = o.params.response_max;
  a.snapshot_every = o.params.snapshot_every;
  a.pad_bytes = o.params.state_bytes;
  return std::make_unique<RefChecker>(a);
}

// ---- one transfer, over M-TCP or plain TCP ----------------------------------------------------

struct MigrationRecord {
  double t_s = 0;
  core::ServerId from = 0, to = 0;
  uint64_t rcv_at = 0, snd_at = 0;
  int64_t downtime_us = 0;
  std::string reason;
  std::string error;
};

class Run {
 public:
  Run(asio::io_context& io, const Options& o)
      : io_(io), o_(o), checker_(make_checker(o)), limit_timer_(io), interval_timer_(io), duration_timer_(io),
        pace_timer_(io) {
    // Input to send: the service's input (ref, echo), or nothing (source).
    if (o.app == svc::Kind::source) input_total_ = 0;
    else input_total_ = o.duration_s > 0 ? UINT64_MAX : o.bytes;
  }
  virtual ~Run() = default;
  bool ok() const { return verdict_ == "ok"; }
  const Json& result() const { return result_; }

 protected:
  void start_timers() {
    start_ = Clock::now();
    limit_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(o_.time_limit_s * 1000)));
    limit_timer_.async_wait([this](asio::error_code ec) {
      if (!ec) finish("timeout", "transfer not finished within the time limit (-t " + std::to_string(static_cast<int>(o_.time_limit_s)) + " s)");
    });
    if (o_.duration_s > 0) {
      duration_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(o_.duration_s * 1000)));
      duration_timer_.async_wait([this](asio::error_code ec) {
        if (ec || done_) return;
        end_input();
        kick();
      });
    }
    if (o_.interval_s > 0) tick();
  }
  // The input ends here: nothing more is generated; the transport closes its side.
  void end_input() {
    if (input_total_ > written_) input_total_ = written_;
    input_ended_ = true;
  }
  bool input_left() const { return written_ < input_total_; }
  // Input bytes the pacing allows now (all that is left without --bitrate). At zero, a timer
  // calls kick() when more is allowed.
  uint64_t allowed() {
    uint64_t left = input_total_ - written_;
    if (o_.bitrate_mbit <= 0) return left;
    double rate = o_.bitrate_mbit * 1e6 / 8;  // bytes per second
    double budget = rate * seconds() - static_cast<double>(written_);
    // Whole chunks of about a millisecond's worth (1 KiB to 64 KiB), never a trickle of tiny
    // writes as the clock advances.
    double chunk = std::clamp(rate / 1000, 1024.0, static_cast<double>(kBlockBytes));
    if (budget >= std::min(chunk, static_cast<double>(left))) return std::min<uint64_t>(left, static_cast<uint64_t>(budget));
    if (!pacing_) {
      pacing_ = true;
      pace_timer_.expires_after(std::chrono::milliseconds(1));
      pace_timer_.async_wait([this](asio::error_code ec) {
        pacing_ = false;
        if (!ec && !done_) kick();
      });
    }
    return 0;
  }
  // The next block of input at written_ (hashed); the caller hands it over and calls sent().
  Bytes next_input(size_t room) {
    Bytes b(static_cast<size_t>(std::min<uint64_t>({allowed(), room, kBlockBytes})));
    sim::input_fill(o_.params.seed, written_, b);
    return b;
  }
  void sent(std::span<const uint8_t> b) {
    sent_sha_.update(b);
    written_ += b.size();
    if (written_ == input_total_) input_ended_ = true;
  }
  // A reply block: checked and hashed. False (and finished) on a mismatch.
  bool reply(std::span<const uint8_t> b) {
    std::string why;
    if (!checker_->check(b, written_, why)) {
      finish("mismatch", why);
      return false;
    }
    recv_sha_.update(b);
    // source: the client decides when it has had enough.
    if (o_.app == svc::Kind::source && o_.duration_s == 0 && checker_->received() >= o_.bytes && !input_ended_) end_input();
    return true;
  }
  // True once every reply byte the service owes for the input has arrived (and, for services
  // that close, the server has closed).
  bool reply_complete(bool peer_closed) {
    if (!input_ended_ || written_ != input_total_) return false;
    auto want = checker_->expected(written_);
    if (!want) return peer_closed;
    if (o_.app == svc::Kind::echo && !peer_closed) return false;
    return checker_->received() == *want;
  }
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void record(MigrationRecord r) {
    if (!o_.json) {
      if (r.error.empty())
        std::printf("[%7.3f s] migrated %u -> %u (%s) in %lld us, output at %llu, input at %llu\n", r.t_s, r.from, r.to,
                    r.reason.c_str(), static_cast<long long>(r.downtime_us), static_cast<unsigned long long>(r.rcv_at),
                    static_cast<unsigned long long>(r.snd_at));
      else
        std::printf("[%7.3f s] migration %u -> %u (%s) failed: %s\n", r.t_s, r.from, r.to, r.reason.c_str(), r.error.c_str());
      std::fflush(stdout);
    }
    migrations_.push_back(std::move(r));
  }

  void finish(const std::string& verdict, const std::string& error) {
    if (done_) return;
    done_ = true;
    verdict_ = verdict;
    double secs = seconds();
    uint64_t done_m = 0, failed_m = 0;
    Json ms = Json::array();
    std::vector<int64_t> downs;
    for (const auto& m : migrations_) {
      Json j = {{"t_s", m.t_s}, {"from", m.from}, {"to", m.to}, {"output_at", m.rcv_at}, {"input_at", m.snd_at},
                {"downtime_us", m.downtime_us}, {"reason", m.reason}};
      if (m.error.empty()) {
        ++done_m;
        downs.push_back(m.downtime_us);
      } else {
        ++failed_m;
        j["error"] = m.error;
      }
      ms.push_back(j);
    }
    std::sort(downs.begin(), downs.end());
    auto pct = [&](double q) { return downs.empty() ? int64_t{0} : downs[static_cast<size_t>(q * static_cast<double>(downs.size() - 1))]; };
    uint64_t recvd = checker_->received();
    result_ = {{"start",
                {{"transport", o_.plain ? "tcp" : "mtcp"},
                 {"app", svc::kind_name(o_.app)},
                 {"bytes", o_.bytes},
                 {"duration_s", o_.duration_s},
                 {"migrate_every_ms", o_.migrate_every_ms},
                 {"seed", o_.params.seed}}},
               {"intervals", intervals_},
               {"end",
                {{"seconds", secs},
                 {"bytes_sent", written_},
                 {"bytes_received", recvd},
                 {"sent_mbit_s", secs > 0 ? static_cast<double>(written_) * 8 / secs / 1e6 : 0},
                 {"received_mbit_s", secs > 0 ? static_cast<double>(recvd) * 8 / secs / 1e6 : 0},
                 {"sha256_sent", sent_sha_.hex()},
                 {"sha256_received", recv_sha_.hex()},
                 {"migrations_done", done_m},
                 {"migrations_failed", failed_m},
                 {"downtime_us_median", pct(0.5)},
                 {"downtime_us_p99", pct(0.99)},
                 {"duplicate_bytes_dropped", duplicates()},
                 {"verdict", verdict_},
                 {"error", error}}},
               {"migrations", ms}};
    limit_timer_.cancel();
    interval_timer_.cancel();
    pace_timer_.cancel();
    duration_timer_.cancel();
    stop_transport([this] { io_.stop(); });
  }

  virtual void kick() = 0;  // the input ended or more can be written: move data
  // Closes the transport, then calls `then`.
  virtual void stop_transport(std::function<void()> then) = 0;
  virtual uint64_t duplicates() const { return 0; }

  asio::io_context& io_;
  Options o_;
  std::unique_ptr<Checker> checker_;
  uint64_t input_total_ = 0;
  uint64_t written_ = 0;
  bool input_ended_ = false;
  bool done_ = false;
  Clock::time_point start_;
  std::vector<MigrationRecord> migrations_;

 private:
  void tick() {
    interval_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(o_.interval_s * 1000)));
    interval_timer_.async_wait([this](asio::error_code ec) {
      if (ec || done_) return;
      double t = seconds();
      uint64_t up = written_ - last_sent_, down = checker_->received() - last_received_;
      size_t migs = migrations_.size() - last_migrations_;
      double span = t - last_t_;
      Json j = {{"start_s", last_t_}, {"end_s", t}, {"bytes_sent", up}, {"bytes_received", down},
                {"sent_mbit_s", static_cast<double>(up) * 8 / span / 1e6},
                {"received_mbit_s", static_cast<double>(down) * 8 / span / 1e6}, {"migrations", migs}};
      if (!o_.json) {
        std::printf("[%6.2f-%6.2f s] sent %8.2f MB %8.1f Mbit/s   received %8.2f MB %8.1f Mbit/s   %zu migrations\n", last_t_, t,
                    static_cast<double>(up) / 1e6, j["sent_mbit_s"].get<double>(), static_cast<double>(down) / 1e6,
                    j["received_mbit_s"].get<double>(), migs);
        std::fflush(stdout);
      }
      intervals_.push_back(j);
      last_t_ = t;
      last_sent_ = written_;
      last_received_ = checker_->received();
      last_migrations_ = migrations_.size();
      tick();
    });
  }

  asio::steady_timer limit_timer_, interval_timer_, duration_timer_, pace_timer_;
  bool pacing_ = false;
  Sha256 sent_sha_, recv_sha_;
  Json intervals_ = Json::array();
  double last_t_ = 0;
  uint64_t last_sent_ = 0, last_received_ = 0;
  size_t last_migrations_ = 0;
  std::string verdict_ = "unfinished";
  Json result_;
};

class MtcpRun final : public Run {
 public:
  MtcpRun(asio::io_context& io, const rt::PoolConfig& pool, const Options& o)
      : Run(io, o), conn_(io, pool), migrate_timer_(io), policy_(o.policy), policy_timer_(io), usr1_(io, SIGUSR1) {}

  void start() {
    start_timers();
    conn_.on_change = [this](std::vector<core::ClientEvent>& evs) { on_change(evs); };
    conn_.connect(o_.first);
    wait_usr1();
  }

 private:
  core::ServerId next_member(core::ServerId after) const {
    const auto& pool = conn_engine().pool();
    auto it = std::find(pool.begin(), pool.end(), after);
    return (it == pool.end() || ++it == pool.end()) ? pool.front() : *it;
  }
  const core::ClientEngine& conn_engine() const { return const_cast<rt::ClientConn&>(conn_).engine(); }

  // SIGUSR1: the manual policy (migrate now).
  void wait_usr1() {
    usr1_.async_wait([this](asio::error_code ec, int) {
      if (ec || done_) return;
      policy_.request_manual();
      kick();
      wait_usr1();
    });
  }

  // Asks the policy; arms a timer for its next deadline.
  void run_policy() {
    auto& e = conn_.engine();
    core::TimeMs now = rt::now_ms();
    if (e.state() == core::ClientState::established && !e.migrating() && e.primary()) {
      if (auto d = policy_.poll(now)) {
        if (migrate(d->target, d->reason)) policy_.on_migration_started(d->target, now);
      }
    }
    core::TimeMs next = policy_.next_deadline();
    if (next == core::kNever || policy_armed_ == next) return;
    policy_armed_ = next;
    policy_timer_.expires_after(std::chrono::milliseconds(next > now ? next - now : 1));
    policy_timer_.async_wait([this](asio::error_code ec) {
      policy_armed_ = core::kNever;
      if (!ec && !done_) run_policy();
    });
  }

  bool migrate(core::ServerId target, const std::string& reason) {
    auto& e = conn_.engine();
    if (e.state() != core::ClientState::established || e.migrating() || !e.primary()) return false;
    if (target == 0 || target == e.server()) target = next_member(e.server());
    requested_ = Clock::now();
    if (!e.migrate(target, rt::now_ms())) return false;
    pending_reason_ = reason;
    conn_.service();
    return true;
  }

  void schedule_migration() {
    if (o_.migrate_every_ms == 0) return;
    migrate_timer_.expires_after(std::chrono::milliseconds(o_.migrate_every_ms));
    migrate_timer_.async_wait([this](asio::error_code ec) {
      if (ec || done_) return;
      migrate(0, "schedule");
      schedule_migration();
    });
  }

  void on_change(std::vector<core::ClientEvent>& events) {
    if (done_) return;
    auto& e = conn_.engine();
    for (const auto& ev : events) {
      using K = core::ClientEvent::Kind;
      core::TimeMs now = rt::now_ms();
      if (ev.kind == K::connected) {
        if (!o_.json) std::printf("connected to member %u, connection %llu\n", ev.to, static_cast<unsigned long long>(e.conn_id()));
        policy_.on_connected(e.server(), e.pool(), now);
        schedule_migration();
        if (o_.back_to_back) back_to_back_due_ = true;
      } else if (ev.kind == K::hint) {
        policy_.on_hint(ev.to, now);
      } else if (ev.kind == K::peer_closed) {
        policy_.on_peer_closed(now);
      } else if (ev.kind == K::migrated || ev.kind == K::migration_failed) {
        MigrationRecord r;
        r.t_s = seconds();
        r.from = ev.from;
        r.to = ev.to;
        r.rcv_at = ev.rcv_at;
        r.snd_at = ev.snd_at;
        // Requested migrations are timed here to the microsecond (request sent -> ACCEPT from
        // the new member); recoveries the engine started by itself, from its ms stamps.
        if (!pending_reason_.empty()) {
          r.downtime_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - requested_).count();
          r.reason = std::exchange(pending_reason_, {});
        } else {
          r.downtime_us = static_cast<int64_t>(ev.done_ms - ev.started_ms) * 1000;
          r.reason = "recovery";
        }
        if (ev.kind == K::migration_failed) {
          r.error = std::string(to_string(ev.error));
          policy_.on_migration_failed(ev.to, now);
        } else {
          policy_.on_migrated(ev.from, ev.to, now);
        }
        if (o_.back_to_back) back_to_back_due_ = true;
        record(std::move(r));
      } else if (ev.kind == K::failed) {
        std::string why = "connection failed: " + std::string(to_string(ev.error));
        if (ev.last_attempt != Error::ok) why += " (last attempt: " + std::string(to_string(ev.last_attempt)) + ")";
        return finish("failed", why);
      }
    }
    if (e.state() != core::ClientState::established) return;
    if (input_ended_) back_to_back_due_ = false;  // let the close go through
    if (back_to_back_due_ && !e.migrating() && migrate(0, "back-to-back")) back_to_back_due_ = false;
    pump();
    if (!done_) run_policy();
  }

  void pump() {
    auto& e = conn_.engine();
    // Input in blocks handed to the engine (no copy inside M-TCP).
    while (input_left() && e.write_space() > 0) {
      Bytes b = next_input(e.write_space());
      if (b.empty()) break;  // paced
      Slice s(make_block(std::move(b)));
      Slice keep = s;  // the engine shares the block; `keep` lets us hash what was accepted
      if (!e.write(std::move(s))) break;
      sent(keep.span());
      policy_.on_bytes_sent(keep.len, rt::now_ms());
    }
    if (input_ended_ && !closed_ && written_ == input_total_) {
      closed_ = true;
      e.close();
      conn_.service();
    }
    got_.clear();
    e.read_slices(SIZE_MAX, got_);
    for (const auto& s : got_) {
      if (!reply(s.span())) return;
      policy_.on_bytes_received(s.len, rt::now_ms());
    }
    if (reply_complete(e.peer_closed()) && e.send_log().base() == written_) finish("ok", "");
  }

  void kick() override {
    if (done_) return;
    pump();
    conn_.service();
  }
  void stop_transport(std::function<void()> then) override {
    migrate_timer_.cancel();
    policy_timer_.cancel();
    usr1_.cancel();
    // The member frees a finished connection once it has our ACK of its CLOSE: send it.
    conn_.flush_and_close(std::move(then));
  }
  uint64_t duplicates() const override { return conn_engine().counters().duplicate_bytes_dropped; }

  rt::ClientConn conn_;
  asio::steady_timer migrate_timer_;
  Clock::time_point requested_;
  std::string pending_reason_;
  rt::MigrationPolicy policy_;
  bool back_to_back_due_ = false;
  asio::steady_timer policy_timer_;
  core::TimeMs policy_armed_ = core::kNever;
  asio::signal_set usr1_;
  bool closed_ = false;
  std::vector<Slice> got_;
};

// The baseline: the same service over a plain TCP connection to one member's data port.
class PlainRun final : public Run {
 public:
  PlainRun(asio::io_context& io, const Options& o) : Run(io, o), sock_(io), rbuf_(256u << 10) {}

  bool start(const std::string& address, std::string& why) {
    tcp::endpoint ep;
    if (!rt::parse_endpoint(address, ep, why)) return false;
    start_timers();
    sock_.async_connect(ep, [this](asio::error_code ec) {
      if (ec) return finish("failed", "cannot connect: " + ec.message());
      asio::error_code ignore;
      sock_.set_option(tcp::no_delay(true), ignore);
      // source: one byte that is not the M-TCP preface makes the member serve plain TCP at
      // once instead of after the hello timeout (the service discards input).
      if (o_.app == svc::Kind::source) {
        static const uint8_t nl = '\n';
        asio::write(sock_, asio::buffer(&nl, 1), ignore);
      }
      read();
      write();
    });
    return true;
  }

 private:
  void write() {
    if (done_ || writing_) return;
    if (!input_left()) {
      if (input_ended_ && !shut_) {
        shut_ = true;
        asio::error_code ignore;
        sock_.shutdown(tcp::socket::shutdown_send, ignore);
      }
      return;
    }
    wbuf_ = next_input(kBlockBytes * 4);
    if (wbuf_.empty()) return;  // paced: kick() comes back
    writing_ = true;
    sent(wbuf_);  // counted now: the echo of its first bytes can arrive before the write completes
    asio::async_write(sock_, asio::buffer(wbuf_), [this](asio::error_code ec, size_t) {
      writing_ = false;
      if (done_) return;
      if (ec) return finish("failed", "write: " + ec.message());
      write();
    });
  }
  void read() {
    sock_.async_read_some(asio::buffer(rbuf_), [this](asio::error_code ec, size_t n) {
      if (done_) return;
      if (ec == asio::error::eof) {
        if (reply_complete(true)) return finish("ok", "");
        return finish("failed", "the server closed after " + std::to_string(checker_->received()) + " reply bytes");
      }
      if (ec) return finish("failed", "read: " + ec.message());
      if (!reply(std::span<const uint8_t>(rbuf_.data(), n))) return;
      if (input_ended_) write();  // source: shut our side once we have had enough
      read();
    });
  }
  void kick() override { write(); }
  void stop_transport(std::function<void()> then) override {
    asio::error_code ignore;
    sock_.close(ignore);
    then();
  }

  tcp::socket sock_;
  Bytes wbuf_, rbuf_;
  bool writing_ = false;
  bool shut_ = false;
};

void print_summary(const Json& r) {
  const auto& e = r["end"];
  std::printf("%s (%s, %s): %llu bytes sent, %llu received in %.3f s (%.0f / %.0f Mbit/s), %llu migrations (median %lld us, p99 %lld us), %llu failed\n",
              e["verdict"].get<std::string>().c_str(), r["start"]["transport"].get<std::string>().c_str(),
              r["start"]["app"].get<std::string>().c_str(), e["bytes_sent"].get<unsigned long long>(),
              e["bytes_received"].get<unsigned long long>(), e["seconds"].get<double>(), e["sent_mbit_s"].get<double>(),
              e["received_mbit_s"].get<double>(), e["migrations_done"].get<unsigned long long>(),
              e["downtime_us_median"].get<long long>(), e["downtime_us_p99"].get<long long>(),
              e["migrations_failed"].get<unsigned long long>());
  std::printf("sha256 sent %s\nsha256 received %s\n", e["sha256_sent"].get<std::string>().c_str(),
              e["sha256_received"].get<std::string>().c_str());
  if (!e["error"].get<std::string>().empty()) std::printf("error: %s\n", e["error"].get<std::string>().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"mtcp-perf: measure and verify M-TCP transfers across migrations"};
  bool server = false, client = false, no_hints = false;
  std::string policies = "hint,manual", stall_expect = "any";
  std::string pool_path, app_name = "ref", admin_path;
  uint32_t id = 0;
  Options o;
  o.params.response_max = 128;
  o.params.snapshot_every = 256u << 10;
  cli.add_flag("-s,--server", server, "Run a pool member");
  cli.add_flag("-c,--client", client, "Run a client");
  cli.add_option("--pool", pool_path, "Pool configuration file (JSON)")->required();
  cli.add_option("--id", id, "Member id to run (with -s)");
  cli.add_option("--app", app_name, "Service: ref (reference app), echo, or source (server-to-client stream)")->capture_default_str();
  cli.add_option("--admin", admin_path, "With -s: local admin socket for mtcpctl");
  cli.add_option("--server-id", o.first, "Member to connect to first (with -c; default: the first member)");
  cli.add_option("-n,--bytes", o.bytes, "Bytes to send (ref, echo) or to receive (source)")->capture_default_str();
  cli.add_option("-d,--duration", o.duration_s, "Run this many seconds instead of a byte count");
  cli.add_option("-b,--bitrate", o.bitrate_mbit, "Pace the input at this many Mbit/s (0: as fast as possible)");
  cli.add_flag("--back-to-back", o.back_to_back, "Migrate again as soon as each migration ends (migrations per second)");
  cli.add_option("--migrate-every", o.migrate_every_ms, "Migrate to the next member every this many ms (0: never)");
  cli.add_flag("--ignore-hints", no_hints, "Do not migrate when the server hints (drain, overload)");
  cli.add_option("--policy", policies, "Migration policies: throughput,stall,hint,manual (SIGUSR1),schedule; or none (see docs/PROXY.md)")
      ->capture_default_str();
  cli.add_option("--fraction", o.policy.fraction, "throughput: migrate below this fraction of the best rate seen")->capture_default_str();
  cli.add_option("--window-ms", o.policy.window_ms, "throughput: measurement window")->capture_default_str();
  cli.add_option("--warmup-ms", o.policy.warmup_ms, "throughput: not judged this long after connecting")->capture_default_str();
  cli.add_option("--hysteresis", o.policy.hysteresis, "throughput: bad windows in a row before migrating")->capture_default_str();
  cli.add_option("--cooldown-ms", o.policy.cooldown_ms, "throughput: not judged this long after a migration")->capture_default_str();
  cli.add_option("--stall-ms", o.policy.stall_ms, "stall: migrate after this long without a byte while one is expected")->capture_default_str();
  cli.add_option("--every-ms", o.policy.every_ms, "schedule: migrate this long after the last migration")->capture_default_str();
  cli.add_option("-i,--interval", o.interval_s, "Seconds between interval lines (0: none)")->capture_default_str();
  cli.add_option("-t,--time-limit", o.time_limit_s, "Give up after this many seconds")->capture_default_str();
  cli.add_flag("--plain", o.plain, "Plain TCP to the member's data port (the baseline; echo and source only)");
  cli.add_option("--response-max", o.params.response_max, "ref: generated bytes per 64-byte record (hash mod this)");
  cli.add_option("--snapshot-every", o.params.snapshot_every, "Bytes between snapshots (server)");
  cli.add_option("--state-bytes", o.params.state_bytes, "Extra snapshot bytes (state size)");
  cli.add_option("--source-bytes", o.params.source_bytes, "With -s --app source: stream length (0: until the client closes)");
  cli.add_option("--seed", o.params.seed, "Stream seed (must match between client and servers)");
  cli.add_flag("-J,--json", o.json, "Print the result as JSON");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? 0 : 2;  // --help is 0; any usage error is 2
  }
  std::string why;
  if (!rt::parse_policies(policies, o.policy.enabled, why)) {
    std::fprintf(stderr, "mtcp-perf: --policy: %s\n", why.c_str());
    return 2;
  }
  if (no_hints) o.policy.enabled &= ~rt::kPolicyHint;
  if (std::string bad = rt::validate(o.policy); !bad.empty()) {
    std::fprintf(stderr, "mtcp-perf: %s\n", bad.c_str());
    return 2;
  }
  if (server == client) {
    std::fprintf(stderr, "mtcp-perf: give exactly one of -s or -c (see --help)\n");
    return 2;
  }
  if (!svc::parse_kind(app_name, o.app)) {
    std::fprintf(stderr, "mtcp-perf: unknown --app '%s' (ref, echo or source)\n", app_name.c_str());
    return 2;
  }
  rt::PoolConfig pool;
  if (!rt::load_pool_config(pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-perf: %s\n", why.c_str());
    return 2;
  }
  if (server) {
    if (!pool.find(id)) {
      std::fprintf(stderr, "mtcp-perf: --id %u is not a member of %s\n", id, pool_path.c_str());
      return 2;
    }
    svc::MemberOptions m;
    m.id = id;
    m.service = o.app;
    m.params = o.params;
    m.admin_path = admin_path;
    m.prog = "mtcp-perf";
    return svc::run_member(pool, m);
  }
  if (o.first == 0) o.first = pool.members.front().id;
  if (!pool.find(o.first)) {
    std::fprintf(stderr, "mtcp-perf: --server-id %u is not a member of %s\n", o.first, pool_path.c_str());
    return 2;
  }
  if (o.plain && o.app == svc::Kind::ref) {
    std::fprintf(stderr, "mtcp-perf: --plain needs --app echo or source (members serve plain TCP clients those services; ref is answered as echo)\n");
    return 2;
  }
  asio::io_context io(1);  // one thread: posted handlers skip waking the reactor (docs/profiling.md)
  std::unique_ptr<MtcpRun> mrun;
  std::unique_ptr<PlainRun> prun;
  const Json* result = nullptr;
  bool ok = false;
  if (o.plain) {
    prun = std::make_unique<PlainRun>(io, o);
    if (!prun->start(pool.find(o.first)->data, why)) {
      std::fprintf(stderr, "mtcp-perf: %s\n", why.c_str());
      return 2;
    }
    io.run();
    result = &prun->result();
    ok = prun->ok();
  } else {
    mrun = std::make_unique<MtcpRun>(io, pool, o);
    mrun->start();
    io.run();
    result = &mrun->result();
    ok = mrun->ok();
  }
  if (o.json) std::cout << result->dump(2) << "\n";
  else print_summary(*result);
  return ok ? 0 : 1;
}
