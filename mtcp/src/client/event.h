// What a client::Connection tells its application (Connection::on_event), one Event per
// occurrence, in the order they happened. Which fields are set depends on the kind:
//
//   connected          to = the member that accepted the connection
//   migration_started  from, to, reason                     (an attempt is under way)
//   migrated           from, to, reason, downtime_us, rcv_at, snd_at
//   migration_failed   from, to, reason, error              (still on `from`; data keeps moving)
//   hint               from = the hinting member, to = the member it suggests (0: any), hint
//   peer_closed        from = the member; no byte follows those already readable
//   failed             error, last_attempt, attempt_errors                 (terminal: the connection is gone)
//   closed             detail                               (terminal: after close(), see there)
//
// `reason` names who decided a migration: the policy trigger ("manual", "hint", "stall",
// "throughput", "schedule", or whatever an application Policy returns), or "recovery" when
// the engine moved by itself because the serving member's subflow was lost.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "core/types.h"
#include "wire/frame.h"

namespace mtcp::client {

enum class EventKind { connected, migration_started, migrated, migration_failed, hint, peer_closed, failed, closed };
const char* to_string(EventKind k);

inline constexpr const char* kReasonManual = "manual";
inline constexpr const char* kReasonRecovery = "recovery";

struct Event {
  EventKind kind = EventKind::connected;
  core::ServerId from = 0;
  core::ServerId to = 0;
  std::string reason;
  std::string detail;        // human-readable: the policy's explanation, how the close ended
  // migrated: microseconds from the migration request to the new member's ACCEPT, on a steady
  // clock. Recoveries are timed from the engine's millisecond stamps (a multiple of 1000).
  int64_t downtime_us = 0;
  uint64_t rcv_at = 0;       // migrated: server->client bytes received at the switch
  uint64_t snd_at = 0;       // migrated: client->server bytes the new member held
  Error error = Error::ok;   // migration_failed, failed: to_string(error) names it
  Error last_attempt = Error::ok;  // failed: why the last migration attempt failed
  // failed: each reason the attempts since the last success failed for, with its count, in the
  // order first seen (core::describe_attempts formats it).
  std::vector<std::pair<Error, uint32_t>> attempt_errors;
  wire::HintReason hint = wire::HintReason::overload;
};

const char* to_string(wire::HintReason r);
// failed: " (last attempt: X; since the last success: Y xN, ...)", or "" when no attempt failed.
std::string describe_attempts(const Event& e);
// One line for logs, e.g. "migrated 1 -> 2 (manual) in 412 us".
std::string to_string(const Event& e);

}  // namespace mtcp::client
