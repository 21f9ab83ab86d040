"""run-loop.sh / arcore.loop: the bounded, resumable loop, driven end to end.

Each test builds a scratch target repo (stand-in train.py from tests/fixtures/agents/), puts
the stand-in agent CLIs on PATH and runs the real scripts/run-loop.sh on top of the real
run-experiment.sh. Phases are hit deterministically: the stand-in train.py and the gate
agent block on a file, the loop's test hook (AUTORESEARCH_LOOP_PAUSE) pauses at a phase and
writes paused-<phase>; tests wait for those files, never for a fixed time.

After every scenario the same invariants are checked: HEAD at the expected kept commit, no
tracked change, no new untracked file, a well-formed ledger with the expected rows, and no
process of the test left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from arcore import context, journal, ledger, loop
from scratchrepo import PRINTED, live_tagged

ROOT = Path(__file__).resolve().parent.parent
RUN_LOOP = ROOT / "scripts" / "run-loop.sh"
AGENTS = ROOT / "tests" / "fixtures" / "agents"
WAIT = 60.0  # a cap for waiting on a file, never a synchronisation by itself


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A scratch target: train.py, prepare.py, program.md on main, then autoresearch/test."""
    repo = tmp_path / "target"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "Test")
    shutil.copy(AGENTS / "train.py", repo / "train.py")
    (repo / "prepare.py").write_text("TIME_BUDGET = 300\n")
    (repo / "program.md").write_text("# program\nLower val_bpb wins.\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    git(repo, "checkout", "-q", "-b", "autoresearch/test")
    return repo


@pytest.fixture
def env(tmp_path: Path) -> dict:
    """PATH with the stand-in agents first; a test id every descendant inherits."""
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "FAKE_",
                                                                     "STANDIN_"))}
    out.update(PATH=f"{AGENTS}:{os.environ['PATH']}", FAKE_AGENT_DIR=str(agent_dir),
               AUTORESEARCH_CACHE_DIR=str(cache), LOOP_TEST_ID=uuid.uuid4().hex,
               AUTORESEARCH_LOOP_HOOK_DIR=str(tmp_path / "hook"), **PRINTED)
    (tmp_path / "hook").mkdir()
    return out


def loop_args(*extra: str) -> list[str]:
    return ["bash", str(RUN_LOOP), "--cmd", f"{sys.executable} train.py", "--grace", "1",
            *extra]


def run_loop(repo: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(loop_args(*extra), cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)


def start_loop(repo: Path, env: dict, *extra: str) -> subprocess.Popen:
    """The loop in the background, its output to files (a SIGKILLed loop's children keep
    pipes open, files they cannot hold up)."""
    out = repo.parent / f"loop-{uuid.uuid4().hex[:8]}"
    with open(f"{out}.out", "w") as stdout, open(f"{out}.err", "w") as stderr:
        proc = subprocess.Popen(loop_args(*extra), cwd=repo, env=env, stdout=stdout,
                                stderr=stderr, text=True)
    proc.out_base = out  # type: ignore[attr-defined]
    return proc


def collect(proc: subprocess.Popen) -> tuple[str, str]:
    proc.wait(timeout=60)
    base = proc.out_base  # type: ignore[attr-defined]
    return Path(f"{base}.out").read_text(), Path(f"{base}.err").read_text()


def stderr_of(proc: subprocess.Popen) -> str:
    return Path(f"{proc.out_base}.err").read_text()  # type: ignore[attr-defined]


def wait_file(path: Path, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"loop exited ({proc.returncode}) before {path.name}: "
                                 f"{stderr_of(proc)}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def wait_started(gate: Path, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not any(gate.glob("started*")):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"loop exited ({proc.returncode}) before the gate: "
                                 f"{stderr_of(proc)}")
        assert time.monotonic() < deadline, "the gated process never started"
        time.sleep(0.02)


def wait_rows(repo: Path, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(rows(repo)) < count:
        assert time.monotonic() < deadline, f"never got {count} rows"
        time.sleep(0.02)


def rows(repo: Path) -> list[dict]:
    return ledger.read_ledger(str(repo / "results.tsv"))


def statuses(repo: Path) -> list[str]:
    return [r["status"] for r in rows(repo)]


def live_processes(env: dict) -> list[int]:
    """Live (non-zombie) processes that carry this test's id in their environment."""
    return live_tagged(env["LOOP_TEST_ID"])


def assert_settled(repo: Path, env: dict, head: str, nrows: int | None = None) -> None:
    """HEAD at ``head``, no tracked change, no stray file, whole rows, nothing running."""
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "autoresearch/test"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    stray = set(git(repo, "ls-files", "--others", "--exclude-standard").split()) - {"mine.txt"}
    assert stray == set()
    assert ledger.validate(str(repo / "results.tsv")) == []
    if nrows is not None:
        assert len(rows(repo)) == nrows
    described = [(r["commit"], r["description"]) for r in rows(repo)]
    assert len(described) == len(set(described)), f"a duplicated row: {described}"
    if os.path.isdir("/proc"):
        deadline = time.monotonic() + 10
        while live_processes(env) and time.monotonic() < deadline:
            time.sleep(0.05)  # a killed process may take a moment to be reaped
        assert live_processes(env) == []
    state = journal.load_journal(str(repo))
    assert state.get("phase", "idle") == "idle"


def clean_env(env: dict, *drop: str) -> dict:
    return {k: v for k, v in env.items() if k not in drop}


# ---------------------------------------------------------------------------
# Candidates from a proposer
# ---------------------------------------------------------------------------


def test_an_empty_track_starts_with_a_baseline_then_keeps_a_better_proposal(target, env):
    start = git(target, "rev-parse", "HEAD")
    env["FAKE_AGENT_VALUES"] = "0.99,1.5"
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "2")
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "keep", "discard"]
    assert rows(target)[0]["commit"] == start[:7] and rows(target)[0]["description"] == "baseline"
    kept = rows(target)[1]["commit"]
    assert_settled(target, env, git(target, "rev-parse", kept), 3)
    assert "experiments: 2" in done.stdout and "best: 0.990000" in done.stdout
    assert "[2/2] discard 1.500000 | best 0.990000" in done.stderr


