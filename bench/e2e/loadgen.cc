// mtcp-loadgen: many-connection load client for end-to-end measurements against the echo
// service of a pool (docs/SERVICES.md), over M-TCP or, with --plain, over plain TCP to the
// members' data ports (the baseline; the same code otherwise). One Asio thread drives every
// connection.
//
//   --mode rr       request/response latency: each connection sends SIZE bytes and waits for
//                   their echo, again and again; percentiles of the round-trip times
//   --mode idle     opens N connections, proves each with a round trip, holds them idle (the
//                   caller measures the members' memory), proves each again, closes them
//   --mode migrate  each connection migrates back to back, round robin over the members, with
//                   a verified round trip in between; migrations per second and their times
//
// Every connection sends its own generated stream and every reply byte is checked against it:
// a byte that differs, arrives before it was sent, or a connection that is lost is a failure
// with a message naming the connection and the byte. Exit status: 0 verified, 1 failed,
// 2 bad usage.
//
// -J prints one JSON object on one line (the last line of stdout; idle mode prints
// "READY <n>" before it). Keys: mode, transport (mtcp|tcp), conns, size, server_id, spread,
// members, opened, open_failed, open_seconds (connect and first round trip of every
// connection), closed, close_failed, close_seconds, errors, recoveries,
// duplicate_bytes_dropped, client_rss_kb_end, seconds, verdict (ok|failed), error; and
//   rr:      count, rate (round trips/s), p50_us p90_us p99_us p999_us mean_us min_us max_us
//   idle:    held, hold_seconds, hold_ended_by (timer|SIGUSR1|SIGTERM|SIGINT),
//            lost_during_hold, alive_end, prove_seconds, client_rss_kb_hold
//   migrate: migrations, migrations_failed, migrations_refused, migrations_per_s,
//            migration_p50_us p99_us mean_us max_us (request -> ACCEPT), migration_first_error,
//            rr_between, count and rr_p50_us ... rr_max_us (the round trips between)
// Percentiles: the element at index floor(q * (n - 1)) of the sorted samples, as in mtcp-perf.
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/address.h"
#include "runtime/client_conn.h"

namespace {

using namespace mtcp;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using asio::ip::tcp;

enum class Mode { rr, idle, migrate };

struct Options {
  Mode mode = Mode::rr;
  std::string mode_name = "rr";
  std::string pool_path;
  core::ServerId first = 0;
  bool spread = false;
  bool plain = false;
  size_t conns = 1;
  size_t size = 64;
  uint64_t count = 0;       // rr: round trips in all; migrate: migrations in all (0: by time)
  double duration_s = 0;    // rr, migrate: run this long instead
  double hold_s = 5;        // idle: hold this long (0: until SIGUSR1, SIGTERM or SIGINT)
  std::string hold_file;    // idle: also write "READY n" here
  size_t inflight = 256;    // connections being opened at once
  bool rr_between = true;   // migrate: a round trip between two migrations
  bool progress = false;    // progress lines on stderr even when it is not a terminal
  double time_limit_s = 120;
  bool json = false;
  uint64_t seed = 1;
};

double secs_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- the byte streams -----------------------------------------------------------------------

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Byte `at + i` of the stream with this seed, into dst[i]. Every connection has its own seed,
// so a reply that belongs to another connection shows as well as a lost or altered byte.
// Byte 0 is never 0x89, the first byte of the M-TCP preface: a plain TCP client is recognised
// by its first byte (docs/SERVICES.md "Plain TCP clients").
void stream_fill(uint64_t seed, uint64_t at, std::span<uint8_t> dst) {
  size_t i = 0;
  while (i < dst.size()) {
    uint64_t o = at + i;
    uint64_t w = mix64(seed + (o >> 3) * 0xd6e8feb86659fd93ull);
    for (unsigned b = static_cast<unsigned>(o & 7); b < 8 && i < dst.size(); ++b, ++i)
      dst[i] = static_cast<uint8_t>(w >> (8 * b));
  }
  if (at == 0 && !dst.empty() && dst[0] == 0x89) dst[0] = 0x8a;
}

std::string hex_byte(uint8_t b) {
  char t[8];
  std::snprintf(t, sizeof t, "0x%02x", b);
  return t;
}

long rss_kb_self() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

// ---- one connection -------------------------------------------------------------------------

// One operation at a time: open, round_trip, migrate or close, each completing through its
// callback. A failure with no operation under way (a connection lost while idle) goes to
// on_lost. Callbacks may start the next operation; nothing is destroyed before io.run() ends.
class Conn {
 public:
  using Done = std::function<void(bool ok, const std::string& why)>;
  // ns: request -> ACCEPT; refused: the engine did not start the attempt (nothing was sent)
  using MigDone = std::function<void(bool ok, const std::string& why, int64_t ns, bool refused)>;

  Conn(asio::io_context& io, size_t index, uint64_t seed) : timer(io), io_(io), index_(index), seed_(seed) {}
  virtual ~Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  virtual void open(Done d) = 0;
  // Sends the next n bytes of the stream and completes once their echo is back and verified.
  virtual void round_trip(size_t n, Done d) = 0;
  // Clean close: our side first, then the server's once it has echoed everything.
  virtual void close(Done d) = 0;
  virtual void migrate(MigDone d) { d(false, "migration needs M-TCP", 0, true); }
  virtual uint64_t recoveries() const { return 0; }
  virtual uint64_t duplicates() const { return 0; }

  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }
  size_t index() const { return index_; }
  uint64_t sent() const { return sent_; }

  std::function<void(const std::string&)> on_lost;
  asio::steady_timer timer;  // for the driver (retry after a refused migration request)

