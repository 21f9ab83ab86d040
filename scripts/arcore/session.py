"""The session freeze: what a comparison track holds fixed, recorded once and verified per run.

``.autoresearch/session.json`` (untracked; the directory is added to ``.git/info/exclude``)::

    {
      "version": 1,
      "created": "2026-11-30T07:00:00Z",
      "branch": "autoresearch/nov30",       # "" on a detached HEAD
      "base_commit": "<full sha>",          # HEAD at freeze time
      "gpu": "NVIDIA H100 80GB HBM3",       # nvidia-smi's names, or "none"
      "ledger": "results.tsv",
      "ledger_start": 0,                    # data rows results.tsv had at freeze time
      "metric": "val_bpb", "higher_is_better": false,
      "files": {"prepare.py": "<sha256>", "pyproject.toml": ..., "uv.lock": ..., "program.md": ...},
      "constants": {"TIME_BUDGET": 300, "MAX_SEQ_LEN": 2048, "EVAL_TOKENS": 20971520},
      "data_cache": {"dir": "/root/.cache/autoresearch", "val_shard": "shard_06542.parquet",
                     "fingerprint": "<sha256>", "entries": 3},
      "metric_source": "attested",          # or "printed": AUTORESEARCH_METRIC_SOURCE at freeze
      "budget_clock": "wall",               # "process", "reference": prepare.py's TIME_BUDGET_CLOCK
      "validation": {"files": [...], "loaders": ["make_dataloader"], "split": "val"}
    }

A missing file hashes as null; a later appearance counts as a change. Other modules add
their own facts with ``update`` (a noise floor, a worker list): only the keys above are
verified.

The data-cache fingerprint is cheap on purpose: the name, size and mtime (ns) of every
file under ``<cache>/tokenizer/`` and of the pinned validation shard ``<cache>/data/<shard>``,
hashed together. Re-downloading the same shard therefore counts as a change (start a new
track). A cache holding neither (a fork with its own layout, like examples/cpu-target) is
fingerprinted by every file under it instead (``"layout": "all files"``). The cache directory is, first found: ``$AUTORESEARCH_CACHE_DIR``; a string-literal
``CACHE_DIR = "..."`` in prepare.py; ``~/.cache/autoresearch`` (upstream's). The pinned shard
is ``shard_{VAL_SHARD:05d}.parquet`` from prepare.py's VAL_SHARD (or MAX_SHARD) when those
are plain numbers, else upstream's ``shard_06542.parquet``.

CLI::

    python3 -m arcore session freeze [--repo DIR] [--new] [--metric NAME] [--higher-is-better]
    python3 -m arcore session verify [--repo DIR]   # exit 3 + one line when something changed
    python3 -m arcore session show [--repo DIR]
"""

from __future__ import annotations

import ast
import datetime
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys

from arcore import fingerprint, gitx, ledger

# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

FROZEN_FILES = ("prepare.py", "pyproject.toml", "uv.lock", "program.md")
CONSTANTS = ("TIME_BUDGET", "MAX_SEQ_LEN", "EVAL_TOKENS")
EXCLUDES = ("/results.tsv", "/run.log", "/.autoresearch/")
DEFAULT_CACHE = os.path.join("~", ".cache", "autoresearch")
DEFAULT_VAL_SHARD = "shard_06542.parquet"
VERSION = 1


def session_dir(repo: str) -> str:
    return os.path.join(repo, ".autoresearch")


def manifest_path(repo: str) -> str:
    return os.path.join(session_dir(repo), "session.json")


def git(repo: str, *args: str, check: bool = True) -> str:
    done = gitx.run(repo, *args)
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip() if done.returncode == 0 else ""


def on_branch(repo: str, rev: str = "HEAD"):
    """A test ``commit -> bool``: is this (short) hash in ``rev``'s history?

    Used to tell kept commits that still stand from keeps that were later reverted.
    Hashes shorter than 7 characters (hand-written rows) are given the benefit of the doubt.
    """
    out = git(repo, "rev-list", rev, check=False)
    prefixes = {sha[:7] for sha in out.split()}
    return lambda commit: len(commit) < 7 or commit[:7] in prefixes


