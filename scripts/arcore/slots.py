"""Slots: where the scheduler's runs happen (arcore.scheduler holds the state machine).

A slot is a git worktree of its own (``.autoresearch/worktrees/wK``) on its own branch
(``autoresearch-workers/<tag>/wK``), a GPU (``CUDA_VISIBLE_DEVICES`` for ``--runner local``)
or a Slurm job step (``--runner slurm``, arcore.runner), and at most one run at a time:
run-experiment.sh on the slot's HEAD, in its own process group, its JSON answer read from
its stdout through a pipe. The main worktree is never used for running: the
user's tree only ever sees a fast-forward to a kept commit.

Before each run the worktree gets a copy of the main results.tsv and of the session manifest
(its branch set to the slot's), so run-experiment.sh judges against the standing best of the
track as it was when the run started; the scheduler decides what the verdict means now.
Nothing here decides anything: this module is plumbing (worktrees, processes, files).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from arcore import gitx, session
from arcore.gitops import (UNJUDGED, current_branch, git, git_ok, head, is_ancestor,
                           keep_reachable, reset_worktree, save_worktree)

WORKTREES = ".autoresearch/worktrees"
RUNS = ".autoresearch/runs.jsonl"
LOGS = ".autoresearch/logs"
ANSWER = ".autoresearch/judge.out"
LEDGER = "results.tsv"
SLOT_BRANCH = "autoresearch-workers/{tag}/{slot}"
MAX_SLOTS = 64


@dataclass
class Slot:
    """One place a run happens; ``proc`` is its run-experiment.sh while one runs."""

    id: str
    path: str
    branch: str
    gpu: str | None
    proc: subprocess.Popen | None = None
    out: list = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self.proc is not None


def session_tag(branch: str) -> str:
    return branch.split("/", 1)[1] if branch.startswith("autoresearch/") else branch


def tagged(slot: str, desc: str, many: bool) -> str:
    """The description a row gets: ``[w2] lower lr`` with several slots, as it is with one."""
    from arcore.ledger import flatten  # noqa: PLC0415

    return f"[{slot}] {flatten(desc)}".strip() if many else flatten(desc)


# ---------------------------------------------------------------------------
# Worktrees
# ---------------------------------------------------------------------------


def remove_worktree(repo: str, path: str, branch: str) -> None:
    if os.path.isdir(path):
        git(repo, "worktree", "remove", "--force", "--force", path, check=False)
        shutil.rmtree(path, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)
    if git_ok(repo, "show-ref", "--verify", "-q", f"refs/heads/{branch}"):
        git(repo, "branch", "-D", "-q", branch, check=False)


def make(repo: str, branch: str, gpus: list[str | None], base: str) -> list[Slot]:
    """One worktree per slot at ``base`` (a worktree a dead loop left is saved first: its
    HEAD kept as unjudged, its edits under refs/autoresearch/worktree/)."""
    tag = session_tag(branch)
    root = Path(repo) / WORKTREES
    root.mkdir(parents=True, exist_ok=True)
    git(repo, "worktree", "prune", check=False)
    out = []
    for i, gpu in enumerate(gpus):
        sid = f"w{i + 1}"
        slot = Slot(sid, str(root / sid), SLOT_BRANCH.format(tag=tag, slot=sid), gpu)
        if os.path.isdir(slot.path) and head(slot.path):
            save_worktree(slot.path)
            if not is_ancestor(repo, head(slot.path), branch):
                keep_reachable(repo, UNJUDGED, head(slot.path))
        remove_worktree(repo, slot.path, slot.branch)
        git(repo, "worktree", "add", "-q", "-f", "-B", slot.branch, slot.path, base)
        out.append(slot)
    return out


def drop(repo: str, slots: list[Slot]) -> None:
    """Remove the worktrees and their branches (every candidate already has a ref)."""
    for slot in slots:
        remove_worktree(repo, slot.path, slot.branch)
    with contextlib.suppress(OSError):
        (Path(repo) / WORKTREES).rmdir()


def checkout(slot: Slot, commit: str) -> None:
    if current_branch(slot.path) != slot.branch or head(slot.path) != commit:
        reset_worktree(slot.path, slot.branch, commit)


def blob_of(repo: str, rev: str, path: str = "train.py") -> str | None:
    out = git(repo, "rev-parse", "--verify", "-q", f"{rev}:{path}", check=False)
    return out or None


def tried_blobs(repo: str, rows: list[dict]) -> set[str]:
    """train.py blobs of every commit a track row names (commits that no longer resolve skip)."""
    names = [r["commit"] for r in rows if len(r["commit"]) >= 4]
    if not names:
        return set()
    proc = subprocess.run(gitx.argv(repo, "cat-file", "--batch-check=%(objectname)"),
                          input="".join(f"{n}:train.py\n" for n in names), capture_output=True,
                          text=True)
    return {line.strip() for line in proc.stdout.splitlines()
            if line.strip() and " " not in line.strip()}


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def prepare_scratch(repo: str, slot: Slot) -> None:
    """The slot judges against the main ledger and session: give it copies of both."""
    frozen = session.load(repo) or {}
    sdir = Path(slot.path) / ".autoresearch"
    sdir.mkdir(parents=True, exist_ok=True)
    write_json(sdir / "session.json", dict(frozen, branch=slot.branch))
    src, dst = Path(repo) / LEDGER, Path(slot.path) / LEDGER
    if src.exists():
        shutil.copyfile(src, dst)
    else:
        dst.unlink(missing_ok=True)
    (Path(slot.path) / ANSWER).unlink(missing_ok=True)
    (Path(slot.path) / RUNS).unlink(missing_ok=True)  # a dead loop's answer is this run's only


def start(slot: Slot, argv: list[str], env: dict) -> subprocess.Popen:
    """run-experiment.sh in the slot, in its own session; its stdout (the JSON answer) read
    through a pipe by a thread, so nothing that can write files can change the answer."""
    slot.out = []
    slot.proc = subprocess.Popen(argv, cwd=slot.path, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=None, start_new_session=True,
                                 text=True, errors="replace")
    slot.reader = threading.Thread(target=_read_all, args=(slot.proc, slot.out), daemon=True)
    slot.reader.start()
    return slot.proc


def _read_all(proc: subprocess.Popen, out: list) -> None:
    with contextlib.suppress(OSError, ValueError):
        out.append(proc.stdout.read())


def output(slot: Slot) -> str:
    """What the ended run printed (the reader thread is joined first)."""
    if slot.reader is not None:
        slot.reader.join(timeout=10)
    return "".join(slot.out)


def answer(slot: Slot, commit: str, exit_code: int | None, text: str = "") -> dict | None:
    """run-experiment.sh's JSON answer for ``commit`` from ``text``, its stdout (None: the run
    was not judged), with its runs.jsonl record. A dead loop's run (``exit_code`` None) is
    answered by the slot's runs.jsonl, which holds only that run's record."""
    result = None
    with contextlib.suppress(ValueError, IndexError):
        text = text.strip()
        parsed = json.loads(text.splitlines()[-1]) if text else None
        result = parsed if isinstance(parsed, dict) and parsed.get("status") else None
    if result is None and exit_code is None:  # a dead loop's run: its record may say
        record = last_record(slot.path, commit)
        if record and record.get("status"):
            result = {k: record.get(k) for k in ("status", "value", "memory_gb", "crash_class",
                                                 "hint", "seconds", "description", "log")}
    if result is not None:
        result["record"] = last_record(slot.path, commit)
    return result


def last_record(worktree: str, commit: str) -> dict | None:
    """The slot's last runs.jsonl object for ``commit`` (None when there is none)."""
    found = None
    with contextlib.suppress(OSError):
        with open(Path(worktree) / RUNS, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("commit") == commit:
                        found = record
    return found


def copy_log(repo: str, src: str, short_commit: str) -> str | None:
    """Copy a slot's run log to ``.autoresearch/logs/NNNN-<short>.log`` (next number)."""
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


def write_json(path: Path, data: dict) -> None:
    """Atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
