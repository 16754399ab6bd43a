#include "common/buffer.h"

#include <algorithm>
#include <cassert>

namespace mtcp {

void SliceQueue::drop_front(size_t n) {
  assert(n <= bytes_);
  while (n > 0) {
    Slice& f = q_.front();
    if (f.len <= n) {
      n -= f.len;
      bytes_ -= f.len;
      q_.pop_front();
    } else {
      f.off += n;
      f.len -= n;
      bytes_ -= n;
      n = 0;
    }
  }
}

void SliceQueue::take_front(size_t n, std::vector<Slice>& out) {
  n = std::min(n, bytes_);
  while (n > 0) {
    Slice& f = q_.front();
    if (f.len <= n) {
      n -= f.len;
      bytes_ -= f.len;
      out.push_back(std::move(f));
      q_.pop_front();
    } else {
      out.push_back(f.sub(0, n));
      f.off += n;
      f.len -= n;
      bytes_ -= n;
      n = 0;
    }
  }
}

void SliceQueue::view(size_t at, size_t n, std::vector<Slice>& out) const {
  for (const Slice& s : q_) {
    if (n == 0) break;
    if (at >= s.len) {
      at -= s.len;
      continue;
    }
    size_t k = std::min(n, s.len - at);
    out.push_back(s.sub(at, k));
    n -= k;
    at = 0;
  }
}

size_t SliceQueue::copy_out(size_t at, std::span<uint8_t> dst) const {
  size_t done = 0;
  for (const Slice& s : q_) {
    if (done == dst.size()) break;
    if (at >= s.len) {
      at -= s.len;
      continue;
    }
    size_t k = std::min(dst.size() - done, s.len - at);
    std::memcpy(dst.data() + done, s.data() + at, k);
    done += k;
    at = 0;
  }
  return done;
}

Bytes join(const std::vector<Slice>& slices) {
  size_t n = 0;
  for (const Slice& s : slices) n += s.size();
  Bytes out;
  out.reserve(n);
  for (const Slice& s : slices) out.insert(out.end(), s.span().begin(), s.span().end());
  return out;
}

Bytes SliceQueue::flatten(size_t at, size_t n) const {
  Bytes out(std::min(n, bytes_ > at ? bytes_ - at : 0));
  copy_out(at, out);
  return out;
}

}  // namespace mtcp
