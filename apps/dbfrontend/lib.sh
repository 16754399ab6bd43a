# Shell helpers shared by demo.sh, measure.sh and tests/bank_e2e.sh (sourced, not run).

# pick_base: a port base B with B+1 .. B+9 free on loopback (below 32768); 0 if none found.
# BANK_PORT_MIN / BANK_PORT_MAX narrow the range (default 20000 .. 31999).
pick_base() {
  local b k busy
  for _ in $(seq 50); do
    b=$((${BANK_PORT_MIN:-20000} + (RANDOM % ((${BANK_PORT_MAX:-31999} - ${BANK_PORT_MIN:-20000} - 9) / 10)) * 10))
    busy=0
    for k in 1 2 3 4 5 6 7 8 9; do
      ss -Hltn "sport = :$((b + k))" | grep -q . && busy=1
    done
    ((busy == 0)) && { echo "$b"; return; }
  done
  echo 0
}

# write_pool FILE BASE [lazy]: a three-member pool on 127.0.0.1 (data BASE+1..3, control
# BASE+4..6), eager with ack_after_replication unless "lazy" is given, with its key in pool.key
# next to FILE (made if missing).
write_pool() {
  local dir mode='"eager", "ack_after_replication": true'
  [[ "${3:-}" == lazy ]] && mode='"lazy"'
  dir="$(dirname "$1")"
  [[ -f "$dir/pool.key" ]] || (umask 077 && head -c 32 /dev/urandom > "$dir/pool.key")  # others must not read it
  cat > "$1" <<JSON
{ "pool_key_file": "pool.key", "transfer": ${mode},
  "limits": { "claim_timeout_ms": 300 },
  "members": [ {"id": 1, "data": "127.0.0.1:$(($2 + 1))", "control": "127.0.0.1:$(($2 + 4))"},
               {"id": 2, "data": "127.0.0.1:$(($2 + 2))", "control": "127.0.0.1:$(($2 + 5))"},
               {"id": 3, "data": "127.0.0.1:$(($2 + 3))", "control": "127.0.0.1:$(($2 + 6))"} ] }
JSON
}

# kill_children PID...: SIGKILL those of the PIDs that are still our children (a PID reaped
# earlier may belong to another process by now), then reap them.
# Bash reports a job ended by a signal ("... Killed") on its own stderr while the group below
# runs: that goes to /dev/null with the rest, since these are ended on purpose.
kill_children() {
  local p
  {
    for p in "$@"; do
      [[ "$(ps -o ppid= -p "$p" | tr -d ' ')" == "$$" ]] || continue
      kill -CONT "$p"
      kill -9 "$p"
    done
    wait
  } 2>/dev/null
}
