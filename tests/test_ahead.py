"""Propose ahead (--ahead K): the next proposal is made while a run goes, and the judge's
decisions stay right when the best moves under a waiting proposal.

The stand-in train.py's value is VAL_BPB plus five knobs A..E on lines far apart (a change of
one knob applies on any base that changed another). The proposer is a script driven by a plan
(one line per call: ``KNOB VALUE`` or ``none``); it records, per call, its base, whether a run
was in flight and the context it got. A run can be held until a proposer has started
(STANDIN_HOLD names the file to wait for), so "made while a run goes" is deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from arcore import journal, ledger
from scratchrepo import KNOB_LINES, PRINTED, git, live_tagged, make_repo

ROOT = Path(__file__).resolve().parent.parent
RUN_LOOP = ROOT / "scripts" / "run-loop.sh"
WAIT = 60.0

STANDIN = '''"""Stand-in train.py with knobs."""
import os, sys, time
VAL_BPB = 1.000000
''' + KNOB_LINES + '''marks = os.environ.get("STANDIN_MARKS")
if marks:
    open(os.path.join(marks, "running"), "w").close()
hold = os.environ.get("STANDIN_HOLD")
deadline = time.time() + 60
while hold and not os.path.exists(hold) and time.time() < deadline:
    time.sleep(0.02)
if marks:
    os.unlink(os.path.join(marks, "running"))
print("---")
print(f"val_bpb:          {VAL_BPB + A + B + C + D + E:.6f}")
print("training_seconds: 300.0")
print("peak_vram_mb:     2048.0")
sys.exit(0)
'''

PROPOSER = r'''import json, os, pathlib, subprocess, sys, time
state = pathlib.Path(os.environ["PLAN_DIR"])
count = state / "count"
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
plan = (state / "plan").read_text().splitlines()
step = plan[min(n, len(plan) - 1)].split()
marks = os.environ.get("STANDIN_MARKS", "")
deadline = time.time() + 30  # PROPOSER_AWAITS_RUN: see the run going before answering
while os.environ.get("PROPOSER_AWAITS_RUN") and n == 1 and time.time() < deadline \
        and not os.path.exists(os.path.join(marks, "running")):
    time.sleep(0.02)
record = {"call": n + 1, "base": os.environ["AUTORESEARCH_BASE"],
          "running": bool(marks) and os.path.exists(os.path.join(marks, "running")),
          "context": pathlib.Path(os.environ["AUTORESEARCH_CONTEXT"]).read_text()}
with open(state / "calls.jsonl", "a") as out:
    out.write(json.dumps(record) + "\n")
(state / f"started-{n + 1}").write_text("")
if step[0] == "none":
    sys.exit(0)
knob, value = step
text = pathlib.Path("train.py").read_text().splitlines()
text = [f"{knob} = {value}" if line.startswith(f"{knob} = ") else line for line in text]
pathlib.Path("train.py").write_text("\n".join(text) + "\n")
subprocess.run(["git", "commit", "-q", "-am", f"set {knob} to {value}"], check=True)
'''


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return make_repo(tmp_path, train=STANDIN)


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plan"
    d.mkdir()
    (tmp_path / "proposer.py").write_text(PROPOSER)
    (tmp_path / "marks").mkdir()
    return d


def env_for(tmp_path: Path, plan_dir: Path, **extra) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "STANDIN_"))}
    out.update(PLAN_DIR=str(plan_dir), STANDIN_MARKS=str(tmp_path / "marks"),
               AUTORESEARCH_CLONE_ROOT=str(tmp_path / "clones"), LOOP_TEST_ID=uuid.uuid4().hex,
               **PRINTED, **extra)  # the stand-in prints its value: a printed session
    return out


def args(tmp_path: Path, *extra: str) -> list[str]:
    return ["bash", str(RUN_LOOP), "--cmd", f"{sys.executable} train.py", "--grace", "1",
            "--propose", f"{sys.executable} {tmp_path / 'proposer.py'}", *extra]


def run_loop(target: Path, tmp_path: Path, env: dict, *extra: str):
    return subprocess.run(args(tmp_path, *extra), cwd=target, env=env, capture_output=True,
                          text=True, timeout=180)


def rows(repo: Path) -> list[dict]:
    return ledger.read_ledger(str(repo / "results.tsv"))


def table(repo: Path) -> list[tuple]:
    return [(r["status"], r["val_bpb"], r["description"]) for r in rows(repo)]


def calls(plan_dir: Path) -> list[dict]:
    path = plan_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(repo: Path) -> list[dict]:
    path = repo / ".autoresearch" / "runs.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("event")]


def baseline(target: Path, tmp_path: Path, plan_dir: Path) -> str:
    (plan_dir / "plan").write_text("none\n")
    done = run_loop(target, tmp_path, env_for(tmp_path, plan_dir), "--max", "0")
    assert done.returncode == 0, done.stderr
    (plan_dir / "count").unlink(missing_ok=True)
    (plan_dir / "calls.jsonl").unlink(missing_ok=True)
    return git(target, "rev-parse", "HEAD")


def assert_settled(target: Path, tmp_path: Path) -> None:
    assert git(target, "status", "--porcelain") == ""
    assert ledger.validate(str(target / "results.tsv")) == []
    assert not list((tmp_path / "clones").glob("*/p-*"))
    assert not git(target, "for-each-ref", "refs/autoresearch/waiting/",
                   "refs/autoresearch/incoming/")
    state = journal.load_journal(str(target))
    assert state.get("phase") == "idle" and not state.get("waiting")


def test_a_proposal_made_while_a_keep_runs_is_rebased_onto_the_new_best(target, tmp_path,
                                                                      plan_dir):
    b0 = baseline(target, tmp_path, plan_dir)
    (plan_dir / "plan").write_text("A -0.1\nB -0.05\n")
    env = env_for(tmp_path, plan_dir, STANDIN_HOLD=str(plan_dir / "started-2"),
                  PROPOSER_AWAITS_RUN="1")
    done = run_loop(target, tmp_path, env, "--max", "2")
    assert done.returncode == 0, done.stderr
    assert table(target)[1:] == [("keep", 0.9, "set A to -0.1"), ("keep", 0.85, "set B to -0.05")]
    first, second = calls(plan_dir)
    assert first["base"] == b0 and second["base"] == b0      # made on the best of its time
    assert second["running"] and not first["running"]         # ... while run 1 went
    assert "running: set A to -0.1" in second["context"]
    head = git(target, "rev-parse", "HEAD")
    assert git(target, "rev-parse", "HEAD~1") == git(target, "rev-parse",
                                                     rows(target)[1]["commit"])
    assert git(target, "show", f"{head}:train.py").count("= -0.") == 2   # both changes
    assert "rebased onto it" in done.stderr
    assert git(target, "for-each-ref", "refs/autoresearch/unjudged/")  # the old commit kept
    assert_settled(target, tmp_path)


def test_a_waiting_proposal_that_no_longer_applies_is_reproposed_and_recorded_without_a_row(
        target, tmp_path, plan_dir):
    baseline(target, tmp_path, plan_dir)
    (plan_dir / "plan").write_text("A -0.1\nA -0.2\nB -0.05\n")
    env = env_for(tmp_path, plan_dir, STANDIN_HOLD=str(plan_dir / "started-2"))
    done = run_loop(target, tmp_path, env, "--max", "2")
    assert done.returncode == 0, done.stderr
    assert table(target)[1:] == [("keep", 0.9, "set A to -0.1"), ("keep", 0.85, "set B to -0.05")]
    assert "set A to -0.2" not in (target / "results.tsv").read_text()
    (event,) = events(target)
    assert event["event"] == "reproposed" and event["description"] == "set A to -0.2"
    assert event["onto"] == git(target, "rev-parse", "HEAD~1") and "conflicts" in event["reason"]
    third = calls(plan_dir)[2]
    assert third["base"] == git(target, "rev-parse", "HEAD~1")  # proposed again on the new best
    assert "re-proposing: waiting proposal" in done.stderr
    assert "| re-proposed 1" in done.stderr
    assert_settled(target, tmp_path)


def test_a_waiting_proposal_on_a_best_that_held_runs_as_it_is(target, tmp_path, plan_dir):
    b0 = baseline(target, tmp_path, plan_dir)
    (plan_dir / "plan").write_text("A 0.1\nB -0.05\n")
    env = env_for(tmp_path, plan_dir, STANDIN_HOLD=str(plan_dir / "started-2"),
                  PROPOSER_AWAITS_RUN="1")
    done = run_loop(target, tmp_path, env, "--max", "2")
    assert done.returncode == 0, done.stderr
    assert table(target)[1:] == [("discard", 1.1, "set A to 0.1"), ("keep", 0.95, "set B to -0.05")]
    assert git(target, "rev-parse", "HEAD~1") == b0
    assert calls(plan_dir)[1]["running"]
    assert "rebased" not in done.stderr
    assert_settled(target, tmp_path)


def test_a_rejected_proposal_made_ahead_gets_its_crash_row_after_the_run_not_during_it(
        target, tmp_path, plan_dir):
    baseline(target, tmp_path, plan_dir)
    (plan_dir / "plan").write_text("A -0.1\nnone\nB -0.05\n")
    env = env_for(tmp_path, plan_dir, STANDIN_HOLD=str(plan_dir / "started-2"))
    done = run_loop(target, tmp_path, env, "--max", "3")
    assert done.returncode == 0, done.stderr
    got = table(target)[1:]
    assert got[0] == ("keep", 0.9, "set A to -0.1")   # not a tamper crash: no row during it
    assert got[1][0] == "crash" and "made no commit" in got[1][2]
    assert got[2] == ("keep", 0.85, "set B to -0.05")
    assert_settled(target, tmp_path)


@pytest.mark.parametrize("plan", ["A 0.1\nB 0.05\nC -0.05\n", "A -0.1\nB -0.05\nC -0.02\n"])
def test_ahead_zero_is_the_serial_loop_and_ahead_one_judges_the_same(tmp_path, plan_dir, plan):
    results = {}
    for ahead in ("0", "1"):
        repo = make_repo(tmp_path, f"target-{ahead}", train=STANDIN)
        baseline(repo, tmp_path, plan_dir)
        (plan_dir / "plan").write_text(plan)
        done = run_loop(repo, tmp_path, env_for(tmp_path, plan_dir), "--max", "3",
                        "--ahead", ahead)
        assert done.returncode == 0, done.stderr
        results[ahead] = table(repo)
        if ahead == "0":  # strictly serial: no proposal while a run goes
            assert [c["running"] for c in calls(plan_dir)] == [False, False, False]
        assert_settled(repo, tmp_path)
    assert results["0"] == results["1"]
    assert len(results["0"]) == 4


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert proc.poll() is None, "the loop exited early"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def live(test_id: str) -> list[int]:
    return live_tagged(test_id)


@pytest.mark.parametrize("phase", ["lane-proposing", "lane-finished", "taking", "appending"])
def test_a_sigkill_in_any_phase_of_proposing_ahead_resumes_without_a_lost_or_double_row(
        target, tmp_path, plan_dir, phase):
    baseline(target, tmp_path, plan_dir)
    hook = tmp_path / "hook"
    hook.mkdir()
    hold = plan_dir / ("go" if phase.startswith("lane") else "started-2")
    if phase == "lane-proposing":  # proposer 2 waits (while run 1 is held) until killed
        plan = "A -0.1\nB -0.05\nC -0.02\n"
        (tmp_path / "proposer.py").write_text(PROPOSER.replace(
            'if step[0] == "none":',
            'while n == 1 and not (state / "go").exists():\n    time.sleep(0.02)\n'
            'if step[0] == "none":'))
    elif phase == "appending":
        plan = "A -0.1\nnone\nB -0.05\nC -0.02\n"
    else:
        plan = "A -0.1\nB -0.05\nC -0.02\n"
    (plan_dir / "plan").write_text(plan)
    env = env_for(tmp_path, plan_dir, STANDIN_HOLD=str(hold),
                  AUTORESEARCH_LOOP_HOOK_DIR=str(hook))
    if phase in ("taking", "appending"):
        env["AUTORESEARCH_LOOP_PAUSE"] = f"{phase}:2"
    proc = subprocess.Popen(args(tmp_path, "--max", "3"), cwd=target, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if phase == "lane-proposing":
        wait_for(plan_dir / "started-2", proc)
    elif phase == "lane-finished":
        wait_for(plan_dir / "started-2", proc)
        deadline = time.monotonic() + WAIT
        while not git(target, "for-each-ref", "refs/autoresearch/waiting/"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    else:
        wait_for(hook / f"paused-{phase}", proc)
    proc.kill()
    proc.wait()
    before = rows(target)
    lane_logs = list((target / ".autoresearch").glob("proposer-*-*.log"))
    if phase == "lane-proposing":  # the killed lane's own log, cut short
        assert len(lane_logs) == 1
        lane_logs[0].write_text("the thought it had when it was killed\n")
    (plan_dir / "go").write_text("")
    env.pop("AUTORESEARCH_LOOP_PAUSE", None)
    env["STANDIN_HOLD"] = ""
    again = run_loop(target, tmp_path, env, "--max", "3")
    assert again.returncode == 0, again.stderr
    after = rows(target)
    assert after[:len(before)] == before
    described = [(r["commit"], r["description"]) for r in after]
    assert len(described) == len(set(described)), described
    assert "experiments: 3" in again.stdout
    assert len(after) == 4  # the baseline and three experiments, none lost or doubled
    deadline = time.monotonic() + 10
    while live(env["LOOP_TEST_ID"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live(env["LOOP_TEST_ID"]) == []
    assert not list((target / ".autoresearch").glob("proposer-*-*.log"))
    if phase == "lane-proposing":
        whole = (target / ".autoresearch" / "proposer.log").read_text()
        assert f"=== {lane_logs[0].name} (cut short" in whole
        assert "the thought it had when it was killed" in whole
    assert_settled(target, tmp_path)


def test_ctrl_c_while_the_lane_proposes_stops_the_run_and_the_proposer(target, tmp_path,
                                                                       plan_dir):
    import signal
    baseline(target, tmp_path, plan_dir)
    (tmp_path / "proposer.py").write_text(PROPOSER.replace(
        'if step[0] == "none":', 'while n == 1:\n    time.sleep(0.05)\nif step[0] == "none":'))
    (plan_dir / "plan").write_text("A -0.1\nB -0.05\n")
    env = env_for(tmp_path, plan_dir, STANDIN_HOLD=str(plan_dir / "never"))
    proc = subprocess.Popen(args(tmp_path, "--max", "3"), cwd=target, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(plan_dir / "started-2", proc)
    before = rows(target)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 130
    assert rows(target) == before
    deadline = time.monotonic() + 10
    while live(env["LOOP_TEST_ID"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live(env["LOOP_TEST_ID"]) == []
    assert not list((tmp_path / "clones").glob("*/p-*"))
    assert git(target, "status", "--porcelain") == ""


def test_a_proposal_finished_but_not_yet_taken_still_counts_as_in_flight():
    """The scheduler starts `--ahead` minus what is waiting or in flight: a lane whose thread
    has ended with its proposal not yet taken must count, or one proposal too many starts
    (an agent call paid for nothing)."""
    import threading

    from arcore import lane

    def make(token: str) -> lane.Lane:
        return lane.Lane(repo=".", branch="b", command="true", timeout=1.0, token=token,
                         log_path="/dev/null", ledger_path="results.tsv",
                         context=lambda *a: ({}, ""), env_for=lambda *a: {})

    lanes = lane.Lanes([make("t"), make("t-1"), make("t-2")])
    assert lanes.in_flight == 0
    lanes.lanes[0].ready.append(lane.Ready(base="a" * 40, commit="b" * 40, reason=None))
    release = threading.Event()
    lanes.lanes[1].thread = threading.Thread(target=release.wait)
    lanes.lanes[1].thread.start()
    try:
        assert lanes.in_flight == 2  # one made and untaken, one being made, one idle
    finally:
        release.set()
        lanes.lanes[1].thread.join()
    assert len(lanes.take()) == 1 and lanes.in_flight == 0