@pytest.mark.parametrize("mode, reason", [
    ("crash", "proposer exited with status 1"),
    ("none", "proposer made no commit"),
    ("twice", "proposer made 2 commits"),
    ("prepare", "prepare.py (only train.py may change)"),
    ("program", "program.md (only train.py may change)"),
    ("junk", "proposer left untracked files: notes.txt, scratch/helper.py"),
    ("dirty", "proposer left uncommitted changes: train.py"),
    ("ledger", "proposer modified results.tsv"),
    ("hang", "proposer timed out after 1s"),
])
def test_a_bad_proposal_is_restored_and_logged_as_a_crash(target, env, mode, reason):
    base = git(target, "rev-parse", "HEAD")
    (target / "mine.txt").write_text("the user's own untracked file\n")
    env["FAKE_AGENT_MODE"] = mode
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "1",
                    "--propose-timeout", "1")
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "crash"]
    crash = rows(target)[1]
    assert reason in crash["description"]
    assert crash["val_bpb"] == 0.0 and crash["memory_gb"] == 0.0
    assert (target / "mine.txt").exists()
    assert not (target / "notes.txt").exists() and not (target / "scratch").exists()
    assert_settled(target, env, base, 2)
    rejected = git(target, "for-each-ref", "--format=%(refname)", "refs/autoresearch/rejected/")
    if mode in ("twice", "prepare", "program", "junk", "dirty", "ledger"):
        assert crash["commit"] != base[:7]
        assert any(ref.endswith(tuple(c for c in [crash["commit"]])) or crash["commit"] in ref
                   for ref in rejected.splitlines())
    else:
        assert crash["commit"] == base[:7]


def test_a_proposer_that_leaves_a_background_process_has_it_killed(target, env):
    env["FAKE_AGENT_MODE"] = "background"
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "1")
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "keep"]
    assert_settled(target, env, git(target, "rev-parse", rows(target)[1]["commit"]), 2)


def test_hours_is_a_deadline_for_starting_experiments(target, env):
    done = run_loop(target, env, "--propose", "fake-agent", "--hours", "0.00001")
    assert done.returncode == 0, done.stderr
    assert "reached --hours" in done.stderr
    assert statuses(target) == ["keep"]


def test_the_loop_stops_after_k_crashes_in_a_row(target, env):
    env["FAKE_AGENT_MODE"] = "crash"
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "10", "--max-crashes", "2")
    assert done.returncode == 1
    assert "2 crashes in a row" in done.stderr
    assert statuses(target) == ["keep", "crash", "crash"]


def test_neither_a_proposer_nor_a_queue_is_refused(target, env):
    done = run_loop(target, env)
    assert done.returncode == 2
    assert "re-running the same code is not an experiment" in done.stderr
    assert not (target / "results.tsv").exists()


