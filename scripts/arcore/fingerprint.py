"""Fingerprints that cannot hide a change: the target's environment and the data cache.

Two facts the session freeze records (``session.json`` keys ``environment`` and
``data_integrity``) and verifies before and after every run:

``environment`` -- what Python runs the target with:

- the environment: ``$UV_PROJECT_ENVIRONMENT`` (relative to the repo), else ``<repo>/.venv``
  (a ``pyvenv.cfg`` there), read from disk without running its Python: its site-packages
  (``lib*/python*/site-packages``), plus the base interpreter's when
  ``include-system-site-packages = true``, plus the base interpreter's stdlib directory (where a
  distribution may ship a ``sitecustomize.py``); with no venv, the ``python3`` on the caller's
  PATH, asked once with ``-I -S`` (no site, no ``.pth`` runs) for its site directories;
- ``distributions``: ``name -> version`` of every ``*.dist-info``/``*.egg-info`` there;
- ``startup``: every file Python runs at start-up from those directories, with its sha256:
  ``*.pth`` files and ``sitecustomize``/``usercustomize`` (a module, a package or a sourceless
  ``.pyc``);
- ``fingerprint``: one sha256 over all of it.

``data_integrity`` -- the data cache files the evaluator reads (upstream: ``tokenizer/*`` and
the pinned validation shard; another layout: every file, like ``session.cache_fingerprint``):
per file its size, mtime, **ctime** and inode (ctime cannot be set back with ``os.utime``: any
write, rename, chmod or link moves it to "now") and the **content sha256**. Verifying stats the
files; only a file whose stat changed is hashed again, so the cost per run stays flat whatever
the cache holds (training shards are not covered, as before). Content hashing stops after
``CONTENT_CAP`` bytes in all (a fork's huge cache): the rest is covered by stat alone.

What neither covers: edits inside an installed distribution's files (``numpy/*.py``) that keep
its version; the OS sandbox (``--sandbox``) makes the environment read-only for that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

STARTUP_NAMES = ("sitecustomize", "usercustomize")
CONTENT_CAP = 2 << 30  # bytes of cache content hashed at a freeze, at most
_DIST = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+?)(?:-py[\d.]+)?\.(?:dist|egg)-info$")


def _sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _tree_sha(path: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(f"{os.path.relpath(full, path)}\t{_sha256(full)}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------


def venv_dir(repo: str, environ: dict | None = None) -> str | None:
    """The target's virtual environment, or None when it has none."""
    environ = os.environ if environ is None else environ
    named = environ.get("UV_PROJECT_ENVIRONMENT")
    path = os.path.join(repo, os.path.expanduser(named)) if named else os.path.join(repo, ".venv")
    return os.path.abspath(path) if os.path.isfile(os.path.join(path, "pyvenv.cfg")) else None


def _pyvenv(venv: str) -> dict:
    out = {}
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition("=")
                if sep:
                    out[key.strip().lower()] = value.strip()
    except OSError:
        pass
    return out


def _venv_paths(venv: str) -> tuple[list[str], str]:
    """(directories Python reads start-up files and distributions from, a label)."""
    cfg = _pyvenv(venv)
    dirs = []
    for lib in ("lib", "lib64"):
        top = os.path.join(venv, lib)
        try:
            names = sorted(os.listdir(top))
        except OSError:
            continue
        dirs += [os.path.join(top, n, "site-packages") for n in names if n.startswith("python")]
    home = cfg.get("home", "")
    version = cfg.get("version_info") or cfg.get("version") or ""
    major_minor = ".".join(version.split(".")[:2])
    if home and major_minor:
        prefix = os.path.dirname(home.rstrip("/"))
        stdlib = os.path.join(prefix, "lib", f"python{major_minor}")
        dirs.append(stdlib)
        if cfg.get("include-system-site-packages", "false").lower() == "true":
            dirs += [os.path.join(stdlib, "site-packages"), os.path.join(stdlib, "dist-packages"),
                     os.path.join(prefix, "lib", "python3", "dist-packages")]
    return _unique(dirs), venv


def _unique(dirs: list[str]) -> list[str]:
    """Existing directories, each once (lib64 is often a link to lib)."""
    seen, out = set(), []
    for path in dirs:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in seen:
            seen.add(real)
            out.append(path)
    return out


_ASK = ("import json, site, sys; print(json.dumps([sys.prefix, site.getsitepackages() + "
        "[site.getusersitepackages()] + [p for p in sys.path if p]]))")


