#!/usr/bin/env bash
# The long fuzzing runs recorded in docs/security.md ("Fuzzing"): every libFuzzer harness of
# build-fuzz/ (scripts/build.sh fuzz) for SECONDS each, LANES harnesses at a time, starting from
# the checked-in seeds; prints one Markdown table row per harness.
#   bash scripts/fuzz-long.sh [SECONDS (600)] [LANES (1)] [HARNESS...]
# Each harness's log and findings go to build-fuzz/long/<harness>/ (its corpus there too; the
# checked-in seeds are read, never written). Exits 1 if any harness found something.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-600}"
lanes="${2:-1}"
shift $(( $# >= 2 ? 2 : $# ))
if ! [[ "${seconds}" =~ ^[0-9]+$ && "${lanes}" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz-long.sh [SECONDS] [LANES] [HARNESS...]" >&2
  exit 2
fi
harnesses=("$@")
if ((${#harnesses[@]} == 0)); then
  for bin in build-fuzz/bin/fuzz_*; do
    [[ -x "${bin}" ]] && harnesses+=("$(basename "${bin}")")
  done
fi
if ((${#harnesses[@]} == 0)); then
  echo "fuzz-long: no harnesses in build-fuzz/bin/ (run: bash scripts/build.sh fuzz)" >&2
  exit 2
fi

run_one() {
  local name="$1" dir="build-fuzz/long/$1"
  rm -rf "${dir}"
  mkdir -p "${dir}/corpus" "${dir}/findings"
  local seeds=()
  [[ -d "mtcp/fuzz/corpus/${name}" ]] && seeds=("mtcp/fuzz/corpus/${name}")
  local rc=0
  "build-fuzz/bin/${name}" -max_total_time="${seconds}" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="${dir}/findings/" "${dir}/corpus" "${seeds[@]}" \
    > "${dir}/log" 2>&1 || rc=$?
  echo "${rc}" > "${dir}/rc"
}

echo "fuzz-long: ${#harnesses[@]} harness(es), ${seconds} s each, ${lanes} at a time, from $(git rev-parse --short HEAD)" >&2
running=0
for name in "${harnesses[@]}"; do
  if [[ ! -x "build-fuzz/bin/${name}" ]]; then
    echo "fuzz-long: no harness build-fuzz/bin/${name}" >&2
    exit 2
  fi
  run_one "${name}" &
  running=$((running + 1))
  if ((running >= lanes)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
echo "| harness | seconds | executions | exec/s | coverage (edges) | features | corpus | peak RSS | result |"
echo "|---|---|---|---|---|---|---|---|---|"
for name in "${harnesses[@]}"; do
  dir="build-fuzz/long/${name}"
  rc="$(cat "${dir}/rc")"
  stat() { grep -m1 "^stat::$1:" "${dir}/log" | awk '{print $2}'; }
  done_line="$(grep -E '^#[0-9]+\s+DONE' "${dir}/log" | tail -1 || true)"
  cov="$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"${done_line}")"
  ft="$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"${done_line}")"
  corp="$(sed -nE 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"${done_line}")"
  findings="$(find "${dir}/findings" -type f | wc -l)"
  if [[ "${rc}" == 0 && "${findings}" == 0 ]]; then
    result="no finding"
  else
    result="**FAILED** (exit ${rc}, ${findings} finding(s) in ${dir}/findings)"
    failed=1
  fi
  echo "| ${name} | ${seconds} | $(stat number_of_executed_units) | $(stat average_exec_per_sec) | ${cov:-?} | ${ft:-?} | ${corp:-?} | $(stat peak_rss_mb) MB | ${result} |"
done
exit "${failed}"
