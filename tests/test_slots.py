"""arcore.scheduler with several slots (arcore.slots) on one box, driven end to end through
run-loop.sh, and the scheduler's pure rules (``decide``: what an ended run means on a moving
best).

Each end-to-end test builds a scratch target (tests/scratchrepo.py) whose train.py is a
stand-in that prints upstream's summary block with its VAL_BPB constant, the GPU it was given
(CUDA_VISIBLE_DEVICES) and, when STANDIN_GATE is set, blocks until that file exists ("{worker}" in it is replaced by the
worker's id) (so a test
can interrupt a round while every run is in flight, without timing). Candidates come from a
queue of format-patch files. After each scenario: HEAD at the expected kept commit, a clean
tree, a well-formed ledger, worktrees removed, no process of the test left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arcore import journal, ledger, loop, scheduler, slots
from arcore.gitops import LoopError
from scratchrepo import KNOB_LINES, TAKE_NUMBER, git, make_repo

ROOT = Path(__file__).resolve().parent.parent
RUN_LOOP = ROOT / "scripts" / "run-loop.sh"
WAIT = 60.0  # a cap for waiting on a file, never a synchronisation by itself

STANDIN = '''"""Stand-in train.py for parallel rounds."""
import os
import sys
import time

VAL_BPB = 1.000000
# Knobs: each queue patch sets one; they are far apart so patches apply on any base.
''' + KNOB_LINES + '''
print(f"gpu={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
print(f"job={os.environ.get('SLURM_JOB_NAME', '')}", flush=True)
print(f"cluster={os.environ.get('CLUSTER', '')}", flush=True)
marks = os.environ.get("STANDIN_MARKS")
if marks:
    _pid = next((int(line.split()[1]) for line in open("/proc/self/status")
                 if line.startswith("NSpid:")), os.getpid())  # as seen outside a pid namespace
    with open(os.path.join(marks, str(_pid)), "w") as handle:
        handle.write(os.getcwd())
hold_if = os.environ.get("STANDIN_HOLD_IF", "")  # KNOB=VALUE=PATH: hold that run
if hold_if:
    _knob, _value, _path = hold_if.split("=", 2)
    while globals()[_knob] == float(_value) and not os.path.exists(_path):
        time.sleep(0.02)
hold_a = os.environ.get("STANDIN_HOLD_A")
while hold_a and A != 0.0 and not os.path.exists(hold_a):
    time.sleep(0.02)
gate = os.environ.get("STANDIN_GATE", "").replace("{worker}", os.environ.get("AUTORESEARCH_WORKER", ""))
while gate and not os.path.exists(gate):
    time.sleep(0.02)
print("---")
print(f"val_bpb:          {VAL_BPB + A + B + C + D + E:.6f}")
print("training_seconds: 300.0")
print("peak_vram_mb:     2048.0")
sys.exit(0)
'''


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def set_knob(repo: Path, knob: str, delta: str, message: str) -> str:
    text = (repo / "train.py").read_text()
    lines = [f"{knob} = {delta}" if line.startswith(f"{knob} = ") else line
             for line in text.splitlines()]
    (repo / "train.py").write_text("\n".join(lines) + "\n")
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return make_repo(tmp_path, train=STANDIN)


def make_queue(repo: Path, tmp_path: Path, knobs: list[tuple[str, str, str]]) -> Path:
    """One format-patch per (name, knob, delta): the knob (A..E) adds delta to val_bpb."""
    queue = tmp_path / "queue"
    queue.mkdir(exist_ok=True)
    base = git(repo, "rev-parse", "HEAD")
    for name, knob, delta in knobs:
        set_knob(repo, knob, delta, f"try {name}")
        patch = git(repo, "format-patch", "-1", "--stdout", "HEAD")
        (queue / f"{name}.patch").write_text(patch + "\n")
        git(repo, "reset", "-q", "--hard", base)
    return queue


def run_loop(repo: Path, *args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(["bash", str(RUN_LOOP), "--repo", str(repo), "--cmd",
                           f"{sys.executable} train.py", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def rows(repo: Path) -> list[dict]:
    return ledger.read_ledger(str(repo / "results.tsv"))


def runs(repo: Path) -> list[dict]:
    path = repo / ".autoresearch" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert ledger.validate(str(repo / "results.tsv")) == []
    assert not (repo / slots.WORKTREES).exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert "autoresearch-workers" not in git(repo, "branch", "--list", "-a")


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------
# What an ended run means (pure): the judge on a moving best
# ---------------------------------------------------------------------------

B0, B1 = "b0" * 20, "b1" * 20


def job(base: str = B0, kind: str = "candidate") -> dict:
    return {"commit": "c" * 40, "base": base, "kind": kind}


def test_a_keep_on_the_standing_best_is_kept():
    assert scheduler.decide(job(), "keep", B0, B0, True, False) == "keep"


def test_a_keep_whose_base_another_slot_superseded_is_rebased_and_run_again_not_kept():
    assert scheduler.decide(job(B0), "keep", B1, B1, True, False) == "again"


def test_a_loser_is_logged_whatever_the_best_is_now():
    assert scheduler.decide(job(B0), "discard", B1, B1, True, False) == "row"
    assert scheduler.decide(job(B0), "crash", B0, B0, True, False) == "row"


def test_a_keep_while_another_keep_is_being_confirmed_waits_for_that_outcome():
    assert scheduler.decide(job(), "keep", B0, B0, True, True) == "park"


def test_a_branch_the_user_moved_or_switched_applies_nothing():
    assert scheduler.decide(job(), "keep", B1, B0, True, False) == "moved"
    assert scheduler.decide(job(), "discard", B0, B0, False, False) == "moved"


@pytest.mark.parametrize("kind", ["baseline", "repeat", "confirm"])
def test_the_baseline_repeats_and_confirmations_are_rows_never_applied(kind):
    assert scheduler.decide(job(kind=kind), "keep", B0, B0, True, False) == "row"


def test_a_gain_within_the_noise_floor_needs_confirming_and_one_outside_does_not():
    assert scheduler.within_noise(0.995, 1.0, 0.01)
    assert not scheduler.within_noise(0.95, 1.0, 0.01)
    assert not scheduler.within_noise(0.995, 1.0, None)


def test_the_slot_is_named_in_the_description_on_one_line_only_with_several_slots():
    assert slots.tagged("w2", "lower lr\tand\nwarmup", True) == "[w2] lower lr and warmup"
    assert slots.tagged("w1", "lower lr", False) == "lower lr"


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--queue", ".", "--runner", "slurm", "--launcher", "srun"], "give one"),
    (["--queue", ".", "--gpus", "0,0"], "twice"),
    (["--queue", ".", "--gpus", "0,1", "--workers", "3"], "--gpus lists 2"),
    (["--queue", ".", "--workers", "2", "--confirm", "-1"], "--confirm must be >= 0"),
    (["--queue", ".", "--workers", "2", "--ahead", "-1"], "--ahead must be >= 0"),
    (["--queue", ".", "--runner", "k8s"], "--runner must be"),
    (["--workers", "2"], "no candidates"),
    (["--queue", ".", "--workers", "2", "--timeout", "ten"], "--timeout must be a number"),
    (["--queue", ".", "--workers", "0"], "--workers must be 1..64"),
])
def test_bad_slot_options_are_refused_with_one_line(argv, message):
    with pytest.raises(LoopError) as err:
        loop.parse_args(argv)
    assert err.value.code == scheduler.USAGE
    assert message in str(err.value)


def test_local_slots_get_one_gpu_each_in_order_and_one_slot_keeps_the_environments():
    opts = loop.parse_args(["--queue", ".", "--workers", "3"])
    assert opts.gpu_list == ["0", "1", "2"]
    opts = loop.parse_args(["--queue", ".", "--gpus", "4,6"])
    assert (opts.workers, opts.gpu_list) == (2, ["4", "6"])
    assert loop.parse_args(["--queue", "."]).gpu_list == [None]
    assert loop.parse_args(["--queue", ".", "--gpus", "3"]).gpu_list == ["3"]


def test_the_default_ahead_is_one_proposal_per_slot_and_none_for_a_queue():
    assert loop.parse_args(["--propose", "x"]).ahead == 1
    assert loop.parse_args(["--propose", "x", "--workers", "4"]).ahead == 4
    assert loop.parse_args(["--queue", ".", "--workers", "4"]).ahead == 0


# ---------------------------------------------------------------------------
# Local parallel rounds, end to end
# ---------------------------------------------------------------------------


def test_two_slots_run_a_queue_at_once_and_keep_only_improvements_on_the_best(target,
                                                                             tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "0.01"), ("b", "B", "-0.03"),
                                          ("c", "C", "0.13"), ("d", "D", "-0.01")])
    done = run_loop(target, "--queue", str(queue), "--workers", "2")
    assert done.returncode == 0, done.stderr
    got = rows(target)
    assert got[0]["description"].startswith("[w1] baseline") and got[0]["status"] == "keep"
    assert {row["description"].split()[0] for row in got[1:]} <= {"[w1]", "[w2]"}
    keeps = [row["val_bpb"] for row in got if row["status"] == "keep"]
    assert keeps == sorted(keeps, reverse=True) and keeps[-1] == 0.96  # only ever better
    for name in "abcd":  # every patch ran; c whichever base it got (1.13 on b0, 1.10 on b)
        assert any(f"try {name}" in row["description"] for row in got)
    assert git(target, "log", "-1", "--format=%s") == "try d"
    assert git(target, "log", "-2", "--format=%s").splitlines()[1] == "try b"
    for row in got[1:]:
        if row["status"] == "discard":
            full = git(target, "rev-parse", row["commit"])
            assert git(target, "rev-parse", f"refs/autoresearch/discarded/{full}") == full
    assert "best: 0.960000" in done.stdout
    assert_clean(target)


def held_until_kept(target: Path, queue: Path, env: dict, kept: str, release: Path) -> str:
    """Two slots over ``queue``; the held run is released once ``kept`` has its keep row.
    Returns the loop's stdout (it must exit 0)."""
    proc = subprocess.Popen(["bash", str(RUN_LOOP), "--repo", str(target), "--cmd",
                             f"{sys.executable} train.py", "--queue", str(queue),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})
    wait_for(lambda: any(r["status"] == "keep" and kept in r["description"]
                         for r in rows(target)), f"{kept} to be kept while the other is held")
    release.write_text("")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    return out


