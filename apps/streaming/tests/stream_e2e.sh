#!/usr/bin/env bash
# End-to-end for the streaming app with real processes and real GStreamer on loopback
# (docs/streaming.md "Tests"). Usage:
#   stream_e2e.sh SERVER CLIENT PROXY MAKE-MEDIA MEDIA-DIR
# Cases (the long ones run in parallel, each with its own pool and ports):
#   (a) lazy and (b) eager: the 36 s test stream in real time, a scheduled migration every 5 s
#       (>= 5 migrations): 900 frames decoded, none missing or repeated, 0 decode errors, TS
#       continuity counters intact, every received byte equal to the file;
#   (c) resumption at arbitrary byte offsets: 4x speed, a migration every 250 ms under a
#       degradation profile (so the offsets fall anywhere), bytes equal to the file;
#   (d) the unmodified player: gst-launch-1.0 tcpclientsrc ! tsdemux ! h264parse ! avdec_h264
#       through mtcp-proxy (migrating every 1.5 s) decodes all 900 frames;
#   (e) plain TCP: gst-launch-1.0 straight to a member decodes 900 frames; socat's bytes equal
#       the file;
#   (f) bad input: missing, truncated and non-TS media files, bad inline profile, missing
#       profile file: exit 2 with a message naming the problem; a missing GStreamer plugin on
#       the client: exit 2 naming the element; a member serving another file
#       refuses the import (unknown stream) and the client reports the short stream (exit 1);
#   (g) garbled bytes on the client: counted decode/continuity errors, exit 1, no hang;
#   (h) the policy against a profile: member 1's profile stops it 8 s after its start; the
#       client's stall (or throughput) policy moves away and the stream completes intact.
# Ends only the processes it started (by PID) and removes its folder (kept with STREAM_E2E_KEEP).
set -uo pipefail
SERVER="$1" CLIENT="$2" PROXY="$3" MAKE_MEDIA="$4" MEDIA_DIR="$5"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    [[ "$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')" == "$$" ]] || continue
    kill -9 "$p" 2>/dev/null
  done
  wait 2>/dev/null
  if [[ -n "${STREAM_E2E_KEEP:-}" ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
passed=0
failed=0
check() {  # check NAME STATUS
  if [[ "$2" == 0 ]]; then echo "PASS $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi
}

for tool in gst-launch-1.0 socat python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing (scripts/setup.sh)"; exit 77; }
done
# The first GStreamer call on a fresh machine scans every plugin (seconds): do it before any timing.
gst-inspect-1.0 appsrc >/dev/null 2>&1 || { echo "FAIL: GStreamer's appsrc is missing (scripts/setup.sh)"; exit 1; }
media="$MEDIA_DIR/test.ts"
if ! bash "$MAKE_MEDIA" "$media" 36 640x360 800 25; then echo "FAIL cannot make the test media"; exit 1; fi
frames=900

# Ports: 7 per pool, 8 pools, from a range derived from our PID; all checked free.
base=$((20000 + ($$ % 150) * 80))
ports_free() {
  local listening
  listening="$(ss -ltnH | awk '{print $4}' | sed 's/.*://')"
  for p in $(seq "$base" $((base + 79))); do
    grep -qx "$p" <<<"$listening" && return 1
  done
  return 0
}
ports_free || { base=$((base + 80 * 7 % 12000)); ports_free || { echo "FAIL no free port range"; exit 1; }; }
(umask 077 && head -c 32 /dev/urandom > "$work/pool.key")  # a key others can read is refused
pool() {  # pool N TRANSFER: writes $work/poolN.json (ports base+10N ...)
  local b=$((base + 10 * $1))
  local extra=""
  [[ "$2" == eager ]] && extra=', "ack_after_replication": true'
  cat > "$work/pool$1.json" <<JSON
{ "pool_key_file": "pool.key", "transfer": "$2" $extra,
  "limits": { "claim_timeout_ms": 300, "hello_timeout_ms": 300 },
  "members": [ {"id": 1, "data": "127.0.0.1:$((b + 1))", "control": "127.0.0.1:$((b + 4))"},
               {"id": 2, "data": "127.0.0.1:$((b + 2))", "control": "127.0.0.1:$((b + 5))"},
               {"id": 3, "data": "127.0.0.1:$((b + 3))", "control": "127.0.0.1:$((b + 6))"} ] }
JSON
}
wait_port() {  # wait_port PORT: until 127.0.0.1:PORT accepts (at most 10 s)
  for _ in $(seq 1 200); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
members() {  # members N ARGS...: three members of pool N
  local n="$1"
  shift
  for i in 1 2 3; do
    "$SERVER" --pool "$work/pool$n.json" --id "$i" --media "$media" -q "$@" 2>"$work/pool$n-m$i.log" &
    pids+=("$!")
  done
  for i in 4 5 6; do wait_port $((base + 10 * n + i)) || echo "member of pool $n did not start"; done
}
field() {  # field JSON-FILE KEY: a key of the client's "end" object
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"][sys.argv[2]])' "$1" "$2" 2>/dev/null
}
client_ok() {  # client_ok JSON MIN-MIGRATIONS: the stream arrived whole and decoded cleanly
  python3 - "$1" "$2" "$frames" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
ok = (e["verdict"] == "ok" and e["migrations_done"] >= int(sys.argv[2]) and e["frames"] == int(sys.argv[3])
      and e["frames_missing"] == 0 and e["frames_repeated"] == 0 and e["decode_errors"] == 0
      and e["ts_cc_errors"] == 0 and e["ts_sync_errors"] == 0 and e["verified"])
print("  %s: %d migrations, %d frames, missing %d, repeated %d, decode errors %d, cc errors %d, verified %s, startup %d ms, stalls %d (%.0f ms), problems %s" % (
    sys.argv[1].split("/")[-1], e["migrations_done"], e["frames"], e["frames_missing"], e["frames_repeated"],
    e["decode_errors"], e["ts_cc_errors"], e["verified"], e["startup_ms"], e["stalls"], e["stall_ms"], e["problems"]))
sys.exit(0 if ok else 1)
PY
}
for n in 1 2 3 4 5 6 7; do pool "$n" lazy; done
pool 2 eager

# ---- (a), (b), (c), (d), (e) in parallel -------------------------------------------------
# (h) the policy against a profile: member 1 stops sending 8 s after its start (at 2x the
# stream lasts 18 s); members 2 and 3 are not capped. Started first, so that the client is
# surely connected before the cap: the stall policy then fires (after the cap no byte
# arrives, so the throughput policy does not judge those windows).
for i in 1 2 3; do
  prof=()
  [[ $i == 1 ]] && prof=(--profile "0:max 8:0")
  "$SERVER" --pool "$work/pool7.json" --id "$i" --media "$media" -q --speed 200 --lead-ms 2000 "${prof[@]}" \
    2>"$work/pool7-m$i.log" &
  pids+=("$!")
done
for i in 4 5 6; do wait_port $((base + 70 + i)) || echo "member of pool 7 did not start"; done
"$CLIENT" --pool "$work/pool7.json" --speed 200 --policy throughput,stall --verify "$media" \
  --expect-frames $frames -J -t 120 > "$work/h.json" 2> "$work/h.err" &
h_pid=$!
pids+=("$h_pid")
members 1
members 2
members 3 --speed 400 --profile "0:max 2:2000 4:max 6:1500"
members 4 --speed 400
members 5 --speed 400
"$CLIENT" --pool "$work/pool1.json" --policy schedule --every-ms 5000 --verify "$media" --expect-frames $frames \
  -J -t 120 > "$work/a.json" 2> "$work/a.err" &
a_pid=$!
"$CLIENT" --pool "$work/pool2.json" --policy schedule --every-ms 5000 --verify "$media" --expect-frames $frames \
  -J -t 120 > "$work/b.json" 2> "$work/b.err" &
b_pid=$!
"$CLIENT" --pool "$work/pool3.json" --speed 400 --policy schedule --every-ms 250 --verify "$media" \
  --expect-frames $frames -J -t 120 > "$work/c.json" 2> "$work/c.err" &
c_pid=$!
pids+=("$a_pid" "$b_pid" "$c_pid")
pport=$((base + 47))
"$PROXY" --pool "$work/pool4.json" --json --listen "127.0.0.1:$pport" --policy schedule --every-ms 1500 \
  > "$work/proxy.log" 2> "$work/proxy.err" &
proxy_pid=$!
pids+=("$proxy_pid")
wait_port "$pport" || echo "the proxy did not start: $(cat "$work/proxy.err")"
timeout 120 gst-launch-1.0 -v tcpclientsrc host=127.0.0.1 port="$pport" ! tsdemux ! h264parse ! avdec_h264 \
  ! identity silent=false ! fakesink > "$work/d.out" 2>&1 &
d_pid=$!
timeout 120 gst-launch-1.0 -v tcpclientsrc host=127.0.0.1 port=$((base + 51)) ! tsdemux ! h264parse ! avdec_h264 \
  ! identity silent=false ! fakesink > "$work/e.out" 2>&1 &
e_pid=$!
timeout 120 socat -u TCP:127.0.0.1:$((base + 52)) "CREATE:$work/e.ts" 2> "$work/e-socat.err" &
e2_pid=$!
pids+=("$d_pid" "$e_pid" "$e2_pid")

# ---- (f) bad input, meanwhile ----------------------------------------------------------
bad() {  # bad NAME EXPECTED-TEXT ARGS...: the member refuses to start with exit 2 and the text
  local name="$1" want="$2"
  shift 2
  timeout 20 "$SERVER" --pool "$work/pool6.json" --id 1 "$@" > "$work/bad-$name.out" 2>&1
  local rc=$?
  grep -qF -e "$want" "$work/bad-$name.out"
  local found=$?
  [[ $rc == 2 && $found == 0 ]]
  check "bad input: $name -> exit 2, '$want' (got exit $rc: $(head -c 200 "$work/bad-$name.out" | tr '\n' ' '))" $?
}
head -c 10000 "$media" > "$work/truncated.ts"
head -c $((188 * 50)) /dev/urandom > "$work/noise.ts"
bad "missing media file" "cannot open the media file" --media "$work/nonexistent.ts"
bad "truncated media file" "is not a multiple of 188" --media "$work/truncated.ts"
bad "not MPEG-TS" "no sync byte" --media "$work/noise.ts"
bad "no --media" "--media FILE is required"
bad "bad inline profile" "profile entry '5:fast'" --media "$media" --profile "0:max 5:fast"
bad "decreasing profile times" "times must grow" --media "$media" --profile "5:100 3:200"
bad "missing profile file" "cannot read the profile file" --media "$media" --profile-file "$work/none.profile"
# A missing GStreamer plugin: the client run with an empty plugin path names the element.
mkdir -p "$work/no-plugins"
GST_PLUGIN_SYSTEM_PATH_1_0="$work/no-plugins" GST_PLUGIN_PATH_1_0="$work/no-plugins" GST_REGISTRY_1_0="$work/reg.bin" \
  timeout 20 "$CLIENT" --pool "$work/pool6.json" > "$work/bad-plugin.out" 2>&1
rc=$?
grep -q "GStreamer element 'appsrc' is missing" "$work/bad-plugin.out"
[[ $rc == 2 && $? == 0 ]]
check "bad input: missing GStreamer plugin -> client exit 2 naming the element (got exit $rc: $(head -c 200 "$work/bad-plugin.out"))" $?

# ---- collect (a)-(e) -------------------------------------------------------------------
wait "$a_pid"; a_rc=$?
wait "$b_pid"; b_rc=$?
wait "$c_pid"; c_rc=$?
client_ok "$work/a.json" 5; a_ok=$?
check "(a) lazy: 36 s stream in real time across >= 5 migrations, continuity and bytes checked (exit $a_rc)" $((a_rc | a_ok))
client_ok "$work/b.json" 5; b_ok=$?
check "(b) eager: 36 s stream in real time across >= 5 migrations, continuity and bytes checked (exit $b_rc)" $((b_rc | b_ok))
client_ok "$work/c.json" 20; c_ok=$?
check "(c) bit-identical resumption at arbitrary byte offsets (>= 20 migrations under a profile) (exit $c_rc)" $((c_rc | c_ok))
python3 -c 'import json,sys; print("  (c) migrated at bytes:", [m["at_byte"] for m in json.load(open(sys.argv[1]))["migrations"]][:12], "...")' "$work/c.json" 2>/dev/null
wait "$d_pid"
d_frames=$(grep -c 'identity0.*chain' "$work/d.out")
d_migr=$(grep -c '"event":"migration"' "$work/proxy.log")
echo "  (d) gst-launch through mtcp-proxy: $d_frames frames, $d_migr migrations"
[[ "$d_frames" == "$frames" && "$d_migr" -ge 3 ]]
check "(d) unmodified tcpclientsrc pipeline through mtcp-proxy decodes all $frames frames across >= 3 migrations" $?
wait "$e_pid"
wait "$e2_pid"
e_frames=$(grep -c 'identity0.*chain' "$work/e.out")
cmp -s "$media" "$work/e.ts"
e_same=$?
echo "  (e) plain TCP: gst-launch decoded $e_frames frames; socat bytes equal the file: $([[ $e_same == 0 ]] && echo yes || echo no)"
[[ "$e_frames" == "$frames" && $e_same == 0 ]]
check "(e) plain TCP clients: gst-launch decodes $frames frames, socat receives the file byte for byte" $?

wait "$h_pid"; h_rc=$?
client_ok "$work/h.json" 1; h_ok=$?
h_reasons=$(python3 -c 'import json,sys; print(",".join(sorted({m["reason"] for m in json.load(open(sys.argv[1]))["migrations"]})))' "$work/h.json" 2>/dev/null)
echo "  (h) migration reasons: ${h_reasons:-none}"
[[ $h_rc == 0 && $h_ok == 0 && ( "$h_reasons" == *throughput* || "$h_reasons" == *stall* ) ]]
check "(h) the throughput/stall policy leaves the member its profile degrades; the stream completes intact (exit $h_rc)" $?

# ---- (f) unknown stream: member 2 serves another file ----------------------------------
other="$work/other.ts"
head -c $(( $(stat -c %s "$media") / 188 / 2 * 188 )) "$media" > "$other"
"$SERVER" --pool "$work/pool6.json" --id 1 --media "$media" --speed 400 -q 2> "$work/f-m1.log" &
pids+=("$!")
"$SERVER" --pool "$work/pool6.json" --id 2 --media "$other" --speed 400 2> "$work/f-m2.log" &
pids+=("$!")
wait_port $((base + 64)); wait_port $((base + 65))
"$CLIENT" --pool "$work/pool6.json" --speed 400 --policy schedule --every-ms 1000 --verify "$media" \
  --expect-frames $frames -J -t 60 > "$work/f.json" 2> "$work/f.err"
f_rc=$?
grep -q "unknown stream" "$work/f-m2.log"
f_refused=$?
f_bytes=$(field "$work/f.json" bytes_received)
echo "  (f) unknown stream: client exit $f_rc after ${f_bytes:-?} bytes ($(field "$work/f.json" problems)); member 2: $(grep -m1 -o 'import refused: unknown stream.*' "$work/f-m2.log")"
# The member refuses the import and closes the connection (the protocol then ends it): the
# client must say the stream is short, with exit 1, and not hang.
[[ $f_rc == 1 && $f_refused == 0 && "${f_bytes:-0}" -lt $(stat -c %s "$media") ]]
check "(f) a member serving another file refuses the snapshot (unknown stream); the client reports a short stream, exit 1" $?

# ---- (g) garbled bytes on the client ----------------------------------------------------
"$CLIENT" --pool "$work/pool5.json" --speed 400 --policy none --garble-at 1500000 --garble-bytes 20000 \
  -J -t 60 > "$work/g.json" 2> "$work/g.err"
g_rc=$?
g_errs=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print(e["decode_errors"] + e["ts_cc_errors"] + e["ts_sync_errors"] + e["frames_missing"])' "$work/g.json" 2>/dev/null)
echo "  (g) garbled: exit $g_rc, counted errors ${g_errs:-?}: $(field "$work/g.json" problems)"
[[ $g_rc == 1 && "${g_errs:-0}" -ge 1 ]]
check "(g) garbled bytes: counted errors, exit 1, no crash or hang" $?

echo "streaming e2e: $passed passed, $failed failed"
if [[ $failed != 0 ]]; then
  for f in "$work"/*.err "$work"/pool*-m*.log; do [[ -s "$f" ]] && { echo "--- $f"; tail -5 "$f"; }; done
  exit 1
fi
exit 0
