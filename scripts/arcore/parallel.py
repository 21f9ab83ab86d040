"""Parallel rounds: N candidates at once against the same base, one honest ledger.

arcore.loop.main (run-loop.sh) hands its arguments here when ``--workers N`` (N > 1), ``--gpus LIST`` or
``--runner slurm`` is given. A round:

1. Take N candidates, one per worker. Each worker has its own git worktree
   (``.autoresearch/worktrees/wK``) on its own branch (``autoresearch-workers/<tag>/wK``) off
   the session branch; the main worktree is never used for running. Candidates come from the
   proposer (called once per worker, one after another, each told what the workers before it in
   this round are trying) or from the queue (the next N patches). A bad proposal is restored and
   becomes a ``crash`` row, as in the single loop. A candidate whose train.py is identical
   (same blob) to one already tried in this track is not run.
2. Run them at once, each through run-experiment.sh in its worktree (own process group, hard
   timeout, freeze verified, tamper lint), with ``CUDA_VISIBLE_DEVICES`` set to its GPU
   (``--runner local``) or as a Slurm job step (``--runner slurm``: ``srun --gres=gpu:1``, see
   ``arcore.runner``). A run starts as soon as its candidate is ready.
3. Judge: run-experiment.sh judges each run against the best kept value of the track: before
   each run the worktree gets a copy of the main results.tsv and of the session manifest
   (its branch set to the worker's), so "keep" means "beats the best so far". Of the runs it
   called ``keep`` the round keeps at most one, the best; the others become ``discard``.
4. Log: every run gets one row in the main results.tsv (appended under its lock, the worker in
   the description: ``[w2] ...``), one object in runs.jsonl, its log under
   ``.autoresearch/logs/``. Then the session branch is fast-forwarded to the kept candidate
   (``git merge --ff-only`` in the main worktree, which is clean).

Every commit stays reachable: discarded ones under ``refs/autoresearch/discarded/``, rejected
proposals and duplicates under ``refs/autoresearch/rejected/``, candidates of an unfinished
round under ``refs/autoresearch/unjudged/``.

State: ``.autoresearch/parallel.json`` (written atomically before each step). A restart with
the same command after SIGKILL settles the round that was cut short: runs that finished (their
row is in the worker's scratch ledger) are not run again, unfinished ones are re-run on the
same base, then the round is judged. SIGINT/SIGTERM/SIGHUP: every run's process group is
stopped (run-experiment.sh writes no row for an unfinished run), the runs that had finished are
judged and logged, unfinished candidates are dropped (kept as unjudged refs; a queue patch is
applied again next time), worktrees are removed, exit 130. A second signal kills at once.
If the session branch moved during a round (a user's commit), the round's runs are logged with
nothing kept ("not applied") and the loop stops with exit 4; the user's commit stays.

CLI (run-loop.sh calls it)::

    python3 -m arcore parallel (--propose CMD | --queue DIR) (--workers N | --gpus LIST)
                               [--runner local|slurm] [--slurm-arg ARG]... [loop options]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from arcore import gitx
from arcore import ahead as ahead_mod
from arcore.rounds_ahead import RoundsAhead
from arcore import gitops, ledger, loop, noise, procs, proposals, runner, session
from arcore.lane import Lane, forget_waiting

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

OK, FAILED, USAGE, HARNESS, UNSAFE, NOTHING, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
JOURNAL = ".autoresearch/parallel.json"
WORKTREES = ".autoresearch/worktrees"
RUNS = ".autoresearch/runs.jsonl"
LOGS = ".autoresearch/logs"
WORKER_BRANCH = "autoresearch-workers/{tag}/{worker}"
REJECTED, DISCARDED, UNJUDGED = loop.REJECTED, loop.DISCARDED, loop.UNJUDGED
MAX_WORKERS = 64


ParallelError = loop.LoopError  # one error type: ``code`` is the exit status
log = loop.log


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise ParallelError(USAGE, message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="run-loop.sh", add_help=False)
    for name in ("--propose", "--queue", "--desc", "--prompt", "--cmd", "--launcher",
                 "--timeout", "--grace", "--metric", "--gpus"):
        p.add_argument(name, default="" if name == "--desc" else None)
    p.add_argument("--max", type=int)
    p.add_argument("--hours", type=float)
    p.add_argument("--max-crashes", type=int, default=3)
    p.add_argument("--propose-timeout", type=float, default=1800.0)
    p.add_argument("--plateau", type=int, default=5)
    p.add_argument("--baseline-repeats", type=int, default=1)
    p.add_argument("--confirm", type=int, default=0)
    p.add_argument("--ahead", type=int)
    p.add_argument("--repo", default=".")
    p.add_argument("--higher-is-better", action="store_true")
    p.add_argument("--workers", type=int)
    p.add_argument("--runner", default="local")
    p.add_argument("--slurm-arg", action="append", default=[], dest="slurm_args")
    o = p.parse_args(argv)
    if bool(o.propose) == bool(o.queue):
        raise ParallelError(USAGE, "give exactly one of --propose CMD or --queue DIR")
    if o.queue and not Path(o.queue).is_dir():
        raise ParallelError(USAGE, f"--queue {o.queue}: not a directory")
    if o.runner not in runner.RUNNERS:
        raise ParallelError(USAGE, f"--runner must be one of {', '.join(runner.RUNNERS)}")
    if o.runner == "slurm" and o.launcher:
        raise ParallelError(USAGE, "--launcher and --runner slurm both set the launcher; give one")
    if o.slurm_args and o.runner != "slurm":
        raise ParallelError(USAGE, "--slurm-arg needs --runner slurm")
    if o.baseline_repeats < 1 or o.confirm < 0:
        raise ParallelError(USAGE, "--baseline-repeats must be >= 1 and --confirm >= 0")
    gpus = [g.strip() for g in (o.gpus or "").split(",") if g.strip()]
    if o.gpus is not None and not gpus:
        raise ParallelError(USAGE, "--gpus needs a comma-separated list, e.g. 0,1,2,3")
    if gpus and len(set(gpus)) != len(gpus):
        raise ParallelError(USAGE, f"--gpus lists a GPU twice: {o.gpus}")
    if o.workers is None:
        o.workers = len(gpus) if gpus else 1
    if gpus and o.workers != len(gpus):
        raise ParallelError(USAGE, f"--workers {o.workers} but --gpus lists {len(gpus)}")
    if not 1 <= o.workers <= MAX_WORKERS:
        raise ParallelError(USAGE, f"--workers must be 1..{MAX_WORKERS}")
    if o.runner == "local" and not gpus:
        gpus = [str(i) for i in range(o.workers)]
    o.gpu_list = gpus if o.runner == "local" else [None] * o.workers
    for name in ("timeout", "grace"):
        value = getattr(o, name)
        try:
            if value is not None and not float(value) >= 0:
                raise ValueError
        except ValueError:
            raise ParallelError(USAGE, f"--{name} must be a number of seconds, not {value!r}")
    for name in ("max", "max_crashes", "plateau"):
        if getattr(o, name) is not None and getattr(o, name) < 0:
            raise ParallelError(USAGE, f"--{name.replace('_', '-')} must be >= 0")
    if o.hours is not None and not o.hours > 0:
        raise ParallelError(USAGE, "--hours must be > 0")
    if o.ahead is not None and o.ahead < 0:
        raise ParallelError(USAGE, "--ahead must be >= 0")
    if o.ahead is None or o.queue:  # by default the next round's proposals, all of them
        o.ahead = o.workers if o.propose and o.ahead is None else 0
    if o.queue:
        o.queue = str(Path(o.queue).resolve())
    return o


def args_key(o: argparse.Namespace) -> str:
    keyed = {k: v for k, v in sorted(vars(o).items()) if k != "repo"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Pure helpers: the round's verdicts, dedupe keys
# ---------------------------------------------------------------------------


def round_verdicts(results: list[dict | None], higher_is_better: bool = False) -> list[str | None]:
    """The final status of each run of a round (None: not finished).

    ``results`` are run-experiment.sh's JSON answers, each judged against the best before the
    round. Of those it called ``keep`` the best value wins (the first on a tie); the other keeps
    become ``discard``. Discards and crashes stand.
    """
    winner, best = None, None
    for i, r in enumerate(results):
        if r and r.get("status") == "keep" and r.get("value") is not None:
            value = r["value"]
            if best is None or (value > best if higher_is_better else value < best):
                winner, best = i, value
    out: list[str | None] = []
    for i, r in enumerate(results):
        if not r:
            out.append(None)
        elif r.get("status") == "keep":
            out.append("keep" if i == winner else "discard")
        else:
            out.append(r.get("status") or "crash")
    return out


def tagged(worker: str, desc: str) -> str:
    """The description with its worker: ``[w2] lower lr``."""
    return f"[{worker}] {ledger.flatten(desc)}".strip()


def session_tag(branch: str) -> str:
    return branch.split("/", 1)[1] if branch.startswith("autoresearch/") else branch


# ---------------------------------------------------------------------------
# Git plumbing for worktrees
# ---------------------------------------------------------------------------

git = loop.git
git_ok = loop.git_ok
head = loop.head
short = loop.short


def blob_of(repo: str, rev: str, path: str = "train.py") -> str | None:
    out = git(repo, "rev-parse", "--verify", "-q", f"{rev}:{path}", check=False)
    return out or None


def tried_blobs(repo: str, rows: list[dict]) -> set[str]:
    """train.py blobs of every commit a track row names (commits that no longer resolve skip)."""
    names = [r["commit"] for r in rows if len(r["commit"]) >= 4]
    if not names:
        return set()
    proc = subprocess.run(gitx.argv(repo, "cat-file",
                           "--batch-check=%(objectname)"),
                          input="".join(f"{n}:train.py\n" for n in names), capture_output=True,
                          text=True)
    return {line.strip() for line in proc.stdout.splitlines()
            if line.strip() and " " not in line.strip()}


def keep_reachable(repo: str, prefix: str, commit: str | None, base: str | None) -> None:
    if commit and commit != base:
        git(repo, "update-ref", f"{prefix}{commit}", commit, check=False)


def remove_worktree(repo: str, path: str, branch: str) -> None:
    if os.path.isdir(path):
        git(repo, "worktree", "remove", "--force", "--force", path, check=False)
        shutil.rmtree(path, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)
    if git_ok(repo, "show-ref", "--verify", "-q", f"refs/heads/{branch}"):
        git(repo, "branch", "-D", "-q", branch, check=False)


reset_worktree = gitops.reset_worktree


# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------


@dataclass
class Worker:
    id: str
    path: str
    branch: str
    gpu: str | None
    proc: subprocess.Popen | None = None
    kind: str = ""


@dataclass
class Rounds:
    """One parallel loop: its options, workers, journal and children."""

    opts: argparse.Namespace
    repo: str
    branch: str = ""
    state: dict = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    stop: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    verdict: str = "-"
    value: float | None = None
    threads: list = field(default_factory=list)
    lane: Lane | None = None  # --ahead K: the next round's proposals, made while one runs
    ahead: RoundsAhead | None = None

    def __post_init__(self) -> None:
        self.ahead = RoundsAhead(self)

    # -- journal ---------------------------------------------------------------

    def save(self) -> None:
        with self.lock:
            _save_json(self.repo, JOURNAL, self.state)

    @property
    def ledger_path(self) -> str:
        return str(Path(self.repo) / loop.LEDGER)

    def track(self) -> list[dict]:
        return loop.track_rows(self.repo)

    def best(self) -> float | None:
        return loop.best_value(self.track(), self.opts.higher_is_better, self.repo)

    def describe(self, text: str) -> str:
        prefix = (self.opts.desc or "").strip()
        return f"{prefix}: {text}" if prefix else text

    # -- signals ---------------------------------------------------------------

    def on_signal(self, signum: int, _frame) -> None:
        first = not self.stop
        self.stop = self.stop or signum
        if self.lane is not None:
            self.lane.signal(first)
        for w in self.workers:
            proc = w.proc
            if proc is None or proc.poll() is not None:
                continue
            if w.kind == "proposer":
                loop.signal_group(proc.pid, signal.SIGTERM if first else signal.SIGKILL)
            elif first:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)  # run-experiment.sh kills its run's group
            else:
                loop.signal_group(proc.pid, signal.SIGKILL)
        if not first:
            for pid in loop.tagged_pids(self.state.get("token", "")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def check_stop(self) -> None:
        if self.stop:
            raise ParallelError(INTERRUPTED, f"stopped by {signal.Signals(self.stop).name}")

    def spawn(self, w: Worker, argv: list[str], kind: str, env: dict, stdout, stderr,
              cwd: str | None = None) -> subprocess.Popen:
        env = {**env, loop.TOKEN_ENV: self.state["token"]}
        proc = subprocess.Popen(argv, cwd=cwd or w.path, env=env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, start_new_session=True)
        w.proc, w.kind = proc, kind
        if self.stop:
            self.on_signal(self.stop, None)
        return proc

    # -- worktrees -------------------------------------------------------------

    def make_workers(self, base: str) -> None:
        tag = session_tag(self.branch)
        root = Path(self.repo) / WORKTREES
        root.mkdir(parents=True, exist_ok=True)
        git(self.repo, "worktree", "prune", check=False)
        self.workers = []
        for i in range(self.opts.workers):
            wid = f"w{i + 1}"
            w = Worker(wid, str(root / wid), WORKER_BRANCH.format(tag=tag, worker=wid),
                       self.opts.gpu_list[i])
            if os.path.isdir(w.path) and head(w.path):  # left by a dead loop: keep its work
                loop.save_worktree(w.path)
                if not loop.is_ancestor(self.repo, head(w.path), self.branch):
                    keep_reachable(self.repo, UNJUDGED, head(w.path), None)
            remove_worktree(self.repo, w.path, w.branch)
            git(self.repo, "worktree", "add", "-q", "-f", "-B", w.branch, w.path, base)
            self.workers.append(w)

    def drop_workers(self) -> None:
        """Remove the worktrees and their branches (every candidate already has a ref)."""
        for w in self.workers:
            remove_worktree(self.repo, w.path, w.branch)
        self.workers = []
        with contextlib.suppress(OSError):
            (Path(self.repo) / WORKTREES).rmdir()

    # -- candidates ------------------------------------------------------------

    def propose(self, w: Worker, base: str, others: list[str], n: int) -> tuple[str | None, str]:
        """Run the proposer in a fresh clone at ``base``: (reason or None, commit); a good
        commit is then checked out in the worker's worktree."""
        o = self.opts
        rows = self.track()
        facts = loop.context_facts(self.repo, rows, base, n, o.plateau, o.metric or "val_bpb",
                                   o.higher_is_better)
        template_path = Path(o.prompt) if o.prompt else loop.PROMPT_TEMPLATE
        template = template_path.read_text(encoding="utf-8") if template_path.exists() else \
            "Improve {{metric}} ({{direction}} is better) by editing train.py; commit once.\n"
        text = loop.render_prompt(template, facts)
        others_text = "\n".join(f"- {line}" for line in others) or "- (you are the first)"
        text += (f"\n## This round: {len(self.workers)} experiments run at once\n\n"
                 f"You are worker {w.id}. The other workers of this round are trying:\n"
                 f"{others_text}\nPropose something different from them.\n")
        context = Path(self.repo) / ".autoresearch" / f"proposer-context-{w.id}.md"
        context.write_text(text, encoding="utf-8")
        clone = proposals.open_clone(self.repo, self.branch, base, text, self.ledger_path)
        env = {**os.environ, **proposals.env(clone),
               "AUTORESEARCH_BASE": base, "AUTORESEARCH_BEST": str(facts["best"]),
               "AUTORESEARCH_ITERATION": str(n),
               "AUTORESEARCH_PLATEAU": "1" if facts["plateau"] else "0",
               "AUTORESEARCH_METRIC": facts["metric"], "AUTORESEARCH_DIRECTION":
               facts["direction"], "AUTORESEARCH_WORKER": w.id,
               "AUTORESEARCH_ROUND_OTHERS": "\n".join(others)}
        try:
            with open(Path(self.repo) / loop.PROPOSER_LOG, "a", encoding="utf-8") as out:
                out.write(f"\n=== proposal {n} ({w.id}) on {short(base)} at "
                          f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
                out.flush()
                proc = self.spawn(w, ["bash", "-c", o.propose], "proposer", env, out, out,
                                  cwd=clone.path)
                code, timed_out = self.wait_proposer(proc, o.propose_timeout)
                w.proc = None
            if self.stop:
                proposals.salvage(clone, REJECTED)
                return "stopped", base
            reason, commit = proposals.collect(clone, code, timed_out, o.propose_timeout,
                                               who=f"proposer ({w.id})")
            return self.taken(w, base, reason, commit)
        finally:
            proposals.drop(clone)

    def taken(self, w: Worker, base: str, reason: str | None, commit: str
              ) -> tuple[str | None, str]:
        """A proposal back from its clone: a good one is checked out in the worker's worktree
        (its incoming ref dropped once it has a place there)."""
        if not reason:
            reset_worktree(w.path, w.branch, commit)
        elif commit != base:
            keep_reachable(self.repo, REJECTED, commit, base)
        proposals.forget(self.repo, commit)
        return reason, commit

    def wait_proposer(self, proc: subprocess.Popen, timeout: float) -> tuple[int, bool]:
        code, timed_out = procs.wait_group(proc, timeout)
        loop.signal_group(proc.pid, signal.SIGKILL)
        return code, timed_out

    def apply(self, w: Worker, base: str, patch: Path) -> tuple[str | None, str]:
        clone = proposals.open_clone(self.repo, self.branch, base)
        try:
            reason, commit = proposals.apply(clone, patch, loop.apply_patch)
            return self.taken(w, base, reason, commit)
        finally:
            proposals.drop(clone)

    def gather(self, rnd: dict, base: str, count: int) -> None:
        """Fill the round with up to ``count`` candidates (journaled one by one) and start
        each run as soon as its candidate is taken. Queue patches are applied in all
        worktrees at once; proposers are called one after another, each told what the
        workers before it are trying."""
        tried = set(self.state.get("tried", [])) | tried_blobs(self.repo, self.track())
        others: list[str] = []
        if self.opts.queue:
            free = list(self.workers[:count])
            while free and self.state.get("waiting"):
                got = self.ahead.from_waiting(free[0], base)
                if got is None:
                    break
                w = free.pop(0)
                self.take(rnd, w, base, got[0], got[1], tried, others, None)
                forget_waiting(self.repo, got[1])
            taken = set(self.queue_done()) | {c.get("patch") for c in rnd["candidates"]}
            plan = []
            for w in free:
                patch = next((p for p in loop.list_patches(self.opts.queue)
                              if p.name not in taken), None)
                if patch is None:
                    break
                taken.add(patch.name)
                plan.append((w, patch))
            outcomes = _in_threads([(self.prepare_patch, (w, base, patch)) for w, patch in plan])
            for (w, patch), (reason, commit) in zip(plan, outcomes):
                self.take(rnd, w, base, reason, commit, tried, others, patch.name)
            return
        for w in self.workers[:count]:
            self.check_stop()
            got = self.ahead.from_waiting(w, base) \
                if self.lane is not None or self.state.get("waiting") else None
            if got is None:
                reset_worktree(w.path, w.branch, base)
                number = int(self.state.get("done", 0)) + len(rnd["candidates"]) + 1
                reason, commit = self.propose(w, base, others, number)
            else:
                reason, commit = got
            if reason == "stopped":
                loop.restore(w.path, w.branch, base, [], REJECTED)
                self.check_stop()
            self.take(rnd, w, base, reason, commit, tried, others, None)
            if got is not None and not reason:
                forget_waiting(self.repo, commit)
        self.ahead.fill_lane(base, count)

    def prepare_patch(self, w: Worker, base: str, patch: Path) -> tuple[str | None, str]:
        reset_worktree(w.path, w.branch, base)
        return self.apply(w, base, patch)

    def take(self, rnd: dict, w: Worker, base: str, reason: str | None, commit: str,
             tried: set, others: list[str], patch: str | None) -> None:
        """Record one candidate: a rejection (crash row later), a duplicate (never run), or
        a run, started now."""
        cand = {"worker": w.id, "commit": commit, "desc": "", "patch": patch, "reject": None,
                "dup": False, "result": None}
        if reason:
            keep_reachable(self.repo, REJECTED, commit, base)
            loop.restore(w.path, w.branch, base, [], REJECTED)
            cand.update(reject=reason, desc=self.describe(reason))
            log(f"{w.id}: crash: {reason}")
        else:
            cand["desc"] = self.describe(loop.subject(w.path, commit))
            blob = blob_of(w.path, commit)
            if blob in tried:
                cand["dup"] = True
                keep_reachable(self.repo, REJECTED, commit, base)
                log(f"{w.id}: {short(commit)} has the same train.py as an experiment "
                    "already tried; not run again")
            else:
                tried.add(blob)
                cand["blob"] = blob
                others.append(f"{w.id}: {ledger.flatten(cand['desc'])}")
        with self.lock:
            rnd["candidates"].append(cand)
            self.state["tried"] = sorted(tried)
        self.save()
        if not cand["reject"] and not cand["dup"] and not self.stop:
            self.start_run(w, cand, rnd)

    def queue_done(self) -> list[str]:
        queues = self.state.setdefault("queues", {})
        return queues.setdefault(str(self.opts.queue or ""), [])

    # -- runs ------------------------------------------------------------------

    def prepare_scratch(self, w: Worker) -> None:
        """The worker judges against the main ledger and session: give it copies of both."""
        frozen = session.load(self.repo) or {}
        scratch = dict(frozen, branch=w.branch)
        sdir = Path(w.path) / ".autoresearch"
        sdir.mkdir(parents=True, exist_ok=True)
        _write_json(sdir / "session.json", scratch)
        src = Path(self.ledger_path)
        dst = Path(w.path) / loop.LEDGER
        if src.exists():
            shutil.copyfile(src, dst)
        else:
            dst.unlink(missing_ok=True)

    def experiment_argv(self, w: Worker, cand: dict) -> tuple[list[str], dict]:
        o = self.opts
        prefix, env = runner.launcher(
            o.runner, gpu=w.gpu, session=session_tag(self.branch), commit=cand["commit"],
            timeout_s=float(o.timeout or 600), grace_s=float(o.grace or 10),
            extra=o.slurm_args)
        return loop.judge_command(o, w.path, tagged(w.id, cand["desc"]),
                                  rerun=bool(cand.get("rerun")), worker=w.id,
                                  launcher=o.launcher or prefix or None, env=env)

    def start_run(self, w: Worker, cand: dict, rnd: dict) -> None:
        if git(w.path, "rev-parse", "HEAD") != cand["commit"]:
            reset_worktree(w.path, w.branch, cand["commit"])
        self.prepare_scratch(w)
        argv, env = self.experiment_argv(w, cand)
        proc = self.spawn(w, argv, "experiment", env, subprocess.PIPE, None)
        thread = threading.Thread(target=self.finish_run, args=(w, cand, proc), daemon=True)
        self.threads.append(thread)
        thread.start()

    def finish_run(self, w: Worker, cand: dict, proc: subprocess.Popen) -> None:
        out, _ = proc.communicate()
        w.proc = None
        result = None
        with contextlib.suppress(ValueError, IndexError):
            parsed = json.loads(out.strip().splitlines()[-1]) if out and out.strip() else None
            result = parsed if isinstance(parsed, dict) and parsed.get("status") else None
        with self.lock:
            cand["exit"] = proc.returncode
            if result is not None and proc.returncode in (OK, UNSAFE):
                result["record"] = last_record(w.path, cand["commit"])
                cand["result"] = result
        if self.opts.runner == "slurm" and (result is None or result.get("status") == "crash"):
            subprocess.run(runner.cancel_command(session_tag(self.branch), cand["commit"]),
                           capture_output=True, check=False)
        self.save()

    def wait_runs(self, _rnd: dict) -> None:
        for thread in self.threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
        self.threads = []

    # -- judging and logging ---------------------------------------------------

    def settle(self, rnd: dict) -> str | None:
        """Append the round's rows (idempotent), move the session branch to the winner.

        Returns the kept commit or None."""
        base = rnd["base"]
        cands = rnd["candidates"]
        results = [None if c.get("rerun") else c["result"] for c in cands]
        verdicts = round_verdicts(results, self.opts.higher_is_better)
        verdicts = [((c["result"] or {}).get("status") if c.get("rerun") and c["result"]
                     else v) for c, v in zip(cands, verdicts)]  # a re-run's verdict stands
        winner = next((c["commit"] for c, v in zip(cands, verdicts)
                       if v == "keep" and not c.get("rerun")), None)
        moved = head(self.repo) not in (base, winner)
        if moved:  # someone committed on the session branch: log the runs, apply nothing
            verdicts = ["discard" if v == "keep" and not c.get("rerun") else v
                        for c, v in zip(cands, verdicts)]
            winner = None
        again = self.ahead.beaten_keeps(rnd, verdicts, winner)
        rnd["phase"] = "appending"
        self.save()
        header = ledger.read_header(self.ledger_path)
        present = {(r["commit"], ledger.flatten(r["description"]))
                   for r in ledger.read_ledger(self.ledger_path)[int(rnd["rows_before"]):]}
        for cand, verdict in zip(cands, verdicts):
            if cand["dup"]:
                continue
            if cand["reject"]:
                line = ledger.format_row(short(cand["commit"] or base), None, None, "crash",
                                         tagged(cand["worker"], cand["desc"]), header)
                record = {"status": "crash", "crash_class": "proposal", "hint": cand["reject"]}
            elif verdict is None:  # unfinished: dropped, may be tried again
                keep_reachable(self.repo, UNJUDGED, cand["commit"], base)
                with self.lock:
                    self.state["tried"] = [b for b in self.state.get("tried", [])
                                           if b != cand.get("blob")]
                continue
            else:
                res = cand["result"]
                desc = res.get("description") or tagged(cand["worker"], cand["desc"])
                if moved and res.get("status") == "keep":
                    desc += " (not applied: the session branch moved during the round)"
                elif cand["commit"] in again:
                    desc += (f" (beaten in its round by {short(winner)}; rebased onto it as "
                             f"{short(again[cand['commit']])}, to run again)")
                line = ledger.format_row(cand["commit"], res.get("value"), res.get("memory_gb"),
                                         verdict, desc, header)
                record = dict(res.get("record") or {}, status=verdict)
                if verdict != "keep" and not cand.get("rerun"):
                    keep_reachable(self.repo, DISCARDED, cand["commit"], base)
            fields = line.split("\t")
            named = dict(zip(header, fields))
            if (named.get("commit", ""), named.get("description", "")) not in present:
                ledger.append_row(self.ledger_path, line)
                self.log_run(cand, record, rnd)
                present.add((named.get("commit", ""), named.get("description", "")))
                if rnd["kind"] == "round":  # the baseline is not counted (as in the loop)
                    self.state["done"] = int(self.state.get("done", 0)) + 1
                value = None if cand["reject"] else (cand["result"] or {}).get("value")
                self.verdict, self.value = named.get("status", "?"), value
                self.report(cand["worker"])
            if cand.get("patch") and cand["patch"] not in self.queue_done():
                self.queue_done().append(cand["patch"])
            if verdict is not None and cand["commit"]:
                git(self.repo, "update-ref", "-d", f"{UNJUDGED}{cand['commit']}", check=False)
        for cand in cands:  # duplicates are done too (never run)
            if cand["dup"] and cand.get("patch") and cand["patch"] not in self.queue_done():
                self.queue_done().append(cand["patch"])
        rnd["moved"] = moved
        self.save()
        if winner and winner != base and head(self.repo) == base:
            if noise.hold(self, rnd, winner):  # --confirm: re-runs first
                return winner
            self.fast_forward(winner, base)
        return winner

    def fast_forward(self, winner: str, base: str) -> None:
        """The session branch moves to the kept commit (one keep at a time, never back)."""
        if head(self.repo) != base:
            return
        proc = subprocess.run(gitx.argv(self.repo, "merge", "--ff-only",
                               "-q", winner),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            keep_reachable(self.repo, "refs/autoresearch/kept/", winner, base)
            raise ParallelError(UNSAFE, f"could not fast-forward {self.branch} to the kept "
                                        f"{short(winner)}: {proc.stderr.strip()[:200]} "
                                        f"(kept as refs/autoresearch/kept/{winner})")
        log(f"kept {short(winner)}: {self.branch} fast-forwarded")

    def log_run(self, cand: dict, record: dict, rnd: dict) -> None:
        """runs.jsonl object + archived log in the main session for one run of the round."""
        w = next((x for x in self.workers if x.id == cand["worker"]), None)
        rel = None
        src = (cand.get("result") or {}).get("log")
        if w is not None and src:
            rel = copy_log(self.repo, os.path.join(w.path, src), short(cand["commit"]))
        record = dict(record, worker=cand["worker"], round=rnd["n"],
                      commit=cand["commit"], short=short(cand["commit"]))
        if rel:
            record["log"] = rel
        record.pop("reverted", None)
        path = Path(self.repo) / RUNS
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def report(self, worker: str) -> None:
        o = self.opts
        done = int(self.state.get("done", 0))
        elapsed = time.time() - float(self.state.get("started", time.time()))
        deadline = self.state.get("deadline")
        left = None if deadline is None else float(deadline) - time.time()
        line = loop.status_line(done, o.max, self.verdict, self.value, self.best(), elapsed,
                                loop.eta(done, elapsed, o.max, left))
        if self.state.get("reproposed"):
            line += f" | re-proposed {self.state['reproposed']}"
        log(f"{line} | {worker}")

    # -- bounds ----------------------------------------------------------------

    def room(self) -> tuple[int, str | None]:
        """How many candidates the next round may take, or (0, why not)."""
        o, st = self.opts, self.state
        done = int(st.get("done", 0))
        crashes = loop.trailing(loop.rows_after(self.repo, int(st.get("rows_at_start", 0))),
                                ("crash",))
        if o.max_crashes and crashes >= o.max_crashes:
            raise ParallelError(FAILED, f"stopping after {crashes} crashes in a row "
                                        "(see .autoresearch/logs and .autoresearch/proposer.log)")
        n = o.workers
        if o.max is not None:
            if done >= o.max:
                return 0, f"reached --max {o.max}"
            n = min(n, o.max - done)
        deadline = st.get("deadline")
        if deadline is not None:
            left = float(deadline) - time.time()
            rounds = int(st.get("rounds", 0))
            per_round = (time.time() - float(st["started"])) / rounds if rounds else 0.0
            if left <= 0 or per_round > left:
                return 0, f"reached --hours {o.hours:g}"
        return n, None

    # -- the loop --------------------------------------------------------------

    def baseline(self) -> None:
        """An empty track starts with the base commit unmodified, run by the first worker."""
        if any(r["status"] == "keep" for r in self.track()):
            return
        base = head(self.repo)
        log(f"baseline: running {short(base)} unmodified ({self.workers[0].id})")
        rnd = self.new_round(base, kind="baseline")
        w = self.workers[0]
        reset_worktree(w.path, w.branch, base)
        cand = {"worker": w.id, "commit": base, "desc": self.describe("baseline"),
                "patch": None, "reject": None, "dup": False, "result": None}
        rnd["candidates"].append(cand)
        self.state["tried"] = sorted(set(self.state.get("tried", []))
                                     | {blob_of(self.repo, base) or ""} - {""})
        self.save()
        self.start_run(w, cand, rnd)
        self.wait_runs(rnd)
        self.finish_round(rnd)
        if not any(r["status"] == "keep" for r in self.track()):
            raise ParallelError(FAILED, "the baseline did not produce a metric; see its log "
                                        "under .autoresearch/logs/ and fix the target first")

    def new_round(self, base: str, kind: str = "round") -> dict:
        number = int(self.state.get("rounds", 0)) + 1 if kind == "round" else 0
        rnd = {"n": number, "kind": kind, "base": base,
               "phase": "running", "rows_before": len(ledger.read_ledger(self.ledger_path)),
               "prev_best": self.best(), "candidates": []}
        self.state["round"] = rnd
        self.state["base"] = base
        return rnd

    def finish_round(self, rnd: dict) -> None:
        interrupted = bool(self.stop)
        failed = [c for c in rnd["candidates"] if c.get("exit") not in (None, OK, UNSAFE,
                                                                         INTERRUPTED)
                  and c["result"] is None]
        self.settle(rnd)
        self.state["round"] = None
        if rnd["kind"] == "round" and self.state.get("confirm") and not self.stop:
            self.save()
            noise.confirm(self)
        self.state["rounds"] = int(self.state.get("rounds", 0)) + (rnd["kind"] == "round")
        self.state["base"] = head(self.repo)
        self.save()
        if rnd.get("moved"):
            raise ParallelError(UNSAFE, f"the session branch moved during the round (HEAD "
                                        f"{short(head(self.repo))}, expected "
                                        f"{short(rnd['base'])}): its runs are logged, none "
                                        "applied; check the branch, then start again")
        harness = [c for c in failed if c.get("exit") == HARNESS]
        if harness:
            raise ParallelError(HARNESS, "run-experiment.sh: the harness changed since the "
                                         "freeze; nothing was run (start a new track: "
                                         "scripts/setup.sh --new-track)")
        if failed:
            raise ParallelError(FAILED, f"run-experiment.sh failed in {failed[0]['worker']} "
                                        f"(exit {failed[0]['exit']}) without judging "
                                        f"{short(failed[0]['commit'])}")
        if interrupted:
            dropped = [c for c in rnd["candidates"] if c["commit"] and c["result"] is None
                       and not c["reject"] and not c["dup"]]
            if dropped:
                log(f"dropped {len(dropped)} unfinished run(s), kept as {UNJUDGED}<sha>")
            self.check_stop()

    def one_round(self) -> bool:
        """One round; False when there is nothing left (an empty queue)."""
        n, why = self.room()
        if why:
            log(f"done: {why}")
            return False
        changes = session.verify(self.repo)
        if changes:
            raise ParallelError(HARNESS, session.verify_message(changes))
        base = head(self.repo)
        rnd = self.new_round(base)
        rnd["phase"] = "gathering"
        self.save()
        try:
            self.gather(rnd, base, n)
        except ParallelError as exc:
            if exc.code != INTERRUPTED:
                self.wait_runs(rnd)
                raise
        self.wait_runs(rnd)
        if not rnd["candidates"]:
            self.state["round"] = None
            self.save()
            self.check_stop()
            return False
        rnd["phase"] = "running"
        self.finish_round(rnd)
        return True

    def recover(self) -> None:
        """Settle a round a dead loop (SIGKILL, reboot) left behind; see the module doc."""
        st = self.state
        rnd = st.get("round")
        if not rnd:
            return
        base = rnd.get("base")
        for c in rnd["candidates"]:
            if c["result"] is None and c.get("found") is not None:
                c["result"] = c.pop("found")
        commits = {c.get("commit") for c in rnd.get("candidates", []) if c.get("result")}
        if head(self.repo) != base and head(self.repo) not in commits:
            log(f"resuming round {rnd.get('n')}: the session branch moved; finished runs are "
                f"logged, unfinished ones dropped (kept under {UNJUDGED})")
            self.finish_round(rnd)
            return
        log(f"resuming round {rnd.get('n')}: finished runs are judged, unfinished ones re-run")
        pending = []
        for c in rnd["candidates"]:
            w = next((x for x in self.workers if x.id == c["worker"]), None)
            if w is not None and c["commit"] and c["result"] is None and not c["reject"] and not c["dup"]:
                pending.append((w, c))
        for w, c in pending:
            self.start_run(w, c, rnd)
        self.wait_runs(rnd)
        self.finish_round(rnd)

    def scratch_results(self) -> None:
        """Before the worktrees are rebuilt: a run the dead loop did not record but that
        finished (a row in the worker's scratch ledger + runs.jsonl) is taken as it is."""
        rnd = self.state.get("round") or {}
        for c in rnd.get("candidates", []):
            keep_reachable(self.repo, UNJUDGED, c.get("commit"), rnd.get("base"))
            if c.get("result") is not None or not c.get("commit"):
                continue
            if self.opts.runner == "slurm":  # a step the dead loop left on the cluster
                subprocess.run(runner.cancel_command(session_tag(self.branch), c["commit"]),
                               capture_output=True, check=False)
            path = Path(self.repo) / WORKTREES / c["worker"]
            record = last_record(str(path), c["commit"])
            if record and record.get("status"):
                rel = record.get("log")
                c["found"] = {k: record.get(k) for k in ("status", "value", "memory_gb",
                                                         "crash_class", "hint", "seconds",
                                                         "description")}
                c["found"].update(log=rel, record=record)

    def run(self) -> int:
        o, st = self.opts, self.state
        key = args_key(o)
        resumed = st.get("status") == "running" and st.get("args") == key
        problem = loop.dirty_problem(self.repo)
        if problem:
            raise ParallelError(UNSAFE, problem)
        session.ensure_excludes(self.repo)
        if session.load(self.repo) is None:
            frozen = session.freeze(self.repo, metric=o.metric or "val_bpb",
                                    higher_is_better=o.higher_is_better)
            log(f"froze a new session (track starts at results.tsv row "
                f"{frozen['ledger_start'] + 1})")
        changes = session.verify(self.repo)
        if changes:
            raise ParallelError(HARNESS, session.verify_message(changes))
        stale = loop.kill_stale({"token": st.get("token", "")}, float(o.grace or 10))
        if stale:
            log(f"killed {len(stale)} process(es) left by the previous loop")
        proposals.sweep(self.repo)
        self.scratch_results()
        now = time.time()
        if not resumed:
            st.update(started=now, done=0, rounds=0,
                      rows_at_start=len(ledger.read_ledger(self.ledger_path)),
                      deadline=None if o.hours is None else now + o.hours * 3600)
        st.update(status="running", args=key, pid=os.getpid(), token=uuid.uuid4().hex)
        if not resumed:
            ahead_mod.drop_waiting(self.repo, st)
        ahead_mod.settle_orphans(self.repo, st)
        if o.propose and o.ahead:
            self.lane = Lane(self.repo, self.branch, o.propose, o.propose_timeout, st["token"],
                             str(Path(self.repo) / loop.PROPOSER_LOG), self.ledger_path,
                             context=self.ahead.lane_context, env_for=self.ahead.lane_env)
        self.save()
        self.make_workers(head(self.repo))
        if resumed:
            log(f"resuming: {st.get('done', 0)} experiment(s) done so far")
        self.recover()
        if st.get("confirm"):
            noise.confirm(self)
        self.baseline()
        noise.repeat_baseline(self)
        rounds = 0
        while True:
            self.check_stop()
            if not self.one_round():
                break
            rounds += 1
        if not rounds and o.queue and not int(st.get("done", 0)):
            raise ParallelError(NOTHING, f"nothing to do: every patch in {o.queue} was "
                                         "already judged")
        return OK


# ---------------------------------------------------------------------------
# Files and threads
# ---------------------------------------------------------------------------


def _in_threads(calls: list[tuple]) -> list:
    """Run (function, args) pairs at once; their results in order; the first error raised."""
    results: list = [None] * len(calls)
    errors: list = []

    def one(i: int, fn, args) -> None:
        try:
            results[i] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, fn, args), daemon=True)
               for i, (fn, args) in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.2)
    if errors:
        raise errors[0]
    return results


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _save_json(repo: str, rel: str, state: dict) -> None:
    clean = dict(state)
    if isinstance(clean.get("round"), dict):
        clean["round"] = {k: v for k, v in clean["round"].items() if not k.startswith("_")}
    _write_json(Path(repo) / rel, clean)


