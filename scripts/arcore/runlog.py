"""run.log: the summary block, streamed in bounded memory, and crash classification.

Upstream's train.py ends a finished run with::

    ---
    val_bpb:          0.997900
    training_seconds: 300.1
    peak_vram_mb:     45060.2
    ...

Progress lines before it are joined by ``\\r`` and a log can reach 100 MB, so the file is
read in fixed-size chunks, ``\\r`` counts as a line break, and only the current summary
block plus the last TAIL_LINES lines (each capped) are kept in memory.

When there is no usable metric the run is a crash, and ``classify`` names its class:
oom, nan, timeout, syntax, import, compile, kernel, data, killed, truncated, unknown,
each with a one-line next action (HINTS). HINTS also holds the classes only the judge gives:
unattested, tamper, over-budget (see arcore.attest).

CLI::

    python3 -m arcore runlog parse LOG [--metric NAME] [--json]
    python3 -m arcore runlog classify LOG [--exit-code N] [--timed-out] [--metric NAME] [--json]
"""

from __future__ import annotations

import collections
import json
import math
import re
import sys
from dataclasses import dataclass, field

from arcore.crashhints import HINTS, JUDGE_CLASSES

# ---------------------------------------------------------------------------
# Streaming scan
# ---------------------------------------------------------------------------

CHUNK = 1 << 20          # bytes read at a time
MAX_LINE = 4096          # characters kept of any one line (progress lines are ~200)
TAIL_LINES = 200         # lines kept for classification
DEFAULT_METRIC = "val_bpb"

_KV = re.compile(r"^([A-Za-z_][\w.\-/]*)\s*:\s*(.*?)\s*$")


@dataclass
class LogScan:
    """What one pass over a log found."""

    summary: dict = field(default_factory=dict)   # the last summary block: key -> float | str
    tail: list = field(default_factory=list)      # last TAIL_LINES non-empty lines
    steps: int = 0                                # progress ("step N") lines seen
    size: int = 0                                 # bytes read
    missing: bool = False                         # the log file does not exist


def _value(text: str) -> float | str:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


def iter_bodies(handle, chunk: int = CHUNK):
    """Runs of whole lines (bytes, ``\\r`` turned into ``\\n``), one per chunk read."""
    carry = b""
    while True:
        block = handle.read(chunk)
        if not block:
            break
        data = carry + block.replace(b"\r", b"\n")
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data[: MAX_LINE * 4]   # an endless line: keep its head only
            continue
        yield data[:cut]
        carry = data[cut + 1:]
    if carry:
        yield carry


def _text(raw: bytes) -> str:
    return raw[: MAX_LINE * 4].decode("utf-8", "replace")[:MAX_LINE]


def iter_lines(handle, chunk: int = CHUNK):
    """Lines of a binary file, ``\\r`` and ``\\n`` both breaking, each cut to MAX_LINE."""
    for body in iter_bodies(handle, chunk):
        for raw in body.split(b"\n"):
            yield _text(raw)


def _extend_tail(tail: collections.deque, body: bytes) -> None:
    """Appends the last non-empty lines of ``body`` without splitting all of it."""
    window = 1 << 16
    while True:
        part = body[-window:]
        lines = [raw for raw in part.split(b"\n") if raw.strip()]
        if window < len(body) and len(lines) <= TAIL_LINES:
            window *= 4
            continue
        if window < len(body) and lines:
            lines = lines[1:]   # the window's first line may be cut
        tail.extend(_text(raw) for raw in lines[-TAIL_LINES:])
        return


def scan(path: str) -> LogScan:
    """One streaming pass: the last ``---`` block of ``key: value`` lines, the tail, steps.

    Chunks with no ``---`` outside a summary block (nearly all of a long log) are only
    counted for progress lines and trimmed to their tail, at C speed.
    """
    result = LogScan()
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    block: dict | None = None
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        result.missing = True
        return result
    with handle:
        for body in iter_bodies(handle, CHUNK):
            result.steps += body.count(b"\nstep ") + body.startswith(b"step ")
            if block is None and b"---" not in body:
                _extend_tail(tail, body)
                continue
            for raw in body.split(b"\n"):
                if not raw.strip():
                    continue
                line = _text(raw)
                stripped = line.strip()
                tail.append(line)
                if stripped == "---":
                    block = {}
                    continue
                if block is not None:
                    match = _KV.match(stripped)
                    if match:
                        block[match.group(1)] = _value(match.group(2))
                        if len(block) == 1:
                            result.summary = block
                        continue
                    block = None
        result.size = handle.tell()
    result.tail = list(tail)
    return result


def parse(path: str) -> dict:
    """Every metric of the last summary block ({} when there is none)."""
    return dict(scan(path).summary)


def metric_value(summary: dict, name: str = DEFAULT_METRIC) -> float | None:
    """The deciding metric as a finite float, else None (missing, text, NaN or inf)."""
    value = summary.get(name)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def memory_gb(summary: dict) -> float | None:
    """peak_vram_mb / 1024, or None."""
    value = summary.get("peak_vram_mb")
    if isinstance(value, float) and math.isfinite(value):
        return value / 1024
    return None


# ---------------------------------------------------------------------------
# Crash classification
# ---------------------------------------------------------------------------

# HINTS and JUDGE_CLASSES live in arcore.crashhints (the report needs them without this module).
CLASSES = tuple(name for name in HINTS if name not in JUDGE_CLASSES)  # what classify gives

