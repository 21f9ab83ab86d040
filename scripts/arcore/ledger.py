"""results.tsv, the ledger: read by header name, format, append under a lock, validate.

The format is upstream's (karpathy/autoresearch program.md): a header row and five
tab-separated columns ``commit val_bpb memory_gb status description``; val_bpb with six
decimals, memory_gb = peak_vram_mb / 1024 with one decimal, status one of keep/discard/crash,
crash rows ``0.000000`` and ``0.0``, a short (7-character) commit hash.

Reading never assumes positions: real ledgers add columns (status moves to column 5, or
further), so every row is a dict keyed by the header's names.

CLI::

    python3 -m arcore ledger init FILE
    python3 -m arcore ledger append FILE COMMIT VAL_BPB MEMORY_GB STATUS DESCRIPTION...
    python3 -m arcore ledger validate FILE
    python3 -m arcore ledger rows FILE          # one JSON object per data row
    python3 -m arcore ledger verify FILE        # exit 3 + the line when not as sealed
    python3 -m arcore ledger seal FILE          # accept the ledger as it is now

The seal: after every append (and ``init``) the ledger's size and sha256 go to
``.autoresearch/ledger.seal.json`` next to it, with a copy of what was sealed
(``.autoresearch/ledger.sealed.tsv``), when that folder exists (a session). ``verify`` tells a
ledger changed by anything but the harness (a hand edit, a ghost row a leftover process
appended), naming the first line that differs. An append to a ledger that no longer matches
its seal is still written (a row is never lost) but does not re-seal it: the foreign change
stays visible.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import time

# fcntl, hashlib and json are imported where they are used: reading a ledger (a report) needs
# none of them, and each costs start-up time.

# ---------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------

HEADER = ("commit", "val_bpb", "memory_gb", "status", "description")
STATUSES = ("keep", "discard", "crash")
SHORT = 7

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")


def flatten(desc: object) -> str:
    """One safe TSV field: tabs, newlines and control characters become single spaces."""
    text = "" if desc is None else str(desc)
    try:  # bytes that are not UTF-8 (argv, a commit subject) arrive as lone surrogates
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _number(value: object, digits: int) -> str:
    if value is None or value == "":
        return f"{0:.{digits}f}"
    number = float(value)
    if not math.isfinite(number):
        return f"{0:.{digits}f}"
    return f"{number:.{digits}f}"


def format_row(
    commit: str,
    val_bpb: float | None,
    memory_gb: float | None,
    status: str,
    description: object,
    header: tuple[str, ...] | list[str] = HEADER,
) -> str:
    """One ledger line (no trailing newline) in upstream's format.

    ``header`` lets a row be written into a ledger with extra columns: fields are placed by
    name and unknown columns are left empty.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    crashed = status == "crash" or val_bpb is None
    fields = {
        "commit": flatten(commit)[:SHORT],
        "val_bpb": _number(None if crashed else val_bpb, 6),
        "memory_gb": _number(None if crashed else memory_gb, 1),
        "status": status,
        "description": flatten(description),
    }
    return "\t".join(fields.get(name, "") for name in header)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    if "\r" not in text:  # the common case: no line to trim
        return text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _is_header(fields: list[str]) -> bool:
    names = {f.strip().lower() for f in fields}
    return "commit" in names and ("status" in names or "val_bpb" in names)


def read_header(path: str) -> tuple[str, ...]:
    """The ledger's column names (HEADER when the file is missing, empty or headerless)."""
    for line in _lines(path):
        if line.strip():
            fields = line.split("\t")
            return tuple(f.strip() for f in fields) if _is_header(fields) else HEADER
    return HEADER


def read_ledger(path: str) -> list[dict]:
    """Every data row as a dict keyed by the header's names.

    Each dict has at least ``commit``, ``val_bpb`` and ``memory_gb`` (float or None),
    ``status``, ``description``, ``line`` (1-based line number in the file), plus any extra
    column by its own name (as text). A missing file reads as []. Blank lines are skipped.
    A row with more fields than the header keeps the surplus in its last column.
    """
    return _read_rows(_lines(path))


def read_columns(path: str) -> dict[str, list]:
    """read_ledger() by column: {name: [its value in each row]}, the same names (in the same
    order) and values, without a dict per row (a report over 100k rows reads them this way).

    Parsed a column at a time when every row has the header's number of fields (no blank or
    short line, no tab in a description), else row by row.
    """
    lines = _lines(path)
    columns = _split_columns(lines)
    if columns is not None:
        return columns
    rows = _read_rows(lines)
    names = list(rows[0]) if rows else [*HEADER, "line"]  # every row has the same names
    return {name: [row[name] for row in rows] for name in names}


