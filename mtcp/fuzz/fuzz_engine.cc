// libFuzzer harness for whole connections on the sans-IO core: the deterministic simulator
// (sim/world.h) with the fuzzer's input as its choice tape (sim/prng.h). The input chooses the
// scenario (pool size, lazy or eager, ack after replication, service, sizes, segment sizes and
// delays, control delay and loss, how many migrations, ping-pongs, cuts, partitions, control
// spikes, the crash and forged MIGRATEs, timeouts) and then every later draw: when each segment
// and control message arrives, which trigger fires when, the migration targets, the forgeries'
// bytes. The production engines, engine host and services run unchanged.
//
// Checked: no crash, no sanitizer report, no broken invariant (MTCP_ASSERT aborts), and no
// violation of the simulator's checkers: every byte delivered exactly once and in order both
// ways (or an explicit failure with a reason), no forged MIGRATE accepted, one owner per epoch,
// nothing stuck or livelocked. A failing input replays with `mtcp-sim --tape FILE --verbose`.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "sim/world.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  mtcp::sim::RunOptions opt;
  opt.tape = std::span<const uint8_t>(data, size);
  const auto out = mtcp::sim::run_seed(1, 0, nullptr, opt);
  if (!out.violations.empty()) {
    std::fprintf(stderr, "fuzz_engine: %zu violation(s); first: %s\n(replay: mtcp-sim --tape <this input> --verbose)\n",
                 out.violations.size(), out.violations.front().c_str());
    std::abort();
  }
  return 0;
}