 protected:
  // Closes the transport at once; pending handlers see failed_ or closed_ and do nothing.
  virtual void drop() = 0;

  std::string name() const { return "connection " + std::to_string(index_); }

  // Checks reply bytes at the current reply position; false after fail().
  bool verify(std::span<const uint8_t> got) {
    if (failed_) return false;
    if (received_ + got.size() > sent_) {
      fail("reply byte " + std::to_string(sent_) + " arrived before it was sent (" + std::to_string(received_ + got.size()) +
           " reply bytes, " + std::to_string(sent_) + " sent)");
      return false;
    }
    static Bytes scratch;
    scratch.resize(got.size());
    stream_fill(seed_, received_, scratch);
    if (std::memcmp(scratch.data(), got.data(), got.size()) != 0) {
      size_t i = 0;
      while (scratch[i] == got[i]) ++i;
      fail("reply byte " + std::to_string(received_ + i) + " differs: got " + hex_byte(got[i]) + ", sent " + hex_byte(scratch[i]));
      return false;
    }
    received_ += got.size();
    return true;
  }
  // After verify(): completes a round trip whose echo is all back.
  void check_round_trip() {
    if (rt_pending_ && received_ >= target_) {
      rt_pending_ = false;
      complete(true, {});
    }
  }
  // Starts a round trip: the bytes to send.
  Bytes next_request(size_t n) {
    Bytes b(n);
    stream_fill(seed_, target_, b);  // target_: the end of everything queued so far
    target_ += n;
    rt_pending_ = true;
    return b;
  }
  void complete(bool ok, const std::string& why) {
    if (auto d = std::exchange(op_, nullptr)) d(ok, why);
    else if (!ok && on_lost) on_lost(why);
  }
  void fail(const std::string& why) {
    if (failed_) return;
    failed_ = true;
    error_ = name() + ": " + why;
    drop();
    rt_pending_ = false;
    if (auto m = std::exchange(mig_, nullptr)) return m(false, error_, 0, false);
    complete(false, error_);
  }

  asio::io_context& io_;
  size_t index_;
  uint64_t seed_;
  uint64_t sent_ = 0;      // stream bytes handed to the transport
  uint64_t received_ = 0;  // reply bytes verified
  uint64_t target_ = 0;    // the pending round trip ends when received_ reaches this
  bool rt_pending_ = false;
  bool closing_ = false;
  bool closed_ = false;
  Done op_;
  MigDone mig_;
  bool failed_ = false;
  std::string error_;
};

// Over M-TCP: rt::ClientConn, the runtime's client connection.
class MtcpConn final : public Conn {
 public:
  MtcpConn(asio::io_context& io, const rt::PoolConfig& pool, size_t index, uint64_t seed, core::ServerId first)
      : Conn(io, index, seed), c_(io, pool), first_(first) {}

  void open(Done d) override {
    op_ = std::move(d);
    c_.on_change = [this](std::vector<core::ClientEvent>& evs) { on_change(evs); };
    c_.connect(first_);
  }

  void round_trip(size_t n, Done d) override {
    if (failed_) return d(false, error_);
    op_ = std::move(d);
    pending_.push_back(Slice(make_block(next_request(n))));
    write_pending();
    c_.service();
  }

  void close(Done d) override {
    if (failed_) return d(false, error_);
    op_ = std::move(d);
    closing_ = true;
    c_.engine().close();
    c_.service();
  }

  void migrate(MigDone d) override {
    if (failed_) return d(false, error_, 0, false);
    auto& e = c_.engine();
    // Round robin: the member after the current one, or after the last target if that attempt
    // failed (a member that is down is not asked again and again).
    core::ServerId target = next_member(last_failed_ ? last_target_ : e.server());
    if (target == e.server()) target = next_member(target);
    requested_ = Clock::now();
    Status st = e.migrate(target, rt::now_ms());
    if (!st) return d(false, "the engine refused to start a migration to member " + std::to_string(target) + ": " + std::string(to_string(st.error())), 0, true);
    last_target_ = target;
    mig_ = std::move(d);
    c_.service();
  }

  uint64_t recoveries() const override { return recoveries_; }
  uint64_t duplicates() const override { return const_cast<rt::ClientConn&>(c_).engine().counters().duplicate_bytes_dropped; }

 private:
  core::ServerId next_member(core::ServerId after) {
    const auto& pool = c_.engine().pool();
    auto it = std::find(pool.begin(), pool.end(), after);
    return (it == pool.end() || ++it == pool.end()) ? pool.front() : *it;
  }

  void drop() override {
    // Not from inside ClientConn::service (on_change runs there): close a moment later.
    asio::post(io_, [this] { c_.close_all(); });
  }

  void write_pending() {
    auto& e = c_.engine();
    while (!pending_.empty()) {
      size_t space = e.write_space();
      if (space == 0) break;
      Slice s = pending_.front();
      size_t n = std::min(space, s.len);
      if (n < s.len) s = s.sub(0, n);
      if (!e.write(s)) break;
      sent_ += n;
      if (n == pending_.front().len) pending_.pop_front();
      else pending_.front() = pending_.front().sub(n, pending_.front().len - n);
    }
  }