def ensure_excludes(repo: str) -> None:
    """Adds results.tsv, run.log and .autoresearch/ to the repo's info/exclude (never a tracked file)."""
    path = git(repo, "rev-parse", "--git-path", "info/exclude")
    if not os.path.isabs(path):
        path = os.path.join(repo, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, encoding="utf-8") as handle:
            present = {line.strip() for line in handle}
    except FileNotFoundError:
        present = set()
    missing = [entry for entry in EXCLUDES if entry not in present]
    if missing:
        with open(path, "a", encoding="utf-8") as handle:
            if os.path.getsize(path) and not _ends_with_newline(path):
                handle.write("\n")
            handle.write("# autoresearch session files\n" + "\n".join(missing) + "\n")


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


# ---------------------------------------------------------------------------
# Facts: file hashes, prepare.py constants, data cache, GPU
# ---------------------------------------------------------------------------


def sha256_file(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return digest.hexdigest()


def _eval(node: ast.AST, known: dict):
    """Plain numbers and strings, arithmetic on them, and earlier constants; else ValueError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand, known)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, known), _eval(node.right, known)
        ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
               ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
               ast.FloorDiv: lambda a, b: a // b,
               ast.Pow: lambda a, b: a ** b if abs(b) < 64 else None}
        for kind, fn in ops.items():
            if isinstance(node.op, kind):
                return fn(left, right)
    raise ValueError("not a plain constant")


def module_constants(path: str) -> dict:
    """Top-level ``NAME = <plain constant expression>`` assignments of a Python file."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return {}
    known: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name):
            try:
                known[stmt.targets[0].id] = _eval(stmt.value, known)
            except (ValueError, TypeError, ZeroDivisionError, OverflowError):
                known.pop(stmt.targets[0].id, None)
    return known


def cache_location(repo: str) -> tuple[str, str]:
    """(data cache dir, pinned validation shard file name)."""
    constants = module_constants(os.path.join(repo, "prepare.py"))
    cache = os.environ.get("AUTORESEARCH_CACHE_DIR") or (
        constants["CACHE_DIR"] if isinstance(constants.get("CACHE_DIR"), str)
        else cache_dir_expression(os.path.join(repo, "prepare.py")) or DEFAULT_CACHE)
    shard = constants.get("VAL_SHARD", constants.get("MAX_SHARD"))
    name = f"shard_{shard:05d}.parquet" if isinstance(shard, int) else DEFAULT_VAL_SHARD
    if isinstance(constants.get("VAL_FILENAME"), str):
        name = constants["VAL_FILENAME"]
    return os.path.abspath(os.path.expanduser(cache)), name


def _path_expr(node: ast.AST, known: dict):
    """A string from the few forms prepare.py spells a cache path with: literals,
    ``os.environ.get(K[, D])``/``os.getenv``, ``or``, ``os.path.join``, ``os.path.expanduser``,
    earlier names; else ValueError."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str)):
        return node.value
    if isinstance(node, ast.Name) and isinstance(known.get(node.id), str):
        return known[node.id]
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        for value in node.values:
            found = _path_expr(value, known)
            if found:
                return found
        return None
    if isinstance(node, ast.Call) and not node.keywords:
        name = ast.unparse(node.func)
        args = [_path_expr(arg, known) for arg in node.args]
        if name in ("os.environ.get", "os.getenv") and 1 <= len(args) <= 2:
            return os.environ.get(args[0], args[1] if len(args) == 2 else None)
        if name == "os.path.join" and args and all(isinstance(a, str) for a in args):
            return os.path.join(*args)
        if name == "os.path.expanduser" and len(args) == 1 and isinstance(args[0], str):
            return os.path.expanduser(args[0])
    raise ValueError("not a plain path expression")


def cache_dir_expression(path: str) -> str | None:
    """prepare.py's ``CACHE_DIR`` when it is a computed path (the CPU target's
    ``os.environ.get("AUTORESEARCH_CACHE_DIR") or os.path.join(...)``), else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return None
    known: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name):
            try:
                known[stmt.targets[0].id] = _path_expr(stmt.value, known)
            except (ValueError, TypeError):
                known.pop(stmt.targets[0].id, None)
    found = known.get("CACHE_DIR")
    return found if isinstance(found, str) and found else None


MAX_CACHE_FILES = 10000


