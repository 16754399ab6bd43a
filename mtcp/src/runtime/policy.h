// Client-side migration policies (sans-IO): when should an M-TCP connection move, and where.
//
// The policy reads no clock and touches no socket: the driver (mtcp-proxy, mtcp-perf) reports
// what happened with the time it happened (`now`, milliseconds, any origin, never decreasing)
// and asks poll(now) whether to migrate. One MigrationPolicy per connection. See docs/PROXY.md
// for the reasoning behind every default.
//
// Driving it:
//
//   MigrationPolicy p(cfg);                                  // cfg passed validate()
//   on connected:         p.on_connected(engine.server(), engine.pool(), now)
//   bytes from the peer:  p.on_bytes_received(n, now)        // as they arrive (rcv_nxt grows)
//   bytes to the peer:    p.on_bytes_sent(n, now)            // as the application writes them
//   local back-pressure:  p.on_app_limited(true/false, now)  // received data waits for the app
//   events:               p.on_hint(target, now), p.on_peer_closed(now),
//                         p.on_migrated(from, to, now), p.on_migration_failed(target, now)
//   operator / SIGUSR1:   p.request_manual()
//   whenever the engine could migrate (established, no attempt running, a primary subflow),
//   and at p.next_deadline():
//       if (auto d = p.poll(now); d && engine.migrate(d->target, now))
//         p.on_migration_started(d->target, now);
//
// A decision stays pending until on_migration_started(): a driver that cannot act on it now
// gets it again from the next poll().
//
// Policies (combine any of them; the first that fires wins, in this order):
//   manual      request_manual() -> migrate at once (to the next member).
//   hint        the server's HINT -> migrate at once to the hinted member (0 or unknown: next).
//   stall       nothing received for stall_ms while data is expected (StallExpect) -> migrate.
//               Each further stall migration with no byte received or sent in between
//               doubles the wait (2x, 4x, 8x); after kStallMigrationsMax of them the stall
//               policy rests until a byte moves, so an idle connection does not hop forever.
//   throughput  receive rate measured over windows of window_ms. After warmup_ms (from
//               connect) or cooldown_ms (from a migration) the highest window rate is the
//               reference; `hysteresis` judged windows in a row below fraction x reference
//               -> migrate. The reference is RESET at each migration (re-learned for the new
//               server): the old server's path says nothing about the new one, and keeping it
//               makes a slower-but-best member look bad and causes ping-pong. Windows with no
//               byte received (silence is the stall policy's concern) and windows in which
//               the local application held back delivery for more than a quarter of the
//               window (app-limited) are not judged.
//   schedule    every every_ms after the connection opened or last migrated (tests, demos).
// After a failed attempt the automatic policies (stall, throughput, schedule) wait retry_ms
// before deciding again, and avoid the member that failed until a migration succeeds.
//
// Target choice (next_target): the next member after the current one in pool order
// (WELCOME order), skipping the member just left, members that failed since the last
// successful migration, and members backed off (core::MemberBackoff: a member that failed
// as a target is avoided for 4 x retry_ms, doubling with each failure in a row up to 64 x retry_ms, across
// successful migrations elsewhere, until a migration to it succeeds), unless nothing else is
// left. A server's hint names its target; a hinted member that is backed off is not taken.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/backoff.h"
#include "core/types.h"

namespace mtcp::rt {

using core::ServerId;
using core::TimeMs;

// Policy bits for PolicyConfig::enabled.
enum PolicyBits : unsigned {
  kPolicyThroughput = 1u << 0,
  kPolicyStall = 1u << 1,
  kPolicyHint = 1u << 2,
  kPolicyManual = 1u << 3,
  kPolicySchedule = 1u << 4,
};
inline constexpr unsigned kPolicyAll =
    kPolicyThroughput | kPolicyStall | kPolicyHint | kPolicyManual | kPolicySchedule;

// When is data "expected" for the stall policy?
enum class StallExpect {
  any,     // stream or reply (default: works for streams, echo and request/response)
  stream,  // something was received before and the peer has not closed (source-like flows)
  reply,   // a byte was sent after the last byte received (request/response: answer pending)
  echo,    // more bytes sent than received (every byte sent comes back: echo-like flows)
};

// Defaults, named so that tools and docs can cite them.
inline constexpr unsigned kDefaultPolicies =
    kPolicyThroughput | kPolicyStall | kPolicyHint | kPolicyManual;
inline constexpr double kDefaultFraction = 0.5;
inline constexpr TimeMs kDefaultWindowMs = 250;
inline constexpr TimeMs kDefaultWarmupMs = 2000;
inline constexpr uint32_t kDefaultHysteresis = 4;
inline constexpr TimeMs kDefaultCooldownMs = 3000;
inline constexpr TimeMs kDefaultStallMs = 2000;
inline constexpr TimeMs kDefaultEveryMs = 1000;
inline constexpr TimeMs kDefaultRetryMs = 500;
// Bounds checked by validate().
inline constexpr TimeMs kPolicyTimeMaxMs = 24ull * 3600 * 1000;  // any duration: one day
inline constexpr uint32_t kHysteresisMax = 1000;
inline constexpr uint32_t kStallMigrationsMax = 4;  // stall migrations in a row without progress

struct PolicyConfig {
  unsigned enabled = kDefaultPolicies;
  double fraction = kDefaultFraction;   // throughput: migrate below fraction x reference, (0,1)
  TimeMs window_ms = kDefaultWindowMs;  // throughput: measurement window, > 0
  TimeMs warmup_ms = kDefaultWarmupMs;  // throughput: not measured after connecting
  uint32_t hysteresis = kDefaultHysteresis;  // throughput: bad windows in a row, >= 1
  TimeMs cooldown_ms = kDefaultCooldownMs;   // throughput: not measured after a migration
  TimeMs stall_ms = kDefaultStallMs;         // stall: silence while data is expected, > 0
  StallExpect stall_expect = StallExpect::any;
  TimeMs every_ms = kDefaultEveryMs;  // schedule: period, > 0
  TimeMs retry_ms = kDefaultRetryMs;  // automatic policies: wait after a failed attempt
};

// Empty if cfg is usable, otherwise what is wrong (one message naming the field).
std::string validate(const PolicyConfig& cfg);
// "throughput,stall,hint,manual,schedule" (any subset, any order; "none" for no policy).
bool parse_policies(const std::string& text, unsigned& out, std::string& why);
std::string policies_to_string(unsigned enabled);
bool parse_stall_expect(const std::string& text, StallExpect& out);
const char* to_string(StallExpect e);

// The next member after `current` in `pool`, skipping `avoid` unless nothing else is left
// (then the next member other than `current`; `current` itself only if it is alone).
// 0 if the pool is empty.
ServerId next_target(const std::vector<ServerId>& pool, ServerId current,
                     const std::set<ServerId>& avoid);

struct Decision {
  enum class Trigger { manual, hint, stall, throughput, schedule } trigger;
  ServerId target = 0;  // 0 only if the pool is unknown (on_connected not called): driver picks
  std::string reason;   // human-readable, e.g. "stall: nothing received for 2013 ms (stream)"
};
const char* to_string(Decision::Trigger t);

class MigrationPolicy {
 public:
  explicit MigrationPolicy(const PolicyConfig& cfg);  // cfg must pass validate()
  const PolicyConfig& config() const { return cfg_; }

