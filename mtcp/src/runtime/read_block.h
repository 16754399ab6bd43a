// Receive blocks for subflow reads. A read lands in a large block that the engine then keeps
// as slices (no copy of payload on the data path). When a read brings only a little, the bytes
// are copied into a block of their own size and the large block is read into again: small
// reads (paced or interactive traffic) neither pin 256 KiB each in the logs nor allocate and
// clear a large block every time.
//
// async_read_slice() reads a subflow without holding a block while it waits: the waiting read
// has only the socket's 2 KiB ReadHead as its buffer, and a block is taken only when the head
// fills up. An idle connection therefore pins no receive block (a member with 10,000 idle
// connections would otherwise hold 2.5 GiB of blocks).
//
// Blocks handed to the engine come back to a small spare list when their last slice goes: a
// fresh block is zero-filled by the vector, and that memset took a sixth of a member's CPU time
// in bulk echo (docs/profiling.md).
#pragma once
#include <array>
#include <asio.hpp>
#include <cstring>
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

// A socket's waiting read: a small buffer of its own that Asio's reactor reads into when the
// socket becomes readable (one recvfrom, no epoll_ctl: see async_read_slice).
struct ReadHead {
  static constexpr size_t kBytes = 2048;
  std::array<uint8_t, kBytes> buf{};
};

// Calls done(error_code, Slice) once, from the io_context, with the next bytes of `sock` (or an
// error, asio::error::eof at the end). `sock` must be non-blocking; `sock` and `head` must
// outlive the call: `done` should own whatever owns them.
//
// The read waits in the reactor with `head` (2 KiB) as its buffer. Asio reads a socket whose
// last read came up short only once the reactor reports it readable, and re-arms nothing to
// wait, so a small message costs one recvfrom. The former way (try a read into the block,
// and on EAGAIN async_wait) cost a failed recvfrom and an epoll_ctl per message: about a
// quarter of a bank front-end's system calls (docs/profiling.md "Small messages"). When the
// head fills up, more is probably there: the rest is read at once, non-blocking, into one
// 256 KiB block that follows the head's bytes, so bulk reads still reach the engine as slices
// of large blocks (one extra recvfrom and a 2 KiB copy per 256 KiB).
template <class Done>
void async_read_slice(asio::ip::tcp::socket& sock, ReadHead& head, Done done) {
  sock.async_read_some(asio::buffer(head.buf), [&sock, &head, done = std::move(done)](asio::error_code ec, size_t n) mutable {
    if (ec) return done(ec, Slice{});
    if (n < ReadHead::kBytes) return done(ec, Slice::copy_of({head.buf.data(), n}));
    static thread_local ReadBlock block;  // the read below is synchronous: one per thread serves all
    std::span<uint8_t> buf = block.buffer();
    std::memcpy(buf.data(), head.buf.data(), n);
    asio::error_code more_ec;
    size_t m = sock.read_some(asio::buffer(buf.data() + n, buf.size() - n), more_ec);
    // Nothing more (EAGAIN), the end or an error: deliver the head's bytes now; an end or an
    // error shows again at the next read.
    if (more_ec) m = 0;
    done(asio::error_code{}, block.take(n + m));
  });
}

}  // namespace mtcp::rt
