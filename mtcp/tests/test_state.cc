// Unit tests for the connection-state codec (wire/state.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "common/buffer.h"
#include "common/errors.h"
#include "common/limits.h"
#include "wire/state.h"

namespace mtcp::wire {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// Byte offsets in an encoded state (state.cc): version 0, flags 1, reserved 2, conn_id 4,
// epoch 12, migrations 20, issuer 24, snap_id 28, snap_in_seq 36, snap_out_seq 44, snapshot
// length 52, snapshot 56; then out_log_start u64, out_log length u32, out_log, in_log length
// u32, in_log; version 2: tail_start u64, tail length u32, out_tail, and with flag 0x10
// digest_end u64 and digest [16].
constexpr size_t kFlagsAt = 1;
constexpr size_t kReservedAt = 2;
constexpr size_t kSnapLenAt = 52;
constexpr size_t kSnapAt = 56;

Bytes pattern_bytes(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 31 * i + (i >> 8));
  return b;
}

void put_u32(Bytes& b, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

// A valid state with a snapshot of `snap_bytes` bytes; every field non-zero.
ConnState sample_state(size_t snap_bytes = 3) {
  ConnState s;
  s.conn_id = 0x0102030405060708ULL;
  s.epoch = 5;
  s.migrations = 2;
  s.issuer_id = 3;
  s.snap_id = 4;
  s.snap_in_seq = 1000;
  s.snap_out_seq = 5000;
  s.snapshot = pattern_bytes(snap_bytes, 1);
  s.out_log = pattern_bytes(10, 2);
  s.out_log_start = s.snap_out_seq - s.out_log.size();
  s.in_log = pattern_bytes(20, 3);
  s.client_fin = true;
  return s;
}

void expect_same(const ConnState& a, const ConnState& b) {
  EXPECT_EQ(a.conn_id, b.conn_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.migrations, b.migrations);
  EXPECT_EQ(a.issuer_id, b.issuer_id);
  EXPECT_EQ(a.snap_id, b.snap_id);
  EXPECT_EQ(a.snap_in_seq, b.snap_in_seq);
  EXPECT_EQ(a.snap_out_seq, b.snap_out_seq);
  EXPECT_EQ(a.snapshot_elided, b.snapshot_elided);
  EXPECT_TRUE(a.snapshot == b.snapshot) << "snapshot differs (" << a.snapshot.size() << " vs "
                                        << b.snapshot.size() << " bytes)";
  EXPECT_EQ(a.out_log_start, b.out_log_start);
  EXPECT_TRUE(a.out_log == b.out_log);
  EXPECT_TRUE(a.in_log == b.in_log);
  EXPECT_EQ(a.client_fin, b.client_fin);
  EXPECT_EQ(a.out_log_tail, b.out_log_tail);
  EXPECT_EQ(a.in_log_kept, b.in_log_kept);
  EXPECT_EQ(a.in_end(), b.in_end());
  EXPECT_EQ(std::max(a.tail_start, a.snap_out_seq), b.tail_start);
  EXPECT_TRUE(a.out_tail == b.out_tail);
  EXPECT_EQ(a.out_digest, b.out_digest);
  if (a.out_digest) {
    EXPECT_EQ(a.digest_end, b.digest_end);
    EXPECT_TRUE(a.digest == b.digest);
  }
}

Bytes encode_ok(const ConnState& s, size_t cap = kSnapshotBytesMax) {
  auto r = encode_state(s, cap);
  EXPECT_TRUE(r.ok()) << to_string(r.error());
  return r.ok() ? std::move(r.value()) : Bytes{};
}

void round_trip(const ConnState& s, size_t cap) {
  Bytes b = encode_ok(s, cap);
  auto r = decode_state(b, cap);
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  expect_same(s, r.value());
  EXPECT_TRUE(encode_ok(r.value(), cap) == b);
}

Error decode_error(std::span<const uint8_t> bytes, size_t cap = kSnapshotBytesMax) {
  auto r = decode_state(bytes, cap);
  if (r.ok()) {
    ADD_FAILURE() << "decoded";
    return Error::ok;
  }
  return r.error();
}

// Encodes a state the decoder must refuse (the encoder checks only sizes).
Error refused(const ConnState& s) { return decode_error(encode_ok(s)); }

// ---------------------------------------------------------------- round trips

constexpr size_t kSmallCap = 64u << 10;

TEST(StateRoundTrip, SnapshotSizesUpToASmallCap) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, kSmallCap}) {
    SCOPED_TRACE(n);
    round_trip(sample_state(n), kSmallCap);
  }
}

