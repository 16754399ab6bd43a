#!/usr/bin/env bash
# Main demo (docs/DEMO.md): installs dependencies, builds the release tree, then runs real
# processes on loopback: three mtcpd pool members (echo service, eager transfer) and an
# mtcp-perf client that streams 100 Mbit/s each way and checks every byte. After 4 s the member
# serving the connection is degraded (its CPU limited to 1% of a core with a cgroup v1 CPU
# quota; without cgroup v1 or root: SIGSTOP). The client's migration policies notice the drop
# and move the connection to another member; the stream goes on, verified (SHA-256 of both
# directions). Exit 0 only if the stream was verified and the connection left the degraded
# member because of the degradation (policy throughput or stall).
#
#   bash scripts/demo.sh              setup, build, the real demo (exit 0: verified and moved)
#   bash scripts/demo.sh --sigstop    degrade by SIGSTOP instead of a CPU limit
#   bash scripts/demo.sh --sim        setup, build, the simulator demo (one narrated seed, 500 seeds)
#   bash scripts/demo.sh --no-build   skip setup and build (use build/bin as it is)
#
# Tunables (environment): MTCP_DEMO_RATE (Mbit/s, 100), MTCP_DEMO_CPU_PCT (1),
# MTCP_DEMO_DEGRADE_AT (s, 4), MTCP_DEMO_DURATION (s, 16), MTCP_DEMO_SEED (simulator, 418).
# Ends only the processes it started (by PID), removes its cgroup and its temporary folder,
# also on Ctrl-C.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly BIN=build/bin
readonly SIM="${BIN}/mtcp-sim"

usage() {
  echo "usage: bash scripts/demo.sh [--sigstop] [--sim] [--no-build]" >&2
}

mode=real
degrade_how=auto
do_build=1
while (($# > 0)); do
  case "$1" in
    --sim) mode=sim ;;
    --sigstop) degrade_how=sigstop ;;
    --no-build) do_build=0 ;;
    -h | --help)
      sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: error: unknown argument '$1'" >&2
      usage
      exit 2
      ;;
  esac
  shift
done

if ((do_build)); then
  echo "==> setup: dependencies"
  bash scripts/setup.sh
  echo "==> build: release"
  bash scripts/build.sh release
fi

# ---- the simulator (--sim) -------------------------------------------------------------------
if [[ "${mode}" == sim ]]; then
  if [[ ! -x "${SIM}" ]]; then
    echo "demo: error: ${SIM} was not built; the simulator target (mtcp/sim) is missing" >&2
    exit 1
  fi
  readonly DEMO_SEED="${MTCP_DEMO_SEED:-418}"
  echo
  echo "==> simulator: seed ${DEMO_SEED}, every migration and fault shown ($SIM --seed ${DEMO_SEED} -v)"
  echo "    (a client and three servers in one process, eager transfer with ack-after-replication,"
  echo "    a ping-pong burst, cut subflows, forged migrations, the owner crashing mid-migration;"
  echo "    add -vv for every control message; any seed replays exactly)"
  "${SIM}" --seed "${DEMO_SEED}" -v
  echo
  echo "==> simulator: 500 seeds, JSON summary ($SIM --seeds 500 --json)"
  "${SIM}" --seeds 500 --json
  exit 0
fi

# ---- the real demo ---------------------------------------------------------------------------
readonly RATE="${MTCP_DEMO_RATE:-100}"
readonly CPU_PCT="${MTCP_DEMO_CPU_PCT:-1}"
readonly DEGRADE_AT="${MTCP_DEMO_DEGRADE_AT:-4}"
readonly DURATION="${MTCP_DEMO_DURATION:-16}"
for v in RATE CPU_PCT DEGRADE_AT DURATION; do
  if [[ ! "${!v}" =~ ^[0-9]+$ ]] || ((${!v} == 0)); then
    echo "demo: error: MTCP_DEMO_${v} must be a positive integer (got '${!v}')" >&2
    exit 2
  fi
done
if ((CPU_PCT > 100 || DEGRADE_AT + 4 > DURATION)); then
  echo "demo: error: need MTCP_DEMO_CPU_PCT <= 100 and MTCP_DEMO_DEGRADE_AT + 4 <= MTCP_DEMO_DURATION" >&2
  exit 2
fi
for b in mtcpd mtcp-perf mtcpctl; do
  if [[ ! -x "${BIN}/${b}" ]]; then
    echo "demo: error: ${BIN}/${b} is missing (run: bash scripts/build.sh release)" >&2
    exit 1
  fi
