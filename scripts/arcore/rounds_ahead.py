"""Parallel rounds' side of proposing ahead (arcore.lane) and of a moving best: the next
round's proposals, made while a round runs; waiting proposals rebased onto the round's winner
or re-proposed (arcore.ahead's rules, shared with the serial loop); and a run that beat its base
but lost its round, rebased onto the winner to run again. Holds no state: the journal is the
rounds' (``waiting`` in parallel.json).
"""

from __future__ import annotations

import time
from pathlib import Path

from arcore import ahead as ahead_mod
from arcore import gitops, ledger, loop
from arcore.gitops import keep_reachable, log, reset_worktree, short


class RoundsAhead:
    """Helpers of an ``arcore.parallel.Rounds`` (``r``) for proposals made ahead."""

    def __init__(self, rounds):
        self.r = rounds

    def from_waiting(self, w, base: str) -> tuple[str | None, str] | None:
        """The next proposal made ahead, on ``base`` (rebased if a keep superseded its base),
        checked out in ``w``'s worktree; None when there is none (propose now)."""
        st = self.r.state
        while True:
            self.r.check_stop()
            if self.r.lane is not None and ahead_mod.absorb(self.r.lane, st):
                self.r.save()
            if st.get("waiting"):
                item = st["waiting"].pop(0)
                kind, commit, why = ahead_mod.onto_best(self.r.repo, item, base)
                self.r.save()
                if kind == "reproposed":
                    ahead_mod.record_reproposed(self.r.repo, st, item, base, why)
                    self.r.save()
                if kind == "reject":
                    return why, commit
                if kind == "run":
                    reset_worktree(w.path, w.branch, commit)
                    return None, commit
                continue
            if self.r.lane is not None and self.r.lane.busy:
                self.r.lane.wait(lambda: bool(self.r.stop) or bool(self.r.lane.ready))
                continue
            return None

    def fill_lane(self, base: str, running: int) -> None:
        """While this round runs: the lane proposes the next round's candidates on ``base``."""
        o, st = self.r.opts, self.r.state
        if self.r.lane is None or self.r.lane.busy or self.r.stop:
            return
        done, waiting = int(st.get("done", 0)), len(st.get("waiting") or [])
        want = int(o.ahead) - waiting
        if o.max is not None:
            want = min(want, int(o.max) - done - running - waiting)
        deadline = st.get("deadline")
        if deadline is not None and time.time() >= float(deadline):
            want = 0
        if want > 0:
            self.r.lane.start(base, want, done + running + waiting + 1)

    def in_flight(self, made: list[str]) -> list[str]:
        """What the workers of the round in flight and the waiting proposals are trying."""
        rnd = self.r.state.get("round") or {}
        running = [f"{c.get('worker')}: {ledger.flatten(c.get('desc', ''))}"
                   for c in rnd.get("candidates", []) if not c.get("reject") and not c.get("dup")]
        waiting = [f"waiting: {ledger.flatten(w.get('desc', ''))}"
                   for w in self.r.state.get("waiting") or [] if not w.get("reject")]
        return running + waiting + [f"waiting: {ledger.flatten(m)}" for m in made]

    def lane_context(self, base: str, n: int, made: list[str]) -> tuple[dict, str]:
        """A proposal for the next round, made while this one runs."""
        o = self.r.opts
        facts = loop.context_facts(self.r.repo, self.r.track(), base, n, o.plateau,
                                   o.metric or "val_bpb", o.higher_is_better)
        template_path = Path(o.prompt) if o.prompt else loop.PROMPT_TEMPLATE
        template = template_path.read_text(encoding="utf-8") if template_path.exists() else \
            "Improve {{metric}} ({{direction}} is better) by editing train.py; commit once.\n"
        others = "\n".join(f"- {line}" for line in self.in_flight(made)) or "- (none)"
        text = loop.render_prompt(template, facts) + (
            f"\n## This round: {len(self.r.workers)} experiments run at once\n\n"
            f"You propose for the next round, while this one runs. The other workers of this "
            f"round, and the proposals waiting for the next, are trying:\n{others}\n"
            "Propose something different from them.\n")
        return facts, text

    def lane_env(self, facts: dict, base: str, n: int) -> dict:
        worker = self.r.workers[(n - 1) % len(self.r.workers)].id if self.r.workers else ""
        return {"AUTORESEARCH_BASE": base, "AUTORESEARCH_BEST": str(facts["best"]),
                "AUTORESEARCH_ITERATION": str(n),
                "AUTORESEARCH_PLATEAU": "1" if facts["plateau"] else "0",
                "AUTORESEARCH_METRIC": facts["metric"],
                "AUTORESEARCH_DIRECTION": facts["direction"],
                "AUTORESEARCH_WORKER": worker,  # the worker it most likely runs on
                "AUTORESEARCH_ROUND_OTHERS": "\n".join(self.in_flight([]))}

    def beaten_keeps(self, rnd: dict, verdicts: list, winner: str | None) -> dict:
        """Runs of the round that beat their base but lost to the round's winner: each is
        rebased onto the winner (3-way merge of train.py) and queued to run again first (a
        waiting entry), not thrown away on a comparison made stale by the keep. Journaled in
        the round (``again``: old commit -> rebased commit), so a resumed settle does the
        same. Not with --confirm (the winner may yet be withdrawn) or a moved branch."""
        if "again" in rnd:
            return rnd["again"]
        again: dict = {}
        base = rnd["base"]
        if winner and winner != base and not self.r.opts.confirm and rnd["kind"] == "round":
            for cand, verdict in zip(rnd["candidates"], verdicts):
                res = cand.get("result") or {}
                if cand.get("rerun") or cand["commit"] == winner or verdict != "discard" \
                        or res.get("status") != "keep":
                    continue
                new, why = gitops.rebase_onto(self.r.repo, cand["commit"], base, winner)
                if new is None:
                    log(f"{cand['worker']}: {short(cand['commit'])} beat its base but not "
                        f"{short(winner)}, and {why}: not run again")
                    continue
                again[cand["commit"]] = new
                keep_reachable(self.r.repo, ahead_mod.WAITING_PREFIX, new)
                entry = {"base": winner, "commit": new, "again": cand["commit"],
                         "desc": f"{ledger.flatten(cand['desc'])} (rebased onto "
                                 f"{short(winner)})"}
                waiting = self.r.state.setdefault("waiting", [])
                if not any(w.get("commit") == new for w in waiting):
                    waiting.insert(len([w for w in waiting if w.get("again")]), entry)
        rnd["again"] = again
        return again
