// Output an app produced that the connection has not taken yet (back-pressure). The shipped
// services all work the same way: produce, flush as far as the connection takes, snapshot only
// when nothing is pending (a consistent point), and offer the rest again on_writable. A block
// the connection did not take is kept and offered again, never regenerated.
#pragma once
#include <deque>
#include <string>

#include "sdk/app.h"

namespace mtcp::svc {

class PendingOutput {
 public:
  void push(Slice s) {
    if (!s.empty()) q_.push_back(std::move(s));
  }
  bool empty() const { return q_.empty(); }
  // Writes as much as the connection takes. True when everything was written; false when it
  // is full (wait for on_writable) or refused the write (`failed()`): the connection has ended
  // or moved away (replay_mismatch, not_owner, closed), and on_closed or on_fenced follows.
  bool flush(sdk::Conn& c) {
    while (!q_.empty()) {
      auto w = c.write(q_.front());
      if (!w) {
        failed_ = true;
        return false;
      }
      if (*w == 0) return false;
      Slice& front = q_.front();
      if (*w < front.len) {
        front = front.sub(*w, front.len - *w);
        return false;
      }
      q_.pop_front();
    }
    return true;
  }
  bool failed() const { return failed_; }

 private:
  std::deque<Slice> q_;
  bool failed_ = false;
};

// Takes a snapshot, reporting a refusal (a state above the pool's snapshot limit) as a violation.
inline void take_snapshot(sdk::Conn& c, Bytes state) {
  if (Status st = c.snapshot(std::move(state)); !st) c.violation("snapshot refused: " + std::string(to_string(st.error())));
}

}  // namespace mtcp::svc
