// Unit tests for the client<->server frame codec (wire/frame.h).
//
// What FrameDecoder::next guarantees, and what these tests pin down:
//   * A frame is returned as soon as its last byte is in the queue, and exactly its bytes are
//     consumed; with fewer bytes it returns std::nullopt and consumes nothing.
//   * A declared body length above the type's cap is refused (too_large) from the 8-byte header
//     alone: the decoder never waits for such a body.
//   * On any error nothing is consumed: the queue still starts at the offending frame's header
//     (frames before it were consumed when they were returned), so calling next() again returns
//     the same error. The caller resets the subflow.
//   * DATA payload is handed over as slices of the pushed blocks, never copied.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "common/buffer.h"
#include "common/errors.h"
#include "common/limits.h"
#include "wire/frame.h"

namespace mtcp::wire {
namespace {

// ---------------------------------------------------------------- helpers

cert::Certificate sample_cert(uint64_t conn_id) {
  return {.conn_id = conn_id, .issuer_id = 0x01020304U, .issued_at_ms = 1'000'000,
          .expires_at_ms = 1'600'000};
}

template <size_t N>
std::array<uint8_t, N> pattern(uint8_t seed) {
  std::array<uint8_t, N> a{};
  for (size_t i = 0; i < N; ++i) a[i] = static_cast<uint8_t>(seed + 7 * i);
  return a;
}

Bytes pattern_bytes(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 13 * i);
  return b;
}

Bytes enc(const Frame& f) {
  Bytes b;
  encode(f, b);
  return b;
}

// The body of an encoded frame (everything after the 8-byte header).
Bytes body_of(const Frame& f) {
  Bytes b = enc(f);
  return Bytes(b.begin() + kFrameHeaderBytes, b.end());
}

void put_u16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}
void put_u32(Bytes& b, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

// A frame built by hand: header fields as given, then `body`.
Bytes raw_frame(uint8_t type, uint8_t flags, uint16_t reserved, uint32_t len,
                std::span<const uint8_t> body = {}) {
  // Sized once, then filled: growing an 8-byte vector by insert() trips GCC 12's -Warray-bounds
  // false positive at -O3 (a plain Release build).
  Bytes b(kFrameHeaderBytes + body.size());
  b[0] = type;
  b[1] = flags;
  put_u16(b, 2, reserved);
  put_u32(b, 4, len);
  std::copy(body.begin(), body.end(), b.begin() + static_cast<std::ptrdiff_t>(kFrameHeaderBytes));
  return b;
}
Bytes with_body(FrameType t, std::span<const uint8_t> body) {
  return raw_frame(static_cast<uint8_t>(t), 0, 0, static_cast<uint32_t>(body.size()), body);
}

Bytes flat(const Data& d) {
  Bytes out;
  for (const auto& s : d.payload) out.insert(out.end(), s.span().begin(), s.span().end());
  return out;
}

Welcome sample_welcome(size_t alternates) {
  Welcome w;
  w.conn_id = 0x1122334455667788ULL;
  w.server_id = 0xA1A2A3A4U;
  w.epoch = 0x0000000100000002ULL;
  w.cert = sample_cert(w.conn_id);
  w.secret = pattern<32>(0x30);
  for (size_t i = 0; i < alternates; ++i) {
    w.alternates.push_back(
        {static_cast<uint32_t>(100 + i), "10.0.0." + std::to_string(i) + ":7000"});
  }
  return w;
}

// One frame of every type, every field non-zero so a dropped field shows.
std::vector<Frame> sample_frames() {
  std::vector<Frame> v;
  v.emplace_back(Hello{.version = kVersion, .kind = HelloKind::fresh, .conn_id = 0});
  v.emplace_back(Hello{.version = kVersion, .kind = HelloKind::migrate, .conn_id = 0xDEADBEEF01ULL});
  v.emplace_back(sample_welcome(0));
  v.emplace_back(sample_welcome(3));
  v.emplace_back(ChallengeFrame{.server_id = 0x0BADF00DU, .nonce = pattern<32>(0x11)});
  v.emplace_back(Migrate{.cert = sample_cert(0x55),
                         .counter = 3,
                         .prev_owner = 9,
                         .client_rcv_nxt = 0x0102030405060708ULL,
                         .client_snd_una = 0x1112131415161718ULL,
                         .proof = pattern<32>(0x22)});
  v.emplace_back(Accept{.epoch = 4,
                        .server_rcv_nxt = 0x1111222233334444ULL,
                        .cert = sample_cert(0x56),
                        .secret = pattern<32>(0x33)});
  v.emplace_back(Refuse{.reason = Error::cert_expired, .hint_server = 12, .text = "expired"});
  v.emplace_back(Refuse{.reason = Error::not_owner, .hint_server = 0, .text = ""});
  Data d;
  d.dsn = 0x8000000000000001ULL;
  d.payload.push_back(Slice(make_block(pattern_bytes(5, 1))));
  d.payload.push_back(Slice(make_block(pattern_bytes(300, 2))));
  v.emplace_back(std::move(d));
  v.emplace_back(Data{.dsn = 77, .payload = {}});
  v.emplace_back(Ack{.dsn = 0xFEDCBA9876543210ULL});
  v.emplace_back(Hint{.reason = HintReason::draining, .server_id = 5});
  v.emplace_back(Renew{.cert = {.conn_id = 77, .issuer_id = 3, .issued_at_ms = 10, .expires_at_ms = 20}, .secret = {9, 8, 7}});
  v.emplace_back(Close{.final_dsn = 123456789});
  v.emplace_back(Reset{.reason = Error::protocol_violation});
  return v;
}

void expect_fields(const Hello& a, const Hello& b) {
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.conn_id, b.conn_id);
}
void expect_fields(const Welcome& a, const Welcome& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.server_id, b.server_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.cert, b.cert);
  EXPECT_EQ(a.secret, b.secret);
  EXPECT_EQ(a.alternates, b.alternates);
}
void expect_fields(const ChallengeFrame& a, const ChallengeFrame& b) {
  EXPECT_EQ(a.server_id, b.server_id);
  EXPECT_EQ(a.nonce, b.nonce);
}
void expect_fields(const Migrate& a, const Migrate& b) {
  EXPECT_EQ(a.cert, b.cert);
  EXPECT_EQ(a.counter, b.counter);
  EXPECT_EQ(a.prev_owner, b.prev_owner);
  EXPECT_EQ(a.client_rcv_nxt, b.client_rcv_nxt);
  EXPECT_EQ(a.client_snd_una, b.client_snd_una);
  EXPECT_EQ(a.proof, b.proof);
}
void expect_fields(const Accept& a, const Accept& b) {
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.server_rcv_nxt, b.server_rcv_nxt);
  EXPECT_EQ(a.cert, b.cert);
  EXPECT_EQ(a.secret, b.secret);
}
void expect_fields(const Refuse& a, const Refuse& b) {
  EXPECT_EQ(a.reason, b.reason);
  EXPECT_EQ(a.hint_server, b.hint_server);
  EXPECT_EQ(a.text, b.text);
}
void expect_fields(const Data& a, const Data& b) {
  EXPECT_EQ(a.dsn, b.dsn);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_EQ(flat(a), flat(b));
}
void expect_fields(const Ack& a, const Ack& b) { EXPECT_EQ(a.dsn, b.dsn); }
void expect_fields(const Hint& a, const Hint& b) {
  EXPECT_EQ(a.reason, b.reason);
  EXPECT_EQ(a.server_id, b.server_id);
}
void expect_fields(const Renew& a, const Renew& b) {
  EXPECT_EQ(a.cert, b.cert);
  EXPECT_EQ(a.secret, b.secret);
}
void expect_fields(const Close& a, const Close& b) { EXPECT_EQ(a.final_dsn, b.final_dsn); }
void expect_fields(const Reset& a, const Reset& b) { EXPECT_EQ(a.reason, b.reason); }

