"""Propose ahead (``--ahead K``): the loop's side of the proposal lane (arcore.lane).

While a candidate runs, the lane makes up to K proposals for the runs after it, on the
current best (the running candidate's base). The journal (``waiting`` in loop.json) holds the
finished ones, oldest first, each kept reachable as ``refs/autoresearch/waiting/<sha>``. When
a run ends, the next candidate is the first waiting proposal:

* its base is still the best (the run was discarded or crashed): it is put on the branch as
  it is;
* its base was superseded (the run was kept): its train.py change is carried onto the new
  best by a 3-way merge of that file (``gitops.rebase_onto``); the old commit stays reachable
  under ``refs/autoresearch/unjudged/``;
* it no longer applies (a conflict, or the change is already in the new best): it is dropped
  and a new proposal is made on the new best; that is recorded as a ``reproposed`` object in
  runs.jsonl and counted on the status line (no results.tsv row: nothing ran);
* it was rejected (no commit, other files, ...): its crash row is written now, when no run is
  in flight (a row appended during a run would be a ledger change the judge refuses).

Nothing waiting and the lane idle: the loop proposes in the foreground, exactly as with
``--ahead 0``. The proposer's context names what is running and what is waiting.

This module holds no state of its own beyond the lane; the journal is the loop's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from arcore import ledger
from arcore.gitops import (UNJUDGED, current_branch, git, git_ok, head, keep_reachable, log,
                           rebase_onto, short)
from arcore.lane import WAITING as WAITING_PREFIX  # noqa: F401 (arcore.rounds_ahead)
from arcore.lane import Lane, forget_waiting, waiting_refs

RUNS = ".autoresearch/runs.jsonl"


def in_flight_section(running, waiting: list[str]) -> str:
    """The prompt's note on what is being tried right now ('' when nothing is); ``running``
    is one description, a list of them, or None."""
    running = [running] if isinstance(running, str) else list(running or [])
    if not running and not waiting:
        return ""
    lines = ["", "## In flight right now (propose something different)", ""]
    lines += [f"- running: {ledger.flatten(r)}" for r in running]
    lines += [f"- waiting to run: {ledger.flatten(w)}" for w in waiting]
    return "\n".join(lines) + "\n"


def onto_best(repo: str, item: dict, best: str) -> tuple[str, str, str]:
    """What a waiting proposal becomes now that the best is ``best``: (kind, commit, why).

    kind ``reject``: it was rejected (commit: what its crash row names); ``run``: commit is
    ready to run on ``best`` (the proposal itself, or its train.py change 3-way merged onto
    ``best``; the old commit kept as unjudged); ``reproposed``: it no longer applies (why);
    ``gone``: its commit no longer exists. Its waiting ref is dropped in every case but
    ``run`` (the caller drops it once the commit has a place)."""
    commit, old_base = item.get("commit") or "", item.get("base") or ""
    if not commit or not git_ok(repo, "cat-file", "-e", f"{commit}^{{commit}}"):
        return "gone", "", ""
    if item.get("reject"):
        forget_waiting(repo, commit)
        return "reject", commit if commit != old_base else best, item["reject"]
    if old_base == best:
        return "run", commit, ""
    new, why = rebase_onto(repo, commit, old_base, best)
    keep_reachable(repo, UNJUDGED, commit)
    forget_waiting(repo, commit)
    if new is None:
        return "reproposed", commit, why
    log(f"the best moved to {short(best)}: waiting proposal {short(commit)} rebased onto it "
        f"as {short(new)}")
    return "run", new, ""


def record_reproposed(repo: str, state: dict, item: dict, onto: str, why: str) -> None:
    """A waiting proposal that no longer applies: a runs.jsonl event and a counter (the status
    line shows it); no results.tsv row, because nothing ran."""
    state["reproposed"] = int(state.get("reproposed", 0)) + 1
    record = {"event": "reproposed", "proposal": item.get("commit"), "base": item.get("base"),
              "onto": onto, "reason": why, "description": item.get("desc", ""),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if item.get("usage"):  # spent all the same (arcore.usage)
        record["proposer_usage"] = item["usage"]
    path = Path(repo) / RUNS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    log(f"re-proposing: waiting proposal {short(item.get('commit'))} "
        f"({ledger.flatten(item.get('desc', ''))}) no longer applies on the new best "
        f"{short(onto)}: {why}")


def absorb(lane: Lane, state: dict) -> bool:
    """Journal (into ``state['waiting']``) what the lane finished; True when anything did."""
    got = lane.take()
    for r in got:
        entry = {"base": r.base, "commit": r.commit, "desc": r.desc}
        if r.reason:
            entry["reject"] = r.reason
        if r.usage:
            entry["usage"] = r.usage
        state.setdefault("waiting", []).append(entry)
    return bool(got)


def settle_orphans(repo: str, state: dict) -> None:
    """At a restart: a waiting ref the journal does not list (the loop died between the lane's
    ref and the journal) is kept as unjudged, not run."""
    listed = {w.get("commit") for w in state.get("waiting") or []}
    for commit in waiting_refs(repo):
        if commit not in listed:
            keep_reachable(repo, UNJUDGED, commit)
            forget_waiting(repo, commit)


def drop_waiting(repo: str, state: dict) -> None:
    """A new command or the end of the loop: waiting proposals become unjudged refs."""
    for w in state.get("waiting") or []:
        commit = w.get("commit") or ""
        if commit and not w.get("reject") and git_ok(repo, "cat-file", "-e",
                                                      f"{commit}^{{commit}}"):
            keep_reachable(repo, UNJUDGED, commit)
        forget_waiting(repo, commit)
    state["waiting"] = []


class Ahead:
    """The lane plus the loop's rules for what it hands back (see the module doc)."""

    def __init__(self, loop, lane: Lane):
        self.loop = loop
        self.lane = lane
        self.running: str | None = None

    @property
    def state(self) -> dict:
        return self.loop.state

    def waiting(self) -> list[dict]:
        return self.state.setdefault("waiting", [])

    # -- journal ---------------------------------------------------------------

    def absorb(self) -> None:
        """Journal what the lane finished since the last look."""
        if absorb(self.lane, self.state):
            self.loop.save()

    def settle_orphans(self) -> None:
        settle_orphans(self.loop.repo, self.state)

    def drop_all(self) -> None:
        drop_waiting(self.loop.repo, self.state)

    # -- the next candidate ----------------------------------------------------

    def next_candidate(self):
        """The candidate to run next, on the branch (None: rejected, row written)."""
        loop = self.loop
        while True:
            loop.check_stop()
            self.absorb()
            if self.waiting():
                got = self.take_first()
                if got == "again":
                    continue
                return got
            if self.lane.busy:
                self.lane.wait(lambda: bool(loop.stop) or bool(self.lane.ready))
                continue
            return loop.propose()

    def take_first(self):
        loop, repo = self.loop, self.loop.repo
        item = self.waiting().pop(0)
        base = head(repo)
        kind, commit, why = onto_best(repo, item, base)
        if kind not in ("gone", "reproposed"):  # usage: the run's (or the row's) cost
            loop.state["proposer_usage"] = item.get("usage")
        if kind == "gone":
            loop.save()
            return "again"
        if kind == "reproposed":
            record_reproposed(repo, self.state, item, base, why)
            loop.save()
            return "again"
        if kind == "reject":
            loop.state["base"] = base
            loop.reject(why, commit, in_clone=True)
            return None
        now = current_branch(repo)
        if now != loop.branch or loop.dirty():
            keep_reachable(repo, UNJUDGED, commit)
            forget_waiting(repo, item["commit"])
            loop.save()
            loop.stop_unsafe(f"{'the branch was switched' if now != loop.branch else loop.dirty()}"
                             f"; nothing was reset (the waiting proposal is kept as "
                             f"{UNJUDGED}{short(commit)})")
        loop.phase("taking", base=base, candidate=commit)
        git(repo, "reset", "-q", "--keep", commit)
        forget_waiting(repo, item["commit"])
        return commit

    # -- filling the lane --------------------------------------------------------

    def fill(self, base: str, running: str) -> None:
        """Before a run: have the lane propose for the runs after it, on ``base``."""
        loop, o = self.loop, self.loop.opts
        self.running = running
        if self.lane.busy:
            return
        done, waiting = int(self.state.get("done", 0)), len(self.waiting())
        want = int(o.ahead) - waiting
        if o.max is not None:
            want = min(want, int(o.max) - done - 1 - waiting)
        deadline = self.state.get("deadline")
        if deadline is not None and time.time() >= float(deadline):
            want = 0
        if want > 0 and not loop.stop:
            self.lane.start(base, want, done + 2 + waiting)

    def in_flight(self, made: list[str]) -> str:
        return in_flight_section(self.running,
                                 [w.get("desc", "") for w in self.waiting()
                                  if not w.get("reject")] + made)

