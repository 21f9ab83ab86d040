#!/usr/bin/env bash
# Usage: run-loop.sh (--propose CMD | --queue DIR) [options]
#
# The bounded overnight loop: candidates judged by run-experiment.sh (keep, discard or
# crash; one results.tsv row each), each run in a slot's own git worktree, never in your
# tree (which only fast-forwards to a keep). An empty track starts with a baseline run
# of HEAD. Runs on a branch autoresearch/<tag> with a clean tracked tree.
#
# Candidates (exactly one):
#   --propose CMD        run CMD (bash -c) once per iteration: an agent CLI in headless
#                        mode. It runs in a fresh disposable clone of the branch (never in
#                        your tree) and must leave exactly one new commit changing only
#                        train.py; only that commit comes back, anything else is a crash row.
#                        CMD gets AUTORESEARCH_CONTEXT (the rendered prompt file),
#                        AUTORESEARCH_REPO (the clone), AUTORESEARCH_LEDGER (a read-only
#                        copy of results.tsv), AUTORESEARCH_BEST, AUTORESEARCH_BASE,
#                        AUTORESEARCH_ITERATION, AUTORESEARCH_PLATEAU
#                        (see references/proposer-recipes.md).
#   --queue DIR          apply DIR's patch files in name order (git am, or git apply for a
#                        plain diff), one experiment each; judged patches are skipped.
# Bounds:
#   --max N              stop after N experiments (the baseline is not counted)
#   --hours H            start no experiment that would end after H hours
#   --max-crashes K      stop after K crashes in a row (default 3; 0: never)
#   --propose-timeout S  kill the proposer after S seconds: a crash row (default 1800)
# Proposer context:
#   --desc TEXT          prefix for every row's description
#   --plateau M          after M experiments without a keep, tell the proposer to change
#                        direction (default 5; 0: never)
#   --prompt FILE        prompt template (default templates/proposer-prompt.md)
#   --ahead K            make up to K proposals for the next runs while runs go (default:
#                        one per slot with --propose; 0: propose only when a slot is free,
#                        strictly serial with one slot); up to one proposer per slot thinks
#                        at once. A waiting proposal whose base a keep
#                        superseded is rebased onto the new best; one that no longer applies
#                        is proposed again.
# Noise-aware acceptance (default: strictly better wins):
#   --baseline-repeats R top the track up to R runs of its baseline (also when
#                        setup.sh ran it; rows say "baseline repeat i/R", not ideas);
#                        record their std as the noise floor
#   --confirm K          re-run a keep whose gain is within the noise floor K more times;
#                        keep it only if the mean still beats the best
# Passed to run-experiment.sh:
#   --cmd CMD  --launcher PREFIX  --timeout SEC  --grace SEC  --metric NAME
#   --higher-is-better  --repo DIR
# Slots (see references/scaling.md):
#   --workers N          N experiments at once, each slot its own git worktree; one row
#                        each, one keep at a time; a keep whose base another slot superseded
#                        is rebased onto the new best and run again (local GPUs 0..N-1
#                        unless --gpus)
#   --gpus LIST          one slot per GPU, e.g. 0,1,2,3 (one GPU: one slot on it)
#   --runner local|slurm run each experiment here or as a Slurm job step (srun --gres=gpu:1)
#   --slurm-arg=ARG      an extra srun option (repeatable), e.g. --slurm-arg=--partition=gpu
#   --sandbox            every run under bubblewrap (run-experiment.sh --sandbox)
#   -h, --help           print this help
#
# Resume: restart the same command after a kill, reboot or lost session; the journal
# .autoresearch/loop.json settles what was cut short (a finished run is judged, never run
# twice). SIGINT/SIGTERM/SIGHUP stop cleanly: every run's process group dies, runs that
# had ended are judged, unjudged commits are kept as refs/autoresearch/unjudged/<sha>,
# the tree is clean, no partial row.
# stdout: status, experiments, best, head (key: value); the rest goes to stderr.
#
# Exit codes:
#   0  finished (a bound reached or the queue done)
#   1  stopped after K crashes in a row, or an internal error
#   2  usage (no candidate source, bad option)
#   3  the harness changed since the freeze (start a new track)
#   4  unsafe git state (not on autoresearch/<tag>, detached, dirty, another loop running)
#      or the branch moved during a run (switched, or a commit on it)
#   5  nothing to do (every queued patch was already judged)
#   130 interrupted (SIGINT, SIGTERM or SIGHUP)
set -euo pipefail

AR_NAME="run-loop.sh"
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  ar_help_if_asked "$@"
  ar_find_python
  # exec: the loop (arcore.loop -> arcore.scheduler) itself receives SIGINT/SIGTERM and
  # stops its children.
  # -S: arcore is stdlib only; skip site-packages start-up.
  ar_take_sandbox "$@"
  PYTHONPATH="${AR_SCRIPTS_DIR}${PYTHONPATH:+:${PYTHONPATH}}" \
    exec "${AR_PY[@]}" -S "${AR_ARCORE[@]}" loop ${AR_ARGS[@]+"${AR_ARGS[@]}"}
}

main "$@"
