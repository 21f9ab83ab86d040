#!/usr/bin/env bats
# scripts/run-experiment.sh: the command-line contract (stdout data, stderr diagnostics, exit
# codes) on scratch repos with stand-in train.py scripts and a fake uv on PATH.

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  ar_setup_env
  ar_fake_uv
  ar_make_repo
  RUN="${AR_SCRIPTS}/run-experiment.sh"
}

teardown() {
  if [[ -n "${BG_PID:-}" ]]; then
    kill -KILL "${BG_PID}" 2>/dev/null || true
  fi
  if [[ -f "${BATS_TEST_TMPDIR}/pids" ]]; then
    local pid
    while read -r pid; do kill -KILL "${pid}" 2>/dev/null || true; done <"${BATS_TEST_TMPDIR}/pids"
  fi
}

@test "help lists the options and the exit codes" {
  run --separate-stderr bash "${RUN}" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"--launcher PREFIX"* ]]
  [[ "${output}" == *"--higher-is-better"* ]]
  [[ "${output}" == *"Exit codes:"* ]]
  [[ "${output}" == *"130  interrupted"* ]]
  [ -z "${stderr}" ]
}

@test "the default command runs uv run train.py and the first run is the kept baseline" {
  cd "${REPO}"
  run --separate-stderr bash "${RUN}"
  [ "${status}" -eq 0 ]
  [[ "${lines[0]}" == "status: keep" ]]
  [[ "${output}" == *"value: 1.0"* ]]
  [[ "${output}" == *"log: .autoresearch/logs/0001-"* ]]
  [[ "${stderr}" == *"run-experiment.sh: froze a new session"* ]]
  [ "$(ar_rows)" -eq 1 ]
  grep -q '^---$' run.log
}

@test "stdout carries only key: value lines, or one JSON object with --json" {
  run --separate-stderr bash "${RUN}" --repo "${REPO}"
  for line in "${lines[@]}"; do [[ "${line}" =~ ^[a-z_]+:\  ]] || [[ "${line}" =~ ^[a-z_]+:$ ]]; done
  ar_set_constant VAL_BPB 0.5 "better"
  run --separate-stderr bash "${RUN}" --repo "${REPO}" --json
  [ "${status}" -eq 0 ]
  [ "${#lines[@]}" -eq 1 ]
  [[ "${output}" == "{\"status\": \"keep\""* ]]
}

@test "a worse candidate is discarded and HEAD goes back exactly one commit" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  local base
  base="$(ar_head)"
  ar_set_constant VAL_BPB 1.5 "worse"
  local candidate
  candidate="$(ar_head)"
  run --separate-stderr bash "${RUN}" --repo "${REPO}"
  [ "${status}" -eq 0 ]
  [[ "${lines[0]}" == "status: discard" ]]
  [[ "${output}" == *"reverted: yes"* ]]
  [ "$(ar_head)" = "${base}" ]
  git -C "${REPO}" cat-file -e "refs/autoresearch/discarded/${candidate}"
}

@test "a FAIL exit is a crash of class nan with its hint" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  ar_use_standin fail.py "lr x10"
  run --separate-stderr bash "${RUN}" --repo "${REPO}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"status: crash"* ]]
  [[ "${output}" == *"crash_class: nan"* ]]
  [[ "${output}" == *"hint: loss diverged"* ]]
  tail -n 1 "${REPO}/results.tsv" | grep -q $'\t0.000000\t0.0\tcrash\tlr x10$'
}

@test "a description with tabs, newlines and command substitutions is stored flat, unevaluated" {
  local desc
  desc=$'try $(touch pwned) and `touch pwned2`\twith\ttabs\nand a newline'
  run --separate-stderr bash "${RUN}" --repo "${REPO}" --desc "${desc}"
  [ "${status}" -eq 0 ]
  [ ! -e "${REPO}/pwned" ] && [ ! -e pwned ] && [ ! -e "${REPO}/pwned2" ]
  [ "$(tail -n 1 "${REPO}/results.tsv" | cut -f5)" = 'try $(touch pwned) and `touch pwned2` with tabs and a newline' ]
  [ "$(awk -F'\t' '{print NF}' "${REPO}/results.tsv" | sort -u)" = "5" ]
}

@test "a launcher prefix is put in front of the command" {
  run --separate-stderr bash "${RUN}" --repo "${REPO}" --launcher "env AR_LAUNCHED=yes" \
    --cmd 'python3 -c "import os; assert os.environ[\"AR_LAUNCHED\"] == \"yes\"; exec(open(\"train.py\").read())"'
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"status: keep"* ]]
}

