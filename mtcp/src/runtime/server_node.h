// A pool member on real sockets: the sans-IO ServerEngine driven by an Asio event loop.
// Data port: clients' subflows (kernel TCP). Control port: the other members, one TCP
// connection per direction, carrying whole control messages. One thread, no busy polling:
// every socket and the engine's next deadline are waited for by the io_context.
#pragma once
#include <asio.hpp>
#include <deque>
#include <functional>
#include <map>
#include <unordered_set>
#include <memory>

#include "core/server.h"
#include "runtime/os.h"
#include "runtime/pool_config.h"

namespace mtcp::rt {

// The server application: told about connections, then stepped until it makes no progress.
class ServerApp {
 public:
  virtual ~ServerApp() = default;
  virtual void on_event(core::ServerEngine& engine, const core::ServerEvent& ev) = 0;
  // Read, compute, write, snapshot as far as possible; true if anything moved. Only the
  // connections in `ready` can have something to do (ready.all: any of them): the others
  // have had no input, acknowledgement, event or call since they were last stepped.
  virtual bool step(core::ServerEngine& engine, const core::ServerEngine::Touched& ready) = 0;
  // A client that never sent the M-TCP preface: serve it as plain TCP (default: close it).
  virtual void on_plain(asio::ip::tcp::socket sock, Bytes head) {
    (void)head;
    asio::error_code ec;
    sock.close(ec);
  }
};

class ServerNode {
 public:
  ServerNode(asio::io_context& io, const PoolConfig& pool, core::ServerId self, ServerApp& app);
  ~ServerNode();
  // Binds both ports. False with `why` (e.g. "address already in use") on failure.
  bool start(std::string& why);
  void stop();
  core::ServerEngine& engine() { return *engine_; }
  // Run the engine and the application until quiet; call after touching the engine directly.
  void service();

 private:
  struct Sub;
  struct Peer;
  struct Inbound;
  struct Closing;
  static void drain_until_eof(std::shared_ptr<Closing> c);
  void accept_data();
  void accept_control();
  void read_sub(core::SubflowId id);
  void write_sub(core::SubflowId id);
  void close_sub(core::SubflowId id);
  void send_control(core::ServerId to, Bytes msg);
  void write_peer(core::ServerId to);
  void connect_peer(core::ServerId to);
  void read_inbound(std::shared_ptr<Inbound> in);
  void arm_timer();

  asio::io_context& io_;
  PoolConfig pool_;
  core::ServerId self_;
  ServerApp& app_;
  OsRandom rng_;
  std::unique_ptr<core::ServerEngine> engine_;
  asio::ip::tcp::acceptor data_acceptor_;
  asio::ip::tcp::acceptor control_acceptor_;
  asio::steady_timer timer_;
  core::TimeMs armed_ = core::kNever;  // deadline the timer waits for
  // shared_ptr: pending reads and writes hold their subflow (see client_conn.h).
  std::map<core::SubflowId, std::shared_ptr<Sub>> subs_;
  std::map<core::ServerId, std::unique_ptr<Peer>> peers_;
  core::SubflowId next_sub_ = 1;
  // What service() must look at, from the engine's take_touched() and this node's own events
  // (a read or a write that completed): it never walks every connection unless told to.
  void absorb_touched();
  std::unordered_set<core::SubflowId> ready_subs_;
  bool ready_all_subs_ = true;
  std::unordered_set<core::ConnId> ready_conns_;
  bool ready_all_conns_ = true;
  bool in_service_ = false;
  bool again_ = false;
  bool service_posted_ = false;  // a yielded service pass is queued on the io_context
  bool stopped_ = false;
};

}  // namespace mtcp::rt