done
if ! command -v python3 >/dev/null 2>&1; then
  echo "demo: error: python3 is missing (run: bash scripts/setup.sh)" >&2
  exit 1
fi
BINABS="$(cd "${BIN}" && pwd)"
readonly MTCPD="${BINABS}/mtcpd" PERF="${BINABS}/mtcp-perf" CTL="${BINABS}/mtcpctl"

# How to degrade: a cgroup v1 CPU quota needs root and the cpu controller mounted.
readonly CG_ROOT=/sys/fs/cgroup/cpu
why_no_cgroup=""
if [[ "${degrade_how}" == sigstop ]]; then
  why_no_cgroup="--sigstop was given"
elif ((EUID != 0)); then
  why_no_cgroup="not running as root"
elif [[ ! -f "${CG_ROOT}/cpu.cfs_quota_us" || ! -w "${CG_ROOT}" ]]; then
  why_no_cgroup="no writable cgroup v1 cpu controller at ${CG_ROOT}"
fi
if [[ -z "${why_no_cgroup}" ]]; then degrade_how=cgroup; else degrade_how=sigstop; fi

say() { echo "[demo] $*"; }
step() {
  echo
  echo "==> $*"
}

tmp=""
# Our cgroup, named after our PID; cleanup removes it if it exists (also if degrade() had run
# in a subshell).
readonly cg="${CG_ROOT}/mtcp-demo-$$"
client_pid=""
member_pids=()

