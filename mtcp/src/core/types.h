// Vocabulary shared by the engines. Time is always an argument (milliseconds from an origin
// the caller chooses); randomness comes through the Random interface. Nothing here reads a
// clock, opens a socket or seeds a generator (docs/ARCHITECTURE.md "sans-IO core").
#pragma once
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "common/buffer.h"
#include "wire/frame.h"

namespace mtcp::core {

using SubflowId = uint64_t;
using ServerId = uint32_t;
using ConnId = uint64_t;
using TimeMs = uint64_t;
inline constexpr TimeMs kNever = UINT64_MAX;

class Random {
 public:
  virtual ~Random() = default;
  virtual void fill(std::span<uint8_t> out) = 0;
  uint64_t u64() {
    uint8_t b[8];
    fill(b);
    uint64_t v = 0;
    for (uint8_t x : b) v = (v << 8) | x;
    return v;
  }
};

// Frames waiting to go out on one subflow, already encoded. DATA is not queued here: it is
// taken from the send log when the subflow has room (see poll_transmit in the engines).
class TxQueue {
 public:
  void push(const wire::Frame& f) {
    Bytes b;
    wire::encode(f, b);
    bytes_ += b.size();
    frames_.push_back(make_block(std::move(b)));
  }
  void push_raw(std::span<const uint8_t> raw) {
    bytes_ += raw.size();
    frames_.push_back(make_block(Bytes(raw.begin(), raw.end())));
  }
  bool empty() const { return frames_.empty(); }
  size_t bytes() const { return bytes_; }
  // Move whole frames into out while they fit in budget (at least one frame if any).
  size_t drain(size_t budget, std::vector<Slice>& out) {
    size_t used = 0;
    while (!frames_.empty() && (used == 0 || used + frames_.front()->size() <= budget)) {
      used += frames_.front()->size();
      bytes_ -= frames_.front()->size();
      out.emplace_back(std::move(frames_.front()));
      frames_.pop_front();
    }
    return used;
  }
  void clear() {
    frames_.clear();
    bytes_ = 0;
  }

 private:
  std::deque<BlockPtr> frames_;
  size_t bytes_ = 0;
};

// Append one DATA frame (header block + payload slices) to out; returns bytes added.
inline size_t emit_data(uint64_t dsn, std::vector<Slice>& payload, std::vector<Slice>& out) {
  size_t n = 0;
  for (const auto& s : payload) n += s.len;
  Bytes hdr(wire::kDataHeaderBytes);
  wire::encode_data_header(dsn, static_cast<uint32_t>(n), hdr.data());
  out.emplace_back(make_block(std::move(hdr)));
  for (auto& s : payload) out.push_back(std::move(s));
  payload.clear();
  return n + wire::kDataHeaderBytes;
}

}  // namespace mtcp::core
