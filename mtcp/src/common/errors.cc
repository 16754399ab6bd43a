#include "common/errors.h"

namespace mtcp {

std::string_view to_string(Error e) {
  switch (e) {
    case Error::ok: return "ok";
    case Error::truncated: return "truncated";
    case Error::bad_magic: return "bad magic";
    case Error::unsupported_version: return "unsupported version";
    case Error::unknown_type: return "unknown type";
    case Error::too_large: return "too large";
    case Error::bad_length: return "bad length";
    case Error::bad_field: return "bad field";
    case Error::bad_mac: return "bad control-message MAC";
    case Error::snapshot_too_large: return "snapshot too large";
    case Error::input_log_full: return "input log full";
    case Error::send_log_full: return "send log full";
    case Error::recv_buffer_full: return "receive buffer full";
    case Error::state_too_large: return "connection state too large";
    case Error::conn_table_full: return "connection table full";
    case Error::pending_table_full: return "pending-migration table full";
    case Error::alternates_too_many: return "too many alternates";
    case Error::member_full: return "member buffers full";
    case Error::rate_limited: return "rate limited";
    case Error::bad_proof: return "bad proof";
    case Error::cert_expired: return "certificate expired";
    case Error::cert_not_yet_valid: return "certificate not yet valid";
    case Error::stale_counter: return "stale migration counter";
    case Error::unknown_connection: return "unknown connection";
    case Error::owner_unreachable: return "owner unreachable";
    case Error::already_claimed: return "already claimed";
    case Error::claim_lost: return "claim lost";
    case Error::stale_epoch: return "stale epoch";
    case Error::state_gap: return "state gap";
    case Error::migration_timeout: return "migration timeout";
    case Error::not_owner: return "not owner";
    case Error::draining: return "draining";
    case Error::no_alternate: return "no alternate left";
    case Error::protocol_violation: return "protocol violation";
    case Error::peer_reset: return "peer reset";
    case Error::closed: return "closed";
    case Error::subflow_lost: return "subflow lost";
    case Error::replay_mismatch: return "replay mismatch";
    case Error::idle_timeout: return "idle timeout";
  }
  return "unknown error";
}

}  // namespace mtcp
