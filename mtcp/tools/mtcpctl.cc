// mtcpctl: talk to a running pool member over its local admin socket (mtcpd --admin PATH).
//   mtcpctl -s PATH status
//   mtcpctl -s PATH list
//   mtcpctl -s PATH migrate CONN [--to N]
//   mtcpctl -s PATH drain [--to N] [--wait] [--timeout S]
//   mtcpctl -s PATH undrain
// --json prints the member's raw reply lines. Exit status: 0 success, 1 the member refused or
// the drain wait timed out, 2 bad usage or the admin socket cannot be reached.
// Protocol: one JSON object per line each way (docs/API.md "Admin socket and mtcpctl").
#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace {

using json = nlohmann::ordered_json;
using local = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kReplyTimeout{10};     // one request's round trip
constexpr std::chrono::milliseconds kPollEvery{200};  // drain --wait
constexpr size_t kReplyBytesMax = 256u << 20;         // a list of a full connection table fits

// One admin connection; requests are answered in order.
class Admin {
 public:
  explicit Admin(std::string path) : path_(std::move(path)) {}

  bool connect(std::string& why) {
    asio::error_code ec;
    bool done = false;
    sock_.async_connect(local::endpoint(path_), [&](asio::error_code e) {
      ec = e;
      done = true;
    });
    if (!wait(done)) ec = asio::error::timed_out;
    if (ec) why = "cannot reach the admin socket " + path_ + ": " + ec.message();
    return !ec;
  }

  // Sends one request and reads one reply line. False with `why` on an I/O problem (the
  // member's own refusals are replies with "ok": false).
  bool request(const json& req, std::string& line, json& reply, std::string& why) {
    std::string out = req.dump() + "\n";
    asio::error_code ec;
    bool done = false;
    asio::async_write(sock_, asio::buffer(out), [&](asio::error_code e, size_t) {
      ec = e;
      done = true;
    });
    if (!wait(done)) ec = asio::error::timed_out;
    if (!ec) {
      done = false;
      asio::async_read_until(sock_, asio::dynamic_buffer(buf_, kReplyBytesMax), '\n',
                             [&](asio::error_code e, size_t) {
                               ec = e;
                               done = true;
                             });
      if (!wait(done)) ec = asio::error::timed_out;
    }
    if (ec) {
      why =
          "admin socket " + path_ + ": " +
          (ec == asio::error::eof ? std::string("the member closed the connection") : ec.message());
      return false;
    }
    size_t nl = buf_.find('\n');
    line = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    reply = json::parse(line, nullptr, false);
    if (!reply.is_object() || !reply.contains("ok") || !reply["ok"].is_boolean()) {
      why = "admin socket " + path_ + ": not an admin reply: " + line.substr(0, 200);
      return false;
    }
    return true;
  }

 private:
  // Runs the loop until `done` or the reply timeout; on timeout the socket is closed.
  bool wait(bool& done) {
    io_.restart();
    auto deadline = Clock::now() + kReplyTimeout;
    while (!done && Clock::now() < deadline) {
      if (io_.run_one_until(deadline) == 0 && io_.stopped()) break;
    }
    if (!done) {
      asio::error_code ignore;
      sock_.close(ignore);
      io_.restart();
      io_.run_for(std::chrono::milliseconds(100));  // let the aborted handler run
    }
    return done;
  }

  std::string path_;
  asio::io_context io_;
  local::socket sock_{io_};
  std::string buf_;
};

std::string u64(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_number()) return "-";
  return it->dump();
}

void print_status(const json& r) {
  std::printf("member %s (%s transfer), draining: %s\n", u64(r, "member").c_str(),
              r.value("transfer", std::string("?")).c_str(),
              r.value("draining", false) ? "yes" : "no");
  if (r.contains("drain") && r["drain"].is_object()) {
    const json& d = r["drain"];
    std::printf("drain: to %s, for %s ms, %s rounds, %s hints sent\n",
                u64(d, "to") == "0" ? "any member" : ("member " + u64(d, "to")).c_str(),
                u64(d, "for_ms").c_str(), u64(d, "rounds").c_str(), u64(d, "hints").c_str());
  }
  std::printf(
      "connections %s (owned %s, %s with a client attached), subflows %s, admin clients %s\n",
      u64(r, "connection_count").c_str(), u64(r, "owned").c_str(), u64(r, "owned_attached").c_str(),
      u64(r, "subflow_count").c_str(), u64(r, "admin_clients").c_str());
  if (r.contains("counters") && r["counters"].is_object()) {
    std::printf("counters:\n");
    for (const auto& [name, value] : r["counters"].items())
      std::printf("  %-26s %s\n", name.c_str(), value.dump().c_str());
  }
}

