"""Baseline repeats: top a track up to R runs of its baseline commit (--baseline-repeats R).

setup.sh and run-loop.sh both call ``top_up``: it counts the runs of the track's baseline commit
that results.tsv already holds (setup's own baseline, an earlier loop's repeats) and runs only the
missing ones, each through run-experiment.sh ``--rerun`` with a description that says it is a
repeat (``baseline repeat i/R``), so no report counts it as an idea. Then the sample std of all
the baseline's values is the track's ``noise_floor`` in session.json. Repeats are only possible
while HEAD is still the baseline commit (before the first kept idea); later, ``top_up`` says so
and runs nothing.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Callable

from arcore import ledger, session

REPEAT_WORDS = "baseline repeat"


def repeat_description(i: int, total: int) -> str:
    return f"{REPEAT_WORDS} {i}/{total} (a noise measurement, not an idea)"


def baseline_runs(track: list[dict]) -> tuple[str | None, list[float]]:
    """(the baseline commit, every measured value of it in the track)."""
    first = next((r for r in track if r["status"] == "keep" and r["val_bpb"] is not None), None)
    if first is None:
        return None, []
    commit = first["commit"]
    return commit, [r["val_bpb"] for r in track if r["commit"] == commit
                    and r["val_bpb"] is not None and r["status"] in ("keep", "discard")]


def needed(track: list[dict], total: int) -> int:
    _, values = baseline_runs(track)
    return max(0, total - len(values)) if values else 0


def noise_floor(values: list[float]) -> float | None:
    """The sample std of the baseline's values (None with fewer than two, or no spread)."""
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if len(finite) < 2:
        return None
    std = statistics.stdev(finite)
    return std if std > 0 else None


def track_of(repo: str) -> list[dict]:
    frozen = session.load(repo) or {}
    rows = ledger.read_ledger(os.path.join(repo, frozen.get("ledger") or "results.tsv"))
    return ledger.track_rows(rows, int(frozen.get("ledger_start", 0) or 0))


def top_up(repo: str, total: int, head: str, run_one: Callable[[str], dict | None],
           log: Callable[[str], None]) -> float | None:
    """Runs the missing repeats (``run_one(description)`` runs HEAD again and returns its row,
    or None); stores and returns the noise floor. ``head`` is HEAD's full sha."""
    if total < 2:
        return None
    track = track_of(repo)
    commit, values = baseline_runs(track)
    if commit is None:
        return None
    missing = max(0, total - len(values))
    if missing and not head.startswith(commit):
        log(f"--baseline-repeats {total}: the track has {len(values)} run(s) of its baseline "
            f"{commit}, but HEAD has moved past it; no repeats run (measure the noise of HEAD "
            f"with run-experiment.sh --rerun)")
        missing = 0
    for i in range(len(values) + 1, len(values) + missing + 1):
        row = run_one(repeat_description(i, total))
        if row is None:
            break
    _, values = baseline_runs(track_of(repo))
    floor = noise_floor(values)
    if floor is not None:
        session.update(repo, noise_floor=floor)
        log(f"noise floor: std {floor:.6f} over {len(values)} runs of the baseline {commit}")
    return floor