void expect_same(const Frame& want, const Frame& got) {
  ASSERT_EQ(want.index(), got.index()) << to_string(type_of(want)) << " vs " << to_string(type_of(got));
  std::visit(
      [&](const auto& w) {
        using T = std::decay_t<decltype(w)>;
        expect_fields(w, std::get<T>(got));
      },
      want);
}

// Decodes `bytes` with a streaming decoder, expecting an error. Checks the guarantee that an
// error consumes nothing and repeats on the next call.
Error stream_error(const Bytes& bytes, size_t payload_max = kFramePayloadBytesMax) {
  SliceQueue q;
  q.push(Slice::copy_of(bytes));
  FrameDecoder dec(payload_max);
  auto r = dec.next(q);
  if (r.ok()) {
    ADD_FAILURE() << (r.value().has_value() ? "decoded a frame" : "asked for more bytes");
    return Error::ok;
  }
  EXPECT_EQ(q.size(), bytes.size());
  EXPECT_EQ(q.flatten(0, q.size()), bytes);
  auto again = dec.next(q);
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(again.error(), r.error());
  return r.error();
}

// Both decoders must refuse `bytes` with `want`.
void expect_refused(const Bytes& bytes, Error want) {
  auto one = decode_one(bytes);
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.error(), want) << to_string(one.error());
  EXPECT_EQ(stream_error(bytes), want);
}