  void on_change(std::vector<core::ClientEvent>& events) {
    if (failed_ || closed_) return;
    using K = core::ClientEvent::Kind;
    for (const auto& ev : events) {
      if (ev.kind == K::connected) {
        connected_ = true;
        complete(true, {});
      } else if (ev.kind == K::migrated) {
        if (auto m = std::exchange(mig_, nullptr)) {
          last_failed_ = false;
          m(true, {}, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - requested_).count(), false);
        } else {
          ++recoveries_;  // the engine moved by itself after losing its subflow
        }
      } else if (ev.kind == K::migration_failed) {
        std::string why = "migration " + std::to_string(ev.from) + " -> " + std::to_string(ev.to) + " failed: " + std::string(to_string(ev.error));
        last_failed_ = true;
        if (auto m = std::exchange(mig_, nullptr)) m(false, why, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - requested_).count(), false);
      } else if (ev.kind == K::failed) {
        std::string why = "connection failed: " + std::string(to_string(ev.error));
        why += core::describe_attempts(ev.last_attempt, ev.attempt_errors);
        if (ev.error == Error::closed && !closing_) why += " (the member closed it)";
        // The engine's connect deadline is migrate_timeout_ms, and it reports migration_timeout.
        if (!connected_) why = "cannot connect to member " + std::to_string(first_) + ": " + why;
        return fail(why);
      } else if (ev.kind == K::peer_closed) {
        if (!closing_) return fail("the member closed the connection after " + std::to_string(received_) + " reply bytes");
      }
      if (failed_) return;
    }
    pump();
  }

  void pump() {
    auto& e = c_.engine();
    write_pending();
    got_.clear();
    e.read_slices(SIZE_MAX, got_);
    for (const auto& s : got_)
      if (!verify(s.span())) return;
    check_round_trip();
    if (failed_) return;
    if (closing_ && !flushing_ && e.peer_closed() && pending_.empty() && e.send_log().base() == sent_) {
      if (received_ != sent_) return fail("the member closed after " + std::to_string(received_) + " of " + std::to_string(sent_) + " echo bytes");
      flushing_ = true;
      // Our ACK of the member's CLOSE lets it free the connection at once: send it, then close.
      asio::post(io_, [this] {
        c_.flush_and_close([this] {
          closed_ = true;
          complete(true, {});
        });
      });
    }
  }

  rt::ClientConn c_;
  core::ServerId first_;
  std::deque<Slice> pending_;  // request bytes the send log has not taken yet
  std::vector<Slice> got_;
  Clock::time_point requested_;
  uint64_t recoveries_ = 0;
  bool connected_ = false;
  bool flushing_ = false;
  core::ServerId last_target_ = 0;
  bool last_failed_ = false;
};

// The baseline: a plain TCP socket to a member's data port, non-blocking; reads wait for
// readiness and then read into one buffer shared by every connection (no per-connection
// receive buffer, so the client's memory does not grow with idle connections).
class PlainConn final : public Conn {
 public:
  PlainConn(asio::io_context& io, size_t index, uint64_t seed, tcp::endpoint ep, std::string address)
      : Conn(io, index, seed), s_(io), ep_(ep), address_(std::move(address)) {}

  void open(Done d) override {
    op_ = std::move(d);
    s_.async_connect(ep_, [this](asio::error_code ec) {
      if (failed_) return;
      if (ec) return fail("cannot connect to " + address_ + ": " + ec.message());
      asio::error_code ignore;
      s_.set_option(tcp::no_delay(true), ignore);
      s_.non_blocking(true, ignore);
      wait_read();
      complete(true, {});
    });
  }

  void round_trip(size_t n, Done d) override {
    if (failed_) return d(false, error_);
    op_ = std::move(d);
    Bytes b = next_request(n);
    out_.insert(out_.end(), b.begin(), b.end());
    sent_ += n;  // counted now: the echo of the first bytes can come before the write ends
    flush();
  }

  void close(Done d) override {
    if (failed_) return d(false, error_);
    op_ = std::move(d);
    closing_ = true;
    asio::error_code ec;
    s_.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) fail("shutdown: " + ec.message());
    // The member shuts its side once it has echoed everything: wait_read() sees the EOF.
  }

 private:
  void drop() override {
    asio::error_code ignore;
    s_.close(ignore);
  }

  void flush() {
    while (!writing_ && !out_.empty() && !failed_) {
      asio::error_code ec;
      size_t n = s_.write_some(asio::buffer(out_), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        writing_ = true;
        s_.async_wait(tcp::socket::wait_write, [this](asio::error_code wec) {
          writing_ = false;
          if (failed_ || closed_) return;
          if (wec) return fail("write: " + wec.message());
          flush();
        });
        return;
      }
      if (ec) return fail("write: " + ec.message());
      out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(n));
    }
  }

  void wait_read() {
    s_.async_wait(tcp::socket::wait_read, [this](asio::error_code ec) {
      if (failed_ || closed_) return;
      if (ec) return fail("read: " + ec.message());
      static Bytes buf(256u << 10);
      for (;;) {
        asio::error_code rec;
        size_t n = s_.read_some(asio::buffer(buf), rec);
        if (rec == asio::error::would_block || rec == asio::error::try_again) break;
        if (rec == asio::error::eof) {
          if (!closing_) return fail("the member closed the connection after " + std::to_string(received_) + " reply bytes");
          if (received_ != sent_) return fail("the member closed after " + std::to_string(received_) + " of " + std::to_string(sent_) + " echo bytes");
          closed_ = true;
          asio::error_code ignore;
          s_.close(ignore);
          return complete(true, {});
        }
        if (rec) return fail("read: " + rec.message());
        if (!verify(std::span<const uint8_t>(buf.data(), n))) return;
        check_round_trip();
        if (failed_ || closed_) return;
        if (n < buf.size()) break;
      }
      wait_read();
    });
  }

  tcp::socket s_;
  tcp::endpoint ep_;
  std::string address_;
  Bytes out_;  // request bytes not yet written
  bool writing_ = false;
};

// ---- the driver -----------------------------------------------------------------------------

