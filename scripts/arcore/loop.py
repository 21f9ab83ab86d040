"""run-loop.sh's command line: its options, the rules a repository must meet, and ``main``.

The engine is arcore.scheduler (one engine for one slot or many, local or Slurm; its states
are written down there and in references/architecture.md §8). This module only parses,
checks, takes the lock, installs the signal handlers and prints the summary.

CLI (run-loop.sh calls it)::

    python3 -m arcore loop (--propose CMD | --queue DIR) [options]   # see run-loop.sh --help
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from arcore import ahead, journal, proposals, runner, slots
from arcore.gitops import (LoopError, current_branch, default_branch, git, git_ok, head, log,
                           short)
from arcore.scheduler import (FAILED, INTERRUPTED, OK, UNSAFE, USAGE, Scheduler,
                              dirty_problem)

NAME = "run-loop.sh"


# ---------------------------------------------------------------------------
# Branch rules
# ---------------------------------------------------------------------------


def top_problem(repo: str) -> str | None:
    """A directory below the work tree's top (the session files would land there)."""
    top = git(repo, "rev-parse", "--show-toplevel", check=False) \
        if git_ok(repo, "rev-parse", "--show-toplevel") else ""
    if top and os.path.realpath(top) != os.path.realpath(repo):
        return f"--repo must be the top of the work tree ({top}); run from there"
    return None