// Feeds `stream` into a decoder in chunks (sizes from `chunk`, each pushed as its own block),
// draining after each chunk. Records every frame and how many bytes had been fed when it came
// out; stops at the first error.
struct Fed {
  std::vector<Frame> frames;
  std::vector<size_t> fed_at;
  Error error = Error::ok;
  size_t left = 0;
};
template <typename ChunkFn>
Fed feed(const Bytes& stream, ChunkFn chunk, size_t payload_max = kFramePayloadBytesMax) {
  Fed out;
  SliceQueue q;
  FrameDecoder dec(payload_max);
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t n = std::min(chunk(), stream.size() - pos);
    q.push(Slice::copy_of(std::span<const uint8_t>(stream).subspan(pos, n)));
    pos += n;
    for (;;) {
      size_t before = q.size();
      auto r = dec.next(q);
      if (!r) {
        out.error = r.error();
        out.left = q.size();
        return out;
      }
      if (!r.value().has_value()) {
        EXPECT_EQ(q.size(), before) << "need-more consumed bytes";
        break;
      }
      out.frames.push_back(std::move(*r.value()));
      out.fed_at.push_back(pos);
    }
  }
  out.left = q.size();
  return out;
}

// ---------------------------------------------------------------- round trips

TEST(FrameRoundTrip, EveryTypeThroughDecodeOne) {
  for (const Frame& f : sample_frames()) {
    SCOPED_TRACE(to_string(type_of(f)));
    Bytes b = enc(f);
    ASSERT_GE(b.size(), kFrameHeaderBytes);
    EXPECT_EQ(b[0], static_cast<uint8_t>(type_of(f)));
    EXPECT_EQ(b[1], 0);  // flags
    EXPECT_EQ(b[2], 0);  // reserved
    EXPECT_EQ(b[3], 0);
    uint32_t len = (uint32_t{b[4]} << 24) | (uint32_t{b[5]} << 16) | (uint32_t{b[6]} << 8) | b[7];
    EXPECT_EQ(len, b.size() - kFrameHeaderBytes);
    auto r = decode_one(b);
    ASSERT_TRUE(r.ok()) << to_string(r.error());
    expect_same(f, r.value());
    EXPECT_EQ(enc(r.value()), b);  // the encoding is canonical
  }
}

