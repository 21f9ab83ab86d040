#!/usr/bin/env python3
"""Usage: python3 bench/bench_cpu_target.py [--runs N] [--load K] [--edit OLD NEW] [--demo]

Prints figures for the CPU target (examples/cpu-target); asserts nothing.

1. Run-to-run noise: the unchanged baseline `uv run train.py` N times (default 3) in a scratch
   copy: val_bpb, num_steps, the CPU seconds the training took, the machine's speed (reference
   seconds per CPU second, over the run) and total_seconds of each run, then the spread
   (max - min) and the standard deviation of val_bpb. The budget counts reference seconds
   (prepare.py's TIME_BUDGET_CLOCK = "reference": CPU seconds scaled by the measured speed of
   a fixed reference step), so a busy machine makes a run slower, not shorter: the load
   average is printed beside each run. Goal: spread <= 0.01, with or without --load.
   --load K: K other CPU-heavy processes (busy loops) run the whole time, to show it.
   --edit OLD NEW: replace the line of train.py that starts with OLD by NEW first (a model
   other than the baseline, e.g. --edit "DEPTH =" "DEPTH = 2"): the reference step is the
   baseline's own step, so the baseline's spread is the best case.
2. With --demo: the wall time of `bash scripts/demo.sh DIR` from nothing (goal: < 3 minutes
   on 2 cores) and the judged statuses.

The data cache is a temporary directory (AUTORESEARCH_CACHE_DIR). Exit codes: 0 figures
printed, 1 a run failed, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "examples" / "cpu-target"


def summary(text: str) -> dict:
    out = {}
    for line in text.split("\n---\n")[-1].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            try:
                out[key.strip()] = float(value)
            except ValueError:
                pass
    return out


GOAL_SPREAD = 0.01


def start_load(k: int) -> list[subprocess.Popen]:
    """K busy-loop processes, each in its own session (stopped by stop_load)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True,
                             stdin=subprocess.DEVNULL) for _ in range(k)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def edit_train(repo: Path, edit: list[str]) -> None:
    old, new = edit
    train = repo / "train.py"
    text, count = re.subn(rf"(?m)^{re.escape(old)}.*$", lambda _: new, train.read_text())
    if count != 1:
        raise SystemExit(f"bench_cpu_target: {count} lines of train.py start with {old!r}")
    train.write_text(text)
    print(f"train.py: {new}")


def noise(runs: int, env: dict, work: Path, load: int = 0, edit: list[str] | None = None) -> int:
    repo = work / "target"
    shutil.copytree(TARGET, repo, ignore=shutil.ignore_patterns("demo-queue", ".venv"))
    if edit:
        edit_train(repo, edit)
    values = []
    for i in range(runs):
        load_avg = os.getloadavg()[0]
        done = subprocess.run(["uv", "run", "--quiet", "train.py"], cwd=repo, env=env,
                              capture_output=True, text=True)
        facts = summary(done.stdout)
        if done.returncode != 0 or "val_bpb" not in facts:
            print(f"run {i + 1}: failed (exit {done.returncode})\n{done.stderr[-2000:]}")
            return 1
        values.append(facts["val_bpb"])
        trained = re.search(r"Trained ([0-9.]+) reference seconds on ([0-9.]+) CPU seconds",
                            done.stdout)
        cpu = f"{float(trained.group(2)):.1f}" if trained else "?"
        speed = f"{float(trained.group(1)) / float(trained.group(2)):.2f}x" \
            if trained and float(trained.group(2)) > 0 else "?"
        print(f"run {i + 1}: val_bpb {facts['val_bpb']:.6f}  steps {facts['num_steps']:.0f}  "
              f"training_seconds {facts['training_seconds']:.1f}  cpu_seconds {cpu}  "
              f"speed {speed}  total_seconds {facts['total_seconds']:.1f}  load {load_avg:.2f}")
    spread = max(values) - min(values)
    print(f"val_bpb spread: {spread:.6f} with {load} other CPU-heavy process(es) running "
          f"(goal <= {GOAL_SPREAD}: {'met' if spread <= GOAL_SPREAD else 'NOT met'})")
    if len(values) > 1:
        print(f"val_bpb std: {statistics.stdev(values):.6f}")
    return 0


def demo(env: dict, work: Path) -> int:
    start = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(work / "demo")],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        print(f"demo: failed (exit {done.returncode})\n{done.stderr[-2000:]}")
        return 1
    ledger = (work / "demo" / "results.tsv").read_text().splitlines()[1:]
    statuses = " ".join(line.split("\t")[3] for line in ledger)
    print(f"demo: {seconds:.1f} s wall, statuses: {statuses}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument("--edit", nargs=2, metavar=("OLD", "NEW"))
    parser.add_argument("--demo", action="store_true")
    opts = parser.parse_args(argv)
    if opts.runs < 0 or opts.load < 0:
        parser.error("--runs and --load must be >= 0")
    if shutil.which("uv") is None:
        print("bench_cpu_target: uv not found", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(work / "cache"))
        hogs = start_load(opts.load)
        try:
            code = noise(opts.runs, env, work, opts.load, opts.edit) if opts.runs else 0
        finally:
            stop_load(hogs)
        if code == 0 and opts.demo:
            code = demo(env, work)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
