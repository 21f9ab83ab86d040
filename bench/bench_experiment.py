#!/usr/bin/env python3
"""Usage: python3 bench/bench_experiment.py [--runs N] [--log-mb MB]

Prints two figures for run-experiment.sh; asserts nothing.

1. Harness overhead per experiment: the median wall time of ``run-experiment.sh --cmd
   "python3 train.py"`` on a scratch repo (each run judges a fresh commit that is discarded
   and reverted, so every run does the full job: verify, tamper lint, run, judge, row,
   runs.jsonl, revert), against the bare upstream step on the same instant stand-in
   (``python3 train.py > run.log 2>&1; grep "^val_bpb:\\|^peak_vram_mb:" run.log``).
   Goal: <= 0.3 s added.
2. Parsing a ``\\r``-joined log of MB megabytes (default 100) with ``arcore.runlog.summarize``
   in a fresh Python: wall time and peak RSS, next to the RSS of a Python that only imports
   the module. Goal: < 1 s and flat memory.

Exit codes: 0 figures printed, 2 usage.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from scratchrepo import commit_train, make_repo  # noqa: E402

SCRIPT = ROOT / "scripts" / "run-experiment.sh"
OVERHEAD_GOAL_S = 0.3
PARSE_GOAL_S = 1.0


def bench_overhead(tmp: Path, runs: int) -> None:
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(tmp / "cache"))
    repo = make_repo(tmp)
    subprocess.run(["bash", str(SCRIPT), "--repo", str(repo), "--cmd", "python3 train.py"],
                   env=env, check=True, capture_output=True)
    bare, harness = [], []
    for i in range(runs):
        start = time.perf_counter()
        subprocess.run("python3 train.py > run.log 2>&1; grep '^val_bpb:\\|^peak_vram_mb:' run.log",
                       shell=True, cwd=repo, check=True, capture_output=True)
        bare.append(time.perf_counter() - start)
        commit_train(repo, f"worse {i}", VAL_BPB=2.0 + i)
        start = time.perf_counter()
        done = subprocess.run(["bash", str(SCRIPT), "--repo", str(repo), "--cmd",
                               "python3 train.py"], env=env, capture_output=True, text=True)
        harness.append(time.perf_counter() - start)
        if done.returncode != 0 or "reverted: yes" not in done.stdout:
            print(f"unexpected harness result: {done.returncode} {done.stderr.strip()}")
            return
    b, h = statistics.median(bare), statistics.median(harness)
    print(f"overhead: bare upstream step median {b * 1000:.0f} ms, run-experiment.sh median "
          f"{h * 1000:.0f} ms over {runs} runs -> added {(h - b) * 1000:.0f} ms "
          f"(goal <= {OVERHEAD_GOAL_S * 1000:.0f} ms: {'met' if h - b <= OVERHEAD_GOAL_S else 'MISSED'})")


def make_log(path: Path, megabytes: int) -> None:
    line = ("step {:05d} (42.0%) | loss: 3.141593 | lrm: 0.98 | dt: 603ms | tok/sec: 435,023 "
            "| mfu: 25.1% | epoch: 1 | remaining: 120s    \r")
    block = "".join(line.format(i % 100000) for i in range(10000)).encode()
    with open(path, "wb") as out:
        out.write(b"Vocab size: 8,192\n")
        for _ in range(max(1, megabytes * (1 << 20) // len(block))):
            out.write(block)
        out.write(b"\n---\nval_bpb:          0.997900\ntraining_seconds: 300.1\n"
                  b"peak_vram_mb:     45060.2\n")


PARSE = """
import resource, sys, time
sys.path.insert(0, {scripts!r})
from arcore import runlog
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if {parse}:
    start = time.perf_counter()
    out = runlog.summarize({log!r})
    took = time.perf_counter() - start
    assert out["value"] == 0.9979, out
else:
    took = 0.0
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, before)
"""


def bench_parse(tmp: Path, megabytes: int) -> None:
    log = tmp / "big.log"
    make_log(log, megabytes)
    size = log.stat().st_size / (1 << 20)
    figures = {}
    for parse in (False, True):
        code = PARSE.format(scripts=str(ROOT / "scripts"), log=str(log), parse=parse)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True).stdout.split()
        figures[parse] = (float(out[0]), int(out[1]) / 1024)
    took, rss = figures[True]
    idle = figures[False][1]
    print(f"parse: {size:.0f} MB \\r-joined log in {took:.2f} s, peak RSS {rss:.1f} MB "
          f"(an idle import: {idle:.1f} MB; +{rss - idle:.1f} MB) "
          f"(goal < {PARSE_GOAL_S:.0f} s: {'met' if took < PARSE_GOAL_S else 'MISSED'})")


def main(argv: list[str]) -> int:
    runs, megabytes = 10, 100
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag in ("-h", "--help"):
            print(__doc__)
            return 0
        if flag in ("--runs", "--log-mb") and args and args[0].isdigit():
            value = int(args.pop(0))
            runs, megabytes = (value, megabytes) if flag == "--runs" else (runs, value)
            continue
        print(f"bench_experiment.py: bad argument {flag!r} (see --help)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-experiment-"))
    try:
        bench_overhead(tmp, runs)
        bench_parse(tmp, megabytes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