# Cleanup: our processes only, by PID; the cgroup after its process left it; the folder.
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$? p i
  local IFS=$' \t\n'  # a trap can run inside `IFS= read`
  set +e
  trap - INT TERM
  if [[ -n "${client_pid}" ]] && kill -0 "${client_pid}" 2>/dev/null; then
    kill -TERM "${client_pid}" 2>/dev/null
  fi
  if ((${#member_pids[@]} > 0)); then
    for p in "${member_pids[@]}"; do
      kill -CONT "${p}" 2>/dev/null  # a stopped member cannot act on SIGTERM
      if grep -qx "${p}" "${cg}/cgroup.procs" 2>/dev/null; then
        echo "${p}" > "${CG_ROOT}/cgroup.procs" 2>/dev/null  # back to the root group, at full speed
      fi
      kill -TERM "${p}" 2>/dev/null
    done
    for p in "${member_pids[@]}"; do
      for i in $(seq 1 50); do
        kill -0 "${p}" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "${p}" 2>/dev/null
      wait "${p}" 2>/dev/null
    done
  fi
  wait 2>/dev/null
  local removed=()
  ((${#member_pids[@]} > 0)) && removed+=("members ${member_pids[*]} stopped")
  if [[ -d "${cg}" ]]; then
    for i in $(seq 1 20); do
      rmdir "${cg}" 2>/dev/null && break
      sleep 0.1
    done
    if [[ -d "${cg}" ]]; then
      echo "demo: warning: could not remove ${cg}" >&2
    else
      removed+=("cgroup ${cg} removed")
    fi
  fi
  if [[ -n "${tmp}" && -d "${tmp}" ]]; then
    rm -rf "${tmp}"
    removed+=("${tmp} removed")
  fi
  if ((${#removed[@]} > 0)); then
    printf -v i '%s; ' "${removed[@]}"
    echo "[demo] cleanup: ${i%; }"
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'echo; echo "[demo] interrupted"; exit 130' INT
trap 'exit 143' TERM

tmp="$(mktemp -d /tmp/mtcp-demo.XXXXXX)"
(umask 077 && head -c 32 /dev/urandom > "${tmp}/pool.key")  # a key others can read is refused

# Six free ports (three data, three control) below the ephemeral range, starting from our PID.
pick_base() {
  python3 - "$$" "$1" <<'PY'
import socket, sys
pid, attempt = int(sys.argv[1]), int(sys.argv[2])
for k in range(400):
    base = 10000 + ((pid + 97 * attempt + 13 * k) % 990) * 10
    ok = True
    for port in range(base + 1, base + 7):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(base)
        sys.exit(0)
sys.exit("no six free ports found between 10001 and 19896")
PY
}

write_pool() {
  cat > "${tmp}/pool.json" <<JSON
{ "pool_key_file": "pool.key",
  "transfer": "eager",
  "ack_after_replication": true,
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 1))", "control": "127.0.0.1:$((base + 4))"},
               {"id": 2, "data": "127.0.0.1:$((base + 2))", "control": "127.0.0.1:$((base + 5))"},
               {"id": 3, "data": "127.0.0.1:$((base + 3))", "control": "127.0.0.1:$((base + 6))"} ] }
JSON
}

# Starts the three members; 0 when all answer on their admin sockets, 1 when one could not bind
# its ports (try other ports), 2 on any other failure.
start_members() {
  local i p deadline
  member_pids=()
  for i in 1 2 3; do
    rm -f "${tmp}/m${i}.sock"
    (cd "${tmp}" && exec "${MTCPD}" --pool pool.json --id "${i}" --service echo --admin "m${i}.sock") \
      2> "${tmp}/member${i}.log" &
    member_pids+=("$!")
  done
  deadline=$((SECONDS + 15))
  for i in 1 2 3; do
    p="${member_pids[$((i - 1))]}"
    until timeout 5 "${CTL}" -s "${tmp}/m${i}.sock" status > /dev/null 2>&1; do
      if ! kill -0 "${p}" 2>/dev/null; then
        if grep -q "in use" "${tmp}/member${i}.log"; then return 1; fi
        echo "demo: error: member ${i} exited: $(cat "${tmp}/member${i}.log")" >&2
        return 2
      fi
      if ((SECONDS > deadline)); then
        echo "demo: error: member ${i} did not answer on ${tmp}/m${i}.sock within 15 s" >&2
        return 2
      fi
      sleep 0.05
    done
  done
  return 0
}

stop_members() {
  local p
  for p in "${member_pids[@]}"; do kill -TERM "${p}" 2>/dev/null || true; done
  for p in "${member_pids[@]}"; do wait "${p}" 2>/dev/null || true; done
  member_pids=()
}

step "M-TCP demo: one connection, three pool members, the serving member degraded"
say "folder ${tmp}: pool.key (32 random bytes), pool.json, the members' logs and admin sockets"
started=0
for attempt in 0 1 2 3 4; do
  base="$(pick_base "${attempt}")"
  write_pool
  st=0
  start_members || st=$?
  if ((st == 0)); then
    started=1
    break
  fi
  stop_members
  if ((st == 2)); then exit 1; fi
  say "ports $((base + 1))-$((base + 6)) were taken meanwhile; trying others"
done
if ((!started)); then
  echo "demo: error: could not start the members (ports kept being taken)" >&2
  exit 1
fi
say "pool: eager transfer with ack-after-replication (every member keeps a copy of each"
say "      connection's state; a client's bytes are acknowledged once the copies hold them)"
for i in 1 2 3; do
  say "member ${i}: data 127.0.0.1:$((base + i)), control 127.0.0.1:$((base + i + 3)), pid ${member_pids[$((i - 1))]}"
  say "          mtcpd --pool pool.json --id ${i} --service echo --admin m${i}.sock"
done
say "all three members answer on their admin sockets (mtcpctl -s mN.sock status)"

policy_args=(--policy "throughput,stall,hint" --warmup-ms 1500 --window-ms 250 --hysteresis 3 --fraction 0.3 --cooldown-ms 5000)
client_args=(-c --app echo --pool pool.json -d "${DURATION}" -i 1 -b "${RATE}" -t $((DURATION + 40)) "${policy_args[@]}")
step "client: ${RATE} Mbit/s each way for ${DURATION} s, every byte checked, member 1 first"
say "mtcp-perf ${client_args[*]}"
say "policies: throughput (moves when 3 windows of 250 ms in a row bring less than 0.3 x the best"
say "          window seen; not judged 1.5 s after connecting and 5 s after a move, while the client"
say "          catches up), stall (moves after 2 s without a byte), hint (a member asks it to move)"
if [[ "${degrade_how}" == cgroup ]]; then
  say "at ${DEGRADE_AT} s the serving member's CPU will be limited to ${CPU_PCT}% of a core"
else
  say "at ${DEGRADE_AT} s the serving member will be stopped (SIGSTOP): ${why_no_cgroup}, so no CPU limit"
fi
echo

# Member CPU time in seconds (utime + stime).
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

degraded_id=0
degraded_t=""
cpu_mark=()
time_mark=""
current=1
# Called when the client's interval line for second DEGRADE_AT arrives.
degrade() {
  local owner="" i n pid used pct
  for i in 1 2 3; do
    n="$(timeout 5 "${CTL}" -s "${tmp}/m${i}.sock" --json list 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin)["connections"]))' 2>/dev/null || echo 0)"
    if [[ "${n}" =~ ^[1-9] ]]; then
      owner="${i}"
      break
    fi
  done
  if [[ -z "${owner}" ]]; then
    owner="${current}"
    say "no member lists the connection right now (a migration under way?); the client says member ${owner}"
  else
    say "member ${owner} serves the connection: mtcpctl -s m${owner}.sock list"
    timeout 5 "${CTL}" -s "${tmp}/m${owner}.sock" list 2>&1 | sed 's/^/         /'
  fi
  pid="${member_pids[$((owner - 1))]}"
  used="$(cpu_s "${pid}")"
  pct="$(python3 -c 'import sys; a,b,t0,t1=map(float,sys.argv[1:]); print("%.0f" % (100*(b-a)/max(t1-t0,1e-3)))' \
    "${cpu_mark[$owner]}" "${used}" "${time_mark}" "$(date +%s.%N)")"
  degraded_id="${owner}"
  if [[ "${degrade_how}" == cgroup ]]; then
    if mkdir "${cg}" && echo 100000 > "${cg}/cpu.cfs_period_us" &&
      echo $((CPU_PCT * 1000)) > "${cg}/cpu.cfs_quota_us" && echo "${pid}" > "${cg}/cgroup.procs"; then
      say ">>> degrading member ${owner}: CPU limited to ${CPU_PCT}% of a core (it used ${pct}% so far)"
      say "    mkdir ${cg}; cpu.cfs_quota_us ${CPU_PCT}000 per cpu.cfs_period_us 100000; pid ${pid} -> cgroup.procs"
      return 0
    fi
    say "could not set the CPU limit in ${cg}; stopping member ${owner} (SIGSTOP) instead"
    degrade_how=sigstop
    why_no_cgroup="the cgroup could not be set up"
  fi
  kill -STOP "${pid}"
  say ">>> degrading member ${owner}: stopped with SIGSTOP (${why_no_cgroup}; it used ${pct}% of a core so far)"
}

# The client runs in its own process; its lines are shown as they come and kept for the summary.
# lastpipe: the loop runs in this shell, so what degrade() sets stays visible here.
: > "${tmp}/client.out"
shopt -s lastpipe
set +e
(
  echo "${BASHPID}" > "${tmp}/client.pid"
  cd "${tmp}"
  exec "${PERF}" "${client_args[@]}"
) 2>&1 | {
  while IFS= read -r line; do
    [[ -n "${client_pid}" ]] || client_pid="$(cat "${tmp}/client.pid" 2>/dev/null || true)"
    echo "${line}"
    echo "${line}" >> "${tmp}/client.out"
    if [[ "${line}" =~ ^connected\ to\ member ]]; then
      for i in 1 2 3; do cpu_mark[i]="$(cpu_s "${member_pids[$((i - 1))]}")"; done
      time_mark="$(date +%s.%N)"
    elif [[ "${line}" =~ ^\[\ *[0-9.]+\ s\]\ migrated\ [0-9]+\ -\>\ ([0-9]+) ]]; then
      current="${BASH_REMATCH[1]}"
    elif [[ -z "${degraded_t}" && "${line}" =~ ^\[\ *[0-9.]+-\ *([0-9]+)\.[0-9]+\ s\] ]] &&
      ((BASH_REMATCH[1] >= DEGRADE_AT)); then
      degraded_t="${BASH_REMATCH[1]}"
      degrade
      echo "${degraded_t} ${degraded_id} ${degrade_how}" > "${tmp}/degraded"
    fi
  done
}
statuses=("${PIPESTATUS[@]}")
set -e
client_pid=""  # reaped: the number may belong to another process from now on
client_rc="${statuses[0]}"

# ---- summary ---------------------------------------------------------------------------------
step "summary"
if [[ ! -s "${tmp}/degraded" ]]; then
  echo "demo: FAILED: the client ended before second ${DEGRADE_AT}; nothing was degraded (client exit ${client_rc})" >&2
  exit 1
fi
read -r degraded_t degraded_id degrade_how < "${tmp}/degraded"
summary_rc=0
python3 - "${tmp}/client.out" "${degraded_t}" "${degraded_id}" "${client_rc}" "${degrade_how}" "${CPU_PCT}" \
  > "${tmp}/summary" <<'PY' || summary_rc=$?
import re, sys
path, t_deg, deg_id, rc, how, pct = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
lines = open(path, errors="replace").read().splitlines()
intervals, moves, failed, verdict, sha_s, sha_r, error = [], [], [], None, None, None, None
for l in lines:
    m = re.match(r"\[\s*([\d.]+)-\s*([\d.]+) s\] sent .* received\s+[\d.]+ MB\s+([\d.]+) Mbit/s", l)
    if m:
        intervals.append((float(m[1]), float(m[2]), float(m[3])))
        continue
    m = re.match(r"\[\s*([\d.]+) s\] migrated (\d+) -> (\d+) \((.*)\) in (\d+) us", l)
    if m:
        moves.append((float(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])))
        continue
    m = re.match(r"\[\s*([\d.]+) s\] migration (\d+) -> (\d+) \((.*)\) failed: (.*)", l)
    if m:
        failed.append((float(m[1]), int(m[2]), int(m[3]), m[4], m[5]))
        continue
    if re.match(r"(ok|failed|mismatch|timeout|unfinished) \(mtcp", l):
        verdict = l
    elif l.startswith("sha256 sent "):
        sha_s = l.split()[-1]
    elif l.startswith("sha256 received "):
        sha_r = l.split()[-1]
    elif l.startswith("error: "):
        error = l[7:]

out = []
if how == "cgroup":
    out.append("degraded: member %d at %.0f s, CPU limited to %s%% of a core (cgroup v1 cpu quota)" % (deg_id, t_deg, pct))
else:
    out.append("degraded: member %d at %.0f s, stopped with SIGSTOP" % (deg_id, t_deg))
caused = [m for m in moves if m[0] >= t_deg and m[1] == deg_id and re.match(r"(throughput|stall)\b", m[3])]
for t, a, b, reason, us in moves:
    mark = "  <- because of the degradation" if (t, a, b, reason, us) in caused else ""
    out.append("migrated: member %d -> %d at %.1f s, downtime %.1f ms (%d us)%s" % (a, b, t, us / 1000, us, mark))
    out.append("          reason: %s" % reason)
    if mark and 295000 <= us <= 400000:
        third = ({1, 2, 3} - {a, b}).pop() if a != b else 0
        out.append("          (about claim_timeout_ms, 300 ms: member %d waited that long for the degraded" % b)
        out.append("          owner's answer, then took over with member %d's vote, a majority of 3)" % third)
for t, a, b, reason, err in failed:
    out.append("failed attempt: %d -> %d at %.1f s (%s): %s" % (a, b, t, reason, err))
if not moves:
    out.append("migrated: never")

def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")
t_move = caused[0][0] if caused else None
before = [r for s, e, r in intervals if e <= t_deg + 0.05]
if t_move is not None:
    during = [r for s, e, r in intervals if s >= t_deg - 0.05 and e <= t_move + 0.05] or \
             [r for s, e, r in intervals if s >= t_deg - 0.05 and s < t_move][:1]
    after = [r for s, e, r in intervals if s >= t_move]
    out.append("received: %.0f Mbit/s before, %.0f while degraded; after the move up to %.0f while the"
               % (mean(before), mean(during), max(after) if after else float("nan")))
    out.append("          client catches up, then %.0f (mean of the last %d s)" % (mean(after[-2:]), len(after[-2:])))
out.append("received per second (Mbit/s): " + " ".join("%.0f" % r for s, e, r in intervals))

ok = rc == 0 and verdict is not None and verdict.startswith("ok ") and sha_s is not None and sha_s == sha_r
if verdict:
    out.append("client: " + verdict)
if sha_s:
    out.append("sha256 sent     %s" % sha_s)
    out.append("sha256 received %s %s" % (sha_r, "(equal: the echo came back byte for byte)" if sha_s == sha_r else "(DIFFERENT)"))
if error:
    out.append("client error: " + error)
problems = []
if not ok:
    problems.append("the client did not verify the stream (exit %d)" % rc)
if not caused:
    problems.append("no migration away from member %d because of the degradation (reason throughput or stall)" % deg_id)
if problems:
    out.append("RESULT: FAILED: " + "; ".join(problems))
else:
    out.append("RESULT: PASS: the connection left the degraded member (%s) and every byte was verified"
               % caused[0][3].split(":")[0])
print("\n".join(out))
sys.exit(1 if problems else 0)
PY
sed 's/^/  /' "${tmp}/summary"
echo "  members' logs:"
for i in 1 2 3; do
  grep -E "opened|migrated in|moved away|closed|fenced" "${tmp}/member${i}.log" 2>/dev/null |
    sed "s/^/    /" || true
done
echo
echo "also try: bash scripts/demo.sh --sim       (the deterministic simulator: faults, crashes, 500 seeds)"
if [[ "${degrade_how}" == cgroup ]]; then
  echo "          bash scripts/demo.sh --sigstop   (degrade by stopping the member instead of a CPU limit)"
fi
echo "          docs/DEMO.md                    (what happened, the numbers, each step by hand)"
echo
exit "${summary_rc}"
