"""Noise-aware acceptance (a part of arcore.scheduler.Scheduler), with any number of slots.

* ``--baseline-repeats R``: the track's baseline runs again until it has R runs, as many at
  once as there are slots (rows labelled as repeats, never counted as ideas); their std is the
  noise floor in session.json (arcore.repeats, shared with setup.sh).
* ``--confirm K``: a keep whose gain over the previous best is within the floor is held (its
  row is written, the branch does not move) while its K re-runs run on the free slots; no other
  candidate starts meanwhile, and a keep that ends meanwhile is parked. When they are in, the
  branch is fast-forwarded only if the mean of its runs still beats the previous best; else a
  ``discard`` row ("not confirmed", value: the mean) withdraws it. Then the parked keeps are
  decided on the outcome. Resumable: the re-runs are counted from the ledger.
"""

from __future__ import annotations

import re
import statistics

from arcore import context, ledger, repeats, session, slots
from arcore.gitops import DISCARDED, LoopError, current_branch, head, keep_reachable, log, short

KEPT, UNSAFE = "refs/autoresearch/kept/", 4
_CONFIRM_LABEL = re.compile(r"\(confirm (\d+)/\d+\)")


class Noise:
    """Repeats of the baseline and confirmation of a within-noise keep."""

    def confirm_job(self) -> dict | None:
        """The next re-run a pending confirmation needs (None: none now)."""
        c = self.state.get("confirm")
        if not c:
            return None
        got = self.confirm_rows(c)
        running = [j for j in self.jobs.values() if j.get("kind") == "confirm"]
        if any(r["status"] == "crash" for r in got) or len(got) + len(running) >= int(c["k"]) + 1:
            return None
        # the first label no row and no running re-run has: re-runs end in any order, and
        # one killed by a restart left no row, so its label goes to the run that replaces it
        used = {int(m) for text in [r["description"] for r in got] + [j["desc"] for j in running]
                for m in _CONFIRM_LABEL.findall(text)}
        i = next(n for n in range(1, int(c["k"]) + 2) if n not in used)
        return {"commit": c["commit"], "base": self.state["best"], "kind": "confirm",
                "desc": f"{c['desc']} (confirm {i}/{c['k']})"}

    def confirm_rows(self, c: dict) -> list[dict]:
        return [r for r in context.rows_after(self.repo, int(c["rows_start"]))
                if r["commit"] and c["commit"].startswith(r["commit"])
                and "not confirmed" not in r["description"]]

    def confirm_due(self) -> bool:
        c = self.state.get("confirm")
        if not c or any(j.get("kind") == "confirm" for j in self.jobs.values()):
            return False
        got = self.confirm_rows(c)
        return any(r["status"] == "crash" for r in got) or len(got) >= int(c["k"]) + 1

    def resolve_confirm(self) -> None:
        """Every re-run is in: fast-forward to the held keep, or withdraw it with a row."""
        c = self.state["confirm"]
        got = self.confirm_rows(c)
        values = [r["val_bpb"] for r in got]
        failed = any(r["status"] == "crash" for r in got) or None in values or not values
        mean = None if failed else statistics.fmean(values)
        tip = head(self.repo)
        if current_branch(self.repo) != self.branch or tip not in (c["base"], c["commit"]):
            self.state["confirm"] = None  # the user moved the branch: nothing is applied
            keep_reachable(self.repo, KEPT, c["commit"])
            self.save()
            self.halt = LoopError(UNSAFE, f"the session branch moved while "
                                          f"{short(c['commit'])} was being confirmed (HEAD "
                                          f"{short(tip)}): nothing applied (kept as "
                                          f"{KEPT}{c['commit']}); check the branch, then start "
                                          "the loop again")
            return
        if tip == c["commit"] or context.beats(mean, c["prev_best"],
                                               self.opts.higher_is_better):
            if tip != c["commit"]:  # a restart after the fast-forward: already confirmed
                log(f"confirmed: mean {mean:.6f} over {len(values)} runs beats "
                    f"{c['prev_best']:.6f}")
            self.fast_forward(c["commit"])
            self.verdict, self.value = "keep", mean
            self.state["confirm"] = None
            self.save()
            self.report()
        else:
            self.step("withdrawing", withdraw={"mean": mean, "runs": len(values),
                                               "rows_before": context.row_count(self.repo)})
            self.finish_withdraw()
        self.settle_parked()

    def settle_parked(self) -> None:
        """The keeps that ended during the confirmation, decided now on its outcome; each
        stays in the journal until its row is written (a restart decides it again)."""
        while self.state.get("parked"):
            job = self.state["parked"][0]
            if not job.get("counted"):
                job.pop("decision", None)
            self.settle(None, job)
            self.state["parked"].pop(0)
            self.save()

    def finish_withdraw(self) -> None:
        c, w = self.state["confirm"], self.state.get("withdraw") or {}
        mean = w.get("mean")
        shown = "a crash" if mean is None else f"mean {mean:.6f}"
        desc = (f"{c['desc']} (not confirmed: {shown} over {w.get('runs', 0)} runs vs best "
                f"{c['prev_best']:.6f})")
        desc = slots.tagged(c.get("slot") or "", desc, self.many)
        keep_reachable(self.repo, DISCARDED, c["commit"])
        if context.row_count(self.repo) <= int(w.get("rows_before", 0)):
            ledger.append_row(self.ledger_path, ledger.format_row(
                short(c["commit"]), mean, c.get("memory_gb"), "discard", desc,
                ledger.read_header(self.ledger_path)))
        log(f"not confirmed: {shown} over {w.get('runs', 0)} runs does not beat "
            f"{c['prev_best']:.6f}; {short(c['commit'])} withdrawn (the branch stays at "
            f"{short(self.state.get('best'))})")
        self.verdict, self.value = "discard", mean
        self.state["confirm"] = None
        self.idle()
        self.report()

    def repeat_baseline(self) -> None:
        """--baseline-repeats R: the track's baseline runs again until it has R runs (as many
        at once as there are slots; rows labelled as repeats, never counted as ideas); their
        std is the noise floor (arcore.repeats, shared with setup.sh)."""
        total = int(self.opts.baseline_repeats or 1)
        if total < 2:
            return
        best = self.state["best"]
        commit, values = repeats.baseline_runs(self.track())
        if commit is None:
            return
        if len(values) < total and not best.startswith(commit):
            log(f"--baseline-repeats {total}: the track has {len(values)} run(s) of its "
                f"baseline {commit}, but HEAD has moved past it; no repeats run (measure the "
                "noise of HEAD with run-experiment.sh --rerun)")
            return
        while True:
            have = len(repeats.baseline_runs(self.track())[1])
            if have >= total:
                break
            self.check_stop()
            rows_before = context.row_count(self.repo)
            for i, slot in zip(range(have + 1, total + 1), self.slots):
                self.start(slot, {"commit": best, "base": best, "kind": "repeat",
                                  "desc": self.describe(repeats.repeat_description(i, total))})
            self.drain()
            self.raise_halt()
            self.check_stop()
            if not any(r["status"] != "crash" for r in context.rows_after(self.repo,
                                                                          rows_before)):
                break  # the repeats crashed: no floor from them
        _, values = repeats.baseline_runs(self.track())
        floor = repeats.noise_floor(values)
        if floor is not None:
            session.update(self.repo, noise_floor=floor)
            self.saw_session()
            log(f"noise floor: std {floor:.6f} over {len(values)} runs of the baseline "
                f"{commit}")
