// client::Connection (client/connection.h) against real ServerNodes on loopback serving echo,
// all on one io_context driven by the test: bytes echoed exactly with back-pressure, manual
// migrations in the middle of a transfer, an application Policy that is asked and obeyed, the
// default policy's schedule through the one policy timer, a migration to a stopped member that
// fails while the connection carries on, a graceful close, and refusals of bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "client/connection.h"
#include "runtime/server_node.h"
#include "services/builtin.h"
#include "test_ports.h"

namespace {

using namespace mtcp;
using namespace std::chrono_literals;
using client::EventKind;

constexpr size_t kMiB = 1u << 20;

using mtcp::test::free_port;  // test_ports.h: below the ephemeral range

Bytes pattern(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((i * 131) ^ (i >> 9));
  return b;
}

// An echo client on client::Connection: writes `input` (zero-copy slices of one block, or
// copies) up to `limit`, respecting what write() accepts; reads everything back.
struct EchoClient {
  std::unique_ptr<client::Connection> c;
  BlockPtr input;
  size_t limit = 0;  // write no further than this (the test raises it)
  size_t sent = 0;
  Bytes got;
  bool copy = false;  // write_copy instead of write(Slice)
  bool close_when_echoed = false;
  int writable_calls = 0;
  int readable_calls = 0;
  std::vector<client::Event> events;
  std::function<void(EchoClient&)> after_read;
  bool inside = false;  // in pump() or drain()
  struct Inside {
    explicit Inside(bool& f) : flag(f), was(f) { flag = true; }
    ~Inside() { flag = was; }
    bool& flag;
    bool was;
  };

  void attach() {
    // No callback runs inside a call the application makes (pump and drain call in).
    c->on_event = [this](const client::Event& e) {
      EXPECT_FALSE(inside) << "on_event inside a call: " << client::to_string(e);
      events.push_back(e);
      if (e.kind == EventKind::connected) pump();
    };
    c->on_writable = [this] {
      EXPECT_FALSE(inside) << "on_writable inside a call";
      ++writable_calls;
      pump();
    };
    c->on_readable = [this] {
      EXPECT_FALSE(inside) << "on_readable inside a call";
      ++readable_calls;
      drain();
    };
  }
  void pump() {
    Inside in(inside);
    while (sent < limit) {
      size_t want = limit - sent;
      size_t n = copy ? c->write_copy(std::span<const uint8_t>(input->data() + sent, want))
                      : c->write(Slice(input, sent, want));
      if (n == 0) break;
      EXPECT_LE(n, want);
      sent += n;
    }
  }
  void drain() {
    Inside in(inside);
    std::vector<Slice> v;
    c->read_slices(SIZE_MAX, v);
    for (const auto& s : v) got.insert(got.end(), s.data(), s.data() + s.len);
    if (after_read) after_read(*this);
    if (close_when_echoed && got.size() == input->size()) c->close();
  }
  size_t count(EventKind k) const {
    size_t n = 0;
    for (const auto& e : events) n += e.kind == k;
    return n;
  }
  const client::Event* last(EventKind k) const {
    for (auto it = events.rbegin(); it != events.rend(); ++it)
      if (it->kind == k) return &*it;
    return nullptr;
  }
  bool echoed_exactly() const { return got.size() == input->size() && got == *input; }
};

class ClientLibTest : public ::testing::Test {
 protected:
  void start_pool(size_t n) {
    for (auto& b : pool_.pool_key) b = static_cast<uint8_t>(std::rand());
    pool_.limits.claim_timeout_ms = 300;
    // A small send log, so that a few MB meet back-pressure many times.
    pool_.limits.send_log_bytes_max = 256u << 10;
    for (size_t i = 1; i <= n; ++i) {
      pool_.members.push_back({static_cast<core::ServerId>(i), "127.0.0.1:" + std::to_string(free_port()),
                               "127.0.0.1:" + std::to_string(free_port())});
    }
    sdk::Registry reg;
    svc::register_builtin_services(reg);
    std::string why;
    factory_ = reg.find("echo")->start(sdk::ServiceEnv{&io_, [](const std::string&) {}}, why);
    ASSERT_TRUE(factory_) << why;
    for (size_t i = 1; i <= n; ++i) {
      nodes_.push_back(std::make_unique<rt::ServerNode>(io_, pool_, static_cast<core::ServerId>(i), *factory_,
                                                        [](const std::string&) {}));
      ASSERT_TRUE(nodes_.back()->start(why)) << why;
    }
  }
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 8s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.run_one_for(10ms);
    }
    return true;
  }
  EchoClient& client(size_t bytes, client::Options opt = {}) {
    std::string why;
    auto c = client::Connection::create(io_, pool_, std::move(opt), why);
    EXPECT_TRUE(c) << why;
    clients_.push_back(std::make_unique<EchoClient>());
    EchoClient& e = *clients_.back();
    e.c = std::move(c);
    e.input = make_block(pattern(bytes));
    e.limit = bytes;
    e.attach();
    return e;
  }
  bool connect(EchoClient& e) {
    e.c->connect();
    return run_until([&] { return e.count(EventKind::connected) == 1 || e.count(EventKind::failed) > 0; }) &&
           e.c->established();
  }

  asio::io_context io_;
  rt::PoolConfig pool_;
  std::unique_ptr<sdk::AppFactory> factory_;
  std::vector<std::unique_ptr<rt::ServerNode>> nodes_;
  std::vector<std::unique_ptr<EchoClient>> clients_;
};

