// Server-to-server control messages (docs/PROTOCOL.md §5). Each message is self-delimiting and
// authenticated with the pool key (HMAC-SHA256 over header and body), so a rogue peer on the
// control network can neither claim a connection nor pull state out of the pool.
//
// Header: magic u32 "MTCC", version u8, type u8, reserved u16, from u32, to u32, body length
// u32 (20 bytes), then the body, then a 32-byte MAC.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <variant>

#include "cert/cert.h"
#include "common/buffer.h"
#include "common/limits.h"
#include "common/result.h"

namespace mtcp::wire {

inline constexpr uint32_t kControlMagic = 0x4D54'4343;  // "MTCC"
// 2: a control connection starts with the receiver's challenge and the sender's PEER_HELLO
// answering it (docs/PROTOCOL.md §5.1); version 1 had neither.
inline constexpr uint8_t kControlVersion = 2;
inline constexpr size_t kControlHeaderBytes = 20;
inline constexpr size_t kControlMacBytes = 32;

enum class ControlType : uint8_t {
  claim = 0x01,       // state request + ownership claim for a new epoch
  grant = 0x02,       // vote for the claim; from the owner it is the hand-off and carries state
  deny = 0x03,        // refusal with a reason
  repl_state = 0x10,  // eager: full state (new snapshot) pushed to an alternate
  repl_log = 0x11,    // eager: input-log increment pushed to an alternate
  repl_ack = 0x12,    // eager: what the alternate now holds
  release = 0x13,     // connection closed or fenced: drop replicas
  abandon = 0x14,     // lazy claimer: my claim timed out, I will never install its grant
  peer_hello = 0x20,  // first message on a control connection: answers the receiver's challenge
};

// The receiver of a control connection speaks first: magic "MTCK", version u8, three zero
// bytes, then a random nonce. The sender's first message must be a PEER_HELLO carrying that
// nonce, so a recorded hello cannot be replayed on a new connection, and the receiver buffers
// at most kControlUnverifiedBytesMax before a message's tag has been checked.
inline constexpr uint32_t kChallengeMagic = 0x4D54'434B;  // "MTCK"
inline constexpr size_t kChallengeNonceBytes = 16;
inline constexpr size_t kChallengeBytes = 8 + kChallengeNonceBytes;
inline constexpr size_t kControlUnverifiedBytesMax = 4096;
using ChallengeNonce = std::array<uint8_t, kChallengeNonceBytes>;

// How fresh a replica is: compared as (epoch, snap_id, in_end) lexicographically.
struct ReplicaPos {
  uint64_t epoch = 0;
  uint64_t snap_id = 0;
  uint64_t in_end = 0;
  auto operator<=>(const ReplicaPos&) const = default;
};

struct Claim {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;        // the epoch the claimer wants to own
  uint32_t request_id = 0;
  TransferMode mode = TransferMode::lazy;
  bool adopt_only = false;   // lazy: grant only if you are frozen and handed this connection to me
  uint32_t counter = 0;      // the client's migration counter: a holder refuses one not above its own
  ReplicaPos have;           // what the claimer already holds (eager), zero if nothing
};
struct Grant {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;
  uint32_t request_id = 0;
  bool from_owner = false;   // the sender owned the connection and has now frozen it
  ReplicaPos pos;            // freshness of the sender's copy
  Bytes state;               // encoded ConnState, empty if the claimer's copy is as fresh
};
struct Deny {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;
  uint32_t request_id = 0;
  Error reason = Error::ok;
  uint32_t owner_id = 0;     // who owns or claimed the connection, 0 if unknown
  uint64_t owner_epoch = 0;
};
struct ReplState {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;
  Bytes state;               // encoded ConnState
};
struct ReplLog {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;
  uint64_t snap_id = 0;      // the snapshot this log continues
  uint64_t start = 0;        // input sequence of the first byte
  uint64_t out_acked = 0;    // client's cumulative ack of output: replicas trim to it
  Bytes bytes;
};
struct ReplAck {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;
  ReplicaPos pos;            // what the alternate holds now
  bool need_state = false;   // gap or unknown snapshot: send a full ReplState
};
struct Release {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;
};

// Sent by a lazy claimer whose claim timed out, to the member it asked (and again for every
// late GRANT of that claim): the claimer promises never to install that claim's grant, so an
// owner that froze for it may serve the connection again (docs/PROTOCOL.md §5.2).
struct Abandon {
  uint64_t conn_id = 0;
  uint32_t request_id = 0;   // the CLAIM's
  uint32_t counter = 0;      // the CLAIM's (the client's attempt that failed)
};

struct PeerHello {
  ChallengeNonce nonce{};    // the receiver's challenge, echoed
};

using ControlBody = std::variant<Claim, Grant, Deny, ReplState, ReplLog, ReplAck, Release, Abandon, PeerHello>;

struct ControlMessage {
  uint32_t from = 0;
  uint32_t to = 0;
  ControlBody body;
};

std::string_view to_string(ControlType t);
ControlType type_of(const ControlBody& b);

Result<Bytes> encode_control(const cert::Key& pool_key, const ControlMessage& m);
// Length of the complete message starting at `head` (>= kControlHeaderBytes bytes), or an
// error; lets a stream reader frame messages before authenticating them.
Result<size_t> control_message_size(std::span<const uint8_t> head);
Result<ControlMessage> decode_control(const cert::Key& pool_key, std::span<const uint8_t> bytes);

std::array<uint8_t, kChallengeBytes> encode_challenge(const ChallengeNonce& nonce);
// Exactly kChallengeBytes; bad_magic / unsupported_version / bad_field otherwise.
Result<ChallengeNonce> decode_challenge(std::span<const uint8_t> bytes);

}  // namespace mtcp::wire
