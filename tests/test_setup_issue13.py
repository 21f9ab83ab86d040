"""setup.sh as a new user meets it (issue 13): what failed in uv sync, a tracked results.tsv, an
empty cache under --no-prepare, a `next:` line that runs, --dry-run, --baseline-repeats, and
every exit-3 message naming setup.sh --new-track."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from arcore import ledger, loop, session, setup
from test_setup import Machine, git, kv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path)


def test_uv_sync_without_network_says_the_network_failed_and_never_advises_uv_lock(machine):
    machine.env.update(FAKE_UV_SYNC_RC="2", FAKE_UV_SYNC_STDERR=(
        "error: Failed to fetch: `https://download.pytorch.org/whl/cu128/torch/`\n"
        "  Caused by: dns error: failed to lookup address information"))
    done = machine.first("--no-gpu-check")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "network" in last and "index" in last
    assert "uv lock" not in done.stderr


def test_a_stale_lock_is_not_rewritten_on_advice(machine):
    machine.env.update(FAKE_UV_SYNC_RC="2", FAKE_UV_SYNC_STDERR=(
        "error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided."))
    done = machine.first("--no-gpu-check")
    assert done.returncode == 1
    assert "uv lock`" not in done.stderr and "do not rewrite" in done.stderr


def test_a_tracked_results_tsv_is_refused_first_with_the_command_that_untracks_it(machine):
    (machine.upstream / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    git(machine.upstream, "add", "results.tsv")
    git(machine.upstream, "-c", "user.name=U", "-c", "user.email=u@e", "commit", "-qm", "log")
    done = machine.first("--no-gpu-check")
    assert done.returncode == 4
    assert "results.tsv is tracked" in done.stderr and "git -C" in done.stderr \
        and "rm --cached results.tsv" in done.stderr
    assert machine.uv_calls() == []  # said before anything else (no uv sync)


def test_no_prepare_with_an_empty_cache_says_so_and_names_the_new_track_command(machine):
    done = machine.first("--no-gpu-check", "--no-prepare", "--no-baseline")
    assert done.returncode == 0, done.stderr
    assert "is empty" in done.stderr and "setup.sh --new-track" in done.stderr


def test_the_next_line_is_a_loop_command_that_parses(machine):
    done = machine.first("--no-gpu-check")
    assert done.returncode == 0, done.stderr
    line = kv(done.stdout)["next"]
    command = line.split("start the loop: ", 1)[1].split(" (other agents", 1)[0]
    argv = shlex.split(command)
    assert argv[0].endswith("run-loop.sh") and Path(argv[0]).is_file()
    opts = loop.parse_options(argv[1:])  # raises on a usage error (run-loop.sh's exit 2)
    assert opts.propose and opts.max == 20


def test_a_preset_dry_run_prints_the_diff_changes_nothing_and_needs_no_uv_or_git(machine):
    assert machine.first("--no-gpu-check", "--no-baseline").returncode == 0
    before = machine.snapshot()
    (machine.bin / "uv").unlink()  # no uv anywhere on PATH, so nothing could be installed
    env = dict(machine.env, PATH=f"{machine.bin}:/usr/bin:/bin", HOME=str(machine.tmp / "nohome"))
    assert shutil.which("uv", path=env["PATH"]) is None
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--preset", "12gb",
                           "--dir", str(machine.clone), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "-MAX_SEQ_LEN = 2048" in done.stdout and "+MAX_SEQ_LEN = 512" in done.stdout
    assert "+DEPTH = 4" in done.stdout
    assert machine.snapshot() == before


def test_dry_run_without_a_preset_is_a_usage_error():
    with pytest.raises(setup.Stop) as stop:
        setup.parse_args(["--dry-run"])
    assert stop.value.code == 2


def test_baseline_repeats_top_up_a_track_whose_baseline_setup_already_ran(machine):
    assert machine.first("--no-gpu-check").returncode == 0
    clone = machine.clone
    done = machine.first("--no-gpu-check", "--baseline-repeats", "3")
    assert done.returncode == 0, done.stderr
    rows = ledger.read_ledger(str(clone / "results.tsv"))
    assert len(rows) == 3 and len({r["commit"] for r in rows}) == 1
    assert [r["description"].split(" (")[0] for r in rows[1:]] == ["baseline repeat 2/3",
                                                                 "baseline repeat 3/3"]
    again = machine.first("--no-gpu-check", "--baseline-repeats", "3")
    assert again.returncode == 0 and len(ledger.read_ledger(str(clone / "results.tsv"))) == 3


def test_every_exit_3_message_names_setup_sh_new_track(machine, tmp_path):
    assert "setup.sh --new-track" in session.verify_message(["prepare.py changed"])
    assert machine.first("--no-gpu-check").returncode == 0
    refused = machine.first("--no-gpu-check", "--preset", "12gb")
    assert refused.returncode == 3 and "setup.sh --new-track" in refused.stderr
    other = machine.setup("--dir", str(machine.clone), "--tag", "dec1", "--no-gpu-check")
    assert other.returncode == 3 and "setup.sh --new-track" in other.stderr
    (machine.clone / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    lost = subprocess.run(["bash", str(ROOT / "scripts" / "run-experiment.sh"), "--repo",
                           str(machine.clone), "--cmd", "python3 train.py", "--rerun"],
                          env=machine.env, capture_output=True, text=True, timeout=60)
    assert lost.returncode == 3 and "setup.sh --new-track" in lost.stderr


def test_a_preset_leaves_no_stale_size_comment():
    from arcore import presets
    text = (ROOT / "tests" / "fixtures" / "setup" / "upstream" / "train-constants.py").read_text()
    new, missing = presets.apply(text, {"TOTAL_BATCH_SIZE": 2**15})
    assert not missing
    line = next(x for x in new.splitlines() if x.startswith("TOTAL_BATCH_SIZE"))
    assert line == "TOTAL_BATCH_SIZE = 2**15 # ~33K tokens per optimizer step"
    assert presets.approx(524288) == "524K" and presets.approx(2**24) == "17M"