TEST_F(ClientLibTest, EchoesMegabytesExactlyWithBackPressureAndClosesGracefully) {
  start_pool(2);
  EchoClient& e = client(4 * kMiB);
  e.close_when_echoed = true;
  ASSERT_TRUE(connect(e));
  EXPECT_EQ(e.events.front().to, 1u);
  EXPECT_NE(e.c->conn_id(), 0u);
  ASSERT_TRUE(run_until([&] { return e.c->done(); })) << e.got.size() << " of " << e.input->size();
  ASSERT_TRUE(e.echoed_exactly());
  // The 256 KiB send log refused writes, and room was announced each time.
  EXPECT_GT(e.c->stats().writes_refused, 0u);
  EXPECT_GT(e.writable_calls, 0);
  EXPECT_GT(e.readable_calls, 0);
  EXPECT_EQ(e.c->stats().bytes_sent, 4 * kMiB);
  EXPECT_EQ(e.c->stats().bytes_received, 4 * kMiB);
  ASSERT_EQ(e.count(EventKind::closed), 1u);
  EXPECT_EQ(e.last(EventKind::closed)->detail, "done");
  EXPECT_EQ(e.count(EventKind::peer_closed), 1u);
  EXPECT_EQ(e.count(EventKind::failed), 0u);
  EXPECT_TRUE(e.c->peer_closed());
  EXPECT_EQ(e.c->unacknowledged_bytes(), 0u);
  // Nothing is accepted after close.
  uint8_t one = 1;
  EXPECT_EQ(e.c->write_copy(std::span<const uint8_t>(&one, 1)), 0u);
}

