// Unit tests for mtcp_cert (docs/PROTOCOL.md §6 (certificates)).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cert/cert.h"

namespace mtcp::cert {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <size_t N>
std::array<uint8_t, N> from_hex(std::string_view hex) {
  auto nib = [](char c) -> uint8_t {
    if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
    return static_cast<uint8_t>(c - 'a' + 10);
  };
  std::array<uint8_t, N> out{};
  EXPECT_EQ(hex.size(), 2 * N);
  for (size_t i = 0; i < N && 2 * i + 1 < hex.size(); ++i) {
    out[i] = static_cast<uint8_t>((nib(hex[2 * i]) << 4) | nib(hex[2 * i + 1]));
  }
  return out;
}

Key key_of(std::string_view ascii32) {
  Key k{};
  EXPECT_EQ(ascii32.size(), k.size());
  for (size_t i = 0; i < k.size() && i < ascii32.size(); ++i)
    k[i] = static_cast<uint8_t>(ascii32[i]);
  return k;
}

Key filled_key(uint8_t v) {
  Key k{};
  k.fill(v);
  return k;
}

Challenge counting_challenge() {
  Challenge c{};
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(i);
  return c;
}

// Fixture: a valid certificate, a proof for it, and the parameters it was made for.
class CertTest : public ::testing::Test {
 protected:
  const Key pool_key = filled_key(0x5a);
  const Certificate cert{.conn_id = 0x1122334455667788ULL,
                         .issuer_id = 7,
                         .issued_at_ms = 1'000'000,
                         .expires_at_ms = 1'600'000};
  const Challenge challenge = counting_challenge();
  const uint32_t target = 3;
  const uint32_t counter = 5;
  const uint64_t now = 1'200'000;
  [[nodiscard]] Mac proof() const {
    return make_proof(derive_secret(pool_key, cert), challenge, target, cert.conn_id, counter);
  }
};

// ---------------------------------------------------------------- encode / decode

TEST(CertCodec, ExactByteLayoutIsBigEndian) {
  const Certificate c{.conn_id = 0x0102030405060708ULL,
                      .issuer_id = 0x0a0b0c0dU,
                      .issued_at_ms = 0x1112131415161718ULL,
                      .expires_at_ms = 0x2122232425262728ULL};
  const std::array<uint8_t, kCertificateWireBytes> want = {
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // conn_id
      0x0a, 0x0b, 0x0c, 0x0d,                          // issuer_id
      0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,  // issued_at_ms
      0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,  // expires_at_ms
  };
  EXPECT_EQ(encode(c), want);
  EXPECT_EQ(decode(want), c);
}

TEST(CertCodec, RoundTrip) {
  const std::vector<Certificate> certs = {
      {},
      {.conn_id = 1, .issuer_id = 2, .issued_at_ms = 3, .expires_at_ms = 4},
      {.conn_id = UINT64_MAX,
       .issuer_id = UINT32_MAX,
       .issued_at_ms = UINT64_MAX,
       .expires_at_ms = UINT64_MAX},
      {.conn_id = 0x8000000000000001ULL,
       .issuer_id = 0x80000001U,
       .issued_at_ms = 0xff,
       .expires_at_ms = 1ULL << 63},
  };
  for (const auto& c : certs) {
    const auto wire = encode(c);
    EXPECT_EQ(decode(wire), c);
    EXPECT_EQ(encode(decode(wire)), wire);
  }
  std::array<uint8_t, kCertificateWireBytes> all_ff{};
  all_ff.fill(0xff);
  EXPECT_EQ(encode(decode(all_ff)), all_ff);
}

// ---------------------------------------------------------------- derive_secret

TEST_F(CertTest, DeriveSecretIsDeterministic) {
  EXPECT_EQ(derive_secret(pool_key, cert), derive_secret(pool_key, cert));
  EXPECT_NE(derive_secret(pool_key, cert), Key{});
}

TEST_F(CertTest, DeriveSecretDependsOnPoolKey) {
  const Key base = derive_secret(pool_key, cert);
  EXPECT_NE(derive_secret(filled_key(0x5b), cert), base);
  Key one_bit = pool_key;
  one_bit[31] ^= 0x01;
  EXPECT_NE(derive_secret(one_bit, cert), base);
}

TEST_F(CertTest, DeriveSecretDependsOnEachField) {
  const Key base = derive_secret(pool_key, cert);
  Certificate c = cert;
  c.conn_id ^= 1;
  EXPECT_NE(derive_secret(pool_key, c), base);
  c = cert;
  c.issuer_id ^= 1;
  EXPECT_NE(derive_secret(pool_key, c), base);
  c = cert;
  c.issued_at_ms ^= 1;
  EXPECT_NE(derive_secret(pool_key, c), base);
  c = cert;
  c.expires_at_ms ^= 1;
  EXPECT_NE(derive_secret(pool_key, c), base);
}

// ---------------------------------------------------------------- verify: accept

TEST_F(CertTest, VerifyAcceptsValidProof) {
  const Status s = verify(pool_key, cert, challenge, target, counter, proof(), now);
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.error(), Error::ok);
}

