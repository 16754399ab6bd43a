// The admin socket (runtime/admin.h) against real ServerNodes on loopback: a pool of one or
// three members serving echo, M-TCP clients (rt::ClientConn) and admin clients on a local
// socket, all on one io_context driven by the test. Covers the replies, every refusal (the
// admin connection stays usable), the limits, the socket file's life cycle, and HINTs that
// really move clients (migrate, drain, re-hint of a client that arrives while draining).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "runtime/admin.h"
#include "runtime/client_conn.h"
#include "runtime/os.h"
#include "runtime/server_node.h"
#include "services/builtin.h"
#include "test_ports.h"

namespace {

using namespace mtcp;
using json = nlohmann::json;
using local = asio::local::stream_protocol;
using namespace std::chrono_literals;

using mtcp::test::free_port;  // test_ports.h: below the ephemeral range

// One M-TCP client: sends `bytes` of input once connected, counts the echo, records HINTs
// and (if asked) follows them like mtcp-perf does: to the hinted member, or the next one.
struct Client {
  Client(asio::io_context& io, const rt::PoolConfig& pool, size_t bytes, bool follow)
      : conn(io, pool), follow_hints(follow) {
    input.resize(bytes);
    for (size_t i = 0; i < bytes; ++i) input[i] = static_cast<uint8_t>(i * 7 + 3);
    conn.on_change = [this](std::vector<core::ClientEvent>& events) { on_change(events); };
  }
  void on_change(std::vector<core::ClientEvent>& events) {
    auto& e = conn.engine();
    for (auto& ev : events) {
      if (ev.kind == core::ClientEvent::Kind::connected) connected = true;
      if (ev.kind == core::ClientEvent::Kind::migrated) ++migrations;
      if (ev.kind == core::ClientEvent::Kind::failed) failed = true;
      if (ev.kind == core::ClientEvent::Kind::hint) {
        hints.push_back(ev);
        if (follow_hints && !e.migrating()) {
          core::ServerId to = ev.to;
          if (to == 0) {  // the next member after the current one
            const auto& p = e.pool();
            for (size_t i = 0; i < p.size(); ++i) {
              if (p[i] == e.server()) to = p[(i + 1) % p.size()];
            }
          }
          (void)e.migrate(to, rt::now_ms());
        }
      }
    }
    if (connected && sent < input.size()) {
      sent += e.write_copy(std::span<const uint8_t>(input).subspan(sent));
    }
    uint8_t buf[65536];
    while (size_t n = e.read(buf)) {
      for (size_t i = 0; i < n; ++i) mismatch |= buf[i] != input[echoed + i];
      echoed += n;
    }
  }
  rt::ClientConn conn;
  bool follow_hints;
  Bytes input;
  size_t sent = 0, echoed = 0;
  bool connected = false, failed = false, mismatch = false;
  int migrations = 0;
  std::vector<core::ClientEvent> hints;
};

// An admin client on the same io_context: raw bytes out, reply lines in.
class AdminClient {
 public:
  AdminClient(asio::io_context& io, const std::string& path,
              std::function<bool(std::function<bool()>)> run)
      : sock_(io), run_(std::move(run)) {
    sock_.connect(local::endpoint(path), ec_);
  }
  bool connected() const { return !ec_; }
  void send(std::string raw) {
    auto buf = std::make_shared<std::string>(std::move(raw));
    bool done = false;
    asio::async_write(sock_, asio::buffer(*buf),
                      [buf, &done](asio::error_code, size_t) { done = true; });
    run_([&] { return done; });
  }
  // The next reply line; empty if the connection ended (or nothing came within the timeout).
  std::string line() {
    bool done = false;
    asio::error_code ec;
    asio::async_read_until(sock_, asio::dynamic_buffer(buf_), '\n',
                           [&](asio::error_code e, size_t) {
                             ec = e;
                             done = true;
                           });
    if (!run_([&] { return done; })) {
      sock_.cancel();
      run_([&] { return done; });
      return "";
    }
    if (ec) return "";
    size_t nl = buf_.find('\n');
    std::string l = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    return l;
  }
  json ask(const std::string& raw) {
    send(raw + "\n");
    std::string l = line();
    return l.empty() ? json() : json::parse(l, nullptr, false);
  }
  json ask(const json& req) { return ask(req.dump()); }
  json ask(const char* raw) { return ask(std::string(raw)); }