// Three manual migrations, each requested with half a megabyte still in flight; the next
// megabyte is written only once the migration is done, so each one happens mid-stream.
TEST_F(ClientLibTest, ManualMigrationsMidStreamReportFromToDowntimeAndReason) {
  start_pool(3);
  EchoClient& e = client(4 * kMiB);
  e.limit = kMiB;
  e.copy = true;
  e.close_when_echoed = true;
  size_t requested = 0;
  e.after_read = [&](EchoClient& ec) {
    if (requested < 3 && ec.got.size() + kMiB / 2 >= ec.limit && ec.limit <= (requested + 1) * kMiB) {
      ++requested;
      ec.c->request_migration();
    }
  };
  auto on_event = e.c->on_event;
  e.c->on_event = [&, on_event](const client::Event& ev) {
    on_event(ev);
    if (ev.kind == EventKind::migrated) {
      e.limit = std::min(e.input->size(), e.limit + kMiB);
      e.pump();
    }
  };
  ASSERT_TRUE(connect(e));
  ASSERT_TRUE(run_until([&] { return e.c->done(); })) << e.got.size() << " echoed, " << e.count(EventKind::migrated) << " migrations";
  ASSERT_TRUE(e.echoed_exactly());
  ASSERT_EQ(e.count(EventKind::migrated), 3u);
  EXPECT_EQ(e.count(EventKind::migration_started), 3u);
  EXPECT_EQ(e.count(EventKind::migration_failed), 0u);
  core::ServerId at = 1;
  for (size_t i = 0; i < e.events.size(); ++i) {
    const auto& ev = e.events[i];
    if (ev.kind != EventKind::migrated) continue;
    EXPECT_EQ(ev.from, at);
    EXPECT_EQ(ev.to, at % 3 + 1);  // the next member in pool order
    EXPECT_GT(ev.downtime_us, 0);
    EXPECT_EQ(ev.reason, "manual");
    // Announced before it ended, with the same ends.
    ASSERT_GT(i, 0u);
    const auto& start = e.events[i - 1];
    EXPECT_EQ(start.kind, EventKind::migration_started);
    EXPECT_EQ(start.from, ev.from);
    EXPECT_EQ(start.to, ev.to);
    EXPECT_EQ(start.reason, "manual");
    at = ev.to;
  }
  EXPECT_EQ(e.c->server(), at);
  EXPECT_EQ(e.c->stats().migrations_done, 3u);
  EXPECT_EQ(e.c->stats().recoveries, 0u);
}

// An application policy: asks to move to member 3 once 1 MB came back, and records every call.
class TestPolicy final : public client::Policy {
 public:
  void on_connected(core::ServerId server, const std::vector<core::ServerId>& pool, core::TimeMs) override {
    calls.push_back("connected " + std::to_string(server) + " pool " + std::to_string(pool.size()));
  }
  void on_bytes_received(uint64_t n, core::TimeMs) override { received += n; }
  void on_bytes_sent(uint64_t n, core::TimeMs) override { sent += n; }
  void on_app_limited(bool, core::TimeMs) override {}
  void on_hint(core::ServerId, core::TimeMs) override {}
  void on_peer_closed(core::TimeMs) override { calls.push_back("peer_closed"); }
  void on_migration_started(core::ServerId target, core::TimeMs) override {
    decided = true;
    calls.push_back("started " + std::to_string(target));
  }
  void on_migrated(core::ServerId from, core::ServerId to, core::TimeMs) override {
    calls.push_back("migrated " + std::to_string(from) + " " + std::to_string(to));
  }
  void on_migration_failed(core::ServerId target, core::TimeMs) override {
    calls.push_back("failed " + std::to_string(target));
  }
  std::optional<client::Decision> poll(core::TimeMs) override {
    ++polls;
    if (decided || received < kMiB) return std::nullopt;
    return client::Decision{3, "test-policy", "a megabyte came back"};
  }
  core::TimeMs next_deadline() const override { return core::kNever; }

  uint64_t received = 0, sent = 0;
  int polls = 0;
  bool decided = false;
  std::vector<std::string> calls;
};

TEST_F(ClientLibTest, ApplicationPolicyIsFedAskedAndObeyed) {
  start_pool(3);
  client::Options opt;
  auto policy = std::make_unique<TestPolicy>();
  TestPolicy& p = *policy;
  opt.policy_impl = std::move(policy);
  EchoClient& e = client(3 * kMiB, std::move(opt));
  e.close_when_echoed = true;
  ASSERT_TRUE(connect(e));
  ASSERT_TRUE(run_until([&] { return e.c->done(); })) << e.got.size();
  ASSERT_TRUE(e.echoed_exactly());
  EXPECT_EQ(&e.c->policy(), &p);
  EXPECT_EQ(p.sent, 3 * kMiB);
  EXPECT_EQ(p.received, 3 * kMiB);
  EXPECT_GT(p.polls, 0);
  std::vector<std::string> want = {"connected 1 pool 3", "started 3", "migrated 1 3", "peer_closed"};
  EXPECT_EQ(p.calls, want);
  ASSERT_EQ(e.count(EventKind::migrated), 1u);
  const auto* m = e.last(EventKind::migrated);
  EXPECT_EQ(m->from, 1u);
  EXPECT_EQ(m->to, 3u);
  EXPECT_EQ(m->reason, "test-policy");
  EXPECT_EQ(m->detail, "a megabyte came back");
  EXPECT_GT(m->downtime_us, 0);
  EXPECT_EQ(e.c->server(), 3u);
}

