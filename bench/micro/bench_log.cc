// The logs of the data path: the retained send log (core/send_log.h: append, take_unsent as
// poll_transmit does, ack as the peer's ACKs arrive) and the server's input log (a SliceQueue:
// push as DATA arrives, view as the application reads, drop_front when it snapshots).
// Steady state: `window` slices stay in the log (sent but not yet acknowledged, or read but not
// yet snapshotted). The window is a parameter because SliceQueue::view walks the queue from its
// front: the cost of one item grows with the number of slices held.
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_util.h"
#include "common/buffer.h"
#include "core/send_log.h"

namespace mtcp::bench {
namespace {

void log_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"slice", "window"});
  b->Args({64, 64})->Args({64, 16384});          // 4 KiB and 1 MiB held
  b->Args({16 * kKiB, 64})->Args({16 * kKiB, 256});  // 1 MiB and 4 MiB held
}

// One item: append a slice, take it as unsent (one DATA frame's worth), acknowledge up to the
// slice written `window` appends earlier.
void BM_SendLogAppendAck(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  const auto window = static_cast<size_t>(state.range(1));
  const BlockPtr block = make_block(pattern_bytes(n));
  core::SendLog log(Limits{}.send_log_bytes_max);
  log.reset(0);
  std::vector<Slice> out;
  // Fill the window (one take for all of it), then a few steady-state items, checking that
  // what goes in comes out and that acks trim.
  bool ok = true;
  for (size_t i = 0; i < window; ++i) ok = ok && log.append(Slice(block)).ok();
  ok = ok && log.take_unsent(window * n, out) == 0 && out.size() == window;
  for (const auto& s : out) ok = ok && s.block == block && s.len == n;
  for (size_t i = 0; ok && i < 16; ++i) {
    out.clear();
    ok = log.append(Slice(block)).ok() && log.take_unsent(n, out) == (window + i) * n && out.size() == 1 &&
         out[0].block == block && log.ack(log.end() - window * n).ok() && log.base() == (i + 1) * n &&
         log.size() == window * n;
  }
  if (!ok) {
    state.SkipWithError("send log append/take/ack misbehaves");
    return;
  }
  for (auto _ : state) {
    out.clear();
    if (!log.append(Slice(block))) {
      state.SkipWithError("send log full: acks do not trim");
      break;
    }
    uint64_t dsn = log.take_unsent(n, out);
    benchmark::DoNotOptimize(dsn);
    benchmark::DoNotOptimize(out.data());
    (void)log.ack(log.end() - window * n);
  }
  if (!state.error_occurred() && log.size() != window * n) state.SkipWithError("send log grew");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
}
BENCHMARK(BM_SendLogAppendAck)->Apply(log_args);

// One item: push a received payload slice and read it (a view at the application's position,
// as conn_read_slices does); each time `window` slices have been read the application
// snapshots and they are dropped (conn_snapshot's drop_front).
void BM_InputLogAppendTrim(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  const auto window = static_cast<size_t>(state.range(1));
  const BlockPtr block = make_block(pattern_bytes(n));
  SliceQueue log;
  std::vector<Slice> read;
  size_t app_in = 0;  // read position relative to the front of the log
  size_t k = 0;
  // Correctness once: pushed slices read back as themselves, a snapshot empties the log.
  for (size_t i = 0; i < window; ++i) log.push(Slice(block));
  log.view(0, window * n, read);
  bool ok = read.size() == window && log.flatten((window - 1) * n, n) == *block;
  for (const auto& s : read) ok = ok && s.block == block && s.len == n;
  log.drop_front(window * n);
  if (!ok || !log.empty()) {
    state.SkipWithError("input log push/view/drop misbehaves");
    return;
  }
  for (auto _ : state) {
    log.push(Slice(block));
    read.clear();
    log.view(app_in, n, read);
    benchmark::DoNotOptimize(read.data());
    app_in += n;
    if (++k == window) {
      log.drop_front(app_in);
      app_in = 0;
      k = 0;
    }
  }
  if (log.size() > window * n) state.SkipWithError("input log grew");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
}
BENCHMARK(BM_InputLogAppendTrim)->Apply(log_args);

}  // namespace
}  // namespace mtcp::bench