 private:
  local::socket sock_;
  std::function<bool(std::function<bool()>)> run_;
  asio::error_code ec_;
  std::string buf_;
};

class AdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mtcp-admin-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    clients_.clear();
    admins_.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void start_pool(size_t n) {
    for (auto& b : pool_.pool_key) b = static_cast<uint8_t>(std::rand());
    pool_.limits.claim_timeout_ms = 300;
    for (size_t i = 1; i <= n; ++i) {
      pool_.members.push_back({static_cast<core::ServerId>(i),
                               "127.0.0.1:" + std::to_string(free_port()),
                               "127.0.0.1:" + std::to_string(free_port())});
    }
    for (size_t i = 1; i <= n; ++i) {
      if (!factory_) {
        sdk::Registry reg;
        svc::register_builtin_services(reg);
        std::string why;
        factory_ = reg.find("echo")->start(sdk::ServiceEnv{&io_, [](const std::string&) {}}, why);
        ASSERT_TRUE(factory_) << why;
      }
      nodes_.push_back(std::make_unique<rt::ServerNode>(io_, pool_, static_cast<core::ServerId>(i), *factory_,
                                                        [](const std::string&) {}));
      std::string why;
      ASSERT_TRUE(nodes_.back()->start(why)) << why;
    }
  }
  std::string sock_path(int member) { return dir_ + "/m" + std::to_string(member) + ".sock"; }
  rt::AdminServer& start_admin(int member) {
    admins_.push_back(std::make_unique<rt::AdminServer>(
        io_, *nodes_.at(static_cast<size_t>(member - 1)), sock_path(member)));
    std::string why;
    EXPECT_TRUE(admins_.back()->start(why)) << why;
    return *admins_.back();
  }
  // Runs the loop until pred() holds (true) or the timeout passes (false).
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.run_one_for(10ms);
    }
    return true;
  }
  std::unique_ptr<AdminClient> admin_client(int member) {
    auto c = std::make_unique<AdminClient>(
        io_, sock_path(member), [this](std::function<bool()> p) { return run_until(p); });
    EXPECT_TRUE(c->connected());
    return c;
  }
  Client& client(core::ServerId first, size_t bytes, bool follow = true) {
    clients_.push_back(std::make_unique<Client>(io_, pool_, bytes, follow));
    clients_.back()->conn.connect(first);
    return *clients_.back();
  }
  static size_t owned(AdminClient& a) {
    json r = a.ask(R"({"cmd":"status"})");
    return r.value("owned", size_t{999});
  }

  // Declaration order is destruction order reversed: the io_context outlives everything.
  asio::io_context io_;
  std::string dir_;
  rt::PoolConfig pool_;
  std::unique_ptr<sdk::AppFactory> factory_;
  std::vector<std::unique_ptr<rt::ServerNode>> nodes_;
  std::vector<std::unique_ptr<rt::AdminServer>> admins_;
  std::vector<std::unique_ptr<Client>> clients_;
};