def _walk(top: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(top):
        dirs.sort()
        found.extend(os.path.join(root, name) for name in sorted(files))
        if len(found) >= MAX_CACHE_FILES:
            break
    return found[:MAX_CACHE_FILES]


def cache_entries(cache: str, val_shard: str) -> tuple[list[str], str]:
    """The cache files the evaluator reads, and the layout they were found by."""
    entries = _walk(os.path.join(cache, "tokenizer")) + [os.path.join(cache, "data", val_shard)]
    if not any(os.path.exists(path) for path in entries) and os.path.isdir(cache):
        return _walk(cache), "all files"
    return entries, "upstream"


def cache_fingerprint(cache: str, val_shard: str) -> dict:
    """name + size + mtime of tokenizer/* and data/<val_shard>, hashed (see module doc).

    A cache with neither (a fork with its own layout) is fingerprinted by every file in it
    (at most MAX_CACHE_FILES), stat only."""
    entries, layout = cache_entries(cache, val_shard)
    digest = hashlib.sha256()
    present = 0
    for path in entries:
        try:
            stat = os.stat(path)
        except OSError:
            digest.update(f"{os.path.relpath(path, cache)}\tmissing\n".encode())
            continue
        present += 1
        digest.update(f"{os.path.relpath(path, cache)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
                      .encode())
    return {"dir": cache, "val_shard": val_shard, "fingerprint": digest.hexdigest(),
            "entries": present, "layout": layout}


def gpu_name() -> str:
    """nvidia-smi's GPU names (comma-joined), or "none"."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "none"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return ", ".join(names) if done.returncode == 0 and names else "none"


def facts(repo: str, gpu: bool = True) -> dict:
    """The verified facts of the repo as it is now (``gpu=False``: the GPU is not asked)."""
    constants = module_constants(os.path.join(repo, "prepare.py"))
    cache, shard = cache_location(repo)
    return {
        "files": {name: sha256_file(os.path.join(repo, name)) for name in FROZEN_FILES},
        "constants": {name: constants.get(name) for name in CONSTANTS},
        "data_cache": cache_fingerprint(cache, shard),
        "gpu": gpu_name() if gpu else None,
    }


# ---------------------------------------------------------------------------
# Attestation facts (arcore.attest): metric source, budget clock, validation data
# ---------------------------------------------------------------------------

METRIC_SOURCES = ("attested", "printed")
METRIC_SOURCE_ENV = "AUTORESEARCH_METRIC_SOURCE"
BUDGET_CLOCKS = ("wall", "process", "reference")


def metric_source(environ=None) -> str:
    """``printed`` only when asked for at freeze time; anything else is ``attested``."""
    value = (os.environ if environ is None else environ).get(METRIC_SOURCE_ENV, "")
    return "printed" if value.strip().lower() == "printed" else "attested"


def _default_cache(source: str) -> str:
    """The cache folder prepare.py builds by default: `".cache", "NAME"` in its source."""
    match = re.search(r"""["']\.cache["']\s*,\s*["']([\w.\-]+)["']""", source)
    return os.path.join("~", ".cache", match.group(1)) if match else DEFAULT_CACHE


def validation_facts(repo: str) -> dict:
    """The files and loader calls that hold the validation split (read only by evaluation).

    Upstream: ``<cache>/data/<pinned val shard>`` and ``make_dataloader(..., "val")``; the
    CPU target's layout: ``<cache>/corpus-<CORPUS_VERSION>/val.bin`` and
    ``load_split("val")``. Loaders are prepare.py's functions with a ``split`` parameter.
    """
    path = os.path.join(repo, "prepare.py")
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return {"files": [], "loaders": [], "split": "val"}
    constants = module_constants(path)
    cache = os.environ.get("AUTORESEARCH_CACHE_DIR") or (
        constants["CACHE_DIR"] if isinstance(constants.get("CACHE_DIR"), str)
        else _default_cache(source))
    cache = os.path.abspath(os.path.expanduser(cache))
    _, shard = cache_location(repo)
    files = [os.path.join(cache, "data", shard)]
    if isinstance(constants.get("CORPUS_VERSION"), str):
        files.append(os.path.join(cache, f"corpus-{constants['CORPUS_VERSION']}", "val.bin"))
    loaders = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
               and "split" in [a.arg for a in node.args.args + node.args.kwonlyargs]]
    return {"files": files, "loaders": loaders, "split": "val"}


