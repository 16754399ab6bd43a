// The transferred connection state codec (wire/state.h): encode and decode with snapshots of
// 0 B to the cap (kSnapshotBytesMax = Limits::snapshot_bytes_max = 16 MiB; the cap applies to
// the snapshot bytes, the state's own fields come on top). The logs carry 4 KiB of
// unacknowledged output and 4 KiB of input since the snapshot, as a live connection would.
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "common/limits.h"
#include "wire/state.h"

namespace mtcp::bench {
namespace {

constexpr size_t kLogBytes = 4096;

wire::ConnState sample_state(size_t snapshot_bytes) {
  wire::ConnState s;
  s.conn_id = 0x0102030405060708ull;
  s.epoch = 5;
  s.migrations = 4;
  s.issuer_id = 1;
  s.snap_id = 9;
  s.snap_in_seq = 1u << 30;
  s.snap_out_seq = 1u << 30;
  s.snapshot = pattern_bytes(snapshot_bytes, 1);
  s.out_log = pattern_bytes(kLogBytes, 2);
  s.out_log_start = s.snap_out_seq - s.out_log.size();
  s.in_log = pattern_bytes(kLogBytes, 3);
  return s;
}

bool same(const wire::ConnState& a, const wire::ConnState& b) {
  return a.conn_id == b.conn_id && a.epoch == b.epoch && a.migrations == b.migrations &&
         a.issuer_id == b.issuer_id && a.snap_id == b.snap_id && a.snap_in_seq == b.snap_in_seq &&
         a.snap_out_seq == b.snap_out_seq && a.snapshot == b.snapshot && a.out_log_start == b.out_log_start &&
         a.out_log == b.out_log && a.in_log == b.in_log && a.client_fin == b.client_fin &&
         a.snapshot_elided == b.snapshot_elided && a.out_log_tail == b.out_log_tail &&
         a.in_log_kept == b.in_log_kept;
}

void snapshot_sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {int64_t{0}, kKiB, 16 * kKiB, kMiB, 16 * kMiB}) b->Arg(n);
}

// Checks the round trip at this size and that the cap holds (one byte more is refused).
const char* check_codec(const wire::ConnState& s) {
  auto enc = wire::encode_state(s, Limits{}.snapshot_bytes_max);
  if (!enc) return "encode_state refused a state within the cap";
  auto dec = wire::decode_state(*enc, Limits{}.snapshot_bytes_max);
  if (!dec || !same(*dec, s)) return "state does not round-trip";
  if (s.snapshot.size() == kSnapshotBytesMax) {
    wire::ConnState over = s;
    over.snapshot.push_back(0);
    if (wire::encode_state(over).error() != Error::snapshot_too_large) return "snapshot above the cap accepted";
  }
  return nullptr;
}

void BM_StateEncode(benchmark::State& state) {
  const wire::ConnState s = sample_state(static_cast<size_t>(state.range(0)));
  if (const char* err = check_codec(s)) {
    state.SkipWithError(err);
    return;
  }
  size_t encoded = 0;
  for (auto _ : state) {
    auto enc = wire::encode_state(s, Limits{}.snapshot_bytes_max);
    if (!enc) {
      state.SkipWithError("encode_state failed inside the timed loop");
      break;
    }
    encoded = enc->size();
    benchmark::DoNotOptimize(enc.value().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(encoded));
  state.counters["state_bytes"] = static_cast<double>(encoded);
}
BENCHMARK(BM_StateEncode)->Apply(snapshot_sizes);

void BM_StateDecode(benchmark::State& state) {
  const wire::ConnState s = sample_state(static_cast<size_t>(state.range(0)));
  if (const char* err = check_codec(s)) {
    state.SkipWithError(err);
    return;
  }
  const Bytes enc = wire::encode_state(s).value();
  for (auto _ : state) {
    auto dec = wire::decode_state(enc, Limits{}.snapshot_bytes_max);
    if (!dec) {
      state.SkipWithError("decode_state failed inside the timed loop");
      break;
    }
    benchmark::DoNotOptimize(dec.value().snapshot.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(enc.size()));
  state.counters["state_bytes"] = static_cast<double>(enc.size());
}
BENCHMARK(BM_StateDecode)->Apply(snapshot_sizes);

}  // namespace
}  // namespace mtcp::bench
