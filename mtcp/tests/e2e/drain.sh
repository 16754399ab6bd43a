#!/usr/bin/env bash
# End-to-end drain on loopback with real processes: three mtcpd members (echo, lazy transfer)
# with admin sockets, concurrent mtcp-perf clients all on member 1.
# Usage: drain.sh PATH/TO/mtcpd PATH/TO/mtcpctl PATH/TO/mtcp-perf [CLIENTS] [SECONDS]
# Checks: `mtcpctl drain --wait` empties member 1 while the clients are mid-transfer; its list
# is empty afterwards; every client verifies byte for byte (exit 0, verdict ok) after at least
# one migration; member 1 then stops cleanly (socket file removed) and a new client on member 2
# works. Also: mtcpctl against a missing socket exits 2 naming the path and the OS error; a
# malformed or too long request gets an error reply on a connection that stays usable; a
# refused request exits 1; drain --wait times out (exit 1, naming what remains) when a client
# ignores hints; mtcpd refuses an admin path where a live member answers (exit 2).
# Ends only the processes it started (by PID) and removes its temporary folder.
set -uo pipefail
MTCPD="$1"
CTL="$2"
PERF="$3"
CLIENTS="${4:-4}"
SECONDS_PER_CLIENT="${5:-8}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Ports from a range derived from our PID, below the kernel's ephemeral range; the e2e tests
# hold a ctest resource lock, so their ranges may overlap.
base=$((12000 + ($$ % 800) * 10))  # below the ephemeral range (32768+)
(umask 077 && head -c 32 /dev/urandom > "$work/pool.key")  # a key others can read is refused
# Default limits (a full input log parks DATA and still reads the client's ACKs, so several
# bulk clients on one member do not stall). A 1 s claim timeout lets a busy owner answer lazy
# claims in time on a loaded test machine.
cat > "$work/pool.json" <<JSON
{ "pool_key_file": "pool.key", "transfer": "lazy",
  "limits": { "claim_timeout_ms": 1000 },
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 1))", "control": "127.0.0.1:$((base + 4))"},
               {"id": 2, "data": "127.0.0.1:$((base + 2))", "control": "127.0.0.1:$((base + 5))"},
               {"id": 3, "data": "127.0.0.1:$((base + 3))", "control": "127.0.0.1:$((base + 6))"} ] }
JSON
cat > "$work/other.json" <<JSON
{ "pool_key_file": "pool.key",
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 7))", "control": "127.0.0.1:$((base + 8))"} ] }
JSON

status_field() {  # status_field SOCKET FIELD: one field of the member's status (empty if unreachable)
  "$CTL" -s "$1" --json status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2" 2>/dev/null
}
wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
  local until=$((SECONDS + $1))
  shift
  while ! "$@"; do
    ((SECONDS >= until)) && return 1
    sleep 0.05
  done
}
answers() { [[ "$(status_field "$1" member)" != "" ]]; }

member_pids=()
for i in 1 2 3; do
  "$MTCPD" --pool "$work/pool.json" --id "$i" --service echo --admin "$work/admin$i.sock" 2>"$work/member$i.log" &
  member_pids+=("$!")
  pids+=("$!")
done
wait_for 10 answers "$work/admin1.sock" && wait_for 10 answers "$work/admin2.sock" && wait_for 10 answers "$work/admin3.sock"
st=$?; assert_ok "three members answer on their admin sockets" "$st"

# ---- drain member 1 while every client is mid-transfer ------------------------------------
client_pids=()
for c in $(seq 1 "$CLIENTS"); do
  "$PERF" -c --pool "$work/pool.json" --app echo --server-id 1 -d "$SECONDS_PER_CLIENT" -i 0 -J -t 120 \
    > "$work/client$c.out" 2> "$work/client$c.err" &
  client_pids+=("$!")
  pids+=("$!")
done
all_attached() { [[ "$(status_field "$work/admin1.sock" owned_attached)" == "$CLIENTS" ]]; }
wait_for 20 all_attached
st=$?; assert_ok "all $CLIENTS clients are served by member 1 ($("$CTL" -s "$work/admin1.sock" list | tail -1))" "$st"
sleep 1  # let them transfer a while
"$CTL" -s "$work/admin1.sock" list > "$work/list-before.txt"
t0=$(date +%s.%N)
"$CTL" -s "$work/admin1.sock" drain --wait --timeout 60 > "$work/drain.out" 2> "$work/drain.err"
rc=$?
t1=$(date +%s.%N)
drain_ms=$(python3 -c "print(round(($t1 - $t0) * 1000))")
sed 's/^/  /' "$work/drain.out" "$work/drain.err"
[[ $rc == 0 ]] && grep -q "^draining: $CLIENTS of $CLIENTS owned connections hinted" "$work/drain.out" &&
  grep -q "drained: member 1 owns no connection" "$work/drain.out"
st=$?; assert_ok "mtcpctl drain --wait empties member 1 ($CLIENTS connections in $drain_ms ms)" "$st"

"$CTL" -s "$work/admin1.sock" list > "$work/list-after.txt"
rc=$?
sed 's/^/  /' "$work/list-after.txt"
[[ $rc == 0 ]] && grep -q "^no connections owned by member 1" "$work/list-after.txt" &&
  [[ "$("$CTL" -s "$work/admin1.sock" --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["connections"]))')" == 0 ]]
st=$?; assert_ok "mtcpctl list on member 1 shows no connections" "$st"