// Element at index floor(q * (n - 1)) of the sorted samples (as mtcp-perf does).
double pct_us(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  return static_cast<double>(sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))]) / 1000.0;
}
double mean_us(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  long double s = 0;
  for (auto x : v) s += static_cast<long double>(x);
  return static_cast<double>(s / static_cast<long double>(v.size()) / 1000.0L);
}

class Bench {
 public:
  Bench(asio::io_context& io, const rt::PoolConfig& pool, const Options& o)
      : io_(io), pool_(pool), o_(o), limit_timer_(io), tick_timer_(io), phase_timer_(io), signals_(io, SIGUSR1, SIGTERM, SIGINT) {}

  void start() {
    start_ = Clock::now();
    progress_ = o_.progress || isatty(STDERR_FILENO);
    size_t first_index = 0;
    for (size_t i = 0; i < pool_.members.size(); ++i)
      if (pool_.members[i].id == o_.first) first_index = i;
    conns_.reserve(o_.conns);
    for (size_t i = 0; i < o_.conns; ++i) {
      const rt::Member& m = pool_.members[o_.spread ? (first_index + i) % pool_.members.size() : first_index];
      uint64_t seed = mix64(o_.seed * 0x100000001b3ull + i + 1);
      if (o_.plain) {
        tcp::endpoint ep;
        std::string why;
        if (!rt::parse_endpoint(m.data, ep, why)) return finish("member " + std::to_string(m.id) + ": " + why);
        conns_.push_back(std::make_unique<PlainConn>(io_, i, seed, ep, m.data));
      } else {
        conns_.push_back(std::make_unique<MtcpConn>(io_, pool_, i, seed, m.id));
      }
      conns_.back()->on_lost = [this, i](const std::string& why) { lost(i, why); };
    }
    arm_limit(o_.time_limit_s);
    wait_signal();
    tick();
    phase_ = Phase::opening;
    phase_start_ = Clock::now();
    launch_opens();
  }

  bool ok() const { return verdict_ == "ok"; }
  const Json& result() const { return result_; }

 private:
  enum class Phase { setup, opening, running, holding, proving, closing, done };
  static const char* phase_name(Phase p) {
    switch (p) {
      case Phase::setup: return "setting up";
      case Phase::opening: return "opening connections";
      case Phase::running: return "running";
      case Phase::holding: return "holding";
      case Phase::proving: return "checking every connection after the hold";
      case Phase::closing: return "closing";
      case Phase::done: return "done";
    }
    return "?";
  }

  // A connection failed while no operation was under way (while idle in the hold).
  void lost(size_t i, const std::string& why) {
    if (phase_ == Phase::done) return;
    note_error(why);
    ++lost_;
    (void)i;
    if (o_.mode != Mode::idle) finish(why);
  }

  void note_error(const std::string& why) {
    ++errors_;
    if (first_error_.empty()) first_error_ = why;
  }

