#include "client/event.h"

#include "core/client.h"

namespace mtcp::client {

const char* to_string(EventKind k) {
  switch (k) {
    case EventKind::connected: return "connected";
    case EventKind::migration_started: return "migration_started";
    case EventKind::migrated: return "migrated";
    case EventKind::migration_failed: return "migration_failed";
    case EventKind::hint: return "hint";
    case EventKind::peer_closed: return "peer_closed";
    case EventKind::failed: return "failed";
    case EventKind::closed: return "closed";
  }
  return "unknown";
}

const char* to_string(wire::HintReason r) {
  switch (r) {
    case wire::HintReason::overload: return "overload";
    case wire::HintReason::draining: return "draining";
    case wire::HintReason::operator_request: return "operator request";
  }
  return "unknown";
}

std::string describe_attempts(const Event& e) { return core::describe_attempts(e.last_attempt, e.attempt_errors); }

std::string to_string(const Event& e) {
  auto id = [](core::ServerId s) { return std::to_string(s); };
  switch (e.kind) {
    case EventKind::connected:
      return "connected to member " + id(e.to);
    case EventKind::migration_started:
      return "migration " + id(e.from) + " -> " + id(e.to) + " started (" + e.reason + ")";
    case EventKind::migrated:
      return "migrated " + id(e.from) + " -> " + id(e.to) + " (" + e.reason + ") in " +
             std::to_string(e.downtime_us) + " us";
    case EventKind::migration_failed:
      return "migration " + id(e.from) + " -> " + id(e.to) + " (" + e.reason + ") failed: " +
             std::string(to_string(e.error));
    case EventKind::hint:
      return "member " + id(e.from) + " hints: move" + (e.to ? " to " + id(e.to) : std::string()) +
             " (" + to_string(e.hint) + ")";
    case EventKind::peer_closed:
      return "member " + id(e.from) + " closed its side";
    case EventKind::failed: {
      std::string s = "connection failed: " + std::string(to_string(e.error));
      return s + describe_attempts(e);
    }
    case EventKind::closed:
      return "closed: " + e.detail;
  }
  return "unknown event";
}

}  // namespace mtcp::client
