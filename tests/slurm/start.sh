#!/usr/bin/env bash
# Usage: tests/slurm/start.sh [--state DIR] [--gpus N]
#
# Starts a one-node Slurm on loopback for the tests: munged, slurmctld and slurmd, with N fake
# GPUs (default 2) as gres backed by char devices, so Slurm sets CUDA_VISIBLE_DEVICES. Everything
# (config, munge key and socket, spool, logs, PIDs, fake GPUs) lives under the state directory
# (default /run/autoresearch-slurm); /etc is not touched. Needs root and Debian's slurmctld, slurmd,
# slurm-client and munge packages:
#   apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
#
# Idempotent: when this state directory's daemons are already up and the node is idle, it does
# nothing. AR_SLURM_PORT (default 6817) is slurmctld's port; slurmd gets the next one.
# stdout: `SLURM_CONF=PATH` (export it for srun, sinfo, scancel).
#
# Exit codes:
#   0  the node is idle (started now or already)
#   1  Slurm did not come up (daemon logs on stderr), or not root, or packages missing
#   2  usage
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly DAEMONS=(munged slurmctld slurmd)

log() { printf 'tests/slurm/start.sh: %s\n' "$*" >&2; }
die() { log "$2"; exit "$1"; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -1 || true; }

wait_idle() {
  local st='' i
  for i in $(seq 1 150); do # up to 30 s
    st="$(node_state)"
    [[ "${st}" == idle ]] && return 0
    sleep 0.2
  done
  log "node state: '${st}' after 30 s"
  return 1
}

write_config() {
  local state="$1" gpus="$2" cpus="$3"
  local last=$((gpus - 1))
  sed -e "s|@STATE@|${state}|g" -e "s|@GPUS@|${gpus}|g" -e "s|@CPUS@|${cpus}|g" \
    -e "s|@CTLD_PORT@|${AR_SLURM_PORT:-6817}|g" \
    -e "s|@SLURMD_PORT@|$((${AR_SLURM_PORT:-6817} + 1))|g" \
    "${HERE}/slurm.conf.in" >"${state}/slurm.conf"
  printf 'Name=gpu File=%s/gpu/fakegpu[0-%d]\n' "${state}" "${last}" >"${state}/gres.conf"
  local i
  for ((i = 0; i < gpus; i++)); do
    [[ -c "${state}/gpu/fakegpu${i}" ]] || mknod -m 666 "${state}/gpu/fakegpu${i}" c 1 3
  done
}

start_munge() {
  local state="$1" m="$1/munge"
  install -d -o munge -g munge -m 0755 "${m}"
  if [[ ! -s "${m}/munge.key" ]]; then
    mungekey --create --keyfile="${m}/munge.key"
    chown munge:munge "${m}/munge.key"
    chmod 600 "${m}/munge.key"
  fi
  setpriv --reuid=munge --regid=munge --clear-groups /usr/sbin/munged -F \
    --socket="${m}/munge.socket" --key-file="${m}/munge.key" --pid-file="${m}/munged.pidfile" \
    --log-file="${m}/munged.log" --seed-file="${m}/munged.seed" >"${state}/log/munged.out" 2>&1 &
  echo $! >"${state}/munged.pid"
  local i
  for i in $(seq 1 100); do
    munge -S "${m}/munge.socket" -n </dev/null 2>/dev/null \
      | unmunge -S "${m}/munge.socket" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "munged did not answer"
  cat "${state}/log/munged.out" "${m}/munged.log" >&2 2>/dev/null || true
  return 1
}

main() {
  local state=/run/autoresearch-slurm gpus=2
  while (($#)); do
    case "$1" in
      --state) state="${2:?--state needs a directory}"; shift 2 ;;
      --gpus) gpus="${2:?--gpus needs a number}"; shift 2 ;;
      -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
      *) die 2 "unknown option: $1" ;;
    esac
  done
  [[ "${gpus}" =~ ^[1-9][0-9]?$ ]] || die 2 "--gpus must be 1..99, not '${gpus}'"
  ((EUID == 0)) || die 1 "needs root (mknod, munge user)"
  local cmd
  for cmd in munged mungekey slurmctld slurmd srun sinfo; do
    command -v "${cmd}" >/dev/null 2>&1 || [[ -x "/usr/sbin/${cmd}" ]] \
      || die 1 "${cmd} not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
  done
  install -d -m 0755 "${state}" "${state}/spool/ctld" "${state}/spool/d" "${state}/log" "${state}/gpu"
  state="$(cd "${state}" && pwd)"
  export SLURM_CONF="${state}/slurm.conf"

  local up=0 d
  for d in "${DAEMONS[@]}"; do alive "${state}/${d}.pid" && up=$((up + 1)); done
  if ((up == ${#DAEMONS[@]})) && [[ "$(node_state)" == idle ]]; then
    echo "SLURM_CONF=${SLURM_CONF}"
    return 0
  fi
  ((up == 0)) || die 1 "some daemons of ${state} are running, some not: run tests/slurm/stop.sh first"

  local cpus=$((gpus * 2))
  write_config "${state}" "${gpus}" "${cpus}"
  start_munge "${state}"
  /usr/sbin/slurmctld -D -c -f "${SLURM_CONF}" >"${state}/log/slurmctld.out" 2>&1 &
  echo $! >"${state}/slurmctld.pid"
  /usr/sbin/slurmd -D -N localhost -f "${SLURM_CONF}" >"${state}/log/slurmd.out" 2>&1 &
  echo $! >"${state}/slurmd.pid"
  if ! wait_idle; then
    tail -n 20 "${state}"/log/*.out "${state}"/log/*.log >&2 2>/dev/null || true
    exit 1
  fi
  echo "SLURM_CONF=${SLURM_CONF}"
}

main "$@"
