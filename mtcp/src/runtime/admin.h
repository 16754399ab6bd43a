// The local admin socket of a pool member (docs/API.md "Admin socket and mtcpctl").
//
// A Unix stream socket at a filesystem path, one JSON object per line in each direction:
//   {"cmd":"status"}                      member id, draining flag, table sizes, engine counters
//   {"cmd":"list"}                        the connections this member owns, with positions
//   {"cmd":"migrate","conn":ID,"to":N}    send that connection's client a HINT (to: 0 = any)
//   {"cmd":"drain","to":N}                hint every owned connection now and every 250 ms
//   {"cmd":"undrain"}                     stop hinting
// Replies are {"ok":true,...} or {"ok":false,"error":"..."}; a bad request never closes the
// admin connection. A server cannot move a client: it asks with a HINT and the client migrates.
//
// Runs on the member's io_context (one thread), next to the ServerNode it drives.
#pragma once
#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "runtime/server_node.h"

namespace mtcp::rt {

class AdminServer {
 public:
  static constexpr size_t kRequestBytesMax = 4096;  // one request line, newline excluded
  static constexpr size_t kClientsMax = 16;         // admin connections open at once
  static constexpr std::chrono::milliseconds kRehintEvery{250};  // while draining
  static constexpr std::chrono::milliseconds kClientIdleMax{
      300000};  // then the admin connection is closed

  AdminServer(asio::io_context& io, ServerNode& node, std::string path);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds the socket at path(). Refuses (false, `why`) if the path is taken by a live
  // listener or by something that is not a socket; replaces a stale socket file.
  bool start(std::string& why);
  // Closes every admin connection and removes the socket file (if it is still ours).
  void stop();

  // One request line in, one reply object out (without the newline). Public for tests.
  std::string handle(std::string_view line);

  const std::string& path() const { return path_; }
  bool draining() const { return draining_; }
  size_t clients() const { return clients_.size(); }

 private:
  struct Client;
  void accept();
  void read(const std::shared_ptr<Client>& c);
  void process(const std::shared_ptr<Client>& c);
  void write(const std::shared_ptr<Client>& c, std::string reply);
  void arm_idle(const std::shared_ptr<Client>& c);
  void close(const std::shared_ptr<Client>& c);
  void drain_tick();
  // Hints every owned connection; returns how many hints were queued, `unattached` those
  // without a client subflow right now.
  size_t hint_all(size_t& unattached);

  asio::io_context& io_;
  ServerNode& node_;
  std::string path_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::steady_timer drain_timer_;
  asio::steady_timer accept_retry_;
  // Pending handlers check this before touching the server (it may be gone by then).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::set<std::shared_ptr<Client>> clients_;
  bool started_ = false;
  bool stopped_ = false;
  uint64_t file_dev_ = 0, file_ino_ = 0;  // the socket file we bound (removed only if unchanged)

  bool draining_ = false;
  core::ServerId drain_to_ = 0;
  std::chrono::steady_clock::time_point drain_since_{};
  uint64_t drain_rounds_ = 0;
  uint64_t drain_hints_ = 0;
};

}  // namespace mtcp::rt
