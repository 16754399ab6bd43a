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
#include "runtime/plain_conn.h"
#include "runtime/runtime_counters.h"
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
  // The runtime's own counters (accept back-off, control handshakes, idle closes).
  RuntimeCounters runtime_counters() const;
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
  // An accept failed: back off (no descriptor left: shed the waiting connection through the
  // reserve descriptor first) and call `again` later, never at once (that spun at 100% CPU).
  void accept_failed(asio::ip::tcp::acceptor& a, asio::steady_timer& t, const asio::error_code& ec, void (ServerNode::*again)());
  void shed_one(asio::ip::tcp::acceptor& a);
  void open_inbound(asio::ip::tcp::socket sock);
  void close_inbound(const std::shared_ptr<Inbound>& in);
  bool on_peer_hello(const std::shared_ptr<Inbound>& in, const wire::ControlMessage& m);
  void peer_handshake(core::ServerId to);
  void drop_peer(core::ServerId to);
  void flush_peers();  // writes what send_control queued for connected peers
  void peer_failed(Peer& p);  // a connection attempt failed or broke quickly: back off
  void housekeeping();
  void trim_heap(core::TimeMs now);
  void log_security();
  void read_sub(core::SubflowId id);
  void write_sub(core::SubflowId id);
  void close_sub(core::SubflowId id);
  void lost(core::SubflowId id);  // a read or write failed: the subflow is gone
  // host::Transport
  void send_control(core::ServerId to, Bytes msg) override;
  void send_control_stream(core::ServerId to, std::shared_ptr<wire::ControlEncoder> m) override;
  void queue_control(core::ServerId to, Bytes msg, std::shared_ptr<wire::ControlEncoder> stream);
  void close_subflow(core::SubflowId sub) override { close_sub(sub); }
  void plain_tcp(core::SubflowId sub, Bytes head) override;
  bool subflow_ready(core::SubflowId sub) override;
  std::vector<core::SubflowId> subflows() const override;
  void post_service() override;
  void write_peer(core::ServerId to);
  void connect_peer(core::ServerId to);
  void read_inbound(std::shared_ptr<Inbound> in);
  // One result of the inbound connection's reader: a message goes to the engine (or the
  // peer's hello is checked); an error closes the connection. False when it was closed.
  bool take_inbound(const std::shared_ptr<Inbound>& in, Result<std::optional<wire::ControlMessage>>& m);
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
  asio::steady_timer data_backoff_;
  asio::steady_timer control_backoff_;
  asio::steady_timer housekeeping_;
  int reserve_fd_ = -1;  // held open so that, out of descriptors, one can be freed to shed a client
  EngineTimer timer_;
  RuntimeCounters rc_;
  PlainEnv plain_;
  // Inbound control connections by a local key; verified ones also by peer id (the newest).
  std::map<uint64_t, std::shared_ptr<Inbound>> inbound_;
  std::map<core::ServerId, uint64_t> inbound_by_peer_;
  uint64_t next_inbound_ = 1;
  // The security log line (log_security): the counters last reported and when.
  Counters logged_engine_;
  RuntimeCounters logged_rt_;
  core::TimeMs logged_at_ = 0;
  size_t trim_peak_ = 0;  // most connections seen since the last heap trim
  core::TimeMs trimmed_at_ = 0;
  // shared_ptr: pending reads and writes hold their subflow (subflow_socket.h).
  std::map<core::SubflowId, std::shared_ptr<SubflowSocket>> subs_;
  std::map<core::ServerId, std::unique_ptr<Peer>> peers_;
  std::vector<core::ServerId> peers_to_flush_;
  bool in_service_ = false;  // inside service(): control messages wait for its end  // peers with messages queued by this service pass
  core::SubflowId next_sub_ = 1;
  bool service_posted_ = false;  // a yielded service pass is queued on the io_context
  // Shared with handlers posted from other threads (an app's Waker): false once this is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool stopped_ = false;
};

}  // namespace mtcp::rt
