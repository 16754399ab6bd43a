#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster in a folder of its own (docs/dbfrontend.md "Running").
#
#   pg-cluster.sh start DIR [--listen ADDR --allow CIDR]
#                             create DIR (must not exist), initdb + pg_ctl start as the postgres
#                             user on a free loopback port below 32768 with its own socket folder
#                             DIR/sock; prints the libpq connection string on stdout and writes
#                             it to DIR/conninfo. --listen also listens on ADDR (TCP, besides
#                             127.0.0.1), --allow lets clients from CIDR in (trust, pg_hba.conf),
#                             and the connection string then names host=ADDR (the testbed's
#                             database host, reached from other network namespaces)
#   pg-cluster.sh env DIR     print the connection string of a running cluster
#   pg-cluster.sh stop DIR    stop the server (fast shutdown) and remove DIR
#   pg-cluster.sh down DIR    stop the server but keep DIR (a database that is down)
#   pg-cluster.sh up DIR      start it again on the same port
#   pg-cluster.sh hang DIR    SIGSTOP the server and its processes (a database that hangs:
#                             connections and statements wait without an answer)
#   pg-cluster.sh resume DIR  SIGCONT them (stop also does this first)
#   pg-cluster.sh check       exit 0 if a cluster can be made here, else 77 with the reason
#
# Exit status: 0 ok; 77 PostgreSQL cannot be run here (binaries missing, or neither root nor the
# postgres user), so tests can skip; 1 anything else (initdb or start failed: the log is shown).
set -uo pipefail

readonly PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
readonly DB_NAME="bank"

die() {
  echo "pg-cluster: $*" >&2
  exit 1
}

# Runs a command as the postgres user (or directly when we are that user).
as_pg() {
  if [[ "$(id -un)" == "postgres" ]]; then
    "$@"
  else
    runuser -u postgres -- "$@"
  fi
}

