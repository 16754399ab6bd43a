#include "core/send_log.h"

#include <algorithm>

namespace mtcp::core {

void SendLog::reset(uint64_t dsn) {
  q_.clear();
  base_ = sent_ = end_ = dsn;
  check();
}

Status SendLog::append(Slice s) {
  if (s.len > space()) return Error::send_log_full;
  end_ += s.len;
  q_.push(std::move(s));
  check();
  return {};
}

Status SendLog::ack(uint64_t dsn) {
  if (dsn > end_) return Error::protocol_violation;
  if (dsn <= base_) return {};  // old or duplicate ack
  q_.drop_front(static_cast<size_t>(dsn - base_));
  base_ = dsn;
  sent_ = std::max(sent_, base_);
  check();
  return {};
}

Status SendLog::rewind(uint64_t dsn) {
  if (dsn > end_) return Error::protocol_violation;
  if (dsn < base_) return Error::state_gap;
  sent_ = dsn;
  check();
  return {};
}

uint64_t SendLog::take_unsent(size_t max_bytes, std::vector<Slice>& out) {
  uint64_t start = sent_;
  size_t n = static_cast<size_t>(std::min<uint64_t>(max_bytes, end_ - sent_));
  q_.view(static_cast<size_t>(sent_ - base_), n, out);
  sent_ += n;
  check();
  return start;
}

void SendLog::view(uint64_t from, uint64_t to, std::vector<Slice>& out) const {
  MTCP_ASSERT(from >= base_ && to <= end_ && from <= to, "send log: view outside [base, end)");
  q_.view(static_cast<size_t>(from - base_), static_cast<size_t>(to - from), out);
}

Bytes SendLog::copy(uint64_t from, uint64_t to) const {
  MTCP_ASSERT(from >= base_ && to <= end_ && from <= to, "send log: copy outside [base, end)");
  return q_.flatten(static_cast<size_t>(from - base_), static_cast<size_t>(to - from));
}

void SendLog::truncate(uint64_t dsn) {
  if (dsn >= end_) return;
  dsn = std::max(dsn, base_);
  // Rebuild the queue up to dsn (rare: only when an owner freezes).
  std::vector<Slice> keep;
  q_.view(0, static_cast<size_t>(dsn - base_), keep);
  q_.clear();
  for (auto& s : keep) q_.push(std::move(s));
  end_ = dsn;
  sent_ = std::min(sent_, end_);
  check();
}

}  // namespace mtcp::core
