"""Where the scheduler's candidates come from (a part of arcore.scheduler.Scheduler).

The proposer, in a fresh disposable clone (arcore.proposals): in the foreground when a slot is
free and nothing waits, or ahead in the lane (arcore.lane) while runs go; a queue patch, applied
in a clone. What comes back is a waiting item; ``take`` turns it into a run on a free slot: a
proposal whose base a keep superseded is rebased onto the best (arcore.ahead), a rejection
becomes the scheduler's own ``crash`` row, a train.py already tried in the track is not run.
The prompt says what runs and what waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from arcore import ahead, context, journal, ledger, procs, proposals, slots, usage
from arcore.gitops import (REJECTED, LoopError, apply_patch, git_ok, keep_reachable,
                           list_patches, log, short, subject)
from arcore.lane import _kill_tagged as kill_tagged
from arcore.lane import WAITING, forget_waiting

INTERRUPTED, FAILED = 130, 1
DUPLICATES_MAX = 3  # with --max-crashes 0: proposals in a row that repeat a tried train.py
PROPOSER_LOG = ".autoresearch/proposer.log"


class Intake:
    """Candidates in: the foreground proposer, a queue patch, the lane's proposals."""

    def running(self) -> list[str]:
        return [slots.tagged(sid, j.get("desc", ""), self.many)
                for sid, j in sorted(self.jobs.items())]

    def waiting_descs(self, made: list[str] | None = None) -> list[str]:
        return [w.get("desc", "") for w in self.waiting if not w.get("reject")] + (made or [])

    def lane_context(self, base: str, n: int, made: list[str]) -> tuple[dict, str]:
        return context.prompt(self.repo, self.opts, base, n, self.running(),
                              self.waiting_descs(made))

    def lane_env(self, facts: dict, base: str, n: int) -> dict:
        return {**context.proposer_env(facts, base, n),
                "AUTORESEARCH_ROUND_OTHERS": "\n".join(self.running() + self.waiting_descs())}

    def propose_now(self, base: str) -> dict | None:
        """The proposer in a fresh clone, in the foreground: a waiting item (a candidate or a
        rejection) or None when stopped."""
        o, repo = self.opts, self.repo
        n = int(self.state.get("done", 0)) + self.candidates_in_flight() + 1
        facts, text = context.prompt(repo, o, base, n, self.running(), self.waiting_descs())
        clone = proposals.open_clone(repo, self.branch, base, text, self.ledger_path)
        self.step("proposing", clone=clone.path)
        token = self.state["token"] + journal.LANE_SUFFIX
        env = {**os.environ, **proposals.env(clone), **self.lane_env(facts, base, n),
               journal.TOKEN_ENV: token}
        if facts["plateau"]:
            log(f"plateau: {facts['failures']} experiments without a keep; "
                "asking the proposer to change direction")
        log_path = str(Path(repo) / PROPOSER_LOG)
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(f"\n=== proposal {n} on {short(base)} at "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
            out.flush()
            offset = out.tell()
            proc = subprocess.Popen(["bash", "-c", o.propose], cwd=clone.path, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
            self.child = proc
            self.state["child"] = {"pid": proc.pid, "pgid": proc.pid, "kind": "proposer"}
            self.save()
            if self.stop:
                journal.signal_group(proc.pid, signal.SIGTERM)
            code, timed_out = procs.wait_group(proc, o.propose_timeout, lambda: bool(self.stop))
        self.child = None
        journal.signal_group(proc.pid, signal.SIGKILL)
        kill_tagged(token)
        spent = usage.read_log(log_path, offset)
        if self.stop:
            proposals.salvage(clone, REJECTED)
            proposals.drop(clone)
            self.idle()
            raise LoopError(INTERRUPTED, "stopped while proposing; the proposal was dropped")
        reason, commit = proposals.collect(clone, code, timed_out, o.propose_timeout)
        return self.received(clone, reason, commit, spent)

    def apply_next(self, base: str) -> dict | None | bool:
        """Queue mode: the next patch applied in a fresh clone. False: the queue is empty."""
        taken = set(self.queue_done()) | {j.get("patch") for j in self.jobs.values()}
        patch = next((p for p in list_patches(self.opts.queue) if p.name not in taken), None)
        if patch is None:
            return False
        clone = proposals.open_clone(self.repo, self.branch, base)
        self.step("applying", clone=clone.path)
        reason, commit = proposals.apply(clone, patch, apply_patch)
        return self.received(clone, reason, commit, None, patch.name)

    def received(self, clone, reason: str | None, commit: str, spent: dict | None,
                 patch: str | None = None) -> dict:
        try:
            item = {"base": clone.base, "commit": commit, "patch": patch, "usage": spent}
            if reason:
                if commit != clone.base and git_ok(self.repo, "cat-file", "-e",
                                                   f"{commit}^{{commit}}"):
                    keep_reachable(self.repo, REJECTED, commit)
                item["reject"] = reason
            else:  # reachable until a slot has it (a restart finds an orphan ref: unjudged)
                keep_reachable(self.repo, WAITING, commit)
                item["desc"] = subject(self.repo, commit)
            return item
        finally:
            proposals.forget(self.repo, commit)
            proposals.drop(clone)
            self.idle()

    def reject(self, reason: str, commit: str, item: dict, slot: str = "") -> None:
        self.step("rejecting", reject={"reason": reason, "commit": commit, "slot": slot,
                                       "patch": item.get("patch"), "usage": item.get("usage"),
                                       "rows_before": context.row_count(self.repo)})
        self.finish_reject()

    def finish_reject(self) -> None:
        r = self.state.get("reject") or {}
        self.hook("appending")
        commit = short(r.get("commit") or self.state.get("best"))
        desc = slots.tagged(r.get("slot") or "", self.describe(r.get("reason", "proposal "
                                                                        "rejected")), self.many)
        if context.row_count(self.repo) <= int(r.get("rows_before", 0)):
            ledger.append_row(self.ledger_path, ledger.format_row(
                commit, None, None, "crash", desc, ledger.read_header(self.ledger_path)))
            record = usage.rejected_record(r.get("usage"), commit, desc,
                                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if record:
                self.append_run(record)
        self.count({"kind": "candidate", "patch": r.get("patch")})
        self.verdict, self.value = "crash", None
        log(f"crash: {r.get('reason', '')}")
        self.idle()
        self.report()

    def tried(self) -> set[str]:
        """train.py blobs already run in the track: this loop's runs, and every row but a
        crash (a rejected proposal's crash row names a commit that never ran)."""
        rows = [r for r in self.track() if r["status"] != "crash"]
        return set(self.state.get("tried", [])) | slots.tried_blobs(self.repo, rows)

    def take(self, slot, item: dict) -> bool:
        """A waiting item onto ``slot``: rebased onto the best if its base was superseded, a
        rejection's row, a duplicate dropped; True when a run started."""
        best = self.state["best"]
        kind, commit, why = ahead.onto_best(self.repo, item, best)
        if kind == "gone":
            return False
        if kind == "reproposed":
            ahead.record_reproposed(self.repo, self.state, item, best, why)
            self.save()
            return False
        if kind == "reject":
            self.reject(why, commit, item, slot.id)
            return False
        blob = slots.blob_of(self.repo, commit)
        if blob in self.tried() and not item.get("again"):  # a re-run is run again on purpose
            keep_reachable(self.repo, REJECTED, commit)
            forget_waiting(self.repo, item.get("commit") or "")
            log(f"{short(commit)} has the same train.py as an experiment already tried in this "
                "track; not run again")
            self.append_run({"event": "duplicate", "commit": commit,
                             "description": item.get("desc", ""),
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            self.count({"kind": "duplicate", "patch": item.get("patch")})  # not run: not counted
            dups = self.state["duplicates_in_a_row"] = \
                int(self.state.get("duplicates_in_a_row", 0)) + 1
            if dups >= (self.opts.max_crashes or DUPLICATES_MAX):  # --max-crashes 0 too
                self.halt = LoopError(FAILED, f"stopping after {dups} proposals in a row that "
                                              "repeat an experiment already tried")
            self.save()
            return False
        self.state["duplicates_in_a_row"] = 0
        desc = item.get("desc") or subject(self.repo, commit)
        job = {"commit": commit, "base": best, "kind": "candidate", "patch": item.get("patch"),
               "desc": desc if item.get("again") or item.get("described") else
               self.describe(desc), "usage": item.get("usage"), "blob": blob,
               "again": item.get("again")}
        if not self.start(slot, job):
            return False  # the harness changed: the proposal stays reachable (its ref)
        forget_waiting(self.repo, item.get("commit") or "")
        return True

    def absorb(self) -> None:
        if self.lane is not None and ahead.absorb(self.lane, self.state):
            self.save()

    def fill_lane(self) -> None:
        """While runs go: the lane proposes the next ones on the current best."""
        o, st = self.opts, self.state
        if self.lane is None or self.stop or self.halt or not self.jobs:
            return
        done, waiting = int(st.get("done", 0)), len(self.waiting) + self.lane.in_flight
        want = int(o.ahead) - waiting
        if o.max is not None:
            want = min(want, int(o.max) - done - self.candidates_in_flight() - waiting)
        deadline = st.get("deadline")
        if deadline is not None and time.time() >= float(deadline):
            want = 0
        if want > 0:
            self.lane.start(st["best"], want, done + self.candidates_in_flight() + waiting + 1)