@test "a changed program.md refuses the run with exit 3 and one line" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  echo "new rules" >>"${REPO}/program.md"
  git -C "${REPO}" commit -q -am "new rules"
  run --separate-stderr bash "${RUN}" --repo "${REPO}"
  [ "${status}" -eq 3 ]
  [ -z "${output}" ]
  [[ "${stderr}" == "run-experiment.sh: harness changed since the session froze: program.md changed"*"start a new comparison track"* ]]
  [ "$(printf '%s\n' "${stderr}" | wc -l)" -eq 1 ]
  [ "$(ar_rows)" -eq 1 ]
}

@test "another GPU than the frozen one refuses the run" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  ar_set_constant VAL_BPB 0.5
  ar_fake_nvidia_smi "NVIDIA A100-SXM4-80GB"
  run --separate-stderr bash "${RUN}" --repo "${REPO}"
  [ "${status}" -eq 3 ]
  [[ "${stderr}" == *"GPU none -> NVIDIA A100-SXM4-80GB"* ]]
}

@test "an already judged HEAD exits 5 unless --rerun" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  run --separate-stderr bash "${RUN}" --repo "${REPO}"
  [ "${status}" -eq 5 ]
  [[ "${stderr}" == *"--rerun"* ]]
  run --separate-stderr bash "${RUN}" --repo "${REPO}" --rerun
  [ "${status}" -eq 0 ]
  [ "$(ar_rows)" -eq 2 ]
}

@test "SIGINT during a run kills the whole process group, writes no row and leaves git alone" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  ar_use_standin spawn.py "hangs with a worker"
  local candidate
  candidate="$(ar_head)"
  STANDIN_PID_FILE="${BATS_TEST_TMPDIR}/pids" bash "${RUN}" --repo "${REPO}" --grace 0.5 \
    >"${BATS_TEST_TMPDIR}/out" 2>"${BATS_TEST_TMPDIR}/err" &
  BG_PID=$!
  local i
  for i in $(seq 400); do
    [[ -f "${BATS_TEST_TMPDIR}/pids" && "$(wc -l <"${BATS_TEST_TMPDIR}/pids")" -eq 2 ]] && break
    sleep 0.05
  done
  kill -INT "${BG_PID}"
  local code=0
  wait "${BG_PID}" || code=$?
  BG_PID=""
  [ "${code}" -eq 130 ]
  [ ! -s "${BATS_TEST_TMPDIR}/out" ]
  grep -q "interrupted" "${BATS_TEST_TMPDIR}/err"
  [ "$(ar_head)" = "${candidate}" ]
  [ -z "$(git -C "${REPO}" status --porcelain)" ]
  [ "$(ar_rows)" -eq 1 ]
  local pid
  while read -r pid; do
    if kill -0 "${pid}" 2>/dev/null; then
      grep -q zombie "/proc/${pid}/status"
    fi
  done <"${BATS_TEST_TMPDIR}/pids"
}

@test "a second run in the same repository while one runs exits 4" {
  bash "${RUN}" --repo "${REPO}" >/dev/null 2>&1
  ar_use_standin spawn.py "hangs"
  STANDIN_PID_FILE="${BATS_TEST_TMPDIR}/pids" bash "${RUN}" --repo "${REPO}" --grace 0.2 \
    >/dev/null 2>&1 &
  BG_PID=$!
  local i
  for i in $(seq 400); do
    [[ -f "${BATS_TEST_TMPDIR}/pids" && "$(wc -l <"${BATS_TEST_TMPDIR}/pids")" -eq 2 ]] && break
    sleep 0.05
  done
  run --separate-stderr bash "${RUN}" --repo "${REPO}" --rerun
  [ "${status}" -eq 4 ]
  [[ "${stderr}" == *"another run-experiment.sh is running"* ]]
  kill -TERM "${BG_PID}"
  wait "${BG_PID}" || true
  BG_PID=""
}

@test "bad input exits 2 with one line on stderr" {
  run --separate-stderr bash "${RUN}" --repo "${REPO}" --timeout -5
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == "run-experiment.sh: --timeout must be a positive number" ]]
  run --separate-stderr bash "${RUN}" --repo "${BATS_TEST_TMPDIR}"
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == "run-experiment.sh: not a git repository: "* ]]
}
