// Migration policies: see policy.h for the contract and docs/PROXY.md for the reasoning.
// Sans-IO: every input carries its time; nothing here reads a clock.
#include "runtime/policy.h"

#include <algorithm>
#include <cassert>
#include <cstdio>

namespace mtcp::rt {

namespace {

struct NamedBit {
  const char* name;
  unsigned bit;
};
constexpr NamedBit kPolicyNames[] = {{"throughput", kPolicyThroughput},
                                     {"stall", kPolicyStall},
                                     {"hint", kPolicyHint},
                                     {"manual", kPolicyManual},
                                     {"schedule", kPolicySchedule}};

std::string rate_text(double bytes_per_s) {
  char b[48];
  if (bytes_per_s >= 1e6)
    std::snprintf(b, sizeof b, "%.2f MB/s", bytes_per_s / 1e6);
  else if (bytes_per_s >= 1e3)
    std::snprintf(b, sizeof b, "%.1f kB/s", bytes_per_s / 1e3);
  else
    std::snprintf(b, sizeof b, "%.0f B/s", bytes_per_s);
  return b;
}

std::string ms_field(const char* name, TimeMs v, const char* rule) {
  return std::string(name) + " = " + std::to_string(v) + ": must be " + rule;
}

}  // namespace

// ---- configuration --------------------------------------------------------------------------

std::string validate(const PolicyConfig& c) {
  if ((c.enabled & ~kPolicyAll) != 0) return "policies: unknown policy bit";
  // Written so that NaN fails too.
  if (!(c.fraction > 0.0 && c.fraction < 1.0))
    return "fraction = " + std::to_string(c.fraction) + ": must be strictly between 0 and 1";
  if (c.window_ms == 0 || c.window_ms > kPolicyTimeMaxMs)
    return ms_field("window-ms", c.window_ms, "between 1 and 86400000");
  if (c.warmup_ms > kPolicyTimeMaxMs) return ms_field("warmup-ms", c.warmup_ms, "at most 86400000");
  if (c.hysteresis == 0 || c.hysteresis > kHysteresisMax)
    return "hysteresis = " + std::to_string(c.hysteresis) + ": must be between 1 and " +
           std::to_string(kHysteresisMax) + " windows";
  if (c.cooldown_ms > kPolicyTimeMaxMs)
    return ms_field("cooldown-ms", c.cooldown_ms, "at most 86400000");
  if (c.stall_ms == 0 || c.stall_ms > kPolicyTimeMaxMs)
    return ms_field("stall-ms", c.stall_ms, "between 1 and 86400000");
  if (c.every_ms == 0 || c.every_ms > kPolicyTimeMaxMs)
    return ms_field("every-ms", c.every_ms, "between 1 and 86400000");
  if (c.retry_ms > kPolicyTimeMaxMs) return ms_field("retry-ms", c.retry_ms, "at most 86400000");
  switch (c.stall_expect) {
    case StallExpect::any:
    case StallExpect::stream:
    case StallExpect::reply:
    case StallExpect::echo:
      break;
    default:
      return "stall-expect: unknown value";
  }
  return {};
}

bool parse_policies(const std::string& text, unsigned& out, std::string& why) {
  out = 0;
  if (text == "none") return true;
  size_t pos = 0;
  while (true) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    bool found = false;
    for (const auto& nb : kPolicyNames) {
      if (item == nb.name) {
        out |= nb.bit;
        found = true;
      }
    }
    if (!found) {
      why = "unknown policy '" + item + "' in '" + text +
            "' (throughput, stall, hint, manual, schedule, or none)";
      return false;
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return true;
}

std::string policies_to_string(unsigned enabled) {
  std::string s;
  for (const auto& nb : kPolicyNames) {
    if (enabled & nb.bit) s += (s.empty() ? "" : ",") + std::string(nb.name);
  }
  return s.empty() ? "none" : s;
}

bool parse_stall_expect(const std::string& text, StallExpect& out) {
  for (StallExpect e :
       {StallExpect::any, StallExpect::stream, StallExpect::reply, StallExpect::echo}) {
    if (text == to_string(e)) {
      out = e;
      return true;
    }
  }
  return false;
}

const char* to_string(StallExpect e) {
  switch (e) {
    case StallExpect::any:
      return "any";
    case StallExpect::stream:
      return "stream";
    case StallExpect::reply:
      return "reply";
    case StallExpect::echo:
      return "echo";
  }
  return "?";
}

const char* to_string(Decision::Trigger t) {
  switch (t) {
    case Decision::Trigger::manual:
      return "manual";
    case Decision::Trigger::hint:
      return "hint";
    case Decision::Trigger::stall:
      return "stall";
    case Decision::Trigger::throughput:
      return "throughput";
    case Decision::Trigger::schedule:
      return "schedule";
  }
  return "?";
}

ServerId next_target(const std::vector<ServerId>& pool, ServerId current,
                     const std::set<ServerId>& avoid) {
  if (pool.empty()) return 0;
  size_t n = pool.size();
  auto it = std::find(pool.begin(), pool.end(), current);
  // Not in the pool: start from the first member.
  size_t at = it == pool.end() ? n - 1 : static_cast<size_t>(it - pool.begin());
  for (size_t k = 1; k <= n; ++k) {
    ServerId c = pool[(at + k) % n];
    if (c != current && avoid.count(c) == 0) return c;
  }
  for (size_t k = 1; k <= n; ++k) {
    ServerId c = pool[(at + k) % n];
    if (c != current) return c;
  }
  return current;
}

// ---- the policy -----------------------------------------------------------------------------

MigrationPolicy::MigrationPolicy(const PolicyConfig& cfg) : cfg_(cfg), backoff_(cfg.retry_ms * 4, cfg.retry_ms * 64) {
  assert(validate(cfg).empty());
}

void MigrationPolicy::on_connected(ServerId server, std::vector<ServerId> pool, TimeMs now) {
  connected_ = true;
  migrating_ = false;
  current_ = server;
  pool_ = std::move(pool);
  last_switch_ms_ = now;
  quiet_floor_ms_ = std::max(quiet_floor_ms_, now);
  restart_measurement(now + cfg_.warmup_ms);
}

void MigrationPolicy::restart_measurement(TimeMs from) {
  measure_from_ = from;
  win_start_ = core::kNever;
  win_bytes_ = 0;
  win_limited_ms_ = 0;
  max_rate_ = 0;
  bad_ = 0;
}

// Closes every window that ended at or before `now`. Inputs call this first, so a window
// never receives bytes from after its end.
void MigrationPolicy::advance(TimeMs now) {
  if (!connected_ || migrating_ || !on(kPolicyThroughput) || measure_from_ == core::kNever) return;
  if (win_start_ == core::kNever) {
    if (now < measure_from_) return;
    win_start_ = measure_from_;
    win_bytes_ = 0;
    win_limited_ms_ = 0;
  }
  while (now >= win_start_ + cfg_.window_ms) {
    TimeMs end = win_start_ + cfg_.window_ms;
    close_window(end);
    // Windows wholly in the past received nothing (an input would have closed them before):
    // they are not judged, so skip them at once.
    win_start_ = end + (now - end) / cfg_.window_ms * cfg_.window_ms;
    win_bytes_ = 0;
    win_limited_ms_ = 0;
  }
}

void MigrationPolicy::close_window(TimeMs end) {
  if (limited_) win_limited_ms_ += end - std::max(limited_since_, win_start_);
  // App-limited for more than a quarter of the window: the rate says more about the local
  // reader than about the server. An empty window is the stall policy's concern.
  if (win_limited_ms_ * 4 > cfg_.window_ms || win_bytes_ == 0) return;
  double rate = static_cast<double>(win_bytes_) * 1000.0 / static_cast<double>(cfg_.window_ms);
  last_rate_ = rate;
  max_rate_ = std::max(max_rate_, rate);
  if (rate < cfg_.fraction * max_rate_) {
    ++bad_;
    if (bad_ >= cfg_.hysteresis) {
      char f[16];
      std::snprintf(f, sizeof f, "%.2f", cfg_.fraction);
      throughput_reason_ = "throughput: " + rate_text(rate) + " < " + f + " x " +
                           rate_text(max_rate_) + " for " + std::to_string(bad_) + " windows of " +
                           std::to_string(cfg_.window_ms) + " ms";
    }
  } else {
    bad_ = 0;
  }
}

void MigrationPolicy::on_bytes_received(uint64_t n, TimeMs now) {
  advance(now);
  if (n == 0) return;
  recv_total_ += n;
  received_any_ = true;
  last_recv_ms_ = now;
  unanswered_since_ = core::kNever;
  stall_streak_ = 0;
  if (win_start_ != core::kNever && !migrating_ && now >= win_start_) win_bytes_ += n;
}

void MigrationPolicy::on_bytes_sent(uint64_t n, TimeMs now) {
  advance(now);
  if (n == 0) return;
  sent_total_ += n;
  if (unanswered_since_ == core::kNever) unanswered_since_ = now;
  stall_streak_ = 0;
}

void MigrationPolicy::on_app_limited(bool limited, TimeMs now) {
  advance(now);
  if (limited == limited_) return;
  if (limited) {
    limited_since_ = now;
  } else {
    if (win_start_ != core::kNever && !migrating_) {
      TimeMs from = std::max(limited_since_, win_start_);
      if (now > from) win_limited_ms_ += now - from;
    }
    // The stall clock did not run while the application held delivery back.
    quiet_floor_ms_ = std::max(quiet_floor_ms_, now);
  }
  limited_ = limited;
}

void MigrationPolicy::on_peer_closed(TimeMs now) {
  advance(now);
  peer_closed_ = true;
}

void MigrationPolicy::on_hint(ServerId target, TimeMs now) {
  advance(now);
  if (on(kPolicyHint)) hint_ = target;
}

void MigrationPolicy::request_manual() {
  if (on(kPolicyManual)) manual_ = true;
}

void MigrationPolicy::on_migration_started(ServerId target, TimeMs now) {
  (void)target;
  advance(now);
  migrating_ = true;
  // Any move satisfies a pending request to move.
  manual_ = false;
  hint_.reset();
  if (polled_ == Decision::Trigger::stall) ++stall_streak_;
  polled_.reset();
}

void MigrationPolicy::on_migrated(ServerId from, ServerId to, TimeMs now) {
  migrating_ = false;
  connected_ = true;
  left_ = from;
  current_ = to;
  failed_.clear();
  backoff_.succeeded(to);
  last_switch_ms_ = now;
  retry_after_ms_ = 0;
  quiet_floor_ms_ = std::max(quiet_floor_ms_, now);
  // The reference rate belongs to the old server's path: re-learn it after the cool-down.
  restart_measurement(now + cfg_.cooldown_ms);
}

void MigrationPolicy::on_migration_failed(ServerId target, TimeMs now) {
  migrating_ = false;
  if (target != 0 && target != current_) {
    failed_.insert(target);
    backoff_.failed(target, now);
  }
  retry_after_ms_ = now + cfg_.retry_ms;
  // Data paused while the attempt ran: measure afresh, but keep the reference and the count
  // of bad windows (the condition that started the attempt still stands).
  measure_from_ = now;
  win_start_ = core::kNever;
  win_bytes_ = 0;
  win_limited_ms_ = 0;
}

bool MigrationPolicy::data_expected() const {
  if (peer_closed_) return false;
  bool stream = received_any_;
  bool reply = unanswered_since_ != core::kNever;
  switch (cfg_.stall_expect) {
    case StallExpect::any:
      return stream || reply;
    case StallExpect::stream:
      return stream;
    case StallExpect::reply:
      return reply;
    case StallExpect::echo:
      return sent_total_ > recv_total_;
  }
  return false;
}

TimeMs MigrationPolicy::quiet_since() const {
  TimeMs q = quiet_floor_ms_;
  if (received_any_) q = std::max(q, last_recv_ms_);
  // Waiting for an answer starts with the first unanswered send; a stream's silence starts
  // with the last byte received.
  bool from_send = cfg_.stall_expect == StallExpect::reply ||
                   cfg_.stall_expect == StallExpect::echo ||
                   (cfg_.stall_expect == StallExpect::any && !received_any_);
  if (from_send && unanswered_since_ != core::kNever) q = std::max(q, unanswered_since_);
  return q;
}

TimeMs MigrationPolicy::stall_deadline() const {
  if (!on(kPolicyStall) || limited_ || stall_streak_ >= kStallMigrationsMax || !data_expected())
    return core::kNever;
  return quiet_since() + (cfg_.stall_ms << stall_streak_);
}

ServerId MigrationPolicy::choose(ServerId preferred, TimeMs now) const {
  if (pool_.empty()) return preferred;
  if (preferred != 0 && preferred != current_ && !backoff_.backed_off(preferred, now) &&
      std::find(pool_.begin(), pool_.end(), preferred) != pool_.end())
    return preferred;
  std::set<ServerId> failing = failed_;
  for (ServerId m : pool_) {
    if (backoff_.backed_off(m, now)) failing.insert(m);
  }
  std::set<ServerId> avoid = failing;
  if (left_ != 0) avoid.insert(left_);
  ServerId t = next_target(pool_, current_, avoid);
  // Everything else is avoided: the member just left is better than one that just failed.
  if (avoid.count(t) != 0) t = next_target(pool_, current_, failing);
  return t;
}

std::optional<Decision> MigrationPolicy::poll(TimeMs now) {
  advance(now);
  polled_.reset();
  if (!connected_ || migrating_) return std::nullopt;
  std::optional<Decision> d;
  if (manual_) {
    d = Decision{Decision::Trigger::manual, choose(0, now), "manual"};
  } else if (hint_) {
    d = Decision{
        Decision::Trigger::hint, choose(*hint_, now),
        "hint from server " + std::to_string(current_) +
            (*hint_ != 0 ? " to " + std::to_string(*hint_) : std::string(" (no target named)"))};
  } else if (now >= retry_after_ms_) {
    TimeMs stall_at = stall_deadline();
    if (stall_at != core::kNever && now >= stall_at) {
      d = Decision{Decision::Trigger::stall, choose(0, now),
                   "stall: nothing received for " + std::to_string(now - quiet_since()) +
                       " ms while data was expected (" + to_string(cfg_.stall_expect) + ")"};
    } else if (on(kPolicyThroughput) && bad_ >= cfg_.hysteresis) {
      d = Decision{Decision::Trigger::throughput, choose(0, now), throughput_reason_};
    } else if (on(kPolicySchedule) && now >= last_switch_ms_ + cfg_.every_ms) {
      d = Decision{Decision::Trigger::schedule, choose(0, now),
                   "schedule: every " + std::to_string(cfg_.every_ms) + " ms"};
    }
  }
  if (d) polled_ = d->trigger;
  return d;
}

TimeMs MigrationPolicy::next_deadline() const {
  if (!connected_ || migrating_) return core::kNever;
  if (manual_ || hint_) return 0;
  TimeMs t = core::kNever;
  if (TimeMs s = stall_deadline(); s != core::kNever) t = std::min(t, std::max(s, retry_after_ms_));
  if (on(kPolicyThroughput)) {
    if (bad_ >= cfg_.hysteresis) t = std::min(t, retry_after_ms_);
    // Only a window holding bytes can change anything when it closes.
    if (win_start_ != core::kNever && win_bytes_ > 0) t = std::min(t, win_start_ + cfg_.window_ms);
  }
  if (on(kPolicySchedule))
    t = std::min(t, std::max(last_switch_ms_ + cfg_.every_ms, retry_after_ms_));
  return t;
}

}  // namespace mtcp::rt
