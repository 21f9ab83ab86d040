#!/usr/bin/env python3
"""Usage: python3 bench/bench_isolation.py [--runs N] [--shard-mb MB] [--venv DIR]

Prints what run isolation (issue 12) adds to one experiment; asserts nothing.

1. Per piece, the median over N runs on a scratch copy of examples/cpu-target:
   - the proposal clone: ``proposals.open_clone``, a one-line commit in it, ``collect`` (fetch
     + validate) and ``drop`` (the proposer's own time aside);
   - the disposable checkout: ``isolate.prepare`` + ``isolate.audit`` + ``isolate.remove``;
   - the fingerprints: ``session.integrity_changes`` (environment + data cache by stat, ctime
     and content), twice per run (before and after), with the environment read from
     ``--venv`` (default: this checkout's .venv, a real uv venv);
   - the ledger seal: ``ledger.verify`` (before the run; the append re-seals);
   - the process guard: a pid-namespace probe, a cgroup made and removed, a /proc tag scan.
   Their sum is the added time per experiment (goal: <= 0.5 s).
   Next to it, what the fresh bytecode cache costs the training process itself (numpy's
   modules compiled from source at every run).
2. Flat with upstream's shards: a data cache laid out like upstream's (tokenizer/, the pinned
   validation shard data/shard_06542.parquet of SHARD_MB, default 100, random bytes) with 1
   and then 10 training shards of SHARD_MB each: the freeze's one-time content hash, then
   the per-run verify. The content hash covers only the tokenizer and the validation shard
   (what the evaluator reads); training shards are not fingerprinted, and a covered file is
   hashed again only when its stat (size, mtime, ctime, inode) moved, so the per-run cost is
   a few stat calls whatever the cache holds.

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
sys.path.insert(0, str(ROOT / "scripts"))
from arcore import isolate, ledger, procs, proposals, session  # noqa: E402

GOAL_S = 0.5


def _median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def scratch_target(tmp: Path) -> Path:
    repo = tmp / "cpu-target"
    shutil.copytree(ROOT / "examples" / "cpu-target", repo,
                    ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    _git(repo, "init", "-q", "-b", "autoresearch/bench")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "baseline")
    return repo


def bench_pieces(tmp: Path, runs: int, venv: str) -> float:
    repo = scratch_target(tmp)
    os.environ["UV_PROJECT_ENVIRONMENT"] = venv
    cache = tmp / "cpu-cache"
    (cache / "corpus-v1").mkdir(parents=True)
    (cache / "corpus-v1" / "val.bin").write_bytes(os.urandom(65600))
    (cache / "corpus-v1" / "train.bin").write_bytes(os.urandom(2 << 20))
    os.environ["AUTORESEARCH_CACHE_DIR"] = str(cache)
    frozen = session.freeze(str(repo))
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    ledger.init(str(repo / "results.tsv"))

    def checkout():
        c = isolate.prepare(str(repo), head)
        isolate.audit(str(repo), c)
        isolate.remove(c)

    def guard():
        tag = procs.new_tag()
        procs.pidns_prefix()
        procs.reap(tag, procs.make_cgroup(tag))

    def clone():  # a proposal's round trip: clone, one commit, take it back, throw away
        c = proposals.open_clone(str(repo), "autoresearch/bench", head, "context",
                                 str(repo / "results.tsv"))
        train = Path(c.path) / "train.py"
        train.write_text(train.read_text() + "\n# bench\n")
        _git(Path(c.path), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "x")
        reason, commit = proposals.collect(c)
        assert reason is None, reason
        proposals.forget(str(repo), commit)
        proposals.drop(c)

    figures = {
        "proposal clone (clone, collect, drop)": _median(clone, runs),
        "disposable checkout (prepare + audit + remove)": _median(checkout, runs),
        "fingerprints x2 (environment + data cache)": 2 * _median(
            lambda: session.integrity_changes(str(repo), frozen), runs),
        "ledger seal check": _median(lambda: ledger.verify(str(repo / "results.tsv")), runs),
        "process guard (pidns probe, cgroup, tag scan)": _median(guard, runs),
    }
    env = frozen.get("environment", {})
    print(f"CPU target, median of {runs} runs; environment {env.get('dir')} "
          f"({len(env.get('distributions', {}))} distributions, "
          f"{len(env.get('startup', {}))} start-up files)")
    for name, seconds in figures.items():
        print(f"  {name:<50} {seconds * 1000:7.1f} ms")
    total = sum(figures.values())
    print(f"  {'added per experiment':<50} {total * 1000:7.1f} ms "
          f"(goal <= {GOAL_S * 1000:.0f} ms)")
    return total


def bench_pycache(tmp: Path, runs: int) -> None:
    """What a fresh PYTHONPYCACHEPREFIX costs: the CPU target's imports compiled from source."""
    code = "import numpy, math, random, hashlib, tempfile, bisect"
    probe = subprocess.run([sys.executable, "-c", "import numpy"], capture_output=True)
    if probe.returncode != 0:
        print("bytecode cache: numpy is not importable here; skipped")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    warm = _median(lambda: subprocess.run([sys.executable, "-c", code], env=env, check=True),
                   runs)
    counter = iter(range(10 ** 6))
    cold = _median(lambda: subprocess.run(
        [sys.executable, "-c", code], check=True,
        env=dict(env, PYTHONPYCACHEPREFIX=str(tmp / f"pyc{next(counter)}"))), runs)
    print(f"bytecode cache: the CPU target's imports (numpy) {warm * 1000:.0f} ms warm, "
          f"{cold * 1000:.0f} ms with a fresh PYTHONPYCACHEPREFIX: +{(cold - warm) * 1000:.0f} ms "
          "per run, inside the run (before TIME_BUDGET starts)")