def test_a_run_that_beat_its_base_after_another_slot_kept_is_rebased_and_run_again(
        target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01"), ("b", "B", "-0.03")])
    release = tmp_path / "release-a"
    out = held_until_kept(target, queue, {"STANDIN_HOLD_A": str(release)}, "try b", release)
    # a ended after b's keep, beating its base b0, which b superseded
    got = [(r["status"], r["val_bpb"], r["description"]) for r in rows(target)]
    assert got[1][:2] == ("keep", 0.97) and "try b" in got[1][2]
    assert got[2][:2] == ("discard", 0.99) and "rebased onto it" in got[2][2]
    assert got[3][:2] == ("keep", 0.96) and "try a (rebased onto" in got[3][2]
    assert len(got) == 4
    assert git(target, "log", "-2", "--format=%s").splitlines() == ["try a", "try b"]
    assert "experiments: 2" in out  # a's re-run finishes experiment a: not one more
    assert not git(target, "for-each-ref", "refs/autoresearch/waiting/")
    assert_clean(target)


def test_a_better_rival_edit_of_the_same_line_runs_on_top_of_the_keep_and_is_not_lost(
        target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01"), ("b", "A", "-0.02")])
    release = tmp_path / "release-b"
    out = held_until_kept(target, queue, {"STANDIN_HOLD_IF": f"A=-0.02={release}"}, "try a",
                          release)  # b ended after a's keep: better than a, on a's own line
    got = [(r["status"], r["val_bpb"], r["description"]) for r in rows(target)]
    assert got[1][:2] == ("keep", 0.99)
    assert got[2][:2] == ("discard", 0.98) and "conflicts with" in got[2][2] \
        and "to run again" in got[2][2]
    assert got[3][:2] == ("keep", 0.98) and len(got) == 4  # measured again on top of a
    assert git(target, "rev-parse", "HEAD~1").startswith(rows(target)[1]["commit"])  # a
    assert git(target, "log", "-2", "--format=%s").splitlines() == ["try b", "try a"]
    assert "A = -0.02" in git(target, "show", "HEAD:train.py")
    assert "best: 0.980000" in out
    assert_clean(target)


def test_each_worker_runs_with_its_own_gpu_and_its_log_is_archived(target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "0.01"), ("b", "B", "-0.02")])
    done = run_loop(target, "--queue", str(queue), "--gpus", "3,5")
    assert done.returncode == 0, done.stderr
    objects = runs(target)
    by_worker = {o["worker"]: o for o in objects if "baseline" not in o["description"]}
    for worker, gpu in (("w1", "3"), ("w2", "5")):
        log = (target / by_worker[worker]["log"]).read_text()
        assert f"gpu={gpu}" in log
    assert len(objects) == len(rows(target)) == 3
    assert_clean(target)


