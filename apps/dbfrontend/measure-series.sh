#!/usr/bin/env bash
# Repeated closing measurement (docs/dbfrontend.md "Measurements"): ROUNDS rounds, each running
# measure.sh (which has its own libpq baseline) with a migration every 25 and every 50 requests
# of a session, first with AFTER_BIN, then with BEFORE_BIN if given. Each run is announced by a
# "### <after|before> mig=<N> round=<i> <UTC time> load=<1-min load>" line, then measure.sh's
# three JSON objects (M-TCP with migrations and kills, libpq, M-TCP without migrations).
# Usage: measure-series.sh AFTER_BIN [BEFORE_BIN] [ROUNDS]   (as root, like measure.sh)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
after="$1"
before="${2:-}"
rounds="${3:-3}"
for i in $(seq "$rounds"); do
  for v in after before; do
    bin="$after"
    if [[ $v == before ]]; then
      [[ -n "$before" ]] || continue
      bin="$before"
    fi
    for m in 25 50; do
      echo "### $v mig=$m round=$i $(date -u +%H:%M:%S) load=$(cut -d' ' -f1 /proc/loadavg)"
      bash "$here/measure.sh" "$bin" 8 2600 "$m" 2000
      echo "### rc=$?"
    done
  done
done
echo "### end $(date -u +%H:%M:%S)"
