#!/usr/bin/env bats
# run-experiment.sh and the attested metric: what a user sees (stdout classes, one-line
# refusals, the printed-session warning). The cheats themselves are in tests/test_attest.py.

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  ar_setup_env
  ar_fake_uv
  ar_make_repo
  RUN="${AR_SCRIPTS}/run-experiment.sh"
  unset AUTORESEARCH_METRIC_SOURCE   # attested, the default
}

@test "a train.py that prints val_bpb without calling the evaluator is an unattested crash" {
  cd "${REPO}"
  run --separate-stderr bash "${RUN}"
  [ "${status}" -eq 0 ]
  [[ "${lines[0]}" == "status: crash" ]]
  [[ "${output}" == *"crash_class: unattested"* ]]
  [[ "${output}" == *"hint: the score must come from prepare.evaluate_bpb"* ]]
  [[ "${output}" == *"description: baseline [unattested: "* ]]
  [[ "${stderr}" == *"run-experiment.sh: unattested: "* ]]
  grep -q '"metric_source": "attested"' .autoresearch/session.json
  grep -q 'python -m autoresearch_attest train.py' .autoresearch/runs.jsonl
}

@test "a command the launcher cannot wrap is refused in one line, nothing frozen or run" {
  cd "${REPO}"
  run --separate-stderr bash "${RUN}" --cmd "bash -c 'python3 train.py'"
  [ "${status}" -eq 2 ]
  [ -z "${output}" ]
  [[ "${stderr}" == "run-experiment.sh: --cmd "*"cannot run under the attestation launcher"* ]]
  [ "$(printf '%s\n' "${stderr}" | wc -l)" -eq 1 ]
  [ ! -e .autoresearch/session.json ]
  [ "$(ar_rows)" -eq 0 ]
}

@test "a printed session warns on every run, whatever the environment says later" {
  cd "${REPO}"
  AUTORESEARCH_METRIC_SOURCE=printed run --separate-stderr bash "${RUN}"
  [ "${status}" -eq 0 ]
  [[ "${lines[0]}" == "status: keep" ]]
  [[ "${stderr}" == *"run-experiment.sh: warning: this session's metric is the val_bpb train.py prints"* ]]
  ar_set_constant VAL_BPB 0.9
  run --separate-stderr bash "${RUN}"
  [[ "${lines[0]}" == "status: keep" ]]
  [[ "${stderr}" == *"warning: this session's metric is the val_bpb train.py prints"* ]]
}

@test "the budget tolerance is a fraction of TIME_BUDGET, not seconds" {
  cd "${REPO}"
  run --separate-stderr bash "${RUN}" --budget-tolerance 10
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == "run-experiment.sh: --budget-tolerance must be a fraction of TIME_BUDGET"* ]]
  [ ! -e .autoresearch/session.json ]
}
