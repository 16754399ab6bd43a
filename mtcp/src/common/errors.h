// Error codes shared by the codecs, the engines and the wire (REFUSE, RESET and DENY carry
// them as u16). Numbers are part of the wire format: never renumber, only append.
// See docs/PROTOCOL.md §9.
#pragma once
#include <cstdint>
#include <string_view>

namespace mtcp {

enum class Error : uint16_t {
  ok = 0,
  // Codec errors (1xx): the bytes do not form a valid frame or message.
  truncated = 100,            // more bytes needed than the frame/message declares
  bad_magic = 101,            // preface or control magic wrong
  unsupported_version = 102,  // version byte not understood
  unknown_type = 103,         // frame or message type not defined
  too_large = 104,            // declared length above its named limit
  bad_length = 105,           // declared length inconsistent with the type's layout
  bad_field = 106,            // a field holds a value outside its domain
  bad_mac = 107,              // control message authentication failed
  // Limits (2xx): a named cap in limits.h would be exceeded.
  snapshot_too_large = 200,
  input_log_full = 201,
  send_log_full = 202,
  recv_buffer_full = 203,
  state_too_large = 204,
  conn_table_full = 205,
  pending_table_full = 206,
  alternates_too_many = 207,
  rate_limited = 208,
  // Certificates and proofs (3xx).
  bad_proof = 300,
  cert_expired = 301,
  cert_not_yet_valid = 302,
  stale_counter = 303,
  unknown_connection = 304,
  // Migration and ownership (4xx).
  owner_unreachable = 400,  // lazy transfer and the owner did not answer
  already_claimed = 401,    // another server claimed this epoch first
  claim_lost = 402,         // no majority of votes for the claim
  stale_epoch = 403,        // message for an epoch older than the one known
  state_gap = 404,          // the transferred state cannot continue the client's stream
  migration_timeout = 405,  // the client gave up waiting for accept/refuse
  not_owner = 406,          // this server does not own the connection
  draining = 407,           // the server refuses new work while draining
  no_alternate = 408,       // the client has no alternate left to try
  // Stream (5xx).
  protocol_violation = 500,
  peer_reset = 501,
  closed = 502,
  subflow_lost = 503,
};

std::string_view to_string(Error e);

}  // namespace mtcp
