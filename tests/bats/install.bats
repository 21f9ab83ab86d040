#!/usr/bin/env bats
# scripts/install.sh: where it installs, what it copies, and that it never overwrites local edits.
# HOME is a scratch folder in every test.

bats_require_minimum_version 1.5.0

# The package is copied first: the working tree may change while the suite runs.
setup() {
  ROOT="${BATS_TEST_TMPDIR}/pkg"
  mkdir -p "${ROOT}"
  cp -R "${BATS_TEST_DIRNAME}/../../"{SKILL.md,scripts,references,templates,examples} "${ROOT}/"
  INSTALL="${ROOT}/scripts/install.sh"
  export HOME="${BATS_TEST_TMPDIR}/home"
  mkdir -p "${HOME}"
  CLAUDE_USER="${HOME}/.claude/skills/autoresearch"
}

@test "help lists the options and the exit codes" {
  run --separate-stderr bash "${INSTALL}" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"--target claude|codex"* ]]
  [[ "${output}" == *"--dry-run"* ]]
  [[ "${output}" == *"Exit codes:"* ]]
  [[ "${output}" == *"4    refused"* ]]
}

@test "a user install for Claude Code copies the runtime parts into ~/.claude/skills/autoresearch" {
  run --separate-stderr bash "${INSTALL}" --target claude --scope user
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"status: installed"* ]]
  [ -f "${CLAUDE_USER}/SKILL.md" ]
  [ -f "${CLAUDE_USER}/references/troubleshooting.md" ]
  [ -f "${CLAUDE_USER}/templates/results.tsv" ]
  [ -f "${CLAUDE_USER}/scripts/common.sh" ]
  [ -f "${CLAUDE_USER}/scripts/arcore/__main__.py" ]
  [ -f "${CLAUDE_USER}/examples/cpu-target/train.py" ]
  [ -x "${CLAUDE_USER}/scripts/install.sh" ]
  [ -f "${CLAUDE_USER}/.autoresearch-install.sha256" ]
  cmp "${ROOT}/SKILL.md" "${CLAUDE_USER}/SKILL.md"
}

@test "nothing outside the runtime parts is copied, and no __pycache__" {
  local pkg="${ROOT}"
  echo "not runtime" >"${pkg}/README.md"
  mkdir -p "${pkg}/tests" "${pkg}/scripts/arcore/__pycache__" "${pkg}/examples/cpu-target/.venv"
  echo "x" >"${pkg}/examples/cpu-target/.venv/pyvenv.cfg"
  echo "x" >"${pkg}/scripts/arcore/__pycache__/ledger.cpython-311.pyc"
  echo "x" >"${pkg}/scripts/stray.pyc"
  run --separate-stderr bash "${pkg}/scripts/install.sh" --target claude
  [ "${status}" -eq 0 ]
  [ -f "${CLAUDE_USER}/SKILL.md" ]
  [ ! -e "${CLAUDE_USER}/README.md" ]
  [ ! -e "${CLAUDE_USER}/tests" ]
  [ -z "$(find "${CLAUDE_USER}" -name __pycache__ -o -name '*.pyc' -o -name .venv)" ]
}

@test "the installed copy is a working skill: its own install.sh prints its help" {
  bash "${INSTALL}" --target claude >/dev/null 2>&1
  run --separate-stderr bash "${CLAUDE_USER}/scripts/install.sh" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == Usage:* ]]
}

@test "a user install for Codex goes to ~/.agents/skills/autoresearch" {
  run --separate-stderr bash "${INSTALL}" --target codex --scope user
  [ "${status}" -eq 0 ]
  [ -f "${HOME}/.agents/skills/autoresearch/SKILL.md" ]
  [[ "${output}" == *"dest: ${HOME}/.agents/skills/autoresearch"* ]]
}

@test "project installs go to the project's .claude/skills and .agents/skills" {
  local project="${BATS_TEST_TMPDIR}/project"
  mkdir -p "${project}"
  run --separate-stderr bash "${INSTALL}" --target claude --scope project --project "${project}"
  [ "${status}" -eq 0 ]
  [ -f "${project}/.claude/skills/autoresearch/SKILL.md" ]
  cd "${project}"
  run --separate-stderr bash "${INSTALL}" --target codex --scope project
  [ "${status}" -eq 0 ]
  [ -f "${project}/.agents/skills/autoresearch/SKILL.md" ]
  [ ! -e "${HOME}/.claude" ]
  [ ! -e "${HOME}/.agents" ]
}