TEST(FrameRoundTrip, TypeOfMatchesEncodedTypeByte) {
  std::vector<FrameType> want = {FrameType::hello,     FrameType::hello,   FrameType::welcome,
                                 FrameType::welcome,   FrameType::challenge, FrameType::migrate,
                                 FrameType::accept,    FrameType::refuse,  FrameType::refuse,
                                 FrameType::data,      FrameType::data,    FrameType::ack,
                                 FrameType::hint,      FrameType::renew,   FrameType::close,
                                 FrameType::reset};
  auto frames = sample_frames();
  ASSERT_EQ(frames.size(), want.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(type_of(frames[i]), want[i]);
}

TEST(FrameRoundTrip, WelcomeAtItsLimits) {
  Welcome w = sample_welcome(0);
  for (size_t i = 0; i < kAlternatesMax; ++i) {
    w.alternates.push_back({static_cast<uint32_t>(i), std::string(kAddressBytesMax, static_cast<char>('a' + i))});
  }
  w.alternates.push_back({99, ""});
  w.alternates.erase(w.alternates.begin());  // 16 in all, one with an empty address
  ASSERT_EQ(w.alternates.size(), kAlternatesMax);
  Bytes b = enc(w);
  auto r = decode_one(b);
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  expect_same(w, r.value());
}

TEST(FrameRoundTrip, RefuseWithLongestText) {
  Refuse f{.reason = Error::rate_limited, .hint_server = 1, .text = std::string(kReasonTextBytesMax, 'x')};
  auto r = decode_one(enc(f));
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  expect_same(f, r.value());
}

TEST(FrameRoundTrip, RefuseAndResetAcceptNamedErrorCodes) {
  for (Error e : {Error::truncated, Error::bad_mac, Error::snapshot_too_large, Error::rate_limited,
                  Error::bad_proof, Error::unknown_connection, Error::owner_unreachable,
                  Error::no_alternate, Error::protocol_violation, Error::subflow_lost}) {
    SCOPED_TRACE(to_string(e));
    auto r = decode_one(enc(Refuse{.reason = e, .hint_server = 0, .text = "t"}));
    ASSERT_TRUE(r.ok()) << to_string(r.error());
    EXPECT_EQ(std::get<Refuse>(r.value()).reason, e);
    auto s = decode_one(enc(Reset{.reason = e}));
    ASSERT_TRUE(s.ok()) << to_string(s.error());
    EXPECT_EQ(std::get<Reset>(s.value()).reason, e);
  }
}

TEST(FrameRoundTrip, HintEveryReason) {
  for (HintReason h : {HintReason::overload, HintReason::draining, HintReason::operator_request}) {
    auto r = decode_one(enc(Hint{.reason = h, .server_id = 3}));
    ASSERT_TRUE(r.ok()) << to_string(r.error());
    EXPECT_EQ(std::get<Hint>(r.value()).reason, h);
  }
}

Bytes sample_stream(std::vector<size_t>* ends = nullptr) {
  Bytes stream;
  for (const Frame& f : sample_frames()) {
    Bytes b = enc(f);
    stream.insert(stream.end(), b.begin(), b.end());
    if (ends) ends->push_back(stream.size());
  }
  return stream;
}

TEST(FrameDecoderStream, ByteByByte) {
  std::vector<size_t> ends;
  Bytes stream = sample_stream(&ends);
  Fed fed = feed(stream, [] { return size_t{1}; });
  EXPECT_EQ(fed.error, Error::ok);
  EXPECT_EQ(fed.left, 0u);
  auto want = sample_frames();
  ASSERT_EQ(fed.frames.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    expect_same(want[i], fed.frames[i]);
    // Each frame comes out exactly when its last byte arrives, not earlier, not later.
    EXPECT_EQ(fed.fed_at[i], ends[i]);
  }
}

TEST(FrameDecoderStream, RandomChunks) {
  std::mt19937 rng(12345);
  auto want = sample_frames();
  Bytes stream = sample_stream();
  for (int round = 0; round < 200; ++round) {
    SCOPED_TRACE(round);
    size_t max_chunk = round % 4 == 0 ? 8 : round % 4 == 1 ? 64 : round % 4 == 2 ? 512 : 4096;
    std::uniform_int_distribution<size_t> dist(1, max_chunk);
    Fed fed = feed(stream, [&] { return dist(rng); });
    EXPECT_EQ(fed.error, Error::ok);
    EXPECT_EQ(fed.left, 0u);
    ASSERT_EQ(fed.frames.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) expect_same(want[i], fed.frames[i]);
  }
}

TEST(FrameDecoderStream, RandomDataFramesInRandomChunks) {
  std::mt19937 rng(777);
  std::uniform_int_distribution<size_t> len_dist(0, 3000);
  std::uniform_int_distribution<size_t> chunk_dist(1, 1500);
  std::uniform_int_distribution<uint64_t> dsn_dist;
  for (int round = 0; round < 20; ++round) {
    std::vector<Frame> want;
    Bytes stream;
    for (int i = 0; i < 30; ++i) {
      Frame f;
      if (i % 3 == 2) {
        f = Ack{.dsn = dsn_dist(rng)};
      } else {
        Data d;
        d.dsn = dsn_dist(rng);
        d.payload.push_back(Slice(make_block(pattern_bytes(len_dist(rng), static_cast<uint8_t>(i)))));
        f = std::move(d);
      }
      Bytes b = enc(f);
      stream.insert(stream.end(), b.begin(), b.end());
      want.push_back(std::move(f));
    }
    Fed fed = feed(stream, [&] { return chunk_dist(rng); });
    EXPECT_EQ(fed.error, Error::ok);
    ASSERT_EQ(fed.frames.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) expect_same(want[i], fed.frames[i]);
  }
}

// ---------------------------------------------------------------- DATA

TEST(FrameData, HeaderLayoutIsExact) {
  uint8_t hdr[kDataHeaderBytes];
  encode_data_header(0x0102030405060708ULL, 0x00000A0BU, hdr);
  const std::array<uint8_t, kDataHeaderBytes> want = {
      0x10, 0x00, 0x00, 0x00,                          // type DATA, flags, reserved
      0x00, 0x00, 0x0A, 0x13,                          // body length = payload + 8
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // dsn
  };
  EXPECT_EQ(Bytes(hdr, hdr + kDataHeaderBytes), Bytes(want.begin(), want.end()));
}

TEST(FrameData, HeaderMatchesGenericEncoder) {
  Data d;
  d.dsn = 0xFFEEDDCCBBAA9988ULL;
  d.payload.push_back(Slice(make_block(pattern_bytes(1000, 9))));
  Bytes b = enc(d);
  uint8_t hdr[kDataHeaderBytes];
  encode_data_header(d.dsn, 1000, hdr);
  ASSERT_EQ(b.size(), kDataHeaderBytes + 1000);
  EXPECT_EQ(Bytes(b.begin(), b.begin() + kDataHeaderBytes), Bytes(hdr, hdr + kDataHeaderBytes));
  EXPECT_EQ(Bytes(b.begin() + kDataHeaderBytes, b.end()), pattern_bytes(1000, 9));

  encode_data_header(0, 0, hdr);
  EXPECT_EQ(Bytes(hdr, hdr + kDataHeaderBytes), enc(Data{.dsn = 0, .payload = {}}));
}

TEST(FrameData, PayloadIsTheBlockPushedNotACopy) {
  uint8_t hdr[kDataHeaderBytes];
  encode_data_header(42, 100, hdr);
  BlockPtr payload = make_block(pattern_bytes(100, 5));
  SliceQueue q;
  q.push(Slice::copy_of(hdr));
  q.push(Slice(payload));
  FrameDecoder dec;
  auto r = dec.next(q);
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  ASSERT_TRUE(r.value().has_value());
  const Data& d = std::get<Data>(*r.value());
  EXPECT_EQ(d.dsn, 42u);
  ASSERT_EQ(d.payload.size(), 1u);
  EXPECT_EQ(d.payload[0].block.get(), payload.get());
  EXPECT_EQ(d.payload[0].off, 0u);
  EXPECT_EQ(d.payload[0].len, 100u);
  EXPECT_TRUE(q.empty());
}

TEST(FrameData, PayloadAcrossBlocksKeepsEachBlock) {
  uint8_t hdr[kDataHeaderBytes];
  encode_data_header(7, 30, hdr);
  std::vector<BlockPtr> blocks = {make_block(pattern_bytes(10, 1)), make_block(pattern_bytes(10, 2)),
                                  make_block(pattern_bytes(15, 3))};  // 5 bytes too many
  SliceQueue q;
  q.push(Slice::copy_of(hdr));
  for (const auto& b : blocks) q.push(Slice(b));
  FrameDecoder dec;
  auto r = dec.next(q);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r.value().has_value());
  const Data& d = std::get<Data>(*r.value());
  ASSERT_EQ(d.payload.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(d.payload[i].block.get(), blocks[i].get());
    EXPECT_EQ(d.payload[i].off, 0u);
  }
  EXPECT_EQ(d.payload[2].len, 10u);
  EXPECT_EQ(d.size(), 30u);
  // The 5 bytes left over stay queued, as a slice of the same block.
  ASSERT_EQ(q.size(), 5u);
  EXPECT_EQ(q.slices().front().block.get(), blocks[2].get());
  EXPECT_EQ(q.slices().front().off, 10u);
}