@pytest.mark.parametrize("setup, message", [
    (lambda r: git(r, "checkout", "-q", "main"), "default branch"),
    (lambda r: git(r, "checkout", "-q", "--detach"), "detached"),
    (lambda r: git(r, "checkout", "-q", "-b", "feature"), "not autoresearch/<tag>"),
    (lambda r: (r / "train.py").write_text("VAL_BPB = 2.0\n"), "uncommitted changes"),
])
def test_unsafe_git_states_are_refused_with_exit_4(target, env, setup, message):
    setup(target)
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "1")
    assert done.returncode == 4
    assert message in done.stderr
    assert not (target / "results.tsv").exists()


def test_a_user_commit_made_on_the_branch_before_the_loop_survives(target, env):
    (target / "train.py").write_text((target / "train.py").read_text()
                                     .replace("VAL_BPB = 1.000000", "VAL_BPB = 0.900000"))
    git(target, "commit", "-q", "-am", "my own idea")
    mine = git(target, "rev-parse", "HEAD")
    env["FAKE_AGENT_MODE"] = "twice,none,good"
    env["FAKE_AGENT_VALUES"] = "0.95"
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "3")
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "crash", "crash", "discard"]
    assert rows(target)[0]["commit"] == mine[:7]
    assert_settled(target, env, mine, 4)


def test_a_user_commit_on_top_of_the_last_keep_is_built_on_and_never_reverted(target, env):
    env["FAKE_AGENT_VALUES"] = "0.99"
    assert run_loop(target, env, "--propose", "fake-agent", "--max", "1").returncode == 0
    with open(target / "train.py", "a") as handle:
        handle.write("# a note of mine\n")
    git(target, "commit", "-q", "-am", "my note")
    mine = git(target, "rev-parse", "HEAD")
    fresh = Path(env["FAKE_AGENT_DIR"]).parent / "agent2"
    env.update(FAKE_AGENT_MODE="prepare,good", FAKE_AGENT_VALUES="1.5",
               FAKE_AGENT_DIR=str(fresh))
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "2")
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "keep", "crash", "discard"], [r["description"] for r in rows(target)]
    assert_settled(target, env, mine, 4)


def test_the_proposer_gets_its_context_and_a_plateau_note_after_m_failures(target, env):
    env["FAKE_AGENT_VALUES"] = "1.1,1.2,1.3"
    # --ahead 0: the third proposal is made after the second run's verdict (with --ahead 1 it
    # is made while that run goes, and sees one failure, not two)
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "3", "--plateau", "2",
                    "--desc", "night1", "--ahead", "0")
    assert done.returncode == 0, done.stderr
    agent = Path(env["FAKE_AGENT_DIR"])
    first, third = (agent / "context-1.md").read_text(), (agent / "context-3.md").read_text()
    assert "Best kept so far: **1.000000**" in first and "program.md" in first
    assert "Plateau" not in first
    assert "Plateau: the last 2 experiments did not improve" in third
    assert "Change direction" in third and "night1: try VAL_BPB 1.100000" in third
    assert [r["description"] for r in rows(target)][1] == "night1: try VAL_BPB 1.100000"
    assert "plateau: 2 experiments without a keep" in done.stderr
    assert "What has been tried in this track" in third
    assert "3 experiments in this track: 1 keep, 2 discard, 0 crash" in third
    assert "discard\t1.100000\tnight1: try VAL_BPB 1.100000" in third
    assert "In flight" not in third  # nothing runs while a serial loop proposes


def test_the_whats_been_tried_digest_holds_every_keep_and_is_bounded():
    rows_ = [{"commit": f"{i:07d}", "val_bpb": 1.0 - i / 1000, "memory_gb": 1.0,
              "status": "keep" if i % 50 == 0 else "discard", "description": f"idea {i} " * 8}
             for i in range(2000)]
    text = context.tried_digest(rows_, limit=6000)
    assert len(text) < 6000 + 200
    assert all(f"idea {i} " in text for i in range(0, 2000, 50))   # every keep
    assert "idea 1999 " in text and "idea 1 idea 1 " not in text    # the newest others
    assert "older ones not shown" in text
    assert text.startswith("2000 experiments in this track: 40 keep, 1960 discard")


# ---------------------------------------------------------------------------
# Queue mode
# ---------------------------------------------------------------------------


