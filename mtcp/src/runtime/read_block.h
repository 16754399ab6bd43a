// Receive blocks for subflow reads. A read lands in a large block that the engine then keeps
// as slices (no copy of payload on the data path). When a read brings only a little, the bytes
// are copied into a block of their own size and the large block is read into again: small
// reads (paced or interactive traffic) neither pin 256 KiB each in the logs nor allocate and
// clear a large block every time.
//
// async_read_slice() reads a subflow without holding a block while it waits: it tries a
// non-blocking read into one block per thread and, when nothing is there, waits for the socket
// to become readable. An idle connection therefore pins no receive memory (a member with 10,000
// idle connections would otherwise hold 2.5 GiB of blocks).
//
// Blocks handed to the engine come back to a small spare list when their last slice goes: a
// fresh block is zero-filled by the vector, and that memset took a sixth of a member's CPU time
// in bulk echo (docs/profiling.md).
#pragma once
#include <asio.hpp>
#include <memory>
#include <mutex>
#include <vector>

#include "common/buffer.h"

namespace mtcp::rt {

class ReadBlock {
 public:
  static constexpr size_t kBytes = 256u << 10;     // one read at most
  static constexpr size_t kCopyBelow = kBytes / 8;  // reads smaller than this are copied out

  static constexpr size_t kSpareMax = 32;           // blocks kept for reuse (8 MiB)

  // The buffer the next read fills (stays valid until take()).
  std::span<uint8_t> buffer() {
    if (!block_) block_ = fresh();
    return {block_->data(), block_->size()};
  }
  // The first n bytes of the last read, as a slice the engine may keep.
  Slice take(size_t n) {
    if (n < kCopyBelow) return Slice::copy_of({block_->data(), n});
    Slice s(BlockPtr(std::move(block_)), 0, n);
    block_.reset();
    return s;
  }

  size_t spare_blocks() const {
    std::lock_guard lock(spares_->mu);
    return spares_->blocks.size();
  }

 private:
  // Shared with the blocks' deleters, which may run after this ReadBlock is gone (or on
  // another thread, if an application moves slices there).
  struct Spares {
    std::mutex mu;
    std::vector<std::unique_ptr<Bytes>> blocks;
  };
  std::shared_ptr<Bytes> fresh() {
    std::unique_ptr<Bytes> b;
    {
      std::lock_guard lock(spares_->mu);
      if (!spares_->blocks.empty()) {
        b = std::move(spares_->blocks.back());
        spares_->blocks.pop_back();
      }
    }
    if (!b) b = std::make_unique<Bytes>(kBytes);
    return {b.release(), [spares = spares_](Bytes* p) {
              std::unique_ptr<Bytes> back(p);
              std::lock_guard lock(spares->mu);
              if (spares->blocks.size() < kSpareMax) spares->blocks.push_back(std::move(back));
            }};
  }

  std::shared_ptr<Spares> spares_ = std::make_shared<Spares>();
  std::shared_ptr<Bytes> block_;
};

namespace detail {
template <class Done>
void read_slice_now(asio::ip::tcp::socket& sock, Done done) {
  static thread_local ReadBlock block;  // reads are synchronous here, so one per thread serves all
  asio::error_code ec;
  std::span<uint8_t> buf = block.buffer();
  size_t n = sock.read_some(asio::buffer(buf.data(), buf.size()), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    // Queued in the same handler that saw EAGAIN, so no readiness edge can be missed.
    sock.async_wait(asio::ip::tcp::socket::wait_read, [&sock, done = std::move(done)](asio::error_code wec) mutable {
      if (wec) return done(wec, Slice{});
      read_slice_now(sock, std::move(done));
    });
    return;
  }
  if (ec) return done(ec, Slice{});
  done(ec, block.take(n));
}
}  // namespace detail

// Calls done(error_code, Slice) once, from the io_context, with the next bytes of `sock` (or an
// error, asio::error::eof at the end). `sock` must be non-blocking and must outlive the call:
// `done` should own whatever owns the socket.
template <class Done>
void async_read_slice(asio::ip::tcp::socket& sock, Done done) {
  asio::post(sock.get_executor(), [&sock, done = std::move(done)]() mutable { detail::read_slice_now(sock, std::move(done)); });
}

}  // namespace mtcp::rt
