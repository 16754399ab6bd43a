// Unit tests for the server-to-server control-message codec (wire/control.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include "cert/cert.h"
#include "common/buffer.h"
#include "common/errors.h"
#include "common/limits.h"
#include "wire/control.h"

namespace mtcp::wire {
namespace {

cert::Key filled_key(uint8_t v) {
  cert::Key k{};
  k.fill(v);
  return k;
}
const cert::Key kKey = filled_key(0x42);
const cert::Key kOtherKey = filled_key(0x43);

Bytes pattern_bytes(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 11 * i);
  return b;
}

void put_u32(Bytes& b, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
void put_u16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}

// Header offsets (control.h): magic 0, version 4, type 5, reserved 6, from 8, to 12, length 16.
constexpr size_t kVersionAt = 4;
constexpr size_t kTypeAt = 5;
constexpr size_t kReservedAt = 6;
constexpr size_t kLengthAt = 16;

Bytes encode_ok(const ControlMessage& m, const cert::Key& key = kKey) {
  auto r = encode_control(key, m);
  EXPECT_TRUE(r.ok()) << to_string(r.error());
  return r.ok() ? r.value() : Bytes{};
}

// Replace the MAC of `msg` with a valid one for its (possibly edited) header and body, so the
// body parser is reached.
Bytes resign(Bytes msg, const cert::Key& key = kKey) {
  msg.resize(msg.size() - kControlMacBytes);
  put_u32(msg, kLengthAt, static_cast<uint32_t>(msg.size() - kControlHeaderBytes));
  cert::Mac tag = cert::control_mac(key, msg);
  msg.insert(msg.end(), tag.begin(), tag.end());
  return msg;
}

// The body of an encoded message (between header and MAC).
Bytes body_of(const Bytes& msg) {
  return Bytes(msg.begin() + kControlHeaderBytes, msg.end() - kControlMacBytes);
}
// A signed message with `m`'s header and the given body.
Bytes with_body(const Bytes& msg, const Bytes& body) {
  Bytes out(msg.begin(), msg.begin() + kControlHeaderBytes);
  out.insert(out.end(), body.begin(), body.end());
  out.resize(out.size() + kControlMacBytes);
  return resign(out);
}

Error decode_error(std::span<const uint8_t> bytes, const cert::Key& key = kKey) {
  auto r = decode_control(key, bytes);
  if (r.ok()) {
    ADD_FAILURE() << "decoded";
    return Error::ok;
  }
  return r.error();
}

std::vector<ControlMessage> samples() {
  std::vector<ControlMessage> v;
  v.push_back({1, 2,
               Claim{.conn_id = 0x1111222233334444ULL,
                     .epoch = 7,
                     .request_id = 0xABCDEF01U,
                     .mode = TransferMode::eager,
                     .have = {.epoch = 6, .snap_id = 3, .in_end = 999}}});
  v.push_back({3, 4, Claim{.conn_id = 5, .epoch = 1, .request_id = 1, .mode = TransferMode::lazy, .have = {}}});
  v.push_back({5, 6,
               Grant{.conn_id = 9,
                     .epoch = 8,
                     .request_id = 77,
                     .from_owner = true,
                     .pos = {.epoch = 7, .snap_id = 2, .in_end = 123},
                     .state = pattern_bytes(500, 1)}});
  v.push_back({7, 8, Grant{.conn_id = 9, .epoch = 8, .request_id = 78, .from_owner = false, .pos = {1, 2, 3}, .state = {}}});
  v.push_back({9, 10,
               Deny{.conn_id = 11,
                    .epoch = 12,
                    .request_id = 13,
                    .reason = Error::already_claimed,
                    .owner_id = 14,
                    .owner_epoch = 15}});
  v.push_back({11, 12, ReplState{.conn_id = 16, .epoch = 17, .state = pattern_bytes(1000, 2)}});
  v.push_back({13, 14,
               ReplLog{.conn_id = 18,
                       .epoch = 19,
                       .snap_id = 20,
                       .start = 0xFFFFFFFF00000000ULL,
                       .out_acked = 21,
                       .bytes = pattern_bytes(77, 3)}});
  v.push_back({15, 16, ReplLog{.conn_id = 18, .epoch = 19, .snap_id = 0, .start = 0, .out_acked = 0, .bytes = {}}});
  v.push_back({17, 18, ReplAck{.conn_id = 22, .epoch = 23, .pos = {24, 25, 26}, .need_state = true}});
  v.push_back({19, 20, ReplAck{.conn_id = 22, .epoch = 23, .pos = {24, 25, 26}, .need_state = false}});
  v.push_back({0xFFFFFFFFU, 0, Release{.conn_id = 27, .epoch = 28}});
  v.push_back({23, 24, Abandon{.conn_id = 29, .request_id = 0xFFFFFFFFU, .counter = 30}});
  PeerHello hello;
  for (size_t i = 0; i < hello.nonce.size(); ++i) hello.nonce[i] = static_cast<uint8_t>(0xA0 + i);
  v.push_back({21, 22, hello});
  return v;
}

void expect_fields(const Claim& a, const Claim& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.have, b.have);
}
void expect_fields(const Grant& a, const Grant& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.from_owner, b.from_owner);
  EXPECT_EQ(a.pos, b.pos);
  EXPECT_EQ(a.state, b.state);
}
void expect_fields(const Deny& a, const Deny& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.reason, b.reason);
  EXPECT_EQ(a.owner_id, b.owner_id);
  EXPECT_EQ(a.owner_epoch, b.owner_epoch);
}
void expect_fields(const ReplState& a, const ReplState& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.state, b.state);
}
void expect_fields(const ReplLog& a, const ReplLog& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.snap_id, b.snap_id);
  EXPECT_EQ(a.start, b.start);
  EXPECT_EQ(a.out_acked, b.out_acked);
  EXPECT_EQ(a.bytes, b.bytes);
}
void expect_fields(const ReplAck& a, const ReplAck& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.pos, b.pos);
  EXPECT_EQ(a.need_state, b.need_state);
}
void expect_fields(const Release& a, const Release& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
}
void expect_fields(const Abandon& a, const Abandon& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.counter, b.counter);
}
void expect_fields(const PeerHello& a, const PeerHello& b) { EXPECT_EQ(a.nonce, b.nonce); }

