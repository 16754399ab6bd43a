#!/usr/bin/env bash
# End-to-end on loopback with real processes: three mtcp-perf members and a client.
# Usage: perf_loopback.sh PATH/TO/mtcp-perf [BYTES] [BULK-BYTES]
# Checks: lazy and eager transfers with a migration every 20 ms verify byte for byte (SHA-256
# of both directions reported); SIGKILL of the serving member in eager mode with
# ack-after-replication is survived; SIGKILL in lazy mode ends in an explicit failure naming
# the cause; a plain TCP client is served (echo); a bad pool file and a port in use are
# refused with exit status 2; 256 MiB both ways (echo service) with a migration every 100 ms,
# lazy and eager, arrive with equal SHA-256; the plain TCP baseline of mtcp-perf verifies;
# one-way transfers in each direction (discard with --check, -R) verify across migrations.
# Ends only the processes it started (by PID) and removes its temporary folder.
set -uo pipefail
PERF="$1"
BYTES="${2:-8000000}"
BULK="${3:-268435456}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Ports from a range derived from our PID, so parallel runs do not collide.
base=$((20000 + ($$ % 1200) * 10))  # below the ephemeral range (32768+)
(umask 077 && head -c 32 /dev/urandom > "$work/pool.key")  # a key others can read is refused
write_pool() {  # write_pool FILE TRANSFER EXTRA
  cat > "$1" <<JSON
{ "pool_key_file": "pool.key", "transfer": "$2" $3,
  "limits": { "claim_timeout_ms": 300 },
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 1))", "control": "127.0.0.1:$((base + 4))"},
               {"id": 2, "data": "127.0.0.1:$((base + 2))", "control": "127.0.0.1:$((base + 5))"},
               {"id": 3, "data": "[::1]:$((base + 3))", "control": "127.0.0.1:$((base + 6))"} ] }
JSON
}
write_pool "$work/lazy.json" lazy ""
write_pool "$work/eager.json" eager ', "ack_after_replication": true'

start_members() {  # start_members POOL [APP] -> sets member_pids
  member_pids=()
  for i in 1 2 3; do
    # shellcheck disable=SC2086  # APP may carry the service's options ("discard --check")
    "$PERF" -s --pool "$1" --id "$i" --app ${2:-ref} 2>"$work/member$i.log" &
    member_pids+=("$!")
    pids+=("$!")
  done
  wait_listening $((base + 4)) $((base + 5)) $((base + 6))
}
kill_member1_when_serving() {  # SIGKILL member 1 once it serves a connection, 0.3 s later
  for _ in $(seq 1 200); do
    grep -q "opened" "$work/member1.log" 2>/dev/null && break
    sleep 0.05
  done
  sleep 0.3
  kill -9 "${member_pids[0]}"
}
stop_members() {
  for p in "${member_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${member_pids[@]}"; do wait "$p" 2>/dev/null; done
}

for mode in lazy eager; do
  start_members "$work/$mode.json"
  "$PERF" -c --pool "$work/$mode.json" -n "$BYTES" --migrate-every 20 -J -t 120 > "$work/$mode.out"
  rc=$?
  echo "  $mode: $(verdict "$work/$mode.out") (exit $rc)"
  read -r v n _ <<< "$(verdict "$work/$mode.out")"
  [[ $rc == 0 && "$v" == ok && "$n" -ge 2 ]]
  assert_ok "$mode transfer with a migration every 20 ms is verified ($n migrations)" $?
  stop_members
done

