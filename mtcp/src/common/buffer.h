// Reference-counted byte blocks and slices of them. This is how payload travels through the
// core without copies: the application fills a Block (or the runtime reads into one), the core
// keeps Slices of it in its logs, and the runtime sends from those Slices with writev.
#pragma once
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace mtcp {

using Bytes = std::vector<uint8_t>;
using BlockPtr = std::shared_ptr<const Bytes>;

inline BlockPtr make_block(Bytes bytes) { return std::make_shared<const Bytes>(std::move(bytes)); }

// A view of [off, off+len) of a shared block; keeps the block alive.
struct Slice {
  BlockPtr block;
  size_t off = 0;
  size_t len = 0;

  Slice() = default;
  Slice(BlockPtr b, size_t o, size_t n) : block(std::move(b)), off(o), len(n) {}
  explicit Slice(BlockPtr b) : block(std::move(b)), off(0), len(block ? block->size() : 0) {}
  static Slice copy_of(std::span<const uint8_t> s) { return Slice(make_block(Bytes(s.begin(), s.end()))); }

  const uint8_t* data() const { return block->data() + off; }
  size_t size() const { return len; }
  bool empty() const { return len == 0; }
  // Empty (also a default Slice, which has no block): an empty span.
  std::span<const uint8_t> span() const { return len ? std::span<const uint8_t>(data(), len) : std::span<const uint8_t>(); }
  Slice sub(size_t o, size_t n) const { return Slice(block, off + o, n); }
};

// The slices' bytes, one after another, in one contiguous copy.
Bytes join(const std::vector<Slice>& slices);

// A FIFO of slices (a rope). Used for receive queues and logs.
class SliceQueue {
 public:
  void push(Slice s) {
    if (s.empty()) return;
    bytes_ += s.len;
    q_.push_back(std::move(s));
  }
  size_t size() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }
  const std::deque<Slice>& slices() const { return q_; }

  // Drop n bytes from the front (n <= size()).
  void drop_front(size_t n);
  // Move up to n bytes from the front into out (as slices, no copy).
  void take_front(size_t n, std::vector<Slice>& out);
  // Copy up to dst.size() bytes from offset `at` into dst; returns bytes copied.
  size_t copy_out(size_t at, std::span<uint8_t> dst) const;
  // Append slices covering [at, at+n) to out (no copy).
  void view(size_t at, size_t n, std::vector<Slice>& out) const;
  // Contiguous copy of [at, at+n).
  Bytes flatten(size_t at, size_t n) const;
  void clear() { q_.clear(); bytes_ = 0; }

 private:
  std::deque<Slice> q_;
  size_t bytes_ = 0;
};

}  // namespace mtcp