  // The connection is established with `server`; `pool` is the engine's pool (WELCOME order).
  void on_connected(ServerId server, std::vector<ServerId> pool, TimeMs now);
  void on_bytes_received(uint64_t n, TimeMs now);
  void on_bytes_sent(uint64_t n, TimeMs now);
  // True while received data waits for the local application (its socket is not taking it):
  // a slow reader is not a slow server. Throughput windows limited for more than a quarter
  // of their length are not judged; the stall clock does not run while limited.
  void on_app_limited(bool limited, TimeMs now);
  void on_peer_closed(TimeMs now);  // the server closed its direction: no more data expected
  void on_hint(ServerId target, TimeMs now);
  void request_manual();
  // The driver started a migration the policy decided (engine.migrate() succeeded).
  void on_migration_started(ServerId target, TimeMs now);
  // A migration finished (ours or one the engine started by itself to recover a subflow).
  void on_migrated(ServerId from, ServerId to, TimeMs now);
  void on_migration_failed(ServerId target, TimeMs now);

  // A decision, if one is due. Does not consume it (see on_migration_started).
  std::optional<Decision> poll(TimeMs now);
  // When poll() could next return a decision without any other input (kNever: only after an
  // input). Already passed if one is due now.
  TimeMs next_deadline() const;

  // Introspection (logs, tests).
  double reference_rate() const { return max_rate_; }  // bytes/s, 0 until learned
  double last_rate() const { return last_rate_; }      // bytes/s of the last judged window
  uint32_t bad_windows() const { return bad_; }
  uint64_t bytes_received() const { return recv_total_; }
  uint64_t bytes_sent() const { return sent_total_; }
  ServerId server() const { return current_; }

 private:
  bool on(unsigned bit) const { return (cfg_.enabled & bit) != 0; }
  void advance(TimeMs now);
  void close_window(TimeMs end);
  void restart_measurement(TimeMs from);
  bool data_expected() const;
  TimeMs quiet_since() const;
  TimeMs stall_deadline() const;
  ServerId choose(ServerId preferred, TimeMs now) const;

  PolicyConfig cfg_;
  bool connected_ = false;
  bool migrating_ = false;
  std::vector<ServerId> pool_;
  ServerId current_ = 0;
  ServerId left_ = 0;          // member just left
  std::set<ServerId> failed_;  // targets that failed since the last successful migration
  core::MemberBackoff backoff_;  // targets that failed recently, whatever succeeded since
  TimeMs last_switch_ms_ = 0;  // connect or last migration
  TimeMs retry_after_ms_ = 0;  // automatic policies wait until then after a failure

  // manual / hint
  bool manual_ = false;
  std::optional<ServerId> hint_;

  // throughput
  TimeMs measure_from_ = core::kNever;  // first window starts here
  TimeMs win_start_ = core::kNever;     // current window [win_start_, win_start_ + window_ms)
  uint64_t win_bytes_ = 0;
  TimeMs win_limited_ms_ = 0;
  double max_rate_ = 0;
  double last_rate_ = 0;
  uint32_t bad_ = 0;
  std::string throughput_reason_;

  // app-limited
  bool limited_ = false;
  TimeMs limited_since_ = 0;

  // stall
  uint64_t sent_total_ = 0;
  uint64_t recv_total_ = 0;
  bool received_any_ = false;
  bool peer_closed_ = false;
  TimeMs last_recv_ms_ = 0;
  TimeMs unanswered_since_ = core::kNever;   // first send after the last receive
  TimeMs quiet_floor_ms_ = 0;                // silence is not counted before this
  uint32_t stall_streak_ = 0;                // stall migrations with no byte moved in between
  std::optional<Decision::Trigger> polled_;  // trigger of the last decision poll() returned
};

}  // namespace mtcp::rt
