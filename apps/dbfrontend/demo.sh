#!/usr/bin/env bash
# The README demo: a banking session moves between three front-ends with a transaction open,
# the front-end serving it is killed with SIGKILL, the session goes on, and the audit balances.
# Usage: demo.sh [BUILD_BIN]   (default build/bin; as root: it runs scripts/setup.sh, builds
# the two programs into build/ if they are missing, and needs root for the throwaway PostgreSQL)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-$here/../../build/bin}"
if [[ $# -eq 0 ]]; then
  bash "$here/../../scripts/setup.sh" || exit 1
  if [[ ! -x $BIN/mtcp-bank-frontend || ! -x $BIN/mtcp-bank-client ]]; then
    echo "demo: building mtcp-bank-frontend and mtcp-bank-client into build/"
    root="$here/../.."
    if [[ -f $root/build/CMakeCache.txt ]]; then
      cmake -S "$root" -B "$root/build" >/dev/null  # again: a tree configured before setup.sh lacks libpq
    else
      cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    cmake --build "$root/build" --target mtcp-bank-frontend mtcp-bank-client -j2 || exit 1
  fi
fi
bash "$here/pg-cluster.sh" check || exit 77
work="$(mktemp -d)"
chmod 0755 "$work"
pids=()
source "$here/lib.sh"
trap 'kill_children "${pids[@]}"; bash "$here/pg-cluster.sh" stop "$work/pg"; rm -rf "$work"' EXIT
CI="$(bash "$here/pg-cluster.sh" start "$work/pg")" || exit 1
echo "PostgreSQL: $CI"
base="$(pick_base)"
write_pool "$work/pool.json" "$base"
"$BIN/mtcp-bank-client" setup --conninfo "$CI" --accounts 3 --balance 1000
for i in 1 2 3; do
  "$BIN/mtcp-bank-frontend" --pool "$work/pool.json" --id $i --conninfo "$CI" -q 2>> "$work/m$i.log" &
  pids+=($!)
done
sleep 0.5
echo "--- session (replies as the client sees them)"
# The front-end killed on purpose below is a job of this shell: bash's report of it
# ("Killed") goes to /dev/null until it is reaped, the client's own stderr to ours (fd 3).
{
"$BIN/mtcp-bank-client" script --pool "$work/pool.json" --first 1 2>&3 <<EOF2
1 AUDIT
2 BEGIN
3 TRANSFER 1 2 100
!migrate 2
4 BALANCE 1
5 TRANSFER 2 3 40
!exec kill -9 ${pids[1]}
6 COMMIT
7 TRANSFER 3 1 15
8 BALANCE 1
9 BALANCE 2
10 BALANCE 3
11 AUDIT
EOF2
wait "${pids[1]}"
} 3>&2 2>/dev/null
echo "--- the database"
psql -X -q "$CI" -c "SELECT id, balance FROM bank_account ORDER BY id" -c "SELECT sum(balance) AS total FROM bank_account"