TEST(StateRoundTrip, SnapshotOneOverASmallCap) {
  ConnState s = sample_state(kSmallCap + 1);
  auto e = encode_state(s, kSmallCap);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error(), Error::snapshot_too_large);
  // Bytes that a peer with a larger cap could send: refused by this decoder.
  Bytes b = encode_ok(s, kSmallCap + 1);
  EXPECT_EQ(decode_error(b, kSmallCap), Error::snapshot_too_large);
  // The length alone decides: the snapshot bytes need not be there.
  Bytes head(b.begin(), b.begin() + kSnapAt);
  EXPECT_EQ(decode_error(head, kSmallCap), Error::snapshot_too_large);
}

TEST(StateRoundTrip, SnapshotAtTheHardCap) {
  round_trip(sample_state(kSnapshotBytesMax), kSnapshotBytesMax);
}

TEST(StateRoundTrip, SnapshotOneOverTheHardCap) {
  ConnState s = sample_state(kSnapshotBytesMax + 1);
  for (size_t cap : {kSnapshotBytesMax, kSnapshotBytesMax + 1, size_t{64} << 20}) {
    auto e = encode_state(s, cap);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error(), Error::snapshot_too_large);
  }
  // Craft it: the encoding of a state at the cap with one snapshot byte more.
  Bytes b = encode_ok(sample_state(kSnapshotBytesMax));
  put_u32(b, kSnapLenAt, static_cast<uint32_t>(kSnapshotBytesMax + 1));
  b.insert(b.begin() + static_cast<std::ptrdiff_t>(kSnapAt), 0);
  EXPECT_EQ(decode_error(b), Error::snapshot_too_large);
  // Even when the caller's cap is larger, the hard cap holds.
  EXPECT_EQ(decode_error(b, size_t{64} << 20), Error::snapshot_too_large);
  // A 4 GiB length in a short buffer.
  Bytes head(b.begin(), b.begin() + kSnapAt);
  put_u32(head, kSnapLenAt, 0xFFFFFFFFU);
  EXPECT_EQ(decode_error(head, size_t{64} << 20), Error::snapshot_too_large);
}

TEST(StateRoundTrip, LogsAtTheirCap) {
  ConnState s = sample_state(0);
  s.out_log = Bytes(kStateLogBytesMax, 0xAB);
  s.snap_out_seq = kStateLogBytesMax + 5000;
  s.out_log_start = 5000;
  s.in_log = Bytes(kStateLogBytesMax, 0xCD);
  round_trip(s, kSnapshotBytesMax);
}

