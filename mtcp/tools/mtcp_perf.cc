// mtcp-perf: iperf-style load and correctness tool for M-TCP.
//   mtcp-perf -s --pool pool.json --id N          run pool member N serving the reference app
//   mtcp-perf -c --pool pool.json [-n BYTES] [--migrate-every MS] [--json]
// The client sends a deterministic input stream; the reference application answers with
// output that is a function of every input byte. The client checks every output byte against
// its own model (so a lost, duplicated or altered byte in either direction shows), hashes both
// directions with SHA-256, migrates on a schedule and reports each migration.
// Exit status: 0 verified, 1 transfer failed or mismatched, 2 bad usage or configuration.
#include <openssl/evp.h>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/client_conn.h"
#include "runtime/server_node.h"
#include "sim/ref_app.h"

namespace {

using namespace mtcp;
using Clock = std::chrono::steady_clock;

// ---- server -------------------------------------------------------------------------------

class PerfApp final : public rt::ServerApp {
 public:
  explicit PerfApp(sim::AppParams p) : params_(p) {}
  void on_event(core::ServerEngine& engine, const core::ServerEvent& ev) override {
    using K = core::ServerEvent::Kind;
    switch (ev.kind) {
      case K::opened:
      case K::imported: {
        auto app = std::make_unique<sim::ServerApp>(params_, ev.conn, [this, c = ev.conn](const std::string& why) {
          ++errors_;
          std::fprintf(stderr, "mtcp-perf: connection %llu: %s\n", static_cast<unsigned long long>(c), why.c_str());
        });
        app->import(engine);
        apps_[ev.conn] = std::move(app);
        std::fprintf(stderr, "mtcp-perf: connection %llu %s\n", static_cast<unsigned long long>(ev.conn),
                     ev.kind == K::opened ? "opened" : "migrated in");
        break;
      }
      case K::resumed:
        break;
      case K::fenced:
      case K::closed:
        apps_.erase(ev.conn);
        break;
    }
  }
  bool step(core::ServerEngine& engine) override {
    bool moved = false;
    for (auto& [c, app] : apps_) moved |= app->step(engine);
    return moved;
  }
  // Plain TCP compatibility: a client that never sent the M-TCP preface gets an ordinary TCP
  // echo service (no migration). What it sent before it was recognised comes back first.
  void on_plain(asio::ip::tcp::socket sock, Bytes head) override {
    auto s = std::make_shared<PlainEcho>(std::move(sock));
    s->pending = std::move(head);
    std::fprintf(stderr, "mtcp-perf: plain TCP client served as echo\n");
    echo_write(s);
  }

 private:
  struct PlainEcho {
    explicit PlainEcho(asio::ip::tcp::socket so) : sock(std::move(so)) {}
    asio::ip::tcp::socket sock;
    Bytes pending;
    std::array<uint8_t, 64u << 10> buf{};
  };
  static void echo_read(std::shared_ptr<PlainEcho> s) {
    s->sock.async_read_some(asio::buffer(s->buf), [s](asio::error_code ec, size_t n) {
      if (ec) return;  // peer closed: the socket closes with the last reference
      s->pending.assign(s->buf.begin(), s->buf.begin() + static_cast<std::ptrdiff_t>(n));
      echo_write(s);
    });
  }
  static void echo_write(std::shared_ptr<PlainEcho> s) {
    if (s->pending.empty()) return echo_read(s);
    asio::async_write(s->sock, asio::buffer(s->pending), [s](asio::error_code ec, size_t) {
      if (ec) return;
      s->pending.clear();
      echo_read(s);
    });
  }