def attest_facts(repo: str) -> dict:
    """The keys freeze adds for the attested metric (never verified: prepare.py's hash is)."""
    clock = module_constants(os.path.join(repo, "prepare.py")).get("TIME_BUDGET_CLOCK")
    return {"metric_source": metric_source(),
            "budget_clock": clock if clock in BUDGET_CLOCKS else "wall",
            "validation": validation_facts(repo)}


# ---------------------------------------------------------------------------
# Freeze, load, update, verify
# ---------------------------------------------------------------------------


def load(repo: str) -> dict | None:
    try:
        with open(manifest_path(repo), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def _write(repo: str, data: dict) -> None:
    os.makedirs(session_dir(repo), exist_ok=True)
    path = manifest_path(repo)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


class _Lock:
    """An exclusive flock on .autoresearch/session.lock for read-modify-write."""

    def __init__(self, repo: str):
        os.makedirs(session_dir(repo), exist_ok=True)
        self.fd = os.open(os.path.join(session_dir(repo), "session.lock"),
                          os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def freeze(repo: str, new: bool = False, metric: str = "val_bpb",
           higher_is_better: bool = False, ledger_name: str = "results.tsv") -> dict:
    """Records the manifest. An existing one is kept (returned) unless ``new``; then it is
    archived as ``session-<created>.json`` and a new track starts at the ledger's end."""
    repo = os.path.abspath(repo)
    ensure_excludes(repo)
    with _Lock(repo):
        old = load(repo)
        if old is not None and not new:
            return old
        if old is not None:
            stamp = str(old.get("created", "old")).replace(":", "")
            os.replace(manifest_path(repo), os.path.join(session_dir(repo),
                                                         f"session-{stamp}.json"))
        data = {
            "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "branch": git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False),
            "base_commit": git(repo, "rev-parse", "HEAD"),
            "ledger": ledger_name,
            "ledger_start": len(ledger.read_ledger(os.path.join(repo, ledger_name))),
            "metric": metric,
            "higher_is_better": bool(higher_is_better),
        }
        data.update(facts(repo))
        data.update(attest_facts(repo))
        data.update(integrity_facts(repo))
        _write(repo, data)
        return data


def update(repo: str, **fields) -> dict:
    """Merges extra facts into the manifest (under the session lock); returns it."""
    with _Lock(repo):
        data = load(repo)
        if data is None:
            raise FileNotFoundError(f"no session in {repo}: freeze first")
        data.update(fields)
        _write(repo, data)
        return data


def verify(repo: str, data: dict | None = None, gpu: bool = True) -> list[str]:
    """What changed since the freeze, one short phrase each; [] when nothing did.
    ``gpu=False`` leaves the GPU out (``run_changes``)."""
    data = load(repo) if data is None else data
    if data is None:
        return ["no session frozen"]
    now = facts(repo, gpu=gpu)
    changes = []
    for name, digest in data.get("files", {}).items():
        current = now["files"].get(name, sha256_file(os.path.join(repo, name)))
        if current != digest:
            what = "appeared" if digest is None else "was removed" if current is None \
                else "changed"
            changes.append(f"{name} {what}")
    for name, value in data.get("constants", {}).items():
        if now["constants"].get(name) != value:
            changes.append(f"{name} {value} -> {now['constants'].get(name)}")
    frozen_cache = data.get("data_cache", {})
    if frozen_cache.get("dir") != now["data_cache"]["dir"]:
        changes.append(f"data cache moved {frozen_cache.get('dir')} -> {now['data_cache']['dir']}")
    elif frozen_cache.get("fingerprint") != now["data_cache"]["fingerprint"] \
            and "data_integrity" not in data:  # else named file by file (integrity_changes)
        changes.append(f"data cache changed (tokenizer or {frozen_cache.get('val_shard')})")
    changes += integrity_changes(repo, data, already_cache=any(
        c.startswith("data cache moved") for c in changes))
    if gpu and data.get("gpu") != now["gpu"]:
        changes.append(f"GPU {data.get('gpu')} -> {now['gpu']}")
    branch = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if data.get("branch") and branch != data["branch"]:
        changes.append(f"branch {data['branch']} -> {branch or '(detached)'}")
    base = data.get("base_commit", "")
    if base and not gitx.ok(repo, "merge-base", "--is-ancestor", base, "HEAD"):
        changes.append(f"base commit {base[:7]} is no longer below HEAD")
    return changes


def integrity_facts(repo: str) -> dict:
    """The freeze's ``environment`` and ``data_integrity`` keys (arcore.fingerprint)."""
    cache, shard = cache_location(repo)
    return {"environment": fingerprint.environment(repo),
            "data_integrity": fingerprint.data_integrity(cache, cache_entries(cache, shard)[0])}


def integrity_changes(repo: str, data: dict, already_cache: bool = False) -> list[str]:
    """What changed in the environment and in the cache files' stat/content since the freeze
    (a manifest frozen before these keys existed is not checked for them). ``already_cache``:
    the data cache is already named (its size/mtime fingerprint), so its files are not."""
    changes = []
    if "environment" in data:
        changes += fingerprint.environment_changes(data["environment"],
                                                   fingerprint.environment(repo))
    if "data_integrity" in data and not already_cache:
        cache, shard = cache_location(repo)
        refreshed: dict = {}
        found = fingerprint.data_changes(data["data_integrity"], cache,
                                         cache_entries(cache, shard)[0], refreshed)
        if refreshed and not found and os.path.exists(manifest_path(repo)):
            # same content, new stat (a restore, a chmod): record it, hash it no more
            kept = dict(data["data_integrity"])
            kept["files"] = dict(kept.get("files", {}), **refreshed)
            data["data_integrity"] = update(repo, data_integrity=kept)["data_integrity"]
        changes += found
    return changes


def adopt_new_venv(repo: str, data: dict) -> bool:
    """After the run that froze the session: a venv its ``uv run`` created (the freeze found
    none) becomes the target's environment. True when recorded (``data`` updated)."""
    env = data.get("environment")
    if env is None or env.get("venv"):
        return False
    now = fingerprint.environment(repo)
    if not now["venv"]:
        return False
    data["environment"] = update(repo, environment=now)["environment"]
    return True


def run_changes(repo: str, data: dict) -> list[str]:
    """What a run changed of the frozen harness (files, constants, the data cache, the
    environment): ``verify`` without the GPU, the branch and the base commit, which the
    judge checks its own way."""
    return verify(repo, dict(data, branch="", base_commit=""), gpu=False)


def verify_message(changes: list[str]) -> str:
    return ("harness changed since the session froze: " + "; ".join(changes)
            + " -- " + NEW_TRACK)


NEW_TRACK = ("to compare on the new harness, start a new comparison track: scripts/setup.sh "
             "--new-track (it freezes again; the next run is the new track's baseline)")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

USAGE = """usage: python3 -m arcore session freeze [--repo DIR] [--new] [--metric NAME] [--higher-is-better]
       python3 -m arcore session verify [--repo DIR]
       python3 -m arcore session show [--repo DIR]
exit: 0 ok, 1 no session (verify/show), 2 usage, 3 harness changed (verify), 5 already frozen"""


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in ("freeze", "verify", "show"):
        print(USAGE, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    opts = {"repo": ".", "new": False, "metric": "val_bpb", "higher": False}
    it = iter(args)
    for arg in it:
        if arg == "--repo":
            opts["repo"] = next(it, "")
        elif arg == "--metric":
            opts["metric"] = next(it, "")
        elif arg == "--new" and command == "freeze":
            opts["new"] = True
        elif arg == "--higher-is-better" and command == "freeze":
            opts["higher"] = True
        else:
            print(f"session: unknown argument {arg!r}", file=sys.stderr)
            return 2
    repo = os.path.abspath(opts["repo"] or ".")
    if not os.path.isdir(os.path.join(repo, ".git")) and not os.path.isfile(
            os.path.join(repo, ".git")):
        print(f"session: not the top of a git repository: {repo}", file=sys.stderr)
        return 2
    if command == "freeze":
        existed = load(repo) is not None
        data = freeze(repo, new=opts["new"], metric=opts["metric"],
                      higher_is_better=opts["higher"])
        print(json.dumps(data, sort_keys=True))
        if existed and not opts["new"]:
            print("session: already frozen (pass --new to start a new track)", file=sys.stderr)
            return 5
        return 0
    data = load(repo)
    if data is None:
        print(f"session: no session in {repo}", file=sys.stderr)
        return 1
    if command == "show":
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    changes = verify(repo, data)
    if changes:
        print(f"session: {verify_message(changes)}", file=sys.stderr)
        return 3
    return 0