def make_patches(repo: Path, out: Path, values: list[str]) -> None:
    """format-patch one commit per value on a throwaway branch, then drop the branch."""
    git(repo, "checkout", "-q", "-b", "scratch")
    for value in values:
        text = (repo / "train.py").read_text()
        import re
        (repo / "train.py").write_text(re.sub(r"^VAL_BPB = [0-9.]+", f"VAL_BPB = {value}",
                                              text, count=1, flags=re.M))
        git(repo, "commit", "-q", "-am", f"set VAL_BPB to {value}")
    git(repo, "format-patch", "-q", "-o", str(out), f"HEAD~{len(values)}")
    git(repo, "checkout", "-q", "autoresearch/test")
    git(repo, "branch", "-q", "-D", "scratch")


def test_a_queue_runs_each_patch_once_in_name_order_and_skips_judged_ones(target, env,
                                                                          tmp_path):
    queue = tmp_path / "queue"
    make_patches(target, queue, ["0.98", "0.97"])  # the second is built on the first
    (queue / "0003-broken.patch").write_text("From 0 Mon Sep 17 00:00:00 2001\nSubject: "
                                             "[PATCH] broken\n\n---\n garbage\n")
    done = run_loop(target, env, "--queue", str(queue))
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "keep", "keep", "crash"]
    assert [r["description"] for r in rows(target)][1:3] == ["set VAL_BPB to 0.98",
                                                              "set VAL_BPB to 0.97"]
    assert "patch 0003-broken.patch does not apply" in rows(target)[3]["description"]
    head = git(target, "rev-parse", "HEAD")
    assert_settled(target, env, head, 4)
    again = run_loop(target, env, "--queue", str(queue))
    assert again.returncode == 5
    assert "already judged" in again.stderr
    assert len(rows(target)) == 4


# ---------------------------------------------------------------------------
# Noise-aware acceptance
# ---------------------------------------------------------------------------


def test_baseline_repeats_record_the_noise_floor_and_confirm_rejects_a_lucky_gain(
        target, env, tmp_path):
    values = tmp_path / "values"
    # baseline x3 (mean 1.02, std 0.02), a candidate within the floor + 2 confirmations
    # (mean 1.02: no gain), then a candidate far outside the floor (kept without confirmation)
    values.write_text("1.00 1.02 1.04 1.01 1.03 1.02 0.90")
    env.update(STANDIN_VALUES=str(values), FAKE_AGENT_VALUES="1.01,0.90")
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "2",
                    "--baseline-repeats", "3", "--confirm", "2")
    assert done.returncode == 0, done.stderr
    floor = json.loads((target / ".autoresearch" / "session.json").read_text())["noise_floor"]
    assert floor == pytest.approx(0.02)
    got = [(r["status"], r["val_bpb"]) for r in rows(target)]
    assert got[:3] == [("keep", 1.0), ("discard", 1.02), ("discard", 1.04)]
    assert got[3] == ("keep", 1.01)
    assert [s for s, _ in got[4:6]] == ["discard", "discard"]    # the confirmations
    assert got[6] == ("discard", pytest.approx(1.02))              # the withdrawal
    assert "not confirmed" in rows(target)[6]["description"]
    assert got[7] == ("keep", 0.90)
    assert_settled(target, env, git(target, "rev-parse", rows(target)[7]["commit"]), 8)


def test_confirm_keeps_a_within_noise_gain_whose_mean_still_beats_the_best(target, env,
                                                                          tmp_path):
    values = tmp_path / "values"
    values.write_text("1.00 1.02 1.04 1.01 1.00 1.00")  # floor 0.02; mean 1.0033 < 1.02
    env.update(STANDIN_VALUES=str(values), FAKE_AGENT_VALUES="1.01")
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "1",
                    "--baseline-repeats", "3", "--confirm", "2")
    assert done.returncode == 0, done.stderr
    assert "confirmed: mean 1.003333 over 3 runs beats 1.020000" in done.stderr
    candidate = rows(target)[3]["commit"]
    assert [r["commit"] for r in rows(target)[3:]] == [candidate] * 3
    assert_settled(target, env, git(target, "rev-parse", candidate), 6)


def test_a_queue_killed_mid_judging_resumes_without_judging_a_patch_twice(target, env,
                                                                         tmp_path):
    queue = tmp_path / "queue"
    make_patches(target, queue, ["0.98", "0.97"])
    assert run_loop(target, env, "--queue", str(queue), "--max", "0").returncode == 0
    hook = Path(env["AUTORESEARCH_LOOP_HOOK_DIR"])
    proc = start_loop(target, dict(env, AUTORESEARCH_LOOP_PAUSE="judging"), "--queue",
                      str(queue))
    wait_file(hook / "paused-judging", proc)
    proc.kill()
    proc.wait(timeout=30)
    again = run_loop(target, env, "--queue", str(queue))
    assert again.returncode == 0, again.stderr
    assert statuses(target) == ["keep", "keep", "keep"]
    assert [r["description"] for r in rows(target)][1:] == ["set VAL_BPB to 0.98",
                                                            "set VAL_BPB to 0.97"]
    assert_settled(target, env, git(target, "rev-parse", rows(target)[2]["commit"]), 3)
    assert run_loop(target, env, "--queue", str(queue)).returncode == 5


