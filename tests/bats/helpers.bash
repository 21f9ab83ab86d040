# shellcheck shell=bash
# Shared bats helpers: scratch target repositories and fakes on PATH.
#
#   load helpers                       (in a .bats file)
#   ar_setup_env                       HOME, cache dir and a fake bin dir in $BATS_TEST_TMPDIR;
#                                      AUTORESEARCH_METRIC_SOURCE=printed (the stand-ins print
#                                      a val_bpb without an evaluator; unset it to attest)
#   ar_make_repo [DIR]                 a committed upstream-layout repo (stand-in scripts);
#                                      sets REPO
#   ar_use_standin NAME [MSG]          train.py <- tests/fixtures/standins/NAME, committed
#   ar_set_constant NAME VALUE [MSG]   edit train.py's `NAME = ...` line, committed
#   ar_fake_uv                         `uv run [python] X...` runs `python3 X...` (no network, no venv)
#   ar_fake_nvidia_smi [NAME...]       nvidia-smi printing these GPU names (default: one H100)
#   ar_fake NAME BODY                  any fake command: a bash script with BODY
#   ar_head / ar_rows                  HEAD's sha / the number of results.tsv data rows
#
# Constants: AR_ROOT (the package), AR_SCRIPTS, AR_STANDINS, AR_FAKE_BIN.

# shellcheck disable=SC2034  # used by the .bats files that load this one
AR_ROOT="$(cd "${BATS_TEST_DIRNAME}/../.." && pwd)"
# shellcheck disable=SC2034
AR_SCRIPTS="${AR_ROOT}/scripts"
AR_STANDINS="${AR_ROOT}/tests/fixtures/standins"

# A private HOME, data cache and fake-command dir, first on PATH.
ar_setup_env() {
  export HOME="${BATS_TEST_TMPDIR}/home"
  export AUTORESEARCH_CACHE_DIR="${BATS_TEST_TMPDIR}/cache"
  AR_FAKE_BIN="${BATS_TEST_TMPDIR}/fakebin"
  mkdir -p "${HOME}" "${AUTORESEARCH_CACHE_DIR}" "${AR_FAKE_BIN}"
  export PATH="${AR_FAKE_BIN}:${PATH}"
  export GIT_CONFIG_NOSYSTEM=1
  export AUTORESEARCH_METRIC_SOURCE=printed
  export GIT_AUTHOR_NAME=Test GIT_AUTHOR_EMAIL=test@example.com
  export GIT_COMMITTER_NAME=Test GIT_COMMITTER_EMAIL=test@example.com
}

ar_make_repo() {
  REPO="${1:-${BATS_TEST_TMPDIR}/target}"
  mkdir -p "${REPO}"
  cp "${AR_STANDINS}/target/"* "${REPO}/"
  cp "${AR_STANDINS}/ok.py" "${REPO}/train.py"
  git -C "${REPO}" init -q -b autoresearch/test
  git -C "${REPO}" config commit.gpgsign false
  git -C "${REPO}" add -A
  git -C "${REPO}" commit -q -m "baseline"
}

ar_use_standin() {
  cp "${AR_STANDINS}/$1" "${REPO}/train.py"
  git -C "${REPO}" commit -q -am "${2:-use $1}"
}

ar_set_constant() {
  sed -i.bak "s/^$1 = .*/$1 = $2/" "${REPO}/train.py"
  rm -f "${REPO}/train.py.bak"
  git -C "${REPO}" commit -q -am "${3:-set $1 to $2}"
}

ar_fake() {
  printf '#!/usr/bin/env bash\n%s\n' "$2" >"${AR_FAKE_BIN}/$1"
  chmod +x "${AR_FAKE_BIN}/$1"
}

ar_fake_uv() {
  # shellcheck disable=SC2016  # the body is the fake's own code
  ar_fake uv 'if [[ "${1:-}" == run ]]; then shift; [[ "${1:-}" == python* ]] && shift; exec python3 "$@"; fi
echo "fake uv: unsupported: $*" >&2; exit 2'
}

ar_fake_nvidia_smi() {
  local names=("$@")
  ((${#names[@]})) || names=("NVIDIA H100 80GB HBM3")
  ar_fake nvidia-smi "printf '%s\\n' $(printf '%q ' "${names[@]}")"
}

ar_head() { git -C "${REPO}" rev-parse HEAD; }

ar_rows() {
  if [[ -f "${REPO}/results.tsv" ]]; then
    echo $(($(wc -l <"${REPO}/results.tsv") - 1))
  else
    echo 0
  fi
}
