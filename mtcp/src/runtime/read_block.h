// Receive blocks for subflow reads. A read lands in a large block that the engine then keeps
// as slices (no copy of payload on the data path). When a read brings only a little, the bytes
// are copied into a block of their own size and the large block is read into again: small
// reads (paced or interactive traffic) neither pin 256 KiB each in the logs nor allocate and
// clear a large block every time.
#pragma once
#include <memory>

#include "common/buffer.h"

namespace mtcp::rt {

class ReadBlock {
 public:
  static constexpr size_t kBytes = 256u << 10;     // one read at most
  static constexpr size_t kCopyBelow = kBytes / 8;  // reads smaller than this are copied out

  // The buffer the next read fills (stays valid until take()).
  std::span<uint8_t> buffer() {
    if (!block_) block_ = std::make_shared<Bytes>(kBytes);
    return {block_->data(), block_->size()};
  }
  // The first n bytes of the last read, as a slice the engine may keep.
  Slice take(size_t n) {
    if (n < kCopyBelow) return Slice::copy_of({block_->data(), n});
    Slice s(BlockPtr(std::move(block_)), 0, n);
    block_.reset();
    return s;
  }

 private:
  std::shared_ptr<Bytes> block_;
};

}  // namespace mtcp::rt
