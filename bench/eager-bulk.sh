#!/usr/bin/env bash
# Bulk echo through mtcp-perf against three mtcpd members on loopback, lazy vs eager vs eager
# with ack_after_replication, one after the other in one run; for each: throughput and the
# owner's replication bytes per byte of input (engine counters through mtcpctl). The figures
# of docs/profiling.md "Eager replication under bulk traffic".
#   bash bench/eager-bulk.sh [BUILD_BIN] [BYTES]     (defaults: build/bin, 128 MiB)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${1:-build/bin}"
N="${2:-134217728}"
for t in mtcpd mtcp-perf mtcpctl; do
  [[ -x "$BIN/$t" ]] || { echo "eager-bulk: $BIN/$t missing (bash scripts/build.sh release)" >&2; exit 2; }
done
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
(umask 077; head -c 32 /dev/urandom > "$work/pool.key")
free() { ! ss -Hltn "sport = :$1" | grep -q .; }
base=0
for _ in $(seq 50); do
  b=$((26000 + RANDOM % 500 * 10)); ok=1
  for k in 1 2 3 4 5 6; do free $((b + k)) || ok=0; done
  ((ok)) && { base=$b; break; }
done
((base)) || { echo "eager-bulk: no free ports" >&2; exit 1; }
printf '%-10s %12s %10s %24s\n' mode Mbit/s seconds "replication B/input B"
for mode in lazy eager eager-ack; do
  case $mode in
    lazy) tm='"lazy"' ;;
    eager) tm='"eager"' ;;
    eager-ack) tm='"eager", "ack_after_replication": true' ;;
  esac
  cat > "$work/$mode.json" <<JSON
{ "pool_key_file": "pool.key", "transfer": $tm,
  "members": [ {"id": 1, "data": "127.0.0.1:$((base+1))", "control": "127.0.0.1:$((base+4))"},
               {"id": 2, "data": "127.0.0.1:$((base+2))", "control": "127.0.0.1:$((base+5))"},
               {"id": 3, "data": "127.0.0.1:$((base+3))", "control": "127.0.0.1:$((base+6))"} ] }
JSON
  mp=()
  for i in 1 2 3; do
    "$BIN/mtcpd" --pool "$work/$mode.json" --id $i -q --admin "$work/a$i" > "$work/$mode-m$i.log" 2>&1 &
    mp+=($!); pids+=($!)
  done
  for _ in $(seq 50); do [[ -S "$work/a1" && -S "$work/a3" ]] && break; sleep 0.1; done
  out="$("$BIN/mtcp-perf" -c --pool "$work/$mode.json" --app echo -n "$N" -i 0 -J -t 120 2>&1)"
  st="$("$BIN/mtcpctl" -s "$work/a1" --json status 2>&1)"
  /usr/bin/python3 - "$mode" "$N" "$out" "$st" <<'PY'
import json, sys
mode, n, out, st = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def find(d, key):
    if isinstance(d, dict):
        for k, v in d.items():
            if k == key:
                return v
            r = find(v, key)
            if r is not None:
                return r
    return None
try:
    j = json.loads(out[out.index("{"):])
    s = json.loads(st.splitlines()[0])
except (ValueError, IndexError):
    print(f"{mode}: failed: {out.strip()[:300]}")
    sys.exit(1)
if find(j, "error"):
    print(f"{mode}: failed: {find(j, 'error')}")
    sys.exit(1)
rb = find(s, "replication_bytes_sent") or 0
print(f"{mode:<10} {find(j, 'received_mbit_s'):12.0f} {find(j, 'seconds'):10.2f} {rb / n:24.2f}")
PY
  for p in "${mp[@]}"; do kill "$p" 2>/dev/null; done
  wait "${mp[@]}" 2>/dev/null
done