void expect_same(const ControlMessage& want, const ControlMessage& got) {
  EXPECT_EQ(want.from, got.from);
  EXPECT_EQ(want.to, got.to);
  ASSERT_EQ(want.body.index(), got.body.index());
  std::visit(
      [&](const auto& w) {
        using T = std::decay_t<decltype(w)>;
        expect_fields(w, std::get<T>(got.body));
      },
      want.body);
}

uint32_t get_u32(const Bytes& b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | b[at + 3];
}

// ---------------------------------------------------------------- round trips

TEST(ControlRoundTrip, EveryMessage) {
  for (const ControlMessage& m : samples()) {
    SCOPED_TRACE(to_string(type_of(m.body)));
    Bytes b = encode_ok(m);
    ASSERT_GE(b.size(), kControlHeaderBytes + kControlMacBytes);
    EXPECT_EQ(get_u32(b, 0), kControlMagic);
    EXPECT_EQ(b[kVersionAt], kControlVersion);
    EXPECT_EQ(b[kTypeAt], static_cast<uint8_t>(type_of(m.body)));
    EXPECT_EQ(b[kReservedAt], 0);
    EXPECT_EQ(b[kReservedAt + 1], 0);
    EXPECT_EQ(get_u32(b, 8), m.from);
    EXPECT_EQ(get_u32(b, 12), m.to);
    EXPECT_EQ(get_u32(b, kLengthAt), b.size() - kControlHeaderBytes - kControlMacBytes);
    auto size = control_message_size(std::span<const uint8_t>(b).first(kControlHeaderBytes));
    ASSERT_TRUE(size.ok()) << to_string(size.error());
    EXPECT_EQ(size.value(), b.size());
    auto r = decode_control(kKey, b);
    ASSERT_TRUE(r.ok()) << to_string(r.error());
    expect_same(m, r.value());
    EXPECT_EQ(encode_ok(r.value()), b);
  }
}

// The receiver's challenge opening a control connection (PROTOCOL.md §5.1).
TEST(ControlChallenge, RoundTripAndRefusals) {
  ChallengeNonce n{};
  for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(i * 7 + 1);
  auto c = encode_challenge(n);
  EXPECT_EQ(Bytes(c.begin(), c.begin() + 4), (Bytes{'M', 'T', 'C', 'K'}));
  EXPECT_EQ(c[4], kControlVersion);
  auto back = decode_challenge(c);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, n);
  auto bad = c;
  bad[0] ^= 1;
  EXPECT_EQ(decode_challenge(bad).error(), Error::bad_magic);
  bad = c;
  bad[4] = 1;  // a version-1 member never sends one; a version mismatch is named
  EXPECT_EQ(decode_challenge(bad).error(), Error::unsupported_version);
  bad = c;
  bad[6] = 1;
  EXPECT_EQ(decode_challenge(bad).error(), Error::bad_field);
  EXPECT_EQ(decode_challenge(std::span<const uint8_t>(c).first(kChallengeBytes - 1)).error(), Error::bad_length);
}

TEST(ControlRoundTrip, MagicIsAsciiMTCC) {
  Bytes b = encode_ok(samples()[0]);
  EXPECT_EQ(Bytes(b.begin(), b.begin() + 4), (Bytes{'M', 'T', 'C', 'C'}));
}

TEST(ControlRoundTrip, DenyEveryReasonRange) {
  for (Error e : {Error::truncated, Error::rate_limited, Error::stale_counter, Error::already_claimed,
                  Error::claim_lost, Error::stale_epoch, Error::not_owner, Error::subflow_lost}) {
    SCOPED_TRACE(to_string(e));
    ControlMessage m{1, 2, Deny{.conn_id = 1, .epoch = 1, .request_id = 1, .reason = e, .owner_id = 0, .owner_epoch = 0}};
    auto r = decode_control(kKey, encode_ok(m));
    ASSERT_TRUE(r.ok()) << to_string(r.error());
    EXPECT_EQ(std::get<Deny>(r.value().body).reason, e);
  }
}