TEST(StateRoundTrip, LogsOverTheirCap) {
  ConnState s = sample_state(0);
  s.out_log = Bytes(kStateLogBytesMax + 1, 0xAB);
  s.out_log_start = s.snap_out_seq - s.out_log.size();
  auto e = encode_state(s);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error(), Error::state_too_large);
  s = sample_state(0);
  s.in_log = Bytes(kStateLogBytesMax + 1, 0xCD);
  e = encode_state(s);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error(), Error::state_too_large);

  // Crafted lengths, checked before the bytes are read.
  s = sample_state(0);
  s.out_log.clear();
  s.in_log.clear();
  s.out_log_start = s.snap_out_seq;
  Bytes b = encode_ok(s);  // ... out_log_start(8) out_len(4) in_len(4) tail_start(8) tail_len(4)
  const size_t out_len_at = b.size() - 12 - 8;
  const size_t in_len_at = b.size() - 12 - 4;
  Bytes out_big = b;
  put_u32(out_big, out_len_at, static_cast<uint32_t>(kStateLogBytesMax + 1));
  EXPECT_EQ(decode_error(out_big), Error::state_too_large);
  put_u32(out_big, out_len_at, 0xFFFFFFFFU);
  EXPECT_EQ(decode_error(out_big), Error::state_too_large);
  Bytes in_big = b;
  put_u32(in_big, in_len_at, static_cast<uint32_t>(kStateLogBytesMax + 1));
  EXPECT_EQ(decode_error(in_big), Error::state_too_large);
  put_u32(in_big, in_len_at, 0xFFFFFFFFU);
  EXPECT_EQ(decode_error(in_big), Error::state_too_large);
}

TEST(StateRoundTrip, FreshConnectionWithoutSnapshot) {
  ConnState s;
  s.conn_id = 9;
  s.epoch = 1;
  s.in_log = pattern_bytes(5, 4);
  round_trip(s, kSnapshotBytesMax);
  EXPECT_EQ(s.in_end(), 5u);
}

TEST(StateRoundTrip, ElidedSnapshotAndFlags) {
  for (bool elided : {false, true}) {
    for (bool fin : {false, true}) {
      ConnState s = sample_state(0);
      s.snapshot_elided = elided;
      s.client_fin = fin;
      round_trip(s, kSnapshotBytesMax);
      Bytes b = encode_ok(s);
      EXPECT_EQ(b[kFlagsAt], (elided ? 1 : 0) | (fin ? 2 : 0));
    }
  }
}

TEST(StateRoundTrip, OutputLogTailFlag) {
  ConnState s = sample_state(1);
  s.out_log_tail = true;
  Bytes b = encode_ok(s);
  EXPECT_EQ(b[kFlagsAt] & 4, 4);
  auto got = decode_state(b);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->out_log_tail);
  EXPECT_EQ(got->out_log_start, s.out_log_start);
  EXPECT_EQ(got->out_log, s.out_log);
  s.out_log_tail = false;
  EXPECT_FALSE(decode_state(encode_ok(s))->out_log_tail);
}

TEST(StateRoundTrip, InputLogKeptFlag) {
  ConnState s = sample_state(1);
  s.in_log.clear();
  s.in_log_kept = true;
  Bytes b = encode_ok(s);
  EXPECT_EQ(b[kFlagsAt] & 8, 8);
  auto got = decode_state(b);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->in_log_kept);
  EXPECT_TRUE(got->in_log.empty());
}

TEST(StateRoundTrip, ExtremeSequenceNumbers) {
  ConnState s = sample_state(1);
  s.snap_out_seq = kU64Max;
  s.out_log_start = kU64Max - s.out_log.size();
  s.snap_in_seq = kU64Max - s.in_log.size();  // in_end() == 2^64 - 1
  round_trip(s, kSnapshotBytesMax);
}

// ---------------------------------------------------------------- validation

// Decoded from a shared block, a large snapshot that is most of the encoding is left in place
// (a view at its offset, no copy); a small one, or one that is less than half of the encoding,
// is copied as before. Either way the state is the same, and it encodes to the same bytes.
TEST(StateShared, LargeSnapshotIsAViewOfTheEncoding) {
  for (size_t snap : {size_t{3}, kSnapshotShareBytes - 1, kSnapshotShareBytes, size_t{1} << 20}) {
    SCOPED_TRACE(snap);
    ConnState s = sample_state(snap);
    Bytes enc = encode_ok(s);
    BlockPtr block = make_block(enc);
    auto d = decode_state(block);
    ASSERT_TRUE(d.ok());
    bool shared = snap >= kSnapshotShareBytes;
    EXPECT_EQ(!d->snapshot_shared.empty(), shared);
    if (shared) {
      EXPECT_TRUE(d->snapshot.empty());
      EXPECT_EQ(d->snapshot_shared.block, block);
      EXPECT_EQ(d->snapshot_shared.off, kSnapAt);
    }
    EXPECT_TRUE(std::ranges::equal(d->snapshot_bytes(), s.snapshot));
    ConnState flat = d.value();
    flat.snapshot.assign(d->snapshot_bytes().begin(), d->snapshot_bytes().end());
    flat.snapshot_shared = {};
    expect_same(s, flat);
    EXPECT_TRUE(encode_ok(d.value()) == enc) << "re-encoded from the view";
  }
}

