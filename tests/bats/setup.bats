#!/usr/bin/env bats
# scripts/setup.sh: its command line, installing a missing uv (official installer, then pip),
# a missing git, and a run twice against a local upstream with a stand-in uv. The full
# behaviour (presets, freeze, baseline, exit 3/4) is in tests/test_setup.py.

bats_require_minimum_version 1.5.0

load helpers

setup() {
  ar_setup_env
  SETUP="${AR_SCRIPTS}/setup.sh"
  FAKE_UV_SRC="${AR_ROOT}/tests/fixtures/setup/fake-uv"
  REAL_PYTHON="$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')"
  ar_make_repo "${BATS_TEST_TMPDIR}/upstream"
  UPSTREAM="${REPO}"
  CLONE="${BATS_TEST_TMPDIR}/clone"
  # A PATH of plain tools only: no uv (and no pyenv shims); fakes come first.
  ONLY="${BATS_TEST_TMPDIR}/only"
  mkdir -p "${ONLY}"
  local tool
  for tool in bash sh dirname basename cat env sed mkdir ln chmod rm git; do
    ln -s "$(command -v "${tool}")" "${ONLY}/${tool}"
  done
  ln -s "${REAL_PYTHON}" "${ONLY}/python3"
  cd "${BATS_TEST_TMPDIR}"
}

# run_setup ARGS...: setup.sh with PATH = fakes + plain tools.
run_setup() {
  run --separate-stderr "$(command -v env)" PATH="${AR_FAKE_BIN}:${ONLY}" \
    bash "${SETUP}" --from "${UPSTREAM}" --dir "${CLONE}" --tag t1 --no-gpu-check "$@"
}

# An installer that "installs" the stand-in uv into ~/.local/bin, as the real one does.
fake_installer() {
  ar_fake curl "printf '%s\\n' 'mkdir -p \"\${HOME}/.local/bin\" && ln -sf \"${FAKE_UV_SRC}\" \"\${HOME}/.local/bin/uv\"'"
}

@test "help lists the steps, the options and the exit codes" {
  run --separate-stderr bash "${SETUP}" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == "Usage: setup.sh"* ]]
  [[ "${output}" == *"--preset TIER"* && "${output}" == *"--no-gpu-check"* ]]
  [[ "${output}" == *"--new-track"* && "${output}" == *"--from DIR"* ]]
  [[ "${output}" == *"Exit codes:"* && "${output}" == *"3    refused"* ]]
}

@test "a bad option is a usage error with one line on stderr, before installing uv" {
  ar_fake curl "touch '${BATS_TEST_TMPDIR}/curl-called'; exit 7"
  run_setup --preset huge
  [ "${status}" -eq 2 ]
  [ -z "${output}" ]
  [[ "${stderr}" == "setup.sh: unknown preset 'huge'; one of: 80gb, 40gb, 24gb, 12gb, 6gb" ]]
  [ ! -e "${BATS_TEST_TMPDIR}/curl-called" ]
}

@test "a missing git stops setup with exit 1 before anything happens" {
  rm "${ONLY}/git"
  run_setup
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == "setup.sh: git not found: install git and rerun" ]]
  [ ! -e "${CLONE}" ]
}

@test "a missing uv is installed with the official installer" {
  fake_installer
  run_setup --no-prepare --no-baseline
  [ "${status}" -eq 0 ]
  [ -L "${HOME}/.local/bin/uv" ]
  [[ "${stderr}" == *"uv not found: installing it with the official installer"* ]]
  [[ "${output}" == *"branch: autoresearch/t1"* ]]
}

@test "when the official installer fails, pip installs uv" {
  ar_fake curl 'exit 7'
  ar_fake python3 "if [[ \"\$1 \$2 \$3\" == '-m pip install' ]]; then
  mkdir -p \"\${HOME}/.local/bin\" && ln -sf '${FAKE_UV_SRC}' \"\${HOME}/.local/bin/uv\"
  echo \"\$*\" >'${BATS_TEST_TMPDIR}/pip.log'; exit 0
fi
exec '${REAL_PYTHON}' \"\$@\""
  run_setup --no-prepare --no-baseline
  [ "${status}" -eq 0 ]
  [[ "${stderr}" == *"trying python3 -m pip install --user uv"* ]]
  [ "$(cat "${BATS_TEST_TMPDIR}/pip.log")" = "-m pip install --quiet --user uv" ]
}

@test "when no way to install uv works, setup says so and exits 1" {
  ar_fake curl 'exit 7'
  ar_fake python3 "[[ \"\$1 \$2\" == '-m pip' ]] && exit 1; exec '${REAL_PYTHON}' \"\$@\""
  run_setup
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"could not install uv: install it by hand"* ]]
  [ ! -e "${CLONE}" ]
}

@test "run twice against a local upstream, the second run changes nothing" {
  ln -s "${FAKE_UV_SRC}" "${AR_FAKE_BIN}/uv"
  run_setup --no-prepare
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"status: keep"* && "${output}" == *"val_bpb: 1.000000"* ]]
  local first="${output}"
  local state
  state="$(git -C "${CLONE}" for-each-ref; git -C "${CLONE}" reflog --all; \
    cat "${CLONE}/results.tsv" "${CLONE}/.autoresearch/session.json")"
  run_setup --no-prepare
  [ "${status}" -eq 0 ]
  [ "${output}" = "${first}" ]
  [ "$(git -C "${CLONE}" for-each-ref; git -C "${CLONE}" reflog --all; \
    cat "${CLONE}/results.tsv" "${CLONE}/.autoresearch/session.json")" = "${state}" ]
}
