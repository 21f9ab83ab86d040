#!/usr/bin/env bash
# Usage: bench/bench_report.sh [ROWS]
#
# Benchmarks show-results.sh on a synthetic ledger of ROWS data rows (default
# 100000: keep/discard/crash mixed, descriptions with Unicode, <, &), and prints
# its wall time side by side with a plain awk pass over the same file (counts
# by status and the best kept val_bpb), plus the --json, --tried and --plot
# variants, and once more with a runs.jsonl of one record per row beside it.
# Each figure is the best of 3 runs.
# Goal: the default report in under 1 s for 100k rows. Prints figures only; it
# asserts nothing.
#
# Exit codes:
#   0  figures printed
#   2  usage error
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly GOAL_S=1.0
readonly REPEATS=3

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

make_ledger() {
  local rows="$1" out="$2"
  python3 - "${rows}" "${out}" <<'PY'
import random, sys
rows, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
knobs = ["matrix LR", "weight decay", "warmdown ratio", "depth", "batch size", "head dim",
         "window pattern", "rope base", "embedding LR", "softcap", "Muon momentum", "MLP ratio"]
best = 1.0
with open(out, "w", encoding="utf-8") as f:
    f.write("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    for i in range(rows):
        knob = rng.choice(knobs)
        desc = f"{knob} {rng.choice(['up', 'down'])} to {rng.random():.3f} <try #{i}> & “ü”"
        commit = f"{i:07x}"
        r = rng.random()
        if i and r < 0.05:
            f.write(f"{commit}\t0.000000\t0.0\tcrash\t{desc} (oom)\n")
            continue
        value = 0.95 + 0.05 * 0.5 ** (i / 5000) + rng.gauss(0.0, 0.003)
        if i == 0 or value < best:
            best = value
            f.write(f"{commit}\t{value:.6f}\t44.0\tkeep\t{desc}\n")
        else:
            f.write(f"{commit}\t{value:.6f}\t44.0\tdiscard\t{desc}\n")
PY
}

# seconds CMD...: the best wall time of REPEATS runs (the machine may be shared).
# make_runs LEDGER OUT: one runs.jsonl record per ledger row, shaped like arcore.experiment's.
make_runs() {
  mkdir -p "$(dirname "$2")"
  python3 - "$1" "$2" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as out:
    next(f)
    for i, line in enumerate(f):
        commit, value, memory, status, desc = line.rstrip("\n").split("\t")
        crash = status == "crash"
        out.write(json.dumps({
            "status": status, "commit": commit + "0" * 33, "short": commit, "metric": "val_bpb",
            "value": None if crash else float(value), "memory_gb": float(memory),
            "crash_class": "oom" if crash else None, "hint": "halve the batch" if crash else None,
            "seconds": 312.5, "log": f".autoresearch/logs/{i:04d}-{commit}.log",
            "description": desc, "worker": f"gpu{i % 8}", "exit_code": 1 if crash else 0,
            "metrics": {} if crash else {"val_bpb": float(value), "mfu": 40.1},
        }, ensure_ascii=False, sort_keys=True) + "\n")
PY
}

seconds() {
  local start end i best=""
  for ((i = 0; i < REPEATS; i++)); do
    start="$(date +%s.%N)"
    "$@" >/dev/null
    end="$(date +%s.%N)"
    best="$(awk -v a="${start}" -v b="${end}" -v m="${best}" \
      'BEGIN { t = b - a; if (m != "" && m < t) t = m; printf "%.3f", t }')"
  done
  printf '%s' "${best}"
}

awk_pass() {
  awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { n[$col["status"]]++ }
    $col["status"] == "keep" && (best == "" || $col["val_bpb"] < best) { best = $col["val_bpb"] }
    END { for (s in n) print s, n[s]; print "best", best }' "$1"
}

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
  local rows="${1:-100000}"
  [[ "${rows}" =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
  dir="$(mktemp -d)"
  trap 'rm -rf "${dir}"' EXIT
  make_ledger "${rows}" "${dir}/results.tsv"
  local show="${ROOT}/scripts/show-results.sh" ledger="${dir}/results.tsv"
  printf 'ledger: %s rows, %s bytes\n' "${rows}" "$(wc -c <"${ledger}")"
  printf 'goal: show-results.sh < %s s\n' "${GOAL_S}"
  printf '%-34s %8s\n' "what (best of ${REPEATS})" "seconds"
  printf '%-34s %8s\n' "awk pass (counts + best)" "$(seconds awk_pass "${ledger}")"
  printf '%-34s %8s\n' "show-results.sh" "$(seconds "${show}" --ledger "${ledger}")"
  printf '%-34s %8s\n' "show-results.sh --json" "$(seconds "${show}" --ledger "${ledger}" --json)"
  printf '%-34s %8s\n' "show-results.sh --tried" "$(seconds "${show}" --ledger "${ledger}" --tried)"
  printf '%-34s %8s\n' "show-results.sh --plot" \
    "$(seconds "${show}" --ledger "${ledger}" --plot "${dir}/p.svg")"
  make_runs "${ledger}" "${dir}/.autoresearch/runs.jsonl"
  printf '%-34s %8s\n' "show-results.sh + runs.jsonl" "$(seconds "${show}" --ledger "${ledger}")"
  printf 'plot size: %s bytes; runs.jsonl: %s bytes\n' "$(wc -c <"${dir}/p.svg")" \
    "$(wc -c <"${dir}/.autoresearch/runs.jsonl")"
  printf 'text lines: %s\n' "$("${show}" --ledger "${ledger}" | wc -l)"
}

main "$@"
