#include "wire/control.h"

#include "wire/bytes.h"

#include <algorithm>
#include <cstring>

#include "common/assert.h"

namespace mtcp::wire {
namespace {

void put_pos(Writer& w, const ReplicaPos& p) {
  w.u64(p.epoch);
  w.u64(p.snap_id);
  w.u64(p.in_end);
}
ReplicaPos get_pos(Reader& r) {
  ReplicaPos p;
  p.epoch = r.u64();
  p.snap_id = r.u64();
  p.in_end = r.u64();
  return p;
}
// A byte string is always a body's last field: its length goes with the fields, its bytes are
// returned to be appended (or chunked) by the caller without a copy here.
std::span<const uint8_t> put_blob(Writer& w, const Bytes& b) {
  w.u32(static_cast<uint32_t>(b.size()));
  return b;
}
// `tail`: the byte string already separated from the body (a chunked message's reader puts it
// in place as it arrives); it is taken if its length is the one announced.
bool get_blob(Reader& r, Bytes& out, Bytes* tail) {
  uint32_t n = r.u32();
  if (tail) {
    if (!r.ok() || r.remaining() != 0 || n != tail->size()) return false;
    out = std::move(*tail);
    return true;
  }
  if (!r.ok() || n > r.remaining()) return false;
  auto s = r.bytes(n);
  out.assign(s.begin(), s.end());
  return r.ok();
}

// Offset of the byte string in a body of this type (after its fields and its u32 length), or
// 0 for types without one: only these may be chunked.
size_t blob_offset(uint8_t type) {
  switch (static_cast<ControlType>(type)) {
    case ControlType::grant: return 8 + 8 + 4 + 1 + 24 + 4;
    case ControlType::repl_state: return 8 + 8 + 4;
    case ControlType::repl_log: return 5 * 8 + 4;
    default: return 0;
  }
}

// Writes a body's fields; returns its byte string (to follow them), empty if it has none.
struct BodyEncoder {
  Writer& w;
  std::span<const uint8_t> operator()(const Claim& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u32(m.request_id);
    w.u8(static_cast<uint8_t>(m.mode));
    w.u8(m.adopt_only ? 1 : 0);
    w.u32(m.counter);
    put_pos(w, m.have);
    return {};
  }
  std::span<const uint8_t> operator()(const Grant& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u32(m.request_id);
    w.u8(m.from_owner ? 1 : 0);
    put_pos(w, m.pos);
    return put_blob(w, m.state);
  }
  std::span<const uint8_t> operator()(const Deny& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u32(m.request_id);
    w.u16(static_cast<uint16_t>(m.reason));
    w.u32(m.owner_id);
    w.u64(m.owner_epoch);
    return {};
  }
  std::span<const uint8_t> operator()(const ReplState& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    return put_blob(w, m.state);
  }
  std::span<const uint8_t> operator()(const ReplLog& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u64(m.snap_id);
    w.u64(m.start);
    w.u64(m.out_acked);
    return put_blob(w, m.bytes);
  }
  std::span<const uint8_t> operator()(const ReplAck& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    put_pos(w, m.pos);
    w.u8(m.need_state ? 1 : 0);
    return {};
  }
  std::span<const uint8_t> operator()(const Release& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    return {};
  }
  std::span<const uint8_t> operator()(const Abandon& m) {
    w.u64(m.conn_id);
    w.u32(m.request_id);
    w.u32(m.counter);
    return {};
  }
  std::span<const uint8_t> operator()(const PeerHello& m) {
    w.bytes(m.nonce);
    return {};
  }
};

Result<ControlBody> parse_body(ControlType t, Reader& r, Bytes* tail) {
  switch (t) {
    case ControlType::claim: {
      Claim m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      m.request_id = r.u32();
      uint8_t mode = r.u8();
      uint8_t flags = r.u8();
      m.counter = r.u32();
      m.have = get_pos(r);
      if (!r.done()) return Error::bad_length;
      if (mode > 1 || flags > 1) return Error::bad_field;
      m.mode = static_cast<TransferMode>(mode);
      m.adopt_only = flags == 1;
      return ControlBody{m};
    }
    case ControlType::grant: {
      Grant m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      m.request_id = r.u32();
      uint8_t f = r.u8();
      m.pos = get_pos(r);
      if (!get_blob(r, m.state, tail) || !r.done()) return Error::bad_length;
      if (f > 1) return Error::bad_field;
      m.from_owner = f == 1;
      return ControlBody{std::move(m)};
    }
    case ControlType::deny: {
      Deny m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      m.request_id = r.u32();
      uint16_t code = r.u16();
      m.owner_id = r.u32();
      m.owner_epoch = r.u64();
      if (!r.done()) return Error::bad_length;
      if (code == 0 || to_string(static_cast<Error>(code)) == "unknown error") return Error::bad_field;
      m.reason = static_cast<Error>(code);
      return ControlBody{m};
    }
    case ControlType::repl_state: {
      ReplState m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      if (!get_blob(r, m.state, tail) || !r.done()) return Error::bad_length;
      return ControlBody{std::move(m)};
    }
    case ControlType::repl_log: {
      ReplLog m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      m.snap_id = r.u64();
      m.start = r.u64();
      m.out_acked = r.u64();
      if (!get_blob(r, m.bytes, tail) || !r.done()) return Error::bad_length;
      return ControlBody{std::move(m)};
    }
    case ControlType::repl_ack: {
      ReplAck m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      m.pos = get_pos(r);
      uint8_t f = r.u8();
      if (!r.done()) return Error::bad_length;
      if (f > 1) return Error::bad_field;
      m.need_state = f == 1;
      return ControlBody{m};
    }
    case ControlType::release: {
      Release m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      if (!r.done()) return Error::bad_length;
      return ControlBody{m};
    }
    case ControlType::abandon: {
      Abandon m;
      m.conn_id = r.u64();
      m.request_id = r.u32();
      m.counter = r.u32();
      if (!r.done()) return Error::bad_length;
      return ControlBody{m};
    }
    case ControlType::peer_hello: {
      PeerHello m;
      for (auto& b : m.nonce) b = r.u8();
      if (!r.done()) return Error::bad_length;
      return ControlBody{m};
    }
  }
  return Error::unknown_type;
}

bool valid_type(uint8_t t) {
  switch (static_cast<ControlType>(t)) {
    case ControlType::claim:
    case ControlType::grant:
    case ControlType::deny:
    case ControlType::repl_state:
    case ControlType::repl_log:
    case ControlType::repl_ack:
    case ControlType::release:
    case ControlType::abandon:
    case ControlType::peer_hello:
      return true;
  }
  return false;
}

}  // namespace

std::string_view to_string(ControlType t) {
  switch (t) {
    case ControlType::claim: return "CLAIM";
    case ControlType::grant: return "GRANT";
    case ControlType::deny: return "DENY";
    case ControlType::repl_state: return "REPL_STATE";
    case ControlType::repl_log: return "REPL_LOG";
    case ControlType::repl_ack: return "REPL_ACK";
    case ControlType::release: return "RELEASE";
    case ControlType::abandon: return "ABANDON";
    case ControlType::peer_hello: return "PEER_HELLO";
  }
  return "?";
}

ControlType type_of(const ControlBody& b) {
  static constexpr ControlType kTypes[] = {ControlType::claim,      ControlType::grant,
                                           ControlType::deny,       ControlType::repl_state,
                                           ControlType::repl_log,   ControlType::repl_ack,
                                           ControlType::release,    ControlType::abandon,
                                           ControlType::peer_hello};
  return kTypes[b.index()];
}

namespace {

uint64_t chunks_of(uint64_t body_len) { return (body_len + kControlChunkBytes - 1) / kControlChunkBytes; }

uint64_t wire_size(uint64_t body_len, bool chunked) {
  if (!chunked) return kControlHeaderBytes + body_len + kControlMacBytes;
  return kControlChunkedHeadBytes + body_len + chunks_of(body_len) * kControlChunkTagBytes;
}

struct Header {
  uint8_t type = 0;
  bool chunked = false;
  uint32_t from = 0, to = 0;
  uint64_t body_len = 0;
  uint64_t size = 0;  // the whole message on the wire
};

// The header's rules (docs/PROTOCOL.md §5): magic, version, type, flags, and a body chunked
// exactly when it is longer than one chunk, only for a type that carries a byte string.
Result<Header> parse_header(std::span<const uint8_t> head) {
  if (head.size() < kControlHeaderBytes) return Error::truncated;
  Reader r(head);
  if (r.u32() != kControlMagic) return Error::bad_magic;
  if (r.u8() != kControlVersion) return Error::unsupported_version;
  Header h;
  h.type = r.u8();
  if (!valid_type(h.type)) return Error::unknown_type;
  uint16_t flags = r.u16();
  if ((flags & ~kControlFlagChunked) != 0) return Error::bad_field;
  h.chunked = flags == kControlFlagChunked;
  h.from = r.u32();
  h.to = r.u32();
  h.body_len = r.u32();
  if (h.chunked != (h.body_len > kControlChunkBytes)) return Error::bad_field;
  if (h.chunked && blob_offset(h.type) == 0) return Error::bad_length;
  h.size = wire_size(h.body_len, h.chunked);
  if (h.size > kControlMessageBytesMax) return Error::too_large;
  return h;
}

}  // namespace

size_t control_body_size(const ControlBody& b) {
  Bytes fields;
  Writer w(fields);
  auto blob = std::visit(BodyEncoder{w}, b);
  return fields.size() + blob.size();
}

// ---- ControlEncoder ---------------------------------------------------------------------------

Result<std::unique_ptr<ControlEncoder>> ControlEncoder::make(const cert::Key& pool_key, ControlMessage m) {
  auto owned = std::make_unique<ControlMessage>(std::move(m));
  const ControlMessage* view = owned.get();
  std::unique_ptr<ControlEncoder> e(new ControlEncoder(pool_key, *view));
  e->owned_ = std::move(owned);
  if (Status st = e->start(); !st) return st.error();
  return e;
}

Result<std::unique_ptr<ControlEncoder>> ControlEncoder::make(const cert::Key& pool_key, ControlMessage m,
                                                             std::vector<Slice> blob) {
  MTCP_ASSERT(std::holds_alternative<Grant>(m.body) || std::holds_alternative<ReplState>(m.body),
              "ControlEncoder: a byte string in pieces is a state's (GRANT, REPL_STATE)");
  auto owned = std::make_unique<ControlMessage>(std::move(m));
  const ControlMessage* view = owned.get();
  std::unique_ptr<ControlEncoder> e(new ControlEncoder(pool_key, *view));
  e->owned_ = std::move(owned);
  e->pieces_ = std::move(blob);
  if (Status st = e->start(); !st) return st.error();
  return e;
}

ControlEncoder::ControlEncoder(const cert::Key& pool_key, const ControlMessage& m) : key_(pool_key), m_(&m) {}

template <class F>
void ControlEncoder::blob_range(uint64_t from, uint64_t to, F&& f) const {
  uint64_t at = 0;
  for (auto piece : blob_) {
    const uint64_t end = at + piece.size();
    if (end > from && at < to) {
      const uint64_t a = std::max(at, from), b = std::min(end, to);
      f(piece.subspan(static_cast<size_t>(a - at), static_cast<size_t>(b - a)));
    }
    if (end >= to) break;
    at = end;
  }
}
ControlEncoder::~ControlEncoder() = default;

Status ControlEncoder::start() {
  Writer fw(fields_);
  auto blob = std::visit(BodyEncoder{fw}, m_->body);
  if (!blob.empty()) blob_.push_back(blob);
  blob_len_ = blob.size();
  if (!pieces_.empty()) {
    MTCP_ASSERT(blob.empty(), "ControlEncoder: a state both in the message and in pieces");
    for (const Slice& p : pieces_) {
      if (p.empty()) continue;
      blob_.push_back(p.span());
      blob_len_ += p.size();
    }
    if (blob_len_ > UINT32_MAX) return Error::too_large;
    // The byte string's length is the last field (put_blob wrote 0 for the empty state).
    Bytes len;
    Writer(len).u32(static_cast<uint32_t>(blob_len_));
    MTCP_ASSERT(fields_.size() >= len.size(), "ControlEncoder: fields without the length");
    std::copy(len.begin(), len.end(), fields_.end() - static_cast<std::ptrdiff_t>(len.size()));
  }
  body_len_ = fields_.size() + blob_len_;
  chunked_ = body_len_ > kControlChunkBytes;
  size_ = wire_size(body_len_, chunked_);
  if (size_ > kControlMessageBytesMax) return Error::too_large;
  if (chunked_ && m_->salt == ControlSalt{}) return Error::bad_field;
  return {};
}

void ControlEncoder::next(Bytes& out, size_t budget) {
  std::vector<std::span<const uint8_t>> views;
  next_views(views, budget);
  Writer w(out);
  for (auto v : views) w.bytes(v);
}

void ControlEncoder::next_views(std::vector<std::span<const uint8_t>>& out, size_t budget) {
  MTCP_ASSERT(!done(), "ControlEncoder::next after the end");
  // Every byte this piece keeps here, reserved first: the views point into scratch_, so it
  // must not grow (and move) while they are made.
  const size_t chunks_max = 1 + budget / (kControlChunkBytes + kControlChunkTagBytes);
  scratch_.clear();
  scratch_.reserve((head_done_ ? 0 : (chunked_ ? kControlChunkedHeadBytes : size_)) + chunks_max * kControlChunkTagBytes);
  const uint8_t* const held = scratch_.data();
  Writer w(scratch_);
  if (!head_done_) {
    head_done_ = true;
    w.u32(kControlMagic);
    w.u8(kControlVersion);
    w.u8(static_cast<uint8_t>(type_of(m_->body)));
    w.u16(chunked_ ? kControlFlagChunked : 0);
    w.u32(m_->from);
    w.u32(m_->to);
    w.u32(static_cast<uint32_t>(body_len_));
    if (!chunked_) {
      // Small (at most one chunk): one contiguous copy, tagged with one HMAC.
      w.bytes(fields_);
      for (auto b : blob_) w.bytes(b);
      w.bytes(cert::control_mac(key_, scratch_));
      MTCP_ASSERT(scratch_.data() == held && scratch_.size() == size_, "ControlEncoder: unchunked size");
      out.emplace_back(scratch_.data(), scratch_.size());
      written_ = size_;
      return;
    }
    w.bytes(m_->salt);
    std::span<const uint8_t> head(scratch_.data(), scratch_.size());
    w.bytes(cert::control_mac(key_, head));
    mac_ = std::make_unique<cert::ChunkMac>(cert::control_chunk_key(key_, head));
    out.emplace_back(scratch_.data(), kControlChunkedHeadBytes);
    written_ += kControlChunkedHeadBytes;
  }
  // The body as fields || blob, a chunk at a time, each followed by its tag: at least one
  // chunk, then as many as fit the budget. The chunk is tagged where it lies.
  size_t produced = 0;
  size_t chunks = 0;
  while (body_at_ < body_len_ && (produced == 0 || produced + kControlChunkBytes + kControlChunkTagBytes <= budget)) {
    MTCP_ASSERT(chunks < chunks_max, "ControlEncoder: more chunks than reserved");
    const uint64_t end = std::min<uint64_t>(body_at_ + kControlChunkBytes, body_len_);
    mac_->begin(chunk_);
    if (body_at_ < fields_.size()) {
      auto v = std::span<const uint8_t>(fields_).subspan(body_at_, std::min<uint64_t>(end, fields_.size()) - body_at_);
      mac_->update(v);
      out.push_back(v);
    }
    if (end > fields_.size()) {
      const uint64_t b0 = std::max<uint64_t>(body_at_, fields_.size()) - fields_.size();
      blob_range(b0, end - fields_.size(), [&](std::span<const uint8_t> v) {
        mac_->update(v);
        out.push_back(v);
      });
    }
    const size_t tag_at = scratch_.size();
    w.bytes(mac_->finish());
    out.emplace_back(scratch_.data() + tag_at, kControlChunkTagBytes);
    produced += static_cast<size_t>(end - body_at_) + kControlChunkTagBytes;
    body_at_ = end;
    ++chunk_;
    ++chunks;
  }
  MTCP_ASSERT(scratch_.data() == held, "ControlEncoder: the views' storage moved");
  written_ += produced;
  MTCP_ASSERT(written_ <= size_ && (body_at_ < body_len_ || written_ == size_), "ControlEncoder: size");
}

Result<Bytes> encode_control(const cert::Key& pool_key, const ControlMessage& m) {
  ControlEncoder e(pool_key, m);
  if (Status st = e.start(); !st) return st.error();
  Bytes out;
  out.reserve(e.size());
  while (!e.done()) e.next(out, e.size());
  return out;
}

Result<size_t> control_message_size(std::span<const uint8_t> head) {
  auto h = parse_header(head);
  if (!h) return h.error();
  return static_cast<size_t>(h->size);
}

Result<ControlMessage> decode_control(const cert::Key& pool_key, std::span<const uint8_t> bytes) {
  auto size = control_message_size(bytes);
  if (!size) return size.error();
  if (bytes.size() < *size) return Error::truncated;
  if (bytes.size() > *size) return Error::bad_length;
  ControlReader reader(pool_key, kControlMessageBytesMax);
  auto m = reader.next(bytes);
  if (!m) return m.error();
  MTCP_ASSERT(m->has_value() && bytes.empty(), "decode_control: a framed message did not come out whole");
  return std::move(**m);
}

// ---- ControlReader ----------------------------------------------------------------------------

ControlReader::ControlReader(const cert::Key& pool_key, size_t message_max)
    : key_(pool_key), max_(std::min(message_max, kControlMessageBytesMax)) {}

void ControlReader::set_message_max(size_t n) { max_ = std::min(n, kControlMessageBytesMax); }

Result<std::optional<ControlMessage>> ControlReader::next(std::span<const uint8_t>& in) {
  if (failed_) return Error::bad_field;
  auto fail = [&](Error e) -> Result<std::optional<ControlMessage>> {
    failed_ = true;
    return e;
  };
  auto take = [&](Bytes& dst, size_t want) {
    size_t n = std::min(want, in.size());
    dst.insert(dst.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n));
    in = in.subspan(n);
  };
  if (!chunked_) {
    if (need_ == 0) {
      take(head_, kControlHeaderBytes - head_.size());
      if (head_.size() < kControlHeaderBytes) return std::optional<ControlMessage>{};
      auto h = parse_header(head_);
      if (!h) return fail(h.error());
      if (h->size > max_) return fail(Error::too_large);
      need_ = h->chunked ? kControlChunkedHeadBytes : static_cast<size_t>(h->size);
      head_.reserve(need_);
    }
    take(head_, need_ - head_.size());
    if (head_.size() < need_) return std::optional<ControlMessage>{};
    auto h = parse_header(head_);
    MTCP_ASSERT(h.ok(), "ControlReader: header changed");
    if (h->chunked) {
      if (Status st = start_chunks(); !st) return fail(st.error());
    } else {
      // Authenticate before parsing the body: nothing from an unauthenticated peer is interpreted.
      std::span<const uint8_t> all(head_);
      auto signed_part = all.first(all.size() - kControlMacBytes);
      cert::Mac tag{};
      std::memcpy(tag.data(), all.data() + signed_part.size(), kControlMacBytes);
      if (!cert::control_mac_ok(key_, signed_part, tag)) return fail(Error::bad_mac);
      ControlMessage m;
      m.from = h->from;
      m.to = h->to;
      Reader body(signed_part.subspan(kControlHeaderBytes));
      auto parsed = parse_body(static_cast<ControlType>(h->type), body, nullptr);
      if (!parsed) return fail(parsed.error());
      m.body = std::move(parsed.value());
      head_.clear();
      if (head_.capacity() > 2 * kControlChunkBytes) head_.shrink_to_fit();
      need_ = 0;
      return std::optional<ControlMessage>{std::move(m)};
    }
  }
  // The chunks: bytes go to prefix_ or blob_ as they come and into the chunk's MAC; its tag
  // follows each chunk.
  while (!in.empty()) {
    if (in_tag_) {
      size_t n = std::min(kControlChunkTagBytes - tag_have_, in.size());
      std::memcpy(tag_.data() + tag_have_, in.data(), n);
      tag_have_ += n;
      in = in.subspan(n);
      if (tag_have_ < kControlChunkTagBytes) break;
      if (Status st = end_chunk(); !st) return st.error();
      if (body_have_ == body_len_) return finish_chunked();
      continue;
    }
    uint64_t chunk_end = chunk_end_of(body_have_);
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_end - body_have_, in.size()));
    if (body_have_ < blob_at_) n = std::min<size_t>(n, blob_at_ - static_cast<size_t>(body_have_));
    Bytes& dst = body_have_ < blob_at_ ? prefix_ : blob_;
    size_t from = dst.size();
    dst.insert(dst.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n));
    mac_->update(std::span<const uint8_t>(dst).subspan(from));
    body_have_ += n;
    in = in.subspan(n);
    if (body_have_ == chunk_end) in_tag_ = true;
  }
  return std::optional<ControlMessage>{};
}

