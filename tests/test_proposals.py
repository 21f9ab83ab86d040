"""Proposals in disposable clones (arcore.proposals): what an over-eager proposer does there
cannot reach the user's repository.

Each test runs the real run-loop.sh on a scratch target with a proposer that first does
something destructive and then (on its next call) proposes honestly; afterwards the user's
untracked files, branches, refs, hooks and ledger are as they were (but for the harness's
rows), and the honest proposal was judged at its true value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from arcore import ledger, proposals
from scratchrepo import PRINTED

ROOT = Path(__file__).resolve().parent.parent
RUN_LOOP = ROOT / "scripts" / "run-loop.sh"
AGENTS = ROOT / "tests" / "fixtures" / "agents"

HONEST = "sed -i 's/^VAL_BPB = .*/VAL_BPB = 0.5/' train.py && git commit -qm 'honest 0.5' -- train.py"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    repo = tmp_path / "target"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "Test")
    shutil.copy(AGENTS / "train.py", repo / "train.py")
    (repo / "prepare.py").write_text("TIME_BUDGET = 300\n")
    (repo / "program.md").write_text("# program\n")
    (repo / ".gitignore").write_text(".venv/\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    git(repo, "checkout", "-q", "-b", "feature")  # an unpushed user branch
    (repo / "feature.txt").write_text("my unpushed work\n")
    git(repo, "add", "feature.txt")
    git(repo, "commit", "-q", "-m", "my unpushed work")
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-q", "-b", "autoresearch/test")
    (repo / "mine.txt").write_text("the user's untracked file\n")
    (repo / ".venv" / "lib").mkdir(parents=True)
    (repo / ".venv" / "lib" / "site.py").write_text("# the user's environment\n")
    return repo


@pytest.fixture
def env(tmp_path: Path) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "FAKE_",
                                                                     "STANDIN_"))}
    (tmp_path / "agent").mkdir()
    out.update(PATH=f"{AGENTS}:{os.environ['PATH']}", FAKE_AGENT_DIR=str(tmp_path / "agent"),
               AUTORESEARCH_CLONE_ROOT=str(tmp_path / "clones"), LOOP_TEST_ID=uuid.uuid4().hex,
               **PRINTED)  # stand-ins print their value: printed sessions
    return out


def run_loop(repo: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_LOOP), "--cmd", f"{sys.executable} train.py",
                           "--grace", "1", *extra], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)


def two_step(tmp_path: Path, attack: str) -> str:
    """A proposer script: the attack on its first call, an honest proposal on the next."""
    script = tmp_path / "proposer.sh"
    count = tmp_path / "proposer.count"
    script.write_text("set -u\n"
                      f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}\n"
                      f"if [ \"$n\" = 0 ]; then\n{attack}\nelse\n{HONEST}\nfi\n")
    return f"bash {script}"


def snapshot(repo: Path) -> dict:
    """What the user owns: untracked files, branches, every ref, hooks, config."""
    gitdir = Path(git(repo, "rev-parse", "--absolute-git-dir"))
    return {
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)",
                    "refs/heads/feature", "refs/heads/main", "refs/autoresearch/discarded/"),
        "mine": (repo / "mine.txt").read_text(),
        "venv": sorted(str(p.relative_to(repo)) for p in (repo / ".venv").rglob("*")),
        "site": (repo / ".venv" / "lib" / "site.py").read_text(),
        "hooks": sorted(p.name for p in (gitdir / "hooks").iterdir()
                        if not p.name.endswith(".sample")) if (gitdir / "hooks").is_dir() else [],
        "config": (gitdir / "config").read_text(),
    }


def rows(repo: Path) -> list[dict]:
    return ledger.read_ledger(str(repo / "results.tsv"))


def prepared(target: Path, env: dict) -> dict:
    """A baseline and one discarded experiment (a ref under discarded/), then a snapshot."""
    env = dict(env, FAKE_AGENT_VALUES="1.5")
    done = run_loop(target, env, "--propose", "fake-agent", "--max", "1")
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in rows(target)] == ["keep", "discard"]
    assert git(target, "for-each-ref", "refs/autoresearch/discarded/")
    return snapshot(target)


ATTACKS = {
    "clean": "git clean -fdxq; git clean -fdxq ..; rm -f ../*.txt",
    "branches and refs": (
        "git branch -D feature; git -C \"$AUTORESEARCH_REPO\" branch -D feature;"
        " for r in $(git for-each-ref --format='%(refname)' refs/autoresearch/); do"
        " git update-ref -d \"$r\"; done;"
        " git reflog expire --expire=now --all && git gc -q --prune=now"),
    "hooks": (
        "sed -i 's/^VAL_BPB = .*/VAL_BPB = 0.6/' train.py && git commit -qm 'try 0.6' -- train.py;"
        " hooks=$(git rev-parse --git-path hooks); mkdir -p \"$hooks\";"
        " for h in reference-transaction post-checkout post-merge; do"
        " printf '#!/bin/sh\\necho ghost >> %s/hook-ran\\n' \"$FAKE_AGENT_DIR\" > \"$hooks/$h\";"
        " chmod +x \"$hooks/$h\"; done;"
        " git config core.fsmonitor \"echo ghost >> $FAKE_AGENT_DIR/hook-ran; false\";"
        " printf '* filter=evil\\n' > \"$(git rev-parse --git-path info/attributes)\";"
        " git config filter.evil.clean \"echo ghost >> $FAKE_AGENT_DIR/hook-ran; cat\";"
        " touch train.py"),
    "venv and ledger": (
        "mkdir -p .venv/lib && echo 'import os' > .venv/lib/evil.pth;"
        " printf 'deadbee\\t0.100000\\t1.0\\tkeep\\tghost\\n' >> results.tsv;"
        " printf 'deadbee\\t0.100000\\t1.0\\tkeep\\tghost\\n' >> \"$AUTORESEARCH_LEDGER\""),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_destructive_proposer_cannot_reach_the_users_files_refs_hooks_or_ledger(
        target, env, tmp_path, attack):
    before = prepared(target, env)
    ledger_before = (target / "results.tsv").read_text()
    kept_before = git(target, "rev-parse", "HEAD")
    done = run_loop(target, env, "--propose", two_step(tmp_path, ATTACKS[attack]), "--max", "2")
    assert done.returncode == 0, done.stderr
    after = snapshot(target)
    assert after == before
    assert not (Path(env["FAKE_AGENT_DIR"]) / "hook-ran").exists()
    assert git(target, "cat-file", "-t", "feature") == "commit"
    assert (target / "results.tsv").read_text().startswith(ledger_before)
    new = rows(target)[2:]
    assert "ghost" not in (target / "results.tsv").read_text()
    # the attack is a rejected proposal (or, for "hooks", judged as the honest edit it also
    # made); the honest proposal after it is judged at its true value
    assert new[-1]["status"] == "keep" and new[-1]["val_bpb"] == 0.5
    assert git(target, "rev-parse", "HEAD") != kept_before
    assert git(target, "status", "--porcelain", "--untracked-files=no") == ""
    assert not list((tmp_path / "clones").glob("*/p-*")), "every clone is thrown away"


def test_the_proposer_runs_in_a_clone_named_by_autoresearch_repo_with_a_ledger_copy(
        target, env, tmp_path):
    prepared(target, env)
    seen = tmp_path / "seen"
    look = (f"{{ pwd; echo \"$AUTORESEARCH_REPO\"; echo \"$AUTORESEARCH_LEDGER\";"
            f" git rev-parse --abbrev-ref HEAD; git remote | wc -l; test -w results.tsv"
            f" && echo writable || echo read-only; cat \"$AUTORESEARCH_LEDGER\" | wc -l;"
            f" test -f program.md && echo program; }} > {seen}; {HONEST}")
    done = run_loop(target, env, "--propose", look, "--max", "1")
    assert done.returncode == 0, done.stderr
    cwd, repo, ledger_copy, branch, remotes, mode, lines, program = \
        seen.read_text().splitlines()
    assert cwd == repo and Path(repo).parent.parent == tmp_path / "clones"
    assert ledger_copy == f"{repo}/results.tsv"
    assert branch == "autoresearch/test" and remotes.strip() == "0" and program == "program"
    assert int(lines) == 3  # header + the two rows so far
    if os.geteuid() != 0:  # root writes through a read-only mode
        assert mode == "read-only"
    assert not Path(repo).exists()
    assert rows(target)[-1]["status"] == "keep"


def test_a_sigkilled_loop_leaves_no_clone_after_its_restart(target, env, tmp_path):
    prepared(target, env)
    agent = Path(env["FAKE_AGENT_DIR"])
    gated = (f"touch {agent}/started; while [ ! -e {agent}/release ]; do sleep 0.05; done; "
             f"{HONEST}")
    proc = subprocess.Popen(["bash", str(RUN_LOOP), "--cmd", f"{sys.executable} train.py",
                             "--grace", "1", "--propose", gated, "--max", "1"], cwd=target,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (agent / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    assert list((tmp_path / "clones").glob("*/p-*"))
    proc.kill()
    proc.wait()
    (agent / "started").unlink()
    (agent / "release").write_text("")
    done = run_loop(target, env, "--propose", HONEST, "--max", "1")
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "clones").glob("*/p-*"))
    assert [r["status"] for r in rows(target)] == ["keep", "discard", "keep"]
    assert not git(target, "for-each-ref", proposals.INCOMING)


def test_a_queue_patch_is_applied_in_a_clone_and_the_users_tree_is_untouched(target, env,
                                                                              tmp_path):
    prepared(target, env)
    queue = tmp_path / "queue"
    queue.mkdir()
    text = (target / "train.py").read_text()
    edited = tmp_path / "b" / "train.py"
    edited.parent.mkdir()
    edited.write_text(text.replace("VAL_BPB = 1.000000", "VAL_BPB = 0.700000"))
    (tmp_path / "a").mkdir()
    shutil.copy(target / "train.py", tmp_path / "a" / "train.py")
    diff = subprocess.run(["git", "diff", "--no-index", "a/train.py", "b/train.py"],
                          cwd=tmp_path, capture_output=True, text=True).stdout
    (queue / "0001-lower.diff").write_text(diff.replace("a/a/", "a/").replace("b/b/", "b/"))
    before = snapshot(target)
    done = run_loop(target, env, "--queue", str(queue))
    assert done.returncode == 0, done.stderr
    assert rows(target)[-1]["status"] == "keep" and rows(target)[-1]["val_bpb"] == 0.7
    assert snapshot(target)["mine"] == before["mine"]
    assert not list((tmp_path / "clones").glob("*/p-*"))
