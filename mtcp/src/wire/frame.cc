#include "wire/frame.h"

#include <cassert>

#include "common/limits.h"
#include "wire/bytes.h"

namespace mtcp::wire {
namespace {

// Body sizes of the fixed-layout frames (docs/PROTOCOL.md §4).
constexpr size_t kHelloBody = 12 + 32;
constexpr size_t kChallengeBody = 4 + 32;
constexpr size_t kMigrateBody = cert::kCertificateWireBytes + 4 + 4 + 8 + 8 + 32;
constexpr size_t kAcceptBody = 8 + 8 + cert::kCertificateWireBytes + 32;
constexpr size_t kAckBody = 8;
constexpr size_t kHintBody = 6;
constexpr size_t kRenewBody = cert::kCertificateWireBytes + 32;
constexpr size_t kCloseBody = 8;
constexpr size_t kResetBody = 2;
constexpr size_t kWelcomeFixedBody = 8 + 4 + 8 + cert::kCertificateWireBytes + 32 + 32 + 1;
constexpr size_t kRefuseFixedBody = 2 + 4 + 1;

void put_cert(Writer& w, const cert::Certificate& c) { w.bytes(cert::encode(c)); }
cert::Certificate get_cert(Reader& r) {
  auto b = r.bytes(cert::kCertificateWireBytes);
  if (!r.ok()) return {};
  return cert::decode(std::span<const uint8_t, cert::kCertificateWireBytes>(b.data(), b.size()));
}

// Starts a frame; returns the offset of the length field to patch.
size_t begin(Writer& w, FrameType t) {
  w.u8(static_cast<uint8_t>(t));
  w.u8(0);
  w.u16(0);
  size_t at = w.size();
  w.u32(0);
  return at;
}

bool known_error_code(uint16_t v) { return !to_string(static_cast<Error>(v)).starts_with("unknown error"); }

struct Encoder {
  Writer& w;
  void operator()(const Hello& f) {
    w.u8(f.version);
    w.u8(static_cast<uint8_t>(f.kind));
    w.u16(0);
    w.u64(f.conn_id);
    w.bytes(f.key_share);
  }
  void operator()(const Welcome& f) {
    w.u64(f.conn_id);
    w.u32(f.server_id);
    w.u64(f.epoch);
    put_cert(w, f.cert);
    w.bytes(f.secret);
    w.bytes(f.key_share);
    // validate(ServerConfig) keeps these within their caps; the encoder never wraps a length
    // byte (a test may still encode 17 alternates to check the decoder refuses them).
    assert(f.alternates.size() <= UINT8_MAX);
    w.u8(static_cast<uint8_t>(f.alternates.size()));
    for (const auto& a : f.alternates) {
      assert(a.address.size() <= UINT8_MAX);
      w.u32(a.server_id);
      w.u8(static_cast<uint8_t>(a.address.size()));
      w.bytes({reinterpret_cast<const uint8_t*>(a.address.data()), a.address.size()});
    }
  }
  void operator()(const ChallengeFrame& f) {
    w.u32(f.server_id);
    w.bytes(f.nonce);
  }
  void operator()(const Migrate& f) {
    put_cert(w, f.cert);
    w.u32(f.counter);
    w.u32(f.prev_owner);
    w.u64(f.client_rcv_nxt);
    w.u64(f.client_snd_una);
    w.bytes(f.proof);
  }
  void operator()(const Accept& f) {
    w.u64(f.epoch);
    w.u64(f.server_rcv_nxt);
    put_cert(w, f.cert);
    w.bytes(f.secret);
  }
  void operator()(const Refuse& f) {
    w.u16(static_cast<uint16_t>(f.reason));
    w.u32(f.hint_server);
    // The text is for humans: longer text is cut at kReasonTextBytesMax (documented).
    size_t n = std::min(f.text.size(), kReasonTextBytesMax);
    w.u8(static_cast<uint8_t>(n));
    w.bytes({reinterpret_cast<const uint8_t*>(f.text.data()), n});
  }
  void operator()(const Data& f) {
    w.u64(f.dsn);
    for (const auto& s : f.payload) w.bytes(s.span());
  }
  void operator()(const Ack& f) { w.u64(f.dsn); }
  void operator()(const Hint& f) {
    w.u16(static_cast<uint16_t>(f.reason));
    w.u32(f.server_id);
  }
  void operator()(const Renew& f) {
    put_cert(w, f.cert);
    w.bytes(f.secret);
  }
  void operator()(const Close& f) { w.u64(f.final_dsn); }
  void operator()(const Reset& f) { w.u16(static_cast<uint16_t>(f.reason)); }
};

Result<Frame> parse_body(FrameType t, std::span<const uint8_t> body) {
  Reader r(body);
  auto exact = [&](size_t n) { return body.size() == n; };
  switch (t) {
    case FrameType::hello: {
      if (!exact(kHelloBody)) return Error::bad_length;
      Hello f;
      f.version = r.u8();
      uint8_t kind = r.u8();
      if (r.u16() != 0) return Error::bad_field;
      f.conn_id = r.u64();
      r.array(f.key_share);
      if (kind > 1) return Error::bad_field;
      f.kind = static_cast<HelloKind>(kind);
      if (f.kind == HelloKind::fresh && f.conn_id != 0) return Error::bad_field;
      if (f.kind == HelloKind::migrate && f.conn_id == 0) return Error::bad_field;
      if (f.kind == HelloKind::migrate && f.key_share != cert::PublicKey{}) return Error::bad_field;
      return Frame{f};
    }
    case FrameType::welcome: {
      if (body.size() < kWelcomeFixedBody) return Error::bad_length;
      Welcome f;
      f.conn_id = r.u64();
      f.server_id = r.u32();
      f.epoch = r.u64();
      f.cert = get_cert(r);
      r.array(f.secret);
      r.array(f.key_share);
      size_t n = r.u8();
      if (n > kAlternatesMax) return Error::alternates_too_many;
      for (size_t i = 0; i < n; ++i) {
        Alternate a;
        a.server_id = r.u32();
        size_t len = r.u8();
        auto s = r.bytes(len);
        if (!r.ok()) return Error::bad_length;
        a.address.assign(s.begin(), s.end());
        f.alternates.push_back(std::move(a));
      }
      if (!r.done()) return Error::bad_length;
      if (f.conn_id == 0 || f.cert.conn_id != f.conn_id) return Error::bad_field;
      return Frame{std::move(f)};
    }
    case FrameType::challenge: {
      if (!exact(kChallengeBody)) return Error::bad_length;
      ChallengeFrame f;
      f.server_id = r.u32();
      r.array(f.nonce);
      return Frame{f};
    }
    case FrameType::migrate: {
      if (!exact(kMigrateBody)) return Error::bad_length;
      Migrate f;
      f.cert = get_cert(r);
      f.counter = r.u32();
      f.prev_owner = r.u32();
      f.client_rcv_nxt = r.u64();
      f.client_snd_una = r.u64();
      r.array(f.proof);
      if (f.counter == 0 || f.cert.conn_id == 0) return Error::bad_field;
      return Frame{f};
    }
    case FrameType::accept: {
      if (!exact(kAcceptBody)) return Error::bad_length;
      Accept f;
      f.epoch = r.u64();
      f.server_rcv_nxt = r.u64();
      f.cert = get_cert(r);
      r.array(f.secret);
      return Frame{f};
    }
    case FrameType::refuse: {
      if (body.size() < kRefuseFixedBody) return Error::bad_length;
      Refuse f;
      uint16_t code = r.u16();
      f.hint_server = r.u32();
      size_t len = r.u8();
      auto s = r.bytes(len);
      if (!r.done()) return Error::bad_length;
      if (code == 0 || !known_error_code(code)) return Error::bad_field;
      f.reason = static_cast<Error>(code);
      f.text.assign(s.begin(), s.end());
      return Frame{std::move(f)};
    }
    case FrameType::ack: {
      if (!exact(kAckBody)) return Error::bad_length;
      return Frame{Ack{r.u64()}};
    }
    case FrameType::hint: {
      if (!exact(kHintBody)) return Error::bad_length;
      uint16_t reason = r.u16();
      uint32_t sid = r.u32();
      if (reason < 1 || reason > 3) return Error::bad_field;
      return Frame{Hint{static_cast<HintReason>(reason), sid}};
    }
    case FrameType::renew: {
      if (!exact(kRenewBody)) return Error::bad_length;
      Renew f;
      f.cert = get_cert(r);
      r.array(f.secret);
      if (f.cert.conn_id == 0) return Error::bad_field;
      return Frame{f};
    }
    case FrameType::close: {
      if (!exact(kCloseBody)) return Error::bad_length;
      return Frame{Close{r.u64()}};
    }
    case FrameType::reset: {
      if (!exact(kResetBody)) return Error::bad_length;
      uint16_t code = r.u16();
      if (code == 0 || !known_error_code(code)) return Error::bad_field;
      return Frame{Reset{static_cast<Error>(code)}};
    }
    case FrameType::data:
      break;  // handled by the caller without copying
  }
  return Error::unknown_type;
}

// Body length of the fixed-size frames (0 for variable-size ones), so a wrong length is
// refused from the header alone instead of after buffering the declared body.
size_t fixed_body(FrameType t) {
  switch (t) {
    case FrameType::hello: return kHelloBody;
    case FrameType::challenge: return kChallengeBody;
    case FrameType::migrate: return kMigrateBody;
    case FrameType::accept: return kAcceptBody;
    case FrameType::ack: return kAckBody;
    case FrameType::hint: return kHintBody;
    case FrameType::renew: return kRenewBody;
    case FrameType::close: return kCloseBody;
    case FrameType::reset: return kResetBody;
    default: return 0;
  }
}

bool valid_type(uint8_t t) {
  switch (static_cast<FrameType>(t)) {
    case FrameType::hello:
    case FrameType::welcome:
    case FrameType::challenge:
    case FrameType::migrate:
    case FrameType::accept:
    case FrameType::refuse:
    case FrameType::data:
    case FrameType::ack:
    case FrameType::hint:
    case FrameType::renew:
    case FrameType::close:
    case FrameType::reset:
      return true;
  }
  return false;
}

}  // namespace

FrameType type_of(const Frame& f) {
  static constexpr FrameType kTypes[] = {FrameType::hello,  FrameType::welcome, FrameType::challenge,
                                         FrameType::migrate, FrameType::accept, FrameType::refuse,
                                         FrameType::data,    FrameType::ack,    FrameType::hint,
                                         FrameType::renew,   FrameType::close,  FrameType::reset};
  return kTypes[f.index()];
}

std::string_view to_string(FrameType t) {
  switch (t) {
    case FrameType::hello: return "HELLO";
    case FrameType::welcome: return "WELCOME";
    case FrameType::challenge: return "CHALLENGE";
    case FrameType::migrate: return "MIGRATE";
    case FrameType::accept: return "ACCEPT";
    case FrameType::refuse: return "REFUSE";
    case FrameType::data: return "DATA";
    case FrameType::ack: return "ACK";
    case FrameType::hint: return "HINT";
    case FrameType::renew: return "RENEW";
    case FrameType::close: return "CLOSE";
    case FrameType::reset: return "RESET";
  }
  return "?";
}

void encode(const Frame& f, Bytes& out) {
  Writer w(out);
  size_t len_at = begin(w, type_of(f));
  size_t body_start = w.size();
  std::visit(Encoder{w}, f);
  w.patch_u32(len_at, static_cast<uint32_t>(w.size() - body_start));
}

void encode_data_header(uint64_t dsn, uint32_t len, uint8_t out[kDataHeaderBytes]) {
  out[0] = static_cast<uint8_t>(FrameType::data);
  out[1] = 0;
  out[2] = 0;
  out[3] = 0;
  uint32_t body = len + 8;
  for (int i = 0; i < 4; ++i) out[4 + i] = static_cast<uint8_t>(body >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<uint8_t>(dsn >> (56 - 8 * i));
}

PrefaceCheck check_preface(const SliceQueue& in) {
  std::array<uint8_t, kPreface.size()> head{};
  size_t n = in.copy_out(0, head);
  for (size_t i = 0; i < n; ++i) {
    if (head[i] != kPreface[i]) return PrefaceCheck::plain;
  }
  return n == kPreface.size() ? PrefaceCheck::mtcp : PrefaceCheck::need_more;
}

Result<std::optional<Frame>> FrameDecoder::next(SliceQueue& in) {
  if (in.size() < kFrameHeaderBytes) return std::optional<Frame>{};
  std::array<uint8_t, kFrameHeaderBytes> hdr{};
  in.copy_out(0, hdr);
  Reader r(hdr);
  uint8_t type = r.u8();
  uint8_t flags = r.u8();
  uint16_t reserved = r.u16();
  uint32_t body_len = r.u32();
  if (!valid_type(type)) return Error::unknown_type;
  if (flags != 0 || reserved != 0) return Error::bad_field;
  auto t = static_cast<FrameType>(type);
  size_t cap = t == FrameType::data ? payload_bytes_max_ + 8 : kFrameBodyBytesMax;
  if (body_len > cap) return Error::too_large;
  if (size_t fixed = fixed_body(t); fixed != 0 && body_len != fixed) return Error::bad_length;
  if (in.size() < kFrameHeaderBytes + body_len) return std::optional<Frame>{};
  if (t == FrameType::data) {
    if (body_len < 8) return Error::bad_length;
    std::array<uint8_t, 8> dsn_bytes{};
    in.copy_out(kFrameHeaderBytes, dsn_bytes);
    Reader dr(dsn_bytes);
    Data d;
    d.dsn = dr.u64();
    in.drop_front(kDataHeaderBytes);
    in.take_front(body_len - 8, d.payload);
    return std::optional<Frame>{Frame{std::move(d)}};
  }
  Bytes body = in.flatten(kFrameHeaderBytes, body_len);
  auto parsed = parse_body(t, body);
  if (!parsed) return parsed.error();
  in.drop_front(kFrameHeaderBytes + body_len);
  return std::optional<Frame>{std::move(parsed.value())};
}

Result<Frame> decode_one(std::span<const uint8_t> bytes) {
  SliceQueue q;
  q.push(Slice::copy_of(bytes));
  FrameDecoder dec;
  auto r = dec.next(q);
  if (!r) return r.error();
  if (!r.value().has_value()) return Error::truncated;
  if (!q.empty()) return Error::bad_length;
  return std::move(*r.value());
}

}  // namespace mtcp::wire
