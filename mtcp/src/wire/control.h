// Server-to-server control messages (docs/PROTOCOL.md §5). Each message is self-delimiting and
// authenticated with the pool key, so a rogue peer on the control network can neither claim a
// connection nor pull state out of the pool.
//
// Header: magic u32 "MTCC", version u8, type u8, flags u16, from u32, to u32, body length u32
// (20 bytes). A body of at most kControlChunkBytes follows the header whole, then a 32-byte
// HMAC over header and body. A longer one (flag "chunked"; a GRANT, REPL_STATE or REPL_LOG with
// megabytes of state) follows a 16-byte salt and an HMAC over header and salt, in chunks of
// kControlChunkBytes, each followed by its own 16-byte tag (cert::ChunkMac), so a receiver checks
// it as it arrives instead of after the last byte, and at Poly1305's speed, not SHA-256's.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
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
// 3: bodies over kControlChunkBytes are chunked, each chunk with its own tag.
inline constexpr uint8_t kControlVersion = 3;
inline constexpr size_t kControlHeaderBytes = 20;
inline constexpr size_t kControlMacBytes = 32;
inline constexpr size_t kControlChunkBytes = 64u << 10;
inline constexpr size_t kControlSaltBytes = 16;
inline constexpr size_t kControlChunkTagBytes = 16;
inline constexpr uint16_t kControlFlagChunked = 0x0001;
// Header, salt and their HMAC: what a chunked message starts with.
inline constexpr size_t kControlChunkedHeadBytes = kControlHeaderBytes + kControlSaltBytes + kControlMacBytes;
using ControlSalt = std::array<uint8_t, kControlSaltBytes>;

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
  // Chunked messages only: never the same twice under one pool key (it makes the chunk key
  // unique). The sender sets it; decoding fills it in. Ignored when the body fits one chunk.
  ControlSalt salt{};
};

std::string_view to_string(ControlType t);
ControlType type_of(const ControlBody& b);

// The body's length once encoded: over kControlChunkBytes, the message is chunked and needs a salt.
size_t control_body_size(const ControlBody& b);
// too_large over kControlMessageBytesMax; bad_field if the body is chunked and m.salt is all zero.
Result<Bytes> encode_control(const cert::Key& pool_key, const ControlMessage& m);
// Length of the complete message starting at `head` (>= kControlHeaderBytes bytes), or an
// error; lets a stream reader frame messages before authenticating them.
Result<size_t> control_message_size(std::span<const uint8_t> head);
Result<ControlMessage> decode_control(const cert::Key& pool_key, std::span<const uint8_t> bytes);

// Encodes one message a piece at a time, so a transport can write a chunked message while it is
// being tagged (docs/PROTOCOL.md §5 "Chunked messages"): the receiver checks chunk i while the
// sender copies and tags chunk i+1. The pieces, concatenated, are encode_control's bytes.
class ControlEncoder {
 public:
  // Takes the message; the errors are encode_control's.
  static Result<std::unique_ptr<ControlEncoder>> make(const cert::Key& pool_key, ControlMessage m);
  // The same with the byte string of a GRANT or REPL_STATE (its state, empty in m) given as
  // pieces, e.g. a connection's snapshot block between the state's other fields: they are
  // tagged and written where they lie, never joined. The pieces are kept alive.
  static Result<std::unique_ptr<ControlEncoder>> make(const cert::Key& pool_key, ControlMessage m, std::vector<Slice> blob);
  ~ControlEncoder();
  ControlEncoder(const ControlEncoder&) = delete;
  ControlEncoder& operator=(const ControlEncoder&) = delete;
  size_t size() const { return static_cast<size_t>(size_); }  // the whole message
  bool done() const { return head_done_ && written_ == size_; }
  // Appends the next piece to `out`: at least one chunk (or the whole unchunked message), and
  // more while they fit in `budget` bytes. Not after done().
  void next(Bytes& out, size_t budget);
  // The same piece as views instead of a copy: the body's chunks are the message's own bytes,
  // the header and the tags are kept in the encoder. The views stay valid until the next call
  // or the encoder's end; a writer hands them to writev. Not after done().
  void next_views(std::vector<std::span<const uint8_t>>& out, size_t budget);

 private:
  friend Result<Bytes> encode_control(const cert::Key& pool_key, const ControlMessage& m);
  ControlEncoder(const cert::Key& pool_key, const ControlMessage& m);  // borrows m
  Status start();