// ---------------------------------------------------------------- authentication

TEST(ControlAuth, WrongKeyIsBadMac) {
  for (const ControlMessage& m : samples()) {
    SCOPED_TRACE(to_string(type_of(m.body)));
    EXPECT_EQ(decode_error(encode_ok(m), kOtherKey), Error::bad_mac);
    EXPECT_EQ(decode_error(encode_ok(m, kOtherKey), kKey), Error::bad_mac);
  }
}

TEST(ControlAuth, EveryBitFlipOfAClaimIsRejected) {
  const ControlMessage m = samples()[0];
  const Bytes good = encode_ok(m);
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      Bytes b = good;
      b[i] = static_cast<uint8_t>(b[i] ^ (1u << bit));
      auto r = decode_control(kKey, b);
      if (r.ok()) {
        // Impossible unless the codec ignores a bit; then at least the content must be the same.
        ADD_FAILURE() << "flip of byte " << i << " bit " << bit << " decoded";
        expect_same(m, r.value());
      }
    }
  }
}

TEST(ControlAuth, EveryByteReplacementOfAClaimIsRejected) {
  const Bytes good = encode_ok(samples()[0]);
  for (size_t i = 0; i < good.size(); ++i) {
    Bytes b = good;
    b[i] = static_cast<uint8_t>(~b[i]);
    EXPECT_FALSE(decode_control(kKey, b).ok()) << i;
  }
}

TEST(ControlAuth, MacCoversTheHeader) {
  // Change `from` and `to` (which the body parser never checks): only the MAC notices.
  Bytes b = encode_ok(samples()[0]);
  b[8] ^= 0x01;
  EXPECT_EQ(decode_error(b), Error::bad_mac);
  b = encode_ok(samples()[0]);
  b[15] ^= 0x80;
  EXPECT_EQ(decode_error(b), Error::bad_mac);
  // A different valid type with the same body: MAC fails before the body is parsed.
  b = encode_ok(samples()[0]);
  b[kTypeAt] = static_cast<uint8_t>(ControlType::release);
  EXPECT_EQ(decode_error(b), Error::bad_mac);
}

// ---------------------------------------------------------------- header errors

TEST(ControlHeader, BadMagic) {
  for (size_t i = 0; i < 4; ++i) {
    Bytes b = encode_ok(samples()[0]);
    b[i] ^= 0x20;
    EXPECT_EQ(decode_error(b), Error::bad_magic);
    EXPECT_EQ(control_message_size(b).error(), Error::bad_magic);
  }
}

TEST(ControlHeader, BadVersion) {
  // 1: before PEER_HELLO; 2: before chunked messages.
  for (uint8_t v : {uint8_t{0}, uint8_t{1}, uint8_t{2}, uint8_t{4}, uint8_t{0xFF}}) {
    Bytes b = encode_ok(samples()[0]);
    b[kVersionAt] = v;
    EXPECT_EQ(decode_error(b), Error::unsupported_version);
    EXPECT_EQ(decode_error(resign(b)), Error::unsupported_version);
  }
}

TEST(ControlHeader, UnknownType) {
  int unknown = 0;
  for (int t = 0; t < 256; ++t) {
    bool known = false;
    for (ControlType k : {ControlType::claim, ControlType::grant, ControlType::deny, ControlType::repl_state,
                          ControlType::repl_log, ControlType::repl_ack, ControlType::release, ControlType::abandon,
                          ControlType::peer_hello}) {
      known = known || static_cast<int>(k) == t;
    }
    if (known) continue;
    ++unknown;
    Bytes b = encode_ok(samples()[0]);
    b[kTypeAt] = static_cast<uint8_t>(t);
    EXPECT_EQ(decode_error(resign(b)), Error::unknown_type) << t;
    EXPECT_EQ(control_message_size(b).error(), Error::unknown_type) << t;
  }
  EXPECT_EQ(unknown, 256 - 9);
}

TEST(ControlHeader, FlagsOtherThanChunkedMustBeZero) {
  for (uint16_t f : {uint16_t{2}, uint16_t{0x8000}, uint16_t{0xFFFF}, uint16_t{3}}) {
    Bytes b = encode_ok(samples()[0]);
    put_u16(b, kReservedAt, f);
    EXPECT_EQ(decode_error(resign(b)), Error::bad_field) << f;
  }
  // "chunked" on a body that fits one chunk.
  Bytes b = encode_ok(samples()[0]);
  put_u16(b, kReservedAt, kControlFlagChunked);
  EXPECT_EQ(decode_error(resign(b)), Error::bad_field);
  EXPECT_EQ(control_message_size(b).error(), Error::bad_field);
}