def load_state(repo: str) -> dict:
    try:
        with open(Path(repo) / JOURNAL, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_record(worktree: str, commit: str) -> dict | None:
    """The worker's last runs.jsonl object for ``commit`` (None when there is none)."""
    path = Path(worktree) / RUNS
    found = None
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("commit") == commit:
                        found = record
    return found


def copy_log(repo: str, src: str, short_commit: str) -> str | None:
    """Copy a worker's run log to ``.autoresearch/logs/NNNN-<short>.log`` (next number)."""
    logs = Path(repo) / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    numbers = [int(n[:4]) for n in os.listdir(logs) if n[:4].isdigit()]
    number = max(numbers, default=0) + 1
    while True:
        dst = logs / f"{number:04d}-{short_commit}.log"
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            number += 1
    with os.fdopen(fd, "wb") as out:
        with contextlib.suppress(OSError):
            with open(src, "rb") as handle:
                shutil.copyfileobj(handle, out)
    return os.path.relpath(dst, repo)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
        repo = str(Path(opts.repo).resolve())
        problem = loop.top_problem(repo)
        if problem:
            raise ParallelError(USAGE, problem)
        problem = loop.branch_problem(repo)
        if problem:
            raise ParallelError(UNSAFE, problem)
        lock = loop.acquire_lock(repo)
        if lock is None:
            raise ParallelError(UNSAFE, f"another loop is running in {repo} "
                                        f"(lock {loop.LOCK} is held)")
    except ParallelError as exc:
        log(str(exc))
        return exc.code
    rounds = Rounds(opts=opts, repo=repo, branch=loop.current_branch(repo) or "",
                    state=load_state(repo))
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
            continue
        handlers[sig] = signal.signal(sig, rounds.on_signal)
    code, status = OK, "finished"
    try:
        code = rounds.run()
    except ParallelError as exc:
        log(str(exc))
        code = exc.code
        status = "interrupted" if code == INTERRUPTED else "failed"
    except KeyboardInterrupt:
        code, status = INTERRUPTED, "interrupted"
    finally:
        try:
            if rounds.lane is not None:
                rounds.lane.shutdown()  # no proposer outlives the loop
            if code == OK:
                ahead_mod.drop_waiting(repo, rounds.state)
            rounds.drop_workers()
            proposals.sweep(repo)
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
    if rounds.state.get("round"):
        status = "running"  # an unsettled round: a restart settles it
    rounds.state["status"] = status
    with contextlib.suppress(OSError):
        rounds.save()
    best = rounds.best()
    print(f"status: {status}")
    print(f"experiments: {rounds.state.get('done', 0)}")
    print(f"best: {'' if best is None else f'{best:.6f}'}")
    print(f"head: {short(head(repo))}")
    return code