# ---------------------------------------------------------------------------
# Signals: SIGINT / SIGTERM stop cleanly at every phase
# ---------------------------------------------------------------------------


def baseline_only(target: Path, env: dict) -> str:
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "0")
    assert done.returncode == 0, done.stderr
    return git(target, "rev-parse", "HEAD")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("phase", ["proposing", "running", "judging", "appending"])
def test_a_signal_at_any_phase_stops_cleanly(target, env, tmp_path, sig, phase):
    base = baseline_only(target, env)
    gate = tmp_path / "gate"
    gate.mkdir()
    hook = Path(env["AUTORESEARCH_LOOP_HOOK_DIR"])
    if phase == "proposing":
        env.update(FAKE_AGENT_MODE="gate")
        env["FAKE_AGENT_DIR"] = str(gate)
    elif phase == "running":
        env["STANDIN_GATE_DIR"] = str(gate)
    elif phase == "judging":
        env.update(AUTORESEARCH_LOOP_PAUSE="judging", FAKE_AGENT_VALUES="1.5")
    else:
        env.update(FAKE_AGENT_MODE="none", AUTORESEARCH_LOOP_PAUSE="appending")
    proc = start_loop(target, env, "--propose", "fake-agent", "--max", "1")
    if phase in ("proposing", "running"):
        wait_started(gate, proc)
    else:
        wait_file(hook / f"paused-{phase}", proc)
    proc.send_signal(sig)
    out, err = collect(proc)
    if phase == "judging":  # the row was written before the signal: the verdict stands
        assert proc.returncode == 130, err
        assert statuses(target) == ["keep", "discard"]
        assert_settled(target, env, base, 2)
    elif phase == "appending":  # the restore is done; the crash row is still written whole
        assert proc.returncode == 130, err
        assert statuses(target) == ["keep", "crash"]
        assert_settled(target, env, base, 2)
    else:
        assert proc.returncode == 130, err
        assert statuses(target) == ["keep"]
        assert_settled(target, env, base, 1)
    assert "status: interrupted" in out