  sim::AppParams params_;
  std::map<core::ConnId, std::unique_ptr<sim::ServerApp>> apps_;
  uint64_t errors_ = 0;
};

int run_server(const rt::PoolConfig& pool, core::ServerId id, const sim::AppParams& params) {
  asio::io_context io;
  PerfApp app(params);
  rt::ServerNode node(io, pool, id, app);
  std::string why;
  if (!node.start(why)) {
    std::fprintf(stderr, "mtcp-perf: server %u: %s\n", id, why.c_str());
    return 2;
  }
  std::fprintf(stderr, "mtcp-perf: member %u listening on %s (control %s)\n", id, pool.find(id)->data.c_str(),
               pool.find(id)->control.c_str());
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](asio::error_code, int) {
    node.stop();
    io.stop();
  });
  io.run();
  return 0;
}

// ---- client -------------------------------------------------------------------------------

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

struct MigrationRecord {
  double t_s = 0;
  core::ServerId from = 0, to = 0;
  uint64_t rcv_at = 0, snd_at = 0;
  int64_t downtime_us = 0;
  std::string error;
};

class PerfClient {
 public:
  PerfClient(asio::io_context& io, const rt::PoolConfig& pool, const sim::AppParams& params, uint64_t bytes,
             uint64_t migrate_every_ms, double time_limit_s, bool quiet)
      : io_(io), pool_(pool), conn_(io, pool), model_(params), params_(params), total_(bytes),
        migrate_every_ms_(migrate_every_ms), time_limit_s_(time_limit_s), quiet_(quiet), migrate_timer_(io),
        limit_timer_(io) {
    expected_out_ = model_.total_for(bytes);
  }

