#!/usr/bin/env bash
# Keeps the protocol core sans-IO (STYLE.md, ARCHITECTURE.md section 3): no sockets, threads,
# clocks, randomness or console/file output in the layers below the runtime.
# Scans C/C++ sources under the directories below; lines that are wholly comments are ignored.
# Exits non-zero and lists file:line for every violation.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DIRS=(mtcp/src/common mtcp/src/wire mtcp/src/cert mtcp/src/core)
# The one exception, by exact path: the report of a broken invariant (MTCP_ASSERT), written to
# stderr just before the process aborts. It is not I/O the protocol depends on: nothing reads
# it back, and it runs only when the program is already wrong.
readonly ALLOWED=(mtcp/src/common/assert.cc)

# Extended regular expressions, one per forbidden construct.
readonly FORBIDDEN=(
  '#[[:space:]]*include[[:space:]]*<sys/socket\.h>'
  '<netinet/'
  '<arpa/inet\.h>'
  '<sys/epoll\.h>'
  '<asio'
  '<thread>'
  '<random>'
  '<chrono>'
  'steady_clock'
  'system_clock'
  'high_resolution_clock'
  'std::rand'
  'srand\('
  'random_device'
  'time\(nullptr\)'
  'gettimeofday'
  'clock_gettime'
  'getrandom'
  'RAND_bytes'
  '(^|[^n])printf\('  # printf, fprintf, std::printf; snprintf only formats into memory
  'std::cout'
  'std::cerr'
  'fopen\('
)

existing=()
for dir in "${DIRS[@]}"; do
  if [[ -d "${dir}" ]]; then
    existing+=("${dir}")
  else
    echo "sans-IO check: note: ${dir} does not exist yet" >&2
  fi
done

files=()
if ((${#existing[@]} > 0)); then
  mapfile -d '' -t files < <(find "${existing[@]}" -type f \
    \( -name '*.h' -o -name '*.hh' -o -name '*.hpp' -o -name '*.cc' -o -name '*.cpp' \
    -o -name '*.cxx' -o -name '*.ipp' -o -name '*.inc' \) -print0 | sort -z)
  kept=()
  for f in "${files[@]}"; do
    skip=0
    for a in "${ALLOWED[@]}"; do [[ "$f" == "$a" ]] && skip=1; done
    ((skip)) || kept+=("$f")
  done
  files=("${kept[@]}")
fi

violations=""
if ((${#files[@]} > 0)); then
  for pattern in "${FORBIDDEN[@]}"; do
    hits="$(grep -HnE -- "${pattern}" "${files[@]}" |
      grep -vE '^[^:]+:[0-9]+:[[:space:]]*(//|/\*|\*)' || true)"
    if [[ -n "${hits}" ]]; then
      while IFS= read -r line; do
        violations+="${line}    [forbidden: ${pattern}]"$'\n'
      done <<<"${hits}"
    fi
  done
fi

if [[ -n "${violations}" ]]; then
  echo "sans-IO check: FAILED; the core must not do I/O, read clocks or draw randomness:" >&2
  printf '%s' "${violations}" | sort -t: -k1,1 -k2,2n >&2
  exit 1
fi
echo "sans-IO check: OK (${#files[@]} files; allowed by name: ${ALLOWED[*]})"
