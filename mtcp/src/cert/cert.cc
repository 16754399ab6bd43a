// Migration certificates and proofs: HMAC-SHA256 through OpenSSL 3's EVP_MAC interface.
// All rules here are from docs/PROTOCOL.md §6 (certificates).
#include "cert/cert.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string_view>

namespace mtcp::cert {
namespace {

// Domain-separation labels (docs/PROTOCOL.md §6 (certificates)): ASCII, no terminating NUL.
constexpr std::string_view kCertLabel = "mtcp-cert-v1";
constexpr std::string_view kProofLabel = "mtcp-proof-v1";
constexpr std::string_view kControlLabel = "mtcp-ctl-v1";
constexpr std::string_view kChunkKeyLabel = "mtcp-ctl-chunk-v3";
constexpr std::string_view kWelcomeLabel = "mtcp-welcome-v1";
constexpr std::string_view kRewrapLabel = "mtcp-rewrap-v1";

// An OpenSSL failure here is never caused by the peer's bytes: HMAC-SHA256 over in-memory data
// with a 32-byte key can only fail if the library is broken, misconfigured (no default
// provider), or out of memory. That is a programmer/environment error, so we stop instead of
// returning an Error. This check is deliberately NOT assert(): assert() compiles away under
// NDEBUG (the default RelWithDebInfo build), and carrying on with an unwritten MAC buffer would
// make every proof compare against a predictable value.
// The core does no I/O, so it does not print: `what` names the failed call for a debugger or
// a core dump.
void check_openssl(bool ok, const char* what) {
  if (!ok) {
    [[maybe_unused]] volatile const char* failed_call = what;
    std::abort();
  }
}

// Labels as bytes. uint8_t is unsigned char, which may alias any object, so this is well-defined.
std::span<const uint8_t> label_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The HMAC algorithm object is fetched once per process and intentionally never freed
// (static initialisation is thread-safe; the object is immutable and shareable).
EVP_MAC* hmac_algorithm() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  check_openssl(mac != nullptr, "EVP_MAC_fetch(HMAC)");
  return mac;
}

struct CtxFree {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};

// HMAC-SHA256(key, parts[0] || parts[1] || ...), streamed so that large control messages are
// not copied.
Mac hmac_sha256(std::span<const uint8_t> key,
                std::initializer_list<std::span<const uint8_t>> parts) {
  std::unique_ptr<EVP_MAC_CTX, CtxFree> ctx(EVP_MAC_CTX_new(hmac_algorithm()));
  check_openssl(ctx != nullptr, "EVP_MAC_CTX_new");

  char digest[] = "SHA256";  // OSSL_PARAM wants a mutable pointer; OpenSSL does not write it
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  check_openssl(EVP_MAC_init(ctx.get(), key.data(), key.size(), params) == 1, "EVP_MAC_init");
  for (std::span<const uint8_t> p : parts) {
    if (p.empty()) continue;  // nothing to add; avoids handing OpenSSL a null pointer
    check_openssl(EVP_MAC_update(ctx.get(), p.data(), p.size()) == 1, "EVP_MAC_update");
  }
  Mac out{};
  size_t out_len = 0;
  check_openssl(EVP_MAC_final(ctx.get(), out.data(), &out_len, out.size()) == 1, "EVP_MAC_final");
  check_openssl(out_len == out.size(), "EVP_MAC_final length");
  return out;
}

void put_be(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
}

uint64_t get_be(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

// Layout (docs/PROTOCOL.md §6 (certificates)):
//   [0,8) conn_id  [8,12) issuer_id  [12,20) issued_at_ms  [20,28) expires_at_ms, big-endian.
std::array<uint8_t, kCertificateWireBytes> encode(const Certificate& c) {
  std::array<uint8_t, kCertificateWireBytes> out{};
  put_be(out.data() + 0, c.conn_id, 8);
  put_be(out.data() + 8, c.issuer_id, 4);
  put_be(out.data() + 12, c.issued_at_ms, 8);
  put_be(out.data() + 20, c.expires_at_ms, 8);
  return out;
}

Certificate decode(std::span<const uint8_t, kCertificateWireBytes> b) {
  Certificate c;
  c.conn_id = get_be(b.data() + 0, 8);
  c.issuer_id = static_cast<uint32_t>(get_be(b.data() + 8, 4));
  c.issued_at_ms = get_be(b.data() + 12, 8);
  c.expires_at_ms = get_be(b.data() + 20, 8);
  return c;
}

// secret = HMAC-SHA256(pool_key, "mtcp-cert-v1" || encode(cert))
// (docs/PROTOCOL.md §6 (certificates)).
Key derive_secret(const Key& pool_key, const Certificate& cert) {
  const auto wire = encode(cert);
  return hmac_sha256(pool_key, {label_bytes(kCertLabel), wire});
}

// proof = HMAC-SHA256(secret, "mtcp-proof-v1" || challenge || u32 target || u64 conn_id ||
// u32 counter), big-endian (docs/PROTOCOL.md §6 (certificates)).
Mac make_proof(const Key& secret, const Challenge& challenge, uint32_t target_server_id,
               uint64_t conn_id, uint32_t migration_counter) {
  std::array<uint8_t, 4 + 8 + 4> tail{};
  put_be(tail.data() + 0, target_server_id, 4);
  put_be(tail.data() + 4, conn_id, 8);
  put_be(tail.data() + 12, migration_counter, 4);
  return hmac_sha256(secret, {label_bytes(kProofLabel), challenge, tail});
}

// Check order is part of the protocol (docs/PROTOCOL.md §6 (certificates)): validity window
// first (cheap, no crypto), then the proof.
Status verify(const Key& pool_key, const Certificate& cert, const Challenge& challenge,
              uint32_t target_server_id, uint32_t migration_counter, const Mac& proof,
              uint64_t now_ms) {
  if (now_ms < cert.issued_at_ms) return Error::cert_not_yet_valid;
  if (now_ms >= cert.expires_at_ms) return Error::cert_expired;
  Key secret = derive_secret(pool_key, cert);
  const Mac expected =
      make_proof(secret, challenge, target_server_id, cert.conn_id, migration_counter);
  OPENSSL_cleanse(secret.data(), secret.size());
  if (!equal_ct(expected, proof)) return Error::bad_proof;
  return Status{};
}

// tag = HMAC-SHA256(pool_key, "mtcp-ctl-v1" || bytes) (docs/PROTOCOL.md §6 (certificates)).
Mac control_mac(const Key& pool_key, std::span<const uint8_t> bytes) {
  return hmac_sha256(pool_key, {label_bytes(kControlLabel), bytes});
}

bool control_mac_ok(const Key& pool_key, std::span<const uint8_t> bytes, const Mac& tag) {
  return equal_ct(control_mac(pool_key, bytes), tag);
}

Key control_chunk_key(const Key& pool_key, std::span<const uint8_t> head) {
  return hmac_sha256(pool_key, {label_bytes(kChunkKeyLabel), head});
}

ChunkMac::ChunkMac(const Key& chunk_key) : ctx_(EVP_CIPHER_CTX_new()), key_(chunk_key) {
  check_openssl(ctx_ != nullptr, "EVP_CIPHER_CTX_new");
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  check_openssl(EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) == 1,
                "EVP_EncryptInit_ex(chacha20-poly1305)");
}

ChunkMac::~ChunkMac() {
  OPENSSL_cleanse(key_.data(), key_.size());
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
}

void ChunkMac::begin(uint64_t index) {
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  std::array<uint8_t, 12> nonce{};
  for (int i = 0; i < 8; ++i) nonce[static_cast<size_t>(4 + i)] = static_cast<uint8_t>(index >> (56 - 8 * i));
  check_openssl(EVP_EncryptInit_ex(ctx, nullptr, nullptr, key_.data(), nonce.data()) == 1, "EVP_EncryptInit_ex(key, nonce)");
}

// Additional data only (out = nullptr), in pieces OpenSSL's int length can hold.
void ChunkMac::update(std::span<const uint8_t> piece) {
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  for (size_t at = 0; at < piece.size();) {
    int n = static_cast<int>(std::min<size_t>(piece.size() - at, size_t{1} << 30));
    int out_len = 0;
    check_openssl(EVP_EncryptUpdate(ctx, nullptr, &out_len, piece.data() + at, n) == 1, "EVP_EncryptUpdate(aad)");
    at += static_cast<size_t>(n);
  }
}

ChunkTag ChunkMac::finish() {
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  int out_len = 0;
  uint8_t none[16];
  check_openssl(EVP_EncryptFinal_ex(ctx, none, &out_len) == 1 && out_len == 0, "EVP_EncryptFinal_ex");
  ChunkTag t{};
  check_openssl(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(t.size()), t.data()) == 1,
                "EVP_CTRL_AEAD_GET_TAG");
  return t;
}

