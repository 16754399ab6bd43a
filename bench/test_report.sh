#!/usr/bin/env bash
# Self-test of bench/report.py on a small SYNTHETIC results directory written below (made-up
# figures, only in a temporary folder, never in the repository).
# Usage: bench/test_report.sh [PYTHON]   (default: $PYTHON, else Debian's /usr/bin/python3, else
# python3 on PATH). Checks: the report has the targets table with met and missed lines (and by
# how much), one table per measurement, the short-run note and the profile; the plots are drawn
# and linked when matplotlib is importable, and not with --no-plots; the output is the same on a
# second run; missing optional files say "not measured in this run"; a malformed file or a missing
# key exits 1 naming the file and key; a missing results directory or machine.json exits 1; bad
# arguments exit 2. Prints "report self-test: N passed, M failed" and exits non-zero on a failure.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPORT="$here/report.py"
if [[ -n "${1:-}" ]]; then PY="$1"
elif [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3
else PY=python3
fi
work="$(mktemp -d)"
# KEEP_DIR=DIR keeps the synthetic results and the outputs there for a look.
trap '[[ -n "${KEEP_DIR:-}" ]] && mkdir -p "$KEEP_DIR" && cp -r "$work/." "$KEEP_DIR/"; rm -rf "$work"' EXIT

passed=0
failed=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
has() { grep -qF -- "$2" "$1"; }    # has FILE TEXT
lacks() { ! grep -qF -- "$2" "$1"; }
run() {  # run EXPECTED_STATUS NAME ARGS...: runs report.py (output in $work/NAME.{out,err});
         # counts as one check, and fails when the exit status is not the expected one
  local want="$1" name="$2"; shift 2
  "$PY" "$REPORT" "$@" >"$work/$name.out" 2>"$work/$name.err"
  local got=$?
  if [[ "$got" != "$want" ]]; then
    failed=$((failed + 1))
    echo "FAIL: $name: exit $got, expected $want"; sed 's/^/  /' "$work/$name.err"
    return 1
  fi
  passed=$((passed + 1))
}

# --- synthetic results (made-up numbers) ---------------------------------------------------------
res="$work/results-synthetic"
mkdir -p "$res"
cat >"$res/machine.json" <<'JSON'
{"date": "2000-01-01T00:00:00Z", "git_commit": "0000000synthetic", "command": "bash bench/run.sh --short",
 "mode": "short", "kernel": "synthetic-kernel", "cpu": "Synthetic CPU", "cores": 2, "mem_gib": 8.0,
 "repeat": 3, "build": "RelWithDebInfo", "seconds": 125.4}
JSON
cat >"$res/micro.json" <<'JSON'
{"context": {"library_build_type": "release", "cpu_scaling_enabled": false},
 "benchmarks": [
  {"name": "BM_FrameDecode/64", "run_type": "iteration", "real_time": 41.5, "cpu_time": 41.0,
   "time_unit": "ns", "bytes_per_second": 1.5e9, "items_per_second": 2.4e7},
  {"name": "BM_FrameDecode/16384", "run_type": "iteration", "real_time": 2.5, "cpu_time": 2.4,
   "time_unit": "us", "bytes_per_second": 6.8e9},
  {"name": "BM_CertVerify", "run_type": "iteration", "real_time": 0.25, "cpu_time": 0.25,
   "time_unit": "ms", "items_per_second": 4000},
  {"name": "BM_LogAppend/4096", "run_type": "iteration", "real_time": 900, "cpu_time": 880,
   "time_unit": "ns", "bytes_per_second": 4.5e6},
  {"name": "BM_LogAppend/4096", "run_type": "iteration", "real_time": 1100, "cpu_time": 1000,
   "time_unit": "ns", "bytes_per_second": 3.7e6},
  {"name": "BM_LogAppend/4096_mean", "run_name": "BM_LogAppend/4096", "run_type": "aggregate",
   "aggregate_name": "mean", "real_time": 1000, "cpu_time": 940, "time_unit": "ns"},
  {"name": "BM_LogAppend/4096_median", "run_name": "BM_LogAppend/4096", "run_type": "aggregate",
   "aggregate_name": "median", "real_time": 1000, "cpu_time": 940, "time_unit": "ns",
   "bytes_per_second": 4.1e6}]}
JSON
cat >"$res/bulk.json" <<'JSON'
{"runs": [{"conns": 4, "bytes_per_conn": 1048576, "mtcp_mbit_s": [2000, 2100, 2200],
           "plain_mbit_s": [2300, 2320, 2400]},
          {"conns": 1, "bytes_per_conn": 1048576, "mtcp_mbit_s": [2900, 3000, 3100],
           "plain_mbit_s": [3000, 3100, 3200]}]}
JSON
cat >"$res/oneway.json" <<'JSON'
{"bytes": 2097152000, "iperf3": "iperf 3.12 (synthetic)", "directions": [
  {"direction": "client-sends", "service": "discard",
   "mbit_s": {"iperf3": [30000, 31000, 32000], "mtcp": [25000, 26000, 27000], "plain": [28000, 29000, 30000],
              "proxy": [14000, 15000, 16000]}},
  {"direction": "server-sends", "service": "source",
   "mbit_s": {"iperf3": [30000, 31000, 32000], "mtcp": [20000, 21000, 22000], "plain": [28000, 29000, 30000],
              "proxy": [16000, 16500, 17000], "mtcp_compare": [15000, 15500, 16000]}}]}
JSON
cat >"$res/latency.json" <<'JSON'
{"size": 64, "runs": [{"conns": 1,
  "mtcp": [{"p50_us": 30.0, "p99_us": 60.0, "mean_us": 32.0, "count": 1000},
           {"p50_us": 32.0, "p99_us": 64.0, "mean_us": 33.0, "count": 1000},
           {"p50_us": 34.0, "p99_us": 70.0, "mean_us": 35.0, "count": 1000}],
  "plain": [{"p50_us": 25.0, "p99_us": 50.0, "mean_us": 26.0, "count": 1000},
            {"p50_us": 26.0, "p99_us": 52.0, "mean_us": 27.0, "count": 1000},
            {"p50_us": 27.0, "p99_us": 55.0, "mean_us": 28.0, "count": 1000}]}]}
JSON
cat >"$res/migration.json" <<'JSON'
{"points": [
  {"mode": "lazy", "state_bytes": 0, "count": 20, "p50_us": 300.0, "p99_us": 500.0, "failed": 0, "floor_us": 60.0},
  {"mode": "eager", "state_bytes": 0, "count": 20, "p50_us": 250.0, "p99_us": 450.0, "failed": 0, "floor_us": 60.0},
  {"mode": "lazy", "state_bytes": 16384, "count": 20, "p50_us": 700.0, "p99_us": 1200.0, "failed": 0, "floor_us": 90.0},
  {"mode": "eager", "state_bytes": 16384, "count": 20, "p50_us": 600.0, "p99_us": 1100.0, "failed": 1, "floor_us": 90.0},
  {"mode": "lazy", "state_bytes": 16777216, "count": 20, "p50_us": 15000.0, "p99_us": 21000.0, "failed": 0, "floor_us": 9000.0},
  {"mode": "eager", "state_bytes": 16777216, "count": 20, "p50_us": 20000.0, "p99_us": 26000.0, "failed": 0, "floor_us": 9000.0}]}
JSON
cat >"$res/eager_bulk.json" <<'JSON'
{"bytes": 33554432, "migrating_seconds": 1.5, "migrate_every_ms": 100, "modes": [
  {"mode": "lazy", "mbit_s": [2000.0, 2100.0, 1900.0], "repl_per_byte": [0.0, 0.0, 0.0],
   "migrating_mbit_s": [1800.0, 1900.0, 1700.0], "downtimes_us": [900.0, 1000.0, 1100.0], "failed": 0},
  {"mode": "eager", "mbit_s": [1700.0, 1800.0, 1600.0], "repl_per_byte": [1.8, 1.9, 1.7],
   "migrating_mbit_s": [1500.0, 1400.0, 1600.0], "downtimes_us": [6000.0, 3000.0, 4000.0], "failed": 1},
  {"mode": "eager_ack", "mbit_s": [900.0, 1000.0, 1100.0], "repl_per_byte": [2.9, 3.0, 3.1],
   "migrating_mbit_s": [800.0, 900.0, 1000.0], "downtimes_us": [], "failed": 0}]}
JSON
cat >"$res/rate.json" <<'JSON'
{"points": [{"mode": "lazy", "conns": 1, "per_s": 1500.0, "p50_us": 600.0, "p99_us": 900.0, "failed": 0, "seconds": 2.0},
            {"mode": "lazy", "conns": 8, "per_s": 2400.0, "p50_us": 700.0, "p99_us": 1500.0, "failed": 0, "seconds": 2.0},
            {"mode": "eager", "conns": 1, "per_s": 1300.0, "p50_us": 650.0, "p99_us": 950.0, "failed": 0, "seconds": 2.0},
            {"mode": "eager", "conns": 8, "per_s": 2100.0, "p50_us": 750.0, "p99_us": 1700.0, "failed": 2, "seconds": 2.0}]}
JSON
cat >"$res/conns.json" <<'JSON'
{"runs": [{"transport": "mtcp", "conns": 1000, "opened": 1000, "alive_at_end": 1000, "open_seconds": 0.4,
           "member_rss_before_kib": 9000, "member_rss_hold_kib": 20000, "per_conn_bytes": 11264.0},
          {"transport": "tcp", "conns": 1000, "opened": 1000, "alive_at_end": 1000, "open_seconds": 0.3,
           "member_rss_before_kib": 9000, "member_rss_hold_kib": 9600, "per_conn_bytes": 614.4}]}
JSON
cat >"$res/starved.json" <<'JSON'
{"pct": 5, "rate_mbit_s": 2500, "seconds": 8, "starved_at_s": 3.0, "runs": [
  {"starved_member": 1, "survived": true, "error": "", "moved": true, "moved_after_s": 1.5,
   "migrations_done": 1, "migrations_failed": 0, "failures": [], "received_mbit_s": 2400.0},
  {"starved_member": 2, "survived": true, "error": "", "moved": false, "moved_after_s": null,
   "migrations_done": 0, "migrations_failed": 3, "failures": ["owner unreachable"], "received_mbit_s": 900.0},
  {"starved_member": 3, "survived": true, "error": "", "moved": true, "moved_after_s": 2.25,
   "migrations_done": 2, "migrations_failed": 1, "failures": ["migration timeout"], "received_mbit_s": 2300.0}]}
JSON
printf '%s\n' '### Synthetic profile' '' 'Top frame: `synthetic_function` (12%).' >"$res/profile.md"

# --- full report -----------------------------------------------------------------------------------
md="$work/out/docs/performance.md"
plots="$work/out/docs/perf"
if run 0 full "$res" --out "$md" --plots-dir "$plots"; then
  check "generated-file note" has "$md" "from \`$res\`; do not edit by hand"
  check "short-run note" has "$md" "**Short run.**"
  check "reproduce command" has "$md" "bash bench/run.sh --short"
  check "machine line" has "$md" "- CPU: Synthetic CPU (2 cores)"
  check "run time" has "$md" "- Total run time: 125 s (2 min 5 s)"
  check "targets header" has "$md" "| Target | Goal | Measured | Result |"
  check "bulk target met" has "$md" "| Bulk throughput, 1 conn: M-TCP / plain | ≥ 0.95 | 0.97 | met |"
  check "bulk target missed" has "$md" "**missed**: 0.91 vs ≥ 0.95, 5% short"
  check "latency target met" has "$md" "| Latency overhead, 1 conn: M-TCP − plain, p50 | < 10.0 µs | 6.0 µs | met |"
  check "lazy 16 KiB target" has "$md" "| Migration time, lazy, 16 KiB state: p50 | < 1.00 ms | 0.70 ms | met |"
  check "eager 16 KiB target missed" has "$md" "**missed**: 0.60 ms vs < 0.50 ms, 20% over"
  check "16 MiB floor target" has "$md" "| Migration time, lazy, 16 MiB state: p50 / floor | ≤ 2.00× floor | 1.67× floor | met |"
  check "rate target" has "$md" "| Migration rate (best: lazy, 8 conns) | ≥ 2,000/s | 2,400/s | met |"
  check "16 MiB floor target missed" has "$md" "**missed**: 2.22× floor vs ≤ 2.00× floor, 11% over"
  check "conns target missed" has "$md" "**missed**: 1,000 vs ≥ 10,000, 90% short"
  check "per-conn target" has "$md" "| Memory per idle M-TCP connection | < 16.0 KiB | 11.0 KiB | met |"
  check "targets count" has "$md" "10 of 19 measured targets met."
  check "starved target missed" has "$md" "| Lazy, owner CPU-limited to 5% of a core: runs where the connection survives and the throughput policy moves it | ≥ 100% | 67% | **missed**: 67% vs ≥ 100%, 33% short |"
  check "starved row" has "$md" "| 2 | 2 | yes | — | **no** | 3 | owner unreachable | 900 |"
  check "starved row moved" has "$md" "| 3 | 3 | yes | 2.25 s | yes | 1 | migration timeout | 2,300 |"
  check "small-state floor target missed" has "$md" "| Migration time, lazy, empty state: p50 / floor | ≤ 4.00× floor | 5.00× floor | **missed**"
  check "eager bulk ratio target" has "$md" "| Bulk echo throughput: eager / lazy | ≥ 0.80 | 0.85 | met |"
  check "eager bulk migration target" has "$md" "| Eager migration under bulk traffic: p50 | < 5.00 ms | 4.00 ms | met |"
  check "eager bulk row" has "$md" "| eager | 1,700 | 1,600–1,800 | 0.85 | 1.80 | 1,500 | 3 | 4,000 | 6,000 | 1 |"
  check "eager bulk row without migrations timed" has "$md" "| eager, ack_after_replication | 1,000 | 900–1,100 | 0.50 | 3.00 | 900 | 0 | — | — | 0 |"
  check "one-way target met" has "$md" "| One-way bulk, client sends: M-TCP / iperf3 | ≥ 0.80 | 0.84 | met |"
  check "one-way proxy target missed" has "$md" "| One-way bulk, client sends: mtcp-proxy / iperf3 | ≥ 0.50 | 0.48 | **missed**: 0.48 vs ≥ 0.50, 3% short |"
  check "one-way -R target missed" has "$md" "| One-way bulk, server sends (-R): M-TCP / iperf3 | ≥ 0.80 | 0.68 | **missed**"
  check "one-way row" has "$md" "| server sends (-R) | M-TCP, --verify compare | 15,500 | 15,000–16,000 | 0.50 |"
  check "one-way anchor named" has "$md" "iperf3 (iperf 3.12 (synthetic)) is the anchor"
  check "micro group" has "$md" "| \`BM_FrameDecode\` | 64 | 41.5 ns | 41.0 ns | 1.40 GiB/s | 24.0 M/s |"
  check "micro group row" has "$md" "|  | 16384 | 2.50 µs | 2.40 µs | 6.33 GiB/s |  |"
  check "micro median aggregate" has "$md" "| \`BM_LogAppend\` | 4096 | 1.00 µs | 940 ns | 3.91 MiB/s |  |"
  check "micro ms and k/s" has "$md" "| \`BM_CertVerify\` |  | 250 µs | 250 µs |  | 4.00 k/s |"
  check "bulk row" has "$md" "| 4 | 1 MiB | 2,320 | 2,300–2,400 | 2,100 | 2,000–2,200 | 0.91 |"
  check "latency row" has "$md" "| 1 | 26.0 | 32.0 | +6.0 | 52.0 | 64.0 | +12.0 |"
  check "migration 0 B row" has "$md" "| 0 B | 300 | 500 | 250 | 450 | 60.0 | 5.00 | 4.17 | 0 |"
  check "migration 16 MiB row" has "$md" "| 16 MiB | 15,000 | 21,000 | 20,000 | 26,000 | 9,000 | 1.67 | 2.22 | 0 |"
  check "rate row" has "$md" "| eager | 8 | 2,100 | 750 | 1,700 | 2 | 2.0 |"
  check "conns rows" has "$md" "| plain TCP | 1,000 | 1,000 | 1,000 | 0.3 | 8.8 | 9.4 | 614 B |"
  check "profile verbatim" has "$md" 'Top frame: `synthetic_function` (12%).'
  check "nothing unmeasured" lacks "$md" "not measured in this run"
  if "$PY" -c 'import matplotlib' 2>/dev/null; then
    for p in oneway bulk migration rate; do
      check "plot $p.png drawn" test -s "$plots/$p.png"
      check "plot $p.png linked" has "$md" "](perf/$p.png)"
    done
  else
    echo "note: matplotlib not importable by $PY; plot checks skipped"
    check "plot note" has "$md" "Plot not drawn: matplotlib is not installed."
  fi
  cp "$md" "$work/first.md"
  run 0 again "$res" --out "$md" --plots-dir "$plots" && check "same report twice" cmp -s "$md" "$work/first.md"
fi

# --- no plots, and only machine.json -------------------------------------------------------------
only="$work/only-machine"
mkdir -p "$only"
cp "$res/machine.json" "$only/"
md2="$work/out2/performance.md"
if run 0 minimal "$only" --out "$md2" --plots-dir "$work/out2/perf" --no-plots; then
  for section in "Micro-benchmarks" "One-way bulk against iperf3" "Bulk throughput" "Latency" "Migration time" "Migration rate" "Idle connections"; do
    check "$section not measured" grep -qzF -- $'## '"$section"$'\n\nNot measured in this run.' "$md2"
  done
  check "targets not measured" has "$md2" "| Bulk throughput: M-TCP / plain | ≥ 0.95 | — | not measured in this run |"
  check "0 of 0 targets" has "$md2" "0 of 0 measured targets met."
  check "profiling link" has "$md2" "what was changed because of it: [profiling.md]("
  check "no plots dir" test ! -e "$work/out2/perf"
  check "no image links" lacks "$md2" "!["
fi
# --- the starved-member run skipped (no root or no cgroup v1): said why, target not measured ---------
skip="$work/starved-skipped"
mkdir -p "$skip"
cp "$res/machine.json" "$skip/"
printf '%s\n' '{"pct": 5, "rate_mbit_s": 2500, "seconds": 8, "starved_at_s": 3.0, "runs": [], "skipped": "not running as root (synthetic)"}' >"$skip/starved.json"
md5="$work/out5/performance.md"
if run 0 starved-skipped "$skip" --out "$md5" --no-plots; then
  check "starved skipped: why" has "$md5" "Skipped in this run: not running as root (synthetic)."
  check "starved skipped: target" has "$md5" "| Lazy, owner CPU-limited to 5% of a core: runs where the connection survives and the throughput policy moves it | ≥ 100% | — | not measured in this run |"
fi
# --- one-way without iperf3: no anchor, no ratio, said so -------------------------------------------
noanchor="$work/no-iperf3"
mkdir -p "$noanchor"
cp "$res/machine.json" "$noanchor/"
"$PY" - "$res/oneway.json" "$noanchor/oneway.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["iperf3"] = None
for d in doc["directions"]:
    del d["mbit_s"]["iperf3"]
json.dump(doc, open(sys.argv[2], "w"))
PY
md4="$work/out4/performance.md"
if run 0 no-iperf3 "$noanchor" --out "$md4" --no-plots; then
  check "no anchor said" has "$md4" "**iperf3 was not installed for this run**"
  check "no anchor: target not measured" has "$md4" "| One-way bulk, client sends: M-TCP / iperf3 | ≥ 0.80 | — | not measured in this run |"
  check "no anchor: rates still shown" has "$md4" "| client sends | M-TCP | 26,000 | 25,000–27,000 | — |"
fi
run 0 noplots "$res" --out "$work/out3/p.md" --plots-dir "$work/out3/perf" --no-plots \
  && check "--no-plots draws nothing" test ! -e "$work/out3/perf"

# --- errors ----------------------------------------------------------------------------------------
bad="$work/bad"
mkdir -p "$bad"
cp "$res/machine.json" "$bad/"
echo '{"runs": [ {"conns": 1,' >"$bad/bulk.json"
run 1 syntax "$bad" --out "$work/bad.md" --no-plots && check "syntax error names file" has "$work/syntax.err" "bulk.json: not valid JSON"
echo '{"runs": [{"conns": 1, "bytes_per_conn": 1, "plain_mbit_s": [1]}]}' >"$bad/bulk.json"
run 1 missing-key "$bad" --out "$work/bad.md" --no-plots \
  && check "missing key named" has "$work/missing-key.err" "bulk.json: runs[0]: missing key 'mtcp_mbit_s'"
rm "$bad/bulk.json"
echo '{"points": [{"mode": "fast", "state_bytes": 0}]}' >"$bad/migration.json"
run 1 bad-value "$bad" --out "$work/bad.md" --no-plots \
  && check "bad value named" has "$work/bad-value.err" "migration.json: points[0].mode: expected one of lazy, eager"
check "no report written on error" test ! -e "$work/bad.md"
rm "$bad/migration.json" "$bad/machine.json"
run 1 no-machine "$bad" --out "$work/bad.md" && check "missing machine.json named" has "$work/no-machine.err" "machine.json: missing"
run 1 no-dir "$work/does-not-exist" --out "$work/bad.md" && check "missing dir named" has "$work/no-dir.err" "results directory not found"
run 2 no-args
run 2 bad-option "$res" --bogus

echo "report self-test: $passed passed, $failed failed"
[[ "$failed" == 0 ]]
