#!/usr/bin/env bash
# The benchmarks in one command: builds the release tree if needed, runs bench/run.py (micro-
# benchmarks and end-to-end measurements against plain TCP and iperf3 on loopback, results as JSON in
# bench/results/<UTC date-time>/) and writes docs/performance.md with plots in docs/perf/.
#   bash bench/run.sh            the full run (about 8 minutes on 2 cores)
#   bash bench/run.sh --short    the short form (under a minute; CI runs it)
# Other options go to bench/run.py (--out DIR, --repeat N, --only STEP..., --idle-conns N);
# --report FILE writes the report elsewhere (with its plots beside it), --no-build skips the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Debian's interpreter: it sees python3-matplotlib (a python3 earlier on PATH may not).
py=/usr/bin/python3
[[ -x "$py" ]] || py=python3
report=docs/performance.md
do_build=1
args=()
while (($#)); do
  case "$1" in
    --report) report="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; "$py" bench/run.py --help; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
if ((do_build)); then
  bash scripts/build.sh release >/dev/null
fi
cmd="bash bench/run.sh${args[*]:+ ${args[*]}}"
out="$("$py" bench/run.py --command "$cmd" "${args[@]}")"
plots="$(dirname "$report")/perf"  # the plots sit beside the report
"$py" bench/report.py "$out" --out "$report" --plots-dir "$plots"
echo "bench: results in $out, report in $report"