def _split_columns(lines: list[str]) -> dict[str, list] | None:
    """read_columns() in one split of the text, or None when a line is blank (before the
    last), short or long (then each line needs its own look)."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return None
    fields = lines[first].split("\t")
    header, start = ([f.strip() for f in fields], first + 1) if _is_header(fields) \
        else (list(HEADER), first)
    end = len(lines)
    while end > start and not lines[end - 1].strip():
        end -= 1  # the final newline, trailing blank lines
    body = lines[start:end]
    width = len(header)
    if not body or not all(map(str.strip, body)) \
            or set(map(str.count, body, itertools.repeat("\t"))) != {width - 1}:
        return None
    flat = "\t".join(body).split("\t")
    columns = {name: flat[i::width] for i, name in enumerate(header)}  # as a row's dict
    blank = [""] * len(body)
    columns["commit"] = list(map(str.strip, columns.get("commit", blank)))
    for name in ("val_bpb", "memory_gb"):
        columns[name] = _floats(columns[name]) if name in columns else [None] * len(body)
    statuses = columns.get("status", blank)
    normal = {text: text.strip().lower() for text in set(statuses)}  # a handful of values
    columns["status"] = list(map(normal.__getitem__, statuses))
    columns["description"] = columns.get("description", blank[:])
    columns["line"] = list(range(start + 1, end + 1))
    return columns


def _floats(texts: list[str]) -> list[float | None]:
    """_float() of each text: one map() when every text is a finite number."""
    try:
        numbers = list(map(float, texts))
    except ValueError:  # a junk value somewhere: one at a time
        return [_float(text) for text in texts]
    if math.isfinite(sum(numbers)):  # an inf or a nan anywhere makes the sum one
        return numbers
    return [x if x - x == 0 else None for x in numbers]


def _read_rows(lines: list[str]) -> list[dict]:
    """read_ledger() of the file's lines, a row at a time."""
    rows: list[dict] = []
    header: list[str] | None = None
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and tuple(f.strip() for f in lines[first].split("\t")) == HEADER:
        return _read_upstream(lines, first)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if header is None:
            if _is_header(fields):
                header = [f.strip() for f in fields]
                continue
            header = list(HEADER)
        if len(fields) > len(header):
            fields = fields[: len(header) - 1] + ["\t".join(fields[len(header) - 1 :])]
        row = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(header)}
        row["commit"] = row.get("commit", "").strip()
        row["val_bpb"] = _float(row.get("val_bpb"))
        row["memory_gb"] = _float(row.get("memory_gb"))
        row["status"] = row.get("status", "").strip().lower()
        row["description"] = row.get("description", "")
        row["line"] = number
        rows.append(row)
    return rows


def _read_upstream(lines: list[str], first: int) -> list[dict]:
    """read_ledger() for upstream's exact five columns (the common case), in one tight loop:
    the same dicts, about twice as fast on a 100k-row ledger."""
    rows: list[dict] = []
    for number in range(first + 2, len(lines) + 1):
        line = lines[number - 1]
        fields = line.split("\t", 4)
        if len(fields) < 5:
            if not line.strip():
                continue
            fields += [""] * (5 - len(fields))
        commit, value, memory, status, description = fields
        try:
            val = float(value)
            val = val if val - val == 0 else None  # inf and nan are no measurement
        except ValueError:
            val = None
        try:
            mem = float(memory)
            mem = mem if mem - mem == 0 else None
        except ValueError:
            mem = None
        rows.append({"commit": commit.strip(), "val_bpb": val, "memory_gb": mem,
                     "status": status.strip().lower(), "description": description,
                     "line": number})
    return rows


def track_rows(rows: list[dict], start: int = 0) -> list[dict]:
    """The rows of one comparison track: those after the first ``start`` data rows."""
    return rows[max(0, int(start)) :]


def best_keep(rows: list[dict], higher_is_better: bool = False) -> dict | None:
    """The kept row with the best val_bpb (lowest, or highest), or None."""
    kept = [r for r in rows if r["status"] == "keep" and r["val_bpb"] is not None]
    if not kept:
        return None
    pick = max if higher_is_better else min
    return pick(kept, key=lambda r: r["val_bpb"])