TEST_F(CertTest, VerifyAcceptsAtWindowEdges) {
  EXPECT_TRUE(verify(pool_key, cert, challenge, target, counter, proof(), cert.issued_at_ms).ok());
  EXPECT_TRUE(
      verify(pool_key, cert, challenge, target, counter, proof(), cert.expires_at_ms - 1).ok());
}

// ---------------------------------------------------------------- verify: reject

TEST_F(CertTest, RejectsWrongTargetServer) {
  EXPECT_EQ(verify(pool_key, cert, challenge, target + 1, counter, proof(), now).error(),
            Error::bad_proof);
}

TEST_F(CertTest, RejectsWrongConnId) {
  // Proof made with the right secret but for another connection id.
  const Mac p =
      make_proof(derive_secret(pool_key, cert), challenge, target, cert.conn_id + 1, counter);
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter, p, now).error(), Error::bad_proof);
}

TEST_F(CertTest, RejectsWrongCounter) {
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter + 1, proof(), now).error(),
            Error::bad_proof);
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter - 1, proof(), now).error(),
            Error::bad_proof);
}

TEST_F(CertTest, RejectsWrongChallenge) {
  for (size_t i = 0; i < challenge.size(); ++i) {
    Challenge other = challenge;
    other[i] ^= 0x80;
    EXPECT_EQ(verify(pool_key, cert, other, target, counter, proof(), now).error(),
              Error::bad_proof)
        << i;
  }
}

TEST_F(CertTest, RejectsEverySingleBitFlipOfProof) {
  const Mac good = proof();
  int rejected = 0;
  for (size_t bit = 0; bit < good.size() * 8; ++bit) {
    Mac bad = good;
    bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    const Status s = verify(pool_key, cert, challenge, target, counter, bad, now);
    EXPECT_EQ(s.error(), Error::bad_proof) << "bit " << bit;
    if (s.error() == Error::bad_proof) ++rejected;
  }
  EXPECT_EQ(rejected, 256);
}

TEST_F(CertTest, RejectsTamperedCertificateFields) {
  const Mac p = proof();
  Certificate c = cert;
  c.conn_id ^= 1;
  EXPECT_EQ(verify(pool_key, c, challenge, target, counter, p, now).error(), Error::bad_proof);
  c = cert;
  c.issuer_id ^= 1;
  EXPECT_EQ(verify(pool_key, c, challenge, target, counter, p, now).error(), Error::bad_proof);
  c = cert;
  c.issued_at_ms -= 1;  // still valid at `now`, so the proof check decides
  EXPECT_EQ(verify(pool_key, c, challenge, target, counter, p, now).error(), Error::bad_proof);
  c = cert;
  c.expires_at_ms += 1000;  // an attacker extending the lifetime
  EXPECT_EQ(verify(pool_key, c, challenge, target, counter, p, now).error(), Error::bad_proof);
}

TEST_F(CertTest, RejectsWrongPoolKey) {
  EXPECT_EQ(verify(filled_key(0x5b), cert, challenge, target, counter, proof(), now).error(),
            Error::bad_proof);
}

TEST_F(CertTest, RejectsExpiredAtExactExpiry) {
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter, proof(), cert.expires_at_ms).error(),
            Error::cert_expired);
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter, proof(), UINT64_MAX).error(),
            Error::cert_expired);
}

TEST_F(CertTest, RejectsNotYetValid) {
  EXPECT_EQ(
      verify(pool_key, cert, challenge, target, counter, proof(), cert.issued_at_ms - 1).error(),
      Error::cert_not_yet_valid);
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter, proof(), 0).error(),
            Error::cert_not_yet_valid);
}

