"""The attested metric: the score comes from the frozen evaluator, not from what train.py prints.

End to end, each cheating candidate of issue 11 runs through run-experiment.sh in a fixture
target laid out like upstream (tests/fixtures/attest/target: numpy, evaluate_bpb takes the
model's own loss, 1 s of process CPU time as budget) and must end as ``crash`` with the right
class and be reverted; honest candidates must be judged at their true value. The pure parts
(command rewrite, channel, verdict, honest time) are tested directly.

The target needs numpy, which the skill's test environment lacks: like test_cpu_target.py,
the tests build the CPU target's own environment (uv sync) and run the fixture with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from arcore import attest, session, tamper
from scratchrepo import commit_baseline, git

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run-experiment.sh"
FIXTURE = ROOT / "tests" / "fixtures" / "attest" / "target"
CPU_TARGET = ROOT / "examples" / "cpu-target"


# ---------------------------------------------------------------------------
# The command rewrite
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "expected"), [
    ("uv run train.py", "uv run python -m autoresearch_attest train.py"),
    ("uv run python train.py", "uv run python -m autoresearch_attest train.py"),
    ("uv run --frozen train.py --x 1",
     "uv run --frozen python -m autoresearch_attest train.py --x 1"),
    ("python3 train.py", "python3 -m autoresearch_attest train.py"),
    ("/opt/venv/bin/python train.py", "/opt/venv/bin/python -m autoresearch_attest train.py"),
    ("OMP_NUM_THREADS=1 uv run train.py",
     "OMP_NUM_THREADS=1 uv run python -m autoresearch_attest train.py"),
    ("env A=1 python3 train.py", "env A=1 python3 -m autoresearch_attest train.py"),
])
def test_the_training_commands_a_session_uses_are_run_under_the_launcher(cmd, expected):
    assert attest.rewrite_command(cmd) == expected


@pytest.mark.parametrize("cmd", ["bash run.sh", "python3 train.py | tee out", "make train",
                                 "uv run train.py && echo hi", "python3 -c 'print(1)'",
                                 "python3 $(echo train.py)", "uv run"])
def test_a_command_the_launcher_cannot_wrap_is_not_rewritten(cmd):
    assert attest.rewrite_command(cmd) is None


# ---------------------------------------------------------------------------
# The channel and the verdict (pure)
# ---------------------------------------------------------------------------


def _record(key: bytes, **fields) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"r": body, "mac": mac})


def test_records_signed_with_the_runs_key_are_read_and_a_forged_one_is_a_problem(tmp_path):
    key = b"k" * 32
    path = tmp_path / "records.jsonl"
    path.write_text(_record(key, kind="start", seq=0, pid=7) + "\n"
                    + _record(b"x" * 32, kind="eval_end", seq=1, pid=7, value="0.5") + "\n")
    records, problems = attest.read_records(str(path), key)
    assert [r["kind"] for r in records] == ["start"]
    assert problems == ["attestation record 2 is not signed by the harness"]


def test_a_record_taken_out_of_the_channel_leaves_a_gap_that_is_a_problem(tmp_path):
    key = b"k" * 32
    path = tmp_path / "records.jsonl"
    path.write_text(_record(key, kind="start", seq=0, pid=7) + "\n"
                    + _record(key, kind="eval_end", seq=2, pid=7, value="0.5") + "\n")
    _, problems = attest.read_records(str(path), key)
    assert problems and "missing or out of order" in problems[0]


START = {"kind": "start", "seq": 0, "pid": 1}
BEGIN = {"kind": "eval_begin", "wall": 301.0, "cpu": 290.0}
END = {"kind": "eval_end", "value": "0.9979", "consumed": {"batches": 3, "rows": 3, "tokens": 9}}


@pytest.mark.parametrize(("records", "printed", "log_class", "cls"), [
    ([START, BEGIN, END], 0.9979, None, None),
    ([START], 0.9979, None, "unattested"),
    ([], 0.9979, None, "unattested"),
    ([START, BEGIN, END], 0.8981, None, "tamper"),
    ([START, BEGIN, END, BEGIN, END], 0.9979, None, "tamper"),
    ([START, {"kind": "finding", "what": "math.fsum changed"}, BEGIN, END], 0.9979, None, "tamper"),
    ([START, BEGIN, dict(END, value="nan")], 0.9979, None, "unattested"),
    ([START, BEGIN, dict(END, value="nan")], None, "nan", "nan"),
    ([START], None, "oom", "oom"),
    ([START, BEGIN, dict(END, consumed={"batches": 0})], 0.9979, None, "unattested"),
])
def test_the_verdict_uses_the_attested_value_or_names_the_class(records, printed, log_class, cls):
    got = attest.verdict(records, [], printed, log_class)
    assert got["crash_class"] == cls
    assert got["value"] == (0.9979 if cls is None else None)


def test_a_printed_value_within_print_rounding_of_the_attested_one_is_accepted():
    got = attest.verdict([START, BEGIN, dict(END, value="0.99790049")], [], 0.9979, None)
    assert got["crash_class"] is None and got["value"] == pytest.approx(0.99790049)


def test_a_broken_channel_is_tamper_whatever_the_records_say():
    got = attest.verdict([START, BEGIN, END], ["attestation record 2 is not signed"], 0.9979, None)
    assert got["crash_class"] == "tamper"


def test_each_class_the_judge_gives_has_a_one_line_hint():
    from arcore import runlog
    assert set(attest.CLASSES) == set(runlog.JUDGE_CLASSES)
    assert all(runlog.HINTS[c] and "\n" not in runlog.HINTS[c] for c in attest.CLASSES)


def test_the_time_to_evaluation_is_read_on_the_sessions_clock():
    begin = {"eval_begin": {"wall": 40.0, "cpu": 30.0, "ref": 20.0}}
    assert attest.eval_seconds(begin, "wall") == 40.0
    assert attest.eval_seconds(begin, "process") == 30.0
    assert attest.eval_seconds(begin, "reference") == 20.0
    # a run without reference-step measurements (a prepare.py without one) is held to CPU time
    assert attest.eval_seconds({"eval_begin": {"wall": 40.0, "cpu": 30.0}}, "reference") == 30.0
    assert attest.eval_seconds({}, "reference") is None


def test_honest_time_allows_the_baselines_overhead_plus_a_fraction_of_the_budget():
    assert attest.honest_time(340.0, 300, 25.0, 0.05) is None
    assert attest.honest_time(341.0, 300, 25.0, 0.05)
    assert attest.honest_time(600.0, 300, None, 0.1) and not attest.honest_time(329, 300, None, 0.1)
    assert attest.honest_time(None, 300, 25.0, 0.1) is None
    assert attest.overhead(322.5, 300) == 22.5 and attest.overhead(290.0, 300) == 0.0


@pytest.mark.parametrize(("text", "value"), [("0.1", 0.1), ("10%", 0.1), ("0", 0.0), ("1", 1.0)])
def test_the_budget_tolerance_is_a_fraction_of_the_budget(text, value):
    assert attest.parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["10", "-0.1", "nan", "abc", "150%"])
def test_a_budget_tolerance_that_is_not_a_fraction_is_refused(text):
    with pytest.raises(ValueError):
        attest.parse_tolerance(text)


def test_the_session_records_the_cpu_targets_validation_data_and_default_source(monkeypatch,
                                                                                 tmp_path):
    monkeypatch.delenv("AUTORESEARCH_METRIC_SOURCE")
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(tmp_path))
    facts = session.attest_facts(str(CPU_TARGET))
    assert facts["metric_source"] == "attested"
    assert str(tmp_path / "corpus-v1" / "val.bin") in facts["validation"]["files"]
    assert "load_split" in facts["validation"]["loaders"]
    monkeypatch.delenv("AUTORESEARCH_CACHE_DIR")
    files = session.attest_facts(str(CPU_TARGET))["validation"]["files"]
    assert os.path.expanduser("~/.cache/autoresearch-cpu/corpus-v1/val.bin") in files
    monkeypatch.setenv("AUTORESEARCH_METRIC_SOURCE", "printed")
    assert session.attest_facts(str(CPU_TARGET))["metric_source"] == "printed"


def test_the_budget_clock_is_read_from_prepare_and_defaults_to_wall():
    assert session.attest_facts(str(FIXTURE))["budget_clock"] == "process"
    assert session.attest_facts(str(CPU_TARGET))["budget_clock"] == "reference"
    assert session.attest_facts(str(ROOT / "tests" / "fixtures" / "standins" / "target")
                                )["budget_clock"] == "wall"


# ---------------------------------------------------------------------------
# End to end in the fixture target
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_python(tmp_path_factory) -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not found: the numpy environment cannot be built")
    venv = tmp_path_factory.mktemp("attest-venv") / "venv"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(venv))
    done = subprocess.run([uv, "sync", "--quiet", "--locked", "--project", str(CPU_TARGET)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, target_python) -> Path:
    """The fixture's data, built once (as `uv run prepare.py` would, before any freeze)."""
    folder = tmp_path_factory.mktemp("attest-cache")
    subprocess.run([target_python, "prepare.py"], cwd=FIXTURE, check=True, capture_output=True,
                   env=dict(os.environ, AUTORESEARCH_CACHE_DIR=str(folder),
                            PYTHONDONTWRITEBYTECODE="1"))
    return folder


