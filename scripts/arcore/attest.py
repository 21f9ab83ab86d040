"""Attested val_bpb, the judge's side: the command rewrite, the per-run channel, the verdict.

A session frozen with ``metric_source: attested`` (the default; see ``arcore.session``) runs
the training command under the launcher ``scripts/attest/autoresearch_attest.py`` (one
stdlib file, the only thing added to the training process's PYTHONPATH)::

    uv run train.py            ->  uv run python -m autoresearch_attest train.py
    python3 train.py           ->  python3 -m autoresearch_attest train.py
    uv run python train.py     ->  uv run python -m autoresearch_attest train.py

(leading ``VAR=value`` words and ``env`` are kept). Any other command cannot be attested
and is refused (exit 2). The channel is a records file in a fresh private temp folder,
outside the repository (with ``--launcher``, e.g. srun, under ``.autoresearch/attest/`` so
that a node sharing the repository's filesystem can write it), plus a key file the launcher
deletes once read; each record carries an HMAC-SHA256 under that per-run key (see the
launcher's doc for the records).

``verdict`` (pure) turns the records and the printed summary into the judge's facts, in
this order: a broken channel (bad MAC, a gap in a process's sequence) or any finding ->
``tamper``; no printed metric -> the log's own crash class (oom, syntax, nan, ...); no
launcher or no evaluation -> ``unattested``; more than one -> ``tamper``; a non-finite
attested value under a finite printed one -> ``unattested``; a printed value that differs
from the attested one beyond print rounding (4 or more decimals) -> ``tamper``; the model
never called -> ``unattested``. Otherwise the attested value is the run's value.
``honest_time`` is the budget check: time-to-evaluation (on the session's budget clock:
wall, process CPU or reference seconds) may exceed TIME_BUDGET by the baseline's own start-up
overhead plus ``tolerance`` x TIME_BUDGET; past that the run is ``crash`` / ``over-budget``.
``judge_run`` and ``judge_printed`` apply all of it to one run for run-experiment.sh.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import shlex
import shutil
import tempfile

from arcore import runlog, session

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_DIR = os.path.join(SCRIPTS, "attest")
LAUNCHER = "autoresearch_attest"
ENV = {"records": "AUTORESEARCH_ATTEST_RECORDS", "key": "AUTORESEARCH_ATTEST_KEY_FILE",
       "prepare": "AUTORESEARCH_ATTEST_PREPARE", "sha": "AUTORESEARCH_ATTEST_PREPARE_SHA256",
       "validation": "AUTORESEARCH_ATTEST_VALIDATION"}
DEFAULT_TOLERANCE = 0.1   # a fraction of TIME_BUDGET, on top of the baseline's overhead
PRINT_ROUNDING = 5e-6     # train.py prints val_bpb with 6 decimals
ATTESTED_METRIC = "val_bpb"

CLASSES = ("unattested", "tamper", "over-budget")  # hints: runlog.HINTS (runlog.JUDGE_CLASSES)

_PYTHON_NAMES = ("python", "python3")


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def _is_python(word: str) -> bool:
    base = os.path.basename(word)
    return base in _PYTHON_NAMES or (base.startswith("python3.") and base[8:].isdigit())


def rewrite_command(cmd: str) -> str | None:
    """The command with train.py run under the launcher, or None when it cannot be."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        return None
    if not words or any(w in ("|", "||", "&&", ";", "&", ">", "<", ">>") or
                        any(c in w for c in "|;&<>`$()") for w in words):
        return None
    i = 0
    prefix = []
    while i < len(words) and ("=" in words[i] and not words[i].startswith("=")
                              and words[i].split("=", 1)[0].isidentifier()
                              or words[i] == "env" and not prefix[-1:] == ["env"]):
        prefix.append(words[i])
        i += 1
    rest = words[i:]
    if len(rest) >= 3 and rest[0] == "uv" and rest[1] == "run":
        j = 2
        while j < len(rest) and rest[j].startswith("-"):
            j += 1                       # uv run's own flags (no values supported)
        head, tail = rest[:j], rest[j:]
        if tail and _is_python(tail[0]):
            head, tail = head + [tail[0]], tail[1:]
        else:
            head = head + ["python"]
    elif rest and _is_python(rest[0]):
        head, tail = rest[:1], rest[1:]
    else:
        return None
    if not tail or not tail[0].endswith(".py") or tail[0].startswith("-"):
        return None
    return shlex.join(prefix + head + ["-m", LAUNCHER] + tail)


# ---------------------------------------------------------------------------
# The channel
# ---------------------------------------------------------------------------


