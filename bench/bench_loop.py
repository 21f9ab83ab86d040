#!/usr/bin/env python3
"""Turnaround of run-loop.sh: from the end of run k to the start of run k+1, minus the
proposer's own time (goal: <= 1 s). Prints figures; asserts nothing.

A scratch repo gets a stand-in train.py that logs its start and end times; the proposer is a
small script that logs its own start and end, edits train.py and commits. Both modes run:
--propose (proposer time subtracted) and --queue (git am is the loop's own work).

    python3 bench/bench_loop.py [--runs N]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TRAIN = '''import os, time
with open(os.environ["BENCH_TIMES"], "a") as f:
    f.write(f"start {time.time()}\\n")
VAL_BPB = 1.000000
print("---")
print(f"val_bpb:          {VAL_BPB:.6f}")
print("training_seconds: 300.1")
print("peak_vram_mb:     45060.2")
with open(os.environ["BENCH_TIMES"], "a") as f:
    f.write(f"end {time.time()}\\n")
'''

PROPOSE = '''import os, re, subprocess, time
with open(os.environ["BENCH_TIMES"], "a") as f:
    f.write(f"pstart {time.time()}\\n")
text = open("train.py").read()
value = float(re.search(r"^VAL_BPB = ([0-9.]+)", text, re.M).group(1)) - 0.001
open("train.py", "w").write(re.sub(r"^VAL_BPB = [0-9.]+", f"VAL_BPB = {value:.6f}", text,
                                   count=1, flags=re.M))
subprocess.run(["git", "commit", "-qam", f"VAL_BPB {value:.6f}"], check=True)
with open(os.environ["BENCH_TIMES"], "a") as f:
    f.write(f"pend {time.time()}\\n")
'''


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def scratch(base: Path) -> Path:
    repo = base / "target"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "autoresearch/bench")
    git(repo, "config", "user.email", "b@example.com")
    git(repo, "config", "user.name", "Bench")
    (repo / "train.py").write_text(TRAIN)
    (repo / "prepare.py").write_text("TIME_BUDGET = 300\n")
    (repo / "program.md").write_text("# bench\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "bench target")
    return repo


def make_queue(repo: Path, out: Path, n: int) -> None:
    """N patches, each on the base commit and each worse than it (a discard keeps the base,
    so every patch applies)."""
    out.mkdir()
    for i in range(n):
        git(repo, "checkout", "-q", "-B", "q", "autoresearch/bench")
        text = (repo / "train.py").read_text()
        (repo / "train.py").write_text(text.replace("VAL_BPB = 1.000000",
                                                    f"VAL_BPB = {1 + (i + 1) / 1000:.6f}"))
        git(repo, "commit", "-q", "-am", f"queued {i}")
        patch = subprocess.run(["git", "-C", str(repo), "format-patch", "-1", "--stdout"],
                               check=True, capture_output=True, text=True).stdout
        (out / f"{i:04d}.patch").write_text(patch)
    git(repo, "checkout", "-q", "autoresearch/bench")


def gaps(times: Path) -> list[float]:
    events = [line.split() for line in times.read_text().splitlines()]
    out, last_end, proposer = [], None, 0.0
    pstart = None
    for kind, stamp in events:
        t = float(stamp)
        if kind == "end":
            last_end, proposer = t, 0.0
        elif kind == "pstart":
            pstart = t
        elif kind == "pend" and pstart is not None:
            proposer += t - pstart
        elif kind == "start" and last_end is not None:
            out.append(t - last_end - proposer)
    return out


def bench(mode: str, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo = scratch(base)
        times = base / "times"
        env = dict(os.environ, BENCH_TIMES=str(times), AUTORESEARCH_CACHE_DIR=str(base / "cache"),
                   AUTORESEARCH_METRIC_SOURCE="printed")  # a stand-in prints its value
        args = ["bash", str(ROOT / "scripts" / "run-loop.sh"), "--cmd",
                f"{sys.executable} train.py", "--max", str(runs)]
        if mode == "propose":
            (base / "propose.py").write_text(PROPOSE)
            args += ["--propose", f"{sys.executable} {base / 'propose.py'}"]
        else:
            make_queue(repo, base / "queue", runs)
            args += ["--queue", str(base / "queue")]
        wall = time.monotonic()
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
        wall = time.monotonic() - wall
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"run-loop.sh exited {done.returncode}")
        found = gaps(times)
        print(f"{mode:8s} runs={runs + 1} wall={wall:.2f}s turnaround: "
              f"median={statistics.median(found):.3f}s "
              f"p90={sorted(found)[int(0.9 * (len(found) - 1))]:.3f}s max={max(found):.3f}s "
              f"(goal <= 1 s: {'met' if max(found) <= 1.0 else 'NOT met'})")
        return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    o = p.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench("propose", o.runs)
    bench("queue", o.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
