#!/usr/bin/env bash
# The closing measurement (docs/dbfrontend.md "Measurements"): a throwaway cluster, the M-TCP
# workload with migrations and front-end kills, then the direct libpq baseline with the same
# transaction mix on the same database; one JSON object per mode on stdout.
# Usage: measure.sh BUILD_BIN [SESSIONS] [REQUESTS_PER_SESSION] [MIGRATE_EVERY] [KILL_EVERY]
set -uo pipefail
BIN="$1"
SESSIONS="${2:-8}"
REQUESTS="${3:-2600}"
MIGRATE="${4:-25}"
KILL="${5:-2000}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/pg-cluster.sh" check || exit 77
work="$(mktemp -d)"
chmod 0755 "$work"
trap '[[ -d "$work/pg" ]] && bash "$here/pg-cluster.sh" stop "$work/pg"; rm -rf "$work"' EXIT
CI="$(bash "$here/pg-cluster.sh" start "$work/pg")" || exit 1
source "$here/lib.sh"
base="$(pick_base)"
write_pool "$work/pool.json" "$base"
"$BIN/mtcp-bank-client" setup --conninfo "$CI" --accounts 50 --balance 1000 -J || exit 1
"$BIN/mtcp-bank-client" run --conninfo "$CI" --pool "$work/pool.json" --frontend "$BIN/mtcp-bank-frontend" \
  --accounts 50 --balance 1000 --sessions "$SESSIONS" --requests "$REQUESTS" --migrate-every "$MIGRATE" \
  --kill-every "$KILL" -t 3000 -J 2> "$work/run.log"
rc=$?
"$BIN/mtcp-bank-client" setup --conninfo "$CI" --accounts 50 --balance 1000 -J || exit 1
"$BIN/mtcp-bank-client" baseline --conninfo "$CI" --accounts 50 --balance 1000 --sessions "$SESSIONS" --requests "$REQUESTS" -J
rc2=$?
"$BIN/mtcp-bank-client" setup --conninfo "$CI" --accounts 50 --balance 1000 -J || exit 1
"$BIN/mtcp-bank-client" run --conninfo "$CI" --pool "$work/pool.json" --frontend "$BIN/mtcp-bank-frontend" \
  --accounts 50 --balance 1000 --sessions "$SESSIONS" --requests "$REQUESTS" --migrate-every 0 -t 3000 -J 2>> "$work/run.log"
rc3=$?
exit $((rc | rc2 | rc3))