# Checked in this order against the tail of the log (case-insensitive regexes).
_PATTERNS = (
    ("oom", r"outofmemoryerror|cuda out of memory|out of memory|cuda error: out of memory"
            r"|hip out of memory|resource_exhausted|cublas_status_alloc_failed|\bmemoryerror\b"),
    ("syntax", r"\b(syntaxerror|indentationerror|taberror)\b"),
    ("kernel", r"get_kernel|flash_attn_interface|kernels-community|flash.?attention"
               r"|no kernel image is available|hub.*kernel"),
    ("compile", r"torch\._dynamo|torch\._inductor|inductorerror|backendcompilerfailed"
                r"|\btriton\b|compilationerror|torchdynamo"),
    ("data", r"token_bytes|tokenizer\.pkl|\.parquet|shard_\d+|\.cache/autoresearch"
             r"|need at least 2 data shards|run prepare\.py"),
    ("import", r"\b(modulenotfounderror|importerror)\b"),
    ("killed", r"signalexception|got signal|death signal|keyboardinterrupt"
               r"|^killed$|sigkill|sigterm"),
)
_COMPILED = tuple((name, re.compile(rx, re.IGNORECASE | re.MULTILINE)) for name, rx in _PATTERNS)
_ERROR = re.compile(r"traceback \(most recent call last\)|\b\w*(error|exception)\b:",
                    re.IGNORECASE)
# Slurm (srun) cancelling a step: "*** STEP 12.0 ON node CANCELLED AT <time> DUE TO TIME LIMIT ***"
_SLURM_TIME_LIMIT = re.compile(r"\*\*\* (?:STEP|JOB) \S+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT")
_SLURM_CANCELLED = re.compile(r"\*\*\* (?:STEP|JOB) \S+ ON \S+ CANCELLED AT ")


def _failed(tail: list[str]) -> bool:
    """upstream prints FAIL (after a \\r progress line) and exits 1 on a NaN/exploding loss."""
    return any(line.rstrip().endswith("FAIL") for line in tail[-20:])


def classify(found: LogScan, exit_code: int | None = None, timed_out: bool = False,
             metric: str = DEFAULT_METRIC) -> str:
    """The crash class of a run with no usable metric."""
    if timed_out:
        return "timeout"
    text = "\n".join(found.tail)
    if _SLURM_TIME_LIMIT.search(text):
        return "timeout"
    if _SLURM_CANCELLED.search(text):
        return "killed"
    value = found.summary.get(metric)
    if isinstance(value, float) and not math.isfinite(value) or _failed(found.tail):
        return "nan"
    error = _ERROR.search(text) is not None
    for name, pattern in _COMPILED:
        if name == "data" and not error:
            continue
        if pattern.search(text):
            return name
    if exit_code is not None and (exit_code < 0 or exit_code > 128):
        return "killed"
    if not error and found.steps:
        return "truncated"
    return "unknown"


def hint(crash_class: str) -> str:
    return HINTS.get(crash_class, HINTS["unknown"])


def summarize(path: str, metric: str = DEFAULT_METRIC, exit_code: int | None = None,
              timed_out: bool = False) -> dict:
    """The facts about one run's log a judge needs, in one pass."""
    found = scan(path)
    value = metric_value(found.summary, metric)
    out = {
        "metric": metric,
        "value": value,
        "memory_gb": memory_gb(found.summary),
        "metrics": found.summary,
        "crash_class": None,
        "hint": None,
    }
    if value is None or timed_out:
        out["crash_class"] = classify(found, exit_code, timed_out, metric)
        out["hint"] = hint(out["crash_class"])
        if timed_out:
            out["value"] = None
    return out


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

USAGE = """usage: python3 -m arcore runlog parse LOG [--metric NAME] [--json]
       python3 -m arcore runlog classify LOG [--exit-code N] [--timed-out] [--metric NAME] [--json]
parse: prints the summary block's `key: value` lines (exit 1 when the metric is missing)
classify: prints metric/value/memory_gb, or crash_class and hint
exit: 0 ok, 1 no metric (parse) / log missing, 2 usage"""


def _options(args: list[str]) -> dict | None:
    opts = {"log": None, "metric": DEFAULT_METRIC, "exit_code": None, "timed_out": False,
            "json": False}
    it = iter(args)
    for arg in it:
        if arg == "--metric":
            opts["metric"] = next(it, None)
        elif arg == "--exit-code":
            raw = next(it, None)
            try:
                opts["exit_code"] = int(raw)
            except (TypeError, ValueError):
                return None
        elif arg == "--timed-out":
            opts["timed_out"] = True
        elif arg == "--json":
            opts["json"] = True
        elif opts["log"] is None and not arg.startswith("--"):
            opts["log"] = arg
        else:
            return None
    return opts if opts["log"] and opts["metric"] else None


def _print(data: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    for key, value in data.items():
        print(f"{key}: {'' if value is None else value}")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    opts = _options(argv[1:]) if argv and argv[0] in ("parse", "classify") else None
    if opts is None:
        print(USAGE, file=sys.stderr)
        return 2
    found = scan(opts["log"])
    if found.missing:
        print(f"runlog: no such log: {opts['log']}", file=sys.stderr)
        return 1
    if argv[0] == "parse":
        _print(found.summary, opts["json"])
        return 0 if metric_value(found.summary, opts["metric"]) is not None else 1
    out = summarize(opts["log"], opts["metric"], opts["exit_code"], opts["timed_out"])
    out.pop("metrics")
    _print(out, opts["json"])
    return 0
