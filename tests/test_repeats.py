"""Baseline repeats (arcore.repeats) and a --rerun labelled as a repeat: run-loop.sh
--baseline-repeats R tops a track up even when its baseline already ran (setup.sh's, the
documented path); a rerun of the best says it is a repeat and says when the bar moves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from arcore import ledger, repeats
from test_loop import env, rows, run_loop, target  # noqa: F401  (pytest fixtures)

ROOT = Path(__file__).resolve().parents[1]
RUN_EXPERIMENT = ROOT / "scripts" / "run-experiment.sh"


def track(*values_statuses_commits):
    return [{"commit": c, "val_bpb": v, "status": s} for v, s, c in values_statuses_commits]


def test_repeats_needed_counts_the_baseline_runs_the_track_already_has():
    t = track((1.0, "keep", "aaaaaaa"), (1.01, "discard", "aaaaaaa"), (0.9, "keep", "bbbbbbb"))
    assert repeats.baseline_runs(t) == ("aaaaaaa", [1.0, 1.01])
    assert repeats.needed(t, 3) == 1 and repeats.needed(t, 2) == 0
    assert repeats.needed([], 3) == 0


def test_a_repeat_description_says_it_is_not_an_idea():
    assert "not an idea" in repeats.repeat_description(2, 3)
    assert repeats.repeat_description(2, 3).startswith("baseline repeat 2/3")


def judge(repo: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_EXPERIMENT), "--repo", str(repo), "--json", *extra,
                           "--cmd", "python3 train.py"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_loop_tops_up_a_baseline_that_setup_already_ran(target, env, tmp_path):  # noqa: F811
    values = tmp_path / "values"
    values.write_text("1.00 1.02 1.04 0.90")
    env.update(STANDIN_VALUES=str(values), FAKE_AGENT_VALUES="0.90")
    first = judge(target, env, "--desc", "baseline")  # what setup.sh does
    assert first.returncode == 0, first.stderr
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "1",
                    "--baseline-repeats", "3")
    assert done.returncode == 0, done.stderr
    got = rows(target)
    assert len({r["commit"] for r in got[:3]}) == 1 and len(got) == 4
    assert all("baseline repeat" in r["description"] for r in got[1:3])
    floor = json.loads((target / ".autoresearch" / "session.json").read_text())["noise_floor"]
    assert floor == pytest.approx(0.02)


def test_a_rerun_of_the_best_is_a_labelled_repeat_and_says_the_bar_moved(target, env, tmp_path):  # noqa: F811
    values = tmp_path / "values"
    values.write_text("1.00 1.10")
    env.update(STANDIN_VALUES=str(values))
    assert judge(target, env, "--desc", "baseline").returncode == 0
    again = judge(target, env, "--rerun")
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert "repeat of" in out["description"] and "not an idea" in out["description"]
    assert out["reverted"] is False
    assert "the bar moved" in again.stderr and "1.050000" in again.stderr
    row = ledger.read_ledger(str(target / "results.tsv"))[-1]
    assert "repeat of" in row["description"]
