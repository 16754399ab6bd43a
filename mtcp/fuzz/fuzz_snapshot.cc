// libFuzzer harness for the snapshot codec the echo and source services share
// (services/snapshot_codec.h): a snapshot an importing member reads from another member.
//
// Input: bytes 0..1 choose the state length the importing member expects (0 .. 65535), the rest
// is the snapshot. Checked: no crash; a refusal says why; what decodes re-encodes to exactly the
// same bytes (the state bytes are derived from the positions, so nothing else can pass).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "services/snapshot_codec.h"

namespace {
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_snapshot: check failed: %s\n", what);
    std::abort();
  }
}
constexpr uint32_t kMagic = 0x45434831;  // any service's magic: the codec takes it as a parameter
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint32_t state_bytes = static_cast<uint32_t>(data[0]) << 8 | data[1];
  std::span<const uint8_t> snap(data + 2, size - 2);
  mtcp::svc::Positions pos;
  std::string why;
  if (!mtcp::svc::decode_positions(kMagic, snap, state_bytes, pos, why)) {
    check(!why.empty(), "a refusal says why");
    return 0;
  }
  const mtcp::Bytes again = mtcp::svc::encode_positions(kMagic, pos, state_bytes);
  check(again.size() == snap.size() && std::equal(again.begin(), again.end(), snap.begin()),
        "a decoded snapshot re-encodes to the same bytes");
  return 0;
}
