#include "wire/control.h"

#include "wire/bytes.h"

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
void put_blob(Writer& w, const Bytes& b) {
  w.u32(static_cast<uint32_t>(b.size()));
  w.bytes(b);
}
bool get_blob(Reader& r, Bytes& out) {
  uint32_t n = r.u32();
  if (!r.ok() || n > r.remaining()) return false;
  auto s = r.bytes(n);
  out.assign(s.begin(), s.end());
  return r.ok();
}

struct BodyEncoder {
  Writer& w;
  void operator()(const Claim& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u32(m.request_id);
    w.u8(static_cast<uint8_t>(m.mode));
    w.u8(m.adopt_only ? 1 : 0);
    w.u32(m.counter);
    put_pos(w, m.have);
  }
  void operator()(const Grant& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u32(m.request_id);
    w.u8(m.from_owner ? 1 : 0);
    put_pos(w, m.pos);
    put_blob(w, m.state);
  }
  void operator()(const Deny& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u32(m.request_id);
    w.u16(static_cast<uint16_t>(m.reason));
    w.u32(m.owner_id);
    w.u64(m.owner_epoch);
  }
  void operator()(const ReplState& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    put_blob(w, m.state);
  }
  void operator()(const ReplLog& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    w.u64(m.snap_id);
    w.u64(m.start);
    w.u64(m.out_acked);
    put_blob(w, m.bytes);
  }
  void operator()(const ReplAck& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
    put_pos(w, m.pos);
    w.u8(m.need_state ? 1 : 0);
  }
  void operator()(const Release& m) {
    w.u64(m.conn_id);
    w.u64(m.epoch);
  }
  void operator()(const Abandon& m) {
    w.u64(m.conn_id);
    w.u32(m.request_id);
    w.u32(m.counter);
  }
  void operator()(const PeerHello& m) { w.bytes(m.nonce); }
};

Result<ControlBody> parse_body(ControlType t, Reader& r) {
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
      if (!get_blob(r, m.state) || !r.done()) return Error::bad_length;
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
      if (!get_blob(r, m.state) || !r.done()) return Error::bad_length;
      return ControlBody{std::move(m)};
    }
    case ControlType::repl_log: {
      ReplLog m;
      m.conn_id = r.u64();
      m.epoch = r.u64();
      m.snap_id = r.u64();
      m.start = r.u64();
      m.out_acked = r.u64();
      if (!get_blob(r, m.bytes) || !r.done()) return Error::bad_length;
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

Result<Bytes> encode_control(const cert::Key& pool_key, const ControlMessage& m) {
  Bytes out;
  // Room for the largest byte string up front, so a state of megabytes is copied once, not
  // again on each doubling of the buffer.
  size_t blob = std::visit([](const auto& b) -> size_t {
    using T = std::decay_t<decltype(b)>;
    if constexpr (std::is_same_v<T, Grant> || std::is_same_v<T, ReplState>) return b.state.size();
    else if constexpr (std::is_same_v<T, ReplLog>) return b.bytes.size();
    else return 0;
  }, m.body);
  out.reserve(kControlHeaderBytes + 256 + blob + kControlMacBytes);
  Writer w(out);
  w.u32(kControlMagic);
  w.u8(kControlVersion);
  w.u8(static_cast<uint8_t>(type_of(m.body)));
  w.u16(0);
  w.u32(m.from);
  w.u32(m.to);
  size_t len_at = w.size();
  w.u32(0);
  std::visit(BodyEncoder{w}, m.body);
  size_t body_len = out.size() - kControlHeaderBytes;
  if (out.size() + kControlMacBytes > kControlMessageBytesMax) return Error::too_large;
  w.patch_u32(len_at, static_cast<uint32_t>(body_len));
  cert::Mac tag = cert::control_mac(pool_key, out);
  w.bytes(tag);
  return out;
}

Result<size_t> control_message_size(std::span<const uint8_t> head) {
  if (head.size() < kControlHeaderBytes) return Error::truncated;
  Reader r(head);
  if (r.u32() != kControlMagic) return Error::bad_magic;
  if (r.u8() != kControlVersion) return Error::unsupported_version;
  uint8_t type = r.u8();
  if (!valid_type(type)) return Error::unknown_type;
  if (r.u16() != 0) return Error::bad_field;
  r.u32();
  r.u32();
  uint64_t body_len = r.u32();
  uint64_t total = kControlHeaderBytes + body_len + kControlMacBytes;
  if (total > kControlMessageBytesMax) return Error::too_large;
  return static_cast<size_t>(total);
}

Result<ControlMessage> decode_control(const cert::Key& pool_key, std::span<const uint8_t> bytes) {
  auto size = control_message_size(bytes);
  if (!size) return size.error();
  if (bytes.size() < *size) return Error::truncated;
  if (bytes.size() > *size) return Error::bad_length;
  // Authenticate before parsing the body: nothing from an unauthenticated peer is interpreted.
  auto signed_part = bytes.first(bytes.size() - kControlMacBytes);
  cert::Mac tag{};
  std::memcpy(tag.data(), bytes.data() + signed_part.size(), kControlMacBytes);
  if (!cert::control_mac_ok(pool_key, signed_part, tag)) return Error::bad_mac;
  Reader r(signed_part);
  r.u32();
  r.u8();
  auto type = static_cast<ControlType>(r.u8());
  r.u16();
  ControlMessage m;
  m.from = r.u32();
  m.to = r.u32();
  r.u32();
  Reader body(signed_part.subspan(kControlHeaderBytes));
  auto parsed = parse_body(type, body);
  if (!parsed) return parsed.error();
  m.body = std::move(parsed.value());
  return m;
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
