// The example apps (services/counter.cc, services/delay.cc): against a small fake sdk::Conn for
// the edge cases (errors, over-long lines, back-pressure, snapshot and resume), and on real
// ServerNodes on loopback (three members, lazy and eager) with rt::ClientConn migrating in the
// middle of a request, plus a plain TCP client. One io_context, driven by the test.
#include <gtest/gtest.h>

#include <asio.hpp>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "runtime/client_conn.h"
#include "runtime/os.h"
#include "runtime/server_node.h"
#include "services/builtin.h"
#include "test_ports.h"

namespace {

using namespace mtcp;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::unique_ptr<sdk::AppFactory> make_factory(const std::string& name, const std::string& json, asio::io_context* io,
                                              std::string& why) {
  sdk::Registry reg;
  svc::register_builtin_services(reg);
  sdk::ServiceDef* def = reg.find(name);
  if (!def) {
    why = "no service " + name;
    return nullptr;
  }
  if (!json.empty() && !def->configure_json(json, why)) return nullptr;
  return def->start(sdk::ServiceEnv{io, [](const std::string&) {}}, why);
}

// ---------------------------------------------------------------------------------------------
// A fake connection: input the test appends, output it inspects, snapshots it records.
class FakeConn final : public sdk::Conn {
 public:
  struct Snap {
    Bytes state;
    uint64_t in, out;
  };
  sdk::ConnId id() const override { return 1; }
  uint64_t epoch() const override { return 1; }
  bool plain() const override { return false; }
  bool replaying() const override { return false; }
  uint64_t input_pos() const override { return in_pos; }
  uint64_t output_pos() const override { return out_pos; }
  uint64_t output_acked() const override { return out_pos; }
  sdk::ConnStats stats() const override {
    sdk::ConnStats s;
    s.input_received = in_pos + input.size();
    return s;
  }
  size_t readable() const override { return input.size(); }
  size_t read(std::span<uint8_t> dst) override {
    size_t n = std::min(dst.size(), input.size());
    std::memcpy(dst.data(), input.data(), n);
    input.erase(0, n);
    in_pos += n;
    return n;
  }
  size_t read_slices(size_t max_bytes, std::vector<Slice>& out) override {
    Bytes b(std::min(max_bytes, input.size()));
    size_t n = read(b);
    if (n) out.push_back(Slice(make_block(std::move(b))));
    return n;
  }
  bool input_closed() const override { return eof && input.empty(); }
  size_t write_space() const override { return space; }
  Result<size_t> write(Slice s) override { return write_copy(std::span(s.data(), s.len)); }
  Result<size_t> write_copy(std::span<const uint8_t> b) override {
    size_t n = std::min(b.size(), space);
    output.append(reinterpret_cast<const char*>(b.data()), n);
    space -= n;
    out_pos += n;
    return n;
  }
  Status snapshot(Bytes state) override {
    snaps.push_back({std::move(state), in_pos, out_pos});
    return {};
  }
  Status close() override {
    closed = true;
    return {};
  }
  void violation(const std::string& why) override { violations.push_back(why); }
  sdk::Waker waker() const override { return sdk::Waker(wake_q, 1); }

