// The application SDK: what a service written on M-TCP sees of one connection (docs/API.md).
//
// A service supplies a ConnApp per connection. The host that drives the engine (the runtime's
// pool member, the simulator, the tests) calls it when something happened on the connection;
// the app acts through the narrow handle `Conn` it is given, never through the engine.
//
// The contract (paper §2, docs/ARCHITECTURE.md "application contract"):
//   - The app exports a snapshot (opaque bytes) when its state is consistent with what it has
//     read and written; the protocol records it with the input and output positions.
//   - On another member the app is opened with that snapshot (Import) and reads on: the input
//     logged since the snapshot comes first (replaying() is true meanwhile), then fresh input.
//   - Between two snapshots the app is deterministic: the same state and input give the same
//     output. Output it regenerates that the client already has is not sent again; with replay
//     verification on, it is compared with what the former owner sent, and a difference ends the
//     connection with Error::replay_mismatch instead of corrupting the stream.
//   - on_fenced: the connection moved away or was taken over; stop external side effects now.
//     The epoch is the fencing token for anything outside the connection (a database row).
//
// Threads: every ConnApp and Conn call happens on the host's thread (the member's event loop).
// The one exception is Waker::wake(), which any thread may call at any time, even after the
// connection has gone (it is then ignored); the app's on_wake() then runs on the host's thread.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/buffer.h"
#include "common/result.h"

namespace mtcp::sdk {

using ConnId = uint64_t;

// What an app instance starts from.
struct Import {
  bool migrated = false;  // the connection moved in from another member (false: a new one)
  bool plain = false;     // a plain TCP client: no snapshots, no migration, no replay
  uint64_t epoch = 0;     // ownership epoch (the fencing token)
  uint64_t snap_id = 0;   // 0: no snapshot, start from the beginning of the stream
  std::span<const uint8_t> snapshot;  // the snapshot's bytes; valid during on_open only
  uint64_t snap_in = 0;   // input position recorded with the snapshot
  uint64_t snap_out = 0;  // output position recorded with the snapshot
  // Input below this position was already read by a former owner (it is replayed); output
  // below this position the client already has or was already sent.
  uint64_t replay_in_until = 0;
  uint64_t replay_out_until = 0;
};

// Thread-safe wake-ups, shared between a host and the Wakers it hands out. The host's notify
// function runs on the waking thread: it must only post work to the host's own thread.
class WakeQueue {
 public:
  using Notify = void (*)(void* ctx);
  void set_notify(Notify fn, void* ctx);
  void wake(ConnId conn);
  // The host's thread: the connections woken since the last call, once each.
  std::vector<ConnId> take();
  // The host is going away: later wake() calls do nothing.
  void close();

 private:
  std::mutex mu_;
  std::unordered_set<ConnId> woken_;
  Notify notify_ = nullptr;
  void* ctx_ = nullptr;
  bool pending_ = false;  // notified and not taken yet: one notification per batch
  bool closed_ = false;
};

// A copyable token that wakes one connection's app from any thread.
class Waker {
 public:
  Waker() = default;
  Waker(std::shared_ptr<WakeQueue> q, ConnId conn) : q_(std::move(q)), conn_(conn) {}
  void wake() const {
    if (q_) q_->wake(conn_);
  }
  explicit operator bool() const { return q_ != nullptr; }

 private:
  std::shared_ptr<WakeQueue> q_;
  ConnId conn_ = 0;
};

// The handle an app gets for its connection. Positions are stream offsets from the start of
// the connection (not from the snapshot).
// What the host knows about one connection, for logs and an app's own reports.
struct ConnStats {
  uint32_t migrations = 0;         // migrations this connection went through so far
  uint64_t input_received = 0;     // input bytes held for the app (read or not)
  uint64_t snapshot_input = 0;     // input position of the last snapshot (0: none)
  uint64_t snapshot_output = 0;    // output position of the last snapshot
  uint64_t replay_input_until = 0;   // input below this is replayed (see Import)
  uint64_t replay_output_until = 0;  // output below this the client has or was sent
  bool replay_verified = false;      // the host checks regenerated output (AppFactory)
};

class Conn {
 public:
  virtual ~Conn() = default;
  virtual ConnId id() const = 0;
  virtual uint64_t epoch() const = 0;
  virtual bool plain() const = 0;
  // True while the app reads input a former owner already read, or writes output the client
  // already has: external side effects must not be repeated meanwhile.
  virtual bool replaying() const = 0;
  virtual uint64_t input_pos() const = 0;     // input bytes read so far
  virtual uint64_t output_pos() const = 0;    // output bytes written so far
  virtual uint64_t output_acked() const = 0;  // output the client acknowledged
  virtual ConnStats stats() const = 0;

  // Input. read_slices hands out the received blocks themselves (no copy).
  virtual size_t readable() const = 0;
  virtual size_t read(std::span<uint8_t> dst) = 0;
  virtual size_t read_slices(size_t max_bytes, std::vector<Slice>& out) = 0;
  virtual bool input_closed() const = 0;  // the client closed its side and all was read

  // Output with back-pressure: write returns how many bytes were taken (0: full; wait for
  // on_writable). An error means the connection can no longer be written (closed, moved away,
  // replay mismatch).
  virtual size_t write_space() const = 0;
  virtual Result<size_t> write(Slice s) = 0;
  virtual Result<size_t> write_copy(std::span<const uint8_t> bytes) = 0;
  // A snapshot at the current input and output positions (on a plain connection: accepted and
  // dropped). Refused with Error::snapshot_too_large above the pool's limit.
  virtual Status snapshot(Bytes state) = 0;
  // Close our side once everything written is delivered.
  virtual Status close() = 0;
  // The app found a violation of its own invariants: logged and counted by the host (the app
  // decides whether to close).
  virtual void violation(const std::string& why) = 0;
  virtual Waker waker() const = 0;
  void wake() const { waker().wake(); }
};

// One connection's application instance. Every callback is optional but on_open.
class ConnApp {
 public:
  virtual ~ConnApp() = default;
  // Start from `imp` (a fresh start, a snapshot, or a plain TCP client). False with `why`:
  // the snapshot is not one this service wrote; the connection is then closed.
  virtual bool on_open(Conn& c, const Import& imp, std::string& why) = 0;
  // Input is readable, or the client closed its side (input_closed()).
  virtual void on_readable(Conn& c) { (void)c; }
  // Write space grew.
  virtual void on_writable(Conn& c) { (void)c; }
  // The client acknowledged output up to `up_to` (a stream position).
  virtual void on_output_acked(Conn& c, uint64_t up_to) {
    (void)c;
    (void)up_to;
  }
  // Someone called this connection's Waker.
  virtual void on_wake(Conn& c) { (void)c; }
  // The connection moved away or was taken over: writes now fail; stop side effects. The
  // instance is destroyed right after.
  virtual void on_fenced(Error why) { (void)why; }
  // The connection is over (why: Error::ok after a clean close). Destroyed right after.
  virtual void on_closed(Error why) { (void)why; }
};

// Makes the app instances of one configured service.
class AppFactory {
 public:
  virtual ~AppFactory() = default;
  virtual std::unique_ptr<ConnApp> make(ConnId conn) = 0;
  // Check regenerated output against what the former owner sent (docs/API.md).
  virtual bool verify_replay() const { return true; }
};

}  // namespace mtcp::sdk