TEST_F(CertTest, TimeChecksComeBeforeProof) {
  Mac bad = proof();
  bad[0] ^= 1;
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter, bad, cert.issued_at_ms - 1).error(),
            Error::cert_not_yet_valid);
  EXPECT_EQ(verify(pool_key, cert, challenge, target, counter, bad, cert.expires_at_ms).error(),
            Error::cert_expired);
  // A certificate whose window is empty (expires <= issued) is never valid.
  Certificate empty = cert;
  empty.expires_at_ms = empty.issued_at_ms;
  EXPECT_EQ(verify(pool_key, empty, challenge, target, counter, bad, empty.issued_at_ms).error(),
            Error::cert_expired);
}

// ---------------------------------------------------------------- control_mac

TEST(ControlMac, AcceptsAndRejectsOneByteChange) {
  const Key k = filled_key(0x33);
  std::vector<uint8_t> msg = {'h', 'e', 'l', 'l', 'o', ' ', 'p', 'o', 'o', 'l'};
  const Mac tag = control_mac(k, msg);
  EXPECT_TRUE(control_mac_ok(k, msg, tag));
  for (size_t i = 0; i < msg.size(); ++i) {
    std::vector<uint8_t> changed = msg;
    changed[i] = static_cast<uint8_t>(changed[i] + 1);
    EXPECT_FALSE(control_mac_ok(k, changed, tag)) << i;
  }
  std::vector<uint8_t> longer = msg;
  longer.push_back(0);
  EXPECT_FALSE(control_mac_ok(k, longer, tag));
  EXPECT_FALSE(control_mac_ok(k, std::span<const uint8_t>(msg).first(msg.size() - 1), tag));
  Mac bad_tag = tag;
  bad_tag[31] ^= 0x01;
  EXPECT_FALSE(control_mac_ok(k, msg, bad_tag));
  EXPECT_FALSE(control_mac_ok(filled_key(0x34), msg, tag));
}

TEST(ControlMac, EmptyMessage) {
  const Key k = filled_key(0x01);
  const Mac tag = control_mac(k, {});
  EXPECT_TRUE(control_mac_ok(k, {}, tag));
  const std::array<uint8_t, 1> zero = {0};
  EXPECT_FALSE(control_mac_ok(k, zero, tag));
}

// ---------------------------------------------------------------- domain separation

TEST(DomainSeparation, LabelsKeepPurposesApart) {
  // The same key and the same bytes must give different MACs under different labels.
  const Key k = filled_key(0x42);
  const Certificate c{.conn_id = 9, .issuer_id = 1, .issued_at_ms = 2, .expires_at_ms = 3};
  EXPECT_NE(control_mac(k, encode(c)), derive_secret(k, c));
}

// ---------------------------------------------------------------- equal_ct

TEST(EqualCt, Basics) {
  const std::array<uint8_t, 4> a = {1, 2, 3, 4};
  const std::array<uint8_t, 4> b = {1, 2, 3, 4};
  const std::array<uint8_t, 4> c = {1, 2, 3, 5};
  const std::array<uint8_t, 3> shorter = {1, 2, 3};
  EXPECT_TRUE(equal_ct(a, b));
  EXPECT_FALSE(equal_ct(a, c));
  EXPECT_FALSE(equal_ct(a, shorter));  // different lengths, equal prefix
  EXPECT_FALSE(equal_ct(shorter, a));
  EXPECT_FALSE(equal_ct(a, {}));
  EXPECT_TRUE(equal_ct({}, {}));
}

// ---------------------------------------------------------------- known answers
//
// Independent values computed with the OpenSSL 3.0.19 command line, not with this module.
// The command line itself was first checked against RFC 4231 test case 2:
//   printf 'what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe
//   -> 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843  (matches the RFC)
// Pool key below = the 32 ASCII bytes "mtcp-test-pool-key-0123456789abc"; in the commands,
//   K='mtcp-test-pool-key-0123456789abc'

constexpr std::string_view kKatPoolKey = "mtcp-test-pool-key-0123456789abc";

// ---- key agreement (docs/PROTOCOL.md §6.2) ----

