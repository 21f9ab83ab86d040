#!/usr/bin/env bash
# Usage: demo.sh [DIR]
#
# A whole autoresearch session, for real, on a machine without a GPU (about 2 minutes).
# It uses exactly the scripts and options a user would:
#   1. copies the CPU target (examples/cpu-target: a byte-level numpy language model laid
#      out like upstream, 15 s training budget) into DIR
#   2. installs uv if it is missing (the official installer, else `python3 -m pip install uv`)
#   3. setup.sh --dir DIR --cpu --tag demo: puts DIR under git, `uv sync` (numpy),
#      `uv run prepare.py`, results.tsv, the freeze and the baseline run
#   4. run-loop.sh --repo DIR --queue examples/cpu-target/demo-queue: four prepared
#      patches, one experiment each (a win that is kept, a loser that is discarded and
#      reverted, a diverging learning rate that crashes, a second win)
#   5. show-results.sh --plot DIR/.autoresearch/progress.svg: the report (on stderr) and
#      the SVG progress chart (beside the other session files, so the tree stays clean)
#
# DIR: a new or empty directory (default: a fresh one under ./demo-run/). The data cache is
# ~/.cache/autoresearch-cpu, or $AUTORESEARCH_CACHE_DIR. The session is always attested: every
# run goes through the launcher and val_bpb is the evaluator's (AUTORESEARCH_METRIC_SOURCE is
# ignored here).
#
# stdout: key: value lines: repo, branch, head, baseline, best, experiments, ledger, runs,
# logs, run_log, chart. The steps' own output goes to stderr.
#
# Exit codes:
#   0    the session ran (baseline, four judged experiments, report and chart)
#   1    a step failed (its message is above)
#   2    usage: an unknown option, or DIR exists and is not an empty directory
#   130  interrupted
set -euo pipefail

AR_NAME="demo.sh"
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOT="$(cd "${AR_SCRIPTS_DIR}/.." && pwd)"
readonly ROOT
readonly TARGET="${ROOT}/examples/cpu-target"
readonly QUEUE="${TARGET}/demo-queue"
readonly TARGET_FILES=(prepare.py train.py pyproject.toml uv.lock program.md README.md .gitignore)
readonly RUN_TIMEOUT=120

# Prints the absolute path of the scratch directory, created (and empty).
make_dir() {
  local dir="${1:-}"
  if [[ -z "${dir}" ]]; then
    mkdir -p "${PWD}/demo-run"
    mktemp -d "${PWD}/demo-run/$(date -u +%Y%m%d-%H%M%S)-XXXX"
    return 0
  fi
  if [[ -e "${dir}" && ! -d "${dir}" ]] || [[ -d "${dir}" && -n "$(ls -A "${dir}")" ]]; then
    ar_die 2 "${dir} exists and is not an empty directory: pass a new or empty DIR"
  fi
  mkdir -p "${dir}"
  (cd "${dir}" && pwd)
}

# A commit identity for git am in the scratch repo when the user has none configured.
ensure_identity() {
  ar_git -C "$1" config user.email >/dev/null 2>&1 && return 0
  export GIT_AUTHOR_NAME="autoresearch demo" GIT_AUTHOR_EMAIL="demo@localhost"
  export GIT_COMMITTER_NAME="autoresearch demo" GIT_COMMITTER_EMAIL="demo@localhost"
}

# Prints the value of KEY from key: value lines on stdin (empty when absent).
value_of() {
  sed -n "s/^$1: //p" | tail -n 1
}

main() {
  case "${1:-}" in
    -h | --help) ar_usage "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) ar_die 2 "unknown option '$1' (see --help)" ;;
  esac
  (($# <= 1)) || ar_die 2 "one DIR at most (see --help)"
  local dir setup_out loop_out
  dir="$(make_dir "${1:-}")"
  ar_ensure_uv
  ar_log "copying the CPU target into ${dir}"
  local file
  for file in "${TARGET_FILES[@]}"; do
    cp "${TARGET}/${file}" "${dir}/${file}"
  done
  ensure_identity "${dir}"

  unset AUTORESEARCH_METRIC_SOURCE  # the demo shows the attested metric, never a printed one
  ar_log "step 1/3: setup.sh --dir ${dir} --cpu --tag demo"
  setup_out="$(bash "${AR_SCRIPTS_DIR}/setup.sh" --dir "${dir}" --cpu --tag demo \
    --timeout "${RUN_TIMEOUT}")"
  printf '%s\n' "${setup_out}" >&2

  ar_log "step 2/3: run-loop.sh --repo ${dir} --queue ${QUEUE}"
  loop_out="$(bash "${AR_SCRIPTS_DIR}/run-loop.sh" --repo "${dir}" --queue "${QUEUE}" \
    --timeout "${RUN_TIMEOUT}")"
  printf '%s\n' "${loop_out}" >&2

  local chart="${dir}/.autoresearch/progress.svg"
  ar_log "step 3/3: show-results.sh --plot ${chart}"
  (cd "${dir}" && bash "${AR_SCRIPTS_DIR}/show-results.sh" --plot "${chart}") >&2

  printf 'repo: %s\n' "${dir}"
  printf 'branch: %s\n' "$(ar_git -C "${dir}" symbolic-ref --short HEAD)"
  printf 'head: %s\n' "$(ar_git -C "${dir}" rev-parse --short=7 HEAD)"
  printf 'baseline: %s\n' "$(value_of val_bpb <<<"${setup_out}")"
  printf 'best: %s\n' "$(value_of best <<<"${loop_out}")"
  printf 'experiments: %s\n' "$(value_of experiments <<<"${loop_out}")"
  printf 'ledger: %s\n' "${dir}/results.tsv"
  printf 'runs: %s\n' "${dir}/.autoresearch/runs.jsonl"
  printf 'logs: %s\n' "${dir}/.autoresearch/logs"
  printf 'run_log: %s\n' "${dir}/run.log"
  printf 'chart: %s\n' "${chart}"
}

main "$@"
