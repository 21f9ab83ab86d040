"""Scratch target repositories for the tests: upstream's layout with stand-in scripts.

``make_repo(tmp_path)`` returns a git repo (branch ``autoresearch/test``) holding the stand-in
prepare.py, pyproject.toml, uv.lock, program.md (tests/fixtures/standins/target/) and the
``ok.py`` stand-in as train.py, all committed. ``commit_train`` swaps train.py for another
stand-in (or edits its constants) and commits, as an agent's experiment would.

The stand-ins print a val_bpb without calling an evaluator, so their sessions are frozen with
``PRINTED`` in the environment (``AUTORESEARCH_METRIC_SOURCE=printed``): tests/conftest.py
sets it for every test; a test that builds its environment from scratch adds it itself, and
a test of the attested metric removes it (tests/test_attest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

STANDINS = Path(__file__).parent / "fixtures" / "standins"
PRINTED = {"AUTORESEARCH_METRIC_SOURCE": "printed"}


# The knobs of the scheduler tests' stand-in train.py: five constants three lines apart, so a
# patch of one knob still applies (3-way) on a base where another one changed.
KNOB_LINES = "".join(f"{k} = 0.0\n" + ("#\n#\n#\n" if k != "E" else "") for k in "ABCDE")

# Prepended to a stand-in proposer's source: take_number(path) gives 0, 1, 2, ... once each,
# however many lanes ask at once (a plain read-then-write lets two read a half-written file).
TAKE_NUMBER = '''import fcntl
def take_number(path):
    with open(path, "a+") as count:
        fcntl.flock(count, fcntl.LOCK_EX)
        count.seek(0)
        k = int(count.read() or 0)
        count.seek(0)
        count.truncate()
        count.write(str(k + 1))
    return k
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(tmp_path: Path, name: str = "target", train: str | None = None) -> Path:
    """The scratch target; ``train``: a train.py source of the test's own, committed on top."""
    repo = tmp_path / name
    shutil.copytree(STANDINS / "target", repo)
    shutil.copy(STANDINS / "ok.py", repo / "train.py")
    commit_baseline(repo)
    if train is not None:
        (repo / "train.py").write_text(train)
        git(repo, "commit", "-q", "-am", "stand-in train.py")
    return repo


def commit_baseline(repo: Path) -> Path:
    """``git init`` on branch autoresearch/test, a test identity, everything committed as
    "baseline"."""
    git(repo, "init", "-q", "-b", "autoresearch/test")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "commit.gpgsign", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    return repo


def commit_train(repo: Path, message: str, standin: str | None = None, **constants) -> str:
    """Replaces train.py with a stand-in and/or sets its constants (VAL_BPB=0.9...), commits."""
    train = repo / "train.py"
    if standin:
        shutil.copy(STANDINS / standin, train)
    text = train.read_text()
    for key, value in constants.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
        if not count:
            text += f"\n{key} = {value}\n"
    train.write_text(text)
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


def live_tagged(test_id: str) -> list[int]:
    """Live (non-zombie) processes that carry ``LOOP_TEST_ID=test_id`` in their environment
    (a test's own id, inherited by everything it starts)."""
    needle = f"LOOP_TEST_ID={test_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found
