"""The Slurm runner: launcher lines, Slurm outcomes as crash classes, and real job steps on a
one-node loopback Slurm (tests/slurm/start.sh) with two fake GPUs."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from arcore import ledger, runlog, runner
from scratchrepo import git, make_repo
from test_slots import (STANDIN, alive, assert_clean, make_queue, rows, run_loop, runs,
                           wait_for)

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests" / "slurm"
APT_LINE = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"

# ---------------------------------------------------------------------------
# The loopback Slurm, once per test session
# ---------------------------------------------------------------------------


def _missing_slurm() -> list[str]:
    return [name for name in ("srun", "sinfo", "scancel", "slurmctld", "slurmd", "munged", "mungekey")
            if not shutil.which(name) and not os.path.exists(f"/usr/sbin/{name}")]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port > 65000:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    return 6817


@pytest.fixture(scope="session")
def slurm():
    """A running loopback Slurm (2 fake GPUs); SLURM_CONF is exported for the whole session."""
    missing = _missing_slurm()
    if missing:
        pytest.skip(f"Slurm/munge not installed ({', '.join(missing)} missing): {APT_LINE}")
    if os.geteuid() != 0:
        pytest.skip("the loopback Slurm needs root (mknod for fake GPUs, munged as user munge)")
    # Not under pytest's tmp dir: munged (user munge) must reach its socket and key folder.
    state = Path(tempfile.mkdtemp(prefix="ar-slurm-"))
    state.chmod(0o755)
    env = dict(os.environ, AR_SLURM_PORT=str(_free_port_pair()))
    started = subprocess.run(["bash", str(SLURM_DIR / "start.sh"), "--state", str(state)],
                             env=env, capture_output=True, text=True, timeout=120)
    conf = str(state / "slurm.conf")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        if started.returncode != 0:
            pytest.fail(f"tests/slurm/start.sh failed ({started.returncode}):\n{started.stderr}")
        yield {"conf": conf, "state": state}
    finally:
        subprocess.run(["bash", str(SLURM_DIR / "stop.sh"), "--state", str(state)],
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


# ---------------------------------------------------------------------------
# Launcher lines
# ---------------------------------------------------------------------------


def test_the_slurm_time_limit_is_a_little_above_the_hard_timeout_and_grace():
    assert runner.slurm_minutes(600, 10) == 12
    assert runner.slurm_minutes(0, 0) == 1
    assert runner.slurm_minutes(300, 10) * 60 > 310


def test_a_job_name_names_the_session_and_the_short_commit_and_is_shell_safe():
    name = runner.job_name("mar5 $(rm -rf /)", "0123456789abcdef")
    assert name.startswith("autoresearch-mar5-")
    assert name.endswith("-0123456")
    assert shlex.quote(name) == name


def test_the_slurm_prefix_asks_for_one_gpu_a_time_limit_and_a_named_step():
    prefix, env = runner.launcher("slurm", session="mar5", commit="abcdef123", timeout_s=600,
                                  grace_s=10, extra=["--partition=gpu"])
    words = shlex.split(prefix)
    assert words[0] == "srun"
    assert "--gres=gpu:1" in words
    assert "--time=12" in words
    assert "--job-name=autoresearch-mar5-abcdef1" in words
    assert words[-1] == "--partition=gpu"
    assert env == {}


def test_the_local_runner_has_no_prefix_and_sets_cuda_visible_devices_only_for_a_gpu():
    assert runner.launcher("local", gpu="3") == ("", {"CUDA_VISIBLE_DEVICES": "3"})
    assert runner.launcher("local") == ("", {})


def test_an_unknown_runner_is_refused():
    with pytest.raises(ValueError, match="runner must be one of"):
        runner.launcher("kubernetes")


# ---------------------------------------------------------------------------
# Slurm outcomes -> crash classes (logs captured from Slurm 22.05 on loopback)
# ---------------------------------------------------------------------------


def test_a_step_cancelled_for_its_time_limit_is_a_timeout():
    text = (SLURM_DIR / "logs" / "srun-time-limit.log").read_text()
    assert runner.slurm_outcome(text, 143) == "timeout"


def test_a_step_cancelled_by_scancel_is_killed():
    text = (SLURM_DIR / "logs" / "srun-cancelled.log").read_text()
    assert runner.slurm_outcome(text, 143) == "killed"


def test_a_log_without_a_slurm_cancellation_is_not_a_slurm_outcome():
    assert runner.slurm_outcome("Traceback (most recent call last):\nValueError: x\n", 1) is None


def test_the_classify_command_prints_the_class_of_a_log(capsys):
    assert runner.main(["classify", str(SLURM_DIR / "logs" / "srun-time-limit.log")]) == 0
    assert capsys.readouterr().out.strip() == "timeout"


# ---------------------------------------------------------------------------
# Real job steps
# ---------------------------------------------------------------------------


def test_a_job_step_through_the_launcher_gets_one_fake_gpu(slurm, tmp_path):
    prefix, _ = runner.launcher("slurm", session="t", commit="abc1234", timeout_s=60)
    out = subprocess.run(f"{prefix} sh -c 'echo gpu=$CUDA_VISIBLE_DEVICES'", shell=True,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("gpu=0", "gpu=1")


def test_a_cancelled_step_is_classified_killed(slurm, tmp_path):
    prefix, _ = runner.launcher("slurm", session="t", commit="def5678", timeout_s=60)
    log = tmp_path / "run.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(f"{prefix} sh -c 'echo started; sleep 120'", shell=True,
                                stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path)
        for _ in range(200):
            if "started" in log.read_text():
                break
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
        subprocess.run(runner.cancel_command("t", "def5678"), check=True, timeout=30)
        code = proc.wait(timeout=60)
    assert code != 0
    assert runner.slurm_outcome(log.read_text(), code) == "killed"


def test_two_slots_run_as_two_slurm_job_steps_on_two_gpus(slurm, tmp_path):
    repo = make_repo(tmp_path, train=STANDIN)
    queue = make_queue(repo, tmp_path, [("a", "A", "0.01"), ("b", "B", "-0.02")])
    done = run_loop(repo, "--queue", str(queue), "--workers", "2", "--runner", "slurm",
                    "--timeout", "120")
    assert done.returncode == 0, done.stderr
    got = rows(repo)
    assert sorted(row["status"] for row in got[1:]) == ["discard", "keep"]  # at once, on b0
    assert ledger.validate(str(repo / "results.tsv")) == []
    round_runs = [o for o in runs(repo) if "baseline" not in o["description"]]
    assert sorted(o["worker"] for o in round_runs) == ["w1", "w2"]
    gpus = set()
    for o in round_runs:
        log = (repo / o["log"]).read_text()
        assert f"job=autoresearch-test-{o['short']}" in log
        gpus.add(next(line for line in log.splitlines() if line.startswith("gpu=")))
    assert gpus <= {"gpu=0", "gpu=1"}
    assert "--gres=gpu:1" in round_runs[0]["cmd"]
    assert git(repo, "log", "-1", "--format=%s") == "try b"
    assert_clean(repo)


@pytest.mark.parametrize("name, crash_class", [("srun-time-limit.log", "timeout"),
                                               ("srun-cancelled.log", "killed")])
def test_the_run_log_classifier_maps_slurm_cancellations_to_crash_classes(name, crash_class):
    facts = runlog.summarize(str(SLURM_DIR / "logs" / name), "val_bpb", 143, False)
    assert facts["value"] is None
    assert facts["crash_class"] == crash_class


def test_ctrl_c_during_a_slurm_round_cancels_both_steps_and_writes_no_row(slurm, tmp_path):
    repo = make_repo(tmp_path, train=STANDIN)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_loop(repo, "--queue", str(empty), "--runner", "slurm", "--workers", "2"
                    ).returncode == 5  # the baseline
    queue = make_queue(repo, tmp_path, [("a", "A", "-0.01"), ("b", "B", "-0.02")])
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "STANDIN_GATE": str(gate), "STANDIN_MARKS": str(marks)}
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run-loop.sh"), "--repo", str(repo), "--cmd",
         f"{sys.executable} train.py", "--queue", str(queue), "--workers", "2",
         "--runner", "slurm"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True)
    wait_for(lambda: len(list(marks.iterdir())) == 2, "both job steps to start")
    pids = [int(p.name) for p in marks.iterdir()]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    wait_for(lambda: not squeue("autoresearch-test-"), "Slurm to forget the cancelled steps")
    assert not any(alive(pid) for pid in pids)
    assert len(rows(repo)) == 1
    assert_clean(repo)


def squeue(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
    return [name for name in out.split() if name.startswith(prefix)]


def test_start_is_idempotent_and_stop_ends_exactly_the_daemons_start_recorded(slurm):
    state = Path(tempfile.mkdtemp(prefix="ar-slurm2-"))
    state.chmod(0o755)
    env = dict(os.environ, AR_SLURM_PORT=str(_free_port_pair()), SLURM_CONF=str(state / "x"))
    start = ["bash", str(SLURM_DIR / "start.sh"), "--state", str(state), "--gpus", "1"]
    try:
        first = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        pids = {d: int((state / f"{d}.pid").read_text()) for d in ("munged", "slurmctld", "slurmd")}
        again = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert {d: int((state / f"{d}.pid").read_text()) for d in pids} == pids
        stop = ["bash", str(SLURM_DIR / "stop.sh"), "--state", str(state)]
        assert subprocess.run(stop, env=env, capture_output=True, timeout=120).returncode == 0
        assert not any(alive(pid) for pid in pids.values())
        assert not list(state.glob("*.pid"))
        assert subprocess.run(stop, env=env, capture_output=True, timeout=120).returncode == 0
        # the session's Slurm (another state directory) is untouched
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
        assert "UP" in ping.stdout
    finally:
        subprocess.run(["bash", str(SLURM_DIR / "stop.sh"), "--state", str(state)],
                       capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
