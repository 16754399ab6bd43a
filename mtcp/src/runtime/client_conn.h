// One M-TCP client connection on real sockets: the sans-IO ClientEngine driven by Asio.
// The application writes and reads through engine(); after it does, it calls service().
// on_change runs after every service round, so the application can move more data.
#pragma once
#include <asio.hpp>
#include <functional>
#include <map>
#include <memory>

#include "core/client.h"
#include "runtime/os.h"
#include "runtime/pool_config.h"
#include "runtime/subflow_socket.h"

namespace mtcp::rt {

class ClientConn {
 public:
  ClientConn(asio::io_context& io, const PoolConfig& pool);
  ~ClientConn();
  void connect(core::ServerId first);
  core::ClientEngine& engine() { return engine_; }
  void service();
  void close_all();
  // Sends what the engine still has queued (the last ACK, a CLOSE), then closes every
  // subflow and calls done (at most about a second later).
  void flush_and_close(std::function<void()> done);
  // Called after each service round: events to handle, data to read, room to write.
  std::function<void(std::vector<core::ClientEvent>&)> on_change;

 private:
  void open(core::SubflowId id, core::ServerId server, const std::string& address);
  void read_sub(core::SubflowId id);
  void write_sub(core::SubflowId id);
  void lost(core::SubflowId id);
  void arm_timer();

  asio::io_context& io_;
  PoolConfig pool_;
  OsRandom rng_;
  core::ClientEngine engine_;
  EngineTimer timer_;
  asio::steady_timer flush_timer_;
  int flush_polls_ = 0;
  // shared_ptr: every pending operation holds its subflow, so closing one while a read or a
  // write is under way never frees the socket under Asio's feet.
  std::map<core::SubflowId, std::shared_ptr<SubflowSocket>> subs_;
  bool in_service_ = false;
  bool again_ = false;
  bool closed_ = false;
  // Shared with every pending handler: false once this object is gone, so the io_context may
  // keep running (and run cancelled handlers) after a ClientConn is destroyed.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace mtcp::rt