TEST_F(AdminTest, StatusAndListDescribeTheMemberAndItsConnections) {
  start_pool(1);
  start_admin(1);
  auto a = admin_client(1);
  json st = a->ask(R"({"cmd":"status"})");
  ASSERT_TRUE(st.is_object()) << st;
  EXPECT_EQ(st["ok"], true);
  EXPECT_EQ(st["member"], 1);
  EXPECT_EQ(st["draining"], false);
  EXPECT_EQ(st["connection_count"], 0);
  EXPECT_EQ(st["subflow_count"], 0);
  EXPECT_EQ(st["owned"], 0);
  EXPECT_EQ(st["transfer"], "lazy");
  // Every engine counter and every runtime counter, by name.
  Counters names;
  size_t count = 0;
  names.for_each([&](const char* name, uint64_t) {
    EXPECT_TRUE(st["counters"].contains(name)) << name;
    ++count;
  });
  rt::RuntimeCounters rt_names;
  rt_names.for_each([&](const char* name, uint64_t) {
    EXPECT_TRUE(st["counters"].contains(name)) << name;
    ++count;
  });
  EXPECT_EQ(st["counters"].size(), count);
  json ls = a->ask(R"({"cmd":"list"})");
  EXPECT_EQ(ls["ok"], true);
  EXPECT_EQ(ls["connections"], json::array());

  Client& c = client(1, 100000);
  ASSERT_TRUE(run_until([&] { return c.echoed == c.input.size(); })) << c.echoed;
  EXPECT_FALSE(c.mismatch);
  ASSERT_TRUE(run_until([&] {  // the client's last ack reaches the member
    json l = a->ask(R"({"cmd":"list"})");
    return l["connections"].size() == 1 && l["connections"][0]["out_acked"] == 100000;
  }));
  ls = a->ask(R"({"cmd":"list"})");
  ASSERT_EQ(ls["connections"].size(), 1u) << ls;
  const json& e = ls["connections"][0];
  EXPECT_EQ(e["conn"].get<uint64_t>(), c.conn.engine().conn_id());
  EXPECT_EQ(e["role"], "owner");
  EXPECT_EQ(e["epoch"].get<uint64_t>(), c.conn.engine().epoch());
  EXPECT_EQ(e["attached"], true);
  EXPECT_EQ(e["in_end"], 100000);
  EXPECT_EQ(e["app_in"], 100000);
  EXPECT_EQ(e["out_end"], 100000);
  EXPECT_TRUE(e.contains("counter"));
  EXPECT_TRUE(e.contains("snap_id"));
  st = a->ask(R"({"cmd":"status"})");
  EXPECT_EQ(st["connection_count"], 1);
  EXPECT_EQ(st["subflow_count"], 1);
  EXPECT_EQ(st["owned"], 1);
  EXPECT_EQ(st["owned_attached"], 1);
  EXPECT_EQ(st["counters"]["connections_opened"], 1);
}

TEST_F(AdminTest, BadRequestsAreRefusedAndTheConnectionStaysUsable) {
  start_pool(3);
  start_admin(1);
  auto a = admin_client(1);
  auto error_of = [&](const std::string& raw) {
    json r = a->ask(raw);
    EXPECT_EQ(r.value("ok", true), false) << raw << " -> " << r;
    return r.value("error", std::string());
  };
  EXPECT_NE(error_of("garbage").find("malformed JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"status")").find("malformed JSON"), std::string::npos);
  EXPECT_NE(error_of("[1,2]").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of(R"({"command":"status"})").find("missing field \"cmd\""), std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":7})").find("\"cmd\" must be a string"), std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"reboot"})").find("unknown command \"reboot\""), std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"status","verbose":true})").find("unknown field \"verbose\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"migrate"})").find("missing field \"conn\""), std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"migrate","conn":"12"})").find("\"conn\" must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"migrate","conn":-3})").find("\"conn\" must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"migrate","conn":1.5})").find("\"conn\" must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"migrate","conn":12345})").find("unknown connection 12345"),
            std::string::npos);
  EXPECT_NE(
      error_of(R"({"cmd":"migrate","conn":12345,"to":"2"})").find("\"to\" must be an integer"),
      std::string::npos);
  EXPECT_NE(
      error_of(R"({"cmd":"drain","to":9})").find("member 9 is not in the pool (members: 1, 2, 3)"),
      std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"drain","to":1})").find("is this member"), std::string::npos);
  EXPECT_NE(error_of(R"({"cmd":"drain","to":4294967296})")
                .find("\"to\" must be an integer from 0 to 4294967295"),
            std::string::npos);
  EXPECT_NE(error_of("{\"cmd\":\"st\xff\"}").find("malformed JSON"),
            std::string::npos);          // not UTF-8
  EXPECT_FALSE(admins_[0]->draining());  // refused drains changed nothing

  // Too long in one piece, and in many pieces without a newline: one error each, the rest of
  // the line is dropped, the next line is answered.
  std::string huge(rt::AdminServer::kRequestBytesMax + 1, ' ');
  EXPECT_NE(error_of(huge).find("request too long"), std::string::npos);
  std::string pad(1000, 'x');
  for (int i = 0; i < 50; ++i) a->send(pad);
  json r = json::parse(a->line(), nullptr, false);
  EXPECT_NE(r.value("error", std::string()).find("request too long"), std::string::npos) << r;
  a->send(pad + "\n");  // the end of the long line: dropped without a reply
  EXPECT_EQ(a->ask(R"({"cmd":"status"})")["ok"], true);
  // Exactly at the limit is fine; blank lines and CRLF are tolerated.
  std::string at_limit = R"({"cmd":"status"})";
  at_limit.resize(rt::AdminServer::kRequestBytesMax, ' ');
  EXPECT_EQ(a->ask(at_limit)["ok"], true);
  a->send("\n  \n");
  EXPECT_EQ(a->ask("{\"cmd\":\"list\"}\r")["ok"], true);
  // Two requests in one write get two replies, in order.
  a->send("{\"cmd\":\"undrain\"}\n{\"cmd\":\"nope\"}\n");
  EXPECT_EQ(json::parse(a->line())["was_draining"], false);
  EXPECT_EQ(json::parse(a->line())["ok"], false);
}

