"""examples/cpu-target: the fixed evaluator (evaluate_bpb exact on known models), the corpus
(deterministic, pinned, cached under AUTORESEARCH_CACHE_DIR, rebuilt when corrupted) and
train.py's contract (upstream's summary block, FAIL and exit 1 on a diverging loss).

The target needs numpy, which the skill's own test environment does not have: the tests run
the target's code in the target's own environment (`uv sync` of examples/cpu-target into a
temporary venv), exactly as `uv run train.py` does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "examples" / "cpu-target"
SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")


# ---------------------------------------------------------------------------
# Fixtures: the target's environment, a scratch cache, a way to run code in it
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_python(tmp_path_factory) -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not found: the CPU target's numpy environment cannot be built")
    venv = tmp_path_factory.mktemp("cpu-target-venv") / "venv"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(venv))
    done = subprocess.run([uv, "sync", "--quiet", "--locked", "--project", str(TARGET)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cpu-target-cache")


def run_py(python: str, code: str, cache: Path, cwd: Path = TARGET) -> dict:
    """Runs code (which prints one JSON object last) with prepare importable; returns it."""
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([python, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def val_bytes(python: str, cache: Path) -> bytes:
    run_py(python, "import prepare, json; prepare.load_split('val'); print(json.dumps({}))", cache)
    return (cache / "corpus-v1" / "val.bin").read_bytes()


@pytest.fixture(scope="module")
def constants(target_python, cache_dir) -> dict:
    """prepare.py's constants, as the target's own Python sees them."""
    return run_py(target_python, """
        import json, prepare
        names = ["MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "TRAIN_BYTES", "VAL_BYTES",
                 "TRAIN_SHA256", "VAL_SHA256", "VOCAB_SIZE"]
        print(json.dumps({n: getattr(prepare, n) for n in names}))
    """, cache_dir)


# ---------------------------------------------------------------------------
# evaluate_bpb
# ---------------------------------------------------------------------------


def test_a_uniform_model_over_256_bytes_scores_exactly_8_bits_per_byte(target_python, cache_dir):
    out = run_py(target_python, """
        import json, numpy as np, prepare
        bpb = prepare.evaluate_bpb(lambda ctx: np.zeros((len(ctx), 256)))
        print(json.dumps({"bpb": bpb}))
    """, cache_dir)
    assert out["bpb"] == 8.0


def test_a_model_that_knows_every_next_byte_scores_near_zero(target_python, cache_dir):
    out = run_py(target_python, """
        import json, numpy as np, prepare
        val = prepare.load_split("val")
        n = prepare.MAX_SEQ_LEN
        oracle = {bytes(val[i - n:i]): int(val[i]) for i in range(n, len(val))}
        def model(ctx):
            logits = np.zeros((len(ctx), 256))
            for row, c in enumerate(ctx):
                logits[row, oracle[bytes(c.astype(np.uint8))]] = 40.0
            return logits
        print(json.dumps({"bpb": prepare.evaluate_bpb(model, batch_size=1000)}))
    """, cache_dir)
    # a few 64-byte contexts recur with different next bytes: near zero, not zero
    assert 0.0 <= out["bpb"] < 0.01


def test_a_unigram_model_scores_the_cross_entropy_computed_by_hand(target_python, cache_dir,
                                                                   constants):
    data = val_bytes(target_python, cache_dir)
    c = constants
    scored = data[c["MAX_SEQ_LEN"]:c["MAX_SEQ_LEN"] + c["EVAL_TOKENS"]]
    assert len(scored) == c["EVAL_TOKENS"]
    counts = Counter(data)  # the model's distribution: counts of the whole split, +1 smoothing
    total = sum(counts.values()) + 256
    expected = math.fsum(-math.log2((counts[b] + 1) / total) for b in scored) / len(scored)
    out = run_py(target_python, """
        import json, numpy as np, prepare
        val = prepare.load_split("val")
        counts = np.bincount(val, minlength=256) + 1.0
        logits = np.log(counts / counts.sum()) + 3.0  # any shift: softmax is invariant
        bpb = prepare.evaluate_bpb(lambda ctx: np.tile(logits, (len(ctx), 1)), batch_size=777)
        print(json.dumps({"bpb": bpb}))
    """, cache_dir)
    assert abs(out["bpb"] - expected) < 1e-9
    assert 3.0 < out["bpb"] < 8.0


def test_the_model_sees_only_the_bytes_before_the_one_it_predicts(target_python, cache_dir,
                                                                  constants):
    out = run_py(target_python, """
        import json, numpy as np, prepare
        val = prepare.load_split("val")
        seen = []
        def model(ctx):
            seen.append(ctx.copy())
            return np.zeros((len(ctx), 256))
        prepare.evaluate_bpb(model, batch_size=4096)
        ctx = np.concatenate(seen)
        n = prepare.MAX_SEQ_LEN
        ok = all(bytes(ctx[i].astype(np.uint8)) == bytes(val[i:i + n])
                 for i in range(0, len(ctx), 997))
        print(json.dumps({"rows": len(ctx), "width": ctx.shape[1], "ok": bool(ok)}))
    """, cache_dir)
    c = constants
    assert out == {"rows": c["EVAL_TOKENS"], "width": c["MAX_SEQ_LEN"], "ok": True}


def test_a_model_returning_the_wrong_shape_is_refused(target_python, cache_dir):
    out = run_py(target_python, """
        import json, numpy as np, prepare
        try:
            prepare.evaluate_bpb(lambda ctx: np.zeros((len(ctx), 10)))
            print(json.dumps({"error": None}))
        except ValueError as err:
            print(json.dumps({"error": str(err)}))
    """, cache_dir)
    assert out["error"] and "shape" in out["error"]


# ---------------------------------------------------------------------------
# The corpus: deterministic, pinned, cached
# ---------------------------------------------------------------------------


def test_the_corpus_is_the_same_bytes_every_time_and_matches_the_pinned_hashes(target_python,
                                                                              cache_dir, constants):
    out = run_py(target_python, """
        import hashlib, json, prepare
        a = prepare.generate_corpus(prepare.TRAIN_SEED, prepare.TRAIN_BYTES)
        b = prepare.generate_corpus(prepare.TRAIN_SEED, prepare.TRAIN_BYTES)
        v = prepare.generate_corpus(prepare.VAL_SEED, prepare.VAL_BYTES)
        print(json.dumps({"same": a == b, "train": hashlib.sha256(a).hexdigest(),
                          "val": hashlib.sha256(v).hexdigest(), "len": [len(a), len(v)],
                          "ascii": a.isascii() and v.isascii()}))
    """, cache_dir)
    c = constants
    assert out["same"] and out["ascii"]
    assert out["train"] == c["TRAIN_SHA256"] and out["val"] == c["VAL_SHA256"]
    assert out["len"] == [c["TRAIN_BYTES"], c["MAX_SEQ_LEN"] + c["EVAL_TOKENS"]]


def test_the_validation_split_is_pinned_and_differs_from_the_training_split(target_python,
                                                                           cache_dir, constants):
    data = val_bytes(target_python, cache_dir)
    run_py(target_python, "import prepare, json; prepare.load_split('train'); print('{}')",
           cache_dir)
    train = (cache_dir / "corpus-v1" / "train.bin").read_bytes()
    assert hashlib.sha256(data).hexdigest() == constants["VAL_SHA256"]
    assert data[:4096] not in train
    assert b"\n\n" in data and b" plus " in data  # paragraphs and the grammar's sums


def test_the_cache_lives_under_autoresearch_cache_dir_and_prepare_reports_it(target_python,
                                                                             tmp_path):
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([target_python, "prepare.py"], cwd=TARGET, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"Cache directory: {tmp_path}" in done.stdout
    assert sorted(p.name for p in (tmp_path / "corpus-v1").iterdir()) == ["train.bin", "val.bin"]


def test_a_corrupted_cached_split_is_rebuilt_to_the_pinned_bytes(target_python, tmp_path,
                                                                 constants):
    good = val_bytes(target_python, tmp_path)
    path = tmp_path / "corpus-v1" / "val.bin"
    path.write_bytes(b"x" * len(good))
    again = run_py(target_python, """
        import hashlib, json, prepare
        print(json.dumps({"sha": hashlib.sha256(prepare.load_split("val").tobytes()).hexdigest()}))
    """, tmp_path)
    assert again["sha"] == constants["VAL_SHA256"] and path.read_bytes() == good


# ---------------------------------------------------------------------------
# train.py: a short real run (TIME_BUDGET lowered in a scratch copy)
# ---------------------------------------------------------------------------


def scratch_target(tmp_path: Path, budget: int, train_edit=None) -> Path:
    work = tmp_path / "target"
    shutil.copytree(TARGET, work, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    prepare = work / "prepare.py"
    prepare.write_text(re.sub(r"(?m)^TIME_BUDGET = \d+", f"TIME_BUDGET = {budget}",
                              prepare.read_text()))
    if train_edit:
        train = work / "train.py"
        train.write_text(train_edit(train.read_text()))
    return work


def run_train(python: str, work: Path, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([python, "train.py"], cwd=work, env=env, capture_output=True, text=True)


def test_train_py_learns_and_prints_upstreams_summary_block(target_python, cache_dir, tmp_path):
    done = run_train(target_python, scratch_target(tmp_path, budget=2), cache_dir)
    assert done.returncode == 0, done.stderr
    block = done.stdout.split("\n---\n", 1)[1].splitlines()
    keys = [line.split(":", 1)[0] for line in block]
    assert keys == list(SUMMARY_KEYS)
    values = {k: float(line.split(":", 1)[1]) for k, line in zip(keys, block)}
    assert all(re.match(r"^[a-z_M]+: +[0-9.]+$", line) for line in block)
    assert values["val_bpb"] < 5.0  # a uniform byte model scores 8.0
    assert values["training_seconds"] >= 2.0 and values["num_steps"] > 10
    assert values["peak_vram_mb"] > 10 and values["depth"] == 1


def test_a_diverging_learning_rate_prints_fail_and_exits_1(target_python, cache_dir, tmp_path):
    def explode(text: str) -> str:
        return re.sub(r"(?m)^LEARNING_RATE = [0-9.]+", "LEARNING_RATE = 50.0", text)

    done = run_train(target_python, scratch_target(tmp_path, budget=2, train_edit=explode),
                     cache_dir)
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith("FAIL") and "val_bpb:" not in done.stdout


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_train_py_runs_one_blas_thread_whatever_the_environment_asks_for(target_python,
                                                                         cache_dir, tmp_path):
    """A pool of BLAS threads would spin on the CPU time the budget counts: train.py sets one
    thread before numpy is imported, even when the environment asks for four."""
    def count_threads(text: str) -> str:
        return text + '\nprint("threads:", len(os.listdir("/proc/self/task")))\n'

    work = scratch_target(tmp_path, budget=1, train_edit=count_threads)
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(cache_dir), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS="4", OPENBLAS_NUM_THREADS="4", MKL_NUM_THREADS="4")
    done = subprocess.run([target_python, "train.py"], cwd=work, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "BLAS threads: 1" in done.stdout
    assert done.stdout.rstrip().endswith("threads: 1")


def test_prepare_keeps_glibcs_malloc_steady_so_steps_do_not_fault_in_fresh_pages(
        target_python, cache_dir):
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt only")
    out = run_py(target_python, "import json, prepare; "
                 "print(json.dumps({'steady': prepare.STEADY_MALLOC}))", cache_dir)
    assert out["steady"] is True


def test_the_budget_is_the_process_s_own_cpu_time_so_a_busy_wall_clock_takes_no_steps(
        target_python, cache_dir, tmp_path):
    """A wall clock that races ahead (as on a machine busy with other work) must not cut the
    run short: the budget counts reference seconds, made of time.process_time, as prepare.py's
    TIME_BUDGET_CLOCK says."""
    work = scratch_target(tmp_path, budget=1)
    (work / "sitecustomize.py").write_text(
        "import time\n_real = time.time\n_calls = [0]\n"
        "def _racing():\n    _calls[0] += 1\n    return _real() + 5.0 * _calls[0]\n"
        "time.time = _racing\n")
    env = dict(os.environ, AUTORESEARCH_CACHE_DIR=str(cache_dir), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(work))
    done = subprocess.run([target_python, "train.py"], cwd=work, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    values = dict(line.split(":", 1) for line in done.stdout.split("\n---\n", 1)[1].splitlines())
    assert float(values["num_steps"]) > 100  # a wall-clock budget stops after 12 steps here
    constants = run_py(target_python, "import json, prepare; "
                       "print(json.dumps({'clock': prepare.TIME_BUDGET_CLOCK}))", cache_dir)
    assert constants["clock"] == "reference"


# ---------------------------------------------------------------------------
# The budget clock: reference seconds (prepare.BudgetClock)
# ---------------------------------------------------------------------------


def test_the_budget_clock_charges_cpu_seconds_at_the_measured_speed_of_the_reference_step(
        target_python, cache_dir):
    """A machine that runs the reference step twice as slow as the reference core gets two CPU
    seconds per reference second; one twice as fast, half a CPU second; the factor stays
    within REFERENCE_FACTOR_RANGE and is measured again every REFERENCE_EVERY CPU seconds."""
    out = run_py(target_python, """
        import json, prepare
        unit, every = prepare.REFERENCE_STEP_SECONDS, prepare.REFERENCE_EVERY
        low, high = prepare.REFERENCE_FACTOR_RANGE
        slow = prepare.BudgetClock(probe=lambda: 2 * unit)
        fast = prepare.BudgetClock(probe=lambda: unit / 2)
        stalled = prepare.BudgetClock(probe=lambda: 1000 * unit)
        instant = prepare.BudgetClock(probe=lambda: 0.0)
        times = iter([unit, 4 * unit, unit, unit])
        changing = prepare.BudgetClock(probe=lambda: next(times))
        charged = [changing.charge(every / 2), changing.charge(every / 2),
                   changing.charge(every), changing.charge(every)]
        print(json.dumps({"slow": slow.charge(1.0), "fast": fast.charge(1.0),
                          "stalled": stalled.charge(1.0), "instant": instant.charge(1.0),
                          "low": low, "high": high, "every": every, "charged": charged,
                          "measurements": changing.measurements,
                          "cpu_seconds": changing.cpu_seconds}))
    """, cache_dir)
    assert out["slow"] == pytest.approx(0.5) and out["fast"] == pytest.approx(2.0)
    assert out["stalled"] == out["low"] and out["instant"] == out["high"]
    every = out["every"]
    # measured at 1x, then at 4x slower after the first REFERENCE_EVERY, then 1x again
    assert out["charged"] == pytest.approx([every / 2, every / 2, every / 4, every])
    assert out["measurements"] == 4 and out["cpu_seconds"] == pytest.approx(3 * every)


def test_the_reference_step_is_the_same_fixed_work_every_time(target_python, cache_dir):
    out = run_py(target_python, """
        import json, prepare
        first = prepare.reference_step()
        before = {k: v.copy() for k, v in prepare._reference_arrays().items()}
        again = [prepare.reference_step() for _ in range(3)]
        after = prepare._reference_arrays()
        same = all((before[k] == after[k]).all() for k in before)
        print(json.dumps({"seconds": [first] + again, "same": same,
                          "shapes": {k: list(v.shape) for k, v in after.items()}}))
    """, cache_dir)
    assert out["same"] and all(s > 0 for s in out["seconds"])
    assert out["shapes"]["w0"] == [128, 256] and out["shapes"]["w_out"] == [256, 256]
    assert out["shapes"]["x"] == [128, 8]   # train.py's baseline: CONTEXT 8, BATCH_SIZE 128


def test_training_seconds_are_reference_seconds_so_a_fast_machine_trains_on_fewer_cpu_seconds(
        target_python, cache_dir, tmp_path):
    """A reference step that costs 100 s on the reference core makes any machine look at least
    4x faster (the top of REFERENCE_FACTOR_RANGE): 2 reference seconds are 0.5 CPU seconds."""
    work = scratch_target(tmp_path, budget=2)
    prepare = work / "prepare.py"
    text = prepare.read_text()
    assert text.count("REFERENCE_STEP_SECONDS = 0.") == 1
    prepare.write_text(re.sub(r"(?m)^REFERENCE_STEP_SECONDS = [0-9.]+",
                              "REFERENCE_STEP_SECONDS = 100.0", text))
    done = run_train(target_python, work, cache_dir)
    assert done.returncode == 0, done.stderr
    trained = re.search(r"Trained ([0-9.]+) reference seconds on ([0-9.]+) CPU seconds: "
                        r"the machine at ([0-9.]+)x the reference core", done.stdout)
    reference, cpu, speed = (float(trained.group(i)) for i in (1, 2, 3))
    assert speed == 4.0 and reference >= 2.0 and cpu <= 0.55
    values = dict(line.split(":", 1) for line in done.stdout.split("\n---\n", 1)[1].splitlines())
    assert float(values["training_seconds"]) == reference
