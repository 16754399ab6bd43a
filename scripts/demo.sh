#!/usr/bin/env bash
# Main demo: installs dependencies, builds the release tree, then runs the deterministic
# simulator: one seed narrated (a client and three servers, eager transfer with
# ack-after-replication, a ping-pong burst, cut subflows, forged migrations and the owner
# crashing in the middle of a migration), then a 500-seed summary as JSON.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly SIM=build/bin/mtcp-sim

echo "==> setup: dependencies"
bash scripts/setup.sh

echo "==> build: release"
bash scripts/build.sh release

if [[ ! -x "${SIM}" ]]; then
  echo "demo: error: ${SIM} was not built; the simulator target (mtcp/sim) is missing" >&2
  exit 1
fi

readonly DEMO_SEED="${MTCP_DEMO_SEED:-418}"

echo
echo "==> demo: seed ${DEMO_SEED}, every migration and fault shown ($SIM --seed ${DEMO_SEED} -v)"
echo "    (add -vv for every control message; any seed replays exactly)"
"${SIM}" --seed "${DEMO_SEED}" -v

echo
echo "==> demo: 500 seeds, JSON summary ($SIM --seeds 500 --json)"
"${SIM}" --seeds 500 --json
