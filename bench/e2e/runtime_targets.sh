#!/usr/bin/env bash
# The runtime issue's performance targets, measured on loopback with real processes, in one run:
#   1. bulk throughput of M-TCP (echo service, no migration) against plain TCP to the same
#      member, alternating the two, REPEAT times each; medians and their ratio (target >= 0.90);
#   2. lazy migration time (request sent -> ACCEPT from the new member) with a 16 KiB state,
#      a migration every 10 ms under 100 Mbit/s of echo traffic; median and p99 (target < 1 ms);
#   3. migrations per second: one client migrating back to back across three members for
#      5 s, lazy and eager (target >= 1000/s).
# Usage: bench/e2e/runtime_targets.sh [BUILD_DIR] [REPEAT]   (writes JSON to stdout's last line
# and a readable summary before it). Ends only the processes it started.
set -euo pipefail
BIN="${1:-build}/bin"
REPEAT="${2:-5}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
base=$((22000 + ($$ % 900) * 10))  # below the ephemeral range (32768+)
head -c 32 /dev/urandom > "$work/pool.key"
for mode in lazy eager; do
  cat > "$work/$mode.json" <<JSON
{ "pool_key_file": "pool.key", "transfer": "$mode",
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 1))", "control": "127.0.0.1:$((base + 4))"},
               {"id": 2, "data": "127.0.0.1:$((base + 2))", "control": "127.0.0.1:$((base + 5))"},
               {"id": 3, "data": "127.0.0.1:$((base + 3))", "control": "127.0.0.1:$((base + 6))"} ] }
JSON
done
start_members() {  # start_members POOL
  members=()
  for i in 1 2 3; do
    "$BIN/mtcpd" --pool "$1" --id "$i" --service echo -q --state-bytes 16384 --snapshot-every 65536 2>>"$work/members.log" &
    members+=("$!")
    pids+=("$!")
  done
  python3 - $((base + 4)) $((base + 5)) $((base + 6)) <<'PY'
import socket, sys, time
deadline = time.time() + 10
for port in map(int, sys.argv[1:]):
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
        except OSError:
            if time.time() > deadline: sys.exit("member on control port %d did not start" % port)
            time.sleep(0.05)
PY
}
stop_members() {
  for p in "${members[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${members[@]}"; do wait "$p" 2>/dev/null || true; done
}

start_members "$work/lazy.json"
for r in $(seq 1 "$REPEAT"); do
  "$BIN/mtcp-perf" -c --pool "$work/lazy.json" --app echo -n 300000000 -i 0 -J --plain > "$work/plain-$r.json"
  "$BIN/mtcp-perf" -c --pool "$work/lazy.json" --app echo -n 300000000 -i 0 -J > "$work/mtcp-$r.json"
done
"$BIN/mtcp-perf" -c --pool "$work/lazy.json" --app echo -d 5 -b 100 --migrate-every 10 -i 0 -J > "$work/migrate.json"
"$BIN/mtcp-perf" -c --pool "$work/lazy.json" --app echo -d 5 -b 1 --back-to-back -i 0 -J > "$work/rate-lazy.json"
stop_members
start_members "$work/eager.json"
"$BIN/mtcp-perf" -c --pool "$work/eager.json" --app echo -d 5 -b 1 --back-to-back -i 0 -J > "$work/rate-eager.json"
stop_members

python3 - "$work" "$REPEAT" <<'PY'
import json, statistics, sys
work, repeat = sys.argv[1], int(sys.argv[2])
load = lambda name: json.load(open(f"{work}/{name}.json"))
def end(r):
    e = r["end"]
    if e["verdict"] != "ok":
        sys.exit("a run failed: %s %s" % (e["verdict"], e["error"]))
    return e
plain = [end(load(f"plain-{i}"))["received_mbit_s"] for i in range(1, repeat + 1)]
mtcp = [end(load(f"mtcp-{i}"))["received_mbit_s"] for i in range(1, repeat + 1)]
mig = end(load("migrate"))
rl, re_ = end(load("rate-lazy")), end(load("rate-eager"))
out = {
    "bulk": {"plain_mbit_s": plain, "mtcp_mbit_s": mtcp, "plain_median": statistics.median(plain),
             "mtcp_median": statistics.median(mtcp), "ratio": statistics.median(mtcp) / statistics.median(plain)},
    "lazy_migration_16k": {"migrations": mig["migrations_done"], "failed": mig["migrations_failed"],
                            "median_us": mig["downtime_us_median"], "p99_us": mig["downtime_us_p99"]},
    "migrations_per_s": {"lazy": rl["migrations_done"] / rl["seconds"], "eager": re_["migrations_done"] / re_["seconds"],
                         "lazy_median_us": rl["downtime_us_median"], "eager_median_us": re_["downtime_us_median"]},
}
b, m, r = out["bulk"], out["lazy_migration_16k"], out["migrations_per_s"]
print("bulk echo, %d runs each: plain TCP median %.0f Mbit/s, M-TCP median %.0f Mbit/s, ratio %.2f (target >= 0.90)"
      % (repeat, b["plain_median"], b["mtcp_median"], b["ratio"]))
print("lazy migration, 16 KiB state, 100 Mbit/s echo: %d migrations, median %d us, p99 %d us (target median < 1000 us)"
      % (m["migrations"], m["median_us"], m["p99_us"]))
print("back-to-back migrations: lazy %.0f/s (median %d us), eager %.0f/s (median %d us) (target >= 1000/s)"
      % (r["lazy"], r["lazy_median_us"], r["eager"], r["eager_median_us"]))
print(json.dumps(out))
PY
