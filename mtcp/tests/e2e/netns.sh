#!/usr/bin/env bash
# End-to-end across Linux network namespaces: three mtcp-perf members and a client, each in its
# own namespace, with a DATA network (bridge, IPv4 + IPv6) that everyone shares and a separate
# CONTROL network (second bridge) that only the members share. Topology and addresses:
# docs/experiments/netns-e2e.md.
# Usage: netns.sh PATH/TO/mtcp-perf [BYTES]
# Checks: the client has no route to the control network; lazy transfer with a migration every
# 50 ms is verified; eager + ack-after-replication is verified with migrations and survives
# SIGKILL of the serving member; lazy ends in an explicit failure after SIGKILL of the owner;
# with member 1's control link down, migrations away from it fail explicitly and the stream is
# never silently corrupted, and once the link is back a new client migrates again; a run through
# a member whose data address is IPv6 is verified. The client's link is rate limited (tbf,
# MTCP_NETNS_RATE, default 100mbit each way) so each transfer lasts long enough to migrate.
# Needs root and `ip netns`; otherwise exits 77 (skipped). Ends only the processes it started
# (by PID) and deletes the namespaces, bridges and temporary folder it made.
set -uo pipefail
PERF="${1:-}"
BYTES="${2:-8000000}"

skip() {
  echo "SKIP netns: $*"
  exit 77
}
[[ -n "$PERF" && -x "$PERF" ]] || { echo "usage: netns.sh PATH/TO/mtcp-perf [BYTES]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || skip "needs root (network namespaces, veth, bridges)"
command -v ip >/dev/null || skip "the ip command (iproute2) is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
PERF="$(readlink -f "$PERF")"

# Names and addresses derived from our PID, so parallel runs and leftovers never collide.
id=$$
S=("mtcp-s1-$id" "mtcp-s2-$id" "mtcp-s3-$id")  # member namespaces (S[0] is member 1)
C="mtcp-c-$id"                                   # client namespace
BR_DATA="mtbd$id"                                # bridges in the root namespace (<= 15 chars)
BR_CTL="mtbc$id"
oct=$((id % 250 + 1))
DATA4="10.77.$oct"        # data network, IPv4: members .1 .2 .3, client .100
DATA6="fd00:77:0:$oct"    # data network, IPv6: members ::1 ::2 ::3, client ::100
CTL4="10.78.$oct"         # control network, IPv4: members .1 .2 .3 (no client)
RATE="${MTCP_NETNS_RATE:-100mbit}"  # the client's link, each way (none: unlimited)

work="$(mktemp -d)"
pids=()       # every process this script started in the background
made_ns=()    # namespaces it created
made_links=() # links it created in the root namespace (bridges)
cleaned=0
cleanup() {
  ((cleaned)) && return
  cleaned=1
  exec 2>/dev/null  # bash reports the members it reaps after a SIGKILL ("Killed"): not news
  for p in "${pids[@]}"; do kill -9 "$p"; done
  wait
  # Deleting a namespace deletes the veth ends inside it and so their peers on the bridges.
  for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done
  for l in "${made_links[@]}"; do ip link del "$l" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'exit 130' INT TERM
# Run a copy, so that a rebuild during the run cannot swap the binary between scenarios.
cp "$PERF" "$work/mtcp-perf" && PERF="$work/mtcp-perf"


# ---- topology ---------------------------------------------------------------------------------

setup_topology() {
  local ns i
  for ns in "${S[@]}" "$C"; do
    ip netns add "$ns" 2>"$work/netns.err" || return 1
    made_ns+=("$ns")
    ip -n "$ns" link set lo up || return 1
  done
  for br in "$BR_DATA" "$BR_CTL"; do
    ip link add "$br" type bridge stp_state 0 forward_delay 0 2>"$work/bridge.err" || return 1
    made_links+=("$br")
    ip link set "$br" up || return 1
  done
  # veth_to NS NAME-IN-NS HOST-END BRIDGE: a veth from a namespace to a bridge.
  veth_to() {
    ip link add "$3" type veth peer name "$2" netns "$1" || return 1
    ip link set "$3" master "$4" up && ip -n "$1" link set "$2" up
  }
  for i in 1 2 3; do
    ns="${S[i - 1]}"
    veth_to "$ns" data0 "mvd$i-$id" "$BR_DATA" || return 1
    ip -n "$ns" addr add "$DATA4.$i/24" dev data0 || return 1
    ip -n "$ns" -6 addr add "$DATA6::$i/64" dev data0 nodad || return 1
    veth_to "$ns" ctl0 "mvc$i-$id" "$BR_CTL" || return 1
    ip -n "$ns" addr add "$CTL4.$i/24" dev ctl0 || return 1
  done
  veth_to "$C" data0 "mvdc-$id" "$BR_DATA" || return 1
  ip -n "$C" addr add "$DATA4.100/24" dev data0 || return 1
  ip -n "$C" -6 addr add "$DATA6::100/64" dev data0 nodad || return 1
  # The client's link is rate limited both ways, so a transfer lasts long enough for its
  # migrations whatever the machine's speed (unlimited veths run at several Gbit/s).
  if [[ "$RATE" != none ]] && command -v tc >/dev/null &&
    tc -n "$C" qdisc add dev data0 root tbf rate "$RATE" burst 64kb latency 50ms 2>/dev/null &&
    tc qdisc add dev "mvdc-$id" root tbf rate "$RATE" burst 64kb latency 50ms 2>/dev/null; then
    :
  else
    RATE="none (no tc or tbf)"
  fi
}
if ! setup_topology; then
  reason="$(cat "$work/netns.err" "$work/bridge.err" 2>/dev/null | head -c 200)"
  skip "cannot build the namespaces, veths and bridges (${reason:-see above})"
fi

# ---- helpers ----------------------------------------------------------------------------------

(umask 077 && head -c 32 /dev/urandom > "$work/pool.key")  # a key others can read is refused
write_pool() {  # write_pool FILE TRANSFER EXTRA [MEMBER3-DATA-HOST]
  local d3="${4:-$DATA4.3}"
  cat > "$1" <<JSON
{ "pool_key_file": "pool.key", "transfer": "$2" $3,
  "limits": { "claim_timeout_ms": 300 },
  "members": [ {"id": 1, "data": "$DATA4.1:7001", "control": "$CTL4.1:7101"},
               {"id": 2, "data": "$DATA4.2:7002", "control": "$CTL4.2:7102"},
               {"id": 3, "data": "$d3:7003", "control": "$CTL4.3:7103"} ] }
JSON
}
write_pool "$work/lazy.json" lazy ""
write_pool "$work/eager.json" eager ', "ack_after_replication": true'
write_pool "$work/lazy6.json" lazy "" "[$DATA6::3]"

# tcp_probe NS TIMEOUT-S HOST:PORT...: 0 once each address accepts a TCP connection from NS
# (retrying until the timeout), 1 otherwise; the last error goes to stdout.
tcp_probe() {
  local ns="$1" t="$2"
  shift 2
  ip netns exec "$ns" python3 - "$t" "$@" <<'PY'
import socket, sys, time
deadline = time.time() + float(sys.argv[1])
for addr in sys.argv[2:]:
    host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError as e:
            if time.time() > deadline:
                print("%s: %s" % (addr, e.strerror or e))
                sys.exit(1)
            time.sleep(0.05)
PY
}
ctl_addrs=("$CTL4.1:7101" "$CTL4.2:7102" "$CTL4.3:7103")
start_members() {  # start_members POOL TAG -> member_pids, logs $work/TAG-memberN.log
  member_pids=()
  tag="$2"
  local i
  for i in 1 2 3; do
    # `ip netns exec` execs the program: $! is the member's own PID.
    ip netns exec "${S[i - 1]}" "$PERF" -s --pool "$1" --id "$i" 2>"$work/$tag-member$i.log" &
    member_pids+=("$!")
    pids+=("$!")
  done
  # Members reach each other's control ports; probe them from member 2's namespace.
  if ! tcp_probe "${S[1]}" 10 "${ctl_addrs[@]}" >"$work/$tag-probe.err"; then
    echo "  members did not start: $(cat "$work/$tag-probe.err")"
    tail -n 3 "$work/$tag"-member*.log
  fi
}
stop_members() {
  local p
  for p in "${member_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${member_pids[@]}"; do wait "$p" 2>/dev/null; done
}
kill_member1_when_serving() {  # SIGKILL member 1 once it serves a connection, 0.3 s later
  for _ in $(seq 1 200); do
    grep -q "opened" "$work/$tag-member1.log" 2>/dev/null && break
    sleep 0.05
  done
  sleep 0.3
  kill -9 "${member_pids[0]}"
}
run_client() {  # run_client POOL OUT ARGS...: the client in its namespace; sets rc
  local pool="$1" out="$2"
  shift 2
  ip netns exec "$C" "$PERF" -c --pool "$pool" -J "$@" > "$out" 2>"$out.err"
  rc=$?
} 2>/dev/null  # bash's notice of a member that was SIGKILLed meanwhile ("Killed"): not news
# field OUT EXPR: a value from the client's JSON (python expression over j = the document).
field() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
verdict() { field "$1" '"%s %s %s" % (j["end"]["verdict"], j["end"]["migrations_done"], j["end"]["error"])'; }
report() {  # report NAME OUT: one line with the outcome of a client run
  if [[ -z "$(verdict "$2")" ]]; then
    echo "  $1: no result (exit $rc): $(head -c 300 "$2.err")"
    return
  fi
  echo "  $1: $(verdict "$2") (exit $rc, failed migrations $(field "$2" 'j["end"]["migrations_failed"]'), $(field "$2" '"%.2f s" % j["end"]["seconds"]'))"
}

echo "  topology: namespaces ${S[*]} $C; bridges $BR_DATA (data $DATA4.0/24, $DATA6::/64) and $BR_CTL (control $CTL4.0/24); client link $RATE"

# ---- 0. the topology itself -------------------------------------------------------------------

start_members "$work/lazy.json" topo
ok=0
for i in 1 2 3; do
  p="${member_pids[i - 1]}"
  [[ "$(readlink "/proc/$p/exe")" == "$PERF" && "$(ip netns identify "$p")" == "${S[i - 1]}" ]] || ok=1
done
assert_ok "each member runs as the PID we started, inside its own namespace" $ok
tcp_probe "${S[1]}" 5 "${ctl_addrs[@]}" >/dev/null
assert_ok "members reach each other's control addresses over the control network" $?
why=$(tcp_probe "$C" 1 "$CTL4.1:7101")
rc=$?
pinged=1
if command -v ping >/dev/null; then
  ip netns exec "$C" ping -c1 -W1 "$CTL4.1" >/dev/null 2>&1
  pinged=$?
  why="$why; ping $([[ $pinged == 0 ]] && echo answered || echo fails)"
fi
[[ $rc != 0 && $pinged != 0 ]]
assert_ok "the client cannot reach a member's control address ($why)" $?
tcp_probe "$C" 5 "$DATA4.1:7001" "$DATA4.2:7002" "$DATA4.3:7003" >/dev/null
assert_ok "the client reaches the members' data addresses" $?
stop_members

# ---- 1. lazy, 8 MB, a migration every 50 ms ---------------------------------------------------

start_members "$work/lazy.json" lazy
run_client "$work/lazy.json" "$work/lazy.out" -n "$BYTES" --migrate-every 50 -t 60
report lazy "$work/lazy.out"
read -r v n _ <<< "$(verdict "$work/lazy.out")"
[[ $rc == 0 && "$v" == ok && "${n:-0}" -ge 3 ]]
assert_ok "lazy transfer across namespaces with a migration every 50 ms is verified (${n:-?} migrations)" $?
stop_members

# ---- 2. eager + ack-after-replication: migrations, then SIGKILL of the serving member ---------

start_members "$work/eager.json" eager
run_client "$work/eager.json" "$work/eager.out" -n "$BYTES" --migrate-every 50 -t 60
report eager "$work/eager.out"
read -r v n _ <<< "$(verdict "$work/eager.out")"
[[ $rc == 0 && "$v" == ok && "${n:-0}" -ge 1 ]]
assert_ok "eager + ack-after-replication across namespaces is verified with migrations (${n:-?})" $?
stop_members

start_members "$work/eager.json" kill-eager
kill_member1_when_serving &
pids+=("$!")
run_client "$work/eager.json" "$work/kill-eager.out" -n $((BYTES * 4)) -t 60
report kill-eager "$work/kill-eager.out"
wait "${member_pids[0]}" 2>/dev/null
killed=$?
read -r v n _ <<< "$(verdict "$work/kill-eager.out")"
# Without --migrate-every, a migration in the record is the recovery from the dead member.
[[ $rc == 0 && "$v" == ok && $killed == 137 && "${n:-0}" -ge 1 ]]
assert_ok "eager + ack-after-replication survives SIGKILL of the serving member (member 1 status $killed, ${n:-?} recovery migrations)" $?
stop_members

# ---- 3. lazy and SIGKILL of the owner: an explicit failure ------------------------------------

start_members "$work/lazy.json" kill-lazy
kill_member1_when_serving &
pids+=("$!")
run_client "$work/lazy.json" "$work/kill-lazy.out" -n $((BYTES * 4)) -t 60
report kill-lazy "$work/kill-lazy.out"
v=$(verdict "$work/kill-lazy.out")
# Lazy cannot survive the owner's death: it must say so, never hang or claim success.
[[ $rc == 1 && "$v" == failed* && "$v" == *"no alternate left"* && "$v" == *"owner unreachable"* ]]
assert_ok "lazy reports an explicit failure after SIGKILL of the owner (${v#* * })" $?
stop_members

# ---- 4. control network cut at member 1 -------------------------------------------------------
# A first run puts the members' control connections in use; then member 1's control link goes
# down (both directions), with the client on member 1 (the owner) and migrating to member 2
# every 50 ms. Lazy transfer needs the owner's answer, so every migration away from member 1
# must fail explicitly (migration_failed, "owner unreachable") and the client stays on member 1:
# verified, or an explicit failure, never a mismatch or a migration that claims success.

start_members "$work/lazy.json" cut
run_client "$work/lazy.json" "$work/warm.out" -n "$BYTES" --migrate-every 50 -t 60
report warm "$work/warm.out"
read -r v n _ <<< "$(verdict "$work/warm.out")"
[[ $rc == 0 && "$v" == ok && "${n:-0}" -ge 3 ]]
assert_ok "before the cut: verified with the control network in use (${n:-?} migrations)" $?

ip -n "${S[0]}" link set dev ctl0 down
tcp_probe "${S[1]}" 1 "$CTL4.1:7101" >/dev/null
[[ $? != 0 ]]
assert_ok "with member 1's control link down, member 2 cannot reach member 1's control address" $?
run_client "$work/lazy.json" "$work/cut.out" -n "$BYTES" --migrate-every 50 -t 60
report cut "$work/cut.out"
read -r v n err <<< "$(verdict "$work/cut.out")"
nf=$(field "$work/cut.out" 'j["end"]["migrations_failed"]')
ferr=$(field "$work/cut.out" '",".join(sorted(set(m["error"] for m in j["migrations"] if m.get("error"))))')
moved_away=$(field "$work/cut.out" 'sum(1 for m in j["migrations"] if m["from"] == 1 and not m.get("error"))')
{ [[ $rc == 0 && "$v" == ok ]] || [[ $rc == 1 && "$v" == failed && -n "$err" ]]; } &&
  [[ "${nf:-0}" -ge 1 && -n "$ferr" && "${moved_away:-1}" == 0 ]]
assert_ok "control cut: ${nf:-?} migrations away from member 1 fail explicitly (${ferr:-no error given}), none succeeds, and the stream is ${v:-?}${err:+ ($err)}" $?

# After the link is back, member 2's old control connection to member 1 is still in TCP's
# retransmission backoff (a fresh connection works at once, as the probe shows), so the first
# migrations away from member 1 can still fail for a second or more: the run is 4x longer, and
# the time of the first migration that works again is reported.
ip -n "${S[0]}" link set dev ctl0 up
tcp_probe "${S[1]}" 10 "$CTL4.1:7101" >/dev/null
restored=$?
run_client "$work/lazy.json" "$work/restored.out" -n $((BYTES * 4)) --migrate-every 50 -t 60
report restored "$work/restored.out"
read -r v n _ <<< "$(verdict "$work/restored.out")"
from1=$(field "$work/restored.out" 'sum(1 for m in j["migrations"] if m["from"] == 1 and not m.get("error"))')
first=$(field "$work/restored.out" '"%.2f s" % min(m["t_s"] for m in j["migrations"] if m["from"] == 1 and not m.get("error"))')
[[ $restored == 0 && $rc == 0 && "$v" == ok && "${from1:-0}" -ge 1 ]]
nf=$(field "$work/restored.out" 'j["end"]["migrations_failed"]')
assert_ok "control link restored: a new client is verified and migrates away from member 1 again (${from1:-0} times, the first at ${first:-never}, after ${nf:-?} failed)" $?
stop_members

# ---- 5. member 3's data address is IPv6 -------------------------------------------------------

start_members "$work/lazy6.json" v6
tcp_probe "$C" 5 "[$DATA6::3]:7003" >/dev/null
assert_ok "the client reaches member 3's IPv6 data address [$DATA6::3]:7003" $?
run_client "$work/lazy6.json" "$work/v6.out" -n "$BYTES" --migrate-every 50 -t 60
report v6 "$work/v6.out"
read -r v n _ <<< "$(verdict "$work/v6.out")"
via3=$(field "$work/v6.out" 'sum(1 for m in j["migrations"] if 3 in (m["from"], m["to"]) and not m.get("error"))')
[[ $rc == 0 && "$v" == ok && "${via3:-0}" -ge 2 ]]
assert_ok "member 3 on an IPv6 data address ([$DATA6::3]:7003): verified, ${via3:-0} migrations into or out of it" $?
stop_members

# ---- teardown ---------------------------------------------------------------------------------

cleanup
left=$( { ip netns list; ip -br link; } 2>/dev/null | grep -E "mtcp-(s[123]|c)-$id|mv[dc][123c]-$id|mtb[dc]$id" )
[[ -z "$left" && ! -e "$work" ]]
assert_ok "teardown leaves no namespace, link or temporary folder behind${left:+ (left: $left)}" $?

echo "netns: $passed passed, $failed failed"
[[ $failed == 0 ]]
