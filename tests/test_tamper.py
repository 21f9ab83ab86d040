"""Tamper lint: candidates that leave train.py or touch the evaluator are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arcore import tamper
from scratchrepo import STANDINS, commit_train, git, make_repo

SCRIPTS = Path(__file__).parent.parent / "scripts"
UPSTREAM_IMPORT = "from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb\n"


@pytest.mark.parametrize(("source", "expected"), [
    ("def evaluate_bpb(model, tok, bs):\n    return 0.5\n", "redefines evaluate_bpb"),
    ("evaluate_bpb = lambda *a: 0.5\n", "redefines evaluate_bpb"),
    ("from mycheat import fake as evaluate_bpb\n", "redefines evaluate_bpb"),
    ("evaluate_bpb.__code__ = (lambda *a: 0.5).__code__\n", "patches evaluate_bpb.__code__"),
    ("TIME_BUDGET = 600\n", "rebinds TIME_BUDGET"),
    ("TIME_BUDGET *= 2\n", "rebinds TIME_BUDGET"),
    ("EVAL_TOKENS: int = 1024\n", "rebinds EVAL_TOKENS"),
    ("if (TIME_BUDGET := 900):\n    pass\n", "rebinds TIME_BUDGET"),
    ("def f():\n    global EVAL_TOKENS\n", "rebinds EVAL_TOKENS (global)"),
    ("import prepare\nprepare.TIME_BUDGET = 900\n", "sets prepare.TIME_BUDGET"),
    ("import prepare as p\np.evaluate_bpb = None\n", "sets prepare.evaluate_bpb"),
    ("import prepare\nsetattr(prepare, 'EVAL_TOKENS', 1)\n", "sets an attribute of prepare"),
    ("import prepare\nvars(prepare)['EVAL_TOKENS'] = 1\n", "sets an attribute of prepare"),
    ("import prepare\nprepare.__dict__.update(EVAL_TOKENS=1)\n", "sets an attribute of prepare"),
    ("import sys\nsys.modules['prepare'].MAX_SEQ_LEN = 1\n", "sets prepare.MAX_SEQ_LEN"),
    ("import importlib\nm = importlib.import_module('prepare')\nm.X = 1\n", "sets prepare.X"),
    ("open('/root/.cache/autoresearch/data/shard_06542.parquet', 'wb')\n",
     "writes into the data cache"),
    ("from prepare import DATA_DIR\nimport os, shutil\n"
     "shutil.copy('easy.parquet', os.path.join(DATA_DIR, 'shard_06542.parquet'))\n",
     "writes into the data cache"),
    ("from prepare import TOKENIZER_DIR\nimport os\nd = TOKENIZER_DIR\n"
     "os.remove(os.path.join(d, 'token_bytes.pt'))\n", "writes into the data cache"),
])
def test_each_evaluator_tampering_pattern_is_found(source, expected):
    assert expected in [text for _, text in tamper.findings(source)]


@pytest.mark.parametrize("source", [
    UPSTREAM_IMPORT + "progress = 1 / TIME_BUDGET\nval = evaluate_bpb(None, None, 8)\n",
    "import prepare\nx = prepare.TIME_BUDGET * 2\n",
    "from prepare import TOKENIZER_DIR\nopen(TOKENIZER_DIR + '/tokenizer.pkl', 'rb')\n",
    "open('/tmp/notes.txt', 'w')\nbudget = 300\n",
    "def f(:\n",
])
def test_ordinary_training_code_is_clean(source):
    assert tamper.findings(source) == []


def test_only_findings_new_since_the_base_count():
    base = "TIME_BUDGET = 300\n"
    assert tamper.new_findings(base, base + "x = 1\n") == []
    assert tamper.new_findings(base, base + "def evaluate_bpb():\n    pass\n") == [
        (2, "redefines evaluate_bpb")]


def test_the_upstream_train_py_is_clean():
    upstream = Path("/work/.mirror/karpathy+autoresearch/repo")
    if not upstream.exists():
        pytest.skip("upstream mirror not present")
    source = subprocess.run(["git", "-C", str(upstream), "show", "HEAD:train.py"],
                            capture_output=True, text=True).stdout
    assert source and tamper.findings(source) == []


# ---------------------------------------------------------------------------
# Against git: files and commits
# ---------------------------------------------------------------------------


def test_a_candidate_touching_another_file_is_refused(tmp_path):
    repo = make_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    (repo / "prepare.py").write_text("TIME_BUDGET = 900\n")
    (repo / "helper.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sneaky")
    assert tamper.check(str(repo), base) == [
        "touches helper.py (only train.py may change)",
        "touches prepare.py (only train.py may change)",
    ]


def test_a_train_py_only_candidate_is_clean(tmp_path):
    repo = make_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    commit_train(repo, "better", VAL_BPB=0.9)
    assert tamper.check(str(repo), base) == []


def test_a_patched_evaluator_is_refused_with_its_line(tmp_path):
    repo = make_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    text = (STANDINS / "ok.py").read_text() + "import prepare\nprepare.evaluate_bpb = print\n"
    (repo / "train.py").write_text(text)
    git(repo, "commit", "-qam", "cheat")
    line = text.splitlines().index("prepare.evaluate_bpb = print") + 1
    assert tamper.check(str(repo), base) == [f"train.py:{line}: sets prepare.evaluate_bpb"]


def test_the_cli_exits_one_and_prints_findings(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "train.py").write_text("TIME_BUDGET = 1\n")
    git(repo, "commit", "-qam", "cheat")
    done = subprocess.run([sys.executable, "-m", "arcore", "tamper", "check", "--repo", str(repo)],
                          cwd=SCRIPTS, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout == "train.py:1: rebinds TIME_BUDGET\n"


def test_the_cli_exits_two_on_a_bad_revision(tmp_path):
    repo = make_repo(tmp_path)
    done = subprocess.run([sys.executable, "-m", "arcore", "tamper", "check", "--repo", str(repo),
                           "--base", "nope"], cwd=SCRIPTS, capture_output=True, text=True)
    assert done.returncode == 2 and "tamper:" in done.stderr
