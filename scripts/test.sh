#!/usr/bin/env bash
# THE test command: installs dependencies, checks the sans-IO rule, builds release and
# ASan/UBSan trees, smoke-runs the fuzzers, then runs every test. Stops at the first failure.
# The release ctest runs last so its summary is the last thing printed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly FUZZ_SECONDS="${MTCP_FUZZ_SECONDS:-10}"
readonly FUZZ_RUNS="${MTCP_FUZZ_RUNS:-1000000}"
readonly STAGES=7
stage_no=0

stage() {
  stage_no=$((stage_no + 1))
  echo
  echo "==> [${stage_no}/${STAGES}] $*"
}

on_error() {
  echo >&2
  echo "test: FAILED in stage ${stage_no}/${STAGES} (exit $1)" >&2
}
trap 'on_error $?' ERR

stage "setup: dependencies"
bash scripts/setup.sh

stage "check: sans-IO core"
bash scripts/check-sans-io.sh

stage "build: release (build/)"
bash scripts/build.sh release

stage "build: sanitize (build-asan/)"
bash scripts/build.sh sanitize

stage "fuzz: smoke run (${FUZZ_SECONDS}s per harness)"
if ! command -v clang++-14 >/dev/null 2>&1; then
  echo "fuzz: skipped, clang++-14 is not installed"
else
  bash scripts/build.sh fuzz
  harnesses=()
  for bin in build-fuzz/bin/fuzz_*; do
    if [[ -f "${bin}" && -x "${bin}" ]]; then
      harnesses+=("${bin}")
    fi
  done
  if ((${#harnesses[@]} == 0)); then
    echo "fuzz: skipped, no build-fuzz/bin/fuzz_* harnesses were built"
  else
    for bin in "${harnesses[@]}"; do
      name="$(basename "${bin}")"
      corpus="build-fuzz/corpus/${name}"
      artifacts="build-fuzz/artifacts/${name}"
      rm -rf "${corpus}"
      mkdir -p "${corpus}" "${artifacts}"
      corpus_dirs=("${corpus}")
      # Checked-in seeds, if any, are read but never written to.
      if [[ -d "mtcp/fuzz/corpus/${name}" ]]; then
        corpus_dirs+=("mtcp/fuzz/corpus/${name}")
      fi
      echo "fuzz: ${name}"
      "${bin}" -max_total_time="${FUZZ_SECONDS}" -runs="${FUZZ_RUNS}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="${artifacts}/" \
        "${corpus_dirs[@]}"
    done
    echo "fuzz: ${#harnesses[@]} harness(es) OK"
  fi
fi

stage "ctest: sanitize (build-asan/)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --no-tests=error -j2

stage "ctest: release (build/)"
rm -rf build/sim-results/*.json
log="$(mktemp)"
status=0
ctest --test-dir build --output-on-failure --no-tests=error -j2 2>&1 | tee "${log}" || status=$?
echo
echo "simulator summary (all seeds ctest ran, merged from build/sim-results/):"
python3 scripts/sim-summary.py build/sim-results || true
echo
# End with ctest's own summary lines, repeated after the simulator figures.
grep -E "tests passed|tests failed|Total Test time" "${log}" || true
rm -f "${log}"
exit "${status}"