# Bulk both ways: BULK bytes echoed back with a migration every 100 ms; the client checks every
# byte and both SHA-256 digests must be equal (echo). The input is paced so that the transfer
# lasts at least a second however fast the machine is (32 MiB unpaced took 0.1 s here, and no
# migration came due before the end).
pace=$(( BULK * 8 / 1000000 ))
for mode in lazy eager; do
  start_members "$work/$mode.json" echo
  "$PERF" -c --pool "$work/$mode.json" --app echo -n "$BULK" -b "$pace" --migrate-every 100 -i 0 -J -t 400 > "$work/bulk-$mode.out"
  rc=$?
  summary=$(python3 - "$work/bulk-$mode.out" "$BULK" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
good = (e["verdict"] == "ok" and e["sha256_sent"] == e["sha256_received"] and e["bytes_received"] == int(sys.argv[2])
        and e["migrations_done"] >= 1)
print("good" if good else "bad", "%s, %d bytes each way in %.1f s, %d migrations (median %d us), sha256 %s" % (
    e["verdict"], e["bytes_received"], e["seconds"], e["migrations_done"], e["downtime_us_median"], e["sha256_received"][:16]))
PY
)
  echo "  bulk-$mode: $summary (exit $rc)"
  [[ $rc == 0 && "$summary" == good* ]]
  assert_ok "$mode: $BULK bytes both ways with a migration every 100 ms, SHA-256 equal" $?
  if [[ $mode == lazy ]]; then
    "$PERF" -c --pool "$work/$mode.json" --app echo -n 20000000 --plain -i 0 > "$work/plain.out"
    rc=$?
    [[ $rc == 0 ]] && grep -q "^ok (tcp, echo)" "$work/plain.out"
    ok=$?  # before the message: its $(...) would reset $?
    assert_ok "mtcp-perf --plain (the plain TCP baseline) verifies against the same member ($(head -c 60 "$work/plain.out"))" $ok
  fi
  stop_members
done

# One-way, as iperf3 (and -R): the client sends to `discard` (which checks every byte against
# the source stream, --check), then the member sends (`source`, -R) and the client compares
# every byte; both with a migration every 50 ms, both with iperf3's end.sum_received fields.
# Each runs for a second (-d), not a byte count: a fast machine moves BULK bytes before the
# first migration is due.
oneway() {  # oneway NAME APP-ARGS... : run, print the summary, exit 0 when good
  "$PERF" -c --pool "$work/lazy.json" -d 1 --migrate-every 50 -i 0 -J -t 60 "${@:2}" > "$work/$1.out"
  local rc=$?
  python3 - "$work/$1.out" "$BULK" "$rc" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
r = e["sum_received"]
good = (sys.argv[3] == "0" and e["verdict"] == "ok" and r["bytes"] >= 1 << 20 and e["migrations_done"] >= 3
        and abs(r["bits_per_second"] - r["bytes"] * 8 / r["seconds"]) < 1e-3 * r["bits_per_second"])
print("good" if good else "bad", "%s, %d bytes one way in %.1f s (%.0f Mbit/s), %d migrations" % (
    e["verdict"], r["bytes"], r["seconds"], r["bits_per_second"] / 1e6, e["migrations_done"]))
sys.exit(0 if good else 1)
PY
}
start_members "$work/lazy.json" "discard --check"
summary=$(oneway discard --app discard --verify compare); ok=$?
echo "  oneway-discard: $summary"
assert_ok "one-way, the client sends (discard --check), a migration every 50 ms" $ok
stop_members
start_members "$work/lazy.json" source
summary=$(oneway reverse -R --verify compare); ok=$?
echo "  oneway-reverse: $summary"
assert_ok "one-way -R (source), every byte compared, a migration every 50 ms" $ok
"$PERF" -c --pool "$work/lazy.json" -R -n 20000000 --verify none --plain -i 0 > "$work/plain-r.out"
rc=$?
[[ $rc == 0 ]] && grep -q "^ok (tcp, source)" "$work/plain-r.out" && grep -q "^verify none" "$work/plain-r.out"
assert_ok "mtcp-perf -R --plain --verify none counts the stream ($(head -c 60 "$work/plain-r.out"))" $?
"$PERF" -c --pool "$work/lazy.json" -R --verify bogus > /dev/null 2>&1
[[ $? == 2 ]]
assert_ok "--verify with an unknown mode is a usage error (exit 2)" $?
stop_members

# SIGKILL of the serving member (member 1, where the client starts) mid-transfer.
for mode in eager lazy; do
  start_members "$work/$mode.json"
  kill_member1_when_serving &
  "$PERF" -c --pool "$work/$mode.json" -n $((BYTES * 4)) -J -t 60 > "$work/kill-$mode.out"
  rc=$?
  echo "  kill-$mode: $(verdict "$work/kill-$mode.out") (exit $rc)"
  v=$(verdict "$work/kill-$mode.out")
  if [[ $mode == eager ]]; then
    [[ $rc == 0 && "$v" == ok* ]]
    assert_ok "eager + ack-after-replication survives SIGKILL of the serving member" $?
  else
    # Lazy cannot survive the owner's death: it must say so, never hang or claim success.
    [[ $rc == 1 && "$v" == failed* && "$v" == *"owner unreachable"* ]]
    assert_ok "lazy reports an explicit failure after SIGKILL of the owner" $?
  fi
  stop_members