TEST(FrameData, PayloadInsideOneBlockWithFollowingFrame) {
  Data d;
  d.dsn = 1;
  d.payload.push_back(Slice(make_block(pattern_bytes(50, 4))));
  Bytes all = enc(d);
  Bytes ack = enc(Ack{.dsn = 9});
  all.insert(all.end(), ack.begin(), ack.end());
  BlockPtr block = make_block(all);
  SliceQueue q;
  q.push(Slice(block));
  FrameDecoder dec;
  auto r = dec.next(q);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r.value().has_value());
  const Data& got = std::get<Data>(*r.value());
  ASSERT_EQ(got.payload.size(), 1u);
  EXPECT_EQ(got.payload[0].block.get(), block.get());
  EXPECT_EQ(got.payload[0].off, kDataHeaderBytes);
  EXPECT_EQ(got.payload[0].len, 50u);
  auto r2 = dec.next(q);
  ASSERT_TRUE(r2.ok());
  ASSERT_TRUE(r2.value().has_value());
  EXPECT_EQ(std::get<Ack>(*r2.value()).dsn, 9u);
  EXPECT_TRUE(q.empty());
}

TEST(FrameData, EmptyPayload) {
  auto r = decode_one(enc(Data{.dsn = 5, .payload = {}}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<Data>(r.value()).dsn, 5u);
  EXPECT_TRUE(std::get<Data>(r.value()).payload.empty());
}

TEST(FrameData, BodyShorterThanDsnIsBadLength) {
  for (uint32_t len = 0; len < 8; ++len) {
    SCOPED_TRACE(len);
    expect_refused(raw_frame(0x10, 0, 0, len, pattern_bytes(len, 1)), Error::bad_length);
  }
}

TEST(FrameData, PayloadCapIsCheckedFromTheHeader) {
  const size_t cap = 100;
  // At the cap: a valid frame, and with only the header the decoder waits.
  {
    Bytes hdr = raw_frame(0x10, 0, 0, cap + 8);
    SliceQueue q;
    q.push(Slice::copy_of(hdr));
    FrameDecoder dec(cap);
    auto r = dec.next(q);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r.value().has_value());
    EXPECT_EQ(q.size(), hdr.size());
    Bytes full = raw_frame(0x10, 0, 0, cap + 8, pattern_bytes(cap + 8, 3));
    Fed fed = feed(full, [] { return size_t{1}; }, cap);
    EXPECT_EQ(fed.error, Error::ok);
    ASSERT_EQ(fed.frames.size(), 1u);
    EXPECT_EQ(std::get<Data>(fed.frames[0]).size(), cap);
  }
  // One byte over: refused from the 8-byte header alone.
  EXPECT_EQ(stream_error(raw_frame(0x10, 0, 0, cap + 9), cap), Error::too_large);
  // The library-wide cap, and a 4 GiB length: refused without waiting for the body.
  EXPECT_EQ(stream_error(raw_frame(0x10, 0, 0, static_cast<uint32_t>(kFramePayloadBytesMax + 9))),
            Error::too_large);
  EXPECT_EQ(stream_error(raw_frame(0x10, 0, 0, 0xFFFFFFFFU)), Error::too_large);
  auto one = decode_one(raw_frame(0x10, 0, 0, 0xFFFFFFFFU));
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.error(), Error::too_large);
}

// ---------------------------------------------------------------- preface

SliceQueue queue_of(std::span<const uint8_t> bytes) {
  SliceQueue q;
  for (uint8_t b : bytes) q.push(Slice::copy_of(std::span<const uint8_t>(&b, 1)));
  return q;
}

