#!/usr/bin/env bats
# scripts/run-loop.sh: the command line (help, refusals, exit codes), one GPU for one slot,
# the documented proposer recipes run against stand-in claude/codex CLIs,
# and a clean stop on SIGINT. The fault matrix (every phase x SIGINT/SIGTERM/SIGKILL) is in
# tests/test_loop.py.

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  ar_setup_env
  ar_make_repo
  LOOP="${AR_SCRIPTS}/run-loop.sh"
  AGENTS="${AR_ROOT}/tests/fixtures/agents"
  export PATH="${AGENTS}:${PATH}"
  export FAKE_AGENT_DIR="${BATS_TEST_TMPDIR}/agent"
  cd "${REPO}"
}

teardown() {
  if [[ -n "${BG_PID:-}" ]]; then
    kill -KILL "${BG_PID}" 2>/dev/null || true
  fi
}

# The --propose value of the recipe under the heading "## $1" in the references doc.
recipe() {
  python3 - "${AR_ROOT}/references/proposer-recipes.md" "$1" <<'EOF'
import re, shlex, sys
text = open(sys.argv[1]).read()
section = text.split(f"## {sys.argv[2]}", 1)[1]
block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
args = shlex.split(block.replace("\\\n", " "))
print(args[args.index("--propose") + 1])
EOF
}

@test "help lists the candidate sources, the bounds and the exit codes" {
  run --separate-stderr bash "${LOOP}" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"--propose CMD"* ]]
  [[ "${output}" == *"--queue DIR"* ]]
  [[ "${output}" == *"--max-crashes K"* ]]
  [[ "${output}" == *"Exit codes:"* ]]
  [[ "${output}" == *"130 interrupted"* ]]
}

@test "without a proposer or a queue it refuses with exit 2 and writes nothing" {
  run --separate-stderr bash "${LOOP}" --max 3
  [ "${status}" -eq 2 ]
  [ -z "${output}" ]
  [[ "${stderr}" == *"re-running the same code is not an experiment"* ]]
  [ ! -e results.tsv ]
}

@test "both a proposer and a queue is a usage error" {
  mkdir "${BATS_TEST_TMPDIR}/q"
  run --separate-stderr bash "${LOOP}" --propose true --queue "${BATS_TEST_TMPDIR}/q"
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == *"not both"* ]]
}

@test "a detached HEAD is refused with exit 4" {
  git checkout -q --detach
  run --separate-stderr bash "${LOOP}" --propose fake-agent --max 1
  [ "${status}" -eq 4 ]
  [[ "${stderr}" == *"detached"* ]]
  [ ! -e results.tsv ]
}

@test "one GPU gives one slot whose runs see only that GPU" {
  run --separate-stderr bash "${LOOP}" --gpus 3 --max 1 --propose "exit 1" \
    --cmd "echo \"\${CUDA_VISIBLE_DEVICES:-none}\" > ${BATS_TEST_TMPDIR}/gpu; python3 train.py"
  [ "${status}" -eq 0 ]
  [ "$(cat "${BATS_TEST_TMPDIR}/gpu")" = 3 ]
  [ "$(ar_rows)" -eq 2 ]
  ! grep -q '\[w1\]' results.tsv  # one slot: descriptions are not tagged
}

@test "the Claude Code recipe yields one judged experiment" {
  run --separate-stderr bash "${LOOP}" --max 1 --cmd "python3 train.py" \
    --propose "$(recipe 'Claude Code (print mode)')"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"experiments: 1"* ]]
  [ "$(cut -f4 results.tsv | tail -n +2 | tr '\n' ' ')" = "keep keep " ]
  grep -q '"claude", "-p", "# Your task: propose one experiment' "${FAKE_AGENT_DIR}/argv.jsonl"
  grep -q '"--allowedTools", "Read,Edit,Bash(git add:\*),Bash(git commit:\*)' \
    "${FAKE_AGENT_DIR}/argv.jsonl"
  [ -z "$(git status --porcelain)" ]
}

@test "the Codex recipe commits the sandboxed edit itself and yields one judged experiment" {
  export FAKE_AGENT_MODE=edit
  run --separate-stderr bash "${LOOP}" --max 1 --cmd "python3 train.py" \
    --propose "$(recipe 'Codex CLI (`codex exec`)')"
  [ "${status}" -eq 0 ]
  [ "$(tail -n 1 results.tsv | cut -f4-)" = "$(printf 'keep\tcodex: VAL_BPB 0.990000')" ]
  grep -q '"codex", "exec", "--sandbox", "workspace-write"' "${FAKE_AGENT_DIR}/argv.jsonl"
  [ -z "$(git status --porcelain)" ]
}

@test "SIGINT during a hung baseline stops with 130, no row, HEAD and tree untouched" {
  ar_use_standin hang.py "a train.py that hangs and ignores SIGTERM"
  local before
  before="$(ar_head)"
  bash "${LOOP}" --propose fake-agent --max 1 --cmd "python3 train.py" --grace 1 \
    >"${BATS_TEST_TMPDIR}/out" 2>"${BATS_TEST_TMPDIR}/err" &
  BG_PID=$!
  local waited=0
  until grep -q '"kind": "experiment"' .autoresearch/loop.json 2>/dev/null \
    && [ -s .autoresearch/worktrees/w1/run.log ]; do
    sleep 0.05
    waited=$((waited + 1))
    [ "${waited}" -lt 1200 ]
  done
  kill -INT "${BG_PID}"
  local rc=0
  wait "${BG_PID}" || rc=$?
  BG_PID=""
  [ "${rc}" -eq 130 ]
  [ "$(ar_rows)" -eq 0 ]
  [ "$(ar_head)" = "${before}" ]
  [ -z "$(git status --porcelain)" ]
  grep -q "status: interrupted" "${BATS_TEST_TMPDIR}/out"
  local pid
  for pid in $(pgrep -u "$(id -u)" -f "train.py" || true); do
    [ "$(readlink "/proc/${pid}/cwd" 2>/dev/null)" != "${REPO}" ]
  done
}