TEST(ControlHeader, TooLargeFromTheHeaderAlone) {
  Bytes head = encode_ok(samples()[2]);  // a GRANT: a type that may be chunked
  head.resize(kControlHeaderBytes);
  put_u16(head, kReservedAt, kControlFlagChunked);
  // The largest chunked body: header, salt and HMAC, the body, and a tag per chunk.
  auto wire_size = [](uint64_t len) {
    return kControlChunkedHeadBytes + len + (len + kControlChunkBytes - 1) / kControlChunkBytes * kControlChunkTagBytes;
  };
  uint32_t body_max = static_cast<uint32_t>(kControlMessageBytesMax - kControlChunkedHeadBytes);
  while (wire_size(body_max) > kControlMessageBytesMax) --body_max;
  put_u32(head, kLengthAt, body_max);
  auto at_max = control_message_size(head);
  ASSERT_TRUE(at_max.ok()) << to_string(at_max.error());
  EXPECT_EQ(at_max.value(), wire_size(body_max));
  EXPECT_LE(at_max.value(), kControlMessageBytesMax);
  // Only the header is here: decode says truncated, it does not wait for or read the body.
  EXPECT_EQ(decode_error(head), Error::truncated);

  for (uint32_t len : {body_max + 1, 0xFFFFFFFFU - 51, 0xFFFFFFFFU}) {
    SCOPED_TRACE(len);
    put_u32(head, kLengthAt, len);
    EXPECT_EQ(control_message_size(head).error(), Error::too_large);
    EXPECT_EQ(decode_error(head), Error::too_large);
  }
}

TEST(ControlHeader, SizeNeedsAWholeHeader) {
  Bytes b = encode_ok(samples()[0]);
  for (size_t n = 0; n < kControlHeaderBytes; ++n) {
    EXPECT_EQ(control_message_size(std::span<const uint8_t>(b).first(n)).error(), Error::truncated) << n;
  }
}

TEST(ControlHeader, EncodeRefusesAMessageOverTheCap) {
  ControlMessage m{1, 2, ReplState{.conn_id = 1, .epoch = 1, .state = Bytes(kControlMessageBytesMax, 0)}};
  auto r = encode_control(kKey, m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::too_large);
}

TEST(ControlHeader, TruncatedAtEveryLength) {
  for (const ControlMessage& m : samples()) {
    SCOPED_TRACE(to_string(type_of(m.body)));
    Bytes b = encode_ok(m);
    for (size_t n = 0; n < b.size(); ++n) {
      EXPECT_EQ(decode_error(std::span<const uint8_t>(b).first(n)), Error::truncated) << n;
    }
  }
}

TEST(ControlHeader, TrailingBytes) {
  for (const ControlMessage& m : samples()) {
    SCOPED_TRACE(to_string(type_of(m.body)));
    Bytes b = encode_ok(m);
    b.push_back(0);
    EXPECT_EQ(decode_error(b), Error::bad_length);
  }
}

// ---------------------------------------------------------------- body errors (valid MAC)

TEST(ControlBody, DenyReasonMustBeANamedNonZeroError) {
  for (Error e : {Error::ok, static_cast<Error>(1), static_cast<Error>(999), static_cast<Error>(0xFFFF)}) {
    SCOPED_TRACE(static_cast<int>(e));
    ControlMessage m{1, 2, Deny{.conn_id = 1, .epoch = 1, .request_id = 1, .reason = e, .owner_id = 0, .owner_epoch = 0}};
    EXPECT_EQ(decode_error(encode_ok(m)), Error::bad_field);
  }
}

TEST(ControlBody, BooleanAndEnumBytes) {
  // CLAIM mode (offset 20 of the body), GRANT from_owner (offset 20), REPL_ACK need_state (last).
  Bytes claim = encode_ok(samples()[0]);
  Bytes body = body_of(claim);
  body[20] = 2;
  EXPECT_EQ(decode_error(with_body(claim, body)), Error::bad_field);

  Bytes grant = encode_ok(samples()[2]);
  body = body_of(grant);
  body[20] = 2;
  EXPECT_EQ(decode_error(with_body(grant, body)), Error::bad_field);

  Bytes ack = encode_ok(samples()[8]);
  body = body_of(ack);
  body.back() = 0xFF;
  EXPECT_EQ(decode_error(with_body(ack, body)), Error::bad_field);
}

TEST(ControlBody, WrongBodyLengths) {
  for (const ControlMessage& m : samples()) {
    SCOPED_TRACE(to_string(type_of(m.body)));
    Bytes msg = encode_ok(m);
    Bytes body = body_of(msg);
    Bytes longer = body;
    longer.push_back(0);
    EXPECT_EQ(decode_error(with_body(msg, longer)), Error::bad_length);
    for (size_t n = 0; n < body.size(); ++n) {
      Bytes shorter(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(n));
      EXPECT_EQ(decode_error(with_body(msg, shorter)), Error::bad_length) << n;
    }
  }
}

TEST(ControlBody, BlobLengthBeyondTheBody) {
  // GRANT: conn 8, epoch 8, request 4, flag 1, pos 24 -> blob length at body offset 45.
  Bytes grant = encode_ok(samples()[2]);
  for (uint32_t len : {501u, 0x7FFFFFFFU, 0xFFFFFFFFU}) {
    Bytes body = body_of(grant);
    put_u32(body, 45, len);
    EXPECT_EQ(decode_error(with_body(grant, body)), Error::bad_length) << len;
  }
  Bytes body = body_of(grant);
  put_u32(body, 45, 499);
  EXPECT_EQ(decode_error(with_body(grant, body)), Error::bad_length);
}


