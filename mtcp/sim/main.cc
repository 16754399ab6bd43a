// mtcp-sim: run the deterministic simulator for one seed or a range of seeds.
//   mtcp-sim --seed N [--verbose]        replay one seed exactly, optionally narrating it
//   mtcp-sim --seeds N [--start S] [--json]   run seeds S..S+N-1 and summarise
// Exit status: 0 no violation, 1 at least one violation, 2 bad usage.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>

#include "sim/world.h"

namespace {

const char* crash_name(mtcp::sim::Scenario::Crash c) {
  switch (c) {
    case mtcp::sim::Scenario::Crash::none: return "none";
    case mtcp::sim::Scenario::Crash::at_time: return "at_time";
    case mtcp::sim::Scenario::Crash::on_claim: return "on_claim";
    case mtcp::sim::Scenario::Crash::after_grant: return "after_grant";
  }
  return "?";
}

std::string mode_name(const mtcp::sim::Scenario& s) {
  if (s.mode == mtcp::TransferMode::lazy) return "lazy";
  return s.ack_after_replication ? "eager+ack-after-replication" : "eager";
}

nlohmann::json scenario_json(const mtcp::sim::Scenario& s) {
  return {{"servers", s.servers},
          {"mode", mode_name(s)},
          {"service", s.service == mtcp::sim::Scenario::Service::ref ? "ref" : s.service == mtcp::sim::Scenario::Service::echo ? "echo" : "source"},
          {"input_bytes", s.input_bytes},
          {"output_bytes", s.output_bytes},
          {"response_max", s.app.response_max},
          {"snapshot_every", s.app.snapshot_every},
          {"snapshot_pad_bytes", s.app.pad_bytes},
          {"segment_max", s.seg_max},
          {"segment_delay_max_ms", s.seg_delay_max_ms},
          {"control_delay_max_ms", s.ctl_delay_max_ms},
          {"control_loss", s.ctl_loss},
          {"random_migrations", s.random_migrations},
          {"pingpong", s.pingpong},
          {"cuts", s.cuts},
          {"partitions", s.partitions},
          {"control_spikes", s.ctl_spikes},
          {"stalls", s.stalls},
          {"oneway_cuts", s.oneway_cuts},
          {"repl_window_bytes", s.repl_window_bytes},
          {"crash", crash_name(s.crash)},
          {"forged", s.forged},
          {"migrate_timeout_ms", s.migrate_timeout_ms},
          {"claim_timeout_ms", s.claim_timeout_ms}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mtcp-sim: deterministic simulation of M-TCP migrations under faults"};
  std::optional<uint64_t> seed;
  uint64_t seeds = 0;
  uint64_t start = 1;
  bool json = false;
  int verbose = 0;
  std::string json_out;
  app.add_option("--seed", seed, "Run (replay) exactly this seed");
  app.add_option("--seeds", seeds, "Run this many seeds");
  app.add_option("--start", start, "First seed of --seeds (default 1)");
  app.add_flag("--json", json, "Print a JSON summary on stdout");
  app.add_flag("-v,--verbose", verbose, "Narrate each migration and fault (with --seed); twice (-vv) adds control messages and server events");
  app.add_option("--json-out", json_out, "Also write the JSON summary of --seeds to this file");
  mtcp::sim::RunOptions run_opt;
  app.add_flag("--nondeterministic", run_opt.nondeterministic,
               "Members run a service that alters the output it regenerates in replay: replay verification must end "
               "those connections with replay_mismatch");
  std::string tape_path;
  app.add_option("--tape", tape_path,
                 "Replay a choice tape: a whole-connection fuzzer input (fuzz_engine) that chooses the scenario, "
                 "timings, faults and migrations; with --seed (default 1) for what comes after it");
  CLI11_PARSE(app, argc, argv);
  std::vector<uint8_t> tape;
  if (!tape_path.empty()) {
    std::ifstream in(tape_path, std::ios::binary);
    if (!in) {
      std::cerr << "mtcp-sim: cannot read the tape " << tape_path << "\n";
      return 2;
    }
    tape.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (tape.empty()) {
      std::cerr << "mtcp-sim: the tape " << tape_path << " is empty\n";
      return 2;
    }
    if (seeds != 0) {
      std::cerr << "mtcp-sim: --tape replays one run; it does not go with --seeds\n";
      return 2;
    }
    if (!seed) seed = 1;
    run_opt.tape = tape;
  }
  if (!seed && seeds == 0) {
    std::cerr << "mtcp-sim: give --seed N, --seeds N or --tape FILE (see --help)\n";
    return 2;
  }

  auto wall_start = std::chrono::steady_clock::now();
  if (seed) {
    std::string log;
    auto out = mtcp::sim::run_seed(*seed, verbose, &log, run_opt);
    if (json) {
      nlohmann::json j = {{"seed", *seed},
                          {"scenario", scenario_json(out.scenario)},
                          {"completed", out.completed},
                          {"failed_explicitly", out.failed_explicitly},
                          {"failure", std::string(mtcp::to_string(out.failure))},
                          {"migrations_done", out.migrations_done},
                          {"migrations_failed", out.migrations_failed},
                          {"bytes_in", out.bytes_in},
                          {"bytes_out", out.bytes_out},
                          {"sim_ms", out.sim_ms},
                          {"violations", out.violations}};
      std::cout << j.dump(2) << "\n";
    } else {
      const auto& sc = out.scenario;
      if (verbose > 0) {
        std::cout << "seed " << *seed << ": " << sc.servers << " servers, " << mode_name(sc) << " transfer, "
                  << sc.input_bytes << " B of input, snapshots of " << sc.app.pad_bytes + 28 << " B every "
                  << sc.app.snapshot_every << " B, " << sc.random_migrations << " random migrations"
                  << (sc.pingpong ? ", ping-pong x" + std::to_string(sc.pingpong) : "") << ", " << sc.cuts << " cuts, "
                  << sc.partitions << " partitions, crash: " << crash_name(sc.crash) << ", " << sc.forged << " forged MIGRATEs\n";
      }
      std::cout << log;
      std::cout << "seed " << *seed << " (" << mode_name(out.scenario) << ", " << out.scenario.servers << " servers): "
                << (out.completed ? "completed" : out.failed_explicitly ? "failed explicitly: " + std::string(mtcp::to_string(out.failure)) : "unfinished")
                << ", " << out.migrations_done << " migrations done, " << out.migrations_failed << " failed, " << out.bytes_in
                << " B in, " << out.bytes_out << " B out, " << out.sim_ms << " ms simulated, " << out.violations.size()
                << " violations\n";
      for (const auto& v : out.violations) std::cout << "  violation: " << v << "\n";
    }
    return out.violations.empty() ? 0 : 1;
  }

  uint64_t migrations_done = 0, migrations_failed = 0, completed = 0, failed = 0, bytes = 0, sim_ms = 0;
  std::map<std::string, uint64_t> faults;
  std::map<std::string, uint64_t> failures;
  nlohmann::json violations = nlohmann::json::array();
  std::vector<uint64_t> failing;
  for (uint64_t s = start; s < start + seeds; ++s) {
    auto out = mtcp::sim::run_seed(s, 0, nullptr, run_opt);
    migrations_done += out.migrations_done;
    migrations_failed += out.migrations_failed;
    completed += out.completed ? 1 : 0;
    if (out.failed_explicitly) {
      ++failed;
      ++failures[std::string(mtcp::to_string(out.failure))];
    }
    bytes += out.bytes_in + out.bytes_out;
    sim_ms += out.sim_ms;
    const auto& sc = out.scenario;
    ++faults["mode_" + mode_name(sc)];
    ++faults["servers_" + std::to_string(sc.servers)];
    if (sc.crash != mtcp::sim::Scenario::Crash::none) ++faults[std::string("crash_") + crash_name(sc.crash)];
    if (out.crashed) ++faults["crashes_happened"];
    if (sc.pingpong) ++faults["pingpong_seeds"];
    if (sc.end_migration) ++faults["end_migration_seeds"];
    faults["subflow_cuts"] += out.cuts_done;
    faults["control_partitions"] += sc.partitions;
    faults["control_delay_spikes"] += sc.ctl_spikes;
    if (sc.ctl_loss > 0) ++faults["control_loss_seeds"];
    if (sc.seg_max < 512) ++faults["tiny_segment_seeds"];
    if (sc.seg_delay_max_ms > 0) ++faults["delayed_segment_seeds"];
    faults["forged_migrations_refused"] += out.forged_refused;
    faults["competing_claims_refused"] += out.concurrent_claims;
    if (sc.app.pad_bytes >= 4096) ++faults["large_snapshot_seeds"];
    // Liveness under a slow owner and one-way control cuts (issue 14): how many happened, and
    // in how many of those seeds the connection completed.
    faults["slow_owner_stalls"] += out.stalls_done;
    faults["oneway_control_cuts"] += out.oneway_cuts_done;
    if (out.stalls_done > 0) ++faults["stall_seeds"];
    if (out.stalls_done > 0 && out.completed) ++faults["stall_seeds_completed"];
    if (out.oneway_cuts_done > 0) ++faults["oneway_seeds"];
    if (out.oneway_cuts_done > 0 && out.completed) ++faults["oneway_seeds_completed"];
    if (out.window_waits > 0) ++faults["window_seeds"];
    if (out.window_waits > 0 && out.completed) ++faults["window_seeds_completed"];
    // Lost although no member crashed (every owner alive): a violation too (world.cc finish).
    if (out.failed_explicitly && !out.crashed) ++faults["lost_with_owner_alive"];
    if (!out.violations.empty()) {
      failing.push_back(s);
      violations.push_back({{"seed", s}, {"violations", out.violations}});
      std::cerr << "mtcp-sim: seed " << s << " FAILED (replay: mtcp-sim --seed " << s << " --verbose): " << out.violations.front()
                << "\n";
    }
  }
  double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  if (json || !json_out.empty()) {
    nlohmann::json j = {{"first_seed", start},
                        {"seeds_run", seeds},
                        {"completed", completed},
                        {"failed_explicitly", failed},
                        {"explicit_failures", failures},
                        {"migrations_done", migrations_done},
                        {"migrations_failed_explicitly", migrations_failed},
                        {"bytes_checked", bytes},
                        {"simulated_ms", sim_ms},
                        {"faults", faults},
                        {"violation_count", failing.size()},
                        {"failing_seeds", failing},
                        {"violations", violations},
                        {"wall_seconds", wall_s}};
    if (!json_out.empty()) {
      std::FILE* f = std::fopen(json_out.c_str(), "w");
      if (!f) {
        std::cerr << "mtcp-sim: cannot write " << json_out << "\n";
        return 2;
      }
      std::string text = j.dump(2) + "\n";
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
    }
    if (json) std::cout << j.dump(2) << "\n";
  }
  if (!json) {
    std::cout << "mtcp-sim: seeds " << start << ".." << start + seeds - 1 << ": " << completed << " completed, " << failed
              << " failed explicitly, " << migrations_done << " migrations done, " << migrations_failed
              << " attempts failed explicitly, " << failing.size() << " seeds with violations (" << wall_s << " s)\n";
  }
  return failing.empty() ? 0 : 1;
}
