#!/usr/bin/env bash
# Main demo: installs dependencies, builds the release tree, then runs the deterministic
# simulator: one seed verbosely (each migration printed as it happens), then a 200-seed summary.
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

echo
echo "==> demo: one seed, every migration shown ($SIM --seed 1 --verbose)"
"${SIM}" --seed 1 --verbose

echo
echo "==> demo: 200 seeds, summary ($SIM --seeds 200)"
"${SIM}" --seeds 200