// ---------------------------------------------------------------- chunked messages (version 3)

ControlSalt salt_of(uint8_t v) {
  ControlSalt s{};
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(v + i);
  return s;
}

// A REPL_STATE whose body is `body_len` bytes long (20 bytes of fields, then the state).
ControlMessage repl_state_of_body(size_t body_len, uint8_t seed, uint8_t salt = 1) {
  ControlMessage m{31, 32, ReplState{.conn_id = 33, .epoch = 34, .state = pattern_bytes(body_len - 20, seed)}};
  m.salt = salt_of(salt);
  return m;
}

uint64_t chunked_size(uint64_t body_len) {
  return kControlChunkedHeadBytes + body_len + (body_len + kControlChunkBytes - 1) / kControlChunkBytes * kControlChunkTagBytes;
}

// Offset of byte `at` of the body in a chunked message.
size_t body_byte_at(size_t at) {
  return kControlChunkedHeadBytes + at + at / kControlChunkBytes * kControlChunkTagBytes;
}

TEST(ControlChunked, ABodyOverOneChunkIsChunkedAndRoundTrips) {
  for (size_t len : {kControlChunkBytes, kControlChunkBytes + 1, 2 * kControlChunkBytes, 2 * kControlChunkBytes + 1,
                     size_t{3} << 20}) {
    SCOPED_TRACE(len);
    ControlMessage m = repl_state_of_body(len, 5);
    EXPECT_EQ(control_body_size(m.body), len);
    Bytes b = encode_ok(m);
    bool chunked = len > kControlChunkBytes;
    EXPECT_EQ(b.size(), chunked ? chunked_size(len) : kControlHeaderBytes + len + kControlMacBytes);
    EXPECT_EQ(b[kReservedAt + 1], chunked ? 1 : 0);
    auto size = control_message_size(b);
    ASSERT_TRUE(size.ok());
    EXPECT_EQ(*size, b.size());
    auto d = decode_control(kKey, b);
    ASSERT_TRUE(d.ok()) << to_string(d.error());
    expect_same(m, *d);
    if (chunked) {
      EXPECT_EQ(d->salt, m.salt);
    }
  }
  // GRANT and REPL_LOG too.
  ControlMessage g{1, 2, Grant{.conn_id = 3, .epoch = 4, .request_id = 5, .from_owner = true, .pos = {6, 7, 8},
                               .state = pattern_bytes(200000, 9)}};
  g.salt = salt_of(3);
  ControlMessage l{1, 2, ReplLog{.conn_id = 3, .epoch = 4, .snap_id = 5, .start = 6, .out_acked = 7,
                                 .bytes = pattern_bytes(kControlChunkBytes, 8)}};
  l.salt = salt_of(4);
  for (const auto& m : {g, l}) {
    auto d = decode_control(kKey, encode_ok(m));
    ASSERT_TRUE(d.ok()) << to_string(d.error());
    expect_same(m, *d);
  }
}

TEST(ControlChunked, NeedsASalt) {
  ControlMessage m = repl_state_of_body(kControlChunkBytes + 1, 5);
  m.salt = {};
  auto r = encode_control(kKey, m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::bad_field);
  // One chunk or less: no salt needed, none sent.
  ControlMessage small = repl_state_of_body(kControlChunkBytes, 5);
  small.salt = {};
  EXPECT_TRUE(encode_control(kKey, small).ok());
}

