#include <utility>

#include "sdk/app.h"

namespace mtcp::sdk {

void WakeQueue::set_notify(Notify fn, void* ctx) {
  std::lock_guard lock(mu_);
  notify_ = fn;
  ctx_ = ctx;
}

void WakeQueue::wake(ConnId conn) {
  std::lock_guard lock(mu_);
  if (closed_) return;
  woken_.insert(conn);  // at most one entry per connection: bounded by the connection table
  if (pending_) return;
  pending_ = true;
  // Called under the lock: close() cannot complete while a notification is under way, so the
  // host outlives every call of its notify function.
  if (notify_) notify_(ctx_);
}

std::vector<ConnId> WakeQueue::take() {
  std::lock_guard lock(mu_);
  pending_ = false;
  std::vector<ConnId> v(woken_.begin(), woken_.end());
  woken_.clear();
  return v;
}

void WakeQueue::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  notify_ = nullptr;
  woken_.clear();
}

}  // namespace mtcp::sdk