ok_clients=0
for c in $(seq 1 "$CLIENTS"); do
  wait "${client_pids[$((c - 1))]}"
  rc=$?
  read -r v n err <<< "$(verdict "$work/client$c.out")"
  echo "  client $c: exit $rc, verdict ${v:-?}, ${n:-?} migrations${err:+, error: $err}"
  [[ $rc == 0 ]] || sed 's/^/    /' "$work/client$c.err" | tail -5
  [[ $rc == 0 && "$v" == ok && "${n:-0}" -ge 1 ]] && ok_clients=$((ok_clients + 1))
done
[[ $ok_clients == "$CLIENTS" ]]
st=$?; assert_ok "every client exits 0 with verdict ok after at least one migration ($ok_clients of $CLIENTS)" "$st"

# Member 1 owns nothing: stop it; it removes its socket file; the pool serves on.
kill "${member_pids[0]}"
wait "${member_pids[0]}"
rc=$?
[[ $rc == 0 && ! -e "$work/admin1.sock" ]]
st=$?; assert_ok "the drained member 1 stops cleanly and removes its admin socket (exit $rc)" "$st"
"$PERF" -c --pool "$work/pool.json" --app echo --server-id 2 -n 4000000 -i 0 -J -t 60 > "$work/after.out" 2>&1
rc=$?
read -r v n _ <<< "$(verdict "$work/after.out")"
[[ $rc == 0 && "$v" == ok ]]
st=$?; assert_ok "a new client on member 2 works after member 1 is gone (exit $rc, verdict ${v:-?})" "$st"

# ---- errors ------------------------------------------------------------------------------
"$CTL" -s "$work/admin1.sock" status > /dev/null 2> "$work/missing.err"
rc=$?
[[ $rc == 2 ]] && grep -q "$work/admin1.sock" "$work/missing.err" && grep -qi "no such file" "$work/missing.err"
st=$?; assert_ok "mtcpctl against a missing socket exits 2 ($(head -c 160 "$work/missing.err"))" "$st"

reply=$(python3 - "$work/admin2.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rb")
out = []
for req in [b"this is not json\n", b"x" * 5000 + b"\n", b'{"cmd":"status"}\n']:
    s.sendall(req)
    out.append(json.loads(f.readline()))
ok = (out[0]["ok"] is False and "malformed JSON" in out[0]["error"]
      and out[1]["ok"] is False and "request too long" in out[1]["error"]
      and out[2]["ok"] is True and out[2]["member"] == 2)
print(("ok " if ok else "bad ") + out[0]["error"][:70] + " / " + out[1]["error"][:60])
PY
)
[[ "$reply" == ok* ]]
st=$?; assert_ok "garbage and a too long line get error replies, the same connection answers after ($reply)" "$st"

"$CTL" -s "$work/admin2.sock" migrate 12345 > /dev/null 2> "$work/refused.err"
rc=$?
[[ $rc == 1 ]] && grep -q "unknown connection 12345" "$work/refused.err"
st=$?; assert_ok "a refused request exits 1 ($(head -c 120 "$work/refused.err"))" "$st"

"$CTL" -s "$work/admin2.sock" drain --to 7 > /dev/null 2> "$work/badto.err"
rc=$?
[[ $rc == 1 ]] && grep -q "member 7 is not in the pool" "$work/badto.err"
st=$?; assert_ok "drain to a member that is not in the pool is refused ($(head -c 120 "$work/badto.err"))" "$st"

"$CTL" -s "$work/admin2.sock" frobnicate > /dev/null 2>&1
rc=$?
[[ $rc == 2 ]]
st=$?; assert_ok "mtcpctl with an unknown command exits 2" "$st"

# A client that ignores hints: drain --wait gives up after its timeout and says what remains.
"$PERF" -c --pool "$work/pool.json" --app echo --server-id 3 --ignore-hints -d 30 -i 0 -J -t 60 \
  > "$work/stubborn.out" 2>&1 &
stubborn=$!
pids+=("$stubborn")
has_attached() { [[ "$(status_field "$work/admin3.sock" owned_attached)" -ge 1 ]]; }
wait_for 20 has_attached
"$CTL" -s "$work/admin3.sock" drain --wait --timeout 1.5 > /dev/null 2> "$work/timeout.err"
rc=$?
[[ $rc == 1 ]] && grep -q "drain timed out after 1.5 s: [0-9]* connections\? still owned by member 3" "$work/timeout.err"
st=$?; assert_ok "drain --wait times out with exit 1 when a client ignores hints ($(tail -1 "$work/timeout.err"))" "$st"
"$CTL" -s "$work/admin3.sock" undrain > /dev/null
[[ "$(status_field "$work/admin3.sock" draining)" == False ]]
st=$?; assert_ok "undrain stops draining" "$st"
kill "$stubborn" 2>/dev/null

# A second member on a live admin path is refused; so is a path in a missing folder.
"$MTCPD" --pool "$work/other.json" --id 1 --admin "$work/admin2.sock" 2> "$work/live.err"
rc=$?
[[ $rc == 2 ]] && grep -q "admin socket $work/admin2.sock: a live process already answers there" "$work/live.err" &&
  [[ -S "$work/admin2.sock" ]] && answers "$work/admin2.sock"
st=$?; assert_ok "mtcpd refuses an admin path where a live member answers ($(head -c 160 "$work/live.err"))" "$st"
"$MTCPD" --pool "$work/other.json" --id 1 --admin "$work/nowhere/admin.sock" 2> "$work/nodir.err"
rc=$?
[[ $rc == 2 ]] && grep -q "admin socket $work/nowhere/admin.sock: cannot bind" "$work/nodir.err"
st=$?; assert_ok "mtcpd refuses an admin path it cannot bind ($(head -c 160 "$work/nodir.err"))" "$st"

echo "drain: $passed passed, $failed failed"
[[ $failed == 0 ]]