TEST(ControlChunked, EveryByteIsAuthenticated) {
  const size_t len = 2 * kControlChunkBytes + 100;  // three chunks, the last short
  const Bytes good = encode_ok(repl_state_of_body(len, 7));
  std::vector<std::pair<size_t, Error>> spots = {
      {kControlHeaderBytes + 3, Error::bad_mac},                    // salt
      {kControlHeaderBytes + kControlSaltBytes + 5, Error::bad_mac},  // header's HMAC
      {body_byte_at(0), Error::bad_mac},                            // first body byte (a field)
      {body_byte_at(25), Error::bad_mac},                           // state, chunk 0
      {body_byte_at(kControlChunkBytes - 1), Error::bad_mac},       // last byte of chunk 0
      {body_byte_at(kControlChunkBytes - 1) + 1, Error::bad_mac},   // chunk 0's tag
      {body_byte_at(kControlChunkBytes), Error::bad_mac},           // first byte of chunk 1
      {body_byte_at(len - 1), Error::bad_mac},                      // last byte of the body
      {good.size() - 1, Error::bad_mac},                            // last tag
      {8, Error::bad_mac},                                          // from (in the header's HMAC)
  };
  for (auto [at, want] : spots) {
    SCOPED_TRACE(at);
    Bytes b = good;
    b[at] ^= 0x01;
    EXPECT_EQ(decode_error(b), want);
  }
  // Chunks swapped (both full size): each tag is bound to its index.
  Bytes swapped = good;
  const size_t c0 = body_byte_at(0), c1 = body_byte_at(kControlChunkBytes);
  const size_t span = kControlChunkBytes + kControlChunkTagBytes;
  std::copy(good.begin() + static_cast<std::ptrdiff_t>(c1), good.begin() + static_cast<std::ptrdiff_t>(c1 + span),
            swapped.begin() + static_cast<std::ptrdiff_t>(c0));
  std::copy(good.begin() + static_cast<std::ptrdiff_t>(c0), good.begin() + static_cast<std::ptrdiff_t>(c0 + span),
            swapped.begin() + static_cast<std::ptrdiff_t>(c1));
  EXPECT_EQ(decode_error(swapped), Error::bad_mac);
  // A chunk of another message of the same length and key but another salt.
  const Bytes other = encode_ok(repl_state_of_body(len, 7, 99));
  Bytes spliced = good;
  std::copy(other.begin() + static_cast<std::ptrdiff_t>(c1), other.begin() + static_cast<std::ptrdiff_t>(c1 + span),
            spliced.begin() + static_cast<std::ptrdiff_t>(c1));
  EXPECT_EQ(decode_error(spliced), Error::bad_mac);
  // Another pool key.
  EXPECT_EQ(decode_error(good, kOtherKey), Error::bad_mac);
  // Cut short, or with a byte more.
  EXPECT_EQ(decode_error(std::span<const uint8_t>(good).first(good.size() - 1)), Error::truncated);
  Bytes longer = good;
  longer.push_back(0);
  EXPECT_EQ(decode_error(longer), Error::bad_length);
}

TEST(ControlChunked, OnlyTypesWithStateMayBeChunked) {
  Bytes b = encode_ok(samples()[0]);  // a CLAIM
  b.resize(kControlHeaderBytes);
  put_u16(b, kReservedAt, kControlFlagChunked);
  put_u32(b, kLengthAt, kControlChunkBytes + 1);
  EXPECT_EQ(control_message_size(b).error(), Error::bad_length);
  // A GRANT with the flag and a body over one chunk frames.
  Bytes g = encode_ok(samples()[2]);
  g.resize(kControlHeaderBytes);
  put_u16(g, kReservedAt, kControlFlagChunked);
  put_u32(g, kLengthAt, kControlChunkBytes + 1);
  ASSERT_TRUE(control_message_size(g).ok());
  EXPECT_EQ(control_message_size(g).value(), chunked_size(kControlChunkBytes + 1));
  // Without the flag, the same length is refused.
  put_u16(g, kReservedAt, 0);
  EXPECT_EQ(control_message_size(g).error(), Error::bad_field);
}

// Small and chunked messages one after another, and the stream they make.
std::vector<ControlMessage> mixed_messages() {
  std::vector<ControlMessage> want = samples();
  want.push_back(repl_state_of_body(3 * kControlChunkBytes + 17, 2, 10));
  want.push_back(samples()[0]);
  want.push_back(repl_state_of_body(kControlChunkBytes + 1, 3, 11));
  return want;
}

Bytes stream_of(const std::vector<ControlMessage>& messages) {
  Bytes stream;
  for (const auto& m : messages) {
    Bytes b = encode_ok(m);
    stream.insert(stream.end(), b.begin(), b.end());
  }
  return stream;
}

