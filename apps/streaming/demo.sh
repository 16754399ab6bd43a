#!/usr/bin/env bash
# The streaming demo (docs/streaming.md): three pool members serve a 720p test stream, each
# with a degradation profile that takes it down at a different time; one viewer watches with the
# paper's migration policy and ends with a summary (frames, stalls, startup, migrations).
#   bash apps/streaming/demo.sh [--show]     (as root on a fresh machine: it runs scripts/setup.sh)
# Installs what is missing, builds the programs it needs into build/ if they are missing. Ends
# only what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/setup.sh
bin=build/bin
if [[ ! -x $bin/mtcp-stream-server || ! -x $bin/mtcp-stream-client ]]; then
  echo "demo: building mtcp-stream-server and mtcp-stream-client into build/"
  if [[ -f build/CMakeCache.txt ]]; then
    cmake -S . -B build >/dev/null  # again: a tree configured before setup.sh lacks GStreamer
  else
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  cmake --build build --target mtcp-stream-server mtcp-stream-client -j2
fi
media=build/streaming-media/demo-720p.ts
echo "demo: encoding the 720p test stream once (cached in $media)"
bash apps/streaming/make-test-media.sh "$media" 40 1280x720 3000 30
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
base=$((24000 + ($$ % 100) * 10))
(umask 077 && head -c 32 /dev/urandom > "$work/pool.key")  # a key others can read is refused
cat > "$work/pool.json" <<JSON
{ "pool_key_file": "pool.key", "transfer": "eager", "limits": { "claim_timeout_ms": 300 },
  "members": [ {"id": 1, "data": "127.0.0.1:$((base + 1))", "control": "127.0.0.1:$((base + 4))"},
               {"id": 2, "data": "127.0.0.1:$((base + 2))", "control": "127.0.0.1:$((base + 5))"},
               {"id": 3, "data": "127.0.0.1:$((base + 3))", "control": "127.0.0.1:$((base + 6))"} ] }
JSON
profiles=("0:max 12:800" "0:800 10:max 26:800" "0:800 24:max")
for i in 1 2 3; do
  echo "demo: member $i, profile (kbit/s from its start): ${profiles[$((i - 1))]}"
  $bin/mtcp-stream-server --pool "$work/pool.json" --id "$i" --media "$media" --lead-ms 3000 -q \
    --profile "${profiles[$((i - 1))]}" 2>"$work/m$i.log" &
  pids+=("$!")
done
for i in 4 5 6; do
  for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/$((base + i))) 2>/dev/null && break; sleep 0.05; done
done
echo "demo: the viewer (paper's policy: inbound rate below half the best window, after warm-up, 4 windows in a row)"
$bin/mtcp-stream-client --pool "$work/pool.json" --policy throughput,stall --expect-frames 1200 --verify "$media" "$@"
