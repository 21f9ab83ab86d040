"""Seed-only candidates (arcore.seedonly): a diff that only changes a random seed is a noise sample."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from arcore import seedonly

MIRROR = Path("/work/.mirror/karpathy+autoresearch/repo")


def diff(old: str, new: str, path: str = "train.py") -> str:
    """A -U0 style diff of one hunk replacing lines ``old`` with ``new``."""
    minus = "".join(f"-{line}\n" for line in old.splitlines())
    plus = "".join(f"+{line}\n" for line in new.splitlines())
    return (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -457,2 +457,2 @@\n"
            f"{minus}{plus}")


@pytest.mark.parametrize(("old", "new"), [
    # upstream train.py's own seed lines (exp/H100/mar8 row 15: "random seed 42 to 137")
    ("torch.manual_seed(42)\ntorch.cuda.manual_seed(42)", "torch.manual_seed(137)\ntorch.cuda.manual_seed(137)"),
    ("SEED = 42", "SEED = 1337"),
    ("SEED = 42  # the usual", "SEED = 7  # try another"),
    ("RANDOM_SEED: int = 0", "RANDOM_SEED: int = 1"),
    ("np.random.seed(0)", "np.random.seed(1)"),
    ("rng = np.random.default_rng(1234)", "rng = np.random.default_rng(99)"),
    ("random.seed(3)", "random.seed(4)"),
    ("torch.cuda.manual_seed_all(42)", "torch.cuda.manual_seed_all(43)"),
    ("loader = make_loader(batch, seed=1)", "loader = make_loader(batch, seed=2)"),
    ("g = torch.Generator().manual_seed(42 + rank)", "g = torch.Generator().manual_seed(7 + rank)"),
])
def test_a_diff_that_only_changes_a_random_seed_is_seed_only(old, new):
    assert seedonly.seed_only(diff(old, new))


@pytest.mark.parametrize(("old", "new"), [
    ("MATRIX_LR = 0.04", "MATRIX_LR = 0.045"),
    ("SEED = 42\nDEPTH = 8", "SEED = 43\nDEPTH = 9"),  # a seed and a real knob
    ("torch.manual_seed(42)", "torch.manual_seed(42)\nDEPTH = 9"),  # an added line
    ("NUM_SEEDS = 1", "NUM_SEEDS = 4"),  # an ensemble size is a knob, not a seed
    ("reseed_every = 100", "reseed_every = 200"),
    ("SEED = 42", "SEED = 42 * 2"),
    ("torch.manual_seed(42)", "torch.manual_seed(42)  # a comment only"),  # nothing changed
    ("loader = make_loader(batch, seed=1)", "loader = make_loader(batch * 2, seed=2)"),
])
def test_a_diff_that_changes_anything_else_is_not_seed_only(old, new):
    assert not seedonly.seed_only(diff(old, new))


def test_a_seed_change_in_another_file_is_not_a_train_py_seed_change():
    assert not seedonly.seed_only(diff("SEED = 1", "SEED = 2", path="prepare.py"))
    assert not seedonly.seed_only("")


def test_a_seed_change_across_two_hunks_is_seed_only():
    two = diff("torch.manual_seed(42)", "torch.manual_seed(5)") + \
        "@@ -900 +900 @@\n-    data_seed = 1\n+    data_seed = 2\n"
    assert seedonly.seed_only(two)


def _mar8_kept_diffs() -> list[tuple[str, str]]:
    if not (MIRROR / "HEAD").exists():
        pytest.skip("the upstream mirror (exp/H100/mar8) is not on this machine")
    log = subprocess.run(["git", "-C", str(MIRROR), "rev-list", "--reverse", "exp/H100/mar8"],
                         capture_output=True, text=True)
    if log.returncode != 0:
        pytest.skip("no exp/H100/mar8 branch in the mirror")
    commits = log.stdout.split()
    out = []
    for older, newer in zip(commits, commits[1:]):
        text = subprocess.run(["git", "-C", str(MIRROR), "diff", "-U0", older, newer, "--",
                               "train.py"], capture_output=True, text=True).stdout
        if text:
            out.append((newer, text))
    return out


def test_no_real_kept_commit_of_the_mar8_session_is_taken_for_a_seed_change():
    diffs = _mar8_kept_diffs()
    assert len(diffs) >= 20
    flagged = [commit[:7] for commit, text in diffs if seedonly.seed_only(text)]
    assert flagged == []
    # and the same train.py with only its seeds changed, as row 15 did, is flagged
    train = subprocess.run(["git", "-C", str(MIRROR), "show", "exp/H100/mar8:train.py"],
                           capture_output=True, text=True).stdout
    lines = [line for line in train.splitlines() if "manual_seed(42)" in line]
    assert len(lines) == 2
    assert seedonly.seed_only(diff("\n".join(lines), "\n".join(l.replace("42", "137") for l in lines)))


# ---------------------------------------------------------------------------
# run-experiment.sh: a seed-only candidate is run, logged, never kept, a noise sample
# ---------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402

from arcore import ledger  # noqa: E402
from scratchrepo import git, make_repo  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run-experiment.sh"


def seeded_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path)
    text = (repo / "train.py").read_text().replace(
        "VAL_BPB = 1.000000", "SEED = 42\nVAL_BPB = 1.0 - (SEED % 7) * 0.001")
    (repo / "train.py").write_text(text)
    git(repo, "commit", "-qam", "seeded stand-in")
    return repo


def run(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--repo", str(repo), "--cmd", "python3 train.py",
                           "--json"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, AUTORESEARCH_CACHE_DIR=str(repo.parent / "cache")))


def test_a_seed_only_candidate_that_scores_better_is_discarded_reverted_and_a_noise_sample(tmp_path):
    repo = seeded_repo(tmp_path)
    assert json.loads(run(repo).stdout)["status"] == "keep"  # baseline: 42 % 7 = 0 -> 1.0
    base = git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("SEED = 42", "SEED = 45"))
    git(repo, "commit", "-qam", "random seed 42 to 45")  # 45 % 7 = 3 -> 0.997: "better"
    done = run(repo)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "discard" and out["reverted"] is True
    assert "seed-only" in out["description"]
    assert git(repo, "rev-parse", "HEAD") == base
    row = ledger.read_ledger(str(repo / "results.tsv"))[-1]
    assert row["status"] == "discard" and "seed-only" in row["description"]
    record = json.loads((repo / ".autoresearch" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["seed_only"] is True and record["noise_sample"] == pytest.approx(-0.003)
