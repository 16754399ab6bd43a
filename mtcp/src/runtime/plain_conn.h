// The plain-TCP adapter: a client that never sent the M-TCP preface is served by the same
// service app (sdk/app.h) over its kernel socket, without snapshots or migration
// (docs/ARCHITECTURE.md "plain TCP"). Input and output are bounded like a connection's logs:
// reading stops while kPlainInputBytesMax is unread, and writes take at most
// kPlainOutputBytesMax not yet written to the socket.
#pragma once
#include <asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/buffer.h"
#include "sdk/app.h"

namespace mtcp::rt {

inline constexpr size_t kPlainInputBytesMax = 4u << 20;
inline constexpr size_t kPlainOutputBytesMax = 4u << 20;

// Shared by a member's plain connections: how many are live, how many idled out.
struct PlainStats {
  size_t live = 0;
  uint64_t idle_closed = 0;
  size_t buffered = 0;  // input not yet read by the apps plus output not yet written, all connections
};
struct PlainEnv {
  uint64_t idle_timeout_ms = 300000;  // nothing read or written for this long: closed
  std::shared_ptr<PlainStats> stats = std::make_shared<PlainStats>();
};

// Serves `sock` with a new app from `factory`; `head` holds bytes already read from it. The
// connection keeps itself alive until it ends. `id` names it in log lines.
void serve_plain(asio::ip::tcp::socket sock, Bytes head, sdk::AppFactory& factory, uint64_t id,
                 std::function<void(const std::string&)> log, const PlainEnv& env);

}  // namespace mtcp::rt
