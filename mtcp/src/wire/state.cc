#include "wire/state.h"

#include <algorithm>

#include "common/assert.h"
#include "wire/bytes.h"

namespace mtcp::wire {
namespace {
// Version 2 appends the post-snapshot output tail and the output digest (docs/PROTOCOL.md §7).
// Version 1 states still decode (no tail, no digest: nothing of the replay can be checked).
constexpr uint8_t kStateVersion = 2;
constexpr uint8_t kStateVersion1 = 1;
constexpr uint8_t kFlagElided = 0x01;
constexpr uint8_t kFlagClientFin = 0x02;
constexpr uint8_t kFlagOutLogTail = 0x04;
constexpr uint8_t kFlagInLogKept = 0x08;
constexpr uint8_t kFlagOutDigest = 0x10;  // version 2 only
constexpr size_t kStateFixedBytes = 84;   // every field but the byte strings and the digest
constexpr size_t kDigestFieldBytes = 24;  // digest_end u64 + digest [16]
}  // namespace

namespace {

size_t total(const std::vector<std::span<const uint8_t>>& v) {
  size_t n = 0;
  for (auto p : v) n += p.size();
  return n;
}

void put(Writer& w, const std::vector<std::span<const uint8_t>>& v) {
  for (auto p : v) w.bytes(p);
}

Result<ConnState> decode_impl(std::span<const uint8_t> bytes, size_t snapshot_bytes_max, const BlockPtr* block);

// The fields of s, the byte fields from `pieces` (s's own are not read). With `after`, the
// snapshot's bytes are left out and what follows them goes there.
Result<Bytes> encode_pieces(const ConnState& s, const StatePieces& pieces, size_t snapshot_bytes_max, Bytes* after = nullptr) {
  const auto snapshot = pieces.snapshot;
  const size_t out_log = total(pieces.out_log), in_log = total(pieces.in_log), out_tail = total(pieces.out_tail);
  if (snapshot.size() > snapshot_bytes_max || snapshot.size() > kSnapshotBytesMax)
    return Error::snapshot_too_large;
  if (out_log > kStateLogBytesMax || in_log > kStateLogBytesMax || out_tail > kStateLogBytesMax)
    return Error::state_too_large;
  Bytes out;
  // Exactly: a short reserve made the last append reallocate and copy the whole state (a
  // 16 MiB state took 14 ms to encode instead of 2 ms).
  const size_t rest = out_log + in_log + out_tail + (s.out_digest ? kDigestFieldBytes : 0);
  out.reserve(kStateFixedBytes + (after ? 0 : snapshot.size() + rest));
  Writer w0(out);
  Writer* wp = &w0;
  wp->u8(kStateVersion);
  wp->u8(static_cast<uint8_t>((s.snapshot_elided ? kFlagElided : 0) | (s.client_fin ? kFlagClientFin : 0) |
                             (s.out_log_tail ? kFlagOutLogTail : 0) | (s.in_log_kept ? kFlagInLogKept : 0) |
                             (s.out_digest ? kFlagOutDigest : 0)));
  wp->u16(0);
  wp->u64(s.conn_id);
  wp->u64(s.epoch);
  wp->u32(s.migrations);
  wp->u32(s.issuer_id);
  wp->u64(s.snap_id);
  wp->u64(s.snap_in_seq);
  wp->u64(s.snap_out_seq);
  wp->u32(static_cast<uint32_t>(snapshot.size()));
  Writer wa(after ? *after : out);
  if (after) {
    after->reserve(kStateFixedBytes + rest);
    wp = &wa;
  } else {
    wp->bytes(snapshot);
  }
  wp->u64(s.out_log_start);
  wp->u32(static_cast<uint32_t>(out_log));
  put(*wp, pieces.out_log);
  wp->u32(static_cast<uint32_t>(in_log));
  put(*wp, pieces.in_log);
  wp->u64(std::max(s.tail_start, s.snap_out_seq));
  wp->u32(static_cast<uint32_t>(out_tail));
  put(*wp, pieces.out_tail);
  if (s.out_digest) {
    wp->u64(std::max(s.digest_end, s.snap_out_seq));
    wp->bytes(s.digest);
  }
  return out;
}

}  // namespace

Result<Bytes> encode_state(const ConnState& s, size_t snapshot_bytes_max) {
  return encode_state(s, s.snapshot_bytes(), snapshot_bytes_max);
}

Result<Bytes> encode_state(const ConnState& s, std::span<const uint8_t> snapshot, size_t snapshot_bytes_max) {
  MTCP_ASSERT(s.snapshot_bytes().empty() || snapshot.data() == s.snapshot_bytes().data(), "encode_state: two snapshots given");
  StatePieces p;
  p.snapshot = snapshot;
  if (!s.out_log.empty()) p.out_log.emplace_back(s.out_log);
  if (!s.in_log.empty()) p.in_log.emplace_back(s.in_log);
  if (!s.out_tail.empty()) p.out_tail.emplace_back(s.out_tail);
  return encode_pieces(s, p, snapshot_bytes_max);
}

Result<Bytes> encode_state(const ConnState& s, const StatePieces& pieces, size_t snapshot_bytes_max) {
  MTCP_ASSERT(s.snapshot_bytes().empty() && s.out_log.empty() && s.in_log.empty() && s.out_tail.empty(),
              "encode_state: bytes given both in the state and as pieces");
  return encode_pieces(s, pieces, snapshot_bytes_max);
}

Result<StateAround> encode_state_around(const ConnState& s, const StatePieces& pieces, size_t snapshot_bytes_max) {
  MTCP_ASSERT(s.snapshot_bytes().empty() && s.out_log.empty() && s.in_log.empty() && s.out_tail.empty(),
              "encode_state: bytes given both in the state and as pieces");
  StateAround r;
  auto before = encode_pieces(s, pieces, snapshot_bytes_max, &r.after);
  if (!before) return before.error();
  r.before = std::move(before.value());
  return r;
}

Result<ConnState> decode_state(std::span<const uint8_t> bytes, size_t snapshot_bytes_max) {
  return decode_impl(bytes, snapshot_bytes_max, nullptr);
}

Result<ConnState> decode_state(const BlockPtr& bytes, size_t snapshot_bytes_max) {
  MTCP_ASSERT(bytes != nullptr, "decode_state: no block");
  return decode_impl(*bytes, snapshot_bytes_max, &bytes);
}

namespace {

Result<ConnState> decode_impl(std::span<const uint8_t> bytes, size_t snapshot_bytes_max, const BlockPtr* block) {
  Reader r(bytes);
  ConnState s;
  uint8_t version = r.u8();
  uint8_t flags = r.u8();
  uint16_t reserved = r.u16();
  if (!r.ok()) return Error::truncated;
  if (version != kStateVersion && version != kStateVersion1) return Error::unsupported_version;
  uint8_t known = kFlagElided | kFlagClientFin | kFlagOutLogTail | kFlagInLogKept;
  if (version == kStateVersion) known |= kFlagOutDigest;
  if ((flags & ~known) != 0 || reserved != 0) return Error::bad_field;
  s.out_digest = (flags & kFlagOutDigest) != 0;
  s.in_log_kept = (flags & kFlagInLogKept) != 0;
  s.snapshot_elided = (flags & kFlagElided) != 0;
  s.out_log_tail = (flags & kFlagOutLogTail) != 0;
  s.client_fin = (flags & kFlagClientFin) != 0;
  s.conn_id = r.u64();
  s.epoch = r.u64();
  s.migrations = r.u32();
  s.issuer_id = r.u32();
  s.snap_id = r.u64();
  s.snap_in_seq = r.u64();
  s.snap_out_seq = r.u64();
  uint32_t snap_len = r.u32();
  if (!r.ok()) return Error::truncated;
  if (snap_len > snapshot_bytes_max || snap_len > kSnapshotBytesMax) return Error::snapshot_too_large;
  auto snap = r.bytes(snap_len);
  s.out_log_start = r.u64();
  uint32_t out_len = r.u32();
  if (!r.ok()) return Error::truncated;
  if (out_len > kStateLogBytesMax) return Error::state_too_large;
  auto out_log = r.bytes(out_len);
  uint32_t in_len = r.u32();
  if (!r.ok()) return Error::truncated;
  if (in_len > kStateLogBytesMax) return Error::state_too_large;
  auto in_log = r.bytes(in_len);
  if (!r.ok()) return Error::truncated;
  std::span<const uint8_t> tail;
  if (version == kStateVersion) {
    s.tail_start = r.u64();
    uint32_t tail_len = r.u32();
    if (!r.ok()) return Error::truncated;
    if (tail_len > kStateLogBytesMax) return Error::state_too_large;
    tail = r.bytes(tail_len);
    if (s.out_digest) {
      s.digest_end = r.u64();
      r.array(s.digest);
    }
    if (!r.ok()) return Error::truncated;
  } else {
    s.tail_start = s.snap_out_seq;
  }
  if (!s.out_digest) s.digest_end = s.snap_out_seq;
  if (!r.done()) return Error::bad_length;
  // Sequence relations (docs/PROTOCOL.md §7): the output log ends at the snapshot's output
  // position, and nothing wraps the 64-bit space.
  if (s.conn_id == 0 || s.epoch == 0) return Error::bad_field;
  if (s.out_log_start + out_len != s.snap_out_seq || s.out_log_start > s.snap_out_seq)
    return Error::bad_field;
  if (s.snap_in_seq + in_len < s.snap_in_seq) return Error::bad_field;
  if (s.snap_id == 0 && (s.snap_in_seq != 0 || s.snap_out_seq != 0 || snap_len != 0))
    return Error::bad_field;
  if (s.snapshot_elided && (snap_len != 0 || s.snap_id == 0)) return Error::bad_field;
  // The digest covers [snap_out_seq, digest_end), the tail follows at or after it.
  if (s.tail_start < s.snap_out_seq || s.tail_start + tail.size() < s.tail_start) return Error::bad_field;
  if (s.digest_end < s.snap_out_seq || s.digest_end > s.tail_start) return Error::bad_field;
  if (block && snap.size() >= kSnapshotShareBytes && 2 * snap.size() >= bytes.size()) {
    s.snapshot_shared = Slice(*block, static_cast<size_t>(snap.data() - bytes.data()), snap.size());
  } else {
    s.snapshot.assign(snap.begin(), snap.end());
  }
  s.out_log.assign(out_log.begin(), out_log.end());
  s.in_log.assign(in_log.begin(), in_log.end());
  s.out_tail.assign(tail.begin(), tail.end());
  return s;
}

}  // namespace

}  // namespace mtcp::wire