namespace {
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Key xor_pad(const Key& a, const Mac& pad) {
  Key out{};
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(a[i] ^ pad[i]);
  return out;
}
}  // namespace

PublicKey x25519_public(const PrivateKey& priv) {
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, priv.data(), priv.size()));
  check_openssl(k != nullptr, "EVP_PKEY_new_raw_private_key(X25519)");
  PublicKey pub{};
  size_t len = pub.size();
  check_openssl(EVP_PKEY_get_raw_public_key(k.get(), pub.data(), &len) == 1 && len == pub.size(),
                "EVP_PKEY_get_raw_public_key");
  return pub;
}

Result<Key> x25519_shared(const PrivateKey& priv, const PublicKey& peer) {
  Pkey mine(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, priv.data(), priv.size()));
  check_openssl(mine != nullptr, "EVP_PKEY_new_raw_private_key(X25519)");
  // Any 32 bytes are a valid encoding of a peer value; only the derivation can refuse one.
  Pkey theirs(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), peer.size()));
  check_openssl(theirs != nullptr, "EVP_PKEY_new_raw_public_key(X25519)");
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new(mine.get(), nullptr));
  check_openssl(ctx != nullptr, "EVP_PKEY_CTX_new");
  check_openssl(EVP_PKEY_derive_init(ctx.get()) == 1, "EVP_PKEY_derive_init");
  check_openssl(EVP_PKEY_derive_set_peer(ctx.get(), theirs.get()) == 1, "EVP_PKEY_derive_set_peer");
  Key shared{};
  size_t len = shared.size();
  // OpenSSL refuses an all-zero result (a small-order peer value): that is the peer's doing.
  if (EVP_PKEY_derive(ctx.get(), shared.data(), &len) != 1 || len != shared.size()) return Error::bad_field;
  const Key zero{};
  if (equal_ct(shared, zero)) return Error::bad_field;
  return shared;
}

Key wrap_welcome_secret(const Key& secret, const Key& shared, const PublicKey& client_pub,
                        const PublicKey& server_pub, const Certificate& cert) {
  const auto wire = encode(cert);
  return xor_pad(secret, hmac_sha256(shared, {label_bytes(kWelcomeLabel), client_pub, server_pub, wire}));
}

Key wrap_next_secret(const Key& new_secret, const Key& previous_secret, const Certificate& new_cert) {
  const auto wire = encode(new_cert);
  return xor_pad(new_secret, hmac_sha256(previous_secret, {label_bytes(kRewrapLabel), wire}));
}

// Constant time in the contents (CRYPTO_memcmp), docs/PROTOCOL.md §6 (certificates).
bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace mtcp::cert
