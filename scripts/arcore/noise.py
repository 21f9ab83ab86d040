"""Noise-aware acceptance for parallel rounds: ``--baseline-repeats R`` and ``--confirm K``
with any number of workers (the serial loop has its own, in arcore.loop).

* Baseline repeats: after the baseline, R-1 more runs of the base commit (``--rerun``), as
  many at once as there are workers; each is a row (judged by run-experiment.sh, never
  reverted); the sample std of the baseline's values is stored as ``noise_floor`` in
  session.json. Resumable: the runs already in the ledger count.
* Confirmation: a round's winner whose gain over the best before the round is within the
  floor is not fast-forwarded yet. It is re-run until it has K+1 rows (at once on the workers;
  rows too, not counted as experiments); the branch is fast-forwarded to it only if the mean
  of its values still beats that best, else a ``discard`` row (value: the mean, "not
  confirmed") withdraws it and it is kept as ``refs/autoresearch/discarded/<sha>``. The
  journal's ``confirm`` entry makes it resumable (the re-runs in the ledger count).
"""

from __future__ import annotations

import statistics

from arcore import ledger, session
from arcore.gitops import DISCARDED, head, keep_reachable, log, reset_worktree, short


def rows_of(repo_rows: list[dict], commit: str) -> list[dict]:
    return [r for r in repo_rows if r["commit"] and commit.startswith(r["commit"])]


def beats(value: float | None, best: float | None, higher: bool) -> bool:
    if value is None:
        return False
    return best is None or (value > best if higher else value < best)


def floor_of(repo: str) -> float | None:
    floor = (session.load(repo) or {}).get("noise_floor")
    if not isinstance(floor, (int, float)) or isinstance(floor, bool) or floor <= 0:
        return None
    return float(floor)


def rerun_round(rounds, base: str, commit: str, descs: list[str]) -> None:
    """One round of re-runs of ``commit`` (one per description, at most one per worker)."""
    rnd = rounds.new_round(base, kind="rerun")
    pairs = list(zip(rounds.workers, descs))
    for w, desc in pairs:
        reset_worktree(w.path, w.branch, commit)
        rnd["candidates"].append({"worker": w.id, "commit": commit, "desc": desc,
                                  "patch": None, "reject": None, "dup": False, "result": None,
                                  "rerun": True})
    rounds.save()
    for (w, _), cand in zip(pairs, rnd["candidates"]):
        rounds.start_run(w, cand, rnd)
    rounds.wait_runs(rnd)
    rounds.finish_round(rnd)


def repeat_baseline(rounds) -> None:
    """--baseline-repeats R: the missing baseline runs, then the noise floor."""
    repeats = int(rounds.opts.baseline_repeats or 1)
    track = rounds.track()
    if repeats < 2 or not track or track[0]["status"] != "keep":
        return
    base_short = track[0]["commit"]
    if any(not r["commit"] or r["commit"] != base_short for r in track):
        return  # experiments have begun: the repeats are over
    base = head(rounds.repo)
    if not base or not base.startswith(base_short):
        return
    while True:
        have = len(rows_of(rounds.track(), base))
        if have >= repeats:
            break
        rounds.check_stop()
        count = min(len(rounds.workers), repeats - have)
        rerun_round(rounds, base, base, [rounds.describe(f"baseline repeat {have + 1 + i}/"
                                                         f"{repeats}") for i in range(count)])
    values = [r["val_bpb"] for r in rows_of(rounds.track(), base)
              if r["status"] != "crash" and r["val_bpb"] is not None]
    if len(values) >= 2:
        floor = statistics.stdev(values)
        session.update(rounds.repo, noise_floor=floor)
        log(f"noise floor: std {floor:.6f} over {len(values)} baseline runs")


def hold(rounds, rnd: dict, winner: str) -> bool:
    """In settle, before the fast-forward: True (and the confirmation journaled) when the
    winner's gain is within the noise floor and --confirm K asks for re-runs."""
    o = rounds.opts
    if not o.confirm or rnd.get("kind") != "round":
        return False
    floor, prev = floor_of(rounds.repo), rnd.get("prev_best")
    cand = next((c for c in rnd["candidates"] if c["commit"] == winner and c.get("result")),
                None)
    value = (cand or {}).get("result", {}).get("value")
    if floor is None or prev is None or value is None or abs(prev - value) > floor:
        return False
    rounds.state["confirm"] = {"commit": winner, "base": rnd["base"], "prev_best": prev,
                               "k": int(o.confirm), "desc": cand["desc"],
                               "worker": cand["worker"], "rows_start": rnd["rows_before"],
                               "memory_gb": cand["result"].get("memory_gb")}
    rounds.save()
    return True


def confirm(rounds) -> None:
    """Run the journaled confirmation to its end: fast-forward, or withdraw with a row."""
    c = rounds.state["confirm"]
    commit, base, k = c["commit"], c["base"], int(c["k"])
    higher = rounds.opts.higher_is_better
    path = rounds.ledger_path
    while True:
        got = rows_of(ledger.read_ledger(path)[int(c["rows_start"]):], commit)
        got = [r for r in got if "not confirmed" not in r["description"]]
        failed = any(r["status"] == "crash" for r in got)
        if failed or len(got) >= k + 1 or head(rounds.repo) != base:
            break
        rounds.check_stop()
        need = min(len(rounds.workers), k + 1 - len(got))
        rerun_round(rounds, base, commit, [f"{c['desc']} (confirm {len(got) + i}/{k})"
                                           for i in range(need)])
    values = [r["val_bpb"] for r in got]
    mean = None if failed or not values or None in values else statistics.fmean(values)
    if head(rounds.repo) == base and beats(mean, c["prev_best"], higher):
        log(f"confirmed: mean {mean:.6f} over {len(values)} runs beats {c['prev_best']:.6f}")
        rounds.fast_forward(commit, base)
        rounds.verdict, rounds.value = "keep", mean
    else:
        shown = "a crash" if mean is None else f"mean {mean:.6f}"
        text = (f"{c['desc']} (not confirmed: {shown} over {len(values)} runs vs best "
                f"{c['prev_best']:.6f})")
        desc = f"[{c['worker']}] {ledger.flatten(text)}"
        present = any(r["description"] == desc for r in ledger.read_ledger(path))
        keep_reachable(rounds.repo, DISCARDED, commit)
        if not present:
            line = ledger.format_row(short(commit), mean, c.get("memory_gb"), "discard", desc,
                                     ledger.read_header(path))
            ledger.append_row(path, line)
        log(f"not confirmed: {shown} does not beat {c['prev_best']:.6f}; "
            f"{short(commit)} withdrawn (the branch stays at {short(base)})")
        rounds.verdict, rounds.value = "discard", mean
    rounds.state["confirm"] = None
    rounds.save()