// The default policy with only the schedule enabled, on an idle connection: the migrations
// come from the one policy timer alone (no byte moves, so nothing else runs the policy).
TEST_F(ClientLibTest, DefaultPolicyScheduleMigratesAnIdleConnectionByTimer) {
  start_pool(2);
  client::Options opt;
  opt.policy.enabled = rt::kPolicySchedule;
  opt.policy.every_ms = 100;
  EchoClient& e = client(0, std::move(opt));
  ASSERT_TRUE(connect(e));
  ASSERT_TRUE(run_until([&] { return e.count(EventKind::migrated) >= 2; }, 5s)) << e.count(EventKind::migrated);
  for (const auto& ev : e.events) {
    if (ev.kind != EventKind::migrated) continue;
    EXPECT_EQ(ev.reason, "schedule");
    EXPECT_NE(ev.from, ev.to);
    EXPECT_GT(ev.downtime_us, 0);
  }
  EXPECT_EQ(e.count(EventKind::failed), 0u);
}

TEST_F(ClientLibTest, MigrationToAStoppedMemberFailsAndTheConnectionCarriesOn) {
  start_pool(3);
  nodes_[1]->stop();  // member 2: its data port refuses connections
  EchoClient& e = client(2 * kMiB);
  e.limit = kMiB;
  ASSERT_TRUE(connect(e));
  ASSERT_TRUE(run_until([&] { return e.got.size() == kMiB; }));
  ASSERT_TRUE(e.c->migrate(2).ok());
  EXPECT_EQ(e.c->migrate(3).error(), Error::pending_table_full);  // one attempt at a time
  ASSERT_TRUE(run_until([&] { return e.count(EventKind::migration_failed) == 1; }));
  const auto* f = e.last(EventKind::migration_failed);
  EXPECT_EQ(f->from, 1u);
  EXPECT_EQ(f->to, 2u);
  EXPECT_EQ(f->reason, "manual");
  EXPECT_NE(f->error, Error::ok);
  EXPECT_FALSE(std::string(to_string(f->error)).empty());
  EXPECT_EQ(e.count(EventKind::failed), 0u);
  EXPECT_EQ(e.c->server(), 1u);
  // Still carrying data, and still able to move elsewhere.
  ASSERT_TRUE(run_until([&] { return !e.c->migrating(); }));
  e.limit = 2 * kMiB;
  e.pump();
  ASSERT_TRUE(e.c->migrate(3).ok());
  ASSERT_TRUE(run_until([&] { return e.got.size() == 2 * kMiB && e.count(EventKind::migrated) == 1; }))
      << e.got.size();
  EXPECT_TRUE(e.echoed_exactly());
  EXPECT_EQ(e.c->server(), 3u);
  EXPECT_EQ(e.last(EventKind::migrated)->reason, "manual");
  EXPECT_EQ(e.c->stats().migrations_failed, 1u);
}