TEST(FramePreface, NeedMoreOnEveryPrefix) {
  EXPECT_EQ(check_preface(SliceQueue{}), PrefaceCheck::need_more);
  for (size_t n = 1; n < kPreface.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_EQ(check_preface(queue_of(std::span<const uint8_t>(kPreface).first(n))), PrefaceCheck::need_more);
  }
}

TEST(FramePreface, MtcpOnFullPreface) {
  EXPECT_EQ(check_preface(queue_of(kPreface)), PrefaceCheck::mtcp);
  Bytes more(kPreface.begin(), kPreface.end());
  Bytes hello = enc(Hello{});
  more.insert(more.end(), hello.begin(), hello.end());
  SliceQueue q;
  q.push(Slice::copy_of(more));
  EXPECT_EQ(check_preface(q), PrefaceCheck::mtcp);
  EXPECT_EQ(q.size(), more.size());  // preface detection does not consume
}

TEST(FramePreface, PlainOnFirstMismatchingByte) {
  auto plain = [](std::string_view s) {
    return check_preface(queue_of({reinterpret_cast<const uint8_t*>(s.data()), s.size()}));
  };
  EXPECT_EQ(plain("GET /"), PrefaceCheck::plain);
  EXPECT_EQ(plain("G"), PrefaceCheck::plain);
  EXPECT_EQ(plain("\x89X"), PrefaceCheck::plain);
  EXPECT_EQ(plain("\x89"), PrefaceCheck::need_more);
  // A mismatch at each position is detected as soon as that byte is there.
  for (size_t at = 0; at < kPreface.size(); ++at) {
    SCOPED_TRACE(at);
    Bytes b(kPreface.begin(), kPreface.begin() + static_cast<std::ptrdiff_t>(at + 1));
    b[at] ^= 0x20;
    EXPECT_EQ(check_preface(queue_of(b)), PrefaceCheck::plain);
  }
}

// ---------------------------------------------------------------- bad input

const std::vector<FrameType> kAllTypes = {
    FrameType::hello, FrameType::welcome, FrameType::challenge, FrameType::migrate,
    FrameType::accept, FrameType::refuse, FrameType::data, FrameType::ack,
    FrameType::hint, FrameType::renew, FrameType::close, FrameType::reset};

TEST(FrameBadInput, UnknownTypeFromTheHeader) {
  int unknown = 0;
  for (int t = 0; t < 256; ++t) {
    bool known = false;
    for (FrameType k : kAllTypes) known = known || static_cast<int>(k) == t;
    if (known) continue;
    ++unknown;
    SCOPED_TRACE(t);
    expect_refused(raw_frame(static_cast<uint8_t>(t), 0, 0, 0), Error::unknown_type);
    // Even with a huge declared length: the type is checked first, from the header alone.
    EXPECT_EQ(stream_error(raw_frame(static_cast<uint8_t>(t), 0, 0, 0xFFFFFFFFU)), Error::unknown_type);
  }
  EXPECT_EQ(unknown, 256 - 12);
}

TEST(FrameBadInput, NonZeroFlagsOrReserved) {
  for (FrameType t : kAllTypes) {
    SCOPED_TRACE(to_string(t));
    auto ty = static_cast<uint8_t>(t);
    EXPECT_EQ(stream_error(raw_frame(ty, 0x01, 0, 0)), Error::bad_field);
    EXPECT_EQ(stream_error(raw_frame(ty, 0x80, 0, 0)), Error::bad_field);
    EXPECT_EQ(stream_error(raw_frame(ty, 0, 0x0001, 0)), Error::bad_field);
    EXPECT_EQ(stream_error(raw_frame(ty, 0, 0x8000, 0)), Error::bad_field);
  }
  // A valid frame with one flag bit set.
  Bytes b = enc(Ack{.dsn = 1});
  b[1] = 0x04;
  expect_refused(b, Error::bad_field);
}

TEST(FrameBadInput, BodyOverTheCapBeforeTheBodyArrives) {
  for (FrameType t : kAllTypes) {
    if (t == FrameType::data) continue;  // its own cap, see FrameData
    SCOPED_TRACE(to_string(t));
    auto ty = static_cast<uint8_t>(t);
    EXPECT_EQ(stream_error(raw_frame(ty, 0, 0, static_cast<uint32_t>(kFrameBodyBytesMax + 1))),
              Error::too_large);
    EXPECT_EQ(stream_error(raw_frame(ty, 0, 0, 0xFFFFFFFFU)), Error::too_large);
    auto one = decode_one(raw_frame(ty, 0, 0, 0xFFFFFFFFU));
    ASSERT_FALSE(one.ok());
    EXPECT_EQ(one.error(), Error::too_large);
  }
}