  void start(core::ServerId first) {
    start_ = Clock::now();
    conn_.on_change = [this](std::vector<core::ClientEvent>& evs) { on_change(evs); };
    conn_.connect(first);
    limit_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(time_limit_s_ * 1000)));
    limit_timer_.async_wait([this](asio::error_code ec) {
      if (!ec) finish("timeout", "transfer not finished within the time limit");
    });
  }

  nlohmann::json result() const { return result_; }
  bool ok() const { return verdict_ == "ok"; }

 private:
  void schedule_migration() {
    if (migrate_every_ms_ == 0) return;
    migrate_timer_.expires_after(std::chrono::milliseconds(migrate_every_ms_));
    migrate_timer_.async_wait([this](asio::error_code ec) {
      if (ec || done_) return;
      auto& e = conn_.engine();
      if (e.state() == core::ClientState::established && !e.migrating() && e.primary()) {
        const auto& pool = e.pool();
        auto it = std::find(pool.begin(), pool.end(), e.server());
        core::ServerId target = (it == pool.end() || ++it == pool.end()) ? pool.front() : *it;
        migrate_started_ = Clock::now();
        if (e.migrate(target, rt::now_ms())) {
          scheduled_pending_ = true;
          conn_.service();
        }
      }
      schedule_migration();
    });
  }

  void on_change(std::vector<core::ClientEvent>& events) {
    if (done_) return;
    auto& e = conn_.engine();
    for (const auto& ev : events) {
      using K = core::ClientEvent::Kind;
      if (ev.kind == K::connected) {
        if (!quiet_) std::printf("connected to member %u, connection %llu\n", ev.to, static_cast<unsigned long long>(e.conn_id()));
        schedule_migration();
      } else if (ev.kind == K::migrated || ev.kind == K::migration_failed) {
        MigrationRecord r;
        r.t_s = seconds();
        r.from = ev.from;
        r.to = ev.to;
        r.rcv_at = ev.rcv_at;
        r.snd_at = ev.snd_at;
        // Scheduled migrations are timed here, to the microsecond; recoveries the engine
        // started by itself (after a lost subflow) from the engine's own millisecond stamps.
        if (scheduled_pending_) {
          r.downtime_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - migrate_started_).count();
          scheduled_pending_ = false;
        } else {
          r.downtime_us = static_cast<int64_t>(ev.done_ms - ev.started_ms) * 1000;
        }
        if (ev.kind == K::migration_failed) r.error = std::string(to_string(ev.error));
        if (!quiet_) {
          if (r.error.empty())
            std::printf("[%7.3f s] migrated %u -> %u in %lld us (output at %llu, input at %llu)\n", r.t_s, r.from, r.to,
                        static_cast<long long>(r.downtime_us), static_cast<unsigned long long>(r.rcv_at),
                        static_cast<unsigned long long>(r.snd_at));
          else
            std::printf("[%7.3f s] migration %u -> %u failed: %s\n", r.t_s, r.from, r.to, r.error.c_str());
        }
        migrations_.push_back(r);
      } else if (ev.kind == K::failed) {
        std::string why = "connection failed: " + std::string(to_string(ev.error));
        if (ev.last_attempt != Error::ok) why += " (last attempt: " + std::string(to_string(ev.last_attempt)) + ")";
        return finish("failed", why);
      }
    }
    if (e.state() != core::ClientState::established) return;
    // Write the input stream in blocks handed to the engine (no copy inside M-TCP).
    while (written_ < total_ && e.write_space() > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>({total_ - written_, e.write_space(), 64u << 10}));
      Bytes b(n);
      for (size_t i = 0; i < n; ++i) b[i] = sim::input_byte(params_.stream_seed, written_ + i);
      sent_sha_.update(b);
      if (!e.write(Slice(make_block(std::move(b))))) break;
      written_ += n;
    }
    std::vector<Slice> got;
    e.read_slices(SIZE_MAX, got);
    for (const auto& s : got) {
      std::string why;
      if (!model_.check(s.span(), written_, why)) return finish("mismatch", why);
      recv_sha_.update(s.span());
    }
    if (written_ == total_ && model_.received() == expected_out_ && e.send_log().base() == total_)
      finish("ok", "");
  }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  void finish(const std::string& verdict, const std::string& error) {
    if (done_) return;
    done_ = true;
    verdict_ = verdict;
    double secs = seconds();
    auto& e = conn_.engine();
    uint64_t done_m = 0, failed_m = 0;
    nlohmann::json ms = nlohmann::json::array();
    std::vector<int64_t> downs;
    for (const auto& m : migrations_) {
      nlohmann::json j = {{"t_s", m.t_s}, {"from", m.from}, {"to", m.to}, {"output_at", m.rcv_at}, {"input_at", m.snd_at},
                          {"downtime_us", m.downtime_us}};
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
    int64_t median = downs.empty() ? 0 : downs[downs.size() / 2];
    result_ = {{"start", {{"bytes", total_}, {"migrate_every_ms", migrate_every_ms_}, {"seed", params_.stream_seed}}},
               {"end",
                {{"seconds", secs},
                 {"bytes_sent", written_},
                 {"bytes_received", model_.received()},
                 {"bytes_expected", expected_out_},
                 {"sent_mbit_s", secs > 0 ? static_cast<double>(written_) * 8 / secs / 1e6 : 0},
                 {"received_mbit_s", secs > 0 ? static_cast<double>(model_.received()) * 8 / secs / 1e6 : 0},
                 {"sha256_sent", sent_sha_.hex()},
                 {"sha256_received", recv_sha_.hex()},
                 {"migrations_done", done_m},
                 {"migrations_failed", failed_m},
                 {"downtime_us_median", median},
                 {"duplicate_bytes_dropped", e.counters().duplicate_bytes_dropped},
                 {"verdict", verdict_},
                 {"error", error}}},
               {"migrations", ms}};
    migrate_timer_.cancel();
    limit_timer_.cancel();
    conn_.close_all();
    io_.stop();
  }

  asio::io_context& io_;
  rt::PoolConfig pool_;
  rt::ClientConn conn_;
  sim::OutputModel model_;
  sim::AppParams params_;
  uint64_t total_;
  uint64_t expected_out_ = 0;
  uint64_t written_ = 0;
  uint64_t migrate_every_ms_;
  double time_limit_s_;
  bool quiet_;
  asio::steady_timer migrate_timer_;
  asio::steady_timer limit_timer_;
  Clock::time_point start_;
  Clock::time_point migrate_started_;
  Sha256 sent_sha_, recv_sha_;
  std::vector<MigrationRecord> migrations_;
  bool done_ = false;
  bool scheduled_pending_ = false;
  std::string verdict_ = "unfinished";
  nlohmann::json result_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mtcp-perf: measure and verify M-TCP transfers across migrations"};
  bool server = false, client = false, json = false;
  std::string pool_path;
  uint32_t id = 0;
  uint32_t first = 0;
  uint64_t bytes = 16u << 20;
  uint64_t migrate_every_ms = 0;
  double time_limit_s = 120;
  sim::AppParams params;
  params.response_max = 128;
  params.snapshot_every = 256u << 10;
  app.add_flag("-s,--server", server, "Run a pool member");
  app.add_flag("-c,--client", client, "Run a client");
  app.add_option("--pool", pool_path, "Pool configuration file (JSON)")->required();
  app.add_option("--id", id, "Member id to run (with -s)");
  app.add_option("--server-id", first, "Member to connect to first (with -c; default: the first member)");
  app.add_option("-n,--bytes", bytes, "Client input bytes to send (the reply is about 1.2x that with the default --response-max)");
  app.add_option("--migrate-every", migrate_every_ms, "Migrate to the next member every this many ms (0: never)");
  app.add_option("-t,--time-limit", time_limit_s, "Give up after this many seconds");
  app.add_option("--response-max", params.response_max, "Reference app: generated bytes per 64-byte record (hash mod this)");
  app.add_option("--snapshot-every", params.snapshot_every, "Reference app: snapshot after this many input bytes");
  app.add_option("--state-bytes", params.pad_bytes, "Reference app: extra snapshot bytes (state size)");
  app.add_option("--seed", params.stream_seed, "Input stream seed (must match between client and servers)");
  app.add_flag("-J,--json", json, "Print the result as JSON");
  CLI11_PARSE(app, argc, argv);
  if (server == client) {
    std::fprintf(stderr, "mtcp-perf: give exactly one of -s or -c (see --help)\n");
    return 2;
  }
  rt::PoolConfig pool;
  std::string why;
  if (!rt::load_pool_config(pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-perf: %s\n", why.c_str());
    return 2;
  }
  if (server) {
    if (!pool.find(id)) {
      std::fprintf(stderr, "mtcp-perf: --id %u is not a member of %s\n", id, pool_path.c_str());
      return 2;
    }
    return run_server(pool, id, params);
  }
  if (first == 0) first = pool.members.front().id;
  if (!pool.find(first)) {
    std::fprintf(stderr, "mtcp-perf: --server-id %u is not a member of %s\n", first, pool_path.c_str());
    return 2;
  }
  asio::io_context io;
  PerfClient pc(io, pool, params, bytes, migrate_every_ms, time_limit_s, json);
  pc.start(first);
  io.run();
  auto r = pc.result();
  if (json) {
    std::cout << r.dump(2) << "\n";
  } else {
    const auto& e = r["end"];
    std::printf("%s: %llu bytes sent, %llu received in %.3f s (%.0f / %.0f Mbit/s), %llu migrations (median %lld us), %llu failed\n",
                e["verdict"].get<std::string>().c_str(), e["bytes_sent"].get<unsigned long long>(),
                e["bytes_received"].get<unsigned long long>(), e["seconds"].get<double>(), e["sent_mbit_s"].get<double>(),
                e["received_mbit_s"].get<double>(), e["migrations_done"].get<unsigned long long>(),
                e["downtime_us_median"].get<long long>(), e["migrations_failed"].get<unsigned long long>());
    std::printf("sha256 sent %s\nsha256 received %s\n", e["sha256_sent"].get<std::string>().c_str(),
                e["sha256_received"].get<std::string>().c_str());
    if (!e["error"].get<std::string>().empty()) std::printf("error: %s\n", e["error"].get<std::string>().c_str());
  }
  return pc.ok() ? 0 : 1;
}