def branch_problem(repo: str) -> str | None:
    """Why the loop may not run here (None when it may): autoresearch/<tag>, clean tree."""
    if not git_ok(repo, "rev-parse", "--git-dir"):
        return f"{repo} is not a git repository"
    if head(repo) is None:
        return "the repository has no commit yet; commit train.py first"
    branch = current_branch(repo)
    if branch is None:
        return "HEAD is detached; check out a branch autoresearch/<tag> first"
    if branch == default_branch(repo):
        return (f"refusing to run on the default branch {branch!r}; "
                "create one first: git checkout -b autoresearch/<tag>")
    if not branch.startswith("autoresearch/") or branch == "autoresearch/":
        return f"branch {branch!r} is not autoresearch/<tag>; git checkout -b autoresearch/<tag>"
    return None


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise LoopError(USAGE, message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    return check_options(parse_options(argv))


def parse_options(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog=NAME, add_help=False)
    for name in ("--propose", "--queue", "--prompt", "--cmd", "--launcher", "--timeout",
                 "--grace", "--metric", "--gpus"):
        p.add_argument(name)
    p.add_argument("--desc", default="")
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
    return p.parse_args(argv)


def check_options(o: argparse.Namespace) -> argparse.Namespace:
    """The rules for the options (one slot or many); fills in ``gpu_list`` and ``ahead``."""
    if o.propose and o.queue:
        raise LoopError(USAGE, "give --propose CMD or --queue DIR, not both")
    if not o.propose and not o.queue:
        raise LoopError(USAGE, "no candidates: give --propose CMD (an agent CLI) or --queue DIR "
                               "(patches); re-running the same code is not an experiment")
    if o.queue and not Path(o.queue).is_dir():
        raise LoopError(USAGE, f"--queue {o.queue}: not a directory")
    for name in ("max", "max_crashes", "plateau", "confirm"):
        value = getattr(o, name)
        if value is not None and value < 0:
            raise LoopError(USAGE, f"--{name.replace('_', '-')} must be >= 0")
    if o.ahead is not None and o.ahead < 0:
        raise LoopError(USAGE, "--ahead must be >= 0")
    if o.baseline_repeats < 1:
        raise LoopError(USAGE, "--baseline-repeats must be >= 1")
    if o.hours is not None and not o.hours > 0:
        raise LoopError(USAGE, "--hours must be > 0")
    if not o.propose_timeout > 0:
        raise LoopError(USAGE, "--propose-timeout must be > 0")
    if o.runner not in runner.RUNNERS:
        raise LoopError(USAGE, f"--runner must be one of {', '.join(runner.RUNNERS)}")
    if o.runner == "slurm" and o.launcher:
        raise LoopError(USAGE, "--launcher and --runner slurm both set the launcher; give one")
    if o.slurm_args and o.runner != "slurm":
        raise LoopError(USAGE, "--slurm-arg needs --runner slurm")
    for name in ("timeout", "grace"):
        value = getattr(o, name)
        try:
            if value is not None and not float(value) >= 0:
                raise ValueError
        except ValueError:
            raise LoopError(USAGE, f"--{name} must be a number of seconds, not {value!r}")
    gpus = [g.strip() for g in (o.gpus or "").split(",") if g.strip()]
    if o.gpus is not None and not gpus:
        raise LoopError(USAGE, "--gpus needs a comma-separated list, e.g. 0,1,2,3")
    if len(set(gpus)) != len(gpus):
        raise LoopError(USAGE, f"--gpus lists a GPU twice: {o.gpus}")
    if o.workers is None:
        o.workers = len(gpus) if gpus else 1
    if gpus and o.workers != len(gpus):
        raise LoopError(USAGE, f"--workers {o.workers} but --gpus lists {len(gpus)}")
    if not 1 <= o.workers <= slots.MAX_SLOTS:
        raise LoopError(USAGE, f"--workers must be 1..{slots.MAX_SLOTS}")
    if o.runner != "local":
        o.gpu_list = [None] * o.workers
    elif gpus:
        o.gpu_list = gpus
    else:  # one slot: the GPU the environment gives; several: one each, in order
        o.gpu_list = [None] if o.workers == 1 else [str(i) for i in range(o.workers)]
    if o.ahead is None or o.queue:  # a queue's patches are ready at once
        o.ahead = o.workers if o.propose and o.ahead is None else 0
    if o.queue:
        o.queue = str(Path(o.queue).resolve())
    return o


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
        repo = str(Path(opts.repo).resolve())
        problem = top_problem(repo)
        if problem:
            raise LoopError(USAGE, problem)
        problem = branch_problem(repo) or dirty_problem(repo)
        if problem:
            raise LoopError(UNSAFE, problem)
        lock = journal.acquire_lock(repo)
        if lock is None:
            raise LoopError(UNSAFE, f"another loop is running in {repo} "
                                    f"(lock {journal.LOCK} is held)")
    except LoopError as exc:
        log(str(exc))
        return exc.code
    engine = Scheduler(opts=opts, repo=repo, branch=current_branch(repo) or "",
                       state=journal.load_journal(repo))
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
            continue  # nohup: leave it ignored
        handlers[sig] = signal.signal(sig, engine.on_signal)
    code, status = OK, "finished"
    try:
        code = engine.run()
    except LoopError as exc:
        log(str(exc))
        code = exc.code
        status = "interrupted" if code == INTERRUPTED else "failed"
    except KeyboardInterrupt:
        code, status = INTERRUPTED, "interrupted"
    except OSError as exc:  # a full disk, a read-only ledger: one line; the journal keeps the step
        where = f" ({exc.filename})" if exc.filename else ""
        log(f"could not write{where}: {exc.strerror or exc}; fix it, then restart the same "
            "command to resume")
        code, status = FAILED, "failed"
    except Exception as exc:  # noqa: BLE001 (an internal error: say so, keep the journal)
        import traceback  # noqa: PLC0415
        traceback.print_exc(file=sys.stderr)
        log(f"internal error: {exc}; restart the same command to resume")
        code, status = FAILED, "failed"
    finally:
        try:
            if engine.lane is not None:
                engine.lane.shutdown()  # no proposer outlives the loop
            with contextlib.suppress(Exception):
                engine.abandon()  # no run outlives the loop
            if code == OK:
                ahead.drop_waiting(repo, engine.state)
            if not engine.jobs:
                slots.drop(repo, engine.slots)
            with contextlib.suppress(Exception):
                proposals.sweep(repo)  # no clone outlives the loop
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
    if engine.state.get("phase", "idle") != "idle" or engine.jobs:
        status = "running"  # an unsettled step: a restart must settle it
    engine.state["status"] = status
    with contextlib.suppress(OSError):
        engine.save()
    best = engine.best_value()
    print(f"status: {status}")
    print(f"experiments: {engine.state.get('done', 0)}")
    print(f"best: {'' if best is None else f'{best:.6f}'}")
    print(f"head: {short(head(repo))}")
    os.close(lock)  # the kernel would at exit; closing keeps an in-process caller honest
    return code

