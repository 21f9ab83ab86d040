#!/usr/bin/env bash
# Usage: setup.sh [--dir DIR] [--repo-url URL | --from DIR] [--tag TAG]
#                 [--preset TIER | --seq-len N --eval-tokens N] [--new-track]
#                 [--num-shards N] [--no-prepare] [--no-sync] [--no-gpu-check | --cpu]
#                 [--no-baseline] [--baseline-repeats R] [--cmd CMD] [--timeout SEC]
#       setup.sh --preset TIER [--dir DIR] --dry-run
#
# One command from nothing to a frozen session with a baseline. Idempotent: a rerun does only
# what is missing, and a second run in a row changes nothing.
#   1. installs uv if missing (the official installer, else `python3 -m pip install --user uv`)
#   2. clones karpathy/autoresearch into DIR (or uses the clone there); `uv sync`
#   3. runs the hardware check (check-hardware.sh) and stops on blockers, with their fixes
#   4. creates and switches to the branch autoresearch/TAG
#   5. applies an optional preset to prepare.py and train.py: diff on stderr, originals backed
#      up under .autoresearch/backup/, one commit; refused once a session is frozen
#   6. `uv run prepare.py` unless the data cache is complete
#   7. results.tsv with upstream's header (untracked, in .git/info/exclude); program.md from
#      templates/program.md when the clone has none
#   8. freezes the session (or verifies the existing freeze)
#   9. runs the baseline through run-experiment.sh unless the track already has one;
#      with --baseline-repeats R, repeats it until the track has R runs of it (rows say
#      "baseline repeat i/R": not ideas) and stores their std as the noise floor
#
# Options:
#   --dir DIR          the clone (default: the current directory when it is one, else
#                      ./autoresearch); a directory with prepare.py and train.py but no git is
#                      put under git in place
#   --repo-url URL     clone from URL (default https://github.com/karpathy/autoresearch.git)
#   --from DIR         clone from a local mirror (offline machines)
#   --tag TAG          branch autoresearch/TAG (default: the frozen session's, else today's
#                      date as upstream suggests, e.g. nov30)
#   --preset TIER      a VRAM tier from check-hardware.sh's table (80gb 40gb 24gb 12gb 6gb)
#   --seq-len N        set prepare.py's MAX_SEQ_LEN (instead of a tier)
#   --eval-tokens N    set prepare.py's EVAL_TOKENS (instead of a tier)
#   --new-track        allow a preset or branch change after a freeze: a new comparison track
#   --num-shards N     training shards for prepare.py (default 10; -1 = all)
#   --no-prepare       do not run prepare.py (an empty data cache is frozen empty: said on
#                      stderr; when the data arrives, start a new track with --new-track)
#   --no-sync          do not run uv sync
#   --no-gpu-check     skip the hardware check (a CPU target); --cpu is the same
#   --no-baseline      stop after the freeze
#   --baseline-repeats R  top the track up to R runs of the baseline commit (noise floor)
#   --dry-run          with --preset: print the diff it would make to the clone's
#                      prepare.py/train.py (stdout), change nothing, use no network
#   --cmd CMD          the run command for the baseline (run-experiment.sh --cmd)
#   --timeout SEC      the baseline's timeout (run-experiment.sh --timeout)
#   --sandbox          run the baseline under bubblewrap (run-experiment.sh --sandbox)
#
# stdout: key: value lines: repo, branch, preset, session, baseline_commit, status, val_bpb,
# memory_gb, peak_vram_mb (crash_class, hint for a crashed baseline), noise_floor (with
# --baseline-repeats), next (a command that runs as printed). --dry-run: the diff only.
#
# Exit codes:
#   0    done (baseline recorded, or skipped with --no-baseline)
#   1    failure: blockers, a failed install/clone/sync/prepare, a crashed baseline
#   2    usage
#   3    refused: a session is frozen (preset or branch change without --new-track), or the
#        harness changed since the freeze
#   1    also: `uv sync` failed (says what: the network, the venv, a lock that does not
#        match; never advice to rewrite a frozen file)
#   4    unsafe git state: uncommitted changes to tracked files, or results.tsv/run.log
#        tracked by git (checked first, with the command that untracks them)
#   130  interrupted
set -euo pipefail

AR_NAME="setup.sh"
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  ar_help_if_asked "$@"
  ar_take_sandbox "$@"
  set -- ${AR_ARGS[@]+"${AR_ARGS[@]}"}
  export AR_NAME
  if command -v python3 >/dev/null 2>&1 \
    && python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    AR_SETUP_CHECK_ONLY=1 ar_core setup "$@" # usage errors before installing anything
  fi
  local arg
  for arg in "$@"; do # a preset's diff needs neither git nor uv nor the network
    if [[ "${arg}" == "--dry-run" ]]; then
      ar_core setup "$@"
      return
    fi
  done
  command -v git >/dev/null 2>&1 || ar_die 1 "git not found: install git and rerun"
  ar_ensure_uv
  ar_core setup "$@"
}

main "$@"
