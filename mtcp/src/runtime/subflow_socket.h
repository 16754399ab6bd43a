// What the server and client runtimes share about kernel sockets (docs/ARCHITECTURE.md §11):
//
// SubflowSocket: one kernel TCP connection carrying a subflow. Reads land in receive blocks
// (read_block.h) and reach the engine as slices; writes gather the slices poll_transmit()
// returns into one writev. At most one read and one write are under way at a time.
//
// EngineTimer: waits for an engine's next deadline; re-armed only when the deadline moves
// (re-arming costs a system call), with a slow safety tick when there is no deadline.
//
// The one lifetime rule for pending handlers: every operation holds its SubflowSocket
// (shared_ptr), so a subflow closed while a read or a write is under way never frees the
// socket under Asio's feet; and every completion first checks the owner's `alive` token (false
// once the ServerNode or ClientConn is destroyed), so an io_context that outlives its owner
// only runs handlers that return at once.
#pragma once
#include <asio.hpp>
#include <functional>
#include <memory>
#include <vector>

#include "common/buffer.h"
#include "core/types.h"
#include "runtime/os.h"
#include "runtime/read_block.h"

namespace mtcp::rt {

using AliveToken = std::shared_ptr<bool>;

class SubflowSocket : public std::enable_shared_from_this<SubflowSocket> {
 public:
  static constexpr size_t kWriteBudgetBytes = 1u << 20;  // bytes taken from the engine per writev

  explicit SubflowSocket(asio::ip::tcp::socket s) : sock(std::move(s)) {}
  explicit SubflowSocket(asio::io_context& io) : sock(io) {}

  // The socket is connected: no delay, non-blocking (for async_read_slice).
  void ready() {
    asio::error_code ignore;
    sock.set_option(asio::ip::tcp::no_delay(true), ignore);
    sock.non_blocking(true, ignore);
    connected = true;
  }

  // Reads the next bytes; done(error_code, Slice) runs only while the owner is alive.
  template <class Done>
  void start_read(AliveToken alive, Done done) {
    reading = true;
    async_read_slice(sock, [self = shared_from_this(), alive = std::move(alive), done = std::move(done)](
                               asio::error_code ec, Slice data) mutable {
      self->reading = false;
      if (!*alive) return;
      done(ec, std::move(data));
    });
  }

  // Writes what poll(budget, out) returns (the engine's poll_transmit for this subflow); false
  // if it returned nothing. done(error_code) runs only while the owner is alive.
  template <class Poll, class Done>
  bool start_write(Poll poll, AliveToken alive, Done done) {
    out_.clear();
    poll(kWriteBudgetBytes, out_);
    if (out_.empty()) return false;
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(out_.size());
    for (const auto& sl : out_) bufs.emplace_back(sl.data(), sl.len);
    writing = true;
    asio::async_write(sock, bufs, [self = shared_from_this(), alive = std::move(alive), done = std::move(done)](
                                      asio::error_code ec, size_t) mutable {
      self->writing = false;
      self->out_.clear();
      if (!*alive) return;
      done(ec);
    });
    return true;
  }

  void close() {
    asio::error_code ignore;
    sock.close(ignore);
  }

  asio::ip::tcp::socket sock;
  bool connected = false;
  bool reading = false;
  bool writing = false;
  bool closing = false;  // the engine asked to close: flush, then close

 private:
  std::vector<Slice> out_;  // the slices being written, kept alive until the write completes
};

class EngineTimer {
 public:
  // With no engine deadline the timer still fires this often: rare enough that 10,000 idle
  // connections in one process do not wake it 10,000 times a second.
  static constexpr core::TimeMs kIdleTickMs = 30000;

  explicit EngineTimer(asio::io_context& io) : timer_(io) {}
  // Waits for `deadline` (kNever: the idle tick), then calls fire() if the owner is alive.
  void arm(core::TimeMs deadline, const AliveToken& alive, std::function<void()> fire) {
    core::TimeMs now = now_ms();
    if (deadline == core::kNever) {
      if (armed_ != core::kNever && armed_ > now && armed_ <= now + kIdleTickMs) return;
      deadline = now + kIdleTickMs;
    }
    if (deadline == armed_) return;
    armed_ = deadline;
    timer_.expires_after(std::chrono::milliseconds(deadline > now ? deadline - now : 0));
    timer_.async_wait([this, alive, fire = std::move(fire)](asio::error_code ec) {
      if (!*alive || ec) return;
      armed_ = core::kNever;
      fire();
    });
  }
  void cancel() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
  core::TimeMs armed_ = core::kNever;  // deadline the timer waits for
};

}  // namespace mtcp::rt