  std::string input, output;
  uint64_t in_pos = 0, out_pos = 0;
  size_t space = SIZE_MAX;
  bool eof = false, closed = false;
  std::vector<Snap> snaps;
  std::vector<std::string> violations;
  std::shared_ptr<sdk::WakeQueue> wake_q = std::make_shared<sdk::WakeQueue>();
};

struct Unit {
  explicit Unit(const std::string& service, const std::string& json = "", asio::io_context* io = nullptr) {
    std::string why;
    factory = make_factory(service, json, io, why);
    EXPECT_TRUE(factory) << why;
    app = factory->make(1);
    EXPECT_TRUE(app->on_open(c, sdk::Import{}, why)) << why;
  }
  std::string send(const std::string& s) {
    size_t before = c.output.size();
    c.input += s;
    app->on_readable(c);
    return c.output.substr(before);
  }
  std::unique_ptr<sdk::AppFactory> factory;
  FakeConn c;
  std::unique_ptr<sdk::ConnApp> app;
};

TEST(CounterUnit, AnswersRequestsAndErrors) {
  Unit u("counter");
  EXPECT_EQ(u.send("ADD 5\nADD -2\r\nGET\n"), "OK 5\nOK 3\n3\n");
  EXPECT_EQ(u.send("ADD x\nADD \nADD 5 \nADD 1"), "ERR bad number\nERR bad number\nERR bad number\n");
  EXPECT_EQ(u.send("0\nFOO\n\n"), "OK 13\nERR unknown command\nERR empty line\n");  // "ADD 10" across two reads
  EXPECT_EQ(u.send("ADD 9223372036854775807\nGET\n"), "ERR overflow\n13\n");     // the total is kept
  EXPECT_EQ(u.send("ADD 99999999999999999999\n"), "ERR bad number\n");
  EXPECT_TRUE(u.c.violations.empty());
}

TEST(CounterUnit, OverLongLineIsOneErrorThenSkipped) {
  Unit u("counter");
  std::string at_limit = "ADD " + std::string(252, '0');  // 256 bytes: the limit
  EXPECT_EQ(u.send(at_limit + "1\n"), "ERR line too long\n");
  EXPECT_EQ(u.send(at_limit + "\n"), "OK 0\n");
  // Over the limit in many reads: one error as soon as it is known, the rest dropped.
  EXPECT_EQ(u.send(std::string(200, 'A')), "");
  EXPECT_EQ(u.send(std::string(200, 'A')), "ERR line too long\n");
  for (int i = 0; i < 30; ++i) EXPECT_EQ(u.send(std::string(1000, 'A')), "");
  EXPECT_EQ(u.send("tail\nADD 4\nGET\n"), "OK 4\n4\n");
}

TEST(CounterUnit, SnapshotCarriesTheStateAndResumesExactly) {
  std::string input;
  for (int i = 1; i <= 100; ++i) input += (i % 10 == 0 ? "GET\n" : "ADD " + std::to_string(i * 37 % 101 - 50) + "\n");
  input += std::string(300, 'Z') + "\nGET\n";
  Unit whole("counter");
  std::string want = whole.send(input);
  // Cut the input anywhere (inside a line, inside the over-long line), take the last snapshot
  // and resume in a fresh instance from it: the output from the snapshot's position on matches.
  for (size_t cut : {size_t{30}, size_t{300}, size_t{501}, input.size() - 100, input.size() - 3}) {
    Unit a("counter", R"({"snapshot_every": 3})");
    a.send(input.substr(0, cut));
    ASSERT_FALSE(a.c.snaps.empty()) << cut;
    const auto& s = a.c.snaps.back();
    EXPECT_EQ(s.in, cut) << "one read per send: the snapshot follows it";
    auto b = a.factory->make(2);
    FakeConn c2;
    sdk::Import imp;
    imp.migrated = true;
    imp.snap_id = 1;
    imp.snapshot = s.state;
    imp.snap_in = s.in;
    imp.snap_out = s.out;
    c2.in_pos = s.in;
    c2.out_pos = s.out;
    std::string why;
    ASSERT_TRUE(b->on_open(c2, imp, why)) << why;
    c2.input = input.substr(s.in);
    b->on_readable(c2);
    EXPECT_EQ(want.substr(0, s.out) + c2.output, want) << cut;
    // A snapshot of another position or service is refused with a reason.
    auto bad = a.factory->make(3);
    imp.snap_in += 1;
    EXPECT_FALSE(bad->on_open(c2, imp, why));
    EXPECT_NE(why.find("positions"), std::string::npos);
    Bytes junk = {1, 2, 3};
    imp.snapshot = junk;
    EXPECT_FALSE(bad->on_open(c2, imp, why));
  }
}

TEST(CounterUnit, FullOutputStopsReadingUntilWritable) {
  Unit u("counter");
  u.c.space = 10;
  std::string input;
  for (int i = 0; i < 2000; ++i) input += "ADD 1\n";
  u.send(input);
  EXPECT_GT(u.c.readable(), 0u) << "read on although nothing could be written";
  EXPECT_TRUE(u.c.snaps.empty()) << "snapshot with replies not yet written";
  size_t read_before = u.c.in_pos;
  u.app->on_readable(u.c);
  EXPECT_EQ(u.c.in_pos, read_before);
  u.c.space = SIZE_MAX;
  u.app->on_writable(u.c);
  std::string want;
  for (int i = 1; i <= 2000; ++i) want += "OK " + std::to_string(i) + "\n";
  EXPECT_EQ(u.c.output, want);
  u.c.eof = true;
  u.app->on_readable(u.c);
  EXPECT_TRUE(u.c.closed);
}

TEST(DelayUnit, RefusesToStartWithoutAnEventLoop) {
  std::string why;
  EXPECT_FALSE(make_factory("delay", "", nullptr, why));
  EXPECT_NE(why.find("event loop"), std::string::npos) << why;
  EXPECT_FALSE(make_factory("delay", R"({"thread_wake": 2})", nullptr, why));  // out of range
}

// Drives a delay app on a fake connection: the io_context runs its timers, the fake's wake
// queue is taken like a host does and turned into on_wake.
void drive(asio::io_context& io, Unit& u, const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
  auto until = Clock::now() + limit;
  while (!done() && Clock::now() < until) {
    if (io.stopped()) io.restart();  // out of work once every timer ran: new ones come
    io.run_one_for(5ms);
    if (!u.c.wake_q->take().empty()) u.app->on_wake(u.c);
  }
}

class DelayUnitModes : public ::testing::TestWithParam<int> {};

TEST_P(DelayUnitModes, InOrderAtMostPendingMaxAndErrors) {
  asio::io_context io;
  Unit u("delay", GetParam() ? R"({"thread_wake": 1})" : "", &io);
  std::string input, want;
  for (int i = 0; i < 40; ++i) {
    input += "WAIT " + std::to_string(40 - i) + " t" + std::to_string(i) + "\n";  // later ones are shorter
    want += "DONE t" + std::to_string(i) + "\n";
  }
  input += "WAIT 1\nWAIT x y\nSLEEP 1 z\nWAIT 60001 big\n" + std::string(200, 'L') + "\nWAIT 0 end\n";
  want += "ERR missing tag\nERR bad milliseconds\nERR unknown command\nERR bad milliseconds\nERR line too long\nDONE end\n";
  u.send(input);
  EXPECT_EQ(u.c.output, "");
  EXPECT_GT(u.c.readable(), input.size() / 2) << "read on with the pending queue full";
  drive(io, u, [&] { return u.c.output.size() >= want.size(); });
  EXPECT_EQ(u.c.output, want);
  EXPECT_EQ(u.c.readable(), 0u);
  ASSERT_FALSE(u.c.snaps.empty());
  EXPECT_EQ(u.c.snaps.back().out, want.size()) << "the last snapshot is not at the last reply";
  u.c.eof = true;
  u.app->on_readable(u.c);
  EXPECT_TRUE(u.c.closed);
}

TEST_P(DelayUnitModes, DestroyedWithWaitsPendingIsClean) {
  asio::io_context io;
  {
    Unit u("delay", GetParam() ? R"({"thread_wake": 1})" : "", &io);
    u.send("WAIT 30 a\nWAIT 5000 b\n");
    drive(io, u, [&] { return !u.c.output.empty(); });
    EXPECT_EQ(u.c.output, "DONE a\n");
    EXPECT_TRUE(u.c.snaps.empty()) << "snapshot with a request pending";
    u.app->on_fenced(Error::not_owner);
    auto t0 = Clock::now();
    u.app.reset();  // joins the sleeping thread at once (told to stop)
    EXPECT_LT(Clock::now() - t0, 1s);
  }
  io.run_for(50ms);  // cancelled handlers run after the app is gone
}

INSTANTIATE_TEST_SUITE_P(Modes, DelayUnitModes, ::testing::Values(0, 1),
                         [](const auto& i) { return i.param ? std::string("ThreadWake") : std::string("Timer"); });

// ---------------------------------------------------------------------------------------------
// Real members on loopback.
using mtcp::test::free_port;  // test_ports.h: below the ephemeral range

// An M-TCP client of a line service: text out, text in.
struct LineClient {
  LineClient(asio::io_context& io, const rt::PoolConfig& pool) : conn(io, pool) {
    conn.on_change = [this](std::vector<core::ClientEvent>& events) {
      for (auto& ev : events) {
        if (ev.kind == core::ClientEvent::Kind::connected) connected = true;
        if (ev.kind == core::ClientEvent::Kind::migrated) ++migrations;
        if (ev.kind == core::ClientEvent::Kind::migration_failed) ++migration_failures;
        if (ev.kind == core::ClientEvent::Kind::failed) failed = true;
      }
      pump();
    };
  }
  void pump() {
    auto& e = conn.engine();
    if (connected && sent < out.size())
      sent += e.write_copy(std::span(reinterpret_cast<const uint8_t*>(out.data()) + sent, out.size() - sent));
    uint8_t buf[65536];
    while (size_t n = e.read(buf)) got.append(reinterpret_cast<const char*>(buf), n);
  }
  void write(const std::string& s) {
    out += s;
    pump();
    conn.service();
  }
  rt::ClientConn conn;
  std::string out, got;
  size_t sent = 0;
  bool connected = false, failed = false;
  int migrations = 0, migration_failures = 0;
};

class AppsTest : public ::testing::Test {
 protected:
  void start_pool(size_t n, const std::string& service, const std::string& json, TransferMode mode) {
    for (auto& b : pool_.pool_key) b = static_cast<uint8_t>(std::rand());
    pool_.limits.claim_timeout_ms = 300;
    pool_.limits.transfer_mode = mode;
    pool_.limits.hello_timeout_ms = 200;
    for (size_t i = 1; i <= n; ++i) {
      pool_.members.push_back({static_cast<core::ServerId>(i), "127.0.0.1:" + std::to_string(free_port()),
                               "127.0.0.1:" + std::to_string(free_port())});
    }
    std::string why;
    factory_ = make_factory(service, json, &io_, why);
    ASSERT_TRUE(factory_) << why;
    for (size_t i = 1; i <= n; ++i) {
      nodes_.push_back(std::make_unique<rt::ServerNode>(io_, pool_, static_cast<core::ServerId>(i), *factory_,
                                                        [](const std::string&) {}));
      ASSERT_TRUE(nodes_.back()->start(why)) << why;
    }
  }
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
    auto deadline = Clock::now() + timeout;
    while (!pred()) {
      if (Clock::now() >= deadline) return false;
      io_.run_one_for(10ms);
    }
    return true;
  }
  void run_for(std::chrono::milliseconds d) {
    auto until = Clock::now() + d;
    while (Clock::now() < until) io_.run_one_for(5ms);
  }
  LineClient& client(core::ServerId first) {
    clients_.push_back(std::make_unique<LineClient>(io_, pool_));
    clients_.back()->conn.connect(first);
    EXPECT_TRUE(run_until([&] { return clients_.back()->connected; }));
    return *clients_.back();
  }
  // Starts a migration of `c` to `to` and waits until it is done.
  void migrate(LineClient& c, core::ServerId to) {
    ASSERT_TRUE(c.conn.engine().migrate(to, rt::now_ms()));
    c.conn.service();
  }
  void await_migrated(LineClient& c, core::ServerId to, int want_migrations) {
    ASSERT_TRUE(run_until([&] { return c.migrations >= want_migrations || c.failed; })) << c.migration_failures;
    ASSERT_FALSE(c.failed);
    EXPECT_EQ(c.conn.engine().server(), to);
  }

