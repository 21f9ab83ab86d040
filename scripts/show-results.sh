#!/usr/bin/env bash
# Usage: show-results.sh [--ledger FILE] [--session-dir DIR] [--top N] [--all]
#                        [--tried | --json] [--plot FILE.svg]
#
# Tells a human (and an agent) what a session found, from results.tsv (read by
# header name, any extra columns) and, when present, .autoresearch/session.json
# (noise_floor, ledger_start) and .autoresearch/runs.jsonl (crash class, hint).
# The default text is at most 40 lines: counts, keep rate, baseline -> best,
# top N, the improvement timeline of kept runs (delta vs the previous kept run),
# crash patterns, best gains, repeated failures and a next experiment family,
# then, when the loop's proposer reported its usage (runs.jsonl proposer_usage),
# what the agent cost: tokens and dollars for the session, per kept gain and the
# dearest experiments (all of them under agent_cost in --json; Codex reports no
# dollars, and none are assumed).
# The baseline, repeats and seed-only changes are not ideas: keep rates and kept
# counts leave them out. The noise floor comes from what the ledger has
# (session.json's, repeats of one commit, seed-only changes) and says so; a kept
# gain below it is marked "within noise" in every view and the chart.
# Delta (every script): delta = value - reference (here the previous kept run;
# run-experiment.sh: the standing best), so negative = lower val_bpb = better;
# a "gain" is -delta.
#
# Options:
#   --ledger FILE       the ledger (default: ./results.tsv)
#   --session-dir DIR   the session files (default: .autoresearch beside the ledger)
#   --top N             how many runs to list by val_bpb (default: 5)
#   --all               every row, ignoring session.json's ledger_start (the track)
#   --tried             print the body of program.md's "What has been tried":
#                       Kept:, Discarded:, Crashed:, one line per knob (at most
#                       10 per section; the rest counted, all of it in --json)
#   --json              print one JSON object (everything, for agents)
#   --plot FILE.svg     also write the progress chart (upstream's progress.png) as SVG:
#                       every kept run, the running best, a sample of the rest
#                       (a name ending in .svg; never the ledger itself)
#   -h, --help          print this help
#
# Exit codes:
#   0  report printed (an empty ledger is a report too)
#   1  no ledger at that path, not a results.tsv, unreadable, or the chart
#      cannot be written
#   2  usage error
#   130  interrupted
set -euo pipefail

AR_NAME=show-results.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  ar_help_if_asked "$@"
  ar_find_python
  # The report starts no other program, so it runs the interpreter python3 was found to be
  # (AR_PY_EXE): behind a version manager's shim (pyenv's costs ~0.15 s) one start, not two.
  local py=("${AR_PY[@]}")
  if [[ -n "${AR_PY_EXE:-}" && -x "${AR_PY_EXE}" ]]; then
    py=("${AR_PY_EXE}")
  fi
  # -S: arcore is stdlib only, so site-packages (and their .pth start-up cost) are skipped.
  AR_NAME="${AR_NAME}" PYTHONPATH="${AR_SCRIPTS_DIR}${PYTHONPATH:+:${PYTHONPATH}}" \
    "${py[@]}" -S "${AR_ARCORE[@]}" report "$@"
}

main "$@"