// The reader gives the same messages whatever pieces the stream comes in.
TEST(ControlReaderTest, AnySplitGivesTheSameMessages) {
  const std::vector<ControlMessage> want = mixed_messages();
  const Bytes stream = stream_of(want);
  for (size_t piece : {size_t{1}, size_t{7}, size_t{16}, size_t{4096}, size_t{65536 + 3}, stream.size()}) {
    SCOPED_TRACE(piece);
    ControlReader reader(kKey, kControlMessageBytesMax);
    std::vector<ControlMessage> got;
    for (size_t at = 0; at < stream.size(); at += piece) {
      std::span<const uint8_t> in(stream.data() + at, std::min(piece, stream.size() - at));
      while (!in.empty()) {
        auto r = reader.next(in);
        ASSERT_TRUE(r.ok()) << to_string(r.error());
        if (r->has_value()) got.push_back(std::move(**r));
      }
    }
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) expect_same(want[i], got[i]);
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

// A stream read the way the member runtime reads it: straight into place (direct(), a readv
// that fills its buffers in order, commit()) whenever the reader offers buffers, into a buffer
// of its own (next()) otherwise. The reads stop short of what was offered in every way
// (mid-chunk, mid-tag, after a whole tag); the messages are the same.
std::vector<ControlMessage> read_direct(const Bytes& stream, size_t read_max, size_t direct_max, Error* error = nullptr) {
  ControlReader reader(kKey, kControlMessageBytesMax);
  std::vector<ControlMessage> got;
  size_t at = 0;
  while (at < stream.size()) {
    auto bufs = reader.direct(direct_max);
    Result<std::optional<ControlMessage>> r = std::optional<ControlMessage>{};
    if (!bufs.empty()) {
      size_t want = std::min(read_max, stream.size() - at), n = 0;
      for (auto b : bufs) {
        size_t k = std::min(b.size(), want - n);
        std::memcpy(b.data(), stream.data() + at + n, k);
        n += k;
        if (n == want) break;
      }
      at += n;
      r = reader.commit(n);
    } else {
      std::span<const uint8_t> in(stream.data() + at, std::min(read_max, stream.size() - at));
      size_t before = in.size();
      r = reader.next(in);
      at += before - in.size();
    }
    if (!r.ok()) {
      if (error) *error = r.error();
      return got;
    }
    if (r->has_value()) got.push_back(std::move(**r));
  }
  EXPECT_EQ(reader.buffered(), 0u);
  return got;
}

TEST(ControlReaderTest, ReadingStraightIntoPlaceGivesTheSameMessages) {
  const std::vector<ControlMessage> want = mixed_messages();
  const Bytes stream = stream_of(want);
  const auto& this_want = want;
  const auto& this_stream = stream;
  // A message of 20 chunks too, for the larger reads (the small ones take long enough on the rest).
  std::vector<ControlMessage> want_big = want;
  want_big.push_back(repl_state_of_body(20 * kControlChunkBytes, 4, 12));
  const Bytes stream_big = stream_of(want_big);
  for (size_t read_max : {size_t{1}, size_t{9}, size_t{4096}, kControlChunkBytes, kControlChunkBytes + 8,
                          kControlChunkBytes + kControlChunkTagBytes, size_t{3} << 17, stream_big.size()}) {
    for (size_t direct_max : {size_t{1}, size_t{1} << 20}) {
      const bool with_big = read_max >= 4096;
      const auto& expected = with_big ? want_big : this_want;
      SCOPED_TRACE(std::to_string(read_max) + " / " + std::to_string(direct_max));
      auto got = read_direct(with_big ? stream_big : this_stream, read_max, direct_max);
      ASSERT_EQ(got.size(), expected.size());
      for (size_t i = 0; i < expected.size(); ++i) expect_same(expected[i], got[i]);
    }
  }
}

TEST(ControlReaderTest, ABadTagReadStraightIntoPlaceIsRefused) {
  Bytes b = encode_ok(repl_state_of_body(5 * kControlChunkBytes + 3, 7, 13));
  for (size_t chunk : {size_t{0}, size_t{2}, size_t{5}}) {
    SCOPED_TRACE(chunk);
    Bytes bad = b;
    // The last byte of chunk `chunk`'s tag.
    bad[body_byte_at(std::min((chunk + 1) * kControlChunkBytes, 5 * kControlChunkBytes + 3) - 1) + kControlChunkTagBytes] ^= 1;
    Error e = Error::ok;
    auto got = read_direct(bad, size_t{1} << 20, size_t{1} << 20, &e);
    EXPECT_TRUE(got.empty());
    EXPECT_EQ(e, Error::bad_mac);
  }
}

TEST(ControlReaderTest, RefusesWhatIsOverItsLimitFromTheHeader) {
  Bytes big = encode_ok(repl_state_of_body(kControlChunkBytes + 1, 2));
  ControlReader reader(kKey, kControlUnverifiedBytesMax);
  std::span<const uint8_t> in(big);
  auto r = reader.next(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::too_large);
  EXPECT_LE(reader.buffered(), kControlHeaderBytes);
  // Unusable afterwards.
  Bytes small = encode_ok(samples()[0]);
  std::span<const uint8_t> again(small);
  EXPECT_FALSE(reader.next(again).ok());
}

// A forged header never gets the reader to make room for the body it announces.
TEST(ControlReaderTest, NoRoomForABodyBeforeTheHeaderIsAuthenticated) {
  Bytes b = encode_ok(repl_state_of_body(size_t{8} << 20, 2));
  b[kControlHeaderBytes + kControlSaltBytes] ^= 1;  // the header's HMAC
  ControlReader reader(kKey, kControlMessageBytesMax);
  std::span<const uint8_t> in(b.data(), kControlChunkedHeadBytes - 1);
  auto r = reader.next(in);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  std::span<const uint8_t> rest(b.data() + kControlChunkedHeadBytes - 1, 1000);
  r = reader.next(rest);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::bad_mac);
  EXPECT_LE(reader.buffered(), kControlChunkedHeadBytes);
}

// A bad chunk is refused when that chunk ends, not after the whole message.
TEST(ControlReaderTest, ABadChunkIsCaughtWhenItEnds) {
  Bytes b = encode_ok(repl_state_of_body(size_t{1} << 20, 2));
  b[body_byte_at(10)] ^= 1;
  ControlReader reader(kKey, kControlMessageBytesMax);
  const size_t first_tag_end = body_byte_at(kControlChunkBytes - 1) + 1 + kControlChunkTagBytes;
  std::span<const uint8_t> in(b.data(), first_tag_end - 1);
  auto r = reader.next(in);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  std::span<const uint8_t> last(b.data() + first_tag_end - 1, 1);
  r = reader.next(last);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::bad_mac);
}