TEST_F(AdminTest, AtMostSixteenAdminClients) {
  start_pool(1);
  start_admin(1);
  std::vector<std::unique_ptr<AdminClient>> cs;
  for (size_t i = 0; i < rt::AdminServer::kClientsMax; ++i) {
    cs.push_back(admin_client(1));
    ASSERT_EQ(cs.back()->ask(R"({"cmd":"status"})")["ok"], true) << i;
  }
  EXPECT_EQ(admins_[0]->clients(), rt::AdminServer::kClientsMax);
  auto extra = admin_client(1);
  json r = json::parse(extra->line(), nullptr, false);
  EXPECT_EQ(r.value("ok", true), false);
  EXPECT_NE(r.value("error", std::string()).find("too many admin clients (at most 16"),
            std::string::npos)
      << r;
  EXPECT_EQ(extra->line(), "");  // then closed
  cs.pop_back();                 // one leaves: room for another
  ASSERT_TRUE(run_until([&] { return admins_[0]->clients() < rt::AdminServer::kClientsMax; }));
  auto next = admin_client(1);
  EXPECT_EQ(next->ask(R"({"cmd":"status"})")["admin_clients"], 16);
}

TEST_F(AdminTest, SocketFileLifeCycle) {
  start_pool(1);
  const std::string path = sock_path(1);
  {  // a stale socket file: bound, never listened on, left behind
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ::close(fd);
    ASSERT_TRUE(std::filesystem::is_socket(path));
  }
  rt::AdminServer& first = start_admin(1);
  EXPECT_EQ(admin_client(1)->ask(R"({"cmd":"status"})")["ok"], true);

  // A live member answers there: a second server is refused and leaves the file alone.
  rt::AdminServer second(io_, *nodes_[0], path);
  std::string why;
  EXPECT_FALSE(second.start(why));
  EXPECT_NE(why.find("a live process already answers there"), std::string::npos) << why;
  second.stop();
  EXPECT_EQ(admin_client(1)->ask(R"({"cmd":"status"})")["ok"], true);

  // Stop removes the file; a new server can start on the path again.
  first.stop();
  EXPECT_FALSE(std::filesystem::exists(path));
  {
    rt::AdminServer again(io_, *nodes_[0], path);
    ASSERT_TRUE(again.start(why)) << why;
    EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    EXPECT_EQ(admin_client(1)->ask(R"({"cmd":"status"})")["ok"], true);
  }
  EXPECT_FALSE(std::filesystem::exists(path));  // destruction removes it too
  io_.poll();                                   // handlers of the destroyed server do nothing

  // Something that is not a socket is never replaced; a path too long is named.
  std::ofstream(dir_ + "/file") << "keep me";
  rt::AdminServer on_file(io_, *nodes_[0], dir_ + "/file");
  EXPECT_FALSE(on_file.start(why));
  EXPECT_NE(why.find("not a socket"), std::string::npos) << why;
  EXPECT_TRUE(std::filesystem::is_regular_file(dir_ + "/file"));
  rt::AdminServer too_long(io_, *nodes_[0], dir_ + "/" + std::string(200, 'a'));
  EXPECT_FALSE(too_long.start(why));
  EXPECT_NE(why.find("path too long"), std::string::npos) << why;
  rt::AdminServer no_dir(io_, *nodes_[0], dir_ + "/missing/x.sock");
  EXPECT_FALSE(no_dir.start(why));
  EXPECT_NE(why.find("No such file or directory"), std::string::npos) << why;
}

