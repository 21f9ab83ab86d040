# shellcheck shell=bash
# Shared plumbing for the autoresearch scripts. Sourced by each script, never run.
# It defines logging, usage printing and the way to reach the Python core (arcore).
# A script sets AR_NAME (its own name) before sourcing this file.

AR_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly AR_SCRIPTS_DIR
AR_NAME="${AR_NAME:-$(basename "$0")}"

# ---------------------------------------------------------------------------
# Messages: stdout is for data only; everything else goes to stderr.
# ---------------------------------------------------------------------------

ar_log() { printf '%s: %s\n' "${AR_NAME}" "$*" >&2; }

# ar_die CODE MESSAGE...: one clear line on stderr, then exit CODE.
ar_die() {
  local code="$1"
  shift
  ar_log "$*"
  exit "${code}"
}

# Prints the script's header comment block, from "# Usage:" to the first
# non-comment line, without the leading "# ".
ar_usage() {
  local file="${1:-$0}"
  sed -n '/^# Usage:/,/^[^#]/{/^#/!d;s/^# \{0,1\}//p}' "${file}"
}

# ar_help_if_asked ARGS...: prints the usage and exits 0 when -h or --help is
# among the arguments (checked before anything else runs or installs).
ar_help_if_asked() {
  local arg
  for arg in "$@"; do
    if [[ "${arg}" == "-h" || "${arg}" == "--help" ]]; then
      ar_usage "$0"
      exit 0
    fi
  done
}

# ---------------------------------------------------------------------------
# uv: found the one way every script finds it (arcore.uvenv.find_uv: PATH, then
# the directories below, in this order), else the official installer, else pip.
# ---------------------------------------------------------------------------

readonly AR_UV_INSTALLER="https://astral.sh/uv/install.sh"
# Same places and order as arcore.uvenv.UV_DIRS_FOR_BASH (a test keeps them equal).
AR_UV_DIRS=("${UV_INSTALL_DIR:-}" "${XDG_BIN_HOME:-}" "${HOME}/.local/bin" "${CARGO_HOME:-}/bin" "${HOME}/.cargo/bin")

# ar_find_uv: puts uv's directory on PATH when uv is off it, saying where; 1 when none.
ar_find_uv() {
  command -v uv >/dev/null 2>&1 && return 0
  local dir
  for dir in "${AR_UV_DIRS[@]}"; do
    [[ -n "${dir}" && "${dir}" != /bin && -x "${dir}/uv" ]] || continue
    export PATH="${dir}:${PATH}"
    ar_log "uv is not on PATH; using ${dir}/uv (add ${dir} to PATH to use it yourself)"
    return 0
  done
  return 1
}

ar_ensure_uv() {
  ar_find_uv && return 0
  ar_log "uv not found: installing it with the official installer (${AR_UV_INSTALLER})"
  if command -v curl >/dev/null 2>&1 \
    && curl -LsSf --max-time 120 "${AR_UV_INSTALLER}" 2>/dev/null | sh >&2 \
    && ar_find_uv; then
    return 0
  fi
  ar_log "the official installer failed: trying python3 -m pip install --user uv"
  if command -v python3 >/dev/null 2>&1; then
    python3 -m pip install --quiet --user uv >&2 || python3 -m pip install --quiet uv >&2 || true
  fi
  ar_find_uv \
    || ar_die 1 "could not install uv: install it by hand (https://docs.astral.sh/uv/) and rerun"
}

# ---------------------------------------------------------------------------
# Python: python3 >= 3.10 on PATH, else uv's own Python (a GPU box may have
# bash, git and uv only). Sets the array AR_PY, and AR_PY_EXE to the file the
# python3 it found runs (its sys.executable; empty for uv's Python).
# ---------------------------------------------------------------------------

ar_find_python() {
  [[ -n "${AR_PY_FOUND:-}" ]] && return 0
  if command -v python3 >/dev/null 2>&1 \
    && AR_PY_EXE="$(python3 -S -c \
      'import sys; print(sys.executable); sys.exit(sys.version_info < (3, 10))' 2>/dev/null)"; then
    AR_PY=(python3)
  elif ar_find_uv; then
    # shellcheck disable=SC2034  # read by the scripts (show-results.sh)
    AR_PY_EXE=""
    AR_PY=(uv run --quiet --no-project --python '>=3.10' python)
  else
    ar_die 1 "no python3 >= 3.10 and no uv found; install uv (https://docs.astral.sh/uv/)"
  fi
  AR_PY_FOUND=1
}

# ar_git ARGS...: git as the harness runs it (arcore.gitx): no repository hook,
# no fsmonitor, no pager, no external diff, whatever the repository configures.
ar_git() {
  GIT_TERMINAL_PROMPT=0 GIT_ATTR_NOSYSTEM=1 git -c core.hooksPath=/dev/null \
    -c core.fsmonitor=false -c core.pager=cat -c diff.external= "$@"
}

# ar_take_sandbox ARGS...: sets AR_ARGS to ARGS without --sandbox and, when it was
# there, exports AUTORESEARCH_SANDBOX=1 (every run-experiment.sh below reads it).
ar_take_sandbox() {
  AR_ARGS=()
  local arg
  for arg in "$@"; do
    if [[ "${arg}" == "--sandbox" ]]; then
      export AUTORESEARCH_SANDBOX=1
    else
      AR_ARGS+=("${arg}")
    fi
  done
}

# AR_ARCORE: the interpreter arguments that run `python -m arcore` without the folder it is
# started in on sys.path (`-m` puts it first: a json.py or an arcore/ in the user's
# repository, committed by a candidate or left by its run, would be imported in place of the
# standard library's or the harness's own). -c adds it as '', which is dropped; then runpy
# runs arcore as -m would. (-P does the same, but only from Python 3.11.)
# shellcheck disable=SC2034  # read by the scripts that source this file
readonly AR_ARCORE=(-c 'import sys; sys.path[:] = [p for p in sys.path if p]; import runpy; runpy.run_module("arcore", run_name="__main__", alter_sys=True)')

# ar_core MODULE ARGS...: runs `python -m arcore MODULE ARGS...`.
ar_core() {
  ar_find_python
  PYTHONPATH="${AR_SCRIPTS_DIR}${PYTHONPATH:+:${PYTHONPATH}}" "${AR_PY[@]}" "${AR_ARCORE[@]}" "$@"
}