// RFC 7748 §6.1: Alice's and Bob's key pairs and their shared value.
TEST(KeyAgreement, Rfc7748Vectors) {
  auto a_priv = from_hex<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  auto b_priv = from_hex<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  EXPECT_EQ(x25519_public(a_priv), from_hex<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
  EXPECT_EQ(x25519_public(b_priv), from_hex<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
  auto shared = from_hex<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  auto ab = x25519_shared(a_priv, x25519_public(b_priv));
  auto ba = x25519_shared(b_priv, x25519_public(a_priv));
  ASSERT_TRUE(ab.ok());
  ASSERT_TRUE(ba.ok());
  EXPECT_EQ(*ab, shared);
  EXPECT_EQ(*ba, shared);
}

TEST(KeyAgreement, DegeneratePeerValuesAreRefused) {
  auto priv = from_hex<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  PublicKey zero{};
  EXPECT_EQ(x25519_shared(priv, zero).error(), Error::bad_field);
  PublicKey one{};
  one[0] = 1;  // the point of order 1 (u = 1): the result is all zero too
  EXPECT_EQ(x25519_shared(priv, one).error(), Error::bad_field);
}

TEST(KeyAgreement, WrapsUnwrapAndBindTheirInputs) {
  const Key pool = from_hex<32>("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  const Certificate c{7, 1, 1000, 2000};
  const Key secret = derive_secret(pool, c);
  const Key shared = from_hex<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  PublicKey cp{}, sp{};
  cp.fill(1);
  sp.fill(2);
  Key wrapped = wrap_welcome_secret(secret, shared, cp, sp, c);
  EXPECT_NE(wrapped, secret);  // what crosses the wire is not the secret
  EXPECT_EQ(wrap_welcome_secret(wrapped, shared, cp, sp, c), secret);
  // Any other shared value, key share or certificate unwraps to something else.
  Key other_shared = shared;
  other_shared[0] ^= 1;
  EXPECT_NE(wrap_welcome_secret(wrapped, other_shared, cp, sp, c), secret);
  EXPECT_NE(wrap_welcome_secret(wrapped, shared, sp, cp, c), secret);
  EXPECT_NE(wrap_welcome_secret(wrapped, shared, cp, sp, Certificate{7, 1, 1000, 2001}), secret);

  const Certificate next{7, 2, 1500, 2500};
  const Key next_secret = derive_secret(pool, next);
  Key w2 = wrap_next_secret(next_secret, secret, next);
  EXPECT_NE(w2, next_secret);
  EXPECT_EQ(wrap_next_secret(w2, secret, next), next_secret);
  EXPECT_NE(wrap_next_secret(w2, next_secret, next), next_secret);
}

TEST(KnownAnswer, ControlMac) {
  // printf 'mtcp-ctl-v1what do ya want for nothing?' | openssl dgst -sha256 -hmac "$K"
  const Mac want = from_hex<32>("ff3c4d8d199bc64222ecb2efa227d591185b04c989865ce44a6f598798ebd816");
  const auto data = bytes_of("what do ya want for nothing?");
  EXPECT_EQ(control_mac(key_of(kKatPoolKey), data), want);
  EXPECT_TRUE(control_mac_ok(key_of(kKatPoolKey), data, want));
}

TEST(KnownAnswer, DeriveSecretAndProof) {
  const Certificate c{.conn_id = 0x0102030405060708ULL,
                      .issuer_id = 0x0a0b0c0dU,
                      .issued_at_ms = 0x1112131415161718ULL,
                      .expires_at_ms = 0x2122232425262728ULL};
  // C=01020304050607080a0b0c0d11121314151617182122232425262728   (= encode(c))
  // { printf 'mtcp-cert-v1'; echo -n $C | xxd -r -p; } | openssl dgst -sha256 -hmac "$K"
  const Key want_secret =
      from_hex<32>("c815da1c91bb57cbbecb1a04120abc0b1ddc291823d4ae5bb6f64dc7c7fd04f1");
  EXPECT_EQ(derive_secret(key_of(kKatPoolKey), c), want_secret);

  // Challenge = bytes 00..1f, target = 0x31323334, conn_id = c.conn_id, counter = 0x41424344:
  // CH=000102...1f (32 bytes); T=31323334010203040506070841424344; S=<want_secret in hex>
  // M() { printf 'mtcp-proof-v1'; echo -n $CH$T | xxd -r -p; }
  // M | openssl dgst -sha256 -mac HMAC -macopt hexkey:$S
  const Mac want_proof =
      from_hex<32>("9174eece93230f0b0efb50c29817ef41f49f78d766ed64314cf14040cb89b597");
  EXPECT_EQ(make_proof(want_secret, counting_challenge(), 0x31323334U, c.conn_id, 0x41424344U),
            want_proof);

  EXPECT_TRUE(verify(key_of(kKatPoolKey), c, counting_challenge(), 0x31323334U, 0x41424344U,
                     want_proof, c.issued_at_ms)
                  .ok());
}

}  // namespace
}  // namespace mtcp::cert
