#!/usr/bin/env bash
# Encodes a test MPEG-TS once (H.264 in MPEG-TS, GStreamer's videotestsrc + x264enc) and
# caches it: a second call with the same parameters reuses the file, because two encodes of
# the same source differ byte-wise and tests compare bytes against the file they serve.
#
#   make-test-media.sh OUT.ts [SECONDS] [WIDTHxHEIGHT] [KBIT/S] [FPS]
#   defaults: 36 s, 640x360, 800 kbit/s, 25 fps (the tests' file: a few seconds to encode)
#   the demo: make-test-media.sh media/demo.ts 60 1280x720 3000 30
#
# Writes OUT.ts and OUT.ts.info (the parameters and the frame count, "frames=N"). Exit 0 when
# the file is there (made or cached); 2 on bad arguments; 1 when GStreamer cannot encode (a
# missing plugin: install with scripts/setup.sh).
set -euo pipefail

usage() { echo "usage: make-test-media.sh OUT.ts [SECONDS] [WIDTHxHEIGHT] [KBIT/S] [FPS]" >&2; }
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  usage
  [[ $# -ge 1 ]] && exit 0
  exit 2
fi
out="$1"
secs="${2:-36}"
size="${3:-640x360}"
kbit="${4:-800}"
fps="${5:-25}"
if ! [[ "$secs" =~ ^[0-9]+$ && "$secs" -ge 1 && "$secs" -le 3600 ]]; then
  echo "make-test-media: SECONDS must be 1..3600, not '$secs'" >&2; exit 2
fi
if ! [[ "$size" =~ ^([0-9]+)x([0-9]+)$ ]]; then
  echo "make-test-media: size must be WIDTHxHEIGHT, not '$size'" >&2; exit 2
fi
w="${BASH_REMATCH[1]}"
h="${BASH_REMATCH[2]}"
if ! [[ "$kbit" =~ ^[0-9]+$ && "$kbit" -ge 50 && "$kbit" -le 100000 ]]; then
  echo "make-test-media: KBIT/S must be 50..100000, not '$kbit'" >&2; exit 2
fi
if ! [[ "$fps" =~ ^[0-9]+$ && "$fps" -ge 1 && "$fps" -le 120 ]]; then
  echo "make-test-media: FPS must be 1..120, not '$fps'" >&2; exit 2
fi
frames=$((secs * fps))
params="seconds=$secs size=${w}x$h kbit=$kbit fps=$fps frames=$frames"
if [[ -s "$out" && -f "$out.info" && "$(cat "$out.info")" == "$params" ]]; then
  exit 0  # cached
fi
for el in videotestsrc x264enc h264parse mpegtsmux; do
  if ! gst-inspect-1.0 "$el" >/dev/null 2>&1; then
    echo "make-test-media: GStreamer element '$el' is missing (run scripts/setup.sh)" >&2; exit 1
  fi
done
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# format=I420: without it x264 picks 4:4:4 10-bit, which many players refuse. key-int-max:
# one keyframe per second, so a player joining late (or after a bad byte) recovers quickly.
gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=smpte \
  ! "video/x-raw,format=I420,width=$w,height=$h,framerate=$fps/1" \
  ! x264enc pass=cbr bitrate="$kbit" vbv-buf-capacity=1000 speed-preset=veryfast key-int-max="$fps" \
  ! video/x-h264,profile=high ! h264parse ! mpegtsmux ! filesink location="$tmp"
mv "$tmp" "$out"
echo "$params" > "$out.info"
