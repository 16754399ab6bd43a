// The one engine host: drives a ServerEngine and the app instances of one service (sdk/app.h)
// for whatever moves the bytes. The runtime's pool member (real sockets), the simulator
// (simulated links), the tests and the benchmarks each implement Transport and call service();
// the loop itself (actions, events, apps, subflows) exists only here. Sans-IO like the core: no
// sockets, clocks or threads; the one thread-safe entry is an app's Waker, which reaches the
// driver through Transport::post_service().
//
// Work per pass follows what changed (ServerEngine::take_touched()), never every connection.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/server.h"
#include "sdk/app.h"

namespace mtcp::host {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual void send_control(core::ServerId to, Bytes msg) = 0;
  // A chunked message to be written as it is encoded (ServerConfig::stream_control). By
  // default it is encoded whole here and sent as bytes.
  virtual void send_control_stream(core::ServerId to, std::shared_ptr<wire::ControlEncoder> m) {
    Bytes b;
    b.reserve(m->size());
    while (!m->done()) m->next(b, m->size());
    send_control(to, std::move(b));
  }
  // Flush what the engine still queued for the subflow (poll_transmit), then close it.
  virtual void close_subflow(core::SubflowId sub) = 0;
  // The client never sent the M-TCP preface: hand it to the plain-TCP adapter (or refuse it).
  virtual void plain_tcp(core::SubflowId sub, Bytes head) = 0;
  // The engine may want to write to or read from this subflow now (wants_transmit,
  // wants_read). True if bytes started moving.
  virtual bool subflow_ready(core::SubflowId sub) = 0;
  // Every subflow the transport holds (when the engine says everything may have changed).
  virtual std::vector<core::SubflowId> subflows() const = 0;
  // Any thread: an app was woken; call service() soon on the host's thread.
  virtual void post_service() = 0;
  // Every event the host takes from the engine, before it acts on it (a driver's log: the
  // tests record them). Optional.
  virtual void saw_event(const core::ServerEvent& ev) { (void)ev; }
};

class EngineHost {
 public:
  using Log = std::function<void(const std::string&)>;
  EngineHost(core::ServerEngine& engine, sdk::AppFactory& factory, Transport& transport, Log log);
  ~EngineHost();
  EngineHost(const EngineHost&) = delete;
  EngineHost& operator=(const EngineHost&) = delete;

  // Up to `rounds` rounds of: actions to the transport, events to the apps, the apps whose
  // connections changed, the subflows that changed. True if work remains: the caller yields to
  // its event loop and calls again. A call from inside a pass only asks for another round.
  bool service(int rounds);
  // The transport finished a read or a write on this subflow: look at it in the next pass.
  void mark_subflow(core::SubflowId sub) { ready_subs_.insert(sub); }
  // Touched sets are taken from the engine here; a driver that takes them itself (to check
  // them) hands them back with absorb(). on_touched sees every set the host absorbs.
  void absorb(const core::ServerEngine::Touched& t);
  std::function<void(const core::ServerEngine::Touched&)> on_touched;
  // Drops every app instance without a callback (the simulator's crash).
  void drop_apps();

  core::ServerEngine& engine() { return engine_; }
  sdk::AppFactory& factory() { return factory_; }
  uint64_t violations() const { return violations_; }
  size_t live() const { return conns_.size(); }
  const std::shared_ptr<sdk::WakeQueue>& wake_queue() const { return wake_; }
  void log(const std::string& line) { log_(line); }
  void count_violation() { ++violations_; }

 private:
  class EngineConn;
  struct Rec;
  bool round();
  void on_event(const core::ServerEvent& ev);
  void open(core::ConnId id, bool migrated);
  void dispatch(core::ConnId id, Rec& r);
  void absorb_engine();

  core::ServerEngine& engine_;
  sdk::AppFactory& factory_;
  Transport& transport_;
  Log log_;
  std::shared_ptr<sdk::WakeQueue> wake_ = std::make_shared<sdk::WakeQueue>();
  std::map<core::ConnId, std::unique_ptr<Rec>> conns_;
  std::unordered_set<core::SubflowId> ready_subs_;
  std::unordered_set<core::ConnId> ready_conns_;
  bool all_subs_ = true;
  bool all_conns_ = true;
  bool in_service_ = false;
  bool again_ = false;
  uint64_t violations_ = 0;
};

}  // namespace mtcp::host