TEST(StateShared, SnapshotUnderHalfTheEncodingIsCopied) {
  ConnState s = sample_state(kSnapshotShareBytes);
  s.in_log = pattern_bytes(kSnapshotShareBytes + 100, 9);  // the logs outweigh the snapshot
  auto d = decode_state(make_block(encode_ok(s)));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->snapshot_shared.empty());
  EXPECT_TRUE(d->snapshot == s.snapshot);
}

TEST(StateShared, RefusedLikeTheSpanDecoder) {
  Bytes enc = encode_ok(sample_state(kSnapshotShareBytes));
  for (size_t cut : {size_t{0}, size_t{10}, kSnapAt + 5, enc.size() - 1}) {
    Bytes part(enc.begin(), enc.begin() + static_cast<std::ptrdiff_t>(cut));
    auto a = decode_state(part);
    auto b = decode_state(make_block(part));
    ASSERT_FALSE(a.ok());
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(a.error(), b.error());
  }
  auto small = decode_state(make_block(encode_ok(sample_state(kSnapshotShareBytes))), kSnapshotShareBytes - 1);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.error(), Error::snapshot_too_large);
}

TEST(StateValidation, OutputLogMustEndAtTheSnapshot) {
  ConnState s = sample_state();
  s.out_log_start += 1;
  EXPECT_EQ(refused(s), Error::bad_field);
  s = sample_state();
  s.out_log_start -= 1;
  EXPECT_EQ(refused(s), Error::bad_field);
  s = sample_state();
  s.snap_out_seq += 1;
  EXPECT_EQ(refused(s), Error::bad_field);
}

TEST(StateValidation, OutputLogMustNotWrap) {
  ConnState s = sample_state();
  s.out_log_start = kU64Max - 4;  // + 10 bytes wraps to 5
  s.snap_out_seq = 5;
  EXPECT_EQ(refused(s), Error::bad_field);
}

TEST(StateValidation, InputLogMustNotWrap) {
  ConnState s = sample_state();
  s.snap_in_seq = kU64Max - 5;  // + 20 bytes wraps
  EXPECT_EQ(refused(s), Error::bad_field);
}

TEST(StateValidation, NoSnapshotMeansZeroSequencesAndNoBytes) {
  auto fresh = [] {
    ConnState s;
    s.conn_id = 1;
    s.epoch = 1;
    return s;
  };
  ConnState s = fresh();
  s.snap_in_seq = 1;
  EXPECT_EQ(refused(s), Error::bad_field);
  s = fresh();
  s.snap_out_seq = 1;
  s.out_log_start = 1;
  EXPECT_EQ(refused(s), Error::bad_field);
  s = fresh();
  s.snap_out_seq = 3;
  s.out_log = pattern_bytes(3, 1);
  EXPECT_EQ(refused(s), Error::bad_field);
  s = fresh();
  s.snapshot = pattern_bytes(1, 1);
  EXPECT_EQ(refused(s), Error::bad_field);
  round_trip(fresh(), kSnapshotBytesMax);
}

TEST(StateValidation, ElidedSnapshotHasNoBytes) {
  ConnState s = sample_state(1);
  s.snapshot_elided = true;
  EXPECT_EQ(refused(s), Error::bad_field);
}