void print_list(const json& r) {
  const json& conns = r["connections"];
  if (!conns.is_array() || conns.empty()) {
    std::printf("no connections owned by member %s", u64(r, "member").c_str());
  } else {
    std::printf("%-20s %-7s %6s %8s %4s %14s %14s %14s %14s %8s\n", "CONN", "ROLE", "EPOCH",
                "COUNTER", "ATT", "IN_END", "APP_IN", "OUT_END", "OUT_ACKED", "SNAP_ID");
    for (const auto& c : conns) {
      std::printf("%-20s %-7s %6s %8s %4s %14s %14s %14s %14s %8s\n", u64(c, "conn").c_str(),
                  c.value("role", std::string("?")).c_str(), u64(c, "epoch").c_str(),
                  u64(c, "counter").c_str(), c.value("attached", false) ? "yes" : "no",
                  u64(c, "in_end").c_str(), u64(c, "app_in").c_str(), u64(c, "out_end").c_str(),
                  u64(c, "out_acked").c_str(), u64(c, "snap_id").c_str());
    }
    std::printf("%zu connection%s owned by member %s", conns.size(), conns.size() == 1 ? "" : "s",
                u64(r, "member").c_str());
  }
  std::string others = u64(r, "other_connections");
  if (others != "0" && others != "-")
    std::printf(" (%s more held here: frozen or replica)", others.c_str());
  std::printf("%s\n", r.value("draining", false) ? "; draining" : "");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mtcpctl: inspect and steer a running M-TCP pool member through its admin socket (mtcpd "
      "--admin PATH)."};
  app.footer(
      "Exit status: 0 success; 1 the member refused the request or drain --wait timed out; 2 bad "
      "usage or the\n"
      "admin socket cannot be reached. Protocol and limits: docs/API.md \"Admin socket and "
      "mtcpctl\".");
  app.fallthrough();
  app.require_subcommand(1);
  std::string path;
  bool raw = false;
  app.add_option("-s,--socket", path, "The member's admin socket (mtcpd --admin PATH)")
      ->required()
      ->envname("MTCP_ADMIN");
  app.add_flag("--json", raw, "Print the member's raw JSON replies, one per line");
  auto* status = app.add_subcommand(
      "status", "Member id, draining flag, connection and subflow counts, engine counters");
  auto* list = app.add_subcommand(
      "list", "Connections this member owns: sequence numbers, owner epoch, counter");
  auto* migrate = app.add_subcommand(
      "migrate", "Ask one connection's client to migrate (a HINT; the client moves)");
  uint64_t conn = 0;
  uint32_t migrate_to = 0;
  migrate->add_option("CONN", conn, "Connection id (see list)")->required();
  migrate->add_option("--to", migrate_to, "Member to move to (0: the client picks)")
      ->capture_default_str();
  auto* drain = app.add_subcommand(
      "drain", "Hint every client to migrate away, now and every 250 ms until undrain");
  uint32_t drain_to = 0;
  bool wait = false;
  double timeout_s = 30;
  drain->add_option("--to", drain_to, "Member to move to (0: each client picks)")
      ->capture_default_str();
  drain->add_flag("--wait", wait, "Wait until the member owns no connection (progress on stderr)");
  drain->add_option("--timeout", timeout_s, "With --wait: give up after this many seconds (exit 1)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  auto* undrain = app.add_subcommand("undrain", "Stop hinting clients away");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  json req;
  if (status->parsed())
    req = {{"cmd", "status"}};
  else if (list->parsed())
    req = {{"cmd", "list"}};
  else if (migrate->parsed())
    req = {{"cmd", "migrate"}, {"conn", conn}, {"to", migrate_to}};
  else if (drain->parsed())
    req = {{"cmd", "drain"}, {"to", drain_to}};
  else if (undrain->parsed())
    req = {{"cmd", "undrain"}};

  Admin admin(path);
  std::string why, line;
  json reply;
  if (!admin.connect(why) || !admin.request(req, line, reply, why)) {
    std::fprintf(stderr, "mtcpctl: %s\n", why.c_str());
    return 2;
  }
  if (raw) std::printf("%s\n", line.c_str());
  if (!reply["ok"].get<bool>()) {
    std::fprintf(stderr, "mtcpctl: the member refused: %s\n",
                 reply.value("error", std::string("(no reason given)")).c_str());
    return 1;
  }
  if (raw && !(drain->parsed() && wait)) return 0;

  if (status->parsed()) {
    print_status(reply);
  } else if (list->parsed()) {
    print_list(reply);
  } else if (migrate->parsed()) {
    std::printf("connection %s hinted to migrate to %s\n", u64(reply, "conn").c_str(),
                migrate_to ? ("member " + std::to_string(migrate_to)).c_str() : "any member");
  } else if (undrain->parsed()) {
    std::printf("%s\n",
                reply.value("was_draining", false) ? "no longer draining" : "was not draining");
  } else if (drain->parsed()) {
    if (!raw) {
      std::printf("draining: %s of %s owned connections hinted to move to %s",
                  u64(reply, "hinted").c_str(), u64(reply, "owned").c_str(),
                  drain_to ? ("member " + std::to_string(drain_to)).c_str() : "any member");
      std::string un = u64(reply, "unattached");
      if (un != "0") std::printf(" (%s without a client attached right now)", un.c_str());
      std::printf("\n");
      std::fflush(stdout);
    }
    if (!wait) return 0;
    auto start = Clock::now();
    auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(timeout_s));
    int64_t last = -1, last_attached = -1;
    json st;
    for (;;) {
      if (!admin.request({{"cmd", "status"}}, line, st, why)) {
        std::fprintf(stderr, "mtcpctl: %s\n", why.c_str());
        return 2;
      }
      if (!st["ok"].get<bool>()) {
        if (raw) std::printf("%s\n", line.c_str());
        std::fprintf(stderr, "mtcpctl: the member refused: %s\n",
                     st.value("error", std::string("(no reason given)")).c_str());
        return 1;
      }
      int64_t owned = st.value("owned", int64_t{-1});
      double secs = std::chrono::duration<double>(Clock::now() - start).count();
      if (owned == 0) {
        if (raw)
          std::printf("%s\n", line.c_str());
        else
          std::printf("drained: member %s owns no connection (%.2f s)\n", u64(st, "member").c_str(),
                      secs);
        return 0;
      }
      int64_t attached = st.value("owned_attached", owned);
      if (owned != last || attached != last_attached) {
        std::fprintf(stderr, "mtcpctl: %.1f s: %lld connection%s remain%s", secs,
                     static_cast<long long>(owned), owned == 1 ? "" : "s", owned == 1 ? "s" : "");
        // Without a subflow nobody can be hinted: the member frees those after orphan_timeout_ms.
        if (attached < owned)
          std::fprintf(stderr, " (%lld without a client attached: freed after the orphan timeout)",
                       static_cast<long long>(owned - attached));
        std::fprintf(stderr, "\n");
        last = owned;
        last_attached = attached;
      }
      if (Clock::now() >= deadline) {
        if (raw) std::printf("%s\n", line.c_str());
        std::fprintf(
            stderr,
            "mtcpctl: drain timed out after %g s: %lld connection%s still owned by member %s",
            timeout_s, static_cast<long long>(owned), owned == 1 ? "" : "s",
            u64(st, "member").c_str());
        if (attached < owned)
          std::fprintf(stderr, " (%lld without a client attached)",
                       static_cast<long long>(owned - attached));
        std::fprintf(stderr, "; the member keeps draining (undrain to stop)\n");
        return 1;
      }
      std::this_thread::sleep_for(kPollEvery);
    }
  }
  return 0;
}
