// Retained send log: every byte written on a connection, by data sequence number (DSN), from
// the peer's cumulative ack up to the last byte written. Bytes are kept as the slices the
// writer handed over, so nothing is copied between the application and writev. After a
// migration the log is rewound to what the new peer holds and resent from there.
#pragma once
#include <cstdint>
#include <vector>

#include "common/assert.h"
#include "common/buffer.h"
#include "common/result.h"

namespace mtcp::core {

class SendLog {
 public:
  explicit SendLog(size_t bytes_max) : bytes_max_(bytes_max) {}

  uint64_t base() const { return base_; }   // lowest retained DSN (= peer's cumulative ack)
  uint64_t sent() const { return sent_; }   // next DSN to hand to the current subflow
  uint64_t end() const { return end_; }     // DSN after the last byte written
  size_t size() const { return q_.size(); }
  size_t space() const { return bytes_max_ > q_.size() ? bytes_max_ - q_.size() : 0; }
  size_t bytes_max() const { return bytes_max_; }
  bool has_unsent() const { return sent_ < end_; }
  // base <= sent <= end, the queue holds exactly [base, end), and never more than bytes_max.
  void check() const {
    MTCP_ASSERT(base_ <= sent_ && sent_ <= end_, "send log: positions out of order");
    MTCP_ASSERT(end_ - base_ == q_.size(), "send log: queue does not hold [base, end)");
    MTCP_ASSERT(q_.size() <= bytes_max_, "send log: beyond send_log_bytes_max");
  }

  // Start an empty log at `dsn` (a new connection, or a migrated one where the client already
  // has everything below dsn).
  void reset(uint64_t dsn);
  // Append a whole slice; send_log_full if it does not fit (nothing is appended then).
  Status append(Slice s);
  // Peer acknowledged everything below dsn. protocol_violation if dsn is beyond end().
  Status ack(uint64_t dsn);
  // Resend from dsn (new subflow). state_gap if dsn < base(), protocol_violation if > end().
  Status rewind(uint64_t dsn);
  // Take up to max_bytes unsent bytes as slices; returns their first DSN.
  uint64_t take_unsent(size_t max_bytes, std::vector<Slice>& out);
  // Slices covering [from, to) (within [base, end)).
  void view(uint64_t from, uint64_t to, std::vector<Slice>& out) const;
  Bytes copy(uint64_t from, uint64_t to) const;
  // Forget bytes at and above dsn (a frozen owner keeps only output before its snapshot).
  void truncate(uint64_t dsn);

 private:
  size_t bytes_max_;
  uint64_t base_ = 0;
  uint64_t sent_ = 0;
  uint64_t end_ = 0;
  SliceQueue q_;
};

}  // namespace mtcp::core