TEST(StateValidation, ConnIdAndEpochAreNonZero) {
  ConnState s = sample_state();
  s.conn_id = 0;
  EXPECT_EQ(refused(s), Error::bad_field);
  s = sample_state();
  s.epoch = 0;
  EXPECT_EQ(refused(s), Error::bad_field);
}

TEST(StateValidation, UnknownFlagsAndReserved) {
  Bytes good = encode_ok(sample_state());
  for (uint8_t flag : {uint8_t{0x20}, uint8_t{0x40}, uint8_t{0x80}, uint8_t{0xFF}}) {
    Bytes b = good;
    b[kFlagsAt] = static_cast<uint8_t>(b[kFlagsAt] | flag);
    EXPECT_EQ(decode_error(b), Error::bad_field) << int{flag};
  }
  for (size_t at : {kReservedAt, kReservedAt + 1}) {
    Bytes b = good;
    b[at] = 1;
    EXPECT_EQ(decode_error(b), Error::bad_field);
  }
}

TEST(StateValidation, Version) {
  Bytes good = encode_ok(sample_state());
  EXPECT_EQ(good[0], 2);
  for (uint8_t v : {uint8_t{0}, uint8_t{3}, uint8_t{0xFF}}) {
    Bytes b = good;
    b[0] = v;
    EXPECT_EQ(decode_error(b), Error::unsupported_version) << int{v};
  }
}

// ---- version 2: post-snapshot output tail and output digest ---------------------------------

ConnState digest_state() {
  ConnState s = sample_state();
  s.out_log.clear();
  s.out_log_start = s.snap_out_seq;
  s.out_digest = true;
  s.digest_end = s.snap_out_seq + 300;  // [5000, 5300) acknowledged: only its digest travels
  for (size_t i = 0; i < s.digest.size(); ++i) s.digest[i] = static_cast<uint8_t>(0xA0 + i);
  s.tail_start = s.digest_end;
  s.out_tail = pattern_bytes(40, 9);  // [5300, 5340) still unacknowledged
  return s;
}

TEST(StateDigest, RoundTripWithDigestAndTail) {
  round_trip(digest_state(), kSnapshotBytesMax);
  ConnState s = digest_state();
  s.out_digest = false;  // tail only (the owner did not digest)
  round_trip(s, kSnapshotBytesMax);
  s = digest_state();
  s.out_tail.clear();  // digest only
  round_trip(s, kSnapshotBytesMax);
  // A gap between the digest and the tail (bytes nothing covers) is legal.
  s = digest_state();
  s.digest_end = s.snap_out_seq + 100;
  round_trip(s, kSnapshotBytesMax);
}

TEST(StateDigest, EncodedLayout) {
  ConnState s = digest_state();
  Bytes b = encode_ok(s);
  EXPECT_EQ(b[kFlagsAt] & 0x10, 0x10);
  ASSERT_GE(b.size(), 24u + 40u + 12u);
  // The digest is the last 16 bytes, digest_end the 8 before.
  EXPECT_TRUE(std::equal(s.digest.begin(), s.digest.end(), b.end() - 16));
  uint64_t end = 0;
  for (size_t i = 0; i < 8; ++i) end = (end << 8) | b[b.size() - 24 + i];
  EXPECT_EQ(end, s.digest_end);
  s.out_digest = false;
  EXPECT_EQ(encode_ok(s).size(), b.size() - 24);
}

