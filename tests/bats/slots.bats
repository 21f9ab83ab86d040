#!/usr/bin/env bats
# run-loop.sh with several slots from the command line: its refusals (exit 2, one line), and
# a 2-slot queue with the default `uv run train.py` command (a fake uv). Slots in depth (a
# moving best, dedupe, Ctrl-C, SIGKILL, Slurm) are in tests/test_slots.py and
# tests/test_slurm.py.

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  ar_setup_env
  ar_fake_uv
  ar_make_repo
  LOOP="${AR_SCRIPTS}/run-loop.sh"
  QUEUE="${BATS_TEST_TMPDIR}/queue"
  mkdir -p "${QUEUE}"
  cd "${REPO}"
}

# queue_patch NAME VAL_BPB: a format-patch setting train.py's VAL_BPB, HEAD left as it was.
queue_patch() {
  local base
  base="$(ar_head)"
  ar_set_constant VAL_BPB "$2" "try $1"
  git format-patch -1 --stdout HEAD >"${QUEUE}/$1.patch"
  git reset -q --hard "${base}"
}

@test "a list of two GPUs gives two slots, one row per run" {
  queue_patch a 0.990000
  queue_patch b 0.980000
  run --separate-stderr bash "${LOOP}" --queue "${QUEUE}" --gpus 0,1
  [ "${status}" -eq 0 ]
  # both edit VAL_BPB on the same base: whichever ends second beat that base, but not on top
  # of the first's keep, so its train.py runs again on top of it; either way b's 0.98 wins
  [ "$(ar_rows)" -eq 4 ]
  grep -q $'\tkeep\t\\[w1\\] baseline' results.tsv
  [ "$(grep -c $'\tkeep\t' results.tsv)" -ge 2 ]
  grep -q '^best: 0.980000$' <<<"${output}"
  [ ! -d .autoresearch/worktrees ]
}

@test "baseline repeats run on the slots at once and record the noise floor" {
  run --separate-stderr bash "${LOOP}" --queue "${QUEUE}" --workers 2 --baseline-repeats 3
  [ "${status}" -eq 5 ]
  [ "$(ar_rows)" -eq 3 ]
  grep -q 'baseline repeat 2/3' results.tsv
  grep -q 'baseline repeat 3/3' results.tsv
  # the fake uv prints the same value every time: no spread, so no floor is recorded
  ! grep -q '"noise_floor"' .autoresearch/session.json
}

@test "a negative --confirm is refused with several slots, with one line and exit 2" {
  run --separate-stderr bash "${LOOP}" --queue "${QUEUE}" --workers 2 --confirm -1
  [ "${status}" -eq 2 ]
  [ "$(wc -l <<<"${stderr}")" -eq 1 ]
  [ ! -f results.tsv ]
}

@test "a launcher and the slurm runner together are refused" {
  run --separate-stderr bash "${LOOP}" --queue "${QUEUE}" --runner slurm --launcher "srun"
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == *"give one"* ]]
}

@test "several slots refuse the default branch like one" {
  git checkout -q -b main
  run --separate-stderr bash "${LOOP}" --queue "${QUEUE}" --workers 2
  [ "${status}" -eq 4 ]
  [[ "${stderr}" == *"default branch"* ]]
}
