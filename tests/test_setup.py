"""setup.sh / arcore.setup: options, then end to end against a local "upstream" repo with a
stand-in uv on PATH: first run, a second run that changes nothing, presets before and after the
freeze, unsafe git state, the hardware gate, a CPU target without git."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arcore import presets, setup
from scratchrepo import PRINTED

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SETUP_SH = ROOT / "scripts" / "setup.sh"
TORCH_OK = json.dumps({"version": "2.9.1+cu128", "cuda_build": "12.8", "cuda_available": True,
                       "device_count": 1})


# ---------------------------------------------------------------------------
# Options (pure)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["--bogus"], "unknown option"),
    (["--dir"], "needs a value"),
    (["--repo-url", "u", "--from", "d"], "alternatives"),
    (["--preset", "12gb", "--seq-len", "512"], "alternatives"),
    (["--preset", "huge"], "unknown preset"),
    (["--seq-len", "0"], "positive"),
    (["--eval-tokens", "many"], "whole number"),
    (["--num-shards", "-2"], "positive"),
    (["--timeout", "-1"], "positive seconds"),
    (["--tag", "bad..tag"], "valid branch name"),
])
def test_bad_options_stop_with_exit_2_and_say_why(argv, words):
    with pytest.raises(setup.Stop) as stop:
        setup.parse_args(argv)
    assert stop.value.code == 2 and words in str(stop.value)


def test_options_are_parsed_into_values():
    opts = setup.parse_args(["--dir", "d", "--tag", "autoresearch/mar5", "--num-shards", "-1",
                             "--seq-len", "256", "--cpu", "--no-baseline"])
    assert opts["dir"] == "d" and opts["tag"] == "mar5" and opts["num_shards"] == -1
    assert opts["seq_len"] == 256 and opts["no_gpu"] and opts["no_baseline"]
    assert setup.wanted_values(opts) == ("custom", {"MAX_SEQ_LEN": 256})
    name, values = setup.wanted_values(setup.parse_args(["--preset", "6GB"]))
    assert name == "6gb" and values == presets.get_tier("6gb").values


def test_the_default_tag_is_upstreams_month_and_day_style():
    assert setup.default_tag(datetime.date(2026, 3, 5)) == "mar5"
    assert setup.default_tag(datetime.date(2026, 11, 30)) == "nov30"


# ---------------------------------------------------------------------------
# A machine with a stand-in uv and a local upstream
# ---------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


class Machine:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.home = tmp / "home"
        self.bin.mkdir()
        self.home.mkdir()
        (self.bin / "uv").symlink_to(FIXTURES / "setup" / "fake-uv")
        # The interpreter itself, not a pyenv shim (a shim puts the real uv first on PATH).
        (self.bin / "python3").symlink_to(os.path.realpath(sys.executable))
        self.uv_log = tmp / "uv.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("GIT_", "FAKE_", "AUTORESEARCH_"))}
        self.env.update(HOME=str(self.home), PATH=f"{self.bin}:{os.environ['PATH']}",
                        FAKE_UV_LOG=str(self.uv_log), GIT_CONFIG_NOSYSTEM="1",
                        GIT_CONFIG_GLOBAL=str(tmp / "gitconfig"), **PRINTED)
        self.upstream = self.make_upstream()
        self.clone = tmp / "clone"

    def make_upstream(self) -> Path:
        up = self.tmp / "upstream"
        up.mkdir()
        shutil.copy(FIXTURES / "setup" / "upstream" / "prepare.py", up / "prepare.py")
        (up / "train.py").write_text((FIXTURES / "standins" / "ok.py").read_text()
                                     + (FIXTURES / "setup" / "upstream" / "train-constants.py")
                                     .read_text())
        for name in ("pyproject.toml", "uv.lock", "program.md"):
            shutil.copy(FIXTURES / "standins" / "target" / name, up / name)
        shutil.copy(FIXTURES / "setup" / "upstream" / "gitignore", up / ".gitignore")
        git(up, "init", "-q", "-b", "master")
        git(up, "add", "-A")
        git(up, "-c", "user.name=Upstream", "-c", "user.email=up@example.com", "commit", "-q",
            "-m", "upstream")
        return up

    def gpu(self, fixture: str = "h100-80gb") -> None:
        (self.bin / "nvidia-smi").symlink_to(FIXTURES / "nvidia-smi" / "fake-nvidia-smi")
        self.env["FAKE_NVIDIA_SMI"] = str(FIXTURES / "nvidia-smi" / fixture)
        self.env["FAKE_UV_TORCH"] = TORCH_OK

    def setup(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SETUP_SH), *args], cwd=cwd or self.tmp, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def first(self, *extra: str) -> subprocess.CompletedProcess:
        return self.setup("--from", str(self.upstream), "--dir", str(self.clone), "--tag",
                          "nov30", *extra)

    def uv_calls(self) -> list[str]:
        calls = self.uv_log.read_text().splitlines() if self.uv_log.exists() else []
        return [c for c in calls if c != "--version"]  # the hardware check's probe

    def snapshot(self) -> dict:
        """Every file's bytes and mtime in the clone (but .git's internals) and the cache,
        plus refs, HEAD, the reflog and info/exclude."""
        files = {}
        for base in (self.clone, self.home / ".cache"):
            for path in sorted(base.rglob("*")):
                rel = path.relative_to(self.tmp)
                if path.is_file() and ".git" not in rel.parts[:2]:
                    files[str(rel)] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                       path.stat().st_mtime_ns)
        return {"files": files, "refs": git(self.clone, "for-each-ref"),
                "head": git(self.clone, "rev-parse", "HEAD"),
                "branch": git(self.clone, "symbolic-ref", "HEAD"),
                "reflog": git(self.clone, "reflog", "--all"),
                "exclude": (self.clone / ".git" / "info" / "exclude").read_text()}


def kv(stdout: str) -> dict:
    return dict(line.split(": ", 1) for line in stdout.splitlines())


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path)


# ---------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------


def test_a_first_run_sets_up_everything_and_records_the_baseline(machine):
    machine.gpu()
    done = machine.first("--preset", "12gb")
    assert done.returncode == 0, done.stderr
    out = kv(done.stdout)
    clone = machine.clone
    assert out["repo"] == str(clone) and out["branch"] == "autoresearch/nov30"
    assert out["preset"] == "12gb" and out["status"] == "keep"
    assert out["val_bpb"] == "1.000000" and out["peak_vram_mb"] == "45060.2"
    assert out["memory_gb"] == "44.0" and "program.md" in out["next"]
    # branch, preset commit on it, master untouched
    assert git(clone, "symbolic-ref", "--short", "HEAD") == "autoresearch/nov30"
    assert git(clone, "log", "-1", "--format=%s").startswith("autoresearch: preset 12gb")
    assert git(clone, "rev-parse", "master") == git(machine.upstream, "rev-parse", "HEAD")
    assert presets.read_constant((clone / "prepare.py").read_text(), "MAX_SEQ_LEN") == 512
    assert presets.read_constant((clone / "train.py").read_text(), "WINDOW_PATTERN") == "L"
    assert git(clone, "status", "--porcelain") == ""
    # data, ledger, excludes, session
    assert (machine.home / ".cache" / "autoresearch" / "data" / "shard_06542.parquet").exists()
    rows = (clone / "results.tsv").read_text().splitlines()
    assert rows[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert rows[1].split("\t")[1:4] == ["1.000000", "44.0", "keep"] and len(rows) == 2
    exclude = (clone / ".git" / "info" / "exclude").read_text()
    assert "/results.tsv" in exclude and "/.autoresearch/" in exclude
    manifest = json.loads((clone / ".autoresearch" / "session.json").read_text())
    assert manifest["branch"] == "autoresearch/nov30"
    assert manifest["constants"]["MAX_SEQ_LEN"] == 512
    assert manifest["preset"]["name"] == "12gb"
    assert manifest["preset"]["commit"] == git(clone, "rev-parse", "HEAD")
    backup = clone / manifest["preset"]["backup"][0]
    assert presets.read_constant(backup.read_text(), "MAX_SEQ_LEN") == 2048
    # the diff was shown, the uv calls were the expected ones
    assert "-MAX_SEQ_LEN = 2048" in done.stderr and "+MAX_SEQ_LEN = 512" in done.stderr
    assert machine.uv_calls()[:2] == ["sync --locked", "run prepare.py"]


def test_a_second_run_changes_nothing(machine):
    machine.gpu()
    assert machine.first("--preset", "12gb").returncode == 0
    before, calls = machine.snapshot(), len(machine.uv_calls())
    again = machine.first("--preset", "12gb")
    assert again.returncode == 0, again.stderr
    assert machine.snapshot() == before
    assert machine.uv_calls()[calls:] == ["sync --locked"]  # no prepare.py, no train.py
    assert kv(again.stdout)["val_bpb"] == "1.000000"
    assert kv(again.stdout)["peak_vram_mb"] == "45060.2"
    assert "already has its baseline" in again.stderr


def test_a_rerun_from_inside_the_clone_needs_no_options(machine):
    assert machine.first("--no-gpu-check", "--no-baseline").returncode == 0
    before = machine.snapshot()
    again = machine.setup("--no-gpu-check", "--no-baseline", cwd=machine.clone)
    assert again.returncode == 0, again.stderr
    assert kv(again.stdout)["branch"] == "autoresearch/nov30"
    assert machine.snapshot() == before


def test_a_preset_is_refused_once_the_session_is_frozen(machine):
    assert machine.first("--no-gpu-check", "--no-baseline").returncode == 0
    before = machine.snapshot()
    done = machine.first("--no-gpu-check", "--no-baseline", "--preset", "6gb")
    assert done.returncode == 3
    assert "session is frozen" in done.stderr and "--new-track" in done.stderr
    assert done.stdout == ""
    assert machine.snapshot() == before


def test_a_seq_len_change_is_refused_too_but_the_same_value_is_not(machine):
    assert machine.first("--no-gpu-check", "--no-baseline").returncode == 0
    assert machine.first("--no-gpu-check", "--no-baseline", "--seq-len", "1024").returncode == 3
    same = machine.first("--no-gpu-check", "--no-baseline", "--seq-len", "2048")
    assert same.returncode == 0 and "already in place" in same.stderr


def test_new_track_applies_a_preset_after_a_freeze_and_archives_the_old_manifest(machine):
    assert machine.first("--no-gpu-check").returncode == 0
    head = git(machine.clone, "rev-parse", "HEAD")
    done = machine.first("--no-gpu-check", "--preset", "24gb", "--new-track")
    assert done.returncode == 0, done.stderr
    clone = machine.clone
    assert git(clone, "rev-parse", "HEAD~1") == head
    archived = list((clone / ".autoresearch").glob("session-*.json"))
    assert len(archived) == 1
    manifest = json.loads((clone / ".autoresearch" / "session.json").read_text())
    assert manifest["ledger_start"] == 1 and manifest["preset"]["name"] == "24gb"
    rows = (clone / "results.tsv").read_text().splitlines()
    assert len(rows) == 3  # the old baseline and the new track's baseline


def test_uncommitted_tracked_changes_stop_setup_with_exit_4(machine):
    assert machine.first("--no-gpu-check", "--no-baseline").returncode == 0
    train = machine.clone / "train.py"
    train.write_text(train.read_text() + "# my edit\n")
    done = machine.first("--no-gpu-check", "--no-baseline")
    assert done.returncode == 4 and "train.py" in done.stderr
    assert train.read_text().endswith("# my edit\n")


def test_hardware_blockers_stop_setup_before_anything_changes(machine):
    done = machine.first()  # no nvidia-smi on this PATH's fakes, none on the host
    if shutil.which("nvidia-smi", path=machine.env["PATH"]):
        pytest.skip("this host has a real nvidia-smi")
    assert done.returncode == 1
    assert "BLOCKER: no NVIDIA GPU found" in done.stderr and "--no-gpu-check" in done.stderr
    assert not machine.clone.exists()  # stopped before cloning and uv sync
    assert machine.uv_calls() == []


def test_clone_blockers_found_after_uv_sync_stop_setup_before_the_branch(machine):
    machine.gpu()
    del machine.env["FAKE_UV_TORCH"]  # uv sync leaves no .venv: torch cannot be checked
    done = machine.first()
    assert done.returncode == 1
    assert "BLOCKER: the clone's env is not synced" in done.stderr
    assert git(machine.clone, "symbolic-ref", "--short", "HEAD") == "master"
    assert not (machine.clone / "results.tsv").exists()
    assert machine.uv_calls() == ["sync --locked"]


def test_a_small_gpu_is_told_its_preset_when_none_is_given(machine):
    machine.gpu("rtx3060-12gb")
    done = machine.first("--no-baseline")
    assert done.returncode == 0, done.stderr
    assert "recommends preset 12gb" in done.stderr
    assert kv(done.stdout)["preset"] == "none"


def test_a_failing_uv_sync_stops_setup_with_exit_1(machine):
    machine.env["FAKE_UV_SYNC_RC"] = "1"
    done = machine.first("--no-gpu-check")
    assert done.returncode == 1 and "uv sync --locked" in done.stderr


def test_a_cpu_target_without_git_is_put_under_git_and_set_up(machine):
    target = machine.tmp / "cpu"
    shutil.copytree(machine.upstream, target, ignore=shutil.ignore_patterns(".git*"))
    (target / ".venv" / "bin").mkdir(parents=True)
    (target / ".venv" / "bin" / "python").write_text("an old env\n")
    (target / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    done = machine.setup("--dir", str(target), "--cpu", "--no-sync", "--no-baseline")
    assert done.returncode == 0, done.stderr
    assert git(target, "log", "--format=%s") == "autoresearch: initial import"
    assert git(target, "ls-files").split() == sorted(
        ["prepare.py", "program.md", "pyproject.toml", "train.py", "uv.lock"])
    assert kv(done.stdout)["branch"].startswith("autoresearch/")
    assert (target / ".autoresearch" / "session.json").exists()


def test_program_md_comes_from_the_template_when_the_clone_has_none(machine):
    git(machine.upstream, "rm", "-q", "program.md")
    git(machine.upstream, "-c", "user.name=U", "-c", "user.email=u@e", "commit", "-qm", "rm")
    done = machine.first("--no-gpu-check", "--no-baseline")
    assert done.returncode == 0, done.stderr
    program = (machine.clone / "program.md").read_text()
    template = ROOT / "templates" / "program.md"
    if template.exists():
        assert program == template.read_text().replace("{{SESSION_TAG}}", "nov30")
        assert "{{SESSION_TAG}}" not in program


def test_a_directory_that_is_not_a_clone_is_refused(machine):
    other = machine.tmp / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    done = machine.setup("--dir", str(other), "--no-gpu-check")
    assert done.returncode == 1 and "holds no prepare.py" in done.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_missing_mirror_is_a_usage_error(machine):
    done = machine.setup("--from", str(machine.tmp / "nowhere"), "--dir", str(machine.clone))
    assert done.returncode == 2 and "no such directory" in done.stderr
    assert not machine.clone.exists()