// The header's HMAC checked (over header and salt), the chunk key derived, and only then room
// made for the body.
uint64_t ControlReader::chunk_end_of(uint64_t pos) const {
  return std::min<uint64_t>((pos / kControlChunkBytes + 1) * kControlChunkBytes, body_len_);
}

Status ControlReader::end_chunk() {
  if (!cert::equal_ct(mac_->finish(), tag_)) {
    failed_ = true;
    return Error::bad_mac;
  }
  in_tag_ = false;
  tag_have_ = 0;
  ++chunk_;
  if (body_have_ < body_len_) mac_->begin(chunk_);
  return {};
}

std::vector<std::span<uint8_t>> ControlReader::direct(size_t max) {
  MTCP_ASSERT(direct_chunks_ == 0, "ControlReader::direct: a read is outstanding");
  std::vector<std::span<uint8_t>> out;
  if (failed_ || !chunked_ || in_tag_ || tag_have_ != 0 || body_have_ < blob_at_) return out;
  // The chunks [body_have_, end): their state bytes go to blob_, grown to hold them (within
  // the capacity reserved at the header, so nothing moves), their tags to direct_tags_.
  uint64_t end = body_have_;
  size_t bytes = 0, chunks = 0;
  while (end < body_len_ && (chunks == 0 || bytes + kControlChunkBytes + kControlChunkTagBytes <= max)) {
    const uint64_t chunk_end = chunk_end_of(end);
    bytes += static_cast<size_t>(chunk_end - end) + kControlChunkTagBytes;
    end = chunk_end;
    ++chunks;
  }
  const size_t from = blob_.size();
  MTCP_ASSERT(from == body_have_ - blob_at_, "ControlReader::direct: state bytes out of step");
  MTCP_ASSERT(end - blob_at_ <= blob_.capacity(), "ControlReader::direct: beyond the reserved state");
  blob_.resize(static_cast<size_t>(end - blob_at_));
  direct_tags_.resize(chunks);
  uint64_t at = body_have_;
  for (size_t i = 0; i < chunks; ++i) {
    const uint64_t chunk_end = chunk_end_of(at);
    out.emplace_back(blob_.data() + (at - blob_at_), static_cast<size_t>(chunk_end - at));
    out.emplace_back(direct_tags_[i].data(), kControlChunkTagBytes);
    at = chunk_end;
  }
  direct_chunks_ = chunks;
  return out;
}

