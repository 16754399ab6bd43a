// The deterministic simulator: one seed drives one client, a pool of servers running the
// reference application, a network of subflows (chopped, delayed, cut) and a control network
// (delayed, lossy, partitioned), plus crashes and forged migrations. Checkers run throughout.
// Same seed, same run: nothing here reads a clock or an outside random source.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/client.h"
#include "core/server.h"
#include "sim/prng.h"
#include "services/ref_model.h"

namespace mtcp::sim {

// What one seed chose; printed with --verbose and summed in the JSON report.
struct Scenario {
  uint32_t servers = 3;
  TransferMode mode = TransferMode::lazy;
  bool ack_after_replication = false;
  // The production service every member runs (services/builtin.h), checked by the client.
  enum class Service { ref, echo, source } service = Service::ref;
  uint64_t input_bytes = 0;   // client input (none for source)
  uint64_t output_bytes = 0;  // source: the stream's length
  svc::RefParams app;         // seed, response_max (ref), snapshot_every, pad_bytes (every service)
  uint32_t seg_max = 0;            // largest segment a subflow chops into
  uint32_t seg_delay_max_ms = 0;   // per-segment delay
  uint32_t ctl_delay_max_ms = 0;
  double ctl_loss = 0;
  uint32_t random_migrations = 0;
  uint32_t pingpong = 0;           // length of the ping-pong burst (0: none)
  uint32_t cuts = 0;               // subflow cuts
  uint32_t partitions = 0;         // control partitions between two servers
  uint32_t ctl_spikes = 0;         // control delay spikes (make claims overlap)
  enum class Crash { none, at_time, on_claim, after_grant } crash = Crash::none;
  uint32_t forged = 0;             // forged / replayed migration attempts
  uint64_t migrate_timeout_ms = 0;
  uint64_t claim_timeout_ms = 0;
  // A migration requested once all output has arrived and the client has closed: it races the
  // member's final ACK and CLOSE (and, once both sides closed, the member freeing it).
  bool end_migration = false;
  // Slow owner: the serving member stops (no input, no timers, no service, like SIGSTOP or a
  // starved CPU) for longer than the claim timeout, while a migration away from it starts.
  uint32_t stalls = 0;
  // One-way control cut: the serving member's control messages are lost (it still receives),
  // while a migration away from it starts.
  uint32_t oneway_cuts = 0;
  // Eager: replication_window_bytes (0: the default, which these small logs never fill), so
  // that the owner holding input back for the alternates' acks is exercised.
  uint64_t repl_window_bytes = 0;
};

struct Outcome {
  uint64_t seed = 0;
  Scenario scenario;
  bool completed = false;          // every byte both ways delivered and checked
  bool failed_explicitly = false;  // the connection ended with an explicit error
  Error failure = Error::ok;
  bool crashed = false;
  uint64_t migrations_done = 0;
  uint64_t migrations_failed = 0;
  uint64_t concurrent_claims = 0;  // claims refused because another member claimed first
  uint64_t forged_refused = 0;
  uint64_t cuts_done = 0;
  uint64_t stalls_done = 0;
  uint64_t oneway_cuts_done = 0;
  uint64_t window_waits = 0;  // every member's replication_window_waits
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t sim_ms = 0;
  std::vector<std::string> violations;
};

// How the whole run is set up, the same for every seed (not drawn from it).
struct RunOptions {
  // The members' service alters the output it regenerates during replay (sim/nondet_app.h):
  // replay verification must end such connections with replay_mismatch, never let it pass.
  bool nondeterministic = false;
  // A choice tape (sim/prng.h): when not empty, its first kScenarioTapeBytes choose the scenario
  // and the rest every later draw of the world (delays, losses, cuts, migration times, crashes,
  // forgeries), the seed only what comes after the tape runs out. The whole-connection fuzzer
  // (mtcp/fuzz/fuzz_engine.cc) hands its input here; `mtcp-sim --tape FILE` replays one.
  std::span<const uint8_t> tape;
};
constexpr size_t kScenarioTapeBytes = 8 * 32;

Scenario make_scenario(uint64_t seed);
// The scenario drawn from a choice tape (RunOptions::tape) instead of a seed.
Scenario make_scenario(uint64_t seed, std::span<const uint8_t> tape);
// Runs one seed. verbosity 1 narrates migrations and faults into `log`; 2 adds every
// control message and server event.
Outcome run_seed(uint64_t seed, int verbosity, std::string* log, const RunOptions& opt = {});

}  // namespace mtcp::sim
