#!/usr/bin/env python3
"""Usage: python3 bench/bench_attest.py [--runs N] [--python PATH]

Prints the attestation launcher's added time per run on the CPU target; asserts nothing.

A scratch copy of examples/cpu-target gets a train.py that does what the real one does
around its 15 s of training (sets OMP_NUM_THREADS, imports numpy and prepare, loads the
training split, calls evaluate_bpb once with a uniform model, prints upstream's summary
block) but no training. It runs N times (default 7) each way, alternating:

- plain: ``python train.py``
- attested: ``python -m autoresearch_attest train.py`` with the harness's channel, key file
  and frozen prepare.py (arcore.attest.open_channel / run_env), the records then verified.

The figures are the differences of the medians, wall clock and CPU time (user + sys, less
sensitive to a busy machine) (goal: <= 0.2 s), beside the medians and the attested records'
own eval_begin wall/cpu. ``--python``: the target's Python (default: an
environment `uv sync`ed from examples/cpu-target into a temporary folder). Exit codes: 0
figures printed, 1 a run failed, 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "examples" / "cpu-target"
sys.path.insert(0, str(ROOT / "scripts"))

from arcore import attest, session  # noqa: E402

GOAL_S = 0.2
TRAIN = '''\
import os
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import numpy as np
from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, load_split, evaluate_bpb
train = load_split("train")
val_bpb = evaluate_bpb(lambda contexts: np.zeros((len(contexts), 256)))
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print("training_seconds: 0.0")
'''


def target_python(work: Path) -> str:
    venv = work / "venv"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(venv))
    subprocess.run(["uv", "sync", "--quiet", "--locked", "--project", str(TARGET)], env=env,
                   check=True)
    return str(venv / "bin" / "python")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def once(python: str, repo: Path, env: dict, attested: bool) -> tuple[float, float, dict | None]:
    channel = attest.open_channel() if attested else None
    run_env = env
    argv = [python, "train.py"]
    if attested:
        sha = hashlib.sha256((repo / "prepare.py").read_bytes()).hexdigest()
        run_env = attest.run_env(env, channel, str(repo / "prepare.py"), sha,
                                 session.validation_facts(str(repo)))
        argv = [python, "-m", attest.LAUNCHER, "train.py"]
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(argv, cwd=repo, env=run_env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    facts = None
    if attested:
        records, problems = attest.read_records(channel["records"], channel["key"])
        attest.close_channel(channel)
        facts = attest.verdict(records, problems, 8.0, None)
        if facts["crash_class"] or problems:
            raise RuntimeError(f"attested run judged {facts['crash_class']}: "
                               f"{facts['reason']}\n{done.stderr[-2000:]}")
    if done.returncode != 0 or "val_bpb:" not in done.stdout:
        raise RuntimeError(f"exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds, cpu, facts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.runs < 1:
        print("bench_attest: --runs must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        python = args.python or target_python(work)
        repo = work / "target"
        shutil.copytree(TARGET, repo, ignore=shutil.ignore_patterns("demo-queue", ".venv"))
        (repo / "train.py").write_text(TRAIN)
        env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(work / "cache"),
                   PYTHONDONTWRITEBYTECODE="1")
        subprocess.run([python, "prepare.py"], cwd=repo, env=env, check=True,
                       capture_output=True)
        plain, attested, begins = [], [], []
        try:
            once(python, repo, env, False)   # warm the page cache
            for _ in range(args.runs):
                plain.append(once(python, repo, env, False)[:2])
                seconds, cpu, facts = once(python, repo, env, True)
                attested.append((seconds, cpu))
                begins.append(facts["eval_begin"])
        except RuntimeError as exc:
            print(f"bench_attest: a run failed: {exc}", file=sys.stderr)
            return 1
    p = statistics.median(r[0] for r in plain)
    a = statistics.median(r[0] for r in attested)
    pc = statistics.median(r[1] for r in plain)
    ac = statistics.median(r[1] for r in attested)
    print(f"runs each way:           {args.runs} (load average {os.getloadavg()[0]:.2f})")
    print(f"plain median:            {p:.3f} s wall, {pc:.3f} s CPU")
    print(f"attested median:         {a:.3f} s wall, {ac:.3f} s CPU")
    print(f"launcher added per run:  {a - p:.3f} s wall, {ac - pc:.3f} s CPU "
          f"(goal <= {GOAL_S} s)")
    print(f"eval_begin wall/cpu:     {statistics.median(b['wall'] for b in begins):.3f} s / "
          f"{statistics.median(b['cpu'] for b in begins):.3f} s (median, since process start)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
