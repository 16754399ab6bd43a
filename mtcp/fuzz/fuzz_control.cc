// libFuzzer harness for the control-message codec (wire/control.h).
//
// Input: byte 0 selects the mode (mod 4), the rest is the message material:
//   0  the bytes as received from the network: decode_control(key, bytes);
//   1  the bytes are header + body, signed with the pool key before decoding, so a header that
//      frames correctly reaches the body parser;
//   2  byte 0 of the rest is a message type and the remainder a body; a valid header and MAC
//      are built around them, so the fuzzer works on body parsing alone.
//   3  a chunked message (control version 3): byte 0 of the rest is a type, byte 1 says which
//      byte to flip (0: none), the remainder, repeated past one chunk, is the body; framed,
//      salted and tagged chunk by chunk here, independently of the encoder.
// Every message is also read by a wire::ControlReader in pieces whose size the input picks
// (for odd sizes, straight into place where the reader offers it); it must agree with decode_control (both refuse, or both give what re-encodes the same).
// Checked: no crash; what decodes re-encodes to exactly the same bytes and decodes again;
// control_message_size agrees with a successful decode. Every input is also offered to
// decode_challenge (the receiver's challenge that opens a control connection): what decodes
// re-encodes to the same 24 bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <vector>

#include "cert/cert.h"
#include "common/buffer.h"
#include "wire/control.h"

namespace {

using mtcp::Bytes;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_control: check failed: %s\n", what);
    std::abort();
  }
}

mtcp::cert::Key pool_key() {
  mtcp::cert::Key k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(0xA0 + i);
  return k;
}

void sign(Bytes& msg, const mtcp::cert::Key& key) {
  auto tag = mtcp::cert::control_mac(key, msg);
  msg.insert(msg.end(), tag.begin(), tag.end());
}

