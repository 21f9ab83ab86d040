#!/usr/bin/env bats
# scripts/show-results.sh: the command line around arcore.report (exit codes, stdout vs stderr,
# finding the ledger and the session files, every corpus ledger).

bats_require_minimum_version 1.5.0

setup() {
  ROOT="$(cd "${BATS_TEST_DIRNAME}/../.." && pwd)"
  SHOW="${ROOT}/scripts/show-results.sh"
  CORPUS="${ROOT}/tests/fixtures/corpus/results"
  WORK="${BATS_TEST_TMPDIR}/repo"
  mkdir -p "${WORK}/.autoresearch"
  printf 'commit\tval_bpb\tmemory_gb\tstatus\tdescription\n' >"${WORK}/results.tsv"
  printf '%s\t%s\t%s\t%s\t%s\n' \
    a000001 1.000000 44.0 keep baseline \
    a000002 0.990000 44.0 keep 'raise matrix LR to 0.05' \
    a000003 0.000000 0.0 crash 'double width (oom)' \
    a000004 0.989500 44.0 keep 'matrix LR 0.05 -> 0.06' \
    a000005 0.995000 44.0 discard 'weight decay <0.1> & “more”' \
    >>"${WORK}/results.tsv"
}

@test "help lists the options and the exit codes" {
  run --separate-stderr bash "${SHOW}" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == "Usage: show-results.sh"* ]]
  [[ "${output}" == *"--plot FILE.svg"* ]]
  [[ "${output}" == *"--tried"* ]]
  [[ "${output}" == *"Exit codes:"* ]]
  [[ "${output}" == *"1  no ledger"* ]]
  [ -z "${stderr}" ]
}

@test "it reads results.tsv in the current directory by default" {
  cd "${WORK}"
  run --separate-stderr bash "${SHOW}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"experiments: 5  keep: 3  discard: 1  crash: 1"* ]]
  [[ "${output}" == *"1.000000 (baseline) -> 0.989500 (best)"* ]]
  [ -z "${stderr}" ]
}

@test "a missing ledger is one line on stderr, nothing on stdout, exit 1" {
  run --separate-stderr bash "${SHOW}" --ledger "${BATS_TEST_TMPDIR}/none.tsv"
  [ "${status}" -eq 1 ]
  [ -z "${output}" ]
  [[ "${stderr}" == "show-results.sh: no ledger at "*"none.tsv"* ]]
  [ "${#stderr_lines[@]}" -eq 1 ]
}

@test "a bad option is a usage error, exit 2, named after the script" {
  run --separate-stderr bash "${SHOW}" --ledger "${WORK}/results.tsv" --top many
  [ "${status}" -eq 2 ]
  [ -z "${output}" ]
  [[ "${stderr}" == "show-results.sh: --top needs a whole number"* ]]
  run --separate-stderr bash "${SHOW}" --frobnicate
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == "show-results.sh: unknown argument: --frobnicate"* ]]
}

@test "json output is one valid object for agents" {
  run --separate-stderr bash "${SHOW}" --ledger "${WORK}/results.tsv" --json
  [ "${status}" -eq 0 ]
  [ "${#lines[@]}" -eq 1 ]
  printf '%s' "${output}" | python3 -c '
import json, sys
rep = json.load(sys.stdin)
assert rep["counts"] == {"keep": 3, "discard": 1, "crash": 1, "other": 0}, rep["counts"]
assert rep["best"]["commit"] == "a000004"
assert rep["tried"]["crashed"][0]["description"] == "double width (oom)"
'
}

@test "the session directory beside the ledger supplies the noise floor" {
  printf '{"noise_floor": 0.002}\n' >"${WORK}/.autoresearch/session.json"
  run --separate-stderr bash "${SHOW}" --ledger "${WORK}/results.tsv"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"noise: noise floor 0.002000"* ]]
  [[ "${output}" == *"matrix LR 0.05 -> 0.06 [within noise]"* ]]
}

@test "an explicit session directory overrides the one beside the ledger" {
  printf '{"noise_floor": 0.002}\n' >"${WORK}/.autoresearch/session.json"
  mkdir -p "${BATS_TEST_TMPDIR}/other"
  run --separate-stderr bash "${SHOW}" --ledger "${WORK}/results.tsv" \
    --session-dir "${BATS_TEST_TMPDIR}/other"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"no noise floor measured: single runs cannot separate gains"* ]]
}

@test "the tried block is ready to paste into program.md" {
  run --separate-stderr bash "${SHOW}" --ledger "${WORK}/results.tsv" --tried
  [ "${status}" -eq 0 ]
  [ "${lines[0]}" = "5 experiments (4 ideas); val_bpb 1.000000 (baseline) -> 0.989500 (best); 2 kept, 1 discarded, 1 crashed." ]
  [[ "${output}" == *$'Kept:\n- matrix lr x2: raise matrix LR to 0.05 (-0.010000); 0.05 -> 0.06 (-0.000500)'* ]]
  [[ "${output}" != *"- baseline"* ]]
  [[ "${output}" == *"- weight decay: <0.1> & “more” (0.995000)"* ]]
  [[ "${output}" == *"- width: double width (oom)"* ]]
}

@test "the plot is written as well-formed SVG with escaped descriptions" {
  run --separate-stderr bash "${SHOW}" --ledger "${WORK}/results.tsv" --plot "${WORK}/p.svg"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"plot: ${WORK}/p.svg"* ]]
  python3 -c 'import sys, xml.etree.ElementTree as ET; ET.parse(sys.argv[1])' "${WORK}/p.svg"
  grep -q 'baseline' "${WORK}/p.svg"
}

@test "every corpus ledger reports in at most 40 lines" {
  local f
  for f in "${CORPUS}"/*.tsv; do
    run --separate-stderr bash "${SHOW}" --ledger "${f}"
    [ "${status}" -eq 0 ]
    [ "${#lines[@]}" -le 40 ]
    [[ "${output}" == *"best experiment: #"* ]]
  done
}

@test "a reader that stops early is not an error" {
  # 20000 ideas: far more than a pipe buffer holds, so the writer sees the pipe close
  awk 'BEGIN { for (i = 6; i < 20006; i++)
    printf "b%06d\t0.990000\t44.0\tdiscard\tidea %d\n", i, i }' >>"${WORK}/results.tsv"
  # (--tried is one screen now; --json still lists every idea)
  run --separate-stderr bash -c 'set -o pipefail; bash "$1" --ledger "$2" --json | head -c 1' \
    _ "${SHOW}" "${WORK}/results.tsv"
  [ "${status}" -eq 0 ]
  [ "${output}" = "{" ]
  [ -z "${stderr}" ]
}
