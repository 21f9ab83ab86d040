"""run.log: summary parsing (streamed) and crash classification."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arcore import runlog

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus" / "logs"
LOGS = FIXTURES / "logs"
STANDINS = FIXTURES / "standins"
SCRIPTS = Path(__file__).parent.parent / "scripts"


def _run_standin(tmp_path: Path, name: str) -> tuple[Path, int]:
    """Runs a stand-in train.py the way the harness does: stdout and stderr into one log."""
    script = tmp_path / "train.py"
    shutil.copy(STANDINS / name, script)
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        code = subprocess.run([sys.executable, str(script)], cwd=tmp_path, stdout=out,
                              stderr=subprocess.STDOUT, timeout=60).returncode
    return log, code


# ---------------------------------------------------------------------------
# Summary parsing
# ---------------------------------------------------------------------------


def test_the_real_gpu_summary_yields_every_metric():
    summary = runlog.parse(str(CORPUS / "gpu-summary-ok.log"))
    assert summary["val_bpb"] == pytest.approx(3.387869)
    assert summary["peak_vram_mb"] == pytest.approx(58266.1)
    assert summary["router_aux_loss"] == pytest.approx(0.009334)
    assert len(summary) > 50


def test_memory_is_peak_vram_over_1024():
    summary = runlog.parse(str(CORPUS / "gpu-summary-ok.log"))
    assert runlog.memory_gb(summary) == pytest.approx(58266.1 / 1024)


def test_the_standin_summary_parses_after_carriage_return_progress(tmp_path):
    log, code = _run_standin(tmp_path, "ok.py")
    found = runlog.scan(str(log))
    assert code == 0
    assert runlog.metric_value(found.summary) == 1.0
    assert found.summary["training_seconds"] == 300.1
    assert found.steps == 5


def test_only_the_last_summary_block_counts():
    summary = runlog.parse(str(LOGS / "two-blocks.log"))
    assert summary == {"val_bpb": 1.5, "peak_vram_mb": 2048.0}


def test_another_metric_name_can_decide(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("---\nval_loss: 2.5\nval_bpb: nope\n")
    summary = runlog.parse(str(log))
    assert runlog.metric_value(summary, "val_loss") == 2.5
    assert runlog.metric_value(summary, "val_bpb") is None


def test_a_nan_metric_is_no_metric_and_classed_nan():
    out = runlog.summarize(str(LOGS / "summary-nan.log"))
    assert out["value"] is None
    assert out["crash_class"] == "nan"


def test_a_chunk_boundary_inside_the_summary_does_not_split_a_line():
    data = ("\rstep 00001 | loss: 1.0" * 5000 + "\n---\nval_bpb: 0.987654\n").encode()
    lines = list(runlog.iter_lines(io.BytesIO(data), chunk=7))
    assert lines[-2:] == ["---", "val_bpb: 0.987654"]


def test_an_endless_line_is_cut_not_kept_whole():
    data = b"x" * (10 * runlog.MAX_LINE) + b"\n---\nval_bpb: 1.0\n"
    lines = list(runlog.iter_lines(io.BytesIO(data), chunk=1024))
    assert max(len(line) for line in lines) <= runlog.MAX_LINE
    assert lines[-1] == "val_bpb: 1.0"


def test_a_missing_log_is_reported_not_raised(tmp_path):
    found = runlog.scan(str(tmp_path / "none.log"))
    assert found.missing and found.summary == {}


# ---------------------------------------------------------------------------
# Classification: the real GPU logs
# ---------------------------------------------------------------------------


def test_the_real_sigterm_log_is_killed():
    out = runlog.summarize(str(CORPUS / "gpu-killed-sigterm.log"))
    assert out["value"] is None and out["crash_class"] == "killed"


def test_the_real_log_that_just_stops_is_truncated():
    out = runlog.summarize(str(CORPUS / "gpu-truncated-no-summary.log"))
    assert out["crash_class"] == "truncated"
    assert "rerun" in out["hint"]


def test_the_real_finished_log_is_no_crash():
    out = runlog.summarize(str(CORPUS / "gpu-summary-ok.log"))
    assert out["crash_class"] is None and out["value"] == pytest.approx(3.387869)


# ---------------------------------------------------------------------------
# Classification: stand-ins and fixture logs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("standin", "expected"), [
    ("crash.py", "unknown"),
    ("fail.py", "nan"),
    ("oom.py", "oom"),
    ("import_error.py", "import"),
    ("syntax.py.in", "syntax"),
    ("missing_data.py", "data"),
])
def test_each_standin_failure_gets_its_class(tmp_path, standin, expected):
    log, code = _run_standin(tmp_path, standin)
    assert code != 0
    out = runlog.summarize(str(log), exit_code=code)
    assert out["crash_class"] == expected
    assert out["hint"] == runlog.HINTS[expected]


@pytest.mark.parametrize(("name", "expected"), [
    ("compile-inductor.log", "compile"),
    ("kernel-get-kernel.log", "kernel"),
])
def test_compile_and_kernel_failures_get_their_class(name, expected):
    assert runlog.summarize(str(LOGS / name), exit_code=1)["crash_class"] == expected


def test_a_timed_out_run_is_a_timeout_even_with_progress():
    out = runlog.summarize(str(LOGS / "timeout-hang.log"), exit_code=-9, timed_out=True)
    assert out["crash_class"] == "timeout" and out["value"] is None


def test_a_signal_exit_with_no_error_is_killed():
    found = runlog.scan(str(LOGS / "timeout-hang.log"))
    assert runlog.classify(found, exit_code=137) == "killed"
    assert runlog.classify(found, exit_code=None) == "truncated"


def test_every_class_has_a_one_line_hint():
    assert set(runlog.CLASSES) == {"oom", "nan", "timeout", "syntax", "import", "compile",
                                   "kernel", "data", "killed", "truncated", "unknown"}
    assert all(h and "\n" not in h for h in runlog.HINTS.values())


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "arcore", "runlog", *args], cwd=SCRIPTS,
                          capture_output=True, text=True)


def test_the_cli_parse_prints_key_value_lines():
    done = _cli("parse", str(CORPUS / "gpu-summary-ok.log"))
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == "val_bpb: 3.387869"


def test_the_cli_classify_prints_class_and_hint_as_json():
    done = _cli("classify", str(CORPUS / "gpu-killed-sigterm.log"), "--exit-code", "143", "--json")
    assert done.returncode == 0
    assert '"crash_class": "killed"' in done.stdout


def test_the_cli_parse_exits_one_without_a_metric_and_two_on_bad_usage():
    assert _cli("parse", str(CORPUS / "gpu-truncated-no-summary.log")).returncode == 1
    assert _cli("classify").returncode == 2
    assert _cli("classify", "x.log", "--exit-code", "abc").returncode == 2


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 20])
def test_the_fast_tail_matches_a_line_by_line_reading(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(runlog, "CHUNK", chunk)
    lines = [f"step {i:05d} | loss: {i / 7:.6f}" for i in range(3000)]
    lines += ["", "Traceback (most recent call last):", "  File x", "RuntimeError: boom"]
    log = tmp_path / "run.log"
    log.write_bytes(("\r".join(lines[:3000]) + "\n" + "\n".join(lines[3000:]) + "\n").encode())
    found = runlog.scan(str(log))
    assert found.tail == [line for line in lines if line.strip()][-runlog.TAIL_LINES:]
    assert found.steps == 3000 and found.summary == {}
