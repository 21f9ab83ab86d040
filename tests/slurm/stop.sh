#!/usr/bin/env bash
# Usage: tests/slurm/stop.sh [--state DIR]
#
# Stops exactly the daemons tests/slurm/start.sh started for this state directory (by the PIDs it
# recorded), after cancelling any job left on that Slurm (a job step outlives slurmd). Idempotent:
# nothing running is not an error. The state directory is kept (its logs help); delete it yourself.
#
# Exit codes:
#   0  stopped, or nothing was running
#   2  usage
set -euo pipefail

log() { printf 'tests/slurm/stop.sh: %s\n' "$*" >&2; }

cancel_jobs() {
  scontrol ping >/dev/null 2>&1 || return 0
  local jobs
  jobs="$(squeue -h -o %A 2>/dev/null || true)"
  [[ -n "${jobs}" ]] || return 0
  # shellcheck disable=SC2086 # one job id per word
  scancel ${jobs} 2>/dev/null || true
  for _ in $(seq 1 100); do
    [[ -z "$(squeue -h -o %A 2>/dev/null || true)" ]] && return 0
    sleep 0.1
  done
  log "jobs still listed after 10 s: ${jobs//$'\n'/ }"
}

# stop_pids STATE NAME...: SIGTERM each recorded PID, wait up to 10 s, then SIGKILL.
stop_pids() {
  local state="$1" pids=() d pid alive
  shift
  for d in "$@"; do
    [[ -f "${state}/${d}.pid" ]] || continue
    pid="$(cat "${state}/${d}.pid")"
    rm -f "${state}/${d}.pid"
    [[ "${pid}" =~ ^[0-9]+$ ]] || continue
    kill -TERM "${pid}" 2>/dev/null && pids+=("${pid}")
  done
  ((${#pids[@]})) || return 0
  for _ in $(seq 1 200); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "${pid}" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.05
  done
  for pid in "${pids[@]}"; do
    if kill -0 "${pid}" 2>/dev/null; then
      log "PID ${pid} ignored SIGTERM; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
    fi
  done
}

main() {
  local state=/run/autoresearch-slurm
  while (($#)); do
    case "$1" in
      --state) state="${2:?--state needs a directory}"; shift 2 ;;
      -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
      *) log "unknown option: $1"; exit 2 ;;
    esac
  done
  [[ -d "${state}" ]] || return 0
  export SLURM_CONF="${state}/slurm.conf"
  [[ -f "${SLURM_CONF}" ]] && cancel_jobs
  stop_pids "${state}" slurmd slurmctld
  stop_pids "${state}" munged
}

main "$@"
