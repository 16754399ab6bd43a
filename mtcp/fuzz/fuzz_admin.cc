// libFuzzer harness for the admin protocol (runtime/admin.h): one request line in, one reply
// object out. A real member (ServerNode, echo service) is started once on loopback, on ports
// the kernel picks; its admin server answers each input through AdminServer::handle, the
// function the admin socket calls for every line.
//
// Checked: no crash, no exception escapes; every reply is one line holding a JSON object with a
// boolean "ok", and a refusal carries an "error" string; the member's own state stays sane
// (after "undrain" it is not draining). The event loop is polled after each request, so the
// drain timer's work runs too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include <asio.hpp>

#include "runtime/admin.h"
#include "runtime/server_node.h"
#include "sdk/service.h"
#include "services/builtin.h"

namespace {
using json = nlohmann::json;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_admin: check failed: %s\n", what);
    std::abort();
  }
}

struct Member {
  asio::io_context io;
  mtcp::rt::PoolConfig pool;
  std::unique_ptr<mtcp::sdk::AppFactory> factory;
  std::unique_ptr<mtcp::rt::ServerNode> node;
  std::unique_ptr<mtcp::rt::AdminServer> admin;

  Member() {
    for (size_t i = 0; i < pool.pool_key.size(); ++i) pool.pool_key[i] = static_cast<uint8_t>(i * 37 + 11);
    // Port 0: the kernel picks free ports; the harness never connects to them.
    pool.members.push_back({1, "127.0.0.1:0", "127.0.0.1:0"});
    pool.members.push_back({2, "127.0.0.1:9", "127.0.0.1:9"});  // named only, never reached
    mtcp::sdk::Registry reg;
    mtcp::svc::register_builtin_services(reg);
    std::string why;
    factory = reg.find("echo")->start(mtcp::sdk::ServiceEnv{&io, [](const std::string&) {}}, why);
    check(factory != nullptr, "the echo service starts");
    node = std::make_unique<mtcp::rt::ServerNode>(io, pool, 1, *factory, [](const std::string&) {});
    if (!node->start(why)) {
      std::fprintf(stderr, "fuzz_admin: the member did not start: %s\n", why.c_str());
      std::abort();
    }
    // Not bound to a socket: handle() is what the socket would call for each line.
    admin = std::make_unique<mtcp::rt::AdminServer>(io, *node, "/nonexistent-mtcp-fuzz/admin.sock");
  }
};

Member& member() {
  static Member* m = new Member();  // lives for the whole run (libFuzzer exits without unwinding)
  return *m;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Member& m = member();
  std::string_view line(reinterpret_cast<const char*>(data), size);
  const std::string reply = m.admin->handle(line);
  check(reply.find('\n') == std::string::npos, "a reply is one line");
  json r = json::parse(reply, nullptr, false);
  check(r.is_object(), "a reply is a JSON object");
  check(r.contains("ok") && r["ok"].is_boolean(), "a reply has a boolean ok");
  if (!r["ok"].get<bool>()) check(r.contains("error") && r["error"].is_string(), "a refusal has an error string");
  m.io.poll();
  m.io.restart();
  return 0;
}