def _write(path: Path, mb: int, random_bytes: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        if random_bytes:
            for _ in range(mb):
                handle.write(os.urandom(1 << 20))
        else:
            handle.truncate(mb << 20)  # realistic size; never read by the fingerprint


def bench_shards(tmp: Path, runs: int, shard_mb: int) -> None:
    cache = tmp / "upstream-cache"
    _write(cache / "tokenizer" / "tokenizer.pkl", 1, True)
    _write(cache / "tokenizer" / "token_bytes.pt", 1, True)
    _write(cache / "data" / "shard_06542.parquet", shard_mb, True)
    shards = [cache / "data" / f"shard_{i:05d}.parquet" for i in range(10)]
    entries = lambda: session.cache_entries(str(cache), "shard_06542.parquet")[0]  # noqa: E731
    from arcore import fingerprint
    print(f"upstream-sized cache: validation shard {shard_mb} MB, training shards "
          f"{shard_mb} MB each")
    for count in (1, 10):
        for shard in shards[:count]:
            if not shard.exists():
                _write(shard, shard_mb, False)
        start = time.perf_counter()
        frozen = fingerprint.data_integrity(str(cache), entries())
        freeze_s = time.perf_counter() - start
        verify_s = _median(lambda: fingerprint.data_changes(frozen, str(cache), entries()), runs)
        print(f"  {count:2d} training shard(s): freeze (content hash, once) "
              f"{freeze_s * 1000:7.1f} ms; verify per run {verify_s * 1000:6.2f} ms")


def main(argv: list[str]) -> int:
    opts = {"--runs": "7", "--shard-mb": "100", "--venv": str(ROOT / ".venv")}
    args = list(argv)
    while args:
        key = args.pop(0)
        if key in ("-h", "--help"):
            print(__doc__)
            return 0
        if key not in opts or not args:
            print(f"bench_isolation: bad option {key!r}", file=sys.stderr)
            return 2
        opts[key] = args.pop(0)
    try:
        runs, shard_mb = int(opts["--runs"]), int(opts["--shard-mb"])
    except ValueError:
        print("bench_isolation: --runs and --shard-mb are whole numbers", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    try:
        bench_pieces(tmp, runs, opts["--venv"])
        bench_pycache(tmp, runs)
        bench_shards(tmp, runs, shard_mb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
