"""The scheduler's journal (``.autoresearch/loop.json``), its lock, and the processes a dead
loop may have left (found by the token every child carries in its environment).

The journal is written atomically (temp file, fsync, rename) before every step; what it holds
and how a restart reads it is arcore.scheduler's business (references/architecture.md §8).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import time
from pathlib import Path

STATE_DIR = ".autoresearch"
JOURNAL = f"{STATE_DIR}/loop.json"
LOCK = f"{STATE_DIR}/loop.lock"
TOKEN_ENV = "AUTORESEARCH_LOOP_TOKEN"
LANE_SUFFIX = "-lane"  # arcore.lane's processes carry <token>-lane


def load_journal(repo: str) -> dict:
    try:
        with open(Path(repo) / JOURNAL, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_journal(repo: str, state: dict) -> None:
    """Write the journal atomically (temp file, fsync, rename)."""
    path = Path(repo) / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".loop.json.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def acquire_lock(repo: str):
    """An exclusive flock held for the loop's life (released by the kernel when it dies)."""
    import fcntl  # noqa: PLC0415

    path = Path(repo) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def args_key(opts: argparse.Namespace) -> str:
    """What makes two loop commands 'the same command' for resuming their counters."""
    keyed = {k: v for k, v in sorted(vars(opts).items()) if k not in ("repo",)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]





# ---------------------------------------------------------------------------
# Processes: children in their own session, tagged with the loop's token
# ---------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def tagged_pids(token: str) -> list[int]:
    """Processes whose environment carries ``AUTORESEARCH_LOOP_TOKEN=token...`` (Linux /proc):
    the loop's runs and, with their suffixes, its proposers (``<token>-lane``,
    ``<token>-<i>-lane``)."""
    if not token or not os.path.isdir("/proc"):
        return []
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if any(item.startswith(needle) for item in handle.read().split(b"\0")):
                    found.append(int(entry))
        except OSError:
            continue
    return [p for p in found if alive(p)]


def signal_group(pgid: int | None, sig: int) -> None:
    if pgid and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def children(state: dict) -> list[dict]:
    """The children a journal names: the foreground one and each slot's run."""
    out = [state.get("child") or {}]
    out += [(job or {}).get("child") or {} for job in (state.get("slots") or {}).values()]
    return [c for c in out if c]


def kill_stale(state: dict, grace: float) -> list[int]:
    """Stop whatever a dead loop left running: SIGTERM to its recorded children
    (run-experiment.sh then kills its run's group and writes no row), then SIGKILL to every
    tagged process."""
    token = state.get("token") or ""
    pids = set(tagged_pids(token))
    termed = []
    for child in children(state):
        pid = child.get("pid")
        if isinstance(pid, int) and pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            termed.append(pid)
    wait_gone(termed, grace + 5)
    for child in children(state):
        pgid = child.get("pgid")
        if isinstance(pgid, int) and (pgid in pids or not token):
            signal_group(pgid, signal.SIGKILL)
    pids = set(tagged_pids(token))  # runs and proposers: every token that starts with ours
    for other in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(other, signal.SIGKILL)
    wait_gone(list(pids), 5)
    return sorted(pids)
