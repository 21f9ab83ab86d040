"""Propose ahead (``--ahead K``): the scheduler's rules for what the proposal lane (arcore.lane)
hands back. Pure-ish helpers; the state is the scheduler's journal.

While candidates run, the lane makes up to K proposals for the runs after them, on the
current best. The journal (``waiting`` in loop.json) holds the
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
* it was rejected (no commit, other files, ...): its crash row is written when a slot takes it.

Nothing waiting, the lane idle and no run going: the scheduler proposes in the foreground,
exactly as with ``--ahead 0``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from arcore import ledger
from arcore.gitops import UNJUDGED, git_ok, keep_reachable, log, rebase_onto, short
from arcore.lane import Lane, forget_waiting, waiting_refs

RUNS = ".autoresearch/runs.jsonl"


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