def _interpreter_paths(environ: dict) -> tuple[list[str], str]:
    """The site directories of the python3 on the caller's PATH (asked with -I -S)."""
    path = environ.get("AR_CALLER_PATH") or environ.get("PATH") or os.defpath
    python = shutil.which("python3", path=path)
    if not python:
        return [], "none"
    try:
        done = subprocess.run([python, "-I", "-S", "-c", _ASK], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
        prefix, dirs = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return [], python
    keep = [d for d in dirs if os.path.isdir(d) and not d.endswith(".zip")
            and "lib-dynload" not in d]
    return _unique(keep), prefix


def _scan(dirs: list[str]) -> tuple[dict, dict]:
    distributions, startup = {}, {}
    for top in dirs:
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            match = _DIST.match(name)
            if match:
                key = re.sub(r"[-_.]+", "-", match["name"]).lower()
                distributions.setdefault(key, match["version"])
                continue
            stem = name.split(".", 1)[0]
            if name.endswith(".pth") or stem in STARTUP_NAMES:
                full = os.path.join(top, name)
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                startup[full] = _tree_sha(full) if is_dir else _sha256(full)
    return distributions, startup


def environment(repo: str, environ: dict | None = None) -> dict:
    """The ``environment`` fact (see the module doc)."""
    environ = dict(os.environ if environ is None else environ)
    venv = venv_dir(repo, environ)
    dirs, where = _venv_paths(venv) if venv else _interpreter_paths(environ)
    distributions, startup = _scan(dirs)
    digest = hashlib.sha256(json.dumps([where, distributions, startup], sort_keys=True)
                            .encode()).hexdigest()
    return {"dir": where, "venv": bool(venv), "paths": dirs, "distributions": distributions,
            "startup": startup, "fingerprint": digest}


def environment_changes(frozen: dict | None, now: dict) -> list[str]:
    """What changed in the environment since the freeze, each with how to restore it."""
    if not frozen or frozen.get("fingerprint") == now.get("fingerprint"):
        return []
    if frozen.get("dir") != now.get("dir"):
        return [f"the target's Python environment moved {frozen.get('dir')} -> {now.get('dir')}"
                " (restore UV_PROJECT_ENVIRONMENT/.venv as it was)"]
    out = []
    old, new = frozen.get("startup", {}), now.get("startup", {})
    for path in sorted(set(old) | set(new)):
        if path not in old:
            out.append(f"start-up file {path} appeared (Python runs it at every start: "
                       f"delete it: rm -r '{path}')")
        elif path not in new:
            out.append(f"start-up file {path} was removed (reinstall the environment: "
                       "uv sync --locked)")
        elif old[path] != new[path]:
            out.append(f"start-up file {path} changed (reinstall the environment: "
                       "uv sync --locked --reinstall)")
    old, new = frozen.get("distributions", {}), now.get("distributions", {})
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            out.append(f"distribution {name} {old.get(name) or '(none)'} -> "
                       f"{new.get(name) or '(removed)'} (restore it: uv sync --locked)")
    return out or ["the target's Python environment changed (restore it: uv sync --locked)"]


# ---------------------------------------------------------------------------
# The data cache: stat with ctime, content hash
# ---------------------------------------------------------------------------


def _stat(path: str) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def data_integrity(cache: str, paths: list[str], budget: int = CONTENT_CAP) -> dict:
    """``{relpath: {"stat": [size, mtime_ns, ctime_ns, ino], "sha256": ...}}`` of ``paths``
    (missing ones as null), under ``{"dir": cache, "files": ...}``."""
    files = {}
    for path in paths:
        stat = _stat(path)
        if stat is None:
            files[os.path.relpath(path, cache)] = None
            continue
        digest = _sha256(path) if budget >= stat[0] else None
        budget -= stat[0]
        files[os.path.relpath(path, cache)] = {"stat": stat, "sha256": digest}
    return {"dir": cache, "files": files}


def data_changes(frozen: dict | None, cache: str, paths: list[str],
                 refreshed: dict | None = None) -> list[str]:
    """Cache files the evaluator reads that changed since the freeze; a file whose stat moved
    is hashed again and counts only when its content differs (or cannot be hashed). Such a
    file with the same content goes into ``refreshed`` (relpath -> its new entry), so the
    caller can record the new stat and not hash it again."""
    if not frozen or frozen.get("dir") != cache:
        return []  # a moved cache is named by session.verify
    hint = ("restore the file (rebuild the cache: uv run prepare.py) or start a new "
            "comparison track")
    recorded = frozen.get("files", {})
    now = {os.path.relpath(p, cache): p for p in paths}
    out = []
    for rel in sorted(set(recorded) | set(now)):
        was = recorded.get(rel)
        path = now.get(rel, os.path.join(cache, rel))
        stat = _stat(path)
        if was is None and stat is None:
            continue
        if was is None:
            out.append(f"data cache file {rel} appeared ({hint})")
        elif stat is None:
            out.append(f"data cache file {rel} was removed ({hint})")
        elif stat != was.get("stat"):
            digest = _sha256(path) if was.get("sha256") else None
            if digest is not None and digest == was["sha256"]:
                if refreshed is not None:
                    refreshed[rel] = {"stat": stat, "sha256": digest}
            else:
                moved = "content" if stat[1] == was["stat"][1] else "mtime and content"
                out.append(f"data cache file {rel} was rewritten ({moved} changed; ctime "
                           f"{was['stat'][2]} -> {stat[2]}) ({hint})")
    return out
