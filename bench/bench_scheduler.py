#!/usr/bin/env python3
"""GPU-busy fraction and experiments per hour: --ahead 0 vs --ahead 1, and 2/4 slots.

Usage: python3 bench/bench_scheduler.py [--seconds S] [--experiments N] [--slots 2,4]
                                        [--fractions 0.2,0.5] [--slurm auto|yes|no]

Each configuration runs scripts/run-loop.sh --propose in a fresh scratch target whose
train.py is a stand-in that sleeps S seconds (a fixed-length run; it records when it ran) and
whose proposer sleeps a fixed fraction of S, then changes one knob (a line of its own, so a
proposal made on a superseded best still applies) and commits; every third proposal improves
the value, the others do not. The baseline is run first and not timed.

Figures per configuration: wall seconds of the timed loop, runs (results.tsv rows; with
several slots a keep that another slot superseded while it ran is rebased and run again, so
there are more runs than proposals), the busy fraction (seconds the slots spent running
train.py over slots x wall) and runs per hour, over the whole loop and in steady state: from
the moment every slot has started its first run to the moment the first slot has ended its
last one, which leaves out the session's start (the first proposals for every slot at once)
and its end (slots that have nothing left while the last runs end), costs a night of 300 s
runs pays once. For one slot, the projection to upstream's 5-minute runs: the per-experiment
gap measured here (harness overhead + waiting for the proposer) is split into the harness's
fixed part (the gap of --ahead 1 when the proposer is hidden) and the proposer's part, which
scales with the run; for N slots, the steady idle seconds per run around a 300 s run.
Goals: one slot >= 0.97 busy with a 20 % proposer (projected to 300 s runs); N slots >= 0.95 N
x one slot's rate, steady state against steady state (one engine, arcore.scheduler, for every
count: a slot that frees up starts the next candidate at once; the lane proposes ahead, one
per slot). The whole-loop ratio is printed beside it.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from scratchrepo import TAKE_NUMBER  # noqa: E402 (the stand-in proposers' shared counter)

ROOT = Path(__file__).resolve().parent.parent
RUN_LOOP = ROOT / "scripts" / "run-loop.sh"
TARGET = ROOT / "tests" / "fixtures" / "standins" / "target"
SLURM = ROOT / "tests" / "slurm"
KNOBS = 64
UPSTREAM_RUN = 300.0

STANDIN = '''"""Stand-in train.py: a fixed-length run that records when it ran."""
import os, time
SECONDS = {seconds}
VAL_BPB = 1.0
{knobs}
start = time.time()
time.sleep(SECONDS)
with open(os.environ["BENCH_SPANS"], "a") as out:
    out.write(f"{{start}} {{time.time()}} {{os.environ.get('AUTORESEARCH_WORKER', '-')}}\\n")
print("---")
print(f"val_bpb:          {{VAL_BPB + {total}:.6f}}")
print("training_seconds: 300.0")
print("peak_vram_mb:     1024.0")
'''

PROPOSER = TAKE_NUMBER + r'''import os, pathlib, subprocess, time
time.sleep(float(os.environ["BENCH_THINK"]))
k = take_number(os.environ["BENCH_COUNT"])  # one number each, lanes run at once
knob = k % int(os.environ["BENCH_KNOBS"])
delta = -0.001 if k % 3 == 0 else 0.01
text = pathlib.Path("train.py").read_text().replace(f"K{knob} = 0.0\n", f"K{knob} = {delta}\n")
pathlib.Path("train.py").write_text(text)
subprocess.run(["git", "commit", "-q", "-am", f"knob {knob} {delta}"], check=True)
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_target(where: Path, seconds: float) -> Path:
    repo = where / "target"
    shutil.copytree(TARGET, repo)
    knobs = "\n".join(f"K{i} = 0.0\n#\n#\n#" for i in range(KNOBS))
    total = " + ".join(f"K{i}" for i in range(KNOBS))
    (repo / "train.py").write_text(STANDIN.format(seconds=seconds, knobs=knobs, total=total))
    (where / "proposer.py").write_text(PROPOSER)
    git(repo, "init", "-q", "-b", "autoresearch/bench")
    for key, value in (("user.email", "bench@example.com"), ("user.name", "Bench"),
                       ("commit.gpgsign", "false")):
        git(repo, "config", key, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    return repo


def loop(repo: Path, extra: list[str], env: dict) -> float:
    start = time.monotonic()
    done = subprocess.run(["bash", str(RUN_LOOP), "--repo", str(repo), "--cmd",
                           f"{sys.executable} train.py", "--max-crashes", "0", *extra],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"bench_scheduler: run-loop.sh exited {done.returncode}")
    return time.monotonic() - start


def measure(seconds: float, experiments: int, think: float, extra: list[str],
            env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="ar-bench-sched-") as tmp:
        where = Path(tmp)
        where.chmod(0o755)
        repo = make_target(where, seconds)
        spans = where / "spans"
        env = dict(env, BENCH_SPANS=str(spans), BENCH_THINK=str(think),
                   BENCH_COUNT=str(where / "count"), BENCH_KNOBS=str(KNOBS),
                   AUTORESEARCH_CLONE_ROOT=str(where / "clones"))
        propose = ["--propose", f"{sys.executable} {where / 'proposer.py'}"]
        loop(repo, [*propose, "--max", "0", *extra], env)  # the baseline, not timed
        before = len((repo / "results.tsv").read_text().strip().splitlines())
        spans.unlink()
        wall = loop(repo, [*propose, "--max", str(experiments), *extra], env)
        runs = [(float(a), float(b), worker) for a, b, worker in
                (line.split() for line in spans.read_text().splitlines())]
        rows = len((repo / "results.tsv").read_text().strip().splitlines()) - before
        return {"wall": wall, "spans": runs, "rows": rows}


def figures(m: dict, slots: int, seconds: float) -> dict:
    """Whole-loop and steady-state busy fractions and runs per hour of one measurement."""
    spans = m["spans"]
    busy = sum(b - a for a, b, _ in spans)
    by_slot: dict = {}
    for a, b, worker in spans:
        by_slot.setdefault(worker, []).append((a, b))
    start = max(min(a for a, _ in runs) for runs in by_slot.values())
    end = min(max(b for _, b in runs) for runs in by_slot.values())
    steady = 0.0
    if len(by_slot) == slots and end > start:
        inside = sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in spans)
        steady = inside / (slots * (end - start))
    return {"busy": busy / (slots * m["wall"]), "rate": m["rows"] / m["wall"] * 3600,
            "steady": steady, "steady_rate": steady * slots * 3600 / seconds,
            "window": end - start}


def slurm_available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(n) or os.path.exists(f"/usr/sbin/{n}")
                                     for n in ("srun", "slurmctld", "slurmd", "munged"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="length of one stand-in run")
    p.add_argument("--experiments", type=int, default=6,
                   help="experiments per slot and configuration (x N with N slots)")
    p.add_argument("--fractions", default="0.2,0.5", help="proposer time / run time")
    p.add_argument("--slots", default="2,4", help="slot counts beyond one (local)")
    p.add_argument("--slurm", choices=("auto", "yes", "no"), default="auto")
    o = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # figures as they come
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=tempfile.gettempdir() + "/ar-bench-cache",
               AUTORESEARCH_METRIC_SOURCE="printed")  # a stand-in prints its value
    fractions = [float(f) for f in o.fractions.split(",") if f]
    slots = [int(n) for n in o.slots.split(",") if n]
    print(f"stand-in run: {o.seconds:g} s; {o.experiments} experiments per slot and "
          f"configuration; {os.cpu_count()} CPUs")
    head = (f"{'configuration':<40} {'wall s':>6} {'runs':>4} {'busy':>5} {'runs/h':>6} "
            f"{'steady':>6} {'st.runs/h':>9} {'busy@300s':>9} {'goal':>5}")
    print(head)
    single = None  # the 1-slot --ahead 1 figures with the first fraction
    one_slot: dict = {}
    for frac in fractions:
        think = frac * o.seconds
        for ahead in ("0", "1"):
            m = measure(o.seconds, o.experiments, think, ["--ahead", ahead], env)
            one_slot[(frac, ahead)] = m
    for frac in fractions:
        fixed = None
        m = one_slot[(frac, "1")]
        if frac < 1:  # hidden proposer: the gap is the harness's own (fixed per experiment)
            fixed = (m["wall"] - sum(b - a for a, b, _ in m["spans"])) / o.experiments
        for ahead in ("0", "1"):
            m = one_slot[(frac, ahead)]
            f = figures(m, 1, o.seconds)
            harness = fixed if fixed is not None else 0.0
            waited = frac * UPSTREAM_RUN if ahead == "0" else max(0.0, (frac - 1) * UPSTREAM_RUN)
            projected = UPSTREAM_RUN / (UPSTREAM_RUN + harness + waited)
            goal = ""
            if abs(frac - fractions[0]) < 1e-9 and ahead == "1":
                single = f
                if abs(frac - 0.2) < 1e-9:
                    goal = "ok" if projected >= 0.97 else "MISS"
            print(f"{f'1 slot, proposer {frac:.0%}, --ahead {ahead}':<40} {m['wall']:>6.1f} "
                  f"{m['rows']:>4} {f['busy']:>5.2f} {f['rate']:>6.0f} {f['steady']:>6.3f} "
                  f"{f['steady_rate']:>9.0f} {projected:>9.3f} {goal:>5}")
    think = (fractions[0] if fractions else 0.2) * o.seconds
    results = []
    for n in slots:  # N x the experiments: as many runs per slot as one slot's
        m = measure(o.seconds, o.experiments * n, think, ["--workers", str(n)], env)
        results.append((f"local, {n} slots", n, m))
    use_slurm = o.slurm == "yes" or (o.slurm == "auto" and slurm_available())
    if use_slurm:
        state = Path(tempfile.mkdtemp(prefix="ar-bench-slurm-"))
        state.chmod(0o755)
        started = subprocess.run(["bash", str(SLURM / "start.sh"), "--state", str(state),
                                  "--gpus", str(max(slots + [2]))], capture_output=True,
                                 text=True)
        try:
            if started.returncode != 0:
                sys.stderr.write(started.stderr)
                raise SystemExit("bench_scheduler: the loopback Slurm did not start")
            slurm_env = dict(env, SLURM_CONF=str(state / "slurm.conf"))
            for n in slots:
                m = measure(o.seconds, o.experiments * n, think,
                            ["--workers", str(n), "--runner", "slurm"], slurm_env)
                results.append((f"slurm, {n} slots", n, m))
        finally:
            subprocess.run(["bash", str(SLURM / "stop.sh"), "--state", str(state)],
                           capture_output=True)
            shutil.rmtree(state, ignore_errors=True)
    elif o.slurm == "no" or not slots:
        print("(Slurm skipped: --slurm no, or no slot counts)")
    else:
        print("(Slurm skipped: needs root and slurmctld slurmd slurm-client munge)")
    ratios = []
    for name, n, m in results:
        f = figures(m, n, o.seconds)
        gap = o.seconds * (1 / f["steady"] - 1) if f["steady"] else float("inf")
        projected = UPSTREAM_RUN / (UPSTREAM_RUN + gap)
        goal = "MISS"
        if single and single["steady_rate"]:
            ratio = f["steady_rate"] / (n * single["steady_rate"])
            whole = f["rate"] / (n * single["rate"])
            ratios.append(f"{name}: steady {ratio:.3f}, whole loop {whole:.3f}")
            goal = "ok" if ratio >= 0.95 else "MISS"
        print(f"{name + f', proposer {think / o.seconds:.0%}':<40} {m['wall']:>6.1f} "
              f"{m['rows']:>4} {f['busy']:>5.2f} {f['rate']:>6.0f} {f['steady']:>6.3f} "
              f"{f['steady_rate']:>9.0f} {projected:>9.3f} {goal:>5}")
    if single:
        print(f"(slot goal: steady runs/h >= 0.95 x N x {single['steady_rate']:.0f}, the 1-slot "
              "--ahead 1 steady rate; busy@300s: the same idle seconds per run around 300 s runs)")
        for line in ratios:
            print(f"(rate / (N x one slot's) {line})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