TEST_F(AdminTest, MigrateHintsTheClientWhichMoves) {
  start_pool(3);
  start_admin(1);
  start_admin(2);
  auto a1 = admin_client(1);
  auto a2 = admin_client(2);
  Client& c = client(1, 50000);
  ASSERT_TRUE(run_until([&] { return c.echoed == c.input.size(); }));
  core::ConnId id = c.conn.engine().conn_id();
  uint64_t epoch = c.conn.engine().epoch();
  json r = a1->ask(json{{"cmd", "migrate"}, {"conn", id}, {"to", 2}});
  EXPECT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["conn"].get<uint64_t>(), id);
  ASSERT_TRUE(run_until([&] { return c.migrations == 1; }));
  ASSERT_EQ(c.hints.size(), 1u);
  EXPECT_EQ(c.hints[0].to, 2u);
  EXPECT_EQ(c.hints[0].hint, wire::HintReason::operator_request);
  EXPECT_EQ(c.conn.engine().server(), 2u);
  ASSERT_TRUE(run_until([&] { return owned(*a1) == 0; }));
  json l2 = a2->ask(R"({"cmd":"list"})");
  ASSERT_EQ(l2["connections"].size(), 1u) << l2;
  EXPECT_EQ(l2["connections"][0]["conn"].get<uint64_t>(), id);
  EXPECT_GT(l2["connections"][0]["epoch"].get<uint64_t>(), epoch);
  // The connection lives on at member 2: more input is echoed.
  c.input.resize(80000, 0x5a);
  c.conn.service();
  ASSERT_TRUE(run_until([&] { return c.echoed == c.input.size(); }));
  EXPECT_FALSE(c.mismatch);
  // Member 1 no longer owns it.
  r = a1->ask(json{{"cmd", "migrate"}, {"conn", id}});
  EXPECT_EQ(r["ok"], false);
  std::string err = r.value("error", std::string());
  EXPECT_TRUE(err.find("unknown connection") != std::string::npos ||
              err.find("not owned by this member") != std::string::npos)
      << r;
}

TEST_F(AdminTest, DrainMovesEveryClientAndKeepsHintingNewOnes) {
  start_pool(3);
  rt::AdminServer& admin = start_admin(1);
  auto a = admin_client(1);
  std::vector<Client*> cs;
  for (int i = 0; i < 4; ++i) cs.push_back(&client(1, 20000));
  ASSERT_TRUE(run_until([&] {
    for (auto* c : cs)
      if (c->echoed != c->input.size()) return false;
    return true;
  }));
  EXPECT_EQ(owned(*a), 4u);
  auto t0 = std::chrono::steady_clock::now();
  json r = a->ask(R"({"cmd":"drain"})");
  EXPECT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["hinted"], 4);
  EXPECT_EQ(r["owned"], 4);
  EXPECT_TRUE(admin.draining());
  ASSERT_TRUE(run_until([&] { return owned(*a) == 0; }));
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("drain of 4 connections: %lld ms\n", static_cast<long long>(ms));
  // Member 1 let go (handed off); each client completes its migration right after.
  ASSERT_TRUE(run_until([&] {
    for (auto* c : cs)
      if (c->migrations < 1) return false;
    return true;
  }));
  for (auto* c : cs) {
    EXPECT_GE(c->migrations, 1);
    EXPECT_NE(c->conn.engine().server(), 1u);
    EXPECT_EQ(c->hints.at(0).hint, wire::HintReason::draining);
  }
  // A client that opens a connection while the member drains is hinted by the next round.
  Client& late = client(1, 1000);
  ASSERT_TRUE(run_until([&] { return late.migrations == 1; }, 3s));
  EXPECT_NE(late.conn.engine().server(), 1u);
  json st = a->ask(R"({"cmd":"status"})");
  EXPECT_EQ(st["draining"], true);
  EXPECT_GE(st["drain"]["rounds"].get<uint64_t>(), 2u);
  EXPECT_EQ(st["owned"], 0);
  // Undrain: a new client stays.
  r = a->ask(R"({"cmd":"undrain"})");
  EXPECT_EQ(r["was_draining"], true);
  Client& stays = client(1, 1000);
  ASSERT_TRUE(run_until([&] { return stays.echoed == 1000; }));
  run_until([] { return false; }, 600ms);
  EXPECT_TRUE(stays.hints.empty());
  EXPECT_EQ(stays.conn.engine().server(), 1u);
  EXPECT_EQ(owned(*a), 1u);
}

