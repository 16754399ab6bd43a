// Input split into lines for the line-protocol services (counter, delay). Bytes are appended
// as they are read; next() hands out one complete line at a time (without "\n" or a trailing
// "\r"). A line longer than the limit is reported once as too_long and then skipped up to its
// newline, so a client cannot make the app buffer without bound. The unparsed bytes and the
// skip flag are part of the app's state: an app that snapshots between two reads saves them
// (save/load) and the snapshot stays exact whatever the read boundaries were.
#pragma once
#include <cstring>
#include <string>
#include <string_view>

#include "common/bytes.h"

namespace mtcp::svc {

class LineBuffer {
 public:
  enum class Got { none, line, too_long };
  explicit LineBuffer(size_t line_max) : max_(line_max) {}

  void feed(std::span<const uint8_t> b) { buf_.append(reinterpret_cast<const char*>(b.data()), b.size()); }
  // True if next() would return something other than none.
  bool has_next() const {
    size_t nl = buf_.find('\n', at_);
    return nl != std::string::npos || (!skipping_ && buf_.size() - at_ > max_);
  }
  Got next(std::string& line) {
    for (;;) {
      size_t nl = buf_.find('\n', at_);
      if (skipping_) {
        if (nl == std::string::npos) {
          compact(buf_.size());  // the whole rest belongs to the over-long line
          return Got::none;
        }
        skipping_ = false;
        compact(nl + 1);
        continue;
      }
      size_t len = (nl == std::string::npos ? buf_.size() : nl) - at_;
      if (len > max_) {  // over the limit, whether or not its end is here yet
        skipping_ = true;
        compact(at_ + max_);
        return Got::too_long;
      }
      if (nl == std::string::npos) return Got::none;
      line.assign(buf_, at_, len);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      compact(nl + 1);
      return Got::line;
    }
  }
  size_t buffered() const { return buf_.size() - at_; }

  void save(Writer& w) const {
    w.u8(skipping_ ? 1 : 0);
    w.u32(static_cast<uint32_t>(buffered()));
    w.bytes(std::span(reinterpret_cast<const uint8_t*>(buf_.data()) + at_, buffered()));
  }
  bool load(Reader& r) {
    skipping_ = r.u8() != 0;
    uint32_t n = r.u32();
    auto b = r.bytes(n);
    if (!r.ok()) return false;
    buf_.assign(reinterpret_cast<const char*>(b.data()), b.size());
    at_ = 0;
    return true;
  }

 private:
  void compact(size_t to) {
    at_ = to;
    if (at_ > 4096 && at_ * 2 > buf_.size()) {
      buf_.erase(0, at_);
      at_ = 0;
    }
  }
  size_t max_;
  std::string buf_;
  size_t at_ = 0;
  bool skipping_ = false;
};

}  // namespace mtcp::svc