def test_a_launcher_line_can_name_each_worker_for_per_worker_clusters(target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01"), ("b", "B", "-0.02")])
    done = run_loop(target, "--queue", str(queue), "--workers", "2",
                    "--launcher", "env CLUSTER=ar-$AUTORESEARCH_WORKER")
    assert done.returncode == 0, done.stderr
    for o in runs(target):
        assert f"cluster=ar-{o['worker']}" in (target / o["log"]).read_text()
    assert_clean(target)


def test_a_candidate_identical_to_one_already_tried_is_not_run_again(target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01"), ("b", "A", "-0.01"),
                                          ("c", "C", "-0.02")])
    done = run_loop(target, "--queue", str(queue), "--workers", "2")
    assert done.returncode == 0, done.stderr
    got = rows(target)
    descs = [row["description"] for row in got]
    assert sum("try a" in d for d in descs) == 1
    assert not any("try b" in d for d in descs)
    assert any("try c" in d for d in descs)
    assert "same train.py" in done.stderr
    assert_clean(target)


def test_a_second_loop_over_the_same_queue_has_nothing_to_do(target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01")])
    assert run_loop(target, "--queue", str(queue), "--workers", "2").returncode == 0
    again = run_loop(target, "--queue", str(queue), "--workers", "2")
    assert again.returncode == 5, again.stderr
    assert len(rows(target)) == 2


def test_a_dirty_main_worktree_is_refused(target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01")])
    (target / "train.py").write_text(STANDIN + "# local edit\n")
    done = run_loop(target, "--queue", str(queue), "--workers", "2")
    assert done.returncode == 4
    assert "uncommitted" in done.stderr
    assert "# local edit" in (target / "train.py").read_text()


# ---------------------------------------------------------------------------
# Interruptions
# ---------------------------------------------------------------------------


def start_loop(repo: Path, queue: Path, gate: Path, marks: Path) -> subprocess.Popen:
    """The loop in its own process group, its output in files (runs may outlive it)."""
    env = {**os.environ, "STANDIN_GATE": str(gate), "STANDIN_MARKS": str(marks)}
    with open(marks.parent / "out.txt", "w") as out, open(marks.parent / "err.txt", "w") as err:
        return subprocess.Popen(
            ["bash", str(RUN_LOOP), "--repo", str(repo), "--cmd", f"{sys.executable} train.py",
             "--queue", str(queue), "--workers", "2"],
            stdout=out, stderr=err, text=True, env=env, start_new_session=True)


def start_held_round(target: Path, tmp_path: Path):
    """A baseline, then a two-worker round whose runs have both started and wait at the gate.

    Returns (queue, gate, marks, the loop's process); each started run leaves its pid in marks.
    """
    queue = make_queue(target, tmp_path, [("a", "A", "0.01"), ("b", "B", "-0.02")])
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    marks.mkdir()
    gate.write_text("")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_loop(target, "--queue", str(empty), "--workers", "2").returncode == 5
    gate.unlink()
    proc = start_loop(target, queue, gate, marks)
    wait_for(lambda: len(list(marks.iterdir())) == 2, "both runs to start")
    return queue, gate, marks, proc


def test_ctrl_c_during_a_round_stops_every_run_and_loses_nothing(target, tmp_path):
    base_queue, gate, marks, proc = start_held_round(target, tmp_path)
    base = git(target, "rev-parse", "HEAD")
    before = rows(target)
    pids = [int(p.name) for p in marks.iterdir()]
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's process group
    proc.wait(timeout=WAIT)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, err
    assert not any(alive(pid) for pid in pids)
    assert rows(target) == before
    assert git(target, "rev-parse", "HEAD") == base
    unjudged = git(target, "for-each-ref", "--format=%(refname)", "refs/autoresearch/unjudged/")
    assert len(unjudged.split()) == 2
    assert "status: interrupted" in out
    assert_clean(target)
    # the same command again runs the queue to its end
    gate.write_text("")
    again = run_loop(target, "--queue", str(base_queue), "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert [row["status"] for row in rows(target)] == ["keep", "discard", "keep"]
    assert_clean(target)


def test_a_sigkilled_loop_resumes_its_round_without_losing_or_duplicating_a_row(target, tmp_path):
    queue, gate, marks, proc = start_held_round(target, tmp_path)
    pids = [int(p.name) for p in marks.iterdir()]
    os.killpg(proc.pid, signal.SIGKILL)  # the loop and everything in its process group
    proc.wait(timeout=WAIT)
    gate.write_text("")
    again = run_loop(target, "--queue", str(queue), "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert not any(alive(pid) for pid in pids)
    got = rows(target)
    assert [row["status"] for row in got] == ["keep", "discard", "keep"]
    assert sorted(row["val_bpb"] for row in got[1:]) == [0.98, 1.01]
    assert git(target, "log", "-1", "--format=%s") == "try b"
    assert_clean(target)


# ---------------------------------------------------------------------------
# Proposers, one per worker
# ---------------------------------------------------------------------------

PROPOSER = '''import os, pathlib, subprocess
n = int(os.environ["AUTORESEARCH_ITERATION"])
worker = os.environ.get("AUTORESEARCH_WORKER", "-")  # not known while proposing
others = os.environ.get("AUTORESEARCH_ROUND_OTHERS", "")
context = pathlib.Path(os.environ["AUTORESEARCH_CONTEXT"]).read_text()
with open(os.environ["PROPOSALS"], "a") as out:
    out.write(f"{worker}|{n}|{os.getcwd()}|{others.replace(chr(10), ';')}|"
              f"{'In flight right now' in context}\\n")
if n == 3:
    raise SystemExit(0)  # no commit: a rejected proposal
knob = "ABCDE"[n - 1]
delta = "0.001" if n == 1 else f"-0.00{n}"  # proposal 1 does not improve
text = pathlib.Path("train.py").read_text().replace(f"{knob} = 0.0", f"{knob} = {delta}")
pathlib.Path("train.py").write_text(text)
subprocess.run(["git", "commit", "-q", "-am", f"proposal {n} by {worker}"], check=True)
'''


def test_each_proposal_is_made_in_its_own_clone_told_what_runs_and_waits(target, tmp_path):
    script = tmp_path / "proposer.py"
    script.write_text(PROPOSER)
    record = tmp_path / "proposals.txt"
    done = run_loop(target, "--propose", f"{sys.executable} {script}", "--workers", "2",
                    "--max", "4", env={"PROPOSALS": str(record)})
    assert done.returncode == 0, done.stderr
    lines = [line.split("|") for line in record.read_text().splitlines()]
    assert sorted(n for _, n, *_ in lines) == ["1", "2", "3", "4"]
    for _, n, cwd, others, told in lines:
        assert "/autoresearch-proposals-" in cwd and not cwd.startswith(str(target))
        if n != "1":  # made while a run went: told what is running
            assert told == "True" and "proposal " in others
    assert lines[0][3] == ""
    got = rows(target)
    again = [row for row in got if "to run again" in row["description"]]  # 4 on b0, 2 kept
    assert sorted(row["status"] for row in got[1:] if row not in again) == \
        ["crash", "discard", "keep", "keep"]
    assert all(row["status"] == "discard" for row in again)
    crash = next(row for row in got if row["status"] == "crash")
    assert crash["description"].startswith("[w") and "made no commit" in crash["description"]
    assert git(target, "log", "-1", "--format=%s") == "proposal 4 by -"
    assert "best: 0.994000" in done.stdout
    assert_clean(target)


def test_a_round_of_crashes_stops_the_loop_at_the_crash_bound(target, tmp_path):
    queue = tmp_path / "queue"
    queue.mkdir()
    for name in ("a", "b", "c"):
        (queue / f"{name}.patch").write_text("--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n")
    done = run_loop(target, "--queue", str(queue), "--workers", "2", "--max-crashes", "2")
    assert done.returncode == 1
    assert "2 crashes in a row" in done.stderr
    assert [row["status"] for row in rows(target)] == ["keep", "crash", "crash"]
    assert_clean(target)


def test_ctrl_c_while_proposing_drops_the_proposals_and_leaves_everything_as_it_was(
        target, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_loop(target, "--queue", str(empty), "--workers", "2").returncode == 5
    base, before = git(target, "rev-parse", "HEAD"), rows(target)
    waiting = tmp_path / "waiting"
    script = tmp_path / "slow.sh"
    script.write_text(f"echo edit >> train.py\ngit commit -q -am half\ntouch {waiting}\n"
                      "sleep 600\n")
    proc = subprocess.Popen(
        ["bash", str(RUN_LOOP), "--repo", str(target), "--cmd", f"{sys.executable} train.py",
         "--propose", f"bash {script}", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(waiting.exists, "the first proposer to commit and wait")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 130
    assert git(target, "rev-parse", "HEAD") == base
    assert rows(target) == before
    rejected = git(target, "for-each-ref", "--format=%(subject)", "refs/autoresearch/rejected/")
    assert rejected == "half"
    assert_clean(target)


def test_a_user_commit_during_a_round_survives_and_the_round_is_logged_not_applied(
        target, tmp_path):
    queue, gate, marks, proc = start_held_round(target, tmp_path)
    (target / "notes.md").write_text("mine\n")
    git(target, "add", "notes.md")
    git(target, "commit", "-q", "-m", "user's own commit")
    mine = git(target, "rev-parse", "HEAD")
    gate.write_text("")
    assert proc.wait(timeout=WAIT) == 4
    assert git(target, "rev-parse", "HEAD") == mine
    got = rows(target)
    assert [row["status"] for row in got] == ["keep", "discard", "discard"]
    assert sum("not applied" in row["description"] for row in got) == 1  # b beat the base
    assert "moved" in (tmp_path / "err.txt").read_text()
    assert_clean(target)


def test_ctrl_c_after_one_run_finished_logs_and_keeps_that_run(target, tmp_path):
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01"), ("b", "B", "-0.02")])
    marks = tmp_path / "marks"
    marks.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_loop(target, "--queue", str(empty), "--workers", "2").returncode == 5
    proc = start_loop(target, queue, tmp_path / "gate-{worker}", marks)
    wait_for(lambda: len(list(marks.iterdir())) == 2, "both runs to start")
    (tmp_path / "gate-w1").write_text("")
    wait_for(lambda: len(rows(target)) == 2, "w1's run to be judged")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 130, (tmp_path / "err.txt").read_text()
    got = rows(target)
    assert [(row["status"], row["val_bpb"]) for row in got] == [("keep", 1.0), ("keep", 0.99)]
    assert git(target, "log", "-1", "--format=%s") == "try a"
    assert_clean(target)


def test_runs_that_finished_after_a_sigkill_are_taken_not_run_again(target, tmp_path):
    queue, gate, marks, proc = start_held_round(target, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # the loop alone: its runs go on without it
    proc.wait(timeout=WAIT)
    gate.write_text("")
    scratch = [target / slots.WORKTREES / w / slots.RUNS for w in ("w1", "w2")]
    wait_for(lambda: all(p.exists() and "try" in p.read_text() for p in scratch),
             "the orphaned runs to finish")
    again = run_loop(target, "--queue", str(queue), "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert len(list(marks.iterdir())) == 2  # nothing ran twice
    assert [row["status"] for row in rows(target)] == ["keep", "discard", "keep"]
    assert git(target, "log", "-1", "--format=%s") == "try b"
    assert_clean(target)


# ---------------------------------------------------------------------------
# Noise-aware acceptance with several workers
# ---------------------------------------------------------------------------


def test_baseline_repeats_and_confirm_work_with_two_slots(target, tmp_path):
    """Each distinct train.py reports the next value of its own file (values-<knobs>), read
    under a lock, whichever slot runs it."""
    text = (target / "train.py").read_text().replace(
        'print("---")',
        'import fcntl\n'
        'vals = os.path.join(os.environ["VALUES_DIR"], f"values-{A}_{B}_{C}")\n'
        'if os.path.exists(vals):\n'
        '    with open(vals, "r+") as fh:\n'
        '        fcntl.flock(fh, fcntl.LOCK_EX)\n'
        '        seq = fh.read().split()\n'
        '        fh.seek(0); fh.truncate(); fh.write(" ".join(seq[1:]))\n'
        '    if seq:\n'
        '        VAL_BPB, A, B, C, D, E = float(seq[0]), 0, 0, 0, 0, 0\n'
        'print("---")')
    (target / "train.py").write_text(text)
    git(target, "commit", "-q", "-am", "values per train.py")
    queue = make_queue(target, tmp_path, [("a", "A", "-0.01"), ("b", "B", "0.5"),
                                          ("c", "C", "-0.1")])
    values = tmp_path / "values"
    values.mkdir()
    (values / "values-0.0_0.0_0.0").write_text("1.00 1.02 1.04")  # baseline, 2 repeats
    (values / "values--0.01_0.0_0.0").write_text("1.01 1.03 1.02")  # a: within the floor
    done = run_loop(target, "--queue", str(queue), "--workers", "2", "--baseline-repeats",
                    "3", "--confirm", "2", env={"VALUES_DIR": str(values)})
    assert done.returncode == 0, done.stderr
    floor = json.loads((target / ".autoresearch" / "session.json").read_text())["noise_floor"]
    assert floor == pytest.approx(0.02)
    got = [(r["status"], r["val_bpb"], r["description"]) for r in rows(target)]
    assert sorted(v for _, v, _ in got[:3]) == [1.0, 1.02, 1.04]
    assert got[0][0] == "keep" and all("baseline repeat" in d for _, _, d in got[1:3])
    a_rows = [(st, v) for st, v, d in got if "try a" in d]
    assert a_rows[0] == ("keep", 1.01) and sorted(v for _, v in a_rows[1:3]) == [1.02, 1.03]
    confirms = [d for _, _, d in got if "(confirm" in d]
    assert len(confirms) == 2 and any("(confirm 1/2)" in d for d in confirms)
    withdrawn = next(row for row in got if "not confirmed" in row[2])
    assert withdrawn[0] == "discard" and withdrawn[1] == pytest.approx(1.02)
    assert ("discard", 1.5) in [(st, v) for st, v, d in got if "try b" in d]
    assert got[-1][:2] == ("keep", 0.9) and "try c" in got[-1][2]
    assert len(got) == 9
    assert git(target, "log", "-1", "--format=%s") == "try c"
    assert git(target, "log", "-1", "--format=%s", "HEAD~1") == "values per train.py"  # a out
    assert "experiments: 3" in done.stdout
    assert_clean(target)


# ---------------------------------------------------------------------------
# The next round proposed ahead: SIGKILL while the lane proposes
# ---------------------------------------------------------------------------

SLOW_PROPOSER = '''import os, pathlib, subprocess, sys, time
n = int(os.environ["AUTORESEARCH_ITERATION"])
state = pathlib.Path(os.environ["LANE_DIR"])
(state / f"started-{n}").write_text(str(os.getpid()))
while n >= 3 and not (state / "go").exists():  # the lane's proposals wait
    time.sleep(0.02)
knob = "ABCDE"[(n - 1) % 5]
text = pathlib.Path("train.py").read_text().replace(f"{knob} = 0.0", f"{knob} = 0.00{n}")
pathlib.Path("train.py").write_text(text)
subprocess.run(["git", "commit", "-q", "-am", f"proposal {n}"], check=True)
'''


def test_a_sigkill_while_the_next_round_is_proposed_ahead_loses_and_doubles_nothing(
        target, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_PROPOSER)
    lane_dir, gate, marks = tmp_path / "lane", tmp_path / "gate", tmp_path / "marks"
    lane_dir.mkdir()
    marks.mkdir()
    clones = tmp_path / "clones"
    env = {**os.environ, "LANE_DIR": str(lane_dir), "STANDIN_GATE": str(gate),
           "STANDIN_MARKS": str(marks), "AUTORESEARCH_CLONE_ROOT": str(clones)}
    args = ["bash", str(RUN_LOOP), "--repo", str(target), "--cmd", f"{sys.executable} train.py",
            "--propose", f"{sys.executable} {script}", "--workers", "2", "--max", "4"]
    gate.write_text("")
    assert subprocess.run([*args[:-2], "--max", "0"], env=env, capture_output=True,
                          timeout=WAIT).returncode == 0   # the baseline
    gate.unlink()
    for p in marks.iterdir():
        p.unlink()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    started = lane_dir / "started-3"
    wait_for(lambda: started.exists() and started.read_text(), "the lane to propose ahead")
    lane_pid = int((lane_dir / "started-3").read_text())
    os.killpg(proc.pid, signal.SIGKILL)  # the loop; its runs and the lane's proposer go on
    proc.wait(timeout=WAIT)
    assert alive(lane_pid)
    before = rows(target)
    (lane_dir / "go").write_text("")
    gate.write_text("")
    again = run_loop(target, "--propose", f"{sys.executable} {script}", "--workers", "2",
                     "--max", "4", env={k: env[k] for k in ("LANE_DIR", "STANDIN_GATE",
                                                            "STANDIN_MARKS",
                                                            "AUTORESEARCH_CLONE_ROOT")})
    assert again.returncode == 0, again.stderr
    assert not alive(lane_pid)
    got = rows(target)
    assert got[:len(before)] == before
    described = [(r["commit"], r["description"]) for r in got]
    assert len(described) == len(set(described))
    assert len(got) == 5 and "experiments: 4" in again.stdout
    assert not list(clones.glob("*/p-*"))
    assert not git(target, "for-each-ref", "refs/autoresearch/waiting/",
                   "refs/autoresearch/incoming/")
    assert_clean(target)


COUNTED_PROPOSER = TAKE_NUMBER + '''import os, pathlib, subprocess
state = pathlib.Path(os.environ["LANE_DIR"])
k = take_number(state / "count")
plan = [("A", "-0.001"), ("B", "0.01"), ("A", "-0.002"), ("C", "-0.004"), ("D", "-0.003")]
knob, value = plan[min(k, len(plan) - 1)]
text = pathlib.Path("train.py").read_text().replace(f"{knob} = 0.0", f"{knob} = {value}")
pathlib.Path("train.py").write_text(text)
subprocess.run(["git", "commit", "-q", "-am", f"set {knob} {value}"], check=True)
'''


def test_a_proposal_made_ahead_that_no_longer_applies_after_a_keep_is_reproposed(target,
                                                                                 tmp_path):
    script = tmp_path / "counted.py"
    script.write_text(COUNTED_PROPOSER)
    lane_dir = tmp_path / "lane"
    lane_dir.mkdir()
    done = run_loop(target, "--propose", f"{sys.executable} {script}", "--workers", "2",
                    "--max", "4", "--ahead", "1", env={"LANE_DIR": str(lane_dir)})
    assert done.returncode == 0, done.stderr  # --ahead 1: one lane, proposals in order
    got = [(r["status"], r["val_bpb"], r["description"]) for r in rows(target)]
    assert sorted(got[1:3]) == [("discard", 1.01, "[w2] set B 0.01"),
                                ("keep", 0.999, "[w1] set A -0.001")]
    # "set A -0.002" was made on the old best while the first runs went: it conflicts with
    # the kept "set A -0.001", so it is not run (no row) but recorded, and the next one runs
    assert "set A -0.002" not in (target / "results.tsv").read_text()
    (event,) = [o for o in runs(target) if o.get("event") == "reproposed"]
    assert event["description"] == "set A -0.002" and "conflicts" in event["reason"]
    # C (made on b0) and D run on whatever best their slot saw; a keep of one supersedes the
    # other's base, and that one is rebased and run again: both end up on the branch
    keeps = [row[1] for row in got if row[0] == "keep"]
    assert keeps == sorted(keeps, reverse=True) and keeps[-1] == 0.992
    assert "best: 0.992000" in done.stdout
    log = git(target, "log", "-3", "--format=%s").splitlines()
    assert sorted(log[:2]) == ["set C -0.004", "set D -0.003"] and log[2] == "set A -0.001"
    again = [row for row in got if "to run again" in row[2]]
    assert len(got) == 5 + len(again)
    assert "re-proposed 1" in done.stderr
    assert not git(target, "for-each-ref", "refs/autoresearch/waiting/")
    assert_clean(target)


OVERLAP_PROPOSER = '''import os, pathlib, subprocess, time
n = int(os.environ["AUTORESEARCH_ITERATION"])
spans = pathlib.Path(os.environ["SPANS"])
start = time.time()
time.sleep(3.0)  # a thinking agent (long enough to overlap on a busy machine)
knob = "ABCDE"[(n - 1) % 5]
text = pathlib.Path("train.py").read_text().replace(f"{knob} = 0.0", f"{knob} = 0.00{n}")
pathlib.Path("train.py").write_text(text)
subprocess.run(["git", "commit", "-q", "-am", f"proposal {n}"], check=True)
with open(spans, "a") as out:
    out.write(f"{n} {start} {time.time()}\\n")
'''


def test_with_two_slots_two_proposers_think_at_once_and_neither_kills_the_other(target,
                                                                                 tmp_path):
    script = tmp_path / "overlap.py"
    script.write_text(OVERLAP_PROPOSER)
    spans = tmp_path / "spans"
    gate = tmp_path / "gate"  # runs wait until every proposal is made: the lanes overlap
    done = subprocess.Popen(["bash", str(RUN_LOOP), "--repo", str(target), "--cmd",
                             f"{sys.executable} train.py", "--propose",
                             f"{sys.executable} {script}", "--workers", "2", "--max", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SPANS": str(spans),
                                 "STANDIN_HOLD_A": str(gate)})
    wait_for(lambda: spans.exists() and len(spans.read_text().splitlines()) >= 3,
             "three proposals")
    gate.write_text("")
    out, err = done.communicate(timeout=WAIT)
    assert done.returncode == 0, err
    made = {int(n): (float(a), float(b)) for n, a, b in
            (line.split() for line in spans.read_text().splitlines())}
    assert sorted(made) == [1, 2, 3]  # every proposer finished: none was killed by another
    (a2, b2), (a3, b3) = made[2], made[3]
    assert a3 < b2 and a2 < b3  # proposals 2 and 3 were made at the same time
    assert not any(r["status"] == "crash" for r in rows(target))
    assert "experiments: 3" in out
    assert_clean(target)


def test_confirmation_labels_stay_distinct_whatever_order_the_reruns_end_in():
    """Two slots run re-runs 1 and 2; 2 ends first: the next re-run is 3, not 2 again. A re-run
    a restart killed (no row) gives its label to the one that replaces it."""
    from arcore import noise

    class Fake(noise.Noise):
        def __init__(self, rows, jobs):
            self.state = {"best": "b" * 40, "confirm": {"commit": "c" * 40, "desc": "x",
                                                        "k": 3, "rows_start": 0}}
            self.jobs, self.rows = jobs, rows

        def confirm_rows(self, c):
            return self.rows

    held = {"description": "x", "status": "keep"}
    two = {"description": "[w2] x (confirm 2/3)", "status": "discard"}
    one_running = {1: {"kind": "confirm", "desc": "x (confirm 1/3)"}}
    assert Fake([held, two], one_running).confirm_job()["desc"] == "x (confirm 3/3)"
    assert Fake([held, two], {}).confirm_job()["desc"] == "x (confirm 1/3)"
    assert Fake([held], {}).confirm_job()["desc"] == "x (confirm 1/3)"
    assert Fake([held, two, {"description": "x (confirm 1/3)", "status": "discard"}],
                {2: {"kind": "confirm", "desc": "x (confirm 3/3)"}}).confirm_job() is None