def test_sigterm_stops_a_proposer_that_ignores_sigterm(target, env, tmp_path):
    base = baseline_only(target, env)
    gate = tmp_path / "gate"
    gate.mkdir()
    env.update(FAKE_AGENT_MODE="hang", FAKE_AGENT_DIR=str(gate))
    proc = start_loop(target, env, "--propose", "fake-agent", "--max", "1")
    wait_started(gate, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = collect(proc)
    assert proc.returncode == 130, err
    assert "stopped while proposing" in err
    assert_settled(target, env, base, 1)


def test_sigterm_while_a_hung_train_py_ignores_sigterm_kills_it_and_reverts(target, env,
                                                                           tmp_path):
    base = baseline_only(target, env)
    gate = tmp_path / "gate"
    gate.mkdir()
    env.update(STANDIN_GATE_DIR=str(gate), STANDIN_IGNORE_TERM="1")
    proc = start_loop(target, env, "--propose", "fake-agent", "--max", "1")
    wait_started(gate, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = collect(proc)
    assert proc.returncode == 130, err
    assert "reverted the unjudged experiment" in err
    unjudged = git(target, "for-each-ref", "--format=%(refname)", "refs/autoresearch/unjudged/")
    assert unjudged
    assert_settled(target, env, base, 1)


# ---------------------------------------------------------------------------
# SIGKILL at every phase, then a restart with the same command
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["proposing", "running", "judging", "appending"])
def test_a_restart_after_sigkill_at_any_phase_continues_without_duplicates(
        target, env, tmp_path, phase):
    base = baseline_only(target, env)
    gate = tmp_path / "gate"
    gate.mkdir()
    hook = Path(env["AUTORESEARCH_LOOP_HOOK_DIR"])
    first = dict(env)
    if phase == "proposing":
        first.update(FAKE_AGENT_MODE="gate", FAKE_AGENT_DIR=str(gate))
    elif phase == "running":
        first["STANDIN_GATE_DIR"] = str(gate)
    elif phase == "judging":
        first.update(AUTORESEARCH_LOOP_PAUSE="judging", FAKE_AGENT_VALUES="1.5")
    else:
        first.update(FAKE_AGENT_MODE="none", AUTORESEARCH_LOOP_PAUSE="appending")
    args = ("--propose", "fake-agent", "--max", "2")
    proc = start_loop(target, first, *args)
    if phase in ("proposing", "running"):
        wait_started(gate, proc)
    else:
        wait_file(hook / f"paused-{phase}", proc)
    proc.kill()
    proc.wait(timeout=30)
    if phase in ("proposing", "running"):
        assert live_processes(env), "the child should outlive a SIGKILLed loop"
    cut = journal.load_journal(str(target)).get("candidate") or ""
    env["FAKE_AGENT_VALUES"] = "0.5,0.4"
    again = run_loop(target, env, *args)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert "experiments: 2" in again.stdout   # --max 2 counts across the restart
    got = statuses(target)
    if phase == "proposing":    # the cut-short proposal is dropped (no row), two new ones
        assert got == ["keep", "keep", "keep"]
    elif phase == "running":    # the unjudged candidate runs again (once), then one more
        assert got == ["keep", "keep", "keep"]
        assert [r["commit"] for r in rows(target)].count(cut[:7]) == 1
        assert "will run again" in again.stderr
    elif phase == "judging":    # the row exists: not run again; one more experiment
        assert got == ["keep", "discard", "keep"]
    else:                       # the crash row is appended exactly once; one more experiment
        assert got == ["keep", "crash", "keep"]
    last_keep = [r for r in rows(target) if r["status"] == "keep"][-1]["commit"]
    assert_settled(target, env, git(target, "rev-parse", last_keep), 3)
    assert base != git(target, "rev-parse", "HEAD")


def test_a_baseline_cut_short_by_sigkill_runs_again_once(target, env, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = start_loop(target, dict(env, STANDIN_GATE_DIR=str(gate)), "--propose", "fake-agent",
                      "--max", "1")
    wait_started(gate, proc)
    proc.kill()
    proc.wait(timeout=30)
    env["FAKE_AGENT_VALUES"] = "0.5"
    again = run_loop(target, env, "--propose", "fake-agent", "--max", "1")
    assert again.returncode == 0, again.stderr
    assert statuses(target) == ["keep", "keep"]
    assert rows(target)[0]["description"] == "baseline"
    assert_settled(target, env, git(target, "rev-parse", rows(target)[1]["commit"]), 2)


def test_a_stale_run_that_finished_after_the_loop_died_is_not_run_again(target, env,
                                                                       tmp_path):
    baseline_only(target, env)
    gate = tmp_path / "gate"
    gate.mkdir()
    first = dict(env, STANDIN_GATE_DIR=str(gate), FAKE_AGENT_VALUES="0.5")
    proc = start_loop(target, first, "--propose", "fake-agent", "--max", "1")
    wait_started(gate, proc)
    proc.kill()
    proc.wait(timeout=30)
    (gate / "release").write_text("")
    answer = target / ".autoresearch" / "worktrees" / "w1" / ".autoresearch" / "runs.jsonl"
    wait_file(answer)                 # run-experiment.sh outlived the loop and judged it
    deadline = time.monotonic() + WAIT
    while live_processes(env) and time.monotonic() < deadline:
        time.sleep(0.02)
    again = run_loop(target, env, "--propose", "fake-agent", "--max", "1")
    assert again.returncode == 0, again.stderr
    assert statuses(target) == ["keep", "keep"]
    assert "experiments: 1" in again.stdout
    assert_settled(target, env, git(target, "rev-parse", rows(target)[1]["commit"]), 2)


def test_a_second_loop_in_the_same_repo_is_refused(target, env, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = start_loop(target, dict(env, STANDIN_GATE_DIR=str(gate)), "--propose", "fake-agent",
                      "--max", "1")
    wait_started(gate, proc)
    other = run_loop(target, env, "--propose", "fake-agent", "--max", "1")
    assert other.returncode == 4 and "another loop is running" in other.stderr
    (gate / "release").write_text("")
    collect(proc)
    assert proc.returncode == 0


# ---------------------------------------------------------------------------
# Pure pieces (importable by arcore.parallel)
# ---------------------------------------------------------------------------


def test_the_status_line_shows_progress_best_verdict_elapsed_and_eta():
    line = context.status_line(3, 10, "discard", 0.9981, 0.991, 900, context.eta(3, 900, 10, None))
    assert line == "[3/10] discard 0.998100 | best 0.991000 | elapsed 0:15:00 | ETA 0:35:00"
    assert context.eta(0, 0, None, None) is None
    assert context.eta(2, 100, 10, 60.0) == 60.0


def test_the_prompt_template_renders_every_placeholder():
    template = (ROOT / "templates" / "proposer-prompt.md").read_text()
    facts = {"program": "program.md", "metric": "val_bpb", "direction": "lower",
             "best": "0.990000", "base": "abc1234", "iteration": 4, "recent": "(rows)",
             "plateau": "", "failures": 0, "editable": "train.py"}
    out = context.render_prompt(template, facts)
    assert "{{" not in out and "0.990000" in out and "abc1234" in out


def test_the_journal_is_written_atomically_and_read_back(tmp_path):
    journal.save_journal(str(tmp_path), {"phase": "running", "candidate": "abc"})
    assert journal.load_journal(str(tmp_path)) == {"phase": "running", "candidate": "abc"}
    assert [p.name for p in (tmp_path / ".autoresearch").iterdir()] == ["loop.json"]
    (tmp_path / ".autoresearch" / "loop.json").write_text("{torn")
    assert journal.load_journal(str(tmp_path)) == {}


# ---------------------------------------------------------------------------
# Adversarial review: the user moves the branch while a run goes
# ---------------------------------------------------------------------------


def start_losing_run(target: Path, env: dict, tmp_path: Path, most: str):
    """A baseline, then a loop (--max most) whose first candidate, a loser at 1.5, is running
    and held at the gate (write gate/release to let it finish). Returns (gate, process)."""
    assert run_loop(target, env, "--propose", "fake-agent", "--max", "0").returncode == 0
    gate = tmp_path / "gate"
    gate.mkdir()
    env.update(FAKE_AGENT_VALUES="1.5", STANDIN_GATE_DIR=str(gate))
    proc = start_loop(target, env, "--propose", "fake-agent", "--max", most)
    wait_started(gate, proc)
    return gate, proc


def test_a_commit_made_during_a_run_stops_the_loop_and_is_never_reset(target, env, tmp_path):
    base = git(target, "rev-parse", "HEAD")
    gate, proc = start_losing_run(target, env, tmp_path, "3")
    cand = journal.load_journal(str(target))["candidate"]
    assert git(target, "rev-parse", "HEAD") == base  # the run is in its slot, not here
    (target / "notes.md").write_text("my notes\n")
    git(target, "add", "notes.md")
    git(target, "commit", "-q", "-m", "user: notes")
    mine = git(target, "rev-parse", "HEAD")
    (gate / "release").write_text("")
    _, err = collect(proc)
    assert proc.returncode == 4, err
    assert f"moved to {mine[:7]} during the run of {cand[:7]}" in err
    assert git(target, "rev-parse", "HEAD") == mine and git(target, "rev-parse", "HEAD~1") == base
    assert statuses(target) == ["keep", "discard"]
    assert journal.load_journal(str(target)).get("phase", "idle") == "idle"


def test_a_branch_switched_during_a_run_stops_the_loop_and_neither_branch_is_touched(
        target, env, tmp_path):
    base = git(target, "rev-parse", "HEAD")
    gate, proc = start_losing_run(target, env, tmp_path, "3")
    git(target, "checkout", "-q", "-b", "mine")
    (gate / "release").write_text("")
    _, err = collect(proc)
    assert proc.returncode == 4, err
    assert "switched" in err
    assert git(target, "symbolic-ref", "--short", "HEAD") == "mine"
    assert git(target, "rev-parse", "mine") == base
    assert git(target, "rev-parse", "autoresearch/test") == base
    assert statuses(target) == ["keep", "discard"]


def test_a_proposer_that_drops_the_kept_commit_is_rejected_and_the_branch_put_back(target, env):
    env["FAKE_AGENT_VALUES"] = "0.9"
    assert run_loop(target, env, "--propose", "fake-agent", "--max", "1").returncode == 0
    kept = git(target, "rev-parse", "HEAD")
    rewrite = ("git reset -q --hard HEAD~1 && "
               "sed -i 's/^VAL_BPB = .*/VAL_BPB = 0.5/' train.py && git commit -qam rewrite")
    done = run_loop(target, env, "--propose", rewrite, "--max", "1")
    assert done.returncode == 0, done.stderr
    assert statuses(target) == ["keep", "keep", "crash"]
    assert "rewrote history" in rows(target)[-1]["description"]
    assert_settled(target, env, kept, 3)
    rejected = git(target, "for-each-ref", "--format=%(refname)", "refs/autoresearch/rejected/")
    assert rejected.strip(), "the proposer's rewritten commit stays reachable"


def test_an_edit_made_during_a_run_is_never_touched_and_the_next_loop_refuses_it(target, env,
                                                                                 tmp_path):
    gate, proc = start_losing_run(target, env, tmp_path, "1")
    (target / "program.md").write_text("# program\nmy uncommitted edit\n")
    (gate / "release").write_text("")
    _, err = collect(proc)
    assert proc.returncode == 0, err  # the run was in its slot: nothing here was reset
    assert (target / "program.md").read_text() == "# program\nmy uncommitted edit\n"
    assert statuses(target) == ["keep", "discard"]
    again = run_loop(target, env, "--propose", "fake-agent", "--max", "2")
    assert again.returncode == 4 and "uncommitted changes to tracked files (program.md)" \
        in again.stderr
    assert (target / "program.md").read_text() == "# program\nmy uncommitted edit\n"


def test_a_proposer_that_runs_git_clean_fdx_loses_no_row_and_no_session(target, env):
    env["FAKE_AGENT_VALUES"] = "0.9"
    assert run_loop(target, env, "--propose", "fake-agent", "--max", "1").returncode == 0
    kept = git(target, "rev-parse", "HEAD")
    frozen = (target / ".autoresearch" / "session.json").read_text()
    runs = (target / ".autoresearch" / "runs.jsonl").read_text()
    clean = ("git clean -fdxq && sed -i 's/^VAL_BPB = .*/VAL_BPB = 0.95/' train.py "
             "&& git commit -qam tryit")
    done = run_loop(target, env, "--propose", clean, "--max", "1")
    assert statuses(target) == ["keep", "keep", "crash"], done.stderr
    assert "results.tsv" in rows(target)[-1]["description"]
    assert (target / ".autoresearch" / "session.json").read_text() == frozen
    assert (target / ".autoresearch" / "runs.jsonl").read_text() == runs
    assert git(target, "rev-parse", "HEAD") == kept


def test_a_loop_started_below_the_top_of_the_repo_exits_two_and_writes_nothing(target, env):
    sub = target / "sub"
    sub.mkdir()
    (sub / "keep.txt").write_text("x\n")
    git(target, "add", "sub")
    git(target, "commit", "-q", "-m", "sub")
    done = subprocess.run(loop_args("--propose", "fake-agent", "--max", "1"), cwd=sub, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "top of the work tree" in done.stderr
    assert git(target, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_file_the_user_creates_while_the_proposer_runs_stays_where_the_user_put_it(target,
                                                                                     env):
    assert run_loop(target, env, "--propose", "fake-agent", "--max", "0").returncode == 0
    agent = Path(env["FAKE_AGENT_DIR"])
    gated = (f"touch {agent}/started; while [ ! -e {agent}/release ]; do sleep 0.05; done; "
             "sed -i 's/^VAL_BPB = .*/VAL_BPB = 0.5/' train.py && git commit -qm try -- train.py")
    proc = start_loop(target, env, "--propose", gated, "--max", "1")
    wait_started(agent, proc)
    (target / "notes").mkdir()
    (target / "notes" / "ideas.txt").write_text("my precious notes\n")
    (agent / "release").write_text("")
    _, err = collect(proc)
    assert proc.returncode == 0, err
    assert (target / "notes" / "ideas.txt").read_text() == "my precious notes\n"
    assert not (target / ".autoresearch" / "removed").exists()
    assert statuses(target) == ["keep", "keep"]


def test_a_row_the_loop_cannot_write_fails_in_one_line_and_a_restart_writes_it_once(
        target, env, monkeypatch, capsys):
    base = git(target, "rev-parse", "HEAD")
    for key in [k for k in os.environ if k not in env]:
        monkeypatch.delenv(key)
    for key, value in dict(env, FAKE_AGENT_MODE="crash").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(target)
    assert run_loop(target, env, "--propose", "fake-agent", "--max", "0").returncode == 0

    def full_disk(path, line):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(ledger, "append_row", full_disk)  # the scheduler writes every row
    code = loop.main(loop_args("--propose", "fake-agent", "--max", "1")[2:])
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device; fix it, then restart the same command" in err
    assert "Traceback" not in err
    assert statuses(target) == ["keep"]  # the baseline, written before the disk filled
    monkeypatch.undo()
    again = run_loop(target, dict(env, FAKE_AGENT_MODE="crash"), "--propose", "fake-agent",
                     "--max", "1")
    assert again.returncode == 0, again.stderr
    assert statuses(target) == ["keep", "crash"]
    assert_settled(target, env, base, 2)