def standing_best(rows: list[dict], on_branch=None,
                  higher_is_better: bool = False) -> dict | None:
    """The best kept commit that still stands, valued by the mean of all its measurements.

    A kept commit stands while ``on_branch(commit)`` says it is in the branch's history (a
    keep that a confirmation later withdrew was reverted, so it no longer stands). Each such
    commit is valued by the mean of every row of it that has a metric (baseline repeats and
    confirmation re-runs included), so one lucky run never sets the bar. With no
    ``on_branch``, or when no kept commit is on the branch, every kept commit counts.
    Returns a copy of the commit's latest keep row, with ``val_bpb`` the mean and ``runs`` the
    number of measurements, or None.
    """
    kept = [r for r in rows if r["status"] == "keep" and r["val_bpb"] is not None]
    if on_branch is not None:
        kept = [r for r in kept if on_branch(r["commit"])] or kept
    if not kept:
        return None
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["val_bpb"] is not None and row["status"] in ("keep", "discard"):
            values.setdefault(row["commit"], []).append(row["val_bpb"])
    latest = {r["commit"]: r for r in kept}
    scored = []
    for commit, row in latest.items():
        measured = values.get(commit) or [row["val_bpb"]]
        scored.append(dict(row, val_bpb=sum(measured) / len(measured), runs=len(measured)))
    pick = max if higher_is_better else min
    return pick(scored, key=lambda r: r["val_bpb"])


# ---------------------------------------------------------------------------
# Appending: one whole line, O_APPEND, under an exclusive flock
# ---------------------------------------------------------------------------


