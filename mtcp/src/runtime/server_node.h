// A pool member on real sockets: the sans-IO ServerEngine driven by an Asio event loop.
// Data port: clients' subflows (kernel TCP). Control port: the other members, one TCP
// connection per direction, carrying whole control messages. One thread, no busy polling:
// every socket and the engine's next deadline are waited for by the io_context. The engine and
// the service's apps are driven by the engine host (host/engine_host.h); this class is its
// transport: sockets, timers and the plain-TCP adapter.
#pragma once
#include <asio.hpp>
#include <deque>
#include <functional>
#include <map>
#include <unordered_set>
#include <memory>

#include "core/server.h"
#include "host/engine_host.h"
#include "sdk/app.h"
#include "runtime/os.h"
#include "runtime/pool_config.h"
#include "runtime/subflow_socket.h"

namespace mtcp::rt {

class ServerNode final : private host::Transport {
 public:
  using Log = std::function<void(const std::string&)>;
  ServerNode(asio::io_context& io, const PoolConfig& pool, core::ServerId self, sdk::AppFactory& factory, Log log);
  ~ServerNode();
  // Binds both ports. False with `why` (e.g. "address already in use") on failure.
  bool start(std::string& why);
  void stop();
  core::ServerEngine& engine() { return *engine_; }
  host::EngineHost& host() { return *host_; }
  // Run the engine and the application until quiet; call after touching the engine directly.
  void service();

 private:
  struct Peer;
  struct Inbound;
  struct Closing;
  static void drain_until_eof(std::shared_ptr<Closing> c);
  void accept_data();
  void accept_control();
  void read_sub(core::SubflowId id);
  void write_sub(core::SubflowId id);
  void close_sub(core::SubflowId id);
  void lost(core::SubflowId id);  // a read or write failed: the subflow is gone
  // host::Transport
  void send_control(core::ServerId to, Bytes msg) override;
  void close_subflow(core::SubflowId sub) override { close_sub(sub); }
  void plain_tcp(core::SubflowId sub, Bytes head) override;
  bool subflow_ready(core::SubflowId sub) override;
  std::vector<core::SubflowId> subflows() const override;
  void post_service() override;
  void write_peer(core::ServerId to);
  void connect_peer(core::ServerId to);
  void read_inbound(std::shared_ptr<Inbound> in);
  void arm_timer();

  asio::io_context& io_;
  PoolConfig pool_;
  core::ServerId self_;
  sdk::AppFactory& factory_;
  Log log_;
  OsRandom rng_;
  std::unique_ptr<core::ServerEngine> engine_;
  std::unique_ptr<host::EngineHost> host_;
  asio::ip::tcp::acceptor data_acceptor_;
  asio::ip::tcp::acceptor control_acceptor_;
  EngineTimer timer_;
  // shared_ptr: pending reads and writes hold their subflow (subflow_socket.h).
  std::map<core::SubflowId, std::shared_ptr<SubflowSocket>> subs_;
  std::map<core::ServerId, std::unique_ptr<Peer>> peers_;
  core::SubflowId next_sub_ = 1;
  bool service_posted_ = false;  // a yielded service pass is queued on the io_context
  // Shared with handlers posted from other threads (an app's Waker): false once this is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool stopped_ = false;
};

}  // namespace mtcp::rt
