// libFuzzer harness for the connection-state codec (wire/state.h).
//
// Input: byte 0 = options (bit 0: snapshot cap of 64 bytes instead of kSnapshotBytesMax), the
// rest is an encoded state. Checked: no crash; a state that decodes re-encodes to exactly the
// input bytes (a version-1 state re-encodes as version 2, so only the fields are compared
// then), and decoding that again yields the same fields. The other ways in and out agree with
// these: decoding from a shared block (a large snapshot left in place) gives the same state,
// and encoding with the byte fields as pieces, whole or cut around the snapshot, gives the same
// bytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

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

  auto shared = wire::decode_state(mtcp::make_block(mtcp::Bytes(in.begin(), in.end())), cap);
  check(shared.ok(), "the block decoder refused what the span decoder took");
  wire::ConnState flat = shared.value();
  auto snap = shared->snapshot_bytes();
  flat.snapshot.assign(snap.begin(), snap.end());
  flat.snapshot_shared = {};
  check(same(s, flat), "the block decoder gave another state");

  wire::ConnState bare = s;
  wire::StatePieces pieces;
  pieces.snapshot = s.snapshot;
  // Each log cut in two pieces at its middle.
  auto halves = [](const mtcp::Bytes& b, std::vector<std::span<const uint8_t>>& out) {
    std::span<const uint8_t> all(b);
    out.push_back(all.first(b.size() / 2));
    out.push_back(all.subspan(b.size() / 2));
  };
  halves(s.out_log, pieces.out_log);
  halves(s.in_log, pieces.in_log);
  halves(s.out_tail, pieces.out_tail);
  bare.snapshot.clear();
  bare.out_log.clear();
  bare.in_log.clear();
  bare.out_tail.clear();
  auto whole = wire::encode_state(bare, pieces, cap);
  check(whole.ok() && whole.value() == e.value(), "encoding from pieces differs");
  auto around = wire::encode_state_around(bare, pieces, cap);
  check(around.ok(), "encoding around the snapshot failed");
  mtcp::Bytes joined = around->before;
  joined.insert(joined.end(), s.snapshot.begin(), s.snapshot.end());
  joined.insert(joined.end(), around->after.begin(), around->after.end());
  check(joined == e.value(), "encoding around the snapshot differs");
  return 0;
}