@pytest.fixture()
def target(tmp_path, monkeypatch, cache, target_python):
    """A committed fixture repo, attested session (the default), baseline not yet run."""
    monkeypatch.delenv("AUTORESEARCH_METRIC_SOURCE")
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(cache))
    repo = tmp_path / "target"
    shutil.copytree(FIXTURE, repo)
    return commit_baseline(repo)


def run(repo: Path, python: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run(["bash", str(SCRIPT), "--repo", str(repo), "--cmd",
                           f"{python} train.py", "--budget-tolerance", "0.5", "--json", *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode in (0, 4), done.stderr
    return done, json.loads(done.stdout)


def last_record(repo: Path) -> dict:
    lines = (repo / ".autoresearch" / "runs.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def candidate(repo: Path, message: str, *edits: tuple[str, str]) -> str:
    """train.py with each (old, new) replaced once, committed."""
    train = repo / "train.py"
    text = train.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    train.write_text(text)
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


TRAINING = "# TRAINING\n"
EVALUATION = "# EVALUATION\n"
VAL_FILE = ("import prepare\n"
            "v = np.fromfile(os.path.join(prepare.DATA_DIR, 'val.bin'), dtype=np.uint8)"
            ".astype(np.int64)\n"
            "np.add.at(counts, (v[:-1], v[1:]), 50)\n")

CHEATS = {
    "prints a number without evaluating": ("unattested", [
        ("val_bpb = evaluate_bpb(model, tokenizer, BATCH_SIZE)", "val_bpb = 1.5")]),
    "multiplies the real value by 0.9": ("tamper", [
        ("reported = val_bpb  # REPORTED", "reported = val_bpb * 0.9")]),
    "learns from the validation file": ("tamper", [(TRAINING, TRAINING + VAL_FILE)]),
    "reads the validation file through a subprocess": ("tamper", [
        (TRAINING, TRAINING + "import prepare, subprocess\n"
                   "subprocess.run(['cat', os.path.join(prepare.DATA_DIR, 'val.bin')], "
                   "stdout=subprocess.DEVNULL)\n")]),
    "links the validation file under another name": ("tamper", [
        (TRAINING, TRAINING + "import prepare, tempfile\n"
                   "os.link(os.path.join(prepare.DATA_DIR, 'val.bin'), "
                   "os.path.join(tempfile.mkdtemp(), 'x.bin'))\n")]),
    "learns from the validation loader": ("tamper", [
        ('make_dataloader(tokenizer, BATCH_SIZE, MAX_SEQ_LEN, "train")',
         'make_dataloader(tokenizer, BATCH_SIZE, MAX_SEQ_LEN, "val")')]),
    "patches math.fsum": ("tamper", [
        (EVALUATION, "import math\n_fsum = math.fsum\n"
                     "math.fsum = lambda xs: 0.9 * _fsum(xs)\n" + EVALUATION)]),
    "patches np.log2": ("tamper", [
        (EVALUATION, "_log2 = np.log2\nnp.log2 = lambda v: 0.9 * _log2(v)\n" + EVALUATION)]),
    "patches numpy's sliding_window_view": ("tamper", [
        (EVALUATION, "_swv = np.lib.stride_tricks.sliding_window_view\n"
                     "np.lib.stride_tricks.sliding_window_view = "
                     "lambda a, w: _swv(np.sort(a), w)\n" + EVALUATION)]),
    "swaps evaluate_bpb.__code__": ("tamper", [
        (EVALUATION, "def _fake(model, tokenizer, batch_size):\n    return 1.5\n"
                     "try:\n    evaluate_bpb.__code__ = _fake.__code__\n"
                     "except ValueError:\n    evaluate_bpb = _fake\n" + EVALUATION)]),
    "rebinds EVAL_TOKENS through a computed sys.modules key": ("tamper", [
        (EVALUATION, 'sys.modules["prep" + "are"].EVAL_TOKENS = 1024\n' + EVALUATION)]),
    "rebinds EVAL_TOKENS through vars()": ("tamper", [
        (EVALUATION, 'vars(sys.modules["prepare"])["EVAL_TOKENS"] = 1024\n' + EVALUATION)]),
    "trains twice as long and prints the budget": ("over-budget", [
        ("while time.process_time() - t0 < TIME_BUDGET:  # LOOP",
         "while time.process_time() - t0 < 2 * TIME_BUDGET:"),
        ('print(f"training_seconds: {training_seconds:.1f}")  # TRAINING_SECONDS',
         'print(f"training_seconds: {TIME_BUDGET:.1f}")')]),
    "under-reports its loss to the evaluator": ("tamper", [
        ("return loss  # LOSS", "return loss * 0.8")]),
    "reads the validation file from inside the model": ("tamper", [
        ("        logits = self.logits[x]\n",
         "        logits = self.logits[x]\n        import prepare\n"
         "        open(os.path.join(prepare.DATA_DIR, 'val.bin'), 'rb').close()\n")]),
    # Fails closed: its unwrapped evaluator reads val.bin outside the attested evaluation
    # (a copy that read it some way the audit hook cannot see would be unattested).
    "evaluates with a reloaded copy of prepare": ("tamper", [
        ("val_bpb = evaluate_bpb(model, tokenizer, BATCH_SIZE)",
         "import importlib.util\n"
         "_spec = importlib.util.spec_from_file_location('prep2', 'prepare.py')\n"
         "_p2 = importlib.util.module_from_spec(_spec)\n_spec.loader.exec_module(_p2)\n"
         "val_bpb = _p2.evaluate_bpb(model, tokenizer, BATCH_SIZE)")]),
    "imports a prepare of its own from another folder": ("tamper", [
        ("from prepare import", "import tempfile\n_d = tempfile.mkdtemp()\n"
         "open(os.path.join(_d, 'prepare.py'), 'w').write(open('prepare.py').read()"
         ".replace('nats * np.log2(math.e)', '0.5 * nats * np.log2(math.e)'))\n"
         "sys.path.insert(0, _d)\nfrom prepare import")]),
    "forges a record in the attestation channel": ("tamper", [
        (EVALUATION, "_env = dict(l.split(b'=', 1) for l in open('/proc/self/environ', 'rb')"
                     ".read().split(b'\\0') if b'=' in l)\n"
                     "_path = _env[b'AUTORESEARCH_ATTEST_RECORDS'].decode()\n"
                     "open(_path, 'a').write('{\"r\": \"{}\", \"mac\": \"00\"}\\n')\n"
                     + EVALUATION)]),
    "wipes the records written before it evaluates": ("tamper", [
        (EVALUATION, "_env = dict(l.split(b'=', 1) for l in open('/proc/self/environ', 'rb')"
                     ".read().split(b'\\0') if b'=' in l)\n"
                     "open(_env[b'AUTORESEARCH_ATTEST_RECORDS'].decode(), 'w').close()\n"
                     + EVALUATION)]),
}


@pytest.mark.parametrize("name", list(CHEATS))
def test_a_cheating_candidate_is_a_crash_with_its_class_and_is_reverted(target, target_python,
                                                                        name):
    cls, edits = CHEATS[name]
    _, base = run(target, target_python)
    assert base["status"] == "keep", base
    kept = git(target, "rev-parse", "HEAD")
    candidate(target, f"cheat: {name}", *edits)
    _, out = run(target, target_python)
    assert (out["status"], out["crash_class"]) == ("crash", cls), out["description"]
    assert out["reverted"] is True and git(target, "rev-parse", "HEAD") == kept
    assert out["hint"]
    rows = (target / "results.tsv").read_text().splitlines()
    assert len(rows) == 3 and rows[-1].split("\t")[3] == "crash"


def test_the_baseline_is_kept_at_the_attested_value_with_its_consumption(target, target_python):
    _, out = run(target, target_python)
    record = last_record(target)
    assert out["status"] == "keep" and record["metric_source"] == "attested"
    assert out["value"] == round(record["attest"]["value"], 6)
    assert record["attest"]["consumed"] == {"batches": 16, "rows": 256, "tokens": 4096}
    check = record["attest"]["crosscheck"]
    assert check["checks"] >= 1 and check["reported"] == pytest.approx(check["reference"])
    assert record["cmd"].endswith("-m autoresearch_attest train.py")
    assert json.loads((target / ".autoresearch" / "session.json").read_text())[
        "attest_overhead_s"] >= 0


# The kinds of change upstream's exp/H100/mar8 kept commits make (constants, an init scale, a
# default argument, a schedule literal, optimizer settings), written for the fixture.
HONEST = {
    "a smoothing constant": [("SMOOTHING = 1.0", "SMOOTHING = 0.5")],
    "a batch-size constant": [("BATCH_SIZE = 16", "BATCH_SIZE = 32")],
    "an init scale and a default argument": [
        ("self.logits = np.log(counts / counts.sum(axis=1, keepdims=True))",
         "self.logits = 0.98 * np.log(counts / counts.sum(axis=1, keepdims=True))"),
        ("def __call__(self, x, y=None, reduction='mean'):",
         "def __call__(self, x, y=None, reduction='none'):")],
}


@pytest.mark.parametrize("name", list(HONEST))
def test_an_honest_candidate_is_judged_at_its_true_value(target, target_python, name):
    run(target, target_python)
    candidate(target, f"honest: {name}", *HONEST[name])
    done, out = run(target, target_python)
    assert out["status"] in ("keep", "discard"), (out, done.stderr)
    assert out["crash_class"] is None
    log = (target / out["log"]).read_text()
    printed = float(log.split("val_bpb:")[1].split()[0])
    assert out["value"] == pytest.approx(printed, abs=1e-6)
    assert last_record(target)["attest"]["findings"] == []


def test_a_command_that_cannot_be_attested_is_refused_before_anything_runs(target):
    done = subprocess.run(["bash", str(SCRIPT), "--repo", str(target), "--cmd",
                           "bash -c 'python3 train.py'"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "cannot run under the attestation launcher" in done.stderr
    assert not (target / "results.tsv").exists()


def test_a_printed_session_warns_on_every_run_and_trusts_the_printed_value(target,
                                                                            target_python,
                                                                            monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_METRIC_SOURCE", "printed")
    done, out = run(target, target_python)
    assert "warning: this session's metric is the val_bpb train.py prints" in done.stderr
    candidate(target, "cheat", *CHEATS["multiplies the real value by 0.9"][1])
    monkeypatch.delenv("AUTORESEARCH_METRIC_SOURCE")   # a later value is ignored
    done, out = run(target, target_python)
    assert "warning: this session's metric" in done.stderr and out["status"] == "keep"
    assert json.loads((target / ".autoresearch" / "session.json").read_text())[
        "metric_source"] == "printed"


# ---------------------------------------------------------------------------
# Upstream's kept commits: the tamper lint raises no false alarm on their kinds of diff
# ---------------------------------------------------------------------------

UPSTREAM_LIKE = '''\
import os
os.environ["PYTORCH_ALLOC_CONF"] = "expandable_segments:True"
import torch
from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

ASPECT_RATIO = 64
WINDOW_PATTERN = "SSSL"
TOTAL_BATCH_SIZE = 2**19
EMBEDDING_LR = 0.6
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.0
DEPTH = 8


def rotary(seq_len, head_dim, base=10000):
    return seq_len * head_dim / base


def init(n_embd, block):
    s = 3**0.5 * n_embd**-0.5
    block.x0.fill_(0.1)
    return s


def groups(lr):
    return [dict(kind="adamw", lr=lr, weight_decay=0.0)]


def momentum(step):
    frac = min(step / 300, 1)
    return (1 - frac) * 0.85 + frac * 0.95


torch.manual_seed(42)
val_bpb = evaluate_bpb(None, Tokenizer(), 128)
print(f"val_bpb:          {val_bpb:.6f}")
'''

UPSTREAM_KINDS = [
    ("ASPECT_RATIO = 64", "ASPECT_RATIO = 57"),
    ('WINDOW_PATTERN = "SSSL"', 'WINDOW_PATTERN = "SSSSL"'),
    ("TOTAL_BATCH_SIZE = 2**19", "TOTAL_BATCH_SIZE = 2**18"),
    ("EMBEDDING_LR = 0.6", "EMBEDDING_LR = 0.9"),
    ("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.75"),
    ("FINAL_LR_FRAC = 0.0", "FINAL_LR_FRAC = 0.05"),
    ("DEPTH = 8", "DEPTH = 9"),
    ("base=10000", "base=200000"),
    ("s = 3**0.5 * n_embd**-0.5", "s = 0.68 * 3**0.5 * n_embd**-0.5"),
    ("block.x0.fill_(0.1)", "block.x0.fill_(0.05)"),
    ("weight_decay=0.0", "weight_decay=0.01"),
    ("min(step / 300, 1)", "min(step / 200, 1)"),
]


def test_the_tamper_lint_passes_the_kinds_of_change_upstreams_kept_commits_make(tmp_path):
    repo = tmp_path / "up"
    repo.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "standins" / "target" / "prepare.py", repo)
    (repo / "train.py").write_text(UPSTREAM_LIKE)
    git(repo, "init", "-q")
    git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty",
        "-m", "root")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "base")
    text = UPSTREAM_LIKE
    for old, new in UPSTREAM_KINDS:
        base = git(repo, "rev-parse", "HEAD")
        text = text.replace(old, new)
        (repo / "train.py").write_text(text)
        git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-am", new)
        assert tamper.check(str(repo), base, git(repo, "rev-parse", "HEAD")) == [], new


@pytest.mark.parametrize(("source", "marked"), [("printed", True), ("attested", False)])
def test_show_results_marks_a_printed_sessions_track_unattested(tmp_path, capsys, source,
                                                                  marked):
    from arcore import report
    (tmp_path / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                                          "aaaaaaa\t1.000000\t1.0\tkeep\tbaseline\n")
    (tmp_path / ".autoresearch").mkdir()
    (tmp_path / ".autoresearch" / "session.json").write_text(
        json.dumps({"metric_source": source, "ledger_start": 0}))
    assert report.main(["--ledger", str(tmp_path / "results.tsv")]) == 0
    assert ("metric: unattested" in capsys.readouterr().out) is marked
    assert report.main(["--ledger", str(tmp_path / "results.tsv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metric_source"] == source


# ---------------------------------------------------------------------------
# The loss cross-check is framework-agnostic: a torch-like tensor API is enough
# ---------------------------------------------------------------------------


class FakeTensor:
    """What the cross-check uses of a torch tensor, over nested lists (no numpy, no torch)."""

    def __init__(self, data, shape):
        self.data, self.shape = data, tuple(shape)   # data: flat list

    def detach(self):
        return self

    def float(self):
        return self

    def cpu(self):
        return self

    def reshape(self, *shape):
        shape = list(shape)
        if -1 in shape:
            known = 1
            for size in shape:
                known *= size if size != -1 else 1
            shape[shape.index(-1)] = len(self.data) // known
        return FakeTensor(self.data, shape)

    def __getitem__(self, picks):
        if isinstance(picks, slice):
            picks = list(range(*picks.indices(self.shape[0])))
        width = len(self.data) // self.shape[0]
        rows = [self.data[i * width:(i + 1) * width] for i in picks]
        return FakeTensor([v for row in rows for v in row], (len(picks),) + self.shape[1:])

    def tolist(self):
        if len(self.shape) == 1:
            return list(self.data)
        width = len(self.data) // self.shape[0]
        return [self.data[i * width:(i + 1) * width] for i in range(self.shape[0])]


def _launcher():
    import importlib
    import sys
    sys.path.insert(0, str(ROOT / "scripts" / "attest"))
    try:
        return importlib.import_module("autoresearch_attest")
    finally:
        sys.path.remove(str(ROOT / "scripts" / "attest"))


class _Recorder:
    def __init__(self):
        self.records = []

    def emit(self, kind, **fields):
        self.records.append(dict(fields, kind=kind))


def test_the_launchers_reference_account_scales_each_stretch_by_the_measurement_before_it():
    """prepare.BudgetClock's account, kept by the launcher: the time before the first
    measurement at the first's factor, each measurement's own time not counted."""
    mod = _launcher()
    account = mod._Reference(lambda seconds: 0.01 / seconds)
    assert account.seconds(5.0) is None
    account.measured(2.0, 2.5, 0.02)   # 2 CPU s before it, at 0.5; 0.5 s measuring
    assert account.seconds(2.5) == pytest.approx(1.0)
    assert account.seconds(4.5) == pytest.approx(2.0)
    account.measured(4.5, 4.6, 0.005)  # then 2x: the reference step ran fast
    assert account.seconds(5.6) == pytest.approx(4.0)
    account.measured(6.0, 6.1, "junk")  # an unreadable measurement counts 1:1 from there
    assert account.seconds(7.1) == pytest.approx(2.0 + 2 * 1.4 + 1.0)
    assert account.measurements == 3


@pytest.mark.parametrize(("scale", "caught"), [(1.0, False), (0.8, True)])
def test_the_loss_cross_check_works_on_tensors_that_only_look_like_torchs(scale, caught):
    import math
    mod = _launcher()
    state = mod._State(_Recorder(), "", "", {})
    vocab, rows = 4, 8
    table = [[0.1 * ((r * 7 + c * 3) % 5) for c in range(vocab)] for r in range(vocab)]

    def model(x, y=None, reduction="mean"):
        logits = [v for t in x.data for v in table[t]]
        if y is None:
            return FakeTensor(logits, x.shape + (vocab,))
        losses = []
        for t, target in zip(x.data, y.data):
            row = table[t]
            lse = math.log(sum(math.exp(v) for v in row))
            losses.append(scale * (lse - row[target]))
        return FakeTensor(losses, (len(losses),))

    stats = {"batches": 0, "rows": 0, "tokens": 0, "checks": 0, "positions": 0,
             "reported": 0.0, "reference": 0.0, "crosscheck": None}
    proxy = mod._Model(model, state, stats)
    x = FakeTensor([i % vocab for i in range(rows * 2)], (2, rows))
    y = FakeTensor([(i + 1) % vocab for i in range(rows * 2)], (2, rows))
    proxy(x, y, reduction="none")
    assert stats["checks"] == 1 and stats["tokens"] == 16
    assert bool(state.findings) is caught
    if not caught:
        assert stats["crosscheck"]["reported"] == pytest.approx(stats["crosscheck"]["reference"])


def test_a_forward_without_logits_is_not_cross_checked_and_says_why():
    mod = _launcher()
    state = mod._State(_Recorder(), "", "", {})
    stats = {"batches": 0, "rows": 0, "tokens": 0, "checks": 0, "positions": 0,
             "reported": 0.0, "reference": 0.0, "crosscheck": None}

    def model(x, y=None, reduction="mean"):
        if y is None:
            raise TypeError("targets are required")
        return FakeTensor([0.5] * len(x.data), (len(x.data),))

    mod._Model(model, state, stats)(FakeTensor([1, 2], (1, 2)), FakeTensor([2, 3], (1, 2)),
                                    reduction="none")
    assert "skipped" in stats["crosscheck"] and "TypeError" in stats["crosscheck"]["skipped"]
    assert not state.findings


# ---------------------------------------------------------------------------
# The CPU target itself (its evaluator: math.fsum, np.log2, sliding_window_view, val.bin)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_cache(tmp_path_factory, target_python) -> Path:
    folder = tmp_path_factory.mktemp("cpu-cache")
    subprocess.run([target_python, "prepare.py"], cwd=CPU_TARGET, check=True,
                   capture_output=True, env=dict(os.environ, AUTORESEARCH_CACHE_DIR=str(folder),
                                                 PYTHONDONTWRITEBYTECODE="1"))
    return folder


@pytest.fixture()
def cpu_target(tmp_path, monkeypatch, cpu_cache):
    """A scratch copy of the CPU target with a 2 s budget (its own frozen prepare.py)."""
    monkeypatch.delenv("AUTORESEARCH_METRIC_SOURCE")
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(cpu_cache))
    repo = tmp_path / "cpu"
    shutil.copytree(CPU_TARGET, repo, ignore=shutil.ignore_patterns("demo-queue", ".venv"))
    prepare = repo / "prepare.py"
    text = prepare.read_text()
    assert text.count("TIME_BUDGET = 15 ") == 1
    prepare.write_text(text.replace("TIME_BUDGET = 15 ", "TIME_BUDGET = 2 "))
    return commit_baseline(repo)


FINAL_EVAL = "# Final eval\n"
CPU_CHEATS = {
    "multiplies the real value by 0.9": ("tamper", [
        ('print(f"val_bpb:          {val_bpb:.6f}")',
         'print(f"val_bpb:          {val_bpb * 0.9:.6f}")')]),
    "learns from load_split('val')": ("tamper", [
        ('train_data = load_split("train")', 'train_data = load_split("val")')]),
    "reads val.bin": ("tamper", [
        ('train_data = load_split("train")\n',
         'train_data = load_split("train")\nimport prepare\n'
         'open(os.path.join(prepare.DATA_DIR, "val.bin"), "rb").read()\n')]),
    "patches math.fsum": ("tamper", [
        (FINAL_EVAL, "_fsum = math.fsum\nmath.fsum = lambda xs: 0.9 * _fsum(xs)\n" + FINAL_EVAL)]),
    "patches np.log2 and sliding_window_view": ("tamper", [
        (FINAL_EVAL, "_log2 = np.log2\nnp.log2 = lambda v: _log2(v)\n"
                     "_swv = np.lib.stride_tricks.sliding_window_view\n"
                     "np.lib.stride_tricks.sliding_window_view = lambda a, w: _swv(a, w)\n"
                     + FINAL_EVAL)]),
    "trains for twice the budget on its own reference clock": ("over-budget", [
        ("if step > 10 and total_training_time >= TIME_BUDGET:",
         "if step > 10 and total_training_time >= 2.5 * TIME_BUDGET:")]),
}


@pytest.mark.parametrize("name", list(CPU_CHEATS))
def test_the_cpu_targets_baseline_is_kept_and_a_cheat_on_it_is_a_crash(cpu_target,
                                                                      target_python, name):
    cls, edits = CPU_CHEATS[name]
    _, base = run(cpu_target, target_python)
    record = last_record(cpu_target)
    assert base["status"] == "keep" and record["attest"]["findings"] == []
    assert base["value"] == round(record["attest"]["value"], 6)
    assert record["attest"]["consumed"]["rows"] == 65536   # EVAL_TOKENS bytes predicted
    assert record["attest"]["crosscheck"] is None          # logits model: nothing to check
    assert record["attest"]["clock"] == "reference"        # held to its reference seconds
    assert 2.0 <= record["attest"]["eval_seconds"] < 10.0
    kept = git(cpu_target, "rev-parse", "HEAD")
    candidate(cpu_target, f"cheat: {name}", *edits)
    _, out = run(cpu_target, target_python)
    assert (out["status"], out["crash_class"]) == ("crash", cls), out["description"]
    assert out["reverted"] is True and git(cpu_target, "rev-parse", "HEAD") == kept


def test_with_a_launcher_prefix_the_channel_lives_in_the_session_folder_and_is_removed(
        target, target_python):
    done, out = run(target, target_python, "--launcher", "env AR_NODE=n1")
    assert out["status"] == "keep" and out["crash_class"] is None, done.stderr
    assert last_record(target)["cmd"].startswith("env AR_NODE=n1 ")
    assert list((target / ".autoresearch" / "attest").iterdir()) == []


@pytest.mark.parametrize(("printed", "ok"), [(0.997901, True), (0.9979, True), (0.998, False),
                                             (1.0, False), (0.997902, False), (0.8981, False)])
def test_a_printed_value_is_the_attested_one_at_any_rounding(printed, ok):
    assert attest.printed_matches(printed, 0.99790123) is ok
