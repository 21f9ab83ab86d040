"""Finding uv one way for every script, and environment failures that are not failed ideas."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from arcore import hardware, ledger, uvenv
from scratchrepo import commit_train, git, make_repo

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run-experiment.sh"


def fake_uv(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    uv = directory / "uv"
    uv.write_text('#!/usr/bin/env bash\nif [[ "${1:-}" == --version ]]; then echo "uv 0.9.7"; exit 0; fi\n'
                  'if [[ "${1:-}" == run ]]; then shift; exec python3 "$@"; fi\nexit 2\n')
    uv.chmod(0o755)
    return uv


def bare_path() -> str:
    python = subprocess.run(["which", "python3"], capture_output=True, text=True).stdout.strip()
    return "/usr/bin:/bin:" + os.path.dirname(python)


# ---------------------------------------------------------------------------
# find_uv (pure over env and the file system)
# ---------------------------------------------------------------------------

def test_uv_in_local_bin_but_not_on_path_is_found_and_the_place_is_named(tmp_path):
    uv = fake_uv(tmp_path / "home" / ".local" / "bin")
    found, where = uvenv.find_uv({"PATH": "/usr/bin:/bin"}, home=str(tmp_path / "home"))
    assert found == str(uv) and where == "~/.local/bin"


def test_uv_on_path_wins_over_the_install_directories(tmp_path):
    fake_uv(tmp_path / "home" / ".local" / "bin")
    on_path = fake_uv(tmp_path / "bin")
    found, where = uvenv.find_uv({"PATH": str(tmp_path / "bin")}, home=str(tmp_path / "home"))
    assert (found, where) == (str(on_path), "PATH")


def test_uv_install_dir_and_cargo_bin_are_searched(tmp_path):
    custom = fake_uv(tmp_path / "custom")
    env = {"PATH": "/nonexistent", "UV_INSTALL_DIR": str(tmp_path / "custom")}
    assert uvenv.find_uv(env, home=str(tmp_path)) == (str(custom), "$UV_INSTALL_DIR")
    cargo = fake_uv(tmp_path / "home" / ".cargo" / "bin")
    assert uvenv.find_uv({"PATH": ""}, home=str(tmp_path / "home")) == (str(cargo), "~/.cargo/bin")


@pytest.mark.parametrize(("line", "uses"), [
    ("uv run train.py", True), ("srun --gres=gpu:1 uv run train.py", True),
    ("cd x && uv run train.py", True), ("python3 train.py", False), ("uvicorn app", False),
    ("./.venv/bin/python train.py", False)])
def test_a_command_line_that_runs_uv_is_told_from_one_that_does_not(line, uses):
    assert uvenv.uses_uv(line) is uses


def test_no_uv_anywhere_says_where_it_looked(tmp_path):
    found, why = uvenv.find_uv({"PATH": str(tmp_path)}, home=str(tmp_path))
    assert found is None and "~/.local/bin" in why and "PATH" in why


def test_the_bash_fallback_searches_the_same_places_in_the_same_order():
    common = (ROOT / "scripts" / "common.sh").read_text()
    listed = re.search(r"AR_UV_DIRS=\(([^)]*)\)", common)
    assert listed, "common.sh lists no AR_UV_DIRS"
    assert tuple(listed.group(1).replace('"', "").split()) == uvenv.UV_DIRS_FOR_BASH
    assert len(uvenv.UV_DIRS_FOR_BASH) == len(uvenv.UV_DIRS)


def test_check_hardware_finds_uv_off_path_and_says_where(tmp_path, monkeypatch):
    fake_uv(tmp_path / ".local" / "bin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", bare_path())
    tools = hardware.probe_tools()
    assert tools["uv"] == "0.9.7"
    report = hardware.check(repo=None, find_repo=False, gpu=False)
    assert not any("uv is not installed" in b for b in report["blockers"])
    assert any(".local/bin/uv" in w and "not on PATH" in w for w in report["warnings"])


# ---------------------------------------------------------------------------
# environment_failure (pure)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("log", "code", "kind"), [
    ("bash: line 1: uv: command not found\n", 127, "command"),
    ("bash: uv: command not found\n", 127, "command"),
    ("error: Failed to fetch: `https://pypi.org/simple/torch/`\n  Caused by: dns error: failed to "
     "lookup address information\n", 2, "network"),
    ("Using CPython 3.10.12\nerror: Failed to create virtualenv\n  Caused by: Permission denied "
     "(os error 13)\n", 2, "venv"),
    ("error: No interpreter found for Python >=3.10 in managed installations\n", 2, "venv"),
])
def test_failures_before_train_py_starts_are_environment_failures(log, code, kind):
    found = uvenv.environment_failure(log, code)
    assert found is not None and found["kind"] == kind and found["fix"]


@pytest.mark.parametrize(("log", "code"), [
    ("Traceback (most recent call last):\n  File \"train.py\"\nNameError: x\n", 1),
    ("step 00001 | loss 3.0\nerror: failed to fetch\n", 1),  # train.py itself had started
    ("---\nval_bpb: 1.0\n", 0),
    ("bash: line 1: uv: command not found\n", 0),
    ("Killed\n", 137),
    ("", 1),
])
def test_a_failure_of_the_idea_itself_is_not_an_environment_failure(log, code):
    assert uvenv.environment_failure(log, code) is None


def test_a_timed_out_run_is_never_an_environment_failure():
    assert uvenv.environment_failure("bash: uv: command not found\n", 127, timed_out=True) is None


# ---------------------------------------------------------------------------
# run-experiment.sh end to end
# ---------------------------------------------------------------------------

@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", bare_path())
    return make_repo(tmp_path)


def run(repo: Path, *args: str, cmd: str = "python3 train.py") -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--repo", str(repo), "--cmd", cmd, "--json",
                           *args], capture_output=True, text=True, timeout=120)


def test_uv_off_path_is_found_for_the_training_command_and_the_run_is_judged(repo, tmp_path):
    fake_uv(tmp_path / "home" / ".local" / "bin")
    done = run(repo, cmd="uv run train.py")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "keep"
    assert ".local/bin/uv" in done.stderr


def test_a_command_not_found_writes_no_row_reverts_nothing_and_exits_1_with_the_fix(repo):
    assert run(repo).returncode == 0  # the baseline
    candidate = commit_train(repo, "a good idea", VAL_BPB=0.9)
    done = run(repo, cmd="no-such-tool-xyz run train.py")
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert len(ledger.read_ledger(str(repo / "results.tsv"))) == 1
    assert git(repo, "rev-parse", "HEAD") == candidate
    assert "no row" in done.stderr and "command not found" in done.stderr
    assert "PATH" in done.stderr  # the fix
    again = run(repo)  # the fix applied: the same candidate is judged
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "keep"


def test_uv_unable_to_reach_its_index_is_an_environment_failure_not_a_crash_row(repo, tmp_path):
    assert run(repo).returncode == 0
    commit_train(repo, "another idea", VAL_BPB=0.95)
    broken = tmp_path / "offline"
    broken.mkdir()
    (broken / "uv").write_text("#!/usr/bin/env bash\necho 'error: Failed to fetch: "
                               "`https://pypi.org/simple/numpy/`' >&2\necho '  Caused by: dns "
                               "error: failed to lookup address information' >&2\nexit 2\n")
    (broken / "uv").chmod(0o755)
    done = run(repo, cmd=f"{broken}/uv run train.py")
    assert done.returncode == 1 and done.stdout == ""
    assert "network" in done.stderr or "index" in done.stderr
    assert len(ledger.read_ledger(str(repo / "results.tsv"))) == 1


def test_the_loop_stops_on_an_environment_failure_instead_of_burning_its_crash_budget(repo, tmp_path):
    queue = tmp_path / "queue"
    queue.mkdir()
    commit_train(repo, "an idea", VAL_BPB=0.9)
    git(repo, "format-patch", "-q", "-1", "-o", str(queue))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "run-loop.sh"), "--repo", str(repo),
                           "--queue", str(queue), "--cmd", "no-such-tool-xyz train.py",
                           "--max-crashes", "5", "--grace", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert ledger.read_ledger(str(repo / "results.tsv")) == []
    assert "before train.py started" in done.stderr
    assert done.stderr.count("no-such-tool-xyz") <= 3  # one attempt, not five
