// The one big-endian byte cursor: the codecs, the services' snapshots and the runtime use it. The reader never reads past its end: every get
// checks the remaining length and latches a failure instead (callers test ok() once at the end).
#pragma once
#include <cstdint>
#include <array>
#include <cstring>
#include <span>
#include <string>

#include "common/buffer.h"

namespace mtcp {

class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) { put_be(v, 2); }
  void u32(uint32_t v) { put_be(v, 4); }
  void u64(uint64_t v) { put_be(v, 8); }
  void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  size_t size() const { return out_.size(); }
  // Overwrite a u32 at an earlier position (for lengths known only at the end).
  void patch_u32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out_[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (24 - 8 * i));
  }

 private:
  void put_be(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  Bytes& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  uint8_t u8() { return static_cast<uint8_t>(get_be(1)); }
  uint16_t u16() { return static_cast<uint16_t>(get_be(2)); }
  uint32_t u32() { return static_cast<uint32_t>(get_be(4)); }
  uint64_t u64() { return get_be(8); }
  std::span<const uint8_t> bytes(size_t n) {
    if (!ok_ || remaining() < n) {
      ok_ = false;
      return {};
    }
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  template <size_t N>
  void array(std::array<uint8_t, N>& dst) {
    auto s = bytes(N);
    if (ok_) std::memcpy(dst.data(), s.data(), N);
  }
  size_t remaining() const { return in_.size() - pos_; }
  size_t pos() const { return pos_; }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }
  void fail() { ok_ = false; }

 private:
  uint64_t get_be(size_t n) {
    if (!ok_ || remaining() < n) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | in_[pos_ + i];
    pos_ += n;
    return v;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace mtcp
