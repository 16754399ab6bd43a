// Migration certificates and proofs (docs/PROTOCOL.md §6 (certificates)).
//
// When a connection is established the issuing server hands the client a Certificate (public)
// and a per-connection secret derived from the pool key. When the client migrates it shows the
// certificate and proves knowledge of the secret by a MAC over the target server's fresh
// challenge. Every pool member holds the pool key, so it can recompute the secret and check the
// proof without contacting the issuer.
//
// Sans-IO: no clock reads, sockets or randomness here; time and challenge nonces are arguments.
// No exceptions cross this API. All functions are thread-safe.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/result.h"

namespace mtcp::cert {

using Key = std::array<uint8_t, 32>;        // pool key and per-connection secret
using Mac = std::array<uint8_t, 32>;        // HMAC-SHA256 output
using Challenge = std::array<uint8_t, 32>;  // server nonce

// The public part the client shows when it migrates (docs/PROTOCOL.md §6 (certificates)).
struct Certificate {
  uint64_t conn_id = 0;
  uint32_t issuer_id = 0;  // server that issued it
  uint64_t issued_at_ms = 0;
  uint64_t expires_at_ms = 0;
  bool operator==(const Certificate&) const = default;
};
// u64 conn, u32 issuer, u64 issued, u64 expires, big-endian (docs/PROTOCOL.md §6 (certificates)).
inline constexpr size_t kCertificateWireBytes = 28;

// Big-endian fixed layout used both on the wire and as HMAC input
// (docs/PROTOCOL.md §6 (certificates)). Every 28-byte input decodes; there is nothing to reject.
std::array<uint8_t, kCertificateWireBytes> encode(const Certificate& cert);
Certificate decode(std::span<const uint8_t, kCertificateWireBytes> bytes);

// Per-connection secret = HMAC-SHA256(pool_key, "mtcp-cert-v1" || encode(cert))
// (docs/PROTOCOL.md §6 (certificates)). Labels are the ASCII bytes without a terminating NUL.
// Every pool member can recompute it, so a migration is verified without contacting the issuer.
Key derive_secret(const Key& pool_key, const Certificate& cert);

// proof = HMAC-SHA256(secret, "mtcp-proof-v1" || challenge || u32 target_server_id ||
//                     u64 conn_id || u32 migration_counter), all big-endian
// (docs/PROTOCOL.md §6 (certificates)).
Mac make_proof(const Key& secret, const Challenge& challenge, uint32_t target_server_id,
               uint64_t conn_id, uint32_t migration_counter);

// Verify in this order (docs/PROTOCOL.md §6 (certificates)):
//   now_ms < issued_at_ms   -> Error::cert_not_yet_valid
//   now_ms >= expires_at_ms -> Error::cert_expired
//   recompute secret and proof, compare in constant time -> Error::bad_proof on mismatch
//   else Status{} (ok).
// The migration counter's freshness (Error::stale_counter) is the engine's business, not this
// function's: here it only enters the MAC.
Status verify(const Key& pool_key, const Certificate& cert, const Challenge& challenge,
              uint32_t target_server_id, uint32_t migration_counter, const Mac& proof,
              uint64_t now_ms);

// Authentication tag for server-to-server control messages:
// HMAC-SHA256(pool_key, "mtcp-ctl-v1" || bytes) (docs/PROTOCOL.md §6 (certificates)).
Mac control_mac(const Key& pool_key, std::span<const uint8_t> bytes);
// Constant-time compare of the recomputed tag with `tag`.
bool control_mac_ok(const Key& pool_key, std::span<const uint8_t> bytes, const Mac& tag);

// ---- Chunked control messages (control version 3, docs/PROTOCOL.md §5 "Chunked messages") ----
//
// A control message whose body is larger than one chunk carries, after its header, a 16-byte
// salt and an HMAC over header and salt (control_mac); each chunk of its body is followed by a
// 16-byte tag of ChaCha20-Poly1305 (RFC 8439) under a key derived for that message, with the
// chunk as additional data, no plaintext, and the chunk's index as the nonce. A receiver checks
// each chunk as it arrives (cut-through) at the speed of Poly1305, not of SHA-256.

using ChunkTag = std::array<uint8_t, 16>;

// key = HMAC-SHA256(pool_key, "mtcp-ctl-chunk-v3" || head), where head is the message's header
// and salt. The salt makes the key, and so every (key, nonce) pair, unique per message.
Key control_chunk_key(const Key& pool_key, std::span<const uint8_t> head);

// Tags chunks of one message, a chunk at a time and each chunk in pieces as they come: begin,
// update..., finish. Holds one OpenSSL cipher context; not copyable.
class ChunkMac {
 public:
  explicit ChunkMac(const Key& chunk_key);
  ~ChunkMac();
  ChunkMac(const ChunkMac&) = delete;
  ChunkMac& operator=(const ChunkMac&) = delete;
  // Starts chunk `index` (nonce: 4 zero bytes, then index as u64 big-endian).
  void begin(uint64_t index);
  void update(std::span<const uint8_t> piece);
  ChunkTag finish();

 private:
  void* ctx_;  // EVP_CIPHER_CTX
  Key key_;
};

// ---- Key agreement: the secret never crosses the wire in the clear (docs/PROTOCOL.md §6.2) ----
//
// A fresh connection's HELLO carries the client's X25519 public key and WELCOME the server's;
// WELCOME's secret field holds the secret XOR a pad derived from their shared X25519 value, so
// a passive observer of the setup learns nothing it can migrate with. ACCEPT and RENEW carry
// the next secret XOR a pad derived from the previous secret (which the client holds and every
// member can recompute from the certificate the client last presented or was given).

using PublicKey = std::array<uint8_t, 32>;   // X25519 public value
using PrivateKey = std::array<uint8_t, 32>;  // X25519 private scalar (32 random bytes)

// The public value of `priv` (random bytes from the caller's generator: this module draws none).
PublicKey x25519_public(const PrivateKey& priv);
// X25519(priv, peer). Error::bad_field if the peer's value is degenerate (a small-order point
// giving an all-zero result) and nothing can be agreed.
Result<Key> x25519_shared(const PrivateKey& priv, const PublicKey& peer);

// pad = HMAC-SHA256(shared, "mtcp-welcome-v1" || client_pub || server_pub || encode(cert));
// returns secret XOR pad (the same call unwraps).
Key wrap_welcome_secret(const Key& secret, const Key& shared, const PublicKey& client_pub,
                        const PublicKey& server_pub, const Certificate& cert);
// pad = HMAC-SHA256(previous_secret, "mtcp-rewrap-v1" || encode(new_cert)); returns
// new_secret XOR pad (the same call unwraps).
Key wrap_next_secret(const Key& new_secret, const Key& previous_secret, const Certificate& new_cert);

// Constant-time equality of two equal-length byte spans (false if lengths differ; the lengths
// themselves are not secret). Two empty spans are equal.
bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace mtcp::cert
