#!/usr/bin/env bash
# Usage: run-experiment.sh [OPTIONS]
#
# Runs the candidate at HEAD once, judges it against the session's best kept
# run and logs exactly one row to results.tsv (and one object to
# .autoresearch/runs.jsonl). A discard or crash reverts exactly HEAD's commit
# (kept reachable as refs/autoresearch/discarded/<sha>), only when the tracked
# tree is clean; untracked files are never touched. The first run of a
# session freezes the harness (.autoresearch/session.json); later runs verify
# it and refuse if anything changed. Output goes to run.log, archived as
# .autoresearch/logs/NNNN-<commit>.log. The command runs in a disposable
# checkout of exactly HEAD (not your working tree), with the repository's
# .venv, a fresh bytecode cache and no skill code on PYTHONPATH; every
# process it starts ends with it (pid namespace, cgroup or an environment
# tag, whichever works here).
#
# The metric is attested by default: the command runs under the launcher
# scripts/attest/autoresearch_attest.py (`uv run train.py` becomes
# `uv run python -m autoresearch_attest train.py`) and the judged val_bpb is the
# value the frozen prepare.evaluate_bpb returned, read from a signed per-run
# channel, not the printed line. AUTORESEARCH_METRIC_SOURCE=printed in the
# environment of the first run (the freeze) makes a printed session instead
# (stand-ins without an evaluator); it warns on every run.
#
# Options:
#   --desc TEXT              description for results.tsv (default: the commit subject)
#   --cmd CMD                training command (default: uv run train.py); attested
#                            sessions take `uv run [python] train.py` or
#                            `python3 train.py`, optionally after VAR=value words
#   --launcher PREFIX        prefix for cluster runners, e.g. "srun --gres=gpu:1"
#   --timeout SEC            hard timeout for the run (default: 600)
#   --grace SEC              SIGTERM-to-SIGKILL grace for the process group (default: 10)
#   --metric NAME            summary key that decides (default: val_bpb)
#   --higher-is-better       the metric is better when higher (default: lower)
#   --budget-tolerance FRACTION
#                            a fraction of TIME_BUDGET (0.1 or 10%, default 0.1)
#                            the time to evaluation may exceed TIME_BUDGET by, on top
#                            of the baseline's own start-up overhead (printed
#                            sessions: the printed training_seconds); past it the
#                            run is a crash (over-budget)
#   --max-log-mb MIB         stop a run whose log passes MIB (crash, class
#                            log-flood; the log's head and tail are kept) (default: 256,
#                            or AUTORESEARCH_MAX_LOG_MB)
#   --sandbox                run training under bubblewrap: repository, .venv and
#                            data cache read-only, no network, GPUs passed through
#                            (also: AUTORESEARCH_SANDBOX=1); check-hardware.sh says
#                            whether it works here
#   --worker ID              worker label recorded in runs.jsonl
#   --rerun                  run HEAD again although this track already judged it
#   --json                   print one JSON object instead of key: value lines
#   --repo DIR               target repository (default: the current directory)
#   -h, --help               print this help
#
# Output (stdout): status, commit, metric, value, memory_gb, best, delta,
# crash_class, hint, seconds, log, description, reverted. Crash classes: the
# log's (oom, nan, timeout, syntax, import, compile, kernel, data, killed,
# truncated, unknown) and the judge's: unattested (no attested evaluate_bpb
# call), tamper (the lint refused it; the evaluator, its dependencies or the
# validation split were touched; the printed value differs from the attested
# one; the channel was forged), over-budget (trained past the budget).
# delta = value - best (the standing best), the convention of every script:
# negative = lower val_bpb = better (show-results.sh: vs the previous kept run).
# A candidate whose diff only changes a random seed is run and logged as a
# seed-only change (a noise sample in runs.jsonl), never kept. A run that fails
# before train.py starts (command not found, exit 127; uv cannot create the venv
# or reach its index) is an environment failure: no row, nothing reverted, exit 1.
#
# Exit codes:
#   0    judged (keep, discard or crash)
#   1    internal error, or an environment failure (no row, nothing reverted;
#        the fix on stderr)
#   2    usage (bad option, not the top of a git repository, a --cmd an
#        attested session cannot run under the launcher)
#   3    harness changed since the session froze, or results.tsv lost rows of
#        this track (truncated, replaced, deleted); nothing run
#   4    unsafe git state: tracked changes, a merge/rebase, results.tsv or run.log
#        tracked by git, another run in this repository, or a judged loser
#        that could not be reverted
#   5    HEAD already judged in this track (pass --rerun)
#   130  interrupted: the run's process group was killed, no row written
set -euo pipefail

AR_NAME="run-experiment.sh"
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  ar_help_if_asked "$@"
  command -v git >/dev/null 2>&1 || ar_die 1 "git is not installed"
  ar_find_python
  # exec: signals sent to this script reach the process that owns the run.
  # AR_CALLER_PATH: the training command gets the caller's PATH, not the one a
  # Python launcher (pyenv shim, uv) sets up for arcore. -S: arcore is stdlib
  # only, so site-packages (and their .pth start-up cost) are skipped.
  AR_CALLER_PATH="${PATH}" PYTHONPATH="${AR_SCRIPTS_DIR}${PYTHONPATH:+:${PYTHONPATH}}" \
    exec "${AR_PY[@]}" -S "${AR_ARCORE[@]}" experiment run "$@"
}

main "$@"
