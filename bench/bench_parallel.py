#!/usr/bin/env python3
"""Experiments per hour with 1, 2 and 4 workers (local) and through Slurm.

Usage: python3 bench/bench_parallel.py [--seconds S] [--experiments N] [--workers 1,2,4]
                                       [--slurm auto|yes|no]

Each configuration runs scripts/run-loop.sh over a queue of N patches in a fresh scratch
target whose train.py is a stand-in that sleeps S seconds (a fixed-length run) and prints
upstream's summary block. The baseline run is done first and not timed. One engine
(arcore.scheduler) runs every count. Slurm (--runner
slurm, 2 workers on the loopback one-node Slurm of tests/slurm/, which needs root and the
Debian packages) runs when available. Prints one line per configuration:
experiments/hour, speed-up over one worker, and the goal (>= 0.95 x N).

Exit codes: 0 measured (the figures are printed whatever they are), 1 a run failed, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_LOOP = ROOT / "scripts" / "run-loop.sh"
TARGET = ROOT / "tests" / "fixtures" / "standins" / "target"
SLURM = ROOT / "tests" / "slurm"
KNOBS = 16

STANDIN = '''"""Stand-in train.py: a fixed-length run."""
import time
SECONDS = {seconds}
VAL_BPB = 1.0
{knobs}
time.sleep(SECONDS)
print("---")
print(f"val_bpb:          {{VAL_BPB + {total}:.6f}}")
print("training_seconds: 300.0")
print("peak_vram_mb:     1024.0")
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_target(where: Path, seconds: float, experiments: int) -> tuple[Path, Path]:
    """A scratch target on autoresearch/bench and a queue of format-patches (one knob each)."""
    repo = where / "target"
    shutil.copytree(TARGET, repo)
    knobs = "\n".join(f"K{i} = 0.0\n#\n#\n#" for i in range(KNOBS))
    total = " + ".join(f"K{i}" for i in range(KNOBS))
    (repo / "train.py").write_text(STANDIN.format(seconds=seconds, knobs=knobs, total=total))
    git(repo, "init", "-q", "-b", "autoresearch/bench")
    for key, value in (("user.email", "bench@example.com"), ("user.name", "Bench"),
                       ("commit.gpgsign", "false")):
        git(repo, "config", key, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    queue = where / "queue"
    queue.mkdir()
    base = git(repo, "rev-parse", "HEAD")
    for n in range(experiments):
        knob, delta = n % KNOBS, -0.001 * (n + 1)
        text = (repo / "train.py").read_text().replace(f"K{knob} = 0.0", f"K{knob} = {delta}")
        (repo / "train.py").write_text(text)
        git(repo, "commit", "-q", "-am", f"knob {knob} {delta}")
        (queue / f"{n:03d}.patch").write_text(git(repo, "format-patch", "-1", "--stdout") + "\n")
        git(repo, "reset", "-q", "--hard", base)
    return repo, queue


def run_loop(repo: Path, queue: Path, extra: list[str], env: dict) -> float:
    start = time.monotonic()
    done = subprocess.run(["bash", str(RUN_LOOP), "--repo", str(repo), "--queue", str(queue),
                           "--cmd", f"{sys.executable} train.py", "--max-crashes", "0", *extra],
                          capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if done.returncode not in (0, 5):
        sys.stderr.write(done.stderr)
        raise SystemExit(f"bench_parallel: run-loop.sh exited {done.returncode}")
    return seconds


def measure(seconds: float, experiments: int, extra: list[str], env: dict) -> float:
    with tempfile.TemporaryDirectory(prefix="ar-bench-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        repo, queue = make_target(tmp_path, seconds, experiments)
        empty = tmp_path / "empty"
        empty.mkdir()
        run_loop(repo, empty, extra, env)  # the baseline, not timed
        wall = run_loop(repo, queue, extra, env)
        rows = (repo / "results.tsv").read_text().strip().splitlines()[1:]
        if len(rows) != experiments + 1:
            raise SystemExit(f"bench_parallel: expected {experiments + 1} rows, got {len(rows)}")
        return wall


def slurm_available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(n) or os.path.exists(f"/usr/sbin/{n}")
                                     for n in ("srun", "slurmctld", "slurmd", "munged"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of one stand-in run")
    p.add_argument("--experiments", type=int, default=8, help="experiments per configuration")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--slurm", choices=("auto", "yes", "no"), default="auto")
    o = p.parse_args(argv)
    counts = [int(n) for n in o.workers.split(",")]
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=tempfile.gettempdir() + "/ar-bench-cache",
               AUTORESEARCH_METRIC_SOURCE="printed")  # a stand-in prints its value
    print(f"stand-in run: {o.seconds:g} s; {o.experiments} experiments per configuration; "
          f"{os.cpu_count()} CPUs")
    print(f"{'configuration':<22} {'wall s':>8} {'exp/hour':>9} {'speed-up':>9} {'goal':>6}")
    single = None
    results = []
    for n in counts:
        wall = measure(o.seconds, o.experiments, ["--workers", str(n)], env)
        rate = o.experiments / wall * 3600
        single = rate if n == 1 else single
        results.append((f"local, {n} worker(s)", n, wall, rate))
    use_slurm = o.slurm == "yes" or (o.slurm == "auto" and slurm_available())
    if use_slurm:
        state = Path(tempfile.mkdtemp(prefix="ar-bench-slurm-"))
        state.chmod(0o755)
        started = subprocess.run(["bash", str(SLURM / "start.sh"), "--state", str(state),
                                  "--gpus", "4"], capture_output=True, text=True)
        try:
            if started.returncode != 0:
                sys.stderr.write(started.stderr)
                raise SystemExit("bench_parallel: the loopback Slurm did not start")
            slurm_env = dict(env, SLURM_CONF=str(state / "slurm.conf"))
            for n in (2, 4):
                if n in counts:
                    wall = measure(o.seconds, o.experiments,
                                   ["--workers", str(n), "--runner", "slurm"], slurm_env)
                    results.append((f"slurm, {n} worker(s)", n, wall,
                                    o.experiments / wall * 3600))
        finally:
            subprocess.run(["bash", str(SLURM / "stop.sh"), "--state", str(state)],
                           capture_output=True)
            shutil.rmtree(state, ignore_errors=True)
    else:
        print("(Slurm skipped: needs root and slurmctld slurmd slurm-client munge)")
    for name, n, wall, rate in results:
        speedup = rate / single if single else float("nan")
        goal = "ok" if speedup >= 0.95 * n else "MISS"
        print(f"{name:<22} {wall:>8.1f} {rate:>9.0f} {speedup:>8.2f}x {goal:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