  // ---- opening: at most o_.inflight connects (and their first round trip) at once
  void launch_opens() {
    while (phase_ == Phase::opening && next_open_ < conns_.size() && opening_ < o_.inflight) {
      size_t i = next_open_++;
      ++opening_;
      conns_[i]->open([this, i](bool ok, const std::string& why) {
        if (!ok) return open_done(i, false, why);
        conns_[i]->round_trip(o_.size, [this, i](bool ok2, const std::string& why2) { open_done(i, ok2, why2); });
      });
    }
  }
  void open_done(size_t i, bool ok, const std::string& why) {
    if (phase_ != Phase::opening) return;
    --opening_;
    if (ok) {
      ++opened_;
      open_ok_.push_back(i);
    } else {
      ++open_failed_;
      note_error(why);
      if (o_.mode != Mode::idle) return finish(why);
    }
    if (opened_ + open_failed_ == conns_.size()) {
      open_seconds_ = secs_since(phase_start_);
      // Close-to-simultaneous completions: the next phase starts outside this callback.
      asio::post(io_, [this] { opened_all(); });
      return;
    }
    launch_opens();
  }
  void opened_all() {
    if (phase_ != Phase::opening) return;
    if (o_.mode == Mode::idle) {
      if (opened_ == 0) return finish(first_error_);  // nothing to hold
      return hold();
    }
    phase_ = Phase::running;
    phase_start_ = Clock::now();
    if (o_.duration_s > 0) {
      phase_timer_.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.duration_s)));
      phase_timer_.async_wait([this](asio::error_code ec) {
        if (!ec) stop_ = true;
      });
    }
    active_ = conns_.size();
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (o_.mode == Mode::rr) rr_next(i);
      else mig_next(i);
    }
  }

  // ---- rr
  bool budget_left() {
    if (stop_) return false;
    if (o_.count > 0 && issued_ >= o_.count) return false;
    ++issued_;
    return true;
  }
  void rr_next(size_t i) {
    if (phase_ != Phase::running) return;
    if (!budget_left()) return conn_idle();
    auto t0 = Clock::now();
    conns_[i]->round_trip(o_.size, [this, i, t0](bool ok, const std::string& why) {
      if (phase_ != Phase::running) return;
      if (!ok) return finish(why);
      rtts_.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      rr_next(i);
    });
  }
  void conn_idle() {
    if (--active_ > 0) return;
    run_seconds_ = secs_since(phase_start_);
    phase_timer_.cancel();
    asio::post(io_, [this] { close_all(); });
  }

  // ---- migrate
  void mig_next(size_t i) {
    if (phase_ != Phase::running) return;
    if (!budget_left()) return conn_idle();
    if (!o_.rr_between) return mig_start(i);
    auto t0 = Clock::now();
    conns_[i]->round_trip(o_.size, [this, i, t0](bool ok, const std::string& why) {
      if (phase_ != Phase::running) return;
      if (!ok) return finish(why);
      rtts_.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      mig_start(i);
    });
  }
  void mig_start(size_t i) {
    conns_[i]->migrate([this, i](bool ok, const std::string& why, int64_t ns, bool refused) {
      if (phase_ != Phase::running) return;
      Conn& c = *conns_[i];
      if (c.failed()) return finish(c.error());
      if (ok) {
        mig_ns_.push_back(ns);
      } else if (refused) {
        // Nothing was sent (the engine is busy, for example recovering): ask again shortly.
        ++mig_refused_;
        if (mig_first_error_.empty()) mig_first_error_ = why;
        c.timer.expires_after(std::chrono::milliseconds(1));
        c.timer.async_wait([this, i](asio::error_code ec) {
          if (!ec) mig_start(i);
        });
        return;
      } else {
        ++mig_failed_;
        if (mig_first_error_.empty()) mig_first_error_ = "connection " + std::to_string(i) + ": " + why;
      }
      // The next step starts outside the engine's callback.
      asio::post(io_, [this, i] { mig_next(i); });
    });
  }

  // ---- idle: hold, then prove every connection again
  void hold() {
    phase_ = Phase::holding;
    held_ = 0;
    for (size_t i : open_ok_)
      if (!conns_[i]->failed()) ++held_;
    work_left_s_ = o_.time_limit_s - secs_since(start_);
    limit_timer_.cancel();  // the hold does not count against the time limit
    hold_start_ = Clock::now();
    client_rss_kb_hold_ = rss_kb_self();
    std::string line = "READY " + std::to_string(held_);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (!o_.hold_file.empty()) {
      std::string tmp = o_.hold_file + ".tmp";
      {
        std::ofstream f(tmp, std::ios::trunc);
        f << line << "\n";
        if (!f.flush()) note_error("cannot write " + tmp);
      }
      if (std::rename(tmp.c_str(), o_.hold_file.c_str()) != 0) note_error("cannot rename " + tmp + " to " + o_.hold_file + ": " + std::strerror(errno));
    }
    if (o_.hold_s > 0) {
      phase_timer_.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.hold_s)));
      phase_timer_.async_wait([this](asio::error_code ec) {
        if (!ec) end_hold("timer");
      });
    }
  }
  void end_hold(const std::string& by) {
    if (phase_ != Phase::holding) return;
    phase_timer_.cancel();
    hold_seconds_ = secs_since(hold_start_);
    hold_ended_by_ = by;
    arm_limit(std::max(work_left_s_, 0.001));
    phase_ = Phase::proving;
    phase_start_ = Clock::now();
    proving_ = 0;
    for (size_t i : open_ok_) {
      Conn& c = *conns_[i];
      if (c.failed()) continue;
      ++proving_;
      c.round_trip(o_.size, [this](bool ok, const std::string& why) {
        if (phase_ != Phase::proving) return;
        if (ok) ++alive_end_;
        else note_error(why);
        if (--proving_ == 0) {
          prove_seconds_ = secs_since(phase_start_);
          asio::post(io_, [this] { close_all(); });
        }
      });
    }
    if (proving_ == 0) asio::post(io_, [this] { close_all(); });
  }

  // ---- closing: every connection that is still up, cleanly
  void close_all() {
    if (phase_ == Phase::done || phase_ == Phase::closing) return;
    phase_ = Phase::closing;
    phase_start_ = Clock::now();
    closing_ = 0;
    for (auto& cp : conns_) {
      Conn& c = *cp;
      if (c.failed() || c.sent() == 0) continue;  // lost, or never opened
      ++closing_;
      c.close([this](bool ok, const std::string& why) {
        if (phase_ != Phase::closing) return;
        if (ok) ++closed_ok_;
        else {
          ++close_failed_;
          note_error(why);
        }
        if (--closing_ == 0) {
          close_seconds_ = secs_since(phase_start_);
          finish(first_error_);
        }
      });
    }
    if (closing_ == 0) finish(first_error_);
  }

  // ---- timers and signals
  void arm_limit(double s) {
    limit_timer_.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)));
    limit_timer_.async_wait([this](asio::error_code ec) {
      if (ec || phase_ == Phase::done) return;
      char t[64];
      std::snprintf(t, sizeof t, "%g", o_.time_limit_s);
      finish(std::string("time limit of ") + t + " s reached while " + phase_name(phase_) + " (" + status_line() + ")");
    });
  }
  void wait_signal() {
    signals_.async_wait([this](asio::error_code ec, int sig) {
      if (ec || phase_ == Phase::done) return;
      const char* name = sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : "SIGINT";
      if (phase_ == Phase::holding) end_hold(name);
      else if (sig != SIGUSR1) return finish(std::string("interrupted by ") + name + " while " + phase_name(phase_));
      wait_signal();
    });
  }
  std::string status_line() {
    char t[256];
    switch (phase_) {
      case Phase::opening:
        std::snprintf(t, sizeof t, "%zu/%zu open, %zu failed, %zu in flight", opened_, conns_.size(), open_failed_, opening_);
        break;
      case Phase::running:
        if (o_.mode == Mode::rr) std::snprintf(t, sizeof t, "%zu round trips", rtts_.size());
        else std::snprintf(t, sizeof t, "%zu migrations, %llu failed", mig_ns_.size(), static_cast<unsigned long long>(mig_failed_));
        break;
      case Phase::holding:
        std::snprintf(t, sizeof t, "%zu held, %zu lost", held_, lost_);
        break;
      case Phase::proving:
        std::snprintf(t, sizeof t, "%zu alive, %zu to go", alive_end_, proving_);
        break;
      case Phase::closing:
        std::snprintf(t, sizeof t, "%zu closed, %zu to go", closed_ok_, closing_);
        break;
      default:
        t[0] = 0;
    }
    return t;
  }
  void tick() {
    tick_timer_.expires_after(std::chrono::seconds(1));
    tick_timer_.async_wait([this](asio::error_code ec) {
      if (ec || phase_ == Phase::done) return;
      if (progress_) std::fprintf(stderr, "[%7.1f s] %s: %s\n", secs_since(start_), phase_name(phase_), status_line().c_str());
      tick();
    });
  }

  // ---- the end
  void finish(const std::string& error) {
    if (phase_ == Phase::done) return;
    Phase at = phase_;
    phase_ = Phase::done;
    if (at == Phase::running && run_seconds_ == 0) run_seconds_ = secs_since(phase_start_);
    if (at == Phase::opening && open_seconds_ == 0) open_seconds_ = secs_since(phase_start_);
    limit_timer_.cancel();
    tick_timer_.cancel();
    phase_timer_.cancel();
    signals_.cancel();
    for (auto& c : conns_) c->timer.cancel();
    std::string err = error;
    if (err.empty() && o_.mode == Mode::idle) {
      if (open_failed_ > 0 || alive_end_ < opened_ || close_failed_ > 0) err = first_error_.empty() ? "not every connection survived" : first_error_;
    }
    // A failed migration attempt leaves the connection where it was (the round trips between
    // migrations prove it still works): counted, not a failed run, unless none succeeded.
    if (err.empty() && o_.mode == Mode::migrate && mig_ns_.empty())
      err = "no migration succeeded" + (mig_first_error_.empty() ? std::string() : " (" + mig_first_error_ + ")");
    verdict_ = err.empty() ? "ok" : "failed";
    if (errors_ > 1 && !err.empty() && err == first_error_) err += " (and " + std::to_string(errors_ - 1) + " more errors)";
    build_result(err);
    // The loop ends after this handler. Whatever is still open (a failed run) is closed when
    // the connections are destroyed, before the io_context.
    io_.stop();
  }

  void build_result(const std::string& err) {
    Json r;
    r["mode"] = o_.mode_name;
    r["transport"] = o_.plain ? "tcp" : "mtcp";
    r["conns"] = o_.conns;
    r["size"] = o_.size;
    r["server_id"] = o_.first;
    r["spread"] = o_.spread;
    r["members"] = pool_.members.size();
    r["opened"] = opened_;
    r["open_failed"] = open_failed_;
    r["open_seconds"] = open_seconds_;
    r["closed"] = closed_ok_;
    r["close_failed"] = close_failed_;
    r["close_seconds"] = close_seconds_;
    r["errors"] = errors_;
    uint64_t dups = 0, recov = 0;
    for (auto& c : conns_) {
      dups += c->duplicates();
      recov += c->recoveries();
    }
    r["duplicate_bytes_dropped"] = dups;
    r["recoveries"] = recov;
    std::sort(rtts_.begin(), rtts_.end());
    auto lat = [&](Json& j, const std::string& prefix, const std::vector<int64_t>& v) {
      j[prefix + "p50_us"] = pct_us(v, 0.5);
      j[prefix + "p90_us"] = pct_us(v, 0.9);
      j[prefix + "p99_us"] = pct_us(v, 0.99);
      j[prefix + "p999_us"] = pct_us(v, 0.999);
      j[prefix + "mean_us"] = mean_us(v);
      j[prefix + "min_us"] = v.empty() ? 0.0 : static_cast<double>(v.front()) / 1000.0;
      j[prefix + "max_us"] = v.empty() ? 0.0 : static_cast<double>(v.back()) / 1000.0;
    };
    if (o_.mode == Mode::rr) {
      r["seconds"] = run_seconds_;
      r["count"] = rtts_.size();
      r["rate"] = run_seconds_ > 0 ? static_cast<double>(rtts_.size()) / run_seconds_ : 0.0;
      lat(r, "", rtts_);
    } else if (o_.mode == Mode::idle) {
      r["seconds"] = secs_since(start_);
      r["held"] = held_;
      r["hold_seconds"] = hold_seconds_;
      r["hold_ended_by"] = hold_ended_by_;
      r["lost_during_hold"] = lost_;
      r["alive_end"] = alive_end_;
      r["prove_seconds"] = prove_seconds_;
      r["client_rss_kb_hold"] = client_rss_kb_hold_;
    } else {
      std::sort(mig_ns_.begin(), mig_ns_.end());
      r["seconds"] = run_seconds_;
      r["migrations"] = mig_ns_.size();
      r["migrations_failed"] = mig_failed_;
      r["migrations_refused"] = mig_refused_;
      r["migrations_per_s"] = run_seconds_ > 0 ? static_cast<double>(mig_ns_.size()) / run_seconds_ : 0.0;
      r["migration_p50_us"] = pct_us(mig_ns_, 0.5);
      r["migration_p99_us"] = pct_us(mig_ns_, 0.99);
      r["migration_mean_us"] = mean_us(mig_ns_);
      r["migration_max_us"] = mig_ns_.empty() ? 0.0 : static_cast<double>(mig_ns_.back()) / 1000.0;
      r["migration_first_error"] = mig_first_error_;
      r["rr_between"] = o_.rr_between;
      r["count"] = rtts_.size();
      lat(r, "rr_", rtts_);
    }
    r["client_rss_kb_end"] = rss_kb_self();
    r["verdict"] = verdict_;
    r["error"] = err;
    result_ = std::move(r);
  }

  asio::io_context& io_;
  const rt::PoolConfig& pool_;
  Options o_;
  std::vector<std::unique_ptr<Conn>> conns_;
  asio::steady_timer limit_timer_, tick_timer_, phase_timer_;
  asio::signal_set signals_;
  Phase phase_ = Phase::setup;
  Clock::time_point start_, phase_start_, hold_start_;
  bool progress_ = false;
  bool stop_ = false;
  // opening
  size_t next_open_ = 0, opening_ = 0, opened_ = 0, open_failed_ = 0;
  std::vector<size_t> open_ok_;
  double open_seconds_ = 0;
  // running
  size_t active_ = 0;
  uint64_t issued_ = 0;
  double run_seconds_ = 0;
  std::vector<int64_t> rtts_, mig_ns_;
  uint64_t mig_failed_ = 0, mig_refused_ = 0;
  std::string mig_first_error_;
  // idle
  size_t held_ = 0, lost_ = 0, proving_ = 0, alive_end_ = 0;
  double work_left_s_ = 0, hold_seconds_ = 0, prove_seconds_ = 0;
  std::string hold_ended_by_;
  long client_rss_kb_hold_ = 0;
  // closing
  size_t closing_ = 0, closed_ok_ = 0, close_failed_ = 0;
  double close_seconds_ = 0;
  // outcome
  size_t errors_ = 0;
  std::string first_error_;
  std::string verdict_ = "failed";
  Json result_;
};