TEST(StateDigest, TruncatedDigestOrTailIsRefused) {
  Bytes b = encode_ok(digest_state());
  // Any cut inside the trailer (tail_start, tail length, tail, digest_end, digest).
  for (size_t cut = 1; cut <= 12 + 40 + 24; ++cut) {
    EXPECT_EQ(decode_error(std::span<const uint8_t>(b).first(b.size() - cut)), Error::truncated) << cut;
  }
  // The digest flag set on a state without the digest fields.
  Bytes no_digest = encode_ok([] {
    ConnState s = digest_state();
    s.out_digest = false;
    return s;
  }());
  no_digest[kFlagsAt] |= 0x10;
  EXPECT_EQ(decode_error(no_digest), Error::truncated);
  // A tail length beyond the cap.
  ConnState s = digest_state();
  s.out_tail.clear();
  s.out_digest = false;
  Bytes big = encode_ok(s);
  put_u32(big, big.size() - 4, static_cast<uint32_t>(kStateLogBytesMax + 1));
  EXPECT_EQ(decode_error(big), Error::state_too_large);
  s.out_tail = Bytes(kStateLogBytesMax + 1, 1);
  auto e = encode_state(s);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error(), Error::state_too_large);
}

TEST(StateDigest, CorruptedDigestFieldsAreRefused) {
  // digest_end below the snapshot's output position.
  ConnState s = digest_state();
  Bytes b = encode_ok(s);
  Bytes low = b;
  for (size_t i = 0; i < 8; ++i) low[b.size() - 24 + i] = 0;
  EXPECT_EQ(decode_error(low), Error::bad_field);
  // digest_end beyond the tail's start (the digest and the tail would overlap).
  s.digest_end = s.tail_start + 1;
  EXPECT_EQ(refused(s), Error::bad_field);
  // tail_start below the snapshot's output position (written as such by hand).
  s = digest_state();
  s.out_digest = false;
  s.out_tail.clear();
  Bytes t = encode_ok(s);
  for (size_t i = 0; i < 8; ++i) t[t.size() - 12 + i] = 0;
  EXPECT_EQ(decode_error(t), Error::bad_field);
  // A tail that wraps the 64-bit space.
  s = digest_state();
  s.out_digest = false;
  Bytes w = encode_ok(s);
  for (size_t i = 0; i < 8; ++i) w[w.size() - 12 - 40 + i] = 0xFF;
  EXPECT_EQ(decode_error(w), Error::bad_field);
  // Trailing bytes after the digest.
  Bytes tr = encode_ok(digest_state());
  tr.push_back(0);
  EXPECT_EQ(decode_error(tr), Error::bad_length);
}

TEST(StateDigest, Version1StillDecodesWithoutTailOrDigest) {
  ConnState s = sample_state();
  Bytes b = encode_ok(s);
  Bytes v1(b.begin(), b.end() - 12);  // a version-1 state ends after in_log
  v1[0] = 1;
  auto r = decode_state(v1);
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  expect_same(s, r.value());
  EXPECT_FALSE(r->out_digest);
  EXPECT_EQ(r->tail_start, s.snap_out_seq);
  EXPECT_EQ(r->digest_end, s.snap_out_seq);
  // The digest flag does not exist in version 1.
  v1[kFlagsAt] |= 0x10;
  EXPECT_EQ(decode_error(v1), Error::bad_field);
}

TEST(StateValidation, TruncatedAtEveryOffset) {
  ConnState s = sample_state(5);
  s.snapshot_elided = false;
  Bytes b = encode_ok(s);
  for (size_t n = 0; n < b.size(); ++n) {
    EXPECT_EQ(decode_error(std::span<const uint8_t>(b).first(n)), Error::truncated) << n;
  }
}

TEST(StateValidation, TrailingBytes) {
  Bytes b = encode_ok(sample_state());
  b.push_back(0);
  EXPECT_EQ(decode_error(b), Error::bad_length);
}

TEST(StateValidation, EveryByteChangeDecodesOrFailsCleanly) {
  // Not a property of the format (there is no checksum), but no change may crash, and what
  // decodes must re-encode to the same bytes.
  const Bytes good = encode_ok(sample_state(4));
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t x : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
      Bytes b = good;
      b[i] = static_cast<uint8_t>(b[i] ^ x);
      auto r = decode_state(b);
      if (r.ok()) {
        EXPECT_TRUE(encode_ok(r.value()) == b) << i;
      }
    }
  }
}

}  // namespace
}  // namespace mtcp::wire