def open_channel(parent: str | None = None) -> dict:
    """A private folder (mode 0700, under ``parent`` or the system's temp folder) with an
    empty records file and a fresh key file."""
    if parent:
        os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="autoresearch-attest-", dir=parent)
    records = os.path.join(folder, "records.jsonl")
    key_file = os.path.join(folder, "key")
    key = secrets.token_bytes(32)
    os.close(os.open(records, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().encode("ascii"))
    finally:
        os.close(fd)
    return {"dir": folder, "records": records, "key_file": key_file, "key": key}


def close_channel(channel: dict) -> None:
    shutil.rmtree(channel["dir"], ignore_errors=True)


def run_env(env: dict, channel: dict, prepare_path: str, prepare_sha: str | None,
            validation: dict) -> dict:
    """The training environment: the launcher's folder first on PYTHONPATH, its config."""
    out = dict(env)
    out["PYTHONPATH"] = LAUNCHER_DIR + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
    out[ENV["records"]] = channel["records"]
    out[ENV["key"]] = channel["key_file"]
    out[ENV["prepare"]] = prepare_path
    out[ENV["sha"]] = prepare_sha or ""
    out[ENV["validation"]] = json.dumps(validation or {})
    return out


def read_records(path: str, key: bytes) -> tuple[list[dict], list[str]]:
    """(verified records, problems). A record with a bad MAC or a gap in its process's
    sequence numbers is a problem: the channel was written by someone else."""
    records, problems = [], []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        return [], [f"the attestation records could not be read ({exc.strerror or exc})"]
    expected: dict = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            outer = json.loads(line)
            body = outer["r"]
            mac = outer["mac"]
            good = hmac.compare_digest(
                hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest(), str(mac))
            record = json.loads(body) if good else None
        except (ValueError, KeyError, TypeError, AttributeError):
            good, record = False, None
        if not good or not isinstance(record, dict):
            problems.append(f"attestation record {number} is not signed by the harness")
            continue
        pid = record.get("pid")
        if record.get("seq") != expected.get(pid, 0):
            problems.append(f"attestation records of process {pid} are missing or out of "
                            f"order (record {number})")
        expected[pid] = int(record.get("seq", 0)) + 1
        records.append(record)
    return records, problems


# ---------------------------------------------------------------------------
# The verdict (pure)
# ---------------------------------------------------------------------------


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def verdict(records: list[dict], problems: list[str], printed: float | None,
            printed_class: str | None) -> dict:
    """The judge's facts from one run's records: value, crash_class, reason and details.

    ``printed``: the finite metric train.py printed (None if none); ``printed_class``: the
    log's own crash class when it has no metric (oom, syntax, ...)."""
    evals = [r for r in records if r.get("kind") == "eval_end"]
    begins = [r for r in records if r.get("kind") == "eval_begin"]
    findings = [str(r.get("what")) for r in records if r.get("kind") == "finding"]
    out = {"value": None, "crash_class": None, "reason": None, "findings": findings,
           "evaluations": len(begins), "eval_begin": begins[0] if begins else None,
           "consumed": evals[0].get("consumed") if evals else None,
           "crosscheck": evals[0].get("crosscheck") if evals else None,
           "attested_value": _float(evals[0].get("value")) if len(evals) == 1 else None,
           "launcher": any(r.get("kind") == "start" for r in records)}

    def crash(cls: str, reason: str) -> dict:
        out["crash_class"], out["reason"] = cls, reason
        return out

    if problems:
        return crash("tamper", problems[0])
    if findings:
        return crash("tamper", findings[0])
    if printed is None:  # the run crashed or printed no metric: the log's own class
        return crash(printed_class or "unknown", None)
    if not out["launcher"]:
        return crash("unattested", "the training command did not run under the harness's "
                                   "launcher")
    if len(begins) > 1 or len(evals) > 1:
        return crash("tamper", f"evaluate_bpb ran {max(len(begins), len(evals))} times; the "
                               "score is one evaluation")
    if not evals:
        return crash("unattested", "no attested evaluate_bpb call: the printed val_bpb does "
                                   "not come from the frozen evaluator")
    value = out["attested_value"]
    if value is None or not math.isfinite(value):
        return crash("unattested", f"evaluate_bpb returned {evals[0].get('value')}, "
                                   f"train.py printed {printed}")
    if not printed_matches(printed, value):
        return crash("tamper", f"train.py printed val_bpb {printed:.6f} but evaluate_bpb "
                               f"returned {value:.6f}")
    consumed = out["consumed"] or {}
    if not consumed.get("batches"):
        return crash("unattested", "evaluate_bpb never called the model")
    out["value"] = value
    return out


def printed_matches(printed: float, value: float) -> bool:
    """The printed number is the attested one, rounded to some number of decimals (upstream
    prints 6; 4 or more decimals are fine: the judge uses the attested value anyway)."""
    if abs(printed - value) <= PRINT_ROUNDING * 1e-3:
        return True
    return any(abs(printed - round(value, digits)) <= 1e-12 * max(1.0, abs(value))
               for digits in range(4, 17))


CLOCK_KEYS = {"wall": "wall", "process": "cpu", "reference": "ref"}


def eval_seconds(facts: dict, clock: str) -> float | None:
    """Time from process start to the start of evaluation, on the session's clock: wall
    seconds, process CPU seconds, or reference seconds (the launcher's account of prepare's
    reference-step measurements; CPU seconds when a run has none)."""
    begin = facts.get("eval_begin") or {}
    value = _float(begin.get(CLOCK_KEYS.get(clock, "wall")))
    if value is None and clock == "reference":
        value = _float(begin.get("cpu"))
    return value if value is not None and math.isfinite(value) else None


def overhead(seconds: float | None, time_budget) -> float | None:
    """A baseline's start-up and compile overhead: its time-to-evaluation past TIME_BUDGET."""
    if seconds is None or not isinstance(time_budget, (int, float)):
        return None
    return max(0.0, seconds - float(time_budget))


def honest_time(seconds: float | None, time_budget, base_overhead: float | None,
                tolerance: float) -> str | None:
    """Why the run trained too long, or None. Unknown facts never refuse."""
    if seconds is None or not isinstance(time_budget, (int, float)):
        return None
    limit = float(time_budget) * (1 + tolerance) + (base_overhead or 0.0)
    if seconds > limit:
        return (f"evaluation began {seconds:.1f}s after start, past TIME_BUDGET "
                f"{time_budget:g}s + the baseline's overhead {base_overhead or 0.0:.1f}s + "
                f"{tolerance:.0%} = {limit:.1f}s")
    return None


def printed_over_budget(training_seconds, time_budget, tolerance: float) -> str | None:
    """A printed session's check: the training_seconds it printed past the budget."""
    if not isinstance(training_seconds, float) or not isinstance(time_budget, (int, float)):
        return None
    limit = float(time_budget) * (1 + tolerance)
    if training_seconds > limit:
        return (f"training_seconds {training_seconds:g} is over TIME_BUDGET {time_budget:g}s "
                f"+ {tolerance:.0%}")
    return None


def parse_tolerance(text: str) -> float:
    """``0.1`` or ``10%``: a fraction of TIME_BUDGET in [0, 1]; ValueError otherwise."""
    raw = str(text).strip()
    value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(raw)
    return value


# ---------------------------------------------------------------------------
# One run, judged (run-experiment.sh calls these)
# ---------------------------------------------------------------------------


def judge_run(repo: str, facts: dict, channel: dict, frozen: dict, metric: str,
              tolerance: float, baseline_run: bool) -> tuple[dict, str | None]:
    """An attested run's facts (``runlog.summarize``'s, the value replaced by the attested
    one or the crash class set) from its records, the channel removed; and why it is a
    crash of one of CLASSES (else None). A baseline run records its overhead in
    session.json (``attest_overhead_s``, the largest seen); other runs get honest_time."""
    try:
        records, problems = read_records(channel["records"], channel["key"])
    finally:
        close_channel(channel)
    printed = facts["value"] if metric == ATTESTED_METRIC else \
        runlog.metric_value(facts["metrics"], ATTESTED_METRIC)
    got = verdict(records, problems, printed, facts["crash_class"] or (
        None if printed is not None else "unknown"))
    budget = frozen.get("constants", {}).get("TIME_BUDGET")
    clock = frozen.get("budget_clock", "wall")
    seconds = eval_seconds(got, clock)
    reason = got["reason"]
    cls = got["crash_class"]
    if cls is None and baseline_run:
        extra = overhead(seconds, budget)
        if extra is not None and extra > float(frozen.get("attest_overhead_s") or 0.0):
            session.update(repo, attest_overhead_s=round(extra, 3))
    elif cls is None:
        reason = honest_time(seconds, budget, frozen.get("attest_overhead_s"), tolerance)
        cls = "over-budget" if reason else None
    judged = got["value"] if metric == ATTESTED_METRIC else facts["value"]
    out = dict(facts, value=judged if cls is None else None)
    if cls:
        out.update(crash_class=cls, hint=runlog.hint(cls))
    out["attest"] = {"value": got["attested_value"], "evaluations": got["evaluations"],
                     "consumed": got["consumed"], "crosscheck": got["crosscheck"],
                     "findings": got["findings"], "clock": clock, "eval_seconds": seconds,
                     "reason": reason}
    return out, reason if cls in CLASSES else None


def judge_printed(facts: dict, frozen: dict, tolerance: float) -> tuple[dict, str | None]:
    """A printed session's facts: a training_seconds past the budget is over-budget."""
    late = printed_over_budget(facts["metrics"].get("training_seconds"),
                               frozen.get("constants", {}).get("TIME_BUDGET"), tolerance)
    if late is None or facts["value"] is None:
        return facts, None
    return dict(facts, value=None, crash_class="over-budget",
                hint=runlog.hint("over-budget")), late
