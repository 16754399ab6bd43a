// mtcp-floor: the physical floor of a migration that moves S bytes of state. It times, over
// loopback, what no transport can avoid: opening a fresh TCP connection and receiving S bytes
// through it (connect start -> last byte). A sender thread in this process serves each accepted
// connection S bytes from memory prepared in advance, so nothing but the kernel's TCP path is
// measured. bench/run.py puts the median beside the migration times (docs/performance.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kSizeMax = 64u << 20;  // largest transfer timed
constexpr size_t kChunk = 256u << 10;   // one send or receive at most

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string sys_error(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Serves `count` connections, each `size` bytes then close. Returns an error text or "".
std::string serve(int listener, size_t size, int count, const std::vector<char>& data) {
  for (int i = 0; i < count; ++i) {
    Fd c(::accept(listener, nullptr, nullptr));
    if (c.fd < 0) return sys_error("accept");
    size_t sent = 0;
    while (sent < size) {
      ssize_t n = ::send(c.fd, data.data() + sent % kChunk, std::min(kChunk, size - sent), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return sys_error("send");
      }
      sent += static_cast<size_t>(n);
    }
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mtcp-floor: time a fresh loopback TCP connection that receives SIZE bytes (the physical floor of a migration)"};
  size_t size = 16384;
  int count = 100;
  bool json = false;
  app.add_option("--size", size, "Bytes received per connection")->capture_default_str()->check(CLI::Range(size_t{0}, kSizeMax));
  app.add_option("-n,--count", count, "Connections timed")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_flag("-J,--json", json, "Print the result as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  Fd listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if (listener.fd < 0 || ::bind(listener.fd, sa, len) != 0 || ::listen(listener.fd, 16) != 0 ||
      ::getsockname(listener.fd, sa, &len) != 0) {
    std::fprintf(stderr, "mtcp-floor: %s\n", sys_error("listen on loopback").c_str());
    return 1;
  }
  std::vector<char> data(kChunk, 'x');
  std::string serve_error;
  std::thread sender([&] { serve_error = serve(listener.fd, size, count, data); });

  std::vector<double> us;
  std::vector<char> buf(kChunk);
  std::string error;
  for (int i = 0; i < count && error.empty(); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    Fd c(::socket(AF_INET, SOCK_STREAM, 0));
    if (c.fd < 0 || ::connect(c.fd, sa, len) != 0) {
      error = sys_error("connect");
      break;
    }
    size_t got = 0;
    for (;;) {
      ssize_t n = ::recv(c.fd, buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = sys_error("recv");
        break;
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    if (error.empty() && got != size) error = "received " + std::to_string(got) + " bytes, expected " + std::to_string(size);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!error.empty()) ::shutdown(listener.fd, SHUT_RDWR);  // unblocks the sender's accept
  sender.join();
  if (error.empty()) error = serve_error;

  std::sort(us.begin(), us.end());
  auto pct = [&](double q) { return us.empty() ? 0.0 : us[static_cast<size_t>(q * static_cast<double>(us.size() - 1))]; };
  nlohmann::json r = {{"mode", "floor"}, {"size", size}, {"count", us.size()}, {"p50_us", pct(0.5)},
                      {"p99_us", pct(0.99)}, {"verdict", error.empty() ? "ok" : "failed"}, {"error", error}};
  if (json) {
    std::printf("%s\n", r.dump().c_str());
  } else if (error.empty()) {
    std::printf("ok: %zu bytes over a fresh loopback connection: p50 %.1f us, p99 %.1f us (%zu connections)\n", size,
                pct(0.5), pct(0.99), us.size());
  }
  if (!error.empty()) std::fprintf(stderr, "mtcp-floor: %s\n", error.c_str());
  return error.empty() ? 0 : 1;
}