// A call made from inside a callback does not run callbacks either: migration_started of a
// migrate() called from on_event arrives after that on_event returned.
TEST_F(ClientLibTest, MigrateCalledFromACallbackReportsAfterTheCallback) {
  start_pool(2);
  EchoClient& e = client(0);
  auto on_event = e.c->on_event;
  e.c->on_event = [&, on_event](const client::Event& ev) {
    on_event(ev);
    if (ev.kind != EventKind::connected) return;
    EchoClient::Inside in(e.inside);
    EXPECT_TRUE(e.c->migrate().ok());
    EXPECT_EQ(e.count(EventKind::migration_started), 0u);
  };
  ASSERT_TRUE(connect(e));
  ASSERT_TRUE(run_until([&] { return e.count(EventKind::migrated) == 1; }));
  EXPECT_EQ(e.count(EventKind::migration_started), 1u);
  EXPECT_EQ(e.last(EventKind::migrated)->to, 2u);
  EXPECT_EQ(e.last(EventKind::migrated)->reason, "manual");
}

TEST_F(ClientLibTest, MigrateRefusesWhenItCannot) {
  start_pool(2);
  EchoClient& e = client(0);
  EXPECT_EQ(e.c->migrate(2).error(), Error::closed);  // not connected yet
  ASSERT_TRUE(connect(e));
  EXPECT_EQ(e.c->migrate(9).error(), Error::bad_field);  // not a member
  EXPECT_EQ(e.count(EventKind::migration_started), 0u);
  // A request for a member that is not there is refused once, with a reason.
  e.c->request_migration(9);
  EXPECT_EQ(e.count(EventKind::migration_failed), 0u);  // callbacks never run inside a call
  ASSERT_TRUE(run_until([&] { return e.count(EventKind::migration_failed) == 1; }));
  EXPECT_EQ(e.last(EventKind::migration_failed)->error, Error::bad_field);
  EXPECT_EQ(e.last(EventKind::migration_failed)->reason, "manual");
  EXPECT_TRUE(e.c->established());
}

TEST(ClientLibRefusals, BadPoolMemberOrPolicyIsRefusedWithAClearMessage) {
  asio::io_context io;
  std::string why;
  rt::PoolConfig empty;
  EXPECT_EQ(client::Connection::create(io, empty, {}, why), nullptr);
  EXPECT_NE(why.find("no members"), std::string::npos) << why;

  rt::PoolConfig pool;
  pool.members.push_back({1, "127.0.0.1:1", "127.0.0.1:2"});
  pool.members.push_back({2, "127.0.0.1:3", "127.0.0.1:4"});
  client::Options unknown;
  unknown.first = 7;
  why.clear();
  EXPECT_EQ(client::Connection::create(io, pool, std::move(unknown), why), nullptr);
  EXPECT_NE(why.find("member 7 is not in the pool (members: 1, 2)"), std::string::npos) << why;

  client::Options bad;
  bad.policy.fraction = 2;
  why.clear();
  EXPECT_EQ(client::Connection::create(io, pool, std::move(bad), why), nullptr);
  EXPECT_NE(why.find("bad policy setting"), std::string::npos) << why;
  EXPECT_NE(why.find("fraction"), std::string::npos) << why;

  client::Options no_timeout;
  no_timeout.close_timeout_ms = client::kCloseTimeoutMaxMs + 1;
  why.clear();
  EXPECT_EQ(client::Connection::create(io, pool, std::move(no_timeout), why), nullptr);
  EXPECT_NE(why.find("close_timeout_ms"), std::string::npos) << why;

  why.clear();
  auto ok = client::Connection::create(io, pool, {}, why);
  ASSERT_NE(ok, nullptr) << why;
  EXPECT_TRUE(why.empty());
  EXPECT_FALSE(ok->established());
}

// The pool file a client loads (rt::load_pool_config) refuses a file without members.
TEST(ClientLibRefusals, PoolFileWithoutMembersIsRefused) {
  char path[] = "/tmp/mtcp-client-pool-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream f(path);
    f << R"({"pool_key": ")" << std::string(64, 'a') << R"(", "members": []})";
  }
  rt::PoolConfig pool;
  std::string why;
  EXPECT_FALSE(rt::load_pool_config(path, pool, why));
  EXPECT_NE(why.find("members"), std::string::npos) << why;
  std::remove(path);
}

}  // namespace