  // Ends the pool for the next round of a test. The members are stopped but kept until the
  // fixture is gone: a ServerNode's pending accept handler holds `this`, so destroying one
  // while the io_context still runs is a use-after-free (seen under ASan).
  void retire() {
    for (auto& n : nodes_) n->stop();
    for (auto& n : nodes_) retired_nodes_.push_back(std::move(n));
    for (auto& c : clients_) retired_clients_.push_back(std::move(c));
    nodes_.clear();
    clients_.clear();
    pool_ = {};
  }

  asio::io_context io_;
  rt::PoolConfig pool_;
  std::unique_ptr<sdk::AppFactory> factory_;
  std::vector<std::unique_ptr<rt::ServerNode>> nodes_;
  std::vector<std::unique_ptr<LineClient>> clients_;
  std::vector<std::unique_ptr<rt::ServerNode>> retired_nodes_;
  std::vector<std::unique_ptr<LineClient>> retired_clients_;
};

class AppsModes : public AppsTest, public ::testing::WithParamInterface<TransferMode> {};

// Migrations started with half a request line written: every reply is exact, none lost or
// repeated, the total carries over.
TEST_P(AppsModes, CounterMigratesInTheMiddleOfARequest) {
  start_pool(3, "counter", R"({"snapshot_every": 1})", GetParam());
  LineClient& c = client(1);
  std::string want;
  int64_t total = 0;
  int next = 1;
  auto request = [&](int i) {
    total += i;
    want += "OK " + std::to_string(total) + "\n";
    return "ADD " + std::to_string(i) + "\n";
  };
  core::ServerId at = 1;
  for (int round = 0; round < 4; ++round) {
    std::string batch;
    for (int k = 0; k < 50; ++k) batch += request(next++);
    c.write(batch);
    ASSERT_TRUE(run_until([&] { return c.got.size() >= want.size(); })) << round;
    ASSERT_EQ(c.got, want);
    // Half a line, on the wire and read by the member, then the migration, then the rest.
    std::string line = request(next++);
    c.write(line.substr(0, 3));
    run_for(50ms);
    core::ServerId to = at % 3 + 1;
    migrate(c, to);
    c.write(line.substr(3));
    await_migrated(c, to, round + 1);
    at = to;
  }
  c.write("GET\n");
  want += std::to_string(total) + "\n";
  ASSERT_TRUE(run_until([&] { return c.got.size() >= want.size(); }));
  run_for(100ms);  // nothing more comes
  EXPECT_EQ(c.got, want);
  EXPECT_EQ(c.migrations, 4);
  for (auto& n : nodes_) EXPECT_EQ(n->host().violations(), 0u);
}