// Written a piece at a time, a message is the same bytes as encoded whole, and each piece but
// the last ends on a chunk's tag (so the receiver can check it at once).
TEST(ControlEncoderTest, PiecesAreTheWholeEncoding) {
  for (size_t len : {size_t{100}, kControlChunkBytes + 1, 5 * kControlChunkBytes + 3}) {
    const ControlMessage m = repl_state_of_body(len, 4);
    const Bytes whole = encode_ok(m);
    for (size_t budget : {size_t{1}, kControlChunkBytes + kControlChunkTagBytes, size_t{3} << 17, whole.size()}) {
      SCOPED_TRACE(std::to_string(len) + " / " + std::to_string(budget));
      auto enc = ControlEncoder::make(kKey, m);
      ASSERT_TRUE(enc.ok());
      EXPECT_EQ((*enc)->size(), whole.size());
      Bytes joined;
      size_t pieces = 0;
      while (!(*enc)->done()) {
        size_t before = joined.size();
        (*enc)->next(joined, budget);
        ++pieces;
        ASSERT_GT(joined.size(), before);
        if (!(*enc)->done() && len > kControlChunkBytes) {
          EXPECT_EQ((joined.size() - kControlChunkedHeadBytes) % (kControlChunkBytes + kControlChunkTagBytes), 0u);
        }
        ASSERT_LE(pieces, 1000u);
      }
      ASSERT_EQ(joined.size(), whole.size());
      size_t diff = 0;
      while (diff < whole.size() && joined[diff] == whole[diff]) ++diff;
      EXPECT_EQ(diff, whole.size()) << "first difference at byte " << diff;
    }
  }
}

// The views of each piece (what the member runtime hands to writev), taken before the next
// piece is asked for, are the whole encoding too; every chunk's tag is a view of its own, so
// the body's bytes are not copied.
TEST(ControlEncoderTest, ViewsAreTheWholeEncoding) {
  for (size_t len : {size_t{100}, kControlChunkBytes + 1, 5 * kControlChunkBytes + 3}) {
    const ControlMessage m = repl_state_of_body(len, 4);
    const Bytes whole = encode_ok(m);
    for (size_t budget : {size_t{1}, size_t{3} << 17, whole.size()}) {
      SCOPED_TRACE(std::to_string(len) + " / " + std::to_string(budget));
      auto enc = ControlEncoder::make(kKey, m);
      ASSERT_TRUE(enc.ok());
      Bytes joined;
      size_t tags = 0;
      while (!(*enc)->done()) {
        std::vector<std::span<const uint8_t>> views;
        (*enc)->next_views(views, budget);
        ASSERT_FALSE(views.empty());
        for (auto v : views) {
          ASSERT_FALSE(v.empty());
          tags += v.size() == kControlChunkTagBytes;
          joined.insert(joined.end(), v.begin(), v.end());
        }
        ASSERT_LE(joined.size(), whole.size());
      }
      EXPECT_TRUE(joined == whole);
      if (len > kControlChunkBytes) {
        EXPECT_EQ(tags, (len + kControlChunkBytes - 1) / kControlChunkBytes) << "one tag view per chunk";
      }
    }
  }
}

// A state given as pieces (the member's snapshot block between the state's other fields) is
// the same message as with the state in it, chunked or not, whatever the cut.
TEST(ControlEncoderTest, StateInPiecesIsTheSameMessage) {
  for (size_t len : {size_t{100}, kControlChunkBytes + 1, 5 * kControlChunkBytes + 3}) {
    ControlMessage m = repl_state_of_body(len, 6);
    const Bytes whole = encode_ok(m);
    const Bytes state = std::get<ReplState>(m.body).state;
    for (size_t cut : {size_t{0}, size_t{1}, state.size() / 3, kControlChunkBytes - 20, state.size()}) {
      if (cut > state.size()) continue;
      SCOPED_TRACE(std::to_string(len) + " cut at " + std::to_string(cut));
      std::vector<Slice> pieces;
      pieces.push_back(Slice::copy_of(std::span<const uint8_t>(state).subspan(0, cut)));
      pieces.push_back(Slice::copy_of(std::span<const uint8_t>(state).subspan(cut, (state.size() - cut) / 2)));
      pieces.push_back(Slice::copy_of(std::span<const uint8_t>(state).subspan(cut + (state.size() - cut) / 2)));
      ControlMessage empty = m;
      std::get<ReplState>(empty.body).state.clear();
      auto enc = ControlEncoder::make(kKey, empty, pieces);
      ASSERT_TRUE(enc.ok());
      EXPECT_EQ((*enc)->size(), whole.size());
      Bytes joined;
      while (!(*enc)->done()) (*enc)->next(joined, size_t{3} << 17);
      EXPECT_TRUE(joined == whole);
    }
  }
}

TEST(ControlEncoderTest, RefusesWhatEncodeControlRefuses) {
  ControlMessage m = repl_state_of_body(kControlChunkBytes + 1, 4);
  m.salt = {};
  auto enc = ControlEncoder::make(kKey, m);
  ASSERT_FALSE(enc.ok());
  EXPECT_EQ(enc.error(), Error::bad_field);
}

}  // namespace
}  // namespace mtcp::wire