Result<std::optional<ControlMessage>> ControlReader::commit(size_t n) {
  MTCP_ASSERT(direct_chunks_ != 0, "ControlReader::commit without direct()");
  const size_t chunks = direct_chunks_;
  direct_chunks_ = 0;
  // Walk the offered layout over the n bytes that arrived: each chunk's bytes into its MAC,
  // each complete tag checked; a chunk or tag cut short is left as next() would leave it.
  for (size_t i = 0; i < chunks && n > 0; ++i) {
    const uint64_t chunk_end = chunk_end_of(body_have_);
    const size_t data = static_cast<size_t>(std::min<uint64_t>(chunk_end - body_have_, n));
    mac_->update(std::span<const uint8_t>(blob_.data() + (body_have_ - blob_at_), data));
    body_have_ += data;
    n -= data;
    if (body_have_ < chunk_end) break;
    in_tag_ = true;
    const size_t t = std::min(kControlChunkTagBytes, n);
    std::memcpy(tag_.data(), direct_tags_[i].data(), t);
    tag_have_ = t;
    n -= t;
    if (t < kControlChunkTagBytes) break;
    if (Status st = end_chunk(); !st) return st.error();
    if (body_have_ == body_len_) {
      MTCP_ASSERT(n == 0, "ControlReader::commit: bytes past the message");
      return finish_chunked();
    }
  }
  MTCP_ASSERT(n == 0, "ControlReader::commit: more bytes than offered");
  blob_.resize(static_cast<size_t>(body_have_ - blob_at_));  // what did not arrive is not held
  return std::optional<ControlMessage>{};
}

