#!/usr/bin/env bash
# Stand-in for mtcp-bank-frontend that `mtcp-bank-client run --frontend` execs once per pool
# member (testbed/experiments/bank.py): it runs the real front-end in the network (and mount)
# namespace of the Mininet server host of that member, so `run` keeps starting, SIGKILLing and
# restarting its own front-ends by PID while each one lives on its own host. `exec` twice
# (here, then mnexec's execvp) keeps the PID `run` forked, and its parent-death signal.
#
# Environment: MTCP_TB_FRONTEND the real mtcp-bank-frontend; MTCP_TB_HOST_PIDS "ID:PID,..." the
# PID of a process in each member's host (Mininet's host.pid). The arguments are the
# front-end's own (`--pool P --id N --conninfo CI -q`), passed on unchanged.
set -euo pipefail
id=""
args=("$@")
for ((k = 0; k + 1 < ${#args[@]}; k++)); do
  [[ "${args[k]}" == --id ]] && id="${args[k + 1]}"
done
[[ -n "${id}" ]] || { echo "frontend_in_host: no --id in the arguments" >&2; exit 2; }
[[ -x "${MTCP_TB_FRONTEND:-}" ]] || { echo "frontend_in_host: MTCP_TB_FRONTEND is not an executable" >&2; exit 2; }
pid=""
IFS=, read -ra pairs <<<"${MTCP_TB_HOST_PIDS:-}"
for p in "${pairs[@]}"; do
  [[ "${p%%:*}" == "${id}" ]] && pid="${p#*:}"
done
[[ -n "${pid}" ]] || { echo "frontend_in_host: no host for member ${id} in MTCP_TB_HOST_PIDS" >&2; exit 2; }
exec mnexec -a "${pid}" "${MTCP_TB_FRONTEND}" "$@"