done

# A member with the wrong pool key, then the same member down: migrations to it fail explicitly
# (the wrong key cannot verify the client's proof) and the stream stays intact.
(umask 077 && head -c 32 /dev/urandom > "$work/wrong.key")  # a key others can read is refused
sed 's/"pool.key"/"wrong.key"/' "$work/lazy.json" > "$work/wrongkey.json"
member_pids=()
"$PERF" -s --pool "$work/lazy.json" --id 1 --app echo 2>"$work/member1.log" &
member_pids+=("$!"); pids+=("$!")
"$PERF" -s --pool "$work/wrongkey.json" --id 2 --app echo 2>"$work/member2.log" &
member_pids+=("$!"); pids+=("$!")
wait_listening $((base + 4)) $((base + 5))
check_refused_target() {  # check_refused_target NAME OUT: verdict ok, every migration to 2 failed
  python3 - "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["end"]
errs = sorted({m["error"] for m in r["migrations"] if m["to"] == 2 and "error" in m})
moved = [m for m in r["migrations"] if m["to"] == 2 and "error" not in m]
print("good" if e["verdict"] == "ok" and errs and not moved else "bad", e["verdict"], "errors:", ", ".join(errs) or "none")
PY
}
"$PERF" -c --pool "$work/lazy.json" --app echo -n 4000000 -b 200 --migrate-every 40 -i 0 -J -t 60 > "$work/wrongkey.out"
rc=$?
summary=$(check_refused_target wrongkey "$work/wrongkey.out")
echo "  wrong key: $summary (exit $rc)"
[[ $rc == 0 && "$summary" == good* && "$summary" == *"bad proof"* ]]
ok=$?
assert_ok "migrations to a member with the wrong pool key are refused (bad proof); the stream is intact" $ok
kill "${member_pids[1]}"; wait "${member_pids[1]}" 2>/dev/null
"$PERF" -c --pool "$work/lazy.json" --app echo -n 4000000 -b 200 --migrate-every 40 -i 0 -J -t 60 > "$work/down.out"
rc=$?
summary=$(check_refused_target down "$work/down.out")
echo "  member down: $summary (exit $rc)"
[[ $rc == 0 && "$summary" == good* ]]
ok=$?
assert_ok "migrations to a member that is down fail explicitly; the stream is intact" $ok
stop_members

# Bad input: a broken pool file and a port already in use.
echo '{ "transfer": "sideways", "members": [] }' > "$work/bad.json"
"$PERF" -s --pool "$work/bad.json" --id 1 2> "$work/bad.err"
rc=$?
[[ $rc == 2 ]] && grep -q "bad.json" "$work/bad.err"
ok=$?  # before the message: its $(...) would reset $?
assert_ok "a bad pool file is refused with exit 2 and names the file ($(head -c 120 "$work/bad.err"))" $ok

start_members "$work/lazy.json" echo
# Plain TCP compatibility: a client that never speaks M-TCP is served by the same echo app on the
# data port (through the plain-TCP adapter: no snapshots, no migration).
reply=$(python3 - "$((base + 1))" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
msg = b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 40
s.sendall(msg)
got = b""
while len(got) < len(msg):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
print("same" if got == msg else "differs (%d of %d bytes)" % (len(got), len(msg)))
PY
)
[[ "$reply" == same ]]
assert_ok "a plain TCP client is served by a member's data port (echo: $reply)" $?

"$PERF" -s --pool "$work/lazy.json" --id 2 2> "$work/inuse.err"
rc=$?
[[ $rc == 2 ]] && grep -qi "in use" "$work/inuse.err"
ok=$?  # before the message: its $(...) would reset $?
assert_ok "a member whose port is in use exits 2 ($(head -c 120 "$work/inuse.err"))" $ok
stop_members

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
