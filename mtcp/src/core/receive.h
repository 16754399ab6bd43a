// Duplicate suppression on receive, shared by both engines. A subflow is reliable and in
// order, but after a migration the new peer resends from what it believes the receiver has,
// so a DATA frame may start below the next expected DSN (never above it: that is a gap).
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/buffer.h"
#include "wire/frame.h"

namespace mtcp::core {

// Appends to `into` the bytes of `d` at and above `next` (slices, no copy) and returns how many
// bytes below `next` were dropped as duplicates. The caller has checked d.dsn <= next.
inline uint64_t append_new_bytes(const wire::Data& d, uint64_t next, SliceQueue& into) {
  uint64_t dup = std::min<uint64_t>(next - d.dsn, d.size());
  uint64_t skip = dup;
  for (const auto& part : d.payload) {
    if (skip >= part.len) {
      skip -= part.len;
      continue;
    }
    into.push(part.sub(static_cast<size_t>(skip), part.len - static_cast<size_t>(skip)));
    skip = 0;
  }
  return dup;
}

}  // namespace mtcp::core
