// The sans-IO engines in memory (mtcp/src/core) through the MemNet driver (mem_net.h):
//  - bulk transfer client -> server (and echo back) in steady state: the client's send log is
//    trimmed by the server's ACKs, the server's input log by the application's snapshots;
//  - recording an application snapshot (ServerEngine::conn_snapshot);
//  - a whole lazy migration carrying a snapshot: the old owner exports and encodes the state,
//    the new one authenticates, decodes and installs it, and the application imports it.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include "bench_util.h"
#include "mem_net.h"

namespace mtcp::bench {
namespace {

// Connects the client to server 1 and returns the connection id (0 on failure).
ConnId connect(MemNet& net) {
  net.client().connect(1, net.now);
  if (!net.settle()) return 0;
  for (const auto& [s, e] : net.server_events) {
    if (s == 1 && e.kind == ServerEvent::Kind::opened) return e.conn;
  }
  return 0;
}

Bytes position_snapshot(uint64_t pos) {
  Bytes b(8);
  for (size_t i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(pos >> (56 - 8 * i));
  return b;
}

// ---- bulk transfer ------------------------------------------------------------------------

constexpr uint64_t kBulkBytesPerIter = 16u << 20;  // twice the send log and input log caps
constexpr uint64_t kSnapshotEvery = 1u << 20;  // the server app snapshots after this much input

// The two applications of a bulk run. The client writes the same immutable block again and
// again (write() takes a slice of it: no copy); stream byte x is pattern_byte(x % block).
// The server app (BulkServer, an sdk::ConnApp driven by the server's host::EngineHost) reads
// slices of its input log and, with echo, writes those very slices back (as the echo service
// does); it snapshots 8 bytes every kSnapshotEvery bytes at a consistent point. The client
// reads the echo as slices.

// Stream byte x is (*block)[x % block size].
bool matches(const Bytes& block, const std::vector<Slice>& v, uint64_t at) {
  const size_t b = block.size();
  for (const auto& s : v) {
    for (size_t i = 0; i < s.len;) {
      size_t off = static_cast<size_t>(at % b);
      size_t k = std::min(s.len - i, b - off);
      if (std::memcmp(s.data() + i, block.data() + off, k) != 0) return false;
      i += k;
      at += k;
    }
  }
  return true;
}

// What the server app of a bulk run did (kept by the Bulk, outliving the app instance).
struct BulkServerState {
  BlockPtr block;
  bool echo = false;
  bool check = false;  // verify every byte read
  const char* error = nullptr;
  uint64_t consumed = 0, last_snap = 0, snapshots = 0;
};

class BulkServer final : public sdk::ConnApp {
 public:
  explicit BulkServer(BulkServerState& st) : st_(st) {}
  bool on_open(sdk::Conn&, const sdk::Import&, std::string&) override { return true; }
  void on_readable(sdk::Conn& c) override { serve(c); }
  void on_writable(sdk::Conn& c) override { serve(c); }

 private:
  // Write back what is pending (echo), read, write back, and snapshot at a consistent point
  // (nothing pending) every kSnapshotEvery bytes.
  void serve(sdk::Conn& c) {
    if (st_.error != nullptr) return;
    if (!drain_pending(c)) return fail("server write refused");
    got_.clear();
    size_t room = st_.echo ? std::max<size_t>(c.write_space(), 64u << 10) : SIZE_MAX;
    if (size_t n = c.read_slices(room, got_); n > 0) {
      if (st_.check && !matches(*st_.block, got_, st_.consumed)) return fail("server app read wrong bytes");
      st_.consumed += n;
      if (st_.echo) pending_.insert(pending_.end(), got_.begin(), got_.end());
    }
    if (!drain_pending(c)) return fail("server write refused");
    if (pending_.empty() && st_.consumed >= st_.last_snap + kSnapshotEvery) {
      if (!c.snapshot(position_snapshot(st_.consumed))) return fail("snapshot refused");
      st_.last_snap = st_.consumed;
      ++st_.snapshots;
    }
  }
  void fail(const char* why) { st_.error = why; }
  // Echo: write pending slices back as far as the send log takes them.
  bool drain_pending(sdk::Conn& c) {
    while (!pending_.empty()) {
      auto w = c.write(pending_.front());
      if (!w) return false;
      if (*w == 0) return true;
      if (*w < pending_.front().len) {
        pending_.front() = pending_.front().sub(*w, pending_.front().len - *w);
        return true;
      }
      pending_.pop_front();
    }
    return true;
  }
  BulkServerState& st_;
  std::deque<Slice> pending_;
  std::vector<Slice> got_;
};

class BulkServerFactory final : public sdk::AppFactory {
 public:
  explicit BulkServerFactory(BulkServerState& st) : st_(st) {}
  std::unique_ptr<sdk::ConnApp> make(ConnId) override { return std::make_unique<BulkServer>(st_); }
  bool verify_replay() const override { return false; }

 private:
  BulkServerState& st_;
};

class Bulk {
 public:
  Bulk(size_t block, bool echo, bool copy_reads)
      : state_{make_block(pattern_bytes(block)), echo}, factory_(state_), net_(1, Limits{}, copy_reads, &factory_),
        block_(state_.block), echo_(echo) {
    conn_ = connect(net_);
  }
  bool connected() const { return conn_ != 0; }

  // Runs until `bytes` more bytes have arrived at their destination (the server app, or with
  // echo the client app). check: verify every byte and record the log peaks. Returns an
  // error text or nullptr.
  const char* run(uint64_t bytes, bool check) {
    const uint64_t goal = done() + bytes;
    const uint64_t write_goal = written_ + bytes;
    ClientEngine& cli = net_.client();
    state_.check = check;
    while (done() < goal) {
      bool moved = false;
      // Client application: write whole blocks while they fit.
      while (written_ < write_goal && cli.write_space() >= block_->size()) {
        if (!cli.write(Slice(block_))) return "client write refused";
        written_ += block_->size();
        moved = true;
      }
      // Client application reads the echo.
      if (echo_) {
        cgot_.clear();
        cli.read_slices(SIZE_MAX, cgot_);
        size_t n = 0;
        for (const auto& s : cgot_) n += s.len;
        if (n > 0) {
          moved = true;
          if (check && !matches(*block_, cgot_, received_)) return "client app read wrong echo bytes";
          received_ += n;
        }
      }
      // The server app runs inside the round (its host).
      moved |= net_.round();
      if (state_.error != nullptr) return state_.error;
      if (check) record_peaks();  // after delivery, before the applications catch up
      if (!moved) return "stalled";
    }
    return nullptr;
  }

  // After a run: every byte acknowledged, nothing left over in the engines' logs beyond what
  // the last snapshot interval holds.
  const char* check_drained() {
    if (!net_.settle()) return "did not settle";
    // A one-way run's last ACK is delayed (Limits::ack_delay_ms, docs/PROTOCOL.md §4): let
    // that much time pass so it goes out.
    net_.now += Limits{}.ack_delay_ms;
    net_.fire_timers();
    if (!net_.settle()) return "did not settle";
    if (state_.error != nullptr) return state_.error;
    if (net_.client().send_log().size() != 0) return "client send log not trimmed";
    if (net_.client().readable() != 0) return "client receive queue not empty";
    if (in_log_bytes() >= kSnapshotEvery) return "server input log not trimmed";
    auto info = net_.server(1).conn_info(conn_);
    if (!info || info->out_acked != info->out_end) return "server send log not trimmed";
    return nullptr;
  }

  uint64_t snapshots() const { return state_.snapshots; }
  size_t peak_client_send_log() const { return peak_send_; }
  size_t peak_server_in_log() const { return peak_in_; }
  size_t peak_server_out_log() const { return peak_out_; }

 private:
  uint64_t done() const { return echo_ ? received_ : state_.consumed; }
  size_t in_log_bytes() {
    auto info = net_.server(1).conn_info(conn_);
    auto view = net_.server(1).conn_snapshot_view(conn_);
    return info && view ? static_cast<size_t>(info->in_end - view->in_seq) : SIZE_MAX;
  }
  void record_peaks() {
    peak_send_ = std::max(peak_send_, net_.client().send_log().size());
    peak_in_ = std::max(peak_in_, in_log_bytes());
    if (auto info = net_.server(1).conn_info(conn_))
      peak_out_ = std::max(peak_out_, static_cast<size_t>(info->out_end - info->out_acked));
  }

  BulkServerState state_;
  BulkServerFactory factory_;
  MemNet net_;
  BlockPtr block_;
  bool echo_;
  ConnId conn_ = 0;
  uint64_t written_ = 0, received_ = 0;
  std::vector<Slice> cgot_;
  size_t peak_send_ = 0, peak_in_ = 0, peak_out_ = 0;
};

// Args: block (bytes per client write), echo (0: one way, 1: the server writes every byte
// back), copy (0: slices handed over as they are, 1: each poll_transmit output copied into one
// fresh block first, like a socket). Bytes/s counts payload delivered to the final reader.
void BM_EngineBulk(benchmark::State& state) {
  const auto block = static_cast<size_t>(state.range(0));
  const bool echo = state.range(1) != 0;
  const bool copy = state.range(2) != 0;
  Bulk bulk(block, echo, copy);
  if (!bulk.connected()) {
    state.SkipWithError("connect failed");
    return;
  }
  // Correctness and steady state once: twice the size of the logs, every byte checked.
  if (const char* err = bulk.run(kBulkBytesPerIter, true)) {
    state.SkipWithError(err);
    return;
  }
  if (const char* err = bulk.check_drained()) {
    state.SkipWithError(err);
    return;
  }
  const uint64_t snaps_before = bulk.snapshots();
  for (auto _ : state) {
    if (const char* err = bulk.run(kBulkBytesPerIter, false)) {
      state.SkipWithError(err);
      break;
    }
  }
  if (!state.error_occurred()) {
    if (const char* err = bulk.check_drained()) state.SkipWithError(err);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kBulkBytesPerIter));
  state.counters["snapshots_per_iter"] = benchmark::Counter(
      static_cast<double>(bulk.snapshots() - snaps_before), benchmark::Counter::kAvgIterations);
  state.counters["peak_cli_sendlog_MiB"] = static_cast<double>(bulk.peak_client_send_log()) / kMiB;
  state.counters["peak_srv_inlog_MiB"] = static_cast<double>(bulk.peak_server_in_log()) / kMiB;
  if (echo) state.counters["peak_srv_outlog_MiB"] = static_cast<double>(bulk.peak_server_out_log()) / kMiB;
}
BENCHMARK(BM_EngineBulk)
    ->ArgNames({"block", "echo", "copy"})
    ->ArgsProduct({{16 * kKiB, 256 * kKiB}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMillisecond);

// ---- snapshots and migration --------------------------------------------------------------

void snapshot_sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {int64_t{0}, kKiB, 16 * kKiB, kMiB, 16 * kMiB}) b->Arg(n);  // 16 MiB = the cap
}

// ServerEngine::conn_snapshot with an N-byte snapshot. The call takes the bytes by value, so
// an application that keeps its state elsewhere pays one copy per snapshot: included here.
void BM_ServerSnapshot(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  MemNet net(1, Limits{});
  ConnId conn = connect(net);
  const Bytes app_state = pattern_bytes(n, 5);
  ServerEngine& srv = net.server(1);
  if (conn == 0 || !srv.conn_snapshot(conn, app_state)) {
    state.SkipWithError("connect or first snapshot failed");
    return;
  }
  auto view = srv.conn_snapshot_view(conn);
  if (!view || view->snap_id != 1 || !std::ranges::equal(view->bytes, app_state)) {
    state.SkipWithError("snapshot view differs from the snapshot");
    return;
  }
  for (auto _ : state) {
    if (!srv.conn_snapshot(conn, app_state)) {
      state.SkipWithError("snapshot refused inside the timed loop");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
}
BENCHMARK(BM_ServerSnapshot)->Apply(snapshot_sizes);

// One lazy migration per iteration, alternating between servers 1 and 2, with an N-byte
// snapshot: HELLO/CHALLENGE/MIGRATE (proof verified), CLAIM, the owner freezes and answers
// GRANT with the encoded state (HMAC over it), the new owner installs it and ACCEPTs, RELEASE;
// the application imports conn_snapshot_view. Time moves 1 ms per migration (the MIGRATE
// token bucket refills with time).
void BM_EngineMigrate(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  MemNet net(2, Limits{});
  ConnId conn = connect(net);
  const Bytes app_state = pattern_bytes(n, 7);
  if (conn == 0 || !net.server(1).conn_snapshot(conn, app_state)) {
    state.SkipWithError("connect or snapshot failed");
    return;
  }
  ServerId owner = 1;
  // One migration; checks its outcome (full: also the imported snapshot's bytes).
  auto migrate = [&](bool full) -> const char* {
    ServerId target = owner == 1 ? 2 : 1;
    net.now += 1;
    net.fire_timers();
    net.client_events.clear();
    net.server_events.clear();
    if (!net.client().migrate(target, net.now)) return "migrate refused";
    if (!net.settle()) return "did not settle";
    if (net.client().server() != target || net.client().migrating()) return "client did not move";
    bool imported = false;
    for (const auto& [s, e] : net.server_events) imported |= s == target && e.kind == ServerEvent::Kind::imported;
    if (!imported) return "no imported event";
    // The application's import.
    auto view = net.server(target).conn_snapshot_view(conn);
    if (!view || view->snap_id != 1 || view->bytes.size() != n) return "bad snapshot view";
    benchmark::DoNotOptimize(view->bytes.data());
    if (full && !std::ranges::equal(view->bytes, app_state)) return "imported snapshot differs";
    if (full && net.server(owner).conn_info(conn)) return "old owner kept the connection after RELEASE";
    owner = target;
    return nullptr;
  };
  for (int i = 0; i < 2; ++i) {
    if (const char* err = migrate(true)) {
      state.SkipWithError(err);
      return;
    }
  }
  for (auto _ : state) {
    if (const char* err = migrate(false)) {
      state.SkipWithError(err);
      break;
    }
  }
  if (!state.error_occurred() && net.pipe_count() != 1) state.SkipWithError("subflows leaked");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
  state.counters["migrations_done"] = static_cast<double>(net.client().counters().migrations_done);
}
BENCHMARK(BM_EngineMigrate)->Apply(snapshot_sizes)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mtcp::bench