  cert::Key key_;
  std::unique_ptr<ControlMessage> owned_;
  const ControlMessage* m_;
  Bytes fields_;                    // the body's fields (with the blob's length)
  std::vector<Slice> pieces_;       // make(..., blob): the byte string's owners
  std::vector<std::span<const uint8_t>> blob_;  // the byte string: into *m_, or pieces_
  uint64_t blob_len_ = 0;
  // Calls f with the parts of blob_ that cover [from, to).
  template <class F>
  void blob_range(uint64_t from, uint64_t to, F&& f) const;
  uint64_t body_len_ = 0, size_ = 0, written_ = 0, body_at_ = 0, chunk_ = 0;
  bool chunked_ = false, head_done_ = false;
  std::unique_ptr<cert::ChunkMac> mac_;
  Bytes scratch_;  // next_views: the header, an unchunked message, the tags of the last piece
};

// Reads the messages of one control connection from its byte stream, in whatever pieces they
// arrive. A chunked message is checked a chunk at a time as it arrives and its state goes
// straight to where the decoded message keeps it (no second copy). Nothing is allocated for a
// message's body beyond one chunk until its header's HMAC has been checked.
class ControlReader {
 public:
  // Messages over `message_max` bytes (at most kControlMessageBytesMax) are refused (too_large).
  ControlReader(const cert::Key& pool_key, size_t message_max);
  void set_message_max(size_t n);
  // Consumes bytes from the front of `in`, up to the end of at most one message: that message
  // once complete and authenticated, or nothing when all of `in` was taken and more is needed.
  // After an error (the error decode_control would give) the reader is unusable: close the
  // connection.
  Result<std::optional<ControlMessage>> next(std::span<const uint8_t>& in);
  // Bytes held for the message under way.
  size_t buffered() const { return head_.size() + prefix_.size() + blob_.size(); }

  // Reading a chunked message's state straight into place. While the next bytes of the stream
  // are the start of a chunk inside the state, direct() gives the buffers the next read may
  // fill (readv): each chunk's state bytes where the decoded message keeps them and its tag,
  // chunk after chunk up to `max` bytes and never past the message. Empty otherwise: then
  // read into a buffer of your own and call next(). After reading n bytes (n at most their
  // total) into them, call commit(n), which checks the tags the read completed and answers
  // as next() does. Nothing else may be called in between.
  std::vector<std::span<uint8_t>> direct(size_t max);
  Result<std::optional<ControlMessage>> commit(size_t n);

 private:
  Status start_chunks();
  Result<std::optional<ControlMessage>> finish_chunked();
  // Where the chunk holding body byte `pos` ends (not in a tag: between chunk data only).
  uint64_t chunk_end_of(uint64_t pos) const;
  // The tag of the chunk under way is complete: check it (bad_mac, and the reader is failed)
  // and go on to the next chunk.
  Status end_chunk();

  cert::Key key_;
  size_t max_;
  bool failed_ = false;
  Bytes head_;           // header; a whole unchunked message; or header, salt and HMAC
  size_t need_ = 0;      // head_'s target size (0: header not complete yet)
  bool chunked_ = false;
  uint64_t body_len_ = 0, body_have_ = 0, chunk_ = 0;
  size_t blob_at_ = 0;   // body offset of the state bytes (after the fields before them)
  Bytes prefix_;         // body bytes before blob_at_
  Bytes blob_;           // body bytes from blob_at_
  std::array<uint8_t, kControlChunkTagBytes> tag_{};
  size_t tag_have_ = 0;
  bool in_tag_ = false;
  size_t direct_chunks_ = 0;  // direct(): chunks offered (0: none outstanding)
  std::vector<std::array<uint8_t, kControlChunkTagBytes>> direct_tags_;  // their tags land here
  std::unique_ptr<cert::ChunkMac> mac_;
  Bytes scratch_;  // next_views: the header, an unchunked message, the tags of the last piece
};

std::array<uint8_t, kChallengeBytes> encode_challenge(const ChallengeNonce& nonce);
// Exactly kChallengeBytes; bad_magic / unsupported_version / bad_field otherwise.
Result<ChallengeNonce> decode_challenge(std::span<const uint8_t> bytes);

}  // namespace mtcp::wire
