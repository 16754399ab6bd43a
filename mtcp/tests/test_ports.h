// Loopback ports for tests that start real members. Below the ephemeral range (32768-60999):
// a port the kernel handed out for a moment (bind to port 0, release) can be taken again at
// once by any outgoing connection on the machine, the members' own among them, and the member
// then fails to listen ("Address already in use"). Each test process walks its own stretch of
// [kTestPortFirst, kTestPortEnd), chosen by its PID, and skips ports something listens on.
#pragma once
#include <unistd.h>

#include <asio.hpp>
#include <cstdint>
#include <stdexcept>

namespace mtcp::test {

inline constexpr uint16_t kTestPortFirst = 20000;
inline constexpr uint16_t kTestPortEnd = 32000;

inline uint16_t free_port() {
  constexpr uint32_t span = kTestPortEnd - kTestPortFirst;
  static uint32_t next = (static_cast<uint32_t>(::getpid()) * 97u) % span;
  asio::io_context io;
  for (uint32_t tries = 0; tries < span; ++tries) {
    auto port = static_cast<uint16_t>(kTestPortFirst + next);
    next = (next + 1) % span;
    asio::ip::tcp::acceptor a(io);
    asio::error_code ec;
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    a.open(ep.protocol(), ec);
    if (!ec) a.bind(ep, ec);  // no SO_REUSEADDR: a port in TIME_WAIT counts as taken
    if (!ec) return port;
  }
  throw std::runtime_error("no free loopback port in the test range");
}

}  // namespace mtcp::test