Status ControlReader::start_chunks() {
  std::span<const uint8_t> all(head_);
  cert::Mac tag{};
  std::memcpy(tag.data(), all.data() + kControlHeaderBytes + kControlSaltBytes, kControlMacBytes);
  auto signed_part = all.first(kControlHeaderBytes + kControlSaltBytes);
  if (!cert::control_mac_ok(key_, signed_part, tag)) return Error::bad_mac;
  auto h = parse_header(head_);
  chunked_ = true;
  body_len_ = h->body_len;
  body_have_ = 0;
  chunk_ = 0;
  blob_at_ = blob_offset(h->type);
  prefix_.clear();
  prefix_.reserve(blob_at_);
  blob_.clear();
  blob_.reserve(static_cast<size_t>(body_len_) - blob_at_);
  mac_ = std::make_unique<cert::ChunkMac>(cert::control_chunk_key(key_, signed_part));
  mac_->begin(0);
  in_tag_ = false;
  tag_have_ = 0;
  return {};
}

Result<std::optional<ControlMessage>> ControlReader::finish_chunked() {
  auto h = parse_header(head_);
  ControlMessage m;
  m.from = h->from;
  m.to = h->to;
  std::copy(head_.begin() + kControlHeaderBytes, head_.begin() + kControlHeaderBytes + kControlSaltBytes, m.salt.begin());
  Reader body(prefix_);
  auto parsed = parse_body(static_cast<ControlType>(h->type), body, &blob_);
  chunked_ = false;
  mac_.reset();
  head_.clear();
  need_ = 0;
  prefix_.clear();
  Bytes().swap(blob_);
  if (!parsed) {
    failed_ = true;
    return parsed.error();
  }
  m.body = std::move(parsed.value());
  return std::optional<ControlMessage>{std::move(m)};
}

std::array<uint8_t, kChallengeBytes> encode_challenge(const ChallengeNonce& nonce) {
  std::array<uint8_t, kChallengeBytes> out{};
  out[0] = static_cast<uint8_t>(kChallengeMagic >> 24);
  out[1] = static_cast<uint8_t>(kChallengeMagic >> 16);
  out[2] = static_cast<uint8_t>(kChallengeMagic >> 8);
  out[3] = static_cast<uint8_t>(kChallengeMagic);
  out[4] = kControlVersion;
  std::copy(nonce.begin(), nonce.end(), out.begin() + 8);
  return out;
}

Result<ChallengeNonce> decode_challenge(std::span<const uint8_t> bytes) {
  if (bytes.size() != kChallengeBytes) return Error::bad_length;
  Reader r(bytes);
  if (r.u32() != kChallengeMagic) return Error::bad_magic;
  if (r.u8() != kControlVersion) return Error::unsupported_version;
  if (r.u8() != 0 || r.u16() != 0) return Error::bad_field;
  ChallengeNonce n{};
  for (auto& b : n) b = r.u8();
  return n;
}

}  // namespace mtcp::wire
