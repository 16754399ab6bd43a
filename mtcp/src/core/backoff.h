// Which pool member to try next (docs/PROTOCOL.md §4.2 "Recovery", docs/PROXY.md): members
// that just failed are backed off, so a client does not keep choosing a dead or refusing
// member. Sans-IO: the caller passes the time.
//
// A member that fails is avoided for base_ms, doubling with each failure in a row (at most
// max_ms); a success with it (an ACCEPT, a WELCOME) clears it. When every candidate is backed
// off, the one whose back-off ends first is chosen: the caller always gets a member.
#pragma once
#include <algorithm>
#include <map>
#include <vector>

#include "core/types.h"

namespace mtcp::core {

class MemberBackoff {
 public:
  // At most this many members are remembered (the wire's pool has fewer; a failure of one more
  // is not recorded).
  static constexpr size_t kMembersMax = 256;

  MemberBackoff(TimeMs base_ms, TimeMs max_ms) : base_ms_(std::max<TimeMs>(base_ms, 1)), max_ms_(std::max(max_ms, base_ms_)) {}

  void failed(ServerId s, TimeMs now) {
    auto it = entries_.find(s);
    if (it == entries_.end()) {
      if (entries_.size() >= kMembersMax) return;
      it = entries_.emplace(s, Entry{}).first;
    }
    Entry& e = it->second;
    TimeMs wait = std::min<TimeMs>(max_ms_, base_ms_ << std::min<uint32_t>(e.fails, 20));
    ++e.fails;
    e.until_ms = now + wait;
  }
  void succeeded(ServerId s) { entries_.erase(s); }
  bool backed_off(ServerId s, TimeMs now) const {
    auto it = entries_.find(s);
    return it != entries_.end() && now < it->second.until_ms;
  }
  // Failures in a row of s (0: none, or it succeeded since).
  uint32_t failures(ServerId s) const {
    auto it = entries_.find(s);
    return it == entries_.end() ? 0 : it->second.fails;
  }
  TimeMs until(ServerId s) const {
    auto it = entries_.find(s);
    return it == entries_.end() ? 0 : it->second.until_ms;
  }

  // The first member of `pool` after `after` (wrapping; from the start if `after` is not in
  // it) that is not `skip` and not backed off. If every one is backed off, the one whose
  // back-off ends first (earliest in that order on a tie); `skip` only if it is the only member.
  ServerId next(const std::vector<ServerId>& pool, ServerId after, ServerId skip, TimeMs now) const {
    if (pool.empty()) return 0;
    size_t n = pool.size();
    auto it = std::find(pool.begin(), pool.end(), after);
    size_t at = it == pool.end() ? n - 1 : static_cast<size_t>(it - pool.begin());
    ServerId best = 0;
    TimeMs best_until = kNever;
    for (size_t k = 1; k <= n; ++k) {
      ServerId c = pool[(at + k) % n];
      if (c == skip) continue;
      if (!backed_off(c, now)) return c;
      if (until(c) < best_until) {
        best = c;
        best_until = until(c);
      }
    }
    return best != 0 ? best : skip;
  }

 private:
  struct Entry {
    uint32_t fails = 0;
    TimeMs until_ms = 0;
  };
  TimeMs base_ms_;
  TimeMs max_ms_;
  std::map<ServerId, Entry> entries_;
};

}  // namespace mtcp::core
