// Client<->server frames carried on a subflow (docs/PROTOCOL.md §3, §4).
//
// A subflow opened by an M-TCP client starts with the 8-byte preface, then frames. Each frame
// is an 8-byte header (type u8, flags u8, reserved u16 = 0, body length u32) and a body.
// DATA adds a u64 data sequence number, so a data frame costs 16 bytes of header; its payload
// is handed over as slices of the received blocks (no copy).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "cert/cert.h"
#include "common/buffer.h"
#include "common/errors.h"
#include "common/limits.h"
#include "common/result.h"

namespace mtcp::wire {

// 0x89 first: not ASCII, so no text protocol starts this way; CR LF and 0x1A catch
// line-ending and text-mode mangling, as PNG's signature does.
inline constexpr std::array<uint8_t, 8> kPreface = {0x89, 'M', 'T', 'C', 'P', '\r', '\n', 0x1A};
// 2: ACK of the CLOSE (docs/PROTOCOL.md §4.4). 3: X25519 key shares in HELLO and WELCOME, and
// every secret sent wrapped (§6.2).
inline constexpr uint8_t kVersion = 3;
inline constexpr size_t kFrameHeaderBytes = 8;
inline constexpr size_t kDataHeaderBytes = 16;

enum class FrameType : uint8_t {
  hello = 0x01,
  welcome = 0x02,
  challenge = 0x03,
  migrate = 0x04,
  accept = 0x05,
  refuse = 0x06,
  data = 0x10,
  ack = 0x11,
  hint = 0x12,
  renew = 0x13,
  close = 0x20,
  reset = 0x21,
};

enum class HelloKind : uint8_t { fresh = 0, migrate = 1 };

struct Hello {
  uint8_t version = kVersion;
  HelloKind kind = HelloKind::fresh;
  uint64_t conn_id = 0;  // 0 for a fresh connection
  cert::PublicKey key_share{};  // fresh: the client's X25519 public value; migrate: all zero
};
struct Alternate {
  uint32_t server_id = 0;
  std::string address;  // opaque to the core ("host:port" for the runtime); <= kAddressBytesMax
  bool operator==(const Alternate&) const = default;
};
struct Welcome {
  uint64_t conn_id = 0;
  uint32_t server_id = 0;
  uint64_t epoch = 0;
  cert::Certificate cert;
  cert::Key secret{};                 // wrapped: cert::wrap_welcome_secret
  cert::PublicKey key_share{};        // the server's X25519 public value for this connection
  std::vector<Alternate> alternates;  // <= kAlternatesMax
};
struct ChallengeFrame {
  uint32_t server_id = 0;
  cert::Challenge nonce{};
};
struct Migrate {
  cert::Certificate cert;
  uint32_t counter = 0;          // migrations so far + 1: binds the proof to this attempt
  uint32_t prev_owner = 0;       // server the client was last attached to
  uint64_t client_rcv_nxt = 0;   // server->client bytes the client already has
  uint64_t client_snd_una = 0;   // client->server bytes acknowledged so far (the new owner must hold them)
  cert::Mac proof{};
};
struct Accept {
  uint64_t epoch = 0;
  uint64_t server_rcv_nxt = 0;  // client->server bytes the new owner holds; resend from here
  cert::Certificate cert;       // renewed certificate for the next migration
  cert::Key secret{};           // wrapped with the secret of the certificate in MIGRATE
};
struct Refuse {
  Error reason = Error::ok;
  uint32_t hint_server = 0;  // where the connection lives now, 0 if unknown
  std::string text;          // <= kReasonTextBytesMax, for humans
};
struct Data {
  uint64_t dsn = 0;
  std::vector<Slice> payload;  // slices of the received blocks
  size_t size() const {
    size_t n = 0;
    for (const auto& s : payload) n += s.len;
    return n;
  }
};
struct Ack {
  uint64_t dsn = 0;  // cumulative: every byte below dsn was received
};
enum class HintReason : uint16_t { overload = 1, draining = 2, operator_request = 3 };
struct Hint {
  HintReason reason = HintReason::overload;
  uint32_t server_id = 0;  // suggested target, 0 = any alternate
};
struct Renew {
  cert::Certificate cert;  // replaces the client's certificate (and secret) from now on
  cert::Key secret{};      // wrapped with the secret of the certificate it replaces
};
struct Close {
  uint64_t final_dsn = 0;  // the sender's stream ends here
};
struct Reset {
  Error reason = Error::ok;
};

using Frame = std::variant<Hello, Welcome, ChallengeFrame, Migrate, Accept, Refuse, Data, Ack, Hint,
                           Renew, Close, Reset>;

FrameType type_of(const Frame& f);
std::string_view to_string(FrameType t);

// Encode any frame (DATA included, copying its payload: use encode_data_header on hot paths).
void encode(const Frame& f, Bytes& out);
// Write the 16-byte DATA header for a payload of `len` bytes at `dsn`.
void encode_data_header(uint64_t dsn, uint32_t len, uint8_t out[kDataHeaderBytes]);

// Preface detection on the first bytes of an accepted subflow (docs/PROTOCOL.md §3.1).
enum class PrefaceCheck { need_more, mtcp, plain };
PrefaceCheck check_preface(const SliceQueue& in);

// Incremental decoder. next() returns a frame, std::nullopt when more bytes are needed, or an
// Error (the subflow must then be reset). Consumes exactly the bytes of returned frames.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t payload_bytes_max = kFramePayloadBytesMax)
      : payload_bytes_max_(payload_bytes_max) {}
  Result<std::optional<Frame>> next(SliceQueue& in);

 private:
  size_t payload_bytes_max_;
};

// Decode one frame from a complete buffer (for tests and fuzzers); trailing bytes are an error.
Result<Frame> decode_one(std::span<const uint8_t> bytes);

}  // namespace mtcp::wire