void print_summary(const Json& r) {
  std::string head = r["verdict"].get<std::string>() + " (" + r["transport"].get<std::string>() + ", " + r["mode"].get<std::string>() + ")";
  const std::string mode = r["mode"];
  if (mode == "rr") {
    std::printf("%s: %zu conns, %zu B, %zu round trips in %.3f s (%.0f/s)\n", head.c_str(), r["conns"].get<size_t>(),
                r["size"].get<size_t>(), r["count"].get<size_t>(), r["seconds"].get<double>(), r["rate"].get<double>());
    if (r["count"].get<size_t>() > 0)
      std::printf("round trip us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  mean %.1f  (min %.1f, max %.1f)\n", r["p50_us"].get<double>(),
                r["p90_us"].get<double>(), r["p99_us"].get<double>(), r["p999_us"].get<double>(), r["mean_us"].get<double>(),
                r["min_us"].get<double>(), r["max_us"].get<double>());
  } else if (mode == "idle") {
    std::printf("%s: %zu of %zu connections opened (%zu failed) in %.3f s; held %zu for %.3f s (ended by %s), %zu lost; alive at end %zu; closed %zu (%zu failed)\n",
                head.c_str(), r["opened"].get<size_t>(), r["conns"].get<size_t>(), r["open_failed"].get<size_t>(),
                r["open_seconds"].get<double>(), r["held"].get<size_t>(), r["hold_seconds"].get<double>(),
                r["hold_ended_by"].get<std::string>().empty() ? "-" : r["hold_ended_by"].get<std::string>().c_str(),
                r["lost_during_hold"].get<size_t>(), r["alive_end"].get<size_t>(), r["closed"].get<size_t>(), r["close_failed"].get<size_t>());
    if (r["recoveries"].get<unsigned long long>() > 0)
      std::printf("%llu recoveries (the client engine moved a connection by itself after losing its subflow)\n",
                  r["recoveries"].get<unsigned long long>());
    std::printf("client VmRSS: %ld kB while holding, %ld kB at the end\n", r["client_rss_kb_hold"].get<long>(), r["client_rss_kb_end"].get<long>());
  } else {
    std::printf("%s: %zu conns, %.3f s: %zu migrations (%.0f/s), %llu failed, %llu refused, %llu recoveries\n", head.c_str(),
                r["conns"].get<size_t>(), r["seconds"].get<double>(), r["migrations"].get<size_t>(), r["migrations_per_s"].get<double>(),
                r["migrations_failed"].get<unsigned long long>(), r["migrations_refused"].get<unsigned long long>(),
                r["recoveries"].get<unsigned long long>());
    std::printf("migration us: p50 %.1f  p99 %.1f  mean %.1f  max %.1f; %zu round trips between (p50 %.1f us)\n", r["migration_p50_us"].get<double>(),
                r["migration_p99_us"].get<double>(), r["migration_mean_us"].get<double>(), r["migration_max_us"].get<double>(),
                r["count"].get<size_t>(), r["rr_p50_us"].get<double>());
    if (!r["migration_first_error"].get<std::string>().empty())
      std::printf("first migration error: %s\n", r["migration_first_error"].get<std::string>().c_str());
  }
  if (!r["error"].get<std::string>().empty()) std::printf("error: %s\n", r["error"].get<std::string>().c_str());
}

