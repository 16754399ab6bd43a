#!/usr/bin/env bash
# End-to-end on loopback (issue 14): lazy transfer, the serving member stopped with SIGSTOP for
# STOP_S seconds (default 3) in the middle of an echo transfer, then continued with SIGCONT.
# Usage: lazy_stop.sh PATH/TO/mtcp-perf [STOP_S]
# Two runs, each with three mtcp-perf members (echo service, lazy) and a paced client:
#   1. stall policy (1 s): the client tries to leave the stopped member; the claims to the
#      stopped owner time out and are abandoned (docs/PROTOCOL.md §5.2 "Abandoned claims").
#   2. no policy: the client just waits for the member.
# Each must end with verdict ok, every byte echoed and verified, and equal SHA-256 of both
# directions. The script prints the migrations (target, error or downtime) of each run.
# Ends only the processes it started (by PID; stopped ones get SIGCONT first) and removes its
# temporary folder.
set -uo pipefail
PERF="$1"
STOP_S="${2:-3}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base=$((23000 + ($$ % 90) * 10))  # this test's port range: 23000-23899
(umask 077 && head -c 32 /dev/urandom > "$work/pool.key")
cat > "$work/lazy.json" <<JSON
{ "pool_key_file": "pool.key", "transfer": "lazy",
  "limits": { "claim_timeout_ms": 300 },
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 1))", "control": "127.0.0.1:$((base + 4))"},
               {"id": 2, "data": "127.0.0.1:$((base + 2))", "control": "127.0.0.1:$((base + 5))"},
               {"id": 3, "data": "127.0.0.1:$((base + 3))", "control": "127.0.0.1:$((base + 6))"} ] }
JSON

start_members() {
  member_pids=()
  for i in 1 2 3; do
    "$PERF" -s --pool "$work/lazy.json" --id "$i" --app echo 2>"$work/$1-member$i.log" &
    member_pids+=("$!")
    pids+=("$!")
  done
  wait_listening $((base + 4)) $((base + 5)) $((base + 6))
}
stop_members() {
  for p in "${member_pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  for p in "${member_pids[@]}"; do wait "$p" 2>/dev/null; done
}
stop_member1_when_serving() {  # $1: run name. 1.5 s after member 1 opened the connection
  for _ in $(seq 1 200); do
    grep -q "opened" "$work/$1-member1.log" 2>/dev/null && break
    sleep 0.05
  done
  sleep 1.5
  kill -STOP "${member_pids[0]}"
  echo "  $1: member 1 stopped (SIGSTOP) for $STOP_S s"
  sleep "$STOP_S"
  kill -CONT "${member_pids[0]}"
  echo "  $1: member 1 continued (SIGCONT)"
}

for run in stall wait; do
  start_members "$run"
  policy=(--policy stall --stall-ms 1000)
  [[ $run == wait ]] && policy=(--policy none)
  stop_member1_when_serving "$run" &
  stopper=$!
  "$PERF" -c --pool "$work/lazy.json" --app echo -d $((STOP_S + 5)) -b 40 "${policy[@]}" -i 0 -J -t $((STOP_S + 60)) \
    > "$work/$run.out"
  rc=$?
  wait "$stopper"
  summary=$(python3 - "$work/$run.out" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("bad no JSON result (%s)" % e)
    sys.exit()
e = r["end"]
good = (e["verdict"] == "ok" and e["sha256_sent"] == e["sha256_received"] and e["bytes_received"] == e["bytes_sent"]
        and e["bytes_received"] > 0)
moves = ["->%d %s" % (m["to"], m["error"] if "error" in m else "ok %d us" % m.get("downtime_us", 0)) for m in r["migrations"]]
print("good" if good else "bad", "%s, %d bytes each way, sha256 %s, migrations: %s" % (
    e["verdict"], e["bytes_received"], e["sha256_received"][:16], "; ".join(moves) or "none"))
PY
)
  echo "  $run: $summary (exit $rc)"
  grep -h "abandon\|moved away\|imported\|resumed" "$work/$run"-member*.log 2>/dev/null | head -8 | sed 's/^/    /'
  [[ $rc == 0 && "$summary" == good* ]]
  assert_ok "lazy, serving member stopped ${STOP_S} s then continued ($run): connection survives, every byte verified" $?
  stop_members
done

echo "e2e lazy_stop: $passed passed, $failed failed"
[[ $failed == 0 ]]