def append_row(path: str, line: str) -> None:
    """Append one line (flattened of stray newlines) atomically with respect to other writers.

    The header is written first when the file is new or empty; a file whose last line lacks
    its newline gets one first, so the new row never glues onto a torn tail.
    """
    line = "\t".join(flatten(field) if "\n" in field or "\r" in field else field
                     for field in line.rstrip("\n").split("\t"))
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        sealed = _matches_seal(path, _read_fd(fd, size))
        prefix = ""
        if size == 0:
            prefix = "\t".join(HEADER) + "\n"
        elif os.pread(fd, 1, size - 1) != b"\n":
            prefix = "\n"
        data = (prefix + line + "\n").encode("utf-8")
        while data:
            written = os.write(fd, data)
            data = data[written:]
        os.fsync(fd)
        if sealed:
            seal(path, _read_fd(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)  # closing releases the lock


def init(path: str) -> bool:
    """Create the ledger with the header if it is missing or empty. True when written."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size:
            return False
        os.write(fd, ("\t".join(HEADER) + "\n").encode("utf-8"))
        seal(path, ("\t".join(HEADER) + "\n").encode("utf-8"))
        return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# The seal: the ledger holds only what the harness wrote
# ---------------------------------------------------------------------------

SEAL = "ledger.seal.json"
SEALED_COPY = "ledger.sealed.tsv"


def seal_dir(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), ".autoresearch")


def _read_fd(fd: int, size: int) -> bytes:
    return os.pread(fd, size, 0) if size else b""


def _atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def read_seal(path: str) -> dict | None:
    try:
        with open(os.path.join(seal_dir(path), SEAL), encoding="utf-8") as handle:
            import json

            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "sha256" in data else None


def seal(path: str, data: bytes | None = None) -> bool:
    """Records the ledger's size and sha256 (and a copy); False when there is no session
    folder to keep them in."""
    folder = seal_dir(path)
    if not os.path.isdir(folder):
        return False
    if data is None:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            data = b""
    import json

    _atomic(os.path.join(folder, SEALED_COPY), data)
    _atomic(os.path.join(folder, SEAL), json.dumps(
        {"size": len(data), "sha256": _sha256(data), "time": time.time()},
        sort_keys=True).encode() + b"\n")
    return True


def _matches_seal(path: str, data: bytes) -> bool:
    """No seal yet (a new or hand-made session), or ``data`` is exactly what was sealed."""
    sealed = read_seal(path)
    return sealed is None or (sealed.get("size") == len(data)
                              and sealed.get("sha256") == _sha256(data))


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _split(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def verify(path: str) -> str | None:
    """None when the ledger is as the harness last wrote it (or was never sealed), else one
    phrase naming the first line that differs. For the loop: call it at every step."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        data = None
    if read_seal(path) is None or (data is not None and _matches_seal(path, data)):
        return None
    name = os.path.basename(path)
    if data is None:
        return f"{name} was deleted since the harness last wrote it"
    try:
        with open(os.path.join(seal_dir(path), SEALED_COPY), "rb") as handle:
            old = _split(handle.read())
    except OSError:
        return f"{name} changed since the harness last wrote it (no sealed copy to compare)"
    new = _split(data)
    for number, (a, b) in enumerate(zip(old, new), start=1):
        if a != b:
            return (f"{name} line {number} was changed since the harness wrote it "
                    f"(now {b.decode('utf-8', 'replace')[:80]!r})")
    number = min(len(old), len(new))
    if len(new) > len(old):
        at = next((i for i in range(number, len(new)) if new[i].strip()), number)
        return (f"{name} line {at + 1} was added by something other than the harness "
                f"({new[at].decode('utf-8', 'replace')[:80]!r})")
    if len(new) == len(old):  # the same lines, only the final newline differs
        return f"{name} line {number} lost its newline since the harness wrote it"
    return f"{name} lost its lines from {number + 1} on since the harness wrote it"


def set_aside(path: str) -> str | None:
    """Copies the changed ledger to ``.autoresearch/results.changed.<sha8>.tsv`` (once per
    content); returns that path, or None when there is nothing to copy."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    folder = seal_dir(path)
    os.makedirs(folder, exist_ok=True)
    aside = os.path.join(folder, f"results.changed.{_sha256(data)[:8]}.tsv")
    if not os.path.exists(aside):
        _atomic(aside, data)
    return aside


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def validate(path: str) -> list[tuple[int, str]]:
    """Problems as (line number, text); [] for a well-formed ledger."""
    if not os.path.exists(path):
        return [(0, "no such file")]
    lines = _lines(path)
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if not any(line.strip() for line in lines):
        return [(1, "empty file: no header")]
    problems: list[tuple[int, str]] = []
    header: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        if header is None:
            if not line.strip():
                problems.append((number, "blank line before the header"))
                continue
            fields = [f.strip() for f in line.split("\t")]
            if not _is_header(fields):
                problems.append((number, "first line is not a header (expected: "
                                 + " ".join(HEADER) + ")"))
                header = list(HEADER)
            else:
                header = fields
                missing = [name for name in HEADER if name not in header]
                if missing:
                    problems.append((number, "header lacks column(s): " + ", ".join(missing)))
                continue
        if not line.strip():
            problems.append((number, "blank line"))
            continue
        problems.extend((number, p) for p in _row_problems(line, header))
    return problems


def _row_problems(line: str, header: list[str]) -> list[str]:
    fields = line.split("\t")
    out: list[str] = []
    if len(fields) != len(header):
        out.append(f"{len(fields)} fields, header has {len(header)}")
    row = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(header)}
    if _CONTROL.search(line.replace("\t", "")):
        out.append("control character in a field")
    commit = row.get("commit", "")
    if "commit" in header and not _HEX.match(commit):
        out.append(f"commit is not a hex hash: {commit[:20]!r}")
    status = row.get("status", "").strip()
    if "status" in header and status not in STATUSES:
        out.append(f"status {status[:20]!r} is not one of {', '.join(STATUSES)}")
    for name in ("val_bpb", "memory_gb"):
        if name in header and _float(row.get(name)) is None:
            out.append(f"{name} is not a number: {row.get(name, '')[:20]!r}")
    if status == "crash" and (_float(row.get("val_bpb")) or _float(row.get("memory_gb"))):
        out.append("crash row should have val_bpb 0.000000 and memory_gb 0.0")
    return out


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

USAGE = """usage: python3 -m arcore ledger COMMAND FILE [ARGS...]
  init FILE                                   create FILE with the header (no-op if non-empty)
  append FILE COMMIT VAL_BPB MEMORY_GB STATUS DESCRIPTION...
                                              append one row (prints it); VAL_BPB/MEMORY_GB may be ''
  validate FILE                               print LINE<TAB>PROBLEM per problem; exit 1 if any
  rows FILE                                   print one JSON object per data row
  verify FILE                                 exit 3 naming the line when FILE is not as sealed
  seal FILE                                   accept FILE as it is now (after a hand edit)
exit: 0 ok, 1 problems found or error, 2 usage, 3 not as sealed (verify)"""


def _err(msg: str) -> None:
    print(f"ledger: {msg}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command == "init" and len(args) == 1:
        init(args[0])
        return 0
    if command == "append" and len(args) >= 6:
        path, commit, val, mem, status = args[:5]
        try:
            value = None if val.strip() == "" else float(val)
            memory = None if mem.strip() == "" else float(mem)
            row = format_row(commit, value, memory, status, " ".join(args[5:]),
                             read_header(path))
        except ValueError as exc:
            _err(str(exc))
            return 2
        append_row(path, row)
        print(row)
        return 0
    if command == "validate" and len(args) == 1:
        problems = validate(args[0])
        for number, problem in problems:
            print(f"{number}\t{problem}")
        if problems:
            _err(f"{args[0]}: {len(problems)} problem(s)")
        return 1 if problems else 0
    if command == "verify" and len(args) == 1:
        problem = verify(args[0])
        if problem:
            _err(problem)
        return 3 if problem else 0
    if command == "seal" and len(args) == 1:
        if not seal(args[0]):
            _err(f"no session folder next to {args[0]}: nothing to seal")
            return 1
        return 0
    if command == "rows" and len(args) == 1:
        import json

        for row in read_ledger(args[0]):
            print(json.dumps(row, ensure_ascii=False))
        return 0
    _err(f"bad arguments: {' '.join(argv)[:200]}")
    print(USAGE, file=sys.stderr)
    return 2