@test "--skills-dir installs into any folder, e.g. older Codex's ~/.codex/skills" {
  run --separate-stderr bash "${INSTALL}" --skills-dir "${HOME}/.codex/skills"
  [ "${status}" -eq 0 ]
  [ -f "${HOME}/.codex/skills/autoresearch/SKILL.md" ]
}

@test "a second install of the same package changes nothing and says up-to-date" {
  bash "${INSTALL}" --target claude >/dev/null 2>&1
  local before
  before="$(cat "${CLAUDE_USER}/.autoresearch-install.sha256")"
  run --separate-stderr bash "${INSTALL}" --target claude
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"status: up-to-date"* ]]
  [[ "${output}" == *"added: 0"* ]]
  [ "$(cat "${CLAUDE_USER}/.autoresearch-install.sha256")" = "${before}" ]
}

@test "a local edit is refused with exit 4, named, and left untouched" {
  bash "${INSTALL}" --target claude >/dev/null 2>&1
  echo "my own note" >>"${CLAUDE_USER}/references/architecture.md"
  run --separate-stderr bash "${INSTALL}" --target claude
  [ "${status}" -eq 4 ]
  [[ "${output}" == *"conflict: references/architecture.md"* ]]
  [[ "${output}" == *"status: refused"* ]]
  [[ "${stderr}" == *"--force"* ]]
  [ "$(tail -n 1 "${CLAUDE_USER}/references/architecture.md")" = "my own note" ]
}

@test "--force overwrites a local edit but keeps a file the user added" {
  bash "${INSTALL}" --target claude >/dev/null 2>&1
  echo "my own note" >>"${CLAUDE_USER}/SKILL.md"
  echo "mine" >"${CLAUDE_USER}/references/my-notes.md"
  run --separate-stderr bash "${INSTALL}" --target claude --force
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"update: SKILL.md"* ]]
  cmp "${ROOT}/SKILL.md" "${CLAUDE_USER}/SKILL.md"
  [ "$(cat "${CLAUDE_USER}/references/my-notes.md")" = "mine" ]
}

@test "an existing folder the installer did not write is never overwritten without --force" {
  mkdir -p "${CLAUDE_USER}"
  echo "someone else's skill" >"${CLAUDE_USER}/SKILL.md"
  run --separate-stderr bash "${INSTALL}" --target claude
  [ "${status}" -eq 4 ]
  [[ "${output}" == *"conflict: SKILL.md"* ]]
  [ "$(cat "${CLAUDE_USER}/SKILL.md")" = "someone else's skill" ]
}

@test "--dry-run prints the plan and writes nothing" {
  run --separate-stderr bash "${INSTALL}" --target claude --dry-run
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"add: SKILL.md"* ]]
  [[ "${output}" == *"status: dry-run"* ]]
  [ ! -e "${HOME}/.claude" ]
}

@test "bad input is one line on stderr and exit 2" {
  run --separate-stderr bash "${INSTALL}" --target vim
  [ "${status}" -eq 2 ]
  [ "${#lines[@]}" -eq 0 ]
  [ "$(printf '%s\n' "${stderr}" | wc -l)" -eq 1 ]
  run --separate-stderr bash "${INSTALL}"
  [ "${status}" -eq 2 ]
  run --separate-stderr bash "${INSTALL}" --target claude --scope project --project "${BATS_TEST_TMPDIR}/nope"
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == *"not a directory"* ]]
}

@test "a destination that is a symlink is refused with exit 1" {
  mkdir -p "${HOME}/.claude/skills" "${BATS_TEST_TMPDIR}/elsewhere"
  ln -s "${BATS_TEST_TMPDIR}/elsewhere" "${CLAUDE_USER}"
  run --separate-stderr bash "${INSTALL}" --target claude
  [ "${status}" -eq 1 ]
  [ -z "$(ls -A "${BATS_TEST_TMPDIR}/elsewhere")" ]
}

@test "the installed folder passes the Agent Skills validator" {
  local validator="${BATS_TEST_DIRNAME}/../../.venv/bin/agentskills"
  [ -x "${validator}" ] || validator="$(command -v agentskills || true)"
  [ -n "${validator}" ] || skip "agentskills (PyPI skills-ref, Python >= 3.11) is not installed"
  bash "${INSTALL}" --target codex --scope user >/dev/null 2>&1
  run --separate-stderr "${validator}" validate "${HOME}/.agents/skills/autoresearch"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"Valid skill"* ]]
}