// Raises the soft RLIMIT_NOFILE to the hard limit; false (why) if `need` descriptors do not fit.
bool raise_nofile(size_t need, std::string& why) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    why = std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
    return false;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
    why = "need about " + std::to_string(need) + " file descriptors, but RLIMIT_NOFILE allows " + std::to_string(rl.rlim_cur) +
          " (hard limit " + (rl.rlim_max == RLIM_INFINITY ? std::string("unlimited") : std::to_string(rl.rlim_max)) +
          "): use fewer --conns or raise the hard limit (ulimit -Hn, as root)";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{
      "mtcp-loadgen: many-connection load client against the echo service of an M-TCP pool (or plain TCP with --plain).\n"
      "Every reply byte is verified. Modes:\n"
      "  rr       request/response latency: each connection sends --size bytes, waits for their echo, again;\n"
      "           -n round trips in all (default 10000) or -d seconds; p50/p90/p99/p99.9/mean in us\n"
      "  idle     opens --conns connections (one round trip each), prints 'READY <n>', holds them --hold s\n"
      "           (or until SIGUSR1/SIGTERM), checks every one with another round trip, closes them\n"
      "  migrate  (M-TCP) each connection migrates back to back, round robin over the members, with a\n"
      "           round trip between (--no-rr-between: none); -d seconds (default 5) or -n attempts in all; a failed\n"
      "           attempt is counted, not a failure of the run, unless none succeeds\n"
      "Output: a summary, or with -J one JSON object on the last line of stdout.\n"
      "Exit status: 0 verified, 1 failed (mismatch, lost connection, time limit), 2 bad usage."};
  Options o;
  cli.add_option("--mode", o.mode_name, "rr, idle or migrate")->check(CLI::IsMember({"rr", "idle", "migrate"}))->capture_default_str();
  cli.add_option("--pool", o.pool_path, "Pool configuration file (JSON), the same as the members'")->required();
  cli.add_option("--server-id", o.first, "Member to connect to (default: the first in the pool file); with --spread, the first of the round robin");
  cli.add_flag("--spread", o.spread, "Spread the connections round robin over the members, starting at --server-id");
  cli.add_flag("--plain", o.plain, "Plain TCP to the members' data ports: the baseline (rr and idle)");
  cli.add_option("-c,--conns", o.conns, "Connections, all open at once")->check(CLI::Range(size_t{1}, size_t{1000000}))->capture_default_str();
  cli.add_option("-s,--size", o.size, "Bytes per request (each echoed back)")->check(CLI::Range(size_t{1}, size_t{1} << 20))->capture_default_str();
  auto* n_opt = cli.add_option("-n,--count", o.count, "rr: round trips in all (default 10000); migrate: migration attempts in all");
  auto* d_opt = cli.add_option("-d,--duration", o.duration_s, "rr, migrate: run this many seconds instead of a count (migrate default 5)")->check(CLI::PositiveNumber);
  n_opt->excludes(d_opt);
  cli.add_option("--hold", o.hold_s, "idle: hold the connections this many seconds (0: until SIGUSR1, SIGTERM or SIGINT)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cli.add_option("--hold-file", o.hold_file, "idle: also write 'READY <n>' to this file (atomically) when holding");
  cli.add_option("--inflight", o.inflight, "Connections being opened at once")->check(CLI::Range(size_t{1}, size_t{100000}))->capture_default_str();
  cli.add_flag("--rr-between,!--no-rr-between", o.rr_between, "migrate: a verified round trip between two migrations (default on)");
  cli.add_flag("--progress", o.progress, "A progress line on stderr every second (default: only when stderr is a terminal)");
  cli.add_option("-t,--time-limit", o.time_limit_s, "Give up (exit 1) after this many seconds; the idle hold does not count")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cli.add_option("--seed", o.seed, "Seed of the generated request streams")->capture_default_str();
  cli.add_flag("-J,--json", o.json, "Print one JSON object (one line) instead of the summary");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? 0 : 2;  // --help is 0; any usage error is 2
  }
  o.mode = o.mode_name == "rr" ? Mode::rr : o.mode_name == "idle" ? Mode::idle : Mode::migrate;
  if (o.plain && o.mode == Mode::migrate) {
    std::fprintf(stderr, "mtcp-loadgen: --mode migrate needs M-TCP (not --plain)\n");
    return 2;
  }
  if (o.mode == Mode::idle && (*n_opt || *d_opt)) {
    std::fprintf(stderr, "mtcp-loadgen: -n and -d do not apply to --mode idle (see --hold)\n");
    return 2;
  }
  if (o.mode != Mode::idle && (cli.count("--hold") || cli.count("--hold-file"))) {
    std::fprintf(stderr, "mtcp-loadgen: --hold and --hold-file apply to --mode idle only\n");
    return 2;
  }
  if (o.mode == Mode::rr && o.count == 0 && o.duration_s == 0) o.count = 10000;
  if (o.mode == Mode::migrate && o.count == 0 && o.duration_s == 0) o.duration_s = 5;
  rt::PoolConfig pool;
  std::string why;
  if (!rt::load_pool_config(o.pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-loadgen: %s\n", why.c_str());
    return 2;
  }
  if (o.first == 0) o.first = pool.members.front().id;
  if (!pool.find(o.first)) {
    std::fprintf(stderr, "mtcp-loadgen: --server-id %u is not a member of %s\n", o.first, o.pool_path.c_str());
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  // One descriptor per connection, two while one migrates; a few for the process itself.
  size_t need = o.conns * (o.mode == Mode::migrate ? 2 : 1) + 64;
  if (!raise_nofile(need, why)) {
    std::string msg = std::to_string(o.conns) + " connections " + why;
    std::fprintf(stderr, "mtcp-loadgen: %s\n", msg.c_str());
    if (o.json)
      std::cout << Json{{"mode", o.mode_name}, {"transport", o.plain ? "tcp" : "mtcp"}, {"conns", o.conns}, {"size", o.size}, {"verdict", "failed"}, {"error", msg}}.dump()
                << std::endl;
    return 1;
  }

  asio::io_context io(1);  // one thread: posted handlers skip waking the reactor (docs/profiling.md)
  auto bench = std::make_unique<Bench>(io, pool, o);
  bench->start();
  io.run();
  Json result = bench->result();
  bool ok = bench->ok();
  if (o.json) std::cout << result.dump() << std::endl;
  else print_summary(result);
  std::fflush(stdout);
  bench.reset();  // connections close their sockets before the io_context goes
  return ok ? 0 : 1;
}
