#!/usr/bin/env bash
# Usage: tests/run.sh [PYTEST_ARGS...]
#
# Runs the whole test suite from a fresh clone: installs uv if it is missing
# (the official installer, falling back to `python3 -m pip install uv`), then
# installs the Debian packages some tests use (Slurm and munge for the Slurm
# runner, librsvg2-bin to render the progress chart, bubblewrap for --sandbox)
# when it runs as root with apt-get, then runs pytest, bats, ShellCheck over
# every shell script, and the
# Agent Skills reference validator on SKILL.md. pytest runs in AR_TEST_WORKERS
# processes (default 2; 0 runs it in this one). Every part runs; the exit code
# is non-zero when any part failed. Tests whose packages are absent skip and
# say why. AR_TEST_NO_APT=1 skips the Debian packages. It also installs the real
# agent CLIs (Claude Code, Codex) with npm into tests/.agent-clis/ where npm is present;
# AR_TEST_NO_NPM=1 skips that.
#
# Exit codes:
#   0  every part passed
#   1  at least one part failed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

AR_NAME="tests/run.sh"
# shellcheck source=scripts/common.sh
source "${ROOT}/scripts/common.sh"

readonly DEBIAN_PACKAGES=(slurmctld slurmd slurm-client munge librsvg2-bin bubblewrap)

ensure_debian_packages() {
  [[ -n "${AR_TEST_NO_APT:-}" ]] && return 0
  if command -v slurmctld >/dev/null 2>&1 && command -v rsvg-convert >/dev/null 2>&1 \
    && command -v bwrap >/dev/null 2>&1; then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    ar_log "not root or no apt-get: Slurm and chart-rendering tests will skip"
    return 0
  fi
  ar_log "installing Debian packages: ${DEBIAN_PACKAGES[*]}"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${DEBIAN_PACKAGES[@]}"; } >/dev/null 2>&1; then
    ar_log "apt-get failed: Slurm and chart-rendering tests will skip"
  fi
}

# The real agent CLIs for tests/test_agent_clis.py, at the versions
# references/proposer-recipes.md names (`@anthropic-ai/claude-code@X`, `@openai/codex@Y`),
# installed with npm into tests/.agent-clis/ (ignored by git; nothing global). Already there at
# those versions: nothing to do. No npm, or npm fails (offline): the tests skip and say why.
readonly AGENT_CLI_DIR="${ROOT}/tests/.agent-clis"
readonly AGENT_CLI_PACKAGES=(@anthropic-ai/claude-code @openai/codex)

ensure_agent_clis() {
  [[ -n "${AR_TEST_NO_NPM:-}" ]] && return 0
  local specs=() stale=0 package version installed
  for package in "${AGENT_CLI_PACKAGES[@]}"; do
    version="$(grep -o "\`${package}@[0-9][^\` ]*\`" "${ROOT}/references/proposer-recipes.md" \
      | head -n 1 | tr -d '\`')" || true
    version="${version##*@}"
    if [[ -z "${version}" ]]; then
      ar_log "proposer-recipes.md names no tested version of ${package}"
      return 0
    fi
    installed="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
      "${AGENT_CLI_DIR}/node_modules/${package}/package.json" 2>/dev/null | head -n 1)" || true
    [[ "${installed}" == "${version}" ]] || stale=1
    specs+=("${package}@${version}")
  done
  ((stale)) || return 0
  if ! command -v npm >/dev/null 2>&1; then
    ar_log "no npm: the real agent CLI tests (tests/test_agent_clis.py) will skip"
    return 0
  fi
  ar_log "installing ${specs[*]} into tests/.agent-clis (npm)"
  if ! npm install --prefix "${AGENT_CLI_DIR}" --no-audit --no-fund --fetch-retries=1 \
    --fetch-timeout=120000 --loglevel=error "${specs[@]}" >&2; then
    ar_log "npm install failed (offline?): the real agent CLI tests will skip"
  fi
}

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit 0
  fi
  cd "${ROOT}"
  ar_ensure_uv
  ensure_debian_packages
  ensure_agent_clis
  uv sync --quiet --group test >&2
  local venv="${ROOT}/.venv/bin"
  export PATH="${venv}:${PATH}"
  local failed=()

  ar_log "ShellCheck"
  mapfile -t shell_files < <(git ls-files '*.sh' '*.bash' '.ci/run' 2>/dev/null || true)
  if ((${#shell_files[@]})); then
    shellcheck -x "${shell_files[@]}" || failed+=(shellcheck)
  fi

  ar_log "Agent Skills validator"
  local skill_dir
  skill_dir="$(mktemp -d)/autoresearch"
  mkdir -p "${skill_dir}"
  cp -R SKILL.md scripts references templates "${skill_dir}/"
  agentskills validate "${skill_dir}" || failed+=(agentskills)

  ar_log "bats"
  bats tests/bats || failed+=(bats)

  ar_log "pytest"
  # Two processes by default (CI has two cores); a file's tests stay in one process, so
  # the Slurm daemons and each file's fixtures are never shared. AR_TEST_WORKERS=0: serial.
  local workers="${AR_TEST_WORKERS:-2}"
  if [[ "${workers}" == 0 ]]; then
    python -m pytest "$@" || failed+=(pytest)
  else
    python -m pytest -n "${workers}" --dist loadfile "$@" || failed+=(pytest)
  fi

  if ((${#failed[@]})); then
    ar_log "FAILED: ${failed[*]}"
    exit 1
  fi
  ar_log "all parts passed"
}

main "$@"