TEST(FrameBadInput, WrongLengthForEveryFixedSizeType) {
  struct Fixed {
    Frame f;
    size_t body;
  };
  std::vector<Fixed> fixed = {
      {Hello{.version = kVersion, .kind = HelloKind::migrate, .conn_id = 5, .key_share = {}}, 44},
      {ChallengeFrame{.server_id = 1, .nonce = pattern<32>(1)}, 36},
      {Migrate{.cert = sample_cert(1), .counter = 1, .prev_owner = 2, .client_rcv_nxt = 3,
               .client_snd_una = 4, .proof = pattern<32>(2)},
       cert::kCertificateWireBytes + 56},
      {Accept{.epoch = 1, .server_rcv_nxt = 2, .cert = sample_cert(1), .secret = pattern<32>(3)},
       cert::kCertificateWireBytes + 48},
      {Ack{.dsn = 1}, 8},
      {Hint{.reason = HintReason::overload, .server_id = 1}, 6},
      {Renew{.cert = sample_cert(1), .secret = pattern<32>(4)}, cert::kCertificateWireBytes + 32},
      {Close{.final_dsn = 1}, 8},
      {Reset{.reason = Error::closed}, 2},
  };
  for (const auto& [f, size] : fixed) {
    SCOPED_TRACE(to_string(type_of(f)));
    Bytes body = body_of(f);
    ASSERT_EQ(body.size(), size);
    for (size_t n : {size_t{0}, size - 1, size + 1, size + 100}) {
      SCOPED_TRACE(n);
      Bytes b = body;
      b.resize(n, 0);
      expect_refused(with_body(type_of(f), b), Error::bad_length);
    }
  }
}

TEST(FrameBadInput, HelloFields) {
  Bytes body = body_of(Hello{.version = kVersion, .kind = HelloKind::migrate, .conn_id = 5});
  for (uint8_t kind : {uint8_t{2}, uint8_t{0x80}, uint8_t{0xFF}}) {
    Bytes b = body;
    b[1] = kind;
    expect_refused(with_body(FrameType::hello, b), Error::bad_field);
  }
  Bytes reserved = body;
  reserved[3] = 1;
  expect_refused(with_body(FrameType::hello, reserved), Error::bad_field);
  Bytes fresh_with_id = body;
  fresh_with_id[1] = 0;  // fresh, conn_id 5
  expect_refused(with_body(FrameType::hello, fresh_with_id), Error::bad_field);
  expect_refused(enc(Hello{.version = kVersion, .kind = HelloKind::migrate, .conn_id = 0}), Error::bad_field);
  // A migrating HELLO carries no key share (the next secret is wrapped with the one it proves).
  Bytes share = body;
  share[12 + 7] = 1;
  expect_refused(with_body(FrameType::hello, share), Error::bad_field);
  // A fresh one carries the client's X25519 value, any 32 bytes as far as the decoder goes.
  cert::PublicKey key{};
  key.fill(0x42);
  auto back = decode_one(enc(Hello{.version = kVersion, .kind = HelloKind::fresh, .conn_id = 0, .key_share = key}));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(std::get<Hello>(back.value()).key_share, key);
}

TEST(FrameBadInput, WelcomeAlternatesTooMany) {
  Welcome w = sample_welcome(kAlternatesMax + 1);
  expect_refused(enc(w), Error::alternates_too_many);
  // The count is checked before the entries: a bare count of 255 is refused the same way.
  Bytes body = body_of(sample_welcome(0));
  body.back() = 0xFF;
  expect_refused(with_body(FrameType::welcome, body), Error::alternates_too_many);
}

TEST(FrameBadInput, WelcomeFields) {
  Welcome w = sample_welcome(2);
  w.cert.conn_id = w.conn_id + 1;
  expect_refused(enc(w), Error::bad_field);
  Welcome zero = sample_welcome(0);
  zero.conn_id = 0;
  zero.cert.conn_id = 0;
  expect_refused(enc(zero), Error::bad_field);
}

TEST(FrameBadInput, WelcomeLengths) {
  Bytes body = body_of(sample_welcome(2));
  const size_t fixed = body_of(sample_welcome(0)).size();
  // Shorter than the fixed part.
  expect_refused(with_body(FrameType::welcome, std::span<const uint8_t>(body).first(fixed - 1)),
                 Error::bad_length);
  // Every cut inside the alternates.
  for (size_t n = fixed; n < body.size(); ++n) {
    SCOPED_TRACE(n);
    expect_refused(with_body(FrameType::welcome, std::span<const uint8_t>(body).first(n)), Error::bad_length);
  }
  // A trailing byte after the last alternate.
  Bytes longer = body;
  longer.push_back(0);
  expect_refused(with_body(FrameType::welcome, longer), Error::bad_length);
}

TEST(FrameBadInput, RefuseFields) {
  Bytes body = body_of(Refuse{.reason = Error::draining, .hint_server = 3, .text = "abc"});
  for (uint16_t code : {uint16_t{0}, uint16_t{1}, uint16_t{99}, uint16_t{109}, uint16_t{210},
                        uint16_t{305}, uint16_t{409}, uint16_t{506}, uint16_t{999}, uint16_t{0xFFFF}}) {
    SCOPED_TRACE(code);
    Bytes b = body;
    put_u16(b, 0, code);
    expect_refused(with_body(FrameType::refuse, b), Error::bad_field);
  }
  // Text length disagreeing with the body.
  Bytes short_text = body;
  short_text[6] = 4;
  expect_refused(with_body(FrameType::refuse, short_text), Error::bad_length);
  Bytes long_text = body;
  long_text[6] = 2;
  expect_refused(with_body(FrameType::refuse, long_text), Error::bad_length);
  expect_refused(with_body(FrameType::refuse, std::span<const uint8_t>(body).first(6)), Error::bad_length);
}

