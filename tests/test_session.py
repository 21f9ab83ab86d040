"""The session freeze: manifest contents, verification, excludes, the data-cache fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arcore import session
from scratchrepo import git, make_repo

SCRIPTS = Path(__file__).parent.parent / "scripts"


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "tokenizer").mkdir(parents=True)
    (cache / "tokenizer" / "tokenizer.pkl").write_bytes(b"tok")
    (cache / "data").mkdir()
    (cache / "data" / "shard_06542.parquet").write_bytes(b"val")
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    return make_repo(tmp_path)


def test_a_freeze_records_hashes_constants_cache_branch_and_gpu(repo, tmp_path):
    (repo / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                                      "abc1234\t1.0\t1.0\tkeep\told track\n")
    data = session.freeze(str(repo))
    assert data["files"]["prepare.py"] == session.sha256_file(str(repo / "prepare.py"))
    assert set(data["files"]) == {"prepare.py", "pyproject.toml", "uv.lock", "program.md"}
    assert data["constants"] == {"TIME_BUDGET": 300, "MAX_SEQ_LEN": 2048,
                                 "EVAL_TOKENS": 40 * 524288}
    assert data["data_cache"]["dir"] == str(tmp_path / "cache")
    assert data["data_cache"]["entries"] == 2
    assert data["branch"] == "autoresearch/test"
    assert data["base_commit"] == git(repo, "rev-parse", "HEAD")
    assert data["gpu"] == "none"
    assert data["ledger_start"] == 1
    assert session.load(str(repo)) == data


def test_a_fresh_freeze_verifies_clean(repo):
    session.freeze(str(repo))
    assert session.verify(str(repo)) == []


def test_the_session_files_are_excluded_not_gitignored(repo):
    session.freeze(str(repo))
    (repo / "results.tsv").write_text("x\n")
    (repo / "run.log").write_text("x\n")
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert "/.autoresearch/" in exclude and "/results.tsv" in exclude
    assert git(repo, "status", "--porcelain") == ""
    session.ensure_excludes(str(repo))
    assert (repo / ".git" / "info" / "exclude").read_text().count("/run.log") == 1


@pytest.mark.parametrize(("change", "named"), [
    (lambda r: (r / "prepare.py").write_text((r / "prepare.py").read_text() + "\n# x\n"),
     "prepare.py changed"),
    (lambda r: (r / "uv.lock").unlink(), "uv.lock was removed"),
    (lambda r: (r / "program.md").write_text("new rules\n"), "program.md changed"),
])
def test_a_changed_frozen_file_is_named(repo, change, named):
    session.freeze(str(repo))
    change(repo)
    assert session.verify(str(repo)) == [named]


def test_a_rebound_time_budget_in_prepare_is_named_with_its_values(repo):
    session.freeze(str(repo))
    text = (repo / "prepare.py").read_text().replace("TIME_BUDGET = 300", "TIME_BUDGET = 600")
    (repo / "prepare.py").write_text(text)
    changes = session.verify(str(repo))
    assert "TIME_BUDGET 300 -> 600" in changes and "prepare.py changed" in changes


def test_a_touched_validation_shard_changes_the_fingerprint(repo, tmp_path):
    session.freeze(str(repo))
    (tmp_path / "cache" / "data" / "shard_06542.parquet").write_bytes(b"other bytes")
    changes = session.verify(str(repo))
    assert len(changes) == 1  # named file by file since the freeze holds content hashes
    assert changes[0].startswith("data cache file data/shard_06542.parquet was rewritten")


def test_a_training_shard_does_not_count(repo, tmp_path):
    session.freeze(str(repo))
    (tmp_path / "cache" / "data" / "shard_00000.parquet").write_bytes(b"train")
    assert session.verify(str(repo)) == []


def test_a_string_cache_dir_in_prepare_is_used_when_no_env(repo, tmp_path, monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_CACHE_DIR")
    text = (repo / "prepare.py").read_text()
    (repo / "prepare.py").write_text(text.replace(
        'CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "autoresearch")',
        f'CACHE_DIR = "{tmp_path / "elsewhere"}"'))
    assert session.cache_location(str(repo)) == (str(tmp_path / "elsewhere"),
                                                  "shard_06542.parquet")


def test_upstreams_computed_cache_dir_falls_back_to_the_home_cache(repo, monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_CACHE_DIR")
    cache, shard = session.cache_location(str(repo))
    assert cache == os.path.expanduser("~/.cache/autoresearch") and shard == "shard_06542.parquet"


def test_a_gpu_change_is_named(repo, tmp_path, monkeypatch):
    session.freeze(str(repo))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\n")
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    assert session.verify(str(repo)) == ["GPU none -> NVIDIA H100 80GB HBM3"]


def test_a_switched_branch_is_named(repo):
    session.freeze(str(repo))
    git(repo, "checkout", "-q", "-b", "other")
    assert session.verify(str(repo)) == ["branch autoresearch/test -> other"]


def test_an_existing_freeze_is_kept_unless_a_new_track_is_asked(repo):
    first = session.freeze(str(repo))
    (repo / "program.md").write_text("changed\n")
    assert session.freeze(str(repo)) == first
    second = session.freeze(str(repo), new=True)
    assert second["files"]["program.md"] != first["files"]["program.md"]
    assert session.verify(str(repo)) == []
    assert len(list((repo / ".autoresearch").glob("session-*.json"))) == 1


def test_update_adds_facts_that_verify_ignores(repo):
    session.freeze(str(repo))
    session.update(str(repo), noise_floor=0.002)
    assert session.load(str(repo))["noise_floor"] == 0.002
    assert session.verify(str(repo)) == []


def test_update_without_a_session_raises(repo):
    with pytest.raises(FileNotFoundError):
        session.update(str(repo), x=1)


def test_the_constants_reader_evaluates_only_plain_arithmetic(tmp_path):
    path = tmp_path / "p.py"
    path.write_text("A = 2 ** 10\nB = A * 3\nC = open('x')\nD = 'text'\nE = -1.5\n")
    assert session.module_constants(str(path)) == {"A": 1024, "B": 3072, "D": "text", "E": -1.5}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "arcore", "session", *args], cwd=SCRIPTS,
                          capture_output=True, text=True)


def test_the_cli_verify_exits_three_with_one_line_naming_the_change(repo):
    assert _cli("freeze", "--repo", str(repo)).returncode == 0
    assert _cli("freeze", "--repo", str(repo)).returncode == 5
    (repo / "prepare.py").write_text("TIME_BUDGET = 1\n")
    done = _cli("verify", "--repo", str(repo))
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert "prepare.py changed" in done.stderr and "start a new comparison track" in done.stderr


def test_the_cli_show_prints_the_manifest_and_refuses_a_non_repo(repo, tmp_path):
    _cli("freeze", "--repo", str(repo))
    assert json.loads(_cli("show", "--repo", str(repo)).stdout)["version"] == 1
    assert _cli("show", "--repo", str(tmp_path)).returncode == 2


def test_a_cache_with_another_layout_is_fingerprinted_by_all_its_files(tmp_path):
    cache = tmp_path / "cache"
    (cache / "corpus-v1").mkdir(parents=True)
    (cache / "corpus-v1" / "val.bin").write_bytes(b"v")
    first = session.cache_fingerprint(str(cache), "shard_06542.parquet")
    assert first["layout"] == "all files" and first["entries"] == 1
    (cache / "corpus-v1" / "val.bin").write_bytes(b"changed")
    assert session.cache_fingerprint(str(cache), "x")["fingerprint"] != first["fingerprint"]
