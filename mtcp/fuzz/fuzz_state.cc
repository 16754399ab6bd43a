// libFuzzer harness for the connection-state codec (wire/state.h).
//
// Input: byte 0 = options (bit 0: snapshot cap of 64 bytes instead of kSnapshotBytesMax), the
// rest is an encoded state. Checked: no crash; a state that decodes re-encodes to exactly the
// input bytes (a version-1 state re-encodes as version 2, so only the fields are compared
// then), and decoding that again yields the same fields.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "common/buffer.h"
#include "common/limits.h"
#include "wire/state.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_state: check failed: %s\n", what);
    std::abort();
  }
}

bool same(const mtcp::wire::ConnState& a, const mtcp::wire::ConnState& b) {
  return a.conn_id == b.conn_id && a.epoch == b.epoch && a.migrations == b.migrations &&
         a.issuer_id == b.issuer_id && a.snap_id == b.snap_id && a.snap_in_seq == b.snap_in_seq &&
         a.snap_out_seq == b.snap_out_seq && a.snapshot_elided == b.snapshot_elided &&
         a.snapshot == b.snapshot && a.out_log_start == b.out_log_start && a.out_log == b.out_log &&
         a.in_log == b.in_log && a.client_fin == b.client_fin && a.tail_start == b.tail_start &&
         a.out_tail == b.out_tail && a.out_digest == b.out_digest && a.digest_end == b.digest_end &&
         a.digest == b.digest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace wire = mtcp::wire;
  if (size < 1) return 0;
  const size_t cap = (data[0] & 1) != 0 ? 64 : mtcp::kSnapshotBytesMax;
  std::span<const uint8_t> in(data + 1, size - 1);
  auto r = wire::decode_state(in, cap);
  if (!r.ok()) return 0;
  const wire::ConnState& s = r.value();
  check(s.snapshot.size() <= cap, "snapshot over the cap");
  check(s.conn_id != 0 && s.epoch != 0, "zero conn_id or epoch accepted");
  check(s.out_log_start + s.out_log.size() == s.snap_out_seq, "output log does not end at the snapshot");
  check(!s.snapshot_elided || s.snapshot.empty(), "elided snapshot with bytes");
  check(s.snap_out_seq <= s.digest_end && s.digest_end <= s.tail_start, "digest range outside [snap_out_seq, tail_start]");
  check(s.tail_start + s.out_tail.size() >= s.tail_start, "output tail wraps");
  auto e = wire::encode_state(s, cap);
  check(e.ok(), "re-encoding failed");
  if (in[0] != 1) check(e.value() == mtcp::Bytes(in.begin(), in.end()), "encoding is not canonical");
  auto again = wire::decode_state(e.value(), cap);
  check(again.ok(), "decode(encode(s)) failed");
  check(same(s, again.value()), "decode(encode(s)) changed a field");
  return 0;
}
