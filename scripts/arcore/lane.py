"""The proposal lane: proposals for upcoming runs, made while a run goes on (``--ahead K``).

The lane runs the proposer in a background thread, one proposal at a time, each in its own
disposable clone (arcore.proposals) made at the base it was given (the standing best while the
run goes). It never writes the ledger, the journal or the user's tree: a finished proposal is
kept reachable in the repository (``refs/autoresearch/waiting/<sha>``, or ``rejected/<sha>``
for a rejection) and handed to the loop as a :class:`Ready`; the loop journals it, writes a
rejection's crash row once no run is in flight, and rebases a waiting proposal whose base was
superseded by a keep (see arcore.loop).

The lane's processes carry ``AUTORESEARCH_LOOP_TOKEN=<token>-lane``: the loop's cleanup after a
run (which kills every process carrying ``<token>``) leaves a proposer that is still thinking
alone, and a restart after SIGKILL kills both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from arcore import procs, proposals, usage
from arcore.gitops import REJECTED, git, keep_reachable, short, subject

WAITING = "refs/autoresearch/waiting/"
SUFFIX = "-lane"


@dataclass
class Ready:
    """One finished proposal of the lane."""

    base: str
    commit: str
    reason: str | None
    desc: str = ""
    usage: dict | None = None  # what the proposal cost (arcore.usage), when the CLI said


@dataclass
class Lane:
    """Proposals in a background thread. ``context(base, n, made)`` returns (facts, prompt
    text) for proposal ``n`` on ``base`` (``made``: descriptions of this batch so far)."""

    repo: str
    branch: str
    command: str
    timeout: float
    token: str
    log_path: str
    ledger_path: str
    context: Callable[[str, int, list[str]], tuple[dict, str]]
    env_for: Callable[[dict, str, int], dict]
    ready: list[Ready] = field(default_factory=list)
    thread: threading.Thread | None = None
    proc: subprocess.Popen | None = None
    stopping: int = 0
    error: BaseException | None = None
    base: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, base: str, count: int, first: int) -> bool:
        """Make ``count`` proposals on ``base`` (numbered from ``first``) unless busy."""
        if self.busy or count <= 0 or self.stopping:
            return False
        self.base = base
        self.thread = threading.Thread(target=self._batch, args=(base, count, first),
                                       daemon=True)
        self.thread.start()
        return True

    def take(self) -> list[Ready]:
        """The proposals finished since the last call (oldest first)."""
        with self.lock:
            out, self.ready = self.ready, []
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return out

    def wait(self, stop: Callable[[], bool], poll: float = 0.05) -> None:
        """Block until the lane is idle (or ``stop()`` says so)."""
        while self.busy and not stop():
            self.thread.join(timeout=poll)

    def signal(self, first: bool) -> None:
        """A stop: SIGTERM the proposer's group (SIGKILL on a second signal)."""
        self.stopping = self.stopping or 1
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with _quiet():
                os.killpg(proc.pid, signal.SIGTERM if first else signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop and wait: no lane process outlives the loop."""
        if self.busy:
            self.signal(True)
            deadline = time.monotonic() + 10
            while self.busy and time.monotonic() < deadline:
                self.thread.join(timeout=0.1)
            if self.busy:
                self.signal(False)
                self.thread.join(timeout=10)

    # -- the thread --------------------------------------------------------------

    def _batch(self, base: str, count: int, first: int) -> None:
        made: list[str] = []
        try:
            for i in range(count):
                if self.stopping:
                    return
                got = self._one(base, first + i, made)
                if got is None:
                    return
                with self.lock:
                    self.ready.append(got)
                if got.reason is None:
                    made.append(got.desc)
        except BaseException as exc:  # noqa: BLE001 (handed to the loop's thread)
            self.error = exc

    def _one(self, base: str, n: int, made: list[str]) -> Ready | None:
        facts, text = self.context(base, n, made)
        clone = proposals.open_clone(self.repo, self.branch, base, text, self.ledger_path)
        try:
            env = {**os.environ, **self.env_for(facts, base, n), **proposals.env(clone),
                   "AUTORESEARCH_LOOP_TOKEN": self.token + SUFFIX}
            # its own log while it thinks (lanes run at once), then appended whole to the
            # shared proposer.log; its usage is read from its own output only
            live = Path(self.log_path).with_name(f"proposer-{self.token[-6:]}-{n}.log")
            with open(live, "w", encoding="utf-8") as out:
                self.proc = subprocess.Popen(["bash", "-c", self.command], cwd=clone.path,
                                             env=env, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=out, start_new_session=True)
                code, timed_out = self._wait(self.proc)
            spent = usage.read_log(str(live), 0)
            with open(self.log_path, "a", encoding="utf-8") as whole, \
                    open(live, encoding="utf-8", errors="replace") as part:
                whole.write(f"\n=== proposal {n} on {short(base)} (ahead) at "
                            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
                shutil.copyfileobj(part, whole)
            live.unlink(missing_ok=True)
            if self.stopping:
                proposals.salvage(clone, REJECTED)
                return None
            reason, commit = proposals.collect(clone, code, timed_out, self.timeout)
            if reason is None:
                keep_reachable(self.repo, WAITING, commit)
                desc = subject(self.repo, commit)
            else:
                desc = reason
                if commit != base:
                    git(self.repo, "update-ref", f"{REJECTED}{commit}", commit, check=False)
            proposals.forget(self.repo, commit)
            return Ready(base, commit, reason, desc, spent)
        finally:
            self.proc = None
            proposals.drop(clone)

    def _wait(self, proc: subprocess.Popen) -> tuple[int, bool]:
        code, timed_out = procs.wait_group(proc, self.timeout, lambda: self.stopping)
        with _quiet():
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_tagged(self.token + SUFFIX)
        return code, timed_out


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


def _kill_tagged(token: str) -> None:
    """SIGKILL every process carrying ``AUTORESEARCH_LOOP_TOKEN=token`` (a proposer's
    background job that left its group)."""
    if not os.path.isdir("/proc"):
        return
    needle = f"AUTORESEARCH_LOOP_TOKEN={token}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def waiting_refs(repo: str) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(objectname)", WAITING, check=False)
    return out.split()


def forget_waiting(repo: str, commit: str) -> None:
    git(repo, "update-ref", "-d", f"{WAITING}{commit}", check=False)



@dataclass
class Lanes:
    """Several lanes, one proposer each at a time (so N slots are not fed by one proposer);
    the interface of one :class:`Lane`. Lane ``i`` tags its processes ``<token>-<i>-lane``."""

    lanes: list[Lane]

    @property
    def busy(self) -> bool:
        return any(lane.busy for lane in self.lanes)

    @property
    def in_flight(self) -> int:
        """Proposals being made or made and not yet taken. A lane's thread appends its
        proposal before it ends, so ``busy`` is read first: a finished one is never missed
        (one that just finished may count twice, for one tick: nothing extra is started)."""
        count = 0
        for lane in self.lanes:
            busy = lane.busy
            with lane.lock:
                count += busy + len(lane.ready)
        return count

    @property
    def ready(self) -> list[Ready]:
        return [r for lane in self.lanes for r in lane.ready]

    def start(self, base: str, count: int, first: int) -> int:
        """Up to ``count`` proposals on ``base``, one per idle lane; how many started."""
        started = 0
        for lane in self.lanes:
            if started >= count:
                break
            if not lane.busy and lane.start(base, 1, first + started):
                started += 1
        return started

    def take(self) -> list[Ready]:
        return [r for lane in self.lanes for r in lane.take()]

    def signal(self, first: bool) -> None:
        for lane in self.lanes:
            lane.signal(first)

    def shutdown(self) -> None:
        for lane in self.lanes:
            lane.signal(True)
        for lane in self.lanes:
            lane.shutdown()


def settle_live_logs(log_path: str) -> int:
    """At a start: the live logs a killed loop's lanes were writing (``proposer-*-N.log``
    beside ``log_path``) are appended to it, marked cut short, and removed; how many."""
    whole = Path(log_path)
    found = sorted(whole.parent.glob("proposer-*-*.log"))
    for live in found:
        with open(whole, "a", encoding="utf-8") as out, \
                open(live, encoding="utf-8", errors="replace") as part:
            out.write(f"\n=== {live.name} (cut short: the loop that ran it was killed) ===\n")
            shutil.copyfileobj(part, out)
        live.unlink(missing_ok=True)
    return len(found)


def lanes(count: int, token: str, **kw) -> Lanes:
    return Lanes([Lane(token=token if i == 0 else f"{token}-{i}", **kw)
                  for i in range(max(1, count))])