// A migration with two requests waiting: the new owner replays them from the snapshot taken
// before them; exactly one DONE each, in order. Both wake paths (timer, another thread).
TEST_P(AppsModes, DelayMigratesWithRequestsPending) {
  for (int thread_wake : {0, 1}) {
    SCOPED_TRACE(thread_wake ? "thread-wake" : "timer");
    retire();
    start_pool(3, "delay", thread_wake ? R"({"thread_wake": 1})" : "", GetParam());
    LineClient& c = client(1);
    c.write("WAIT 10 first\n");
    ASSERT_TRUE(run_until([&] { return c.got == "DONE first\n"; })) << c.got;  // a snapshot after it
    c.write("WAIT 400 a\nWAIT 100 b\n");
    run_for(60ms);  // read and waiting on member 1
    EXPECT_EQ(c.got, "DONE first\n");
    migrate(c, 2);
    await_migrated(c, 2, 1);
    std::string want = "DONE first\nDONE a\nDONE b\n";
    ASSERT_TRUE(run_until([&] { return c.got.size() >= want.size(); })) << c.got;
    // Again, in the middle of a line, to the third member.
    c.write("WAIT 150 c\nWAI");
    run_for(40ms);
    migrate(c, 3);
    c.write("T 20 d\n");
    await_migrated(c, 3, 2);
    want += "DONE c\nDONE d\n";
    ASSERT_TRUE(run_until([&] { return c.got.size() >= want.size(); })) << c.got;
    run_for(500ms);  // a former owner's wait would have fired by now
    EXPECT_EQ(c.got, want);
    for (auto& n : nodes_) EXPECT_EQ(n->host().violations(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Transfer, AppsModes, ::testing::Values(TransferMode::lazy, TransferMode::eager),
                         [](const auto& i) { return i.param == TransferMode::lazy ? "Lazy" : "Eager"; });

TEST_F(AppsTest, DelayAnswersOnlyAfterTheTimer) {
  start_pool(1, "delay", "", TransferMode::lazy);
  LineClient& c = client(1);
  auto t0 = Clock::now();
  c.write("WAIT 150 x\n");
  ASSERT_TRUE(run_until([&] { return !c.got.empty(); }));
  EXPECT_GE(Clock::now() - t0, 150ms);
  run_for(20ms);
  EXPECT_EQ(c.got, "DONE x\n");
}

// A plain TCP client (no M-TCP preface) is served by the same app.
TEST_F(AppsTest, PlainTcpClientsAreServedByTheSameApps) {
  for (std::string service : {"counter", "delay"}) {
    SCOPED_TRACE(service);
    retire();
    start_pool(1, service, service == "delay" ? R"({"thread_wake": 1})" : "", TransferMode::lazy);
    asio::ip::tcp::socket s(io_);
    const std::string& addr = pool_.members[0].data;
    auto port = static_cast<uint16_t>(std::stoi(addr.substr(addr.rfind(':') + 1)));
    s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::string req = service == "counter" ? "ADD 5\nADD 7\nBAD\nGET\n" : "WAIT 30 p\nWAIT 1 q\n";
    std::string want = service == "counter" ? "OK 5\nOK 12\nERR unknown command\n12\n" : "DONE p\nDONE q\n";
    asio::write(s, asio::buffer(req));
    std::string got;
    char buf[4096];
    bool reading = false;
    std::function<void()> read_more = [&] {
      reading = true;
      s.async_read_some(asio::buffer(buf), [&](asio::error_code ec, size_t n) {
        reading = false;
        if (!ec) {
          got.append(buf, n);
          read_more();
        }
      });
    };
    read_more();
    EXPECT_TRUE(run_until([&] { return got.size() >= want.size(); })) << got;
    EXPECT_EQ(got, want);
    s.close();
    run_until([&] { return !reading; }, 1s);
  }
}

}  // namespace