TEST_F(AdminTest, DrainToANamedMember) {
  start_pool(3);
  start_admin(1);
  auto a = admin_client(1);
  Client& c = client(1, 10000);
  ASSERT_TRUE(run_until([&] { return c.echoed == c.input.size(); }));
  EXPECT_EQ(a->ask(R"({"cmd":"drain","to":3})")["ok"], true);
  ASSERT_TRUE(run_until([&] { return c.migrations == 1; }));
  EXPECT_EQ(c.conn.engine().server(), 3u);
  EXPECT_EQ(c.hints.at(0).to, 3u);
}

// The admin protocol's request decoder under mutation (a seeded property test next to the
// libFuzzer harnesses of the wire decoders): valid requests with bytes flipped, inserted, cut
// and duplicated, numbers replaced by extremes and wrong types, deep nesting. Every line gets
// one reply object with a boolean "ok", nothing throws, and the member answers afterwards.
TEST_F(AdminTest, MutatedRequestsAlwaysGetAReplyObject) {
  start_pool(2);
  rt::AdminServer& admin = start_admin(1);
  Client& c = client(1, 1000);
  ASSERT_TRUE(run_until([&] { return c.echoed == c.input.size(); }));
  const std::string conn = std::to_string(c.conn.engine().conn_id());
  const std::vector<std::string> seeds = {
      R"({"cmd":"status"})",
      R"({"cmd":"list"})",
      R"({"cmd":"migrate","conn":)" + conn + R"(,"to":2})",
      R"({"cmd":"drain","to":2})",
      R"({"cmd":"undrain"})",
  };
  const std::vector<std::string> values = {"-1", "1e308", "18446744073709551616", "\"2\"", "null", "[]", "{}",
                                           "true", "0.5", "\"\\u0000\"", "4294967296"};
  std::mt19937_64 rng(20261202);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  size_t answered = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string line = seeds[pick(seeds.size())];
    const int edits = 1 + static_cast<int>(pick(4));
    for (int e = 0; e < edits && !line.empty(); ++e) {
      switch (pick(6)) {
        case 0: line[pick(line.size())] = static_cast<char>(rng()); break;
        case 1: line.insert(pick(line.size() + 1), 1, static_cast<char>(rng())); break;
        case 2: line.resize(pick(line.size() + 1)); break;
        case 3: line += line.substr(pick(line.size())); break;
        case 4: {  // a value replaced by an extreme or a wrong type
          size_t colon = line.find(':', pick(line.size()));
          if (colon == std::string::npos) break;
          size_t end = line.find_first_of(",}", colon);
          if (end == std::string::npos) break;
          line.replace(colon + 1, end - colon - 1, values[pick(values.size())]);
          break;
        }
        default: line = std::string(1 + pick(3000), '[') + line; break;  // deep nesting
      }
    }
    std::string reply = admin.handle(line);
    json r = json::parse(reply, nullptr, false);
    ASSERT_TRUE(r.is_object()) << "request " << i << ": " << line << " -> " << reply;
    ASSERT_TRUE(r.contains("ok") && r["ok"].is_boolean()) << line << " -> " << reply;
    ++answered;
  }
  EXPECT_EQ(answered, 20000u);
  admin.handle(R"({"cmd":"undrain"})");
  auto a = admin_client(1);
  json st = a->ask(R"({"cmd":"status"})");
  EXPECT_EQ(st["ok"], true) << st;
  EXPECT_EQ(st["member"], 1);
}

}  // namespace