void put_u32(Bytes& b, uint32_t v) {
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A chunked message whose body is `material` repeated to one chunk and a bit more: header,
// salt, HMAC, then each chunk and its tag (docs/PROTOCOL.md §5 "Chunked messages"). `pick`
// 0-2: a GRANT, REPL_STATE or REPL_LOG whose state length agrees with the body (so the fields
// are what is fuzzed); otherwise `pick` is the type byte and the body is raw.
Bytes chunked(const mtcp::cert::Key& key, uint8_t pick, std::span<const uint8_t> material) {
  namespace wire = mtcp::wire;
  static constexpr uint8_t kTypes[] = {0x02, 0x10, 0x11};
  static constexpr size_t kFields[] = {45, 16, 40};  // the body's fields before the state's length
  const uint8_t type = pick < 3 ? kTypes[pick] : pick;
  Bytes body;
  const size_t len = wire::kControlChunkBytes + 1 + material.size();
  if (pick < 3) {
    for (size_t i = 0; i < kFields[pick]; ++i) body.push_back(i < material.size() ? material[i] : 0);
    put_u32(body, static_cast<uint32_t>(len - kFields[pick] - 4));
  }
  while (body.size() < len) {
    if (material.empty()) body.push_back(0);
    else body.insert(body.end(), material.begin(), material.begin() + static_cast<std::ptrdiff_t>(std::min(material.size(), len - body.size())));
  }
  Bytes msg = {0x4D, 0x54, 0x43, 0x43, wire::kControlVersion, type, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2};
  put_u32(msg, static_cast<uint32_t>(body.size()));
  for (size_t i = 0; i < wire::kControlSaltBytes; ++i) msg.push_back(static_cast<uint8_t>(0x51 + i));
  sign(msg, key);
  mtcp::cert::ChunkMac mac(mtcp::cert::control_chunk_key(key, std::span<const uint8_t>(msg).first(wire::kControlHeaderBytes + wire::kControlSaltBytes)));
  for (size_t at = 0, i = 0; at < body.size(); at += wire::kControlChunkBytes, ++i) {
    auto chunk = std::span<const uint8_t>(body).subspan(at, std::min(wire::kControlChunkBytes, body.size() - at));
    mac.begin(i);
    mac.update(chunk);
    auto tag = mac.finish();
    msg.insert(msg.end(), chunk.begin(), chunk.end());
    msg.insert(msg.end(), tag.begin(), tag.end());
  }
  return msg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace wire = mtcp::wire;
  static const mtcp::cert::Key key = pool_key();
  if (size < 1) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  if (auto ch = wire::decode_challenge(rest); ch.ok()) {
    auto back = wire::encode_challenge(ch.value());
    check(std::equal(back.begin(), back.end(), rest.begin(), rest.end()), "challenge encoding is not canonical");
  }
  Bytes msg;
  switch (data[0] % 4) {
    case 0:
      msg.assign(rest.begin(), rest.end());
      break;
    case 1:
      msg.assign(rest.begin(), rest.end());
      sign(msg, key);
      break;
    case 3: {
      if (rest.size() < 2) return 0;
      msg = chunked(key, rest[0] < 0xC0 ? rest[0] % 3 : rest[0], rest.subspan(2));
      if (rest[1] != 0) msg[(size_t{rest[1]} * 2654435761u) % msg.size()] ^= static_cast<uint8_t>(1u << (rest[1] % 8));
      break;
    }
    default: {
      if (rest.empty()) return 0;
      const uint32_t body_len = static_cast<uint32_t>(rest.size() - 1);
      const uint8_t hdr[wire::kControlHeaderBytes] = {
          0x4D, 0x54, 0x43, 0x43, wire::kControlVersion, rest[0], 0, 0, 0, 0, 0, 1, 0, 0, 0, 2,
          static_cast<uint8_t>(body_len >> 24), static_cast<uint8_t>(body_len >> 16),
          static_cast<uint8_t>(body_len >> 8), static_cast<uint8_t>(body_len)};
      msg.assign(hdr, hdr + wire::kControlHeaderBytes);
      msg.insert(msg.end(), rest.begin() + 1, rest.end());
      sign(msg, key);
      break;
    }
  }

  auto r = wire::decode_control(key, msg);
  {
    const size_t piece = 1 + (size > 1 ? data[size - 1] : 0) * 97u;
    wire::ControlReader reader(key, mtcp::kControlMessageBytesMax);
    bool failed = false;
    std::optional<wire::ControlMessage> got;
    // Odd inputs read as the member runtime reads: straight into place whenever the reader
    // offers buffers (direct, then commit), else through a buffer (next).
    const bool direct = (size > 1 ? data[size - 1] : 0) % 2 == 1;
    size_t at = 0;
    while (at < msg.size() && !failed && !got) {
      auto bufs = direct ? reader.direct(piece) : std::vector<std::span<uint8_t>>{};
      if (!bufs.empty()) {
        size_t want = std::min(piece, msg.size() - at), n = 0;
        for (auto b : bufs) {
          size_t k = std::min(b.size(), want - n);
          std::copy(msg.begin() + static_cast<std::ptrdiff_t>(at + n), msg.begin() + static_cast<std::ptrdiff_t>(at + n + k), b.begin());
          n += k;
          if (n == want) break;
        }
        at += n;
        auto m = reader.commit(n);
        if (!m.ok()) failed = true;
        else if (m.value().has_value()) got = std::move(*m.value());
        continue;
      }
      std::span<const uint8_t> in(msg.data() + at, std::min(piece, msg.size() - at));
      size_t before = in.size();
      auto m = reader.next(in);
      at += before - in.size();
      if (!m.ok()) failed = true;
      else if (m.value().has_value()) got = std::move(*m.value());
    }
    check(r.ok() == (got.has_value()), "the reader and decode_control disagree on a message");
    if (got) {
      auto a = wire::encode_control(key, *got);
      auto b = wire::encode_control(key, r.value());
      check(a.ok() && b.ok() && a.value() == b.value(), "the reader and decode_control decode differently");
    }
  }
  if (!r.ok()) return 0;
  auto size_r = wire::control_message_size(msg);
  check(size_r.ok() && size_r.value() == msg.size(), "control_message_size disagrees with decode");
  auto e1 = wire::encode_control(key, r.value());
  check(e1.ok(), "re-encoding failed");
  check(e1.value() == msg, "encoding is not canonical");
  auto again = wire::decode_control(key, e1.value());
  check(again.ok(), "decode(encode(m)) failed");
  check(again.value().from == r.value().from && again.value().to == r.value().to &&
            again.value().body.index() == r.value().body.index(),
        "decode(encode(m)) changed the header");
  auto e2 = wire::encode_control(key, again.value());
  check(e2.ok() && e2.value() == e1.value(), "decode(encode(m)) re-encodes differently");
  return 0;
}
