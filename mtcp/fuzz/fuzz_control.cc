// libFuzzer harness for the control-message codec (wire/control.h).
//
// Input: byte 0 selects the mode (mod 3), the rest is the message material:
//   0  the bytes as received from the network: decode_control(key, bytes);
//   1  the bytes are header + body, signed with the pool key before decoding, so a header that
//      frames correctly reaches the body parser;
//   2  byte 0 of the rest is a message type and the remainder a body; a valid header and MAC
//      are built around them, so the fuzzer works on body parsing alone.
// Checked: no crash; what decodes re-encodes to exactly the same bytes and decodes again;
// control_message_size agrees with a successful decode. Every input is also offered to
// decode_challenge (the receiver's challenge that opens a control connection): what decodes
// re-encodes to the same 24 bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

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
  switch (data[0] % 3) {
    case 0:
      msg.assign(rest.begin(), rest.end());
      break;
    case 1:
      msg.assign(rest.begin(), rest.end());
      sign(msg, key);
      break;
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
