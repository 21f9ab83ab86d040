"""Every process of a run ends when the run ends, and its log stays bounded.

A run's processes are tracked three ways; each that works here is used:

1. **A private pid namespace** (``unshare --pid --fork --kill-child``, util-linux; needs root
   or unprivileged user namespaces): when the command's shell (the namespace's init) exits,
   the kernel kills everything left in the namespace, double-forked ``setsid`` daemons too.
2. **A cgroup of its own** (cgroup v2 ``<current>/autoresearch-<tag>``, else v1 ``pids``), the
   child joining it before it execs: a process cannot leave it by ``setsid`` or by clearing
   its environment. After the run everything in it is killed (``cgroup.kill``, else one
   SIGKILL per pid until it is empty) and it is removed.
3. **A tag in the environment**, ``AUTORESEARCH_RUN_TAG=<random>``: after the run every
   process whose ``/proc/<pid>/environ`` holds it gets SIGKILL (always available where /proc
   is; a process that re-execs with a cleared environment escapes only this one).

``AUTORESEARCH_NO_PIDNS=1`` / ``AUTORESEARCH_NO_CGROUP=1`` turn the first two off (tests of the
fallbacks). ``trim_log`` keeps the head and tail of a log that passed the cap
(``--max-log-mb``); the judge calls the run ``crash`` with class ``log-flood``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time

TAG_ENV = "AUTORESEARCH_RUN_TAG"
PIDNS = ["unshare", "--pid", "--fork", "--kill-child", "--"]
CGROUP_ROOT = "/sys/fs/cgroup"


def new_tag() -> str:
    return secrets.token_hex(8)


# ---------------------------------------------------------------------------
# What works here
# ---------------------------------------------------------------------------


def pidns_prefix(environ: dict | None = None) -> list[str]:
    """The prefix that runs a command in a private pid namespace, or [] where it fails."""
    environ = os.environ if environ is None else environ
    if environ.get("AUTORESEARCH_NO_PIDNS") or not shutil.which("unshare"):
        return []
    try:
        done = subprocess.run([*PIDNS, "true"], capture_output=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return []
    return list(PIDNS) if done.returncode == 0 else []


def _own_cgroup_dirs() -> list[str]:
    """Where a child cgroup of ours could go: v2 first, then v1 pids."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            unified = os.path.join(CGROUP_ROOT, "unified")
            top = unified if os.path.isdir(unified) and os.path.exists(
                os.path.join(unified, "cgroup.procs")) else CGROUP_ROOT
            found.insert(0, top + path)
        elif "pids" in controllers.split(","):
            found.append(os.path.join(CGROUP_ROOT, "pids") + path)
    return found


def make_cgroup(tag: str, environ: dict | None = None) -> str | None:
    """A new cgroup for the run, or None where none can be made (not root, no cgroupfs)."""
    environ = os.environ if environ is None else environ
    if environ.get("AUTORESEARCH_NO_CGROUP"):
        return None
    for parent in _own_cgroup_dirs():
        path = os.path.join(parent.rstrip("/"), f"autoresearch-{tag}")
        try:
            os.mkdir(path)
        except OSError:
            continue
        if os.path.exists(os.path.join(path, "cgroup.procs")):
            return path
        _rmdir(path)
    return None


def join_cgroup(path: str | None):
    """A ``preexec_fn`` that moves the child into ``path`` before it execs."""
    def _join():
        if path:
            try:
                with open(os.path.join(path, "cgroup.procs"), "w") as handle:
                    handle.write(str(os.getpid()))
            except OSError:
                pass
    return _join


def describe(environ: dict | None = None) -> dict:
    """What works on this machine (for check-hardware and the docs)."""
    tag = new_tag()
    cgroup = make_cgroup(tag, environ)
    if cgroup:
        _rmdir(cgroup)
    return {"pid_namespace": bool(pidns_prefix(environ)), "cgroup": bool(cgroup),
            "environment_tag": os.path.isdir("/proc")}


# ---------------------------------------------------------------------------
# Ending them
# ---------------------------------------------------------------------------


def tagged(tag: str) -> list[int]:
    """Pids whose environment holds ``AUTORESEARCH_RUN_TAG=<tag>`` (zombies aside)."""
    needle = f"{TAG_ENV}={tag}".encode()
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                env = handle.read()
        except OSError:
            continue
        if any(item == needle for item in env.split(b"\0")) and not _zombie(int(entry)):
            found.append(int(entry))
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return True
    fields = stat[stat.rfind(b")") + 2:].split()
    return not fields or fields[0] in (b"Z", b"X")


def _cgroup_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="utf-8") as handle:
            return [int(p) for p in handle.read().split() if p.isdigit()]
    except OSError:
        return []


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def reap(tag: str, cgroup: str | None, rounds: int = 100) -> int:
    """SIGKILL every process left of the run (cgroup members, tagged processes); removes the
    cgroup. Returns how many were killed."""
    killed: set[int] = set()
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.kill"), "w") as handle:
                handle.write("1")
        except OSError:
            pass
    for _ in range(rounds):
        left = [p for p in set(_cgroup_pids(cgroup) if cgroup else []) | set(tagged(tag))
                if not _zombie(p)]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.02)
    if cgroup:
        for _ in range(50):
            if not _cgroup_pids(cgroup):
                break
            time.sleep(0.02)
        _rmdir(cgroup)
    return len(killed)


# ---------------------------------------------------------------------------
# The log cap
# ---------------------------------------------------------------------------


def trim_log(path: str, cap: int) -> None:
    """Keeps the first and last ``min(cap // 2, 4 MiB)`` bytes of a log that passed ``cap``,
    with one line between them saying how much was cut (in place: run.log is a hard link)."""
    keep = max(1, min(cap // 2, 4 << 20))
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= 2 * keep:
            return
        handle.seek(size - keep)
        tail = handle.read(keep)
        handle.truncate(keep)
        handle.seek(keep)
        handle.write(f"\n[autoresearch: log-flood: the run wrote {size} bytes, past the "
                     f"{cap} byte cap; {size - 2 * keep} bytes cut here]\n".encode())
        handle.write(tail)


def wait_group(proc: subprocess.Popen, timeout: float | None, stopping=lambda: False
               ) -> tuple[int, bool]:
    """Wait for ``proc`` (a process-group leader, e.g. a proposer). Past ``timeout`` seconds
    (None: never), or once ``stopping()`` is true, its group gets SIGTERM, then SIGKILL 5 s
    later. Returns (exit code, timed out); a stop is not a time-out. Leftovers of the group
    are the caller's to kill."""
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out, killing = False, None
    while True:
        try:
            return proc.wait(timeout=0.1), timed_out
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if killing is None and (stopping() or (deadline is not None and now > deadline)):
                timed_out = not stopping()
                _signal_group(proc.pid, signal.SIGTERM)
                killing = now + 5
            elif killing is not None and now > killing:
                _signal_group(proc.pid, signal.SIGKILL)
                killing = now + 3600


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