check() {
  if [[ ! -x "${PGBIN}/initdb" || ! -x "${PGBIN}/pg_ctl" ]]; then
    echo "pg-cluster: PostgreSQL 15 server not installed (${PGBIN}/initdb missing; scripts/setup.sh installs postgresql-15)" >&2
    return 77
  fi
  if ! id postgres >/dev/null 2>&1; then
    echo "pg-cluster: there is no postgres user (install postgresql-15)" >&2
    return 77
  fi
  if [[ "$(id -un)" != "postgres" && "${EUID}" -ne 0 ]]; then
    echo "pg-cluster: needs root (to run initdb as the postgres user) or to be run as postgres" >&2
    return 77
  fi
  return 0
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# The -o options of pg_ctl for DIR (listen_addresses from DIR/listen when --listen was given).
server_opts() {
  local dir="$1" port="$2" listen="127.0.0.1"
  [[ -f "${dir}/listen" ]] && listen="127.0.0.1,$(cat "${dir}/listen")"
  echo "-p ${port} -k ${dir}/sock -c listen_addresses=${listen} -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c deadlock_timeout=50ms"
}

start() {
  local dir="$1" listen="${2:-}" allow="${3:-}"
  check || exit 77
  [[ -e "${dir}" ]] && die "${dir} already exists (pick a new folder; stop removes it)"
  mkdir -p "${dir}/data" "${dir}/sock" || die "cannot create ${dir}"
  dir="$(cd "${dir}" && pwd)"
  chown -R postgres: "${dir}" 2>/dev/null || true
  chmod 0755 "${dir}"
  # The postgres user must reach DIR: every parent needs search permission for others.
  if ! as_pg test -w "${dir}/data"; then
    rm -rf "${dir}"
    die "the postgres user cannot write ${dir}/data (a parent folder is not searchable by others?)"
  fi
  if ! as_pg "${PGBIN}/initdb" -D "${dir}/data" -A trust -U postgres >"${dir}/initdb.log" 2>&1; then
    cat "${dir}/initdb.log" >&2
    rm -rf "${dir}"
    die "initdb failed"
  fi
  if [[ -n "${listen}" ]]; then
    echo "${listen}" >"${dir}/listen"
    echo "host all all ${allow} trust" >>"${dir}/data/pg_hba.conf"
  fi
  local tries port
  for tries in 1 2 3 4 5 6 7 8; do
    port=$((${BANK_PORT_MIN:-20000} + (RANDOM % (${BANK_PORT_MAX:-31999} - ${BANK_PORT_MIN:-20000} + 1))))
    port_free "${port}" || continue
    if as_pg "${PGBIN}/pg_ctl" -D "${dir}/data" -l "${dir}/server.log" -w -t 30 \
      -o "$(server_opts "${dir}" "${port}")" \
      start >"${dir}/pg_ctl.log" 2>&1; then
      echo "${port}" >"${dir}/port"
      local ci="host=${listen:-${dir}/sock} port=${port} user=postgres dbname=${DB_NAME}"
      if ! as_pg "${PGBIN}/../bin/psql" -q -h "${dir}/sock" -p "${port}" -U postgres -d postgres -c "CREATE DATABASE ${DB_NAME}" >>"${dir}/pg_ctl.log" 2>&1; then
        cat "${dir}/pg_ctl.log" >&2
        stop "${dir}"
        die "CREATE DATABASE failed"
      fi
      echo "${ci}" >"${dir}/conninfo"
      chmod 0644 "${dir}/conninfo"
      echo "${ci}"
      return 0
    fi
    grep -q "could not bind\|Address already in use" "${dir}/server.log" 2>/dev/null || break
  done
  cat "${dir}/server.log" "${dir}/pg_ctl.log" >&2 2>/dev/null
  rm -rf "${dir}"
  die "the server did not start"
}

# The server's processes: the postmaster (first line of postmaster.pid) and its children.
server_pids() {
  local pm
  pm="$(head -1 "$1/data/postmaster.pid" 2>/dev/null)"
  [[ "${pm}" =~ ^[0-9]+$ ]] || return 0
  echo "${pm}"
  ps -o pid= --ppid "${pm}" 2>/dev/null
}
signal_server() {  # SIGNAL DIR
  local p
  for p in $(server_pids "$2"); do kill "-$1" "${p}" 2>/dev/null; done
  return 0
}

stop() {
  local dir="$1"
  [[ -d "${dir}/data" ]] || die "${dir} is not a cluster made by pg-cluster.sh"
  signal_server CONT "${dir}"  # a hung cluster (hang) stops like any other
  if [[ -f "${dir}/data/postmaster.pid" ]]; then
    as_pg "${PGBIN}/pg_ctl" -D "${dir}/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "${PGBIN}/pg_ctl" -D "${dir}/data" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  rm -rf "${dir}"
}

down() {
  as_pg "${PGBIN}/pg_ctl" -D "$1/data" -m fast -w -t 30 stop >/dev/null || die "stop failed"
}
up() {
  local port
  port="$(cat "$1/port")" || die "$1 is not a cluster made by pg-cluster.sh"
  as_pg "${PGBIN}/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 30 \
    -o "$(server_opts "$1" "${port}")" \
    start >/dev/null || die "start failed (see $1/server.log)"
}

case "${1:-}" in
  start)
    if [[ $# -eq 2 ]]; then
      start "$2"
    elif [[ $# -eq 6 && "$3" == --listen && "$5" == --allow ]]; then
      [[ "$4" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--listen needs an IPv4 address, not '$4'"
      [[ "$6" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "--allow needs an IPv4 CIDR, not '$6'"
      start "$2" "$4" "$6"
    else
      die "usage: pg-cluster.sh start DIR [--listen ADDR --allow CIDR]"
    fi
    ;;
  stop) [[ $# -eq 2 ]] || die "usage: pg-cluster.sh stop DIR"; stop "$2" ;;
  down) [[ $# -eq 2 ]] || die "usage: pg-cluster.sh down DIR"; down "$2" ;;
  hang) [[ $# -eq 2 && -f "$2/data/postmaster.pid" ]] || die "usage: pg-cluster.sh hang DIR (a running cluster)"; signal_server STOP "$2" ;;
  resume) [[ $# -eq 2 && -d "$2/data" ]] || die "usage: pg-cluster.sh resume DIR"; signal_server CONT "$2" ;;
  up) [[ $# -eq 2 ]] || die "usage: pg-cluster.sh up DIR"; up "$2" ;;
  env) [[ $# -eq 2 && -f "$2/conninfo" ]] || die "usage: pg-cluster.sh env DIR (a running cluster)"; cat "$2/conninfo" ;;
  check) check; exit $? ;;
  -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: pg-cluster.sh start|stop|down|up|hang|resume|env DIR | check (--help)" >&2; exit 2 ;;
esac