TEST(FrameBadInput, ResetUnknownCode) {
  for (uint16_t code : {uint16_t{1}, uint16_t{999}, uint16_t{0xFFFF}}) {
    Bytes b(2);
    put_u16(b, 0, code);
    expect_refused(with_body(FrameType::reset, b), Error::bad_field);
  }
}

TEST(FrameBadInput, MigrateFields) {
  Migrate m{.cert = sample_cert(8), .counter = 0, .prev_owner = 1, .client_rcv_nxt = 2, .client_snd_una = 3,
            .proof = pattern<32>(1)};
  expect_refused(enc(m), Error::bad_field);
  m.counter = 1;
  m.cert.conn_id = 0;
  expect_refused(enc(m), Error::bad_field);
}

TEST(FrameBadInput, HintReasonOutOfRange) {
  for (uint16_t reason : {uint16_t{0}, uint16_t{4}, uint16_t{0xFFFF}}) {
    SCOPED_TRACE(reason);
    Bytes b = body_of(Hint{.reason = HintReason::overload, .server_id = 2});
    put_u16(b, 0, reason);
    expect_refused(with_body(FrameType::hint, b), Error::bad_field);
  }
}

TEST(FrameBadInput, DecodeOneTruncatedAtEveryLength) {
  for (const Frame& f : sample_frames()) {
    SCOPED_TRACE(to_string(type_of(f)));
    Bytes b = enc(f);
    for (size_t n = 0; n < b.size(); ++n) {
      auto r = decode_one(std::span<const uint8_t>(b).first(n));
      ASSERT_FALSE(r.ok()) << n;
      EXPECT_EQ(r.error(), Error::truncated) << n;
    }
  }
}

TEST(FrameBadInput, DecodeOneTrailingBytes) {
  for (const Frame& f : sample_frames()) {
    SCOPED_TRACE(to_string(type_of(f)));
    Bytes b = enc(f);
    b.push_back(0);
    auto r = decode_one(b);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), Error::bad_length);
    Bytes two = enc(f);
    Bytes ack = enc(Ack{.dsn = 1});
    two.insert(two.end(), ack.begin(), ack.end());
    auto r2 = decode_one(two);
    ASSERT_FALSE(r2.ok());
    EXPECT_EQ(r2.error(), Error::bad_length);
  }
}

TEST(FrameBadInput, ErrorConsumesNothingAfterGoodFrames) {
  Bytes good = enc(Ack{.dsn = 3});
  Bytes data = enc(Data{.dsn = 4, .payload = {Slice(make_block(pattern_bytes(10, 1)))}});
  Bytes bad = enc(Hint{.reason = HintReason::overload, .server_id = 2});
  put_u16(bad, kFrameHeaderBytes, 9);  // reason 9
  Bytes after = enc(Close{.final_dsn = 1});
  Bytes stream;
  for (const Bytes* p : {&good, &data, &bad, &after}) stream.insert(stream.end(), p->begin(), p->end());

  Fed fed = feed(stream, [] { return size_t{3}; });
  EXPECT_EQ(fed.error, Error::bad_field);
  ASSERT_EQ(fed.frames.size(), 2u);
  EXPECT_EQ(std::get<Ack>(fed.frames[0]).dsn, 3u);
  EXPECT_EQ(std::get<Data>(fed.frames[1]).dsn, 4u);
  // The queue starts at the bad frame; the bytes after it that had arrived are still there.
  EXPECT_GE(fed.left, bad.size());

  SliceQueue q;
  q.push(Slice::copy_of(stream));
  FrameDecoder dec;
  ASSERT_TRUE(dec.next(q).ok());
  ASSERT_TRUE(dec.next(q).ok());
  auto r = dec.next(q);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::bad_field);
  Bytes rest(bad);
  rest.insert(rest.end(), after.begin(), after.end());
  EXPECT_EQ(q.flatten(0, q.size()), rest);
}

TEST(FrameBadInput, NeedMoreConsumesNothing) {
  Bytes b = enc(sample_welcome(2));
  for (size_t n = 0; n < b.size(); ++n) {
    SliceQueue q;
    q.push(Slice::copy_of(std::span<const uint8_t>(b).first(n)));
    FrameDecoder dec;
    auto r = dec.next(q);
    ASSERT_TRUE(r.ok()) << n << " " << to_string(r.error());
    EXPECT_FALSE(r.value().has_value());
    EXPECT_EQ(q.size(), n);
  }
}

}  // namespace
}  // namespace mtcp::wire
