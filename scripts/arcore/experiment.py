"""One experiment: run the candidate at HEAD, judge it, log one row, revert a loser.

run-experiment.sh checks for ``--help`` and then execs ``python3 -m arcore experiment run
ARGS...``: the whole run lives here so that a signal sent to the script reaches the process
that owns the training run. The steps, in order (nothing is written before step 6):

1. ``--repo`` must be the top of a git work tree with a commit at HEAD (else exit 2).
2. One run per repository at a time (``.autoresearch/run.lock``), tracked files clean, no
   merge/rebase in progress (else exit 4).
3. The session: frozen now if there is none, else verified (exit 3 naming what changed).
4. HEAD already has a row in this track -> exit 5, unless ``--rerun``.
5. Tamper lint against the last kept commit (``arcore.tamper``): a refusal is judged
   ``crash`` (class ``tamper``) without running anything.
6. The command runs in its own session/process group (``setsid``), output to the archived
   log ``.autoresearch/logs/NNNN-<short>.log``, hard-linked as ``run.log``. Past
   ``--timeout`` the group gets SIGTERM, then SIGKILL after ``--grace``; leftovers of a
   finished run's group get the same. SIGINT/SIGTERM/SIGHUP to us: the same kill, no row,
   git untouched, exit 130.
7. The judge (``judge``): no metric -> ``crash`` + class; the first run of a track with no
   kept row yet is the baseline (``keep``, never reverted); later, strictly better than the
   best kept value (compared at the ledger's 6 decimals) -> ``keep``, else ``discard``. An
   attested session (``arcore.attest``) judges the value evaluate_bpb returned, else
   ``crash`` (``unattested``/``tamper``); a run that trained past TIME_BUDGET x (1 +
   ``--budget-tolerance``) plus the baseline's overhead is ``crash`` (``over-budget``).
8. One row appended to results.tsv, one object to ``.autoresearch/runs.jsonl``.
9. ``discard``/``crash`` (not a baseline, not a commit already kept in the track): the
   commit is kept reachable as ``refs/autoresearch/discarded/<sha>`` and HEAD moves back one
   commit with ``git reset --keep HEAD~1`` -- only if HEAD is still the candidate and no
   tracked file changed during the run (else exit 4 after the row, saying why). ``--keep``
   refuses to overwrite untracked files; nothing else is touched.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time

from arcore import attest, cli, gitx, isolate, ledger, procs, runlog, sandbox, seedonly, session, tamper, usage, uvenv

# ---------------------------------------------------------------------------
# Constants and errors
# ---------------------------------------------------------------------------

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_HARNESS, EXIT_UNSAFE, EXIT_DONE, EXIT_INT = \
    0, 1, 2, 3, 4, 5, 130
DEFAULTS = {"cmd": "uv run train.py", "launcher": "", "timeout": 600.0, "grace": 10.0,
            "metric": "val_bpb", "budget_tolerance": attest.DEFAULT_TOLERANCE, "max_log_mb": 256.0}
FLOOD_HINT = ("the run printed more than --max-log-mb of output; print less (a progress line "
              "per step, not per batch), or raise --max-log-mb")
LEDGER = "results.tsv"
RUN_LOG = "run.log"
RUNS = "runs.jsonl"
DISCARDED = "refs/autoresearch/discarded/"
TAMPER_HINT = ("the candidate must change train.py only and leave the evaluator, its "
               "constants and the data cache alone (see the finding in the description)")
PRINTED_WARNING = ("warning: this session's metric is the val_bpb train.py prints, not one "
                   "the evaluator attested (AUTORESEARCH_METRIC_SOURCE=printed at freeze); "
                   "a cheating train.py can be kept")
KEYS = ("status", "commit", "metric", "value", "memory_gb", "best", "delta", "crash_class",
        "hint", "seconds", "log", "description", "reverted")


class Stop(Exception):
    """Ends the run with an exit code and one line on stderr."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    pass


def log(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    print(f"run-experiment.sh: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The judge (pure)
# ---------------------------------------------------------------------------


def better(value: float, best: float, higher_is_better: bool = False) -> bool:
    """Strictly better at the ledger's precision (6 decimals): a tie is not better."""
    a, b = round(value, 6), round(best, 6)
    return a > b if higher_is_better else a < b


def over_budget(metrics: dict, time_budget, tolerance: float) -> bool:
    """A printed session's check: training_seconds past TIME_BUDGET x (1 + tolerance)."""
    return attest.printed_over_budget(metrics.get("training_seconds"), time_budget,
                                      tolerance) is not None


def judge(value: float | None, best: float | None, baseline: bool,
          higher_is_better: bool = False, too_long: bool = False) -> str:
    """keep / discard / crash for one run (see the module doc, step 7)."""
    if value is None:
        return "crash"
    if too_long:
        return "discard"
    if baseline or best is None:
        return "keep"
    return "keep" if better(value, best, higher_is_better) else "discard"


# ---------------------------------------------------------------------------
# Git
# ---------------------------------------------------------------------------


def git(repo: str, *args: str, check: bool = True) -> str:
    done = gitx.run(repo, *args)
    if check and done.returncode != 0:
        raise Stop(EXIT_ERROR, f"git {' '.join(args)} failed: {done.stderr.strip()[:300]}")
    return done.stdout.strip() if done.returncode == 0 else ""


def git_ok(repo: str, *args: str) -> bool:
    return gitx.ok(repo, *args)


def tracked_changes(repo: str) -> list[str]:
    return git(repo, "status", "--porcelain", "--untracked-files=no").splitlines()


_IN_PROGRESS = (("MERGE_HEAD", "a merge"), ("rebase-merge", "a rebase"),
                ("rebase-apply", "a rebase or am"), ("CHERRY_PICK_HEAD", "a cherry-pick"),
                ("REVERT_HEAD", "a revert"), ("BISECT_LOG", "a bisect"))


def in_progress(repo: str) -> str | None:
    """A merge, rebase, cherry-pick, revert or bisect under way, by name."""
    args = [arg for marker, _ in _IN_PROGRESS for arg in ("--git-path", marker)]
    paths = git(repo, "rev-parse", *args).splitlines()
    for path, (_, what) in zip(paths, _IN_PROGRESS):
        if os.path.exists(path if os.path.isabs(path) else os.path.join(repo, path)):
            return what
    return None


def resolve(repo: str, rev: str) -> str | None:
    return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False) or None


def is_ancestor(repo: str, older: str, newer: str) -> bool:
    return git_ok(repo, "merge-base", "--is-ancestor", older, newer)


def tamper_base(repo: str, head: str, kept: dict | None, frozen: dict) -> str | None:
    """The last kept commit of the track, else the freeze's base commit, else HEAD~1."""
    for candidate in ((kept or {}).get("commit"), frozen.get("base_commit")):
        sha = resolve(repo, candidate) if candidate else None
        if sha and sha != head and is_ancestor(repo, sha, head):
            return sha
        if sha == head:
            return None
    return resolve(repo, "HEAD~1")


def current_ref(repo: str) -> str:
    """The branch HEAD is on (refs/heads/...), or '' when detached."""
    return git(repo, "symbolic-ref", "-q", "HEAD", check=False)


def revert(repo: str, candidate: str, ref: str | None = None) -> str | None:
    """Moves HEAD back over the candidate; None when done, else why it was not.

    ``ref`` is the branch HEAD was on when the run began: a switch to another branch
    (even one at the same commit) is never reset."""
    if resolve(repo, "HEAD") != candidate:
        return f"HEAD moved during the run (now {git(repo, 'rev-parse', '--short', 'HEAD')})"
    if ref is not None and current_ref(repo) != ref:
        now = current_ref(repo).removeprefix("refs/heads/") or "a detached HEAD"
        return f"the branch was switched during the run (now {now})"
    changes = tracked_changes(repo)
    if changes:
        return f"tracked files changed during the run ({changes[0].strip()})"
    if resolve(repo, "HEAD~1") is None:
        return "the candidate is a root commit; there is nothing to go back to"
    git(repo, "update-ref", "-m", "autoresearch: discarded experiment",
        DISCARDED + candidate, candidate)
    done = gitx.run(repo, "reset", "--quiet", "--keep", "HEAD~1")
    if done.returncode != 0:
        return f"git reset --keep HEAD~1 refused: {done.stderr.strip()[:200]}"
    return None


# ---------------------------------------------------------------------------
# Files: locks, logs, runs.jsonl
# ---------------------------------------------------------------------------


def take_lock(repo: str) -> int:
    os.makedirs(session.session_dir(repo), exist_ok=True)
    fd = os.open(os.path.join(session.session_dir(repo), "run.lock"), os.O_RDWR | os.O_CREAT,
                 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise Stop(EXIT_UNSAFE, "another run-experiment.sh is running in this repository")
    return fd


def new_log(repo: str, short: str) -> str:
    """Creates .autoresearch/logs/NNNN-<short>.log (next free number) and links run.log to it."""
    logs = os.path.join(session.session_dir(repo), "logs")
    os.makedirs(logs, exist_ok=True)
    numbers = [int(n[:4]) for n in os.listdir(logs) if n[:4].isdigit()]
    number = max(numbers, default=0) + 1
    while True:
        path = os.path.join(logs, f"{number:04d}-{short}.log")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            break
        except FileExistsError:
            number += 1
    link = os.path.join(repo, RUN_LOG)
    tmp = f"{link}.{os.getpid()}.tmp"
    try:
        os.link(path, tmp)
        os.replace(tmp, link)
    except OSError:
        with open(link, "w", encoding="utf-8"):
            pass  # a filesystem without hard links: run.log is copied after the run
    return path


def finish_log(repo: str, path: str) -> None:
    link = os.path.join(repo, RUN_LOG)
    if not os.path.exists(path):  # .autoresearch/ deleted during the run (git clean -fdx)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.link(link, path)  # run.log is the same file: its output survives
        except OSError:
            with open(path, "ab"):
                pass
        log(f"{os.path.relpath(path, repo)} was deleted during the run; restored from run.log")
    try:
        if os.path.samefile(path, link):
            return
    except OSError:
        pass
    tmp = f"{link}.{os.getpid()}.tmp"
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    os.replace(tmp, link)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def append_jsonl(path: str, record: dict) -> None:
    data = (json.dumps(_clean(record), ensure_ascii=False, sort_keys=True) + "\n").encode(
        "utf-8", "backslashreplace")  # a lone surrogate (non-UTF-8 argv) stays a JSON escape
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Running the command in its own process group
# ---------------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left, zombies aside (where /proc tells)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False  # only zombies left, waiting for init to reap them


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the whole group, SIGKILL after ``grace`` seconds if anything is left."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        if proc.returncode is not None and not _group_alive(pgid):
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _raise_interrupt(signum, _frame):
    raise Interrupted(signum)


_SIGNALS_SEEN: list[int] = []


def _note_signal(signum, _frame):
    _SIGNALS_SEEN.append(signum)


def run_command(repo: str, argv: list[str], log_path: str, timeout: float, grace: float,
                env: dict, guard: dict | None = None) -> tuple[int | None, bool, float]:
    """(exit code, timed out, seconds). Raises Interrupted after killing the group.

    While the run is going, a signal only sets a flag (it never raises mid-step), so however
    many signals arrive and whenever they do, the run's whole group is killed exactly once.
    ``guard`` (arcore.procs): ``pidns`` prefix, ``cgroup``, ``tag`` (already in ``env``) and
    ``max_log`` bytes; a log past it stops the run and sets ``guard["flood"]``.
    """
    guard = guard if guard is not None else {}
    _SIGNALS_SEEN.clear()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _note_signal)
    start = time.monotonic()
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([*guard.get("pidns", []), *argv], cwd=repo,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env,
                                preexec_fn=procs.join_cgroup(guard.get("cgroup")))
    timed_out = False
    max_log = guard.get("max_log")
    while not _SIGNALS_SEEN:
        try:
            proc.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            pass
        if max_log and os.path.getsize(log_path) > max_log:
            guard["flood"] = True
            log(f"the run's log passed {max_log >> 20} MiB: stopping it (log-flood)")
            break
        if time.monotonic() - start >= timeout:
            timed_out = True
            log(f"timeout after {timeout:g}s: stopping the run's process group")
            break
    seconds = time.monotonic() - start
    if _SIGNALS_SEEN:
        log("interrupted: stopping the run's process group")
    kill_group(proc, grace)  # the timed-out or interrupted run, or a finished run's leftovers
    if guard.get("tag"):  # leftovers that left the group: the cgroup, the environment tag
        procs.reap(guard["tag"], guard.get("cgroup"))
    if guard.get("flood"):
        procs.trim_log(log_path, max_log)
    _ignore_signals()
    if _SIGNALS_SEEN:
        raise Interrupted(_SIGNALS_SEEN[0])
    return proc.returncode, timed_out, seconds


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _catch_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

USAGE = """usage: run-experiment.sh [--desc TEXT] [--cmd CMD] [--launcher PREFIX] [--timeout SEC]
                         [--grace SEC] [--metric NAME] [--higher-is-better] [--worker ID]
                         [--budget-tolerance FRACTION] [--max-log-mb MIB] [--sandbox] [--rerun]
                         [--json] [--repo DIR]"""


def parse_args(argv: list[str]) -> dict:
    opts = dict(DEFAULTS, desc=None, higher=False, worker="", rerun=False, json=False, repo=".",
                sandbox=os.environ.get("AUTORESEARCH_SANDBOX", "") not in ("", "0"))
    if os.environ.get("AUTORESEARCH_MAX_LOG_MB"):  # what run-loop.sh's runs inherit
        opts["max_log_mb"] = os.environ["AUTORESEARCH_MAX_LOG_MB"]
    valued = {"--desc": "desc", "--cmd": "cmd", "--launcher": "launcher", "--timeout": "timeout",
              "--grace": "grace", "--metric": "metric", "--worker": "worker", "--repo": "repo",
              "--budget-tolerance": "budget_tolerance", "--max-log-mb": "max_log_mb"}
    flags = {"--higher-is-better": "higher", "--rerun": "rerun", "--json": "json",
             "--sandbox": "sandbox"}
    try:
        cli.parse_options(argv, opts, valued, flags)
    except ValueError as exc:
        raise Stop(EXIT_USAGE, f"{exc} (see --help)")
    try:
        opts["budget_tolerance"] = attest.parse_tolerance(opts["budget_tolerance"])
    except ValueError:
        raise Stop(EXIT_USAGE, "--budget-tolerance must be a fraction of TIME_BUDGET "
                   "between 0 and 1 (0.1 or 10%)")
    for key in ("timeout", "grace", "max_log_mb"):
        try:
            opts[key] = float(opts[key])
        except ValueError:
            raise Stop(EXIT_USAGE, f"--{key.replace('_', '-')} must be a number of seconds")
        if not math.isfinite(opts[key]) or opts[key] < 0 or (
                key in ("timeout", "max_log_mb") and opts[key] == 0):
            raise Stop(EXIT_USAGE, f"--{key.replace('_', '-')} must be a positive number")
    if not opts["cmd"].strip():
        raise Stop(EXIT_USAGE, "--cmd must not be empty")
    if not opts["metric"].strip():
        raise Stop(EXIT_USAGE, "--metric must not be empty")
    return opts


# ---------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------


def open_repo(path: str) -> tuple[str, str]:
    """(the repository's top directory, HEAD's sha)."""
    path = os.path.abspath(path or ".")
    if not os.path.isdir(path):
        raise Stop(EXIT_USAGE, f"no such directory: {path}")
    done = gitx.run(path, "rev-parse", "--show-toplevel", "--verify", "--quiet",
                    "HEAD^{commit}")
    lines = done.stdout.split("\n")
    if not lines[0]:
        raise Stop(EXIT_USAGE, f"not a git repository: {path}")
    if os.path.realpath(lines[0]) != os.path.realpath(path):
        raise Stop(EXIT_USAGE, f"--repo must be the top of the work tree ({lines[0]})")
    if done.returncode != 0 or len(lines) < 2 or not lines[1]:
        raise Stop(EXIT_USAGE, f"the repository has no commit yet: {path}")
    return path, lines[1]


def check_git_state(repo: str) -> None:
    for name in (LEDGER, RUN_LOG):  # appended/rewritten by every run: never a tracked file
        if git(repo, "ls-files", "--", name):
            raise Stop(EXIT_UNSAFE, f"{name} is tracked by git, so every run would leave a "
                       f"tracked change and no loser could be reverted; untrack it: "
                       f"git rm --cached {name} && git commit")
    flags = gitx.index_flags(repo)
    if flags:
        raise Stop(EXIT_UNSAFE, gitx.flag_message(flags))
    busy = in_progress(repo)
    if busy:
        raise Stop(EXIT_UNSAFE, f"{busy} is in progress; finish or abort it first")
    changes = tracked_changes(repo)
    if changes:
        raise Stop(EXIT_UNSAFE, f"uncommitted changes to tracked files ({changes[0].strip()}"
                   f"{', ...' if len(changes) > 1 else ''}); commit the experiment first")


def load_session(repo: str, opts: dict) -> dict:
    frozen = session.load(repo)
    if frozen is None:
        frozen = session.freeze(repo, metric=opts["metric"], higher_is_better=opts["higher"],
                                ledger_name=LEDGER)
        log(f"froze a new session (track starts at results.tsv row {frozen['ledger_start'] + 1})")
        return dict(frozen, _frozen_now=True)
    changes = session.verify(repo, frozen)
    metric = frozen.get("metric", "val_bpb")
    if metric != opts["metric"] or bool(frozen.get("higher_is_better")) != opts["higher"]:
        changes.append(f"metric {metric}{' (higher is better)' if frozen.get('higher_is_better') else ''}"
                       f" -> {opts['metric']}{' (higher is better)' if opts['higher'] else ''}")
    if changes:
        raise Stop(EXIT_HARNESS, session.verify_message(changes))
    return frozen


def track_records(repo: str, created: str) -> list[str]:
    """Commits of this track's kept runs in runs.jsonl, written by a serial run (a parallel
    worker's are left out: its rows reach the main ledger by another path)."""
    commits = []
    try:
        with open(os.path.join(session.session_dir(repo), RUNS), encoding="utf-8",
                  errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if (isinstance(record, dict) and not record.get("worker")
                        and record.get("status") == "keep"
                        and str(record.get("time", "")) >= created
                        and isinstance(record.get("commit"), str)):
                    commits.append(record["commit"])
    except OSError:
        return []
    return commits


def check_ledger(repo: str, ledger_path: str, frozen: dict) -> None:
    """results.tsv lost rows since the freeze (truncated, replaced, deleted): judging would
    compare against too little (any run a new baseline), so refuse (exit 3). Lost means fewer
    data rows than the track started after, or a kept run of this track in runs.jsonl
    (written after its row) whose commit has no row. A lost discard or crash row changes no
    verdict and is not refused."""
    rows = ledger.read_ledger(ledger_path)
    start = int(frozen.get("ledger_start", 0) or 0)
    created = str(frozen.get("created", ""))
    missing = [c for c in (track_records(repo, created) if created else [])
               if judged_row(rows, c) is None]
    if len(rows) < start or missing:
        what = (f"has {len(rows)} data rows, fewer than the {start} this track started after"
                if len(rows) < start else f"has no row for the kept run of {missing[0][:ledger.SHORT]}"
                " that .autoresearch/runs.jsonl records")
        raise Stop(EXIT_HARNESS, f"{LEDGER} {what} (it was truncated, replaced or deleted): "
                   "restore it, or " + session.NEW_TRACK.removeprefix("to compare on the new harness, "))


def check_seal(repo: str, ledger_path: str, frozen: dict | None = None) -> None:
    """results.tsv changed since the harness last wrote it: stop (exit 3) naming the line,
    the changed copy kept aside, nothing thrown away (``ledger.verify``). A seal deleted
    after this session recorded one (``ledger_sealed`` in session.json) is a change too:
    without it the next append would seal whatever the ledger holds."""
    problem = ledger.verify(ledger_path)
    if problem is None and (frozen or {}).get("ledger_sealed") \
            and ledger.read_seal(ledger_path) is None:
        raise Stop(EXIT_HARNESS, f"the seal of {LEDGER} (.autoresearch/{ledger.SEAL}) was "
                   "deleted since the harness last wrote it, so nothing shows what the ledger "
                   "should hold: check results.tsv by hand, then accept it with PYTHONPATH="
                   f"{os.path.dirname(os.path.dirname(os.path.abspath(__file__)))} python3 -m "
                   f"arcore ledger seal {LEDGER}, or "
                   + session.NEW_TRACK.removeprefix("to compare on the new harness, "))
    if problem is None:
        return
    aside = ledger.set_aside(ledger_path)
    scripts = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    kept = f"; the changed copy is kept as {os.path.relpath(aside, repo)}" if aside else ""
    raise Stop(EXIT_HARNESS, f"{problem}{kept}: put the harness's back with "
               f"cp .autoresearch/{ledger.SEALED_COPY} {LEDGER}, or accept the change with "
               f"PYTHONPATH={scripts} python3 -m arcore ledger seal {LEDGER}, or "
               + session.NEW_TRACK.removeprefix("to compare on the new harness, "))


def judged_row(rows: list[dict], head: str) -> dict | None:
    for row in reversed(rows):
        if len(row["commit"]) >= 4 and head.startswith(row["commit"]):
            return row
    return None


def command_argv(opts: dict) -> list[str]:
    line = opts["cmd"].strip()
    if opts["launcher"].strip():
        line = f"{opts['launcher'].strip()} {line}"
    return ["bash", "-c", line]


def attested_command(frozen: dict | None, opts: dict) -> tuple[bool, dict]:
    """(attested?, the options with --cmd run under the launcher) for the session, or for
    the one a freeze would make now. A command the launcher cannot wrap is refused (exit 2),
    nothing frozen or run. (A printed session warns on every run.)"""
    source = frozen.get("metric_source", "printed") if frozen else session.metric_source()
    if source != "attested":
        return False, opts
    cmd = attest.rewrite_command(opts["cmd"])
    if cmd is None:
        raise Stop(EXIT_USAGE, f"--cmd {opts['cmd']!r} cannot run under the attestation "
                   "launcher: use `uv run train.py`, `python3 train.py` or `uv run python "
                   "train.py` (VAR=value words before it are fine)")
    return True, dict(opts, cmd=cmd)


def run(opts: dict) -> tuple[int, dict]:
    repo, head = open_repo(opts["repo"])
    lock = take_lock(repo)
    try:
        return _run_locked(repo, head, opts)
    finally:
        os.close(lock)


UNREADABLE = object()


def read_bytes(path: str):
    """The file's bytes; None when it does not exist; UNREADABLE when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        return UNREADABLE


def restore_ledger(repo: str, path: str, before: bytes | None, after: bytes | None) -> str:
    """Put results.tsv back as it was before the run; the changed copy is kept aside.

    Returns the kept copy's path (relative to the repo). Runs under the ledger's flock, so
    a concurrent appender never interleaves with the restore.
    """
    aside = os.path.join(session.session_dir(repo),
                         f"results.changed-during-run.{time.strftime('%Y%m%dT%H%M%S')}.tsv")
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    with open(aside, "wb") as handle:
        handle.write(after or b"")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, before or b"")
        os.fsync(fd)
    finally:
        os.close(fd)
    return os.path.relpath(aside, repo)


def _run_locked(repo: str, head: str, opts: dict) -> tuple[int, dict]:
    check_git_state(repo)
    ref = current_ref(repo)
    attested, run_opts = attested_command(session.load(repo), opts)  # before any freeze
    frozen = load_session(repo, opts)
    higher = bool(frozen.get("higher_is_better"))
    ledger_path = os.path.join(repo, LEDGER)
    track = ledger.track_rows(ledger.read_ledger(ledger_path), frozen.get("ledger_start", 0))
    short = head[:ledger.SHORT]
    if not opts["worker"]:  # a parallel worker's results.tsv is a scratch copy of the main one
        check_seal(repo, ledger_path, frozen)
    check_ledger(repo, ledger_path, frozen)
    previous = judged_row(track, head)
    if previous is not None and not opts["rerun"]:
        left = ""
        earlier = track[:track.index(previous)]
        if previous["status"] != "keep" and any(r["status"] == "keep" for r in earlier) \
                and not any(r["status"] == "keep" and judged_row([r], head) for r in track):
            left = (f"; it was judged {previous['status']} but not reverted: "
                    "revert it with git reset --keep HEAD~1")
        raise Stop(EXIT_DONE, f"HEAD {short} is already judged in this track "
                   f"({previous['status']}, results.tsv line {previous['line']}){left}"
                   f"{'' if left else '; pass --rerun to run it again'}")
    kept = ledger.standing_best(track, session.on_branch(repo, head), higher)
    last_kept = next((r for r in reversed(track) if r["status"] == "keep"), None)
    baseline = kept is None
    already_kept = any(r["status"] == "keep" and judged_row([r], head) for r in track)
    desc = opts["desc"] if opts["desc"] is not None else git(repo, "log", "-1", "--format=%s")
    desc = ledger.flatten(desc) or "(no description)"
    repeat = opts["rerun"] and previous is not None  # a repeat measurement, not an idea
    if repeat and "repeat" not in desc.lower():
        desc = f"{desc} [repeat of {short}: not an idea]"

    base = tamper_base(repo, head, last_kept, frozen)
    refused = tamper.check(repo, base, head) if base else []
    seed_change = seed_only_change(repo, base, head, baseline)

    if opts["sandbox"] and not refused:
        works, why = sandbox.probe()
        if not works:
            raise Stop(EXIT_ERROR, f"--sandbox is not available here: {why}")
    log_path = new_log(repo, short)
    env = dict(os.environ, AUTORESEARCH_WORKER=str(opts["worker"]))
    env["PATH"] = env.pop("AR_CALLER_PATH", None) or env.get("PATH", os.defpath)
    if uvenv.uses_uv(command_argv(opts)[2]):  # uv found as every script finds it
        env["PATH"], uv_note = uvenv.path_with_uv(env["PATH"])
        if uv_note:
            log(uv_note)
    exit_code, timed_out, seconds, guard = None, False, 0.0, {}
    channel = None
    if refused:
        with open(log_path, "a", encoding="utf-8") as out:
            out.write("run-experiment.sh: refused by the tamper lint, nothing was run:\n")
            out.writelines(f"  {line}\n" for line in refused)
        log("refused by the tamper lint: " + "; ".join(refused))
    else:
        ledger_before = read_bytes(ledger_path)
        if not attested:
            log(PRINTED_WARNING)
        try:
            checkout = isolate.prepare(repo, head, short)
        except isolate.IsolationError as exc:
            raise Stop(EXIT_ERROR, str(exc))
        tag = procs.new_tag()
        run_env = dict(isolate.environment(repo, checkout, env), **{procs.TAG_ENV: tag})
        if attested:  # a launcher's node (srun) reads the repository's disk
            channel = attest.open_channel(os.path.join(session.session_dir(repo), "attest")
                                          if opts["launcher"].strip() else None)
            run_env = attest.run_env(run_env, channel,
                                     os.path.join(checkout["tree"], "prepare.py"),
                                     frozen.get("files", {}).get("prepare.py"),
                                     frozen.get("validation", {}))
        guard = {"tag": tag, "cgroup": procs.make_cgroup(tag),
                 "max_log": int(opts["max_log_mb"] * (1 << 20))}
        if opts["sandbox"]:  # bwrap brings its own pid namespace
            run_env.update(sandbox.scratch_env(checkout["root"]))
            guard["pidns"] = sandbox.prefix(checkout["root"], checkout["tree"],
                                            (channel["dir"],) if channel else ())
        else:
            guard["pidns"] = procs.pidns_prefix()
        _catch_signals()
        try:
            exit_code, timed_out, seconds = run_command(
                checkout["tree"], command_argv(run_opts), log_path, opts["timeout"],
                opts["grace"], run_env, guard)
        except Interrupted:
            if channel:
                attest.close_channel(channel)
            finish_log(repo, log_path)
            isolate.remove(checkout)
            raise Stop(EXIT_INT, "interrupted: the run was stopped; no row written, git untouched")
        _ignore_signals()
        try:
            left = isolate.audit(repo, checkout)
        finally:
            isolate.remove(checkout)
    _ignore_signals()
    finish_log(repo, log_path)
    if not refused:
        stop_on_environment_failure(log_path, exit_code, timed_out, repo)

    # -- judge ----------------------------------------------------------------
    if not refused:
        ledger_after = read_bytes(ledger_path)
        unreadable = UNREADABLE in (ledger_before, ledger_after)  # the append says why
        if not unreadable and ledger_after != ledger_before:
            aside = restore_ledger(repo, ledger_path, ledger_before, ledger_after)
            refused = [f"{LEDGER} changed while the run was going (the ledger is the "
                       f"scripts' alone); restored, the changed copy kept as {aside}"]
            log("refused: " + refused[0])
        if left:
            refused.append("; ".join(left))
            log("refused: " + refused[-1])
        if frozen.get("_frozen_now") and session.adopt_new_venv(repo, frozen):
            log("recorded the environment this first run created "
                f"({frozen['environment']['dir']})")
        harmed = session.run_changes(repo, frozen)
        if harmed:  # later runs refuse (exit 3) until it is restored
            refused.append("the run changed the frozen harness: " + "; ".join(harmed))
            log("refused: " + refused[-1])
    if refused:
        if channel:
            attest.close_channel(channel)
        facts = {"value": None, "memory_gb": None, "metrics": {}, "crash_class": "tamper",
                 "hint": TAMPER_HINT}
        desc = f"{desc} [refused: {'; '.join(refused)}]"
    elif guard.get("flood"):
        facts = {"value": None, "memory_gb": None, "metrics": {}, "crash_class": "log-flood",
                 "hint": FLOOD_HINT}
    else:
        facts = runlog.summarize(log_path, opts["metric"], exit_code, timed_out)
        baseline_run = baseline or judged_row(track[:1], head) is not None
        tolerance = opts["budget_tolerance"]
        facts, why = (attest.judge_run(repo, facts, channel, frozen, opts["metric"], tolerance,
                                       baseline_run)
                      if channel else attest.judge_printed(facts, frozen, tolerance))
        if why:
            desc = f"{desc} [{facts['crash_class']}: {why}]"
            log(f"{facts['crash_class']}: {why}")
    too_long = facts.get("crash_class") == "over-budget"
    status = judge(facts["value"], kept["val_bpb"] if kept else None, baseline, higher)
    best = kept["val_bpb"] if kept else None
    value = facts["value"]
    delta = value - best if value is not None and best is not None else None
    if seed_change and status != "crash":  # a noise sample, not an idea: never kept
        status, desc = "discard", f"{desc} {SEED_NOTE}"
        log(f"seed-only change: logged as a noise sample (value - best = {delta:+.6f}), never kept")

    row = ledger.format_row(head, value, facts["memory_gb"], status, desc)
    try:
        row = ledger.format_row(head, value, facts["memory_gb"], status, desc,
                                ledger.read_header(ledger_path))
        ledger.append_row(ledger_path, row)
        if not opts["worker"] and not frozen.get("ledger_sealed") \
                and ledger.read_seal(ledger_path) is not None:
            session.update(repo, ledger_sealed=True)  # from now on a missing seal is a change
    except OSError as exc:
        raise Stop(EXIT_ERROR, f"could not append to {LEDGER} ({exc.strerror or exc}): the run "
                   f"was judged {status} (value {value}); nothing reverted, HEAD is still "
                   f"{short}; the row was: {row}")

    if repeat:
        say_if_the_bar_moved(ledger_path, frozen, kept, repo, head, higher)
    should_revert = status != "keep" and not baseline and not already_kept
    why_not = revert(repo, head, ref) if should_revert else None
    reverted = should_revert and why_not is None
    rel_log = os.path.relpath(log_path, repo)
    result = {
        "status": status, "commit": short, "metric": opts["metric"],
        "value": None if value is None else round(value, 6),
        "memory_gb": None if facts["memory_gb"] is None else round(facts["memory_gb"], 1),
        "best": best, "delta": None if delta is None else round(delta, 6),
        "crash_class": facts["crash_class"], "hint": facts["hint"],
        "seconds": round(seconds, 1), "log": rel_log, "description": desc,
        "reverted": reverted,
    }
    record = dict(result, commit=head, short=short, time=_now(), worker=opts["worker"],
                  baseline=baseline, over_budget=too_long, exit_code=exit_code,
                  timed_out=timed_out, tamper=refused, metrics=facts["metrics"],
                  cmd=command_argv(run_opts)[2], attest=facts.get("attest"),
                  metric_source="attested" if attested else "printed")
    if seed_change:
        record.update(seed_only=True, noise_sample=None if delta is None else round(delta, 6))
    proposer_usage = usage.from_env(os.environ)  # what the loop's proposal of HEAD cost
    if proposer_usage:
        record["proposer_usage"] = proposer_usage
    try:
        append_jsonl(os.path.join(session.session_dir(repo), RUNS), record)
    except OSError as exc:  # the sidecar may be missing; results.tsv has the row
        log(f"could not append to .autoresearch/{RUNS} ({exc.strerror or exc})")
    if why_not:
        if resolve(repo, "HEAD") != head:  # a commit on top: resetting HEAD~1 would drop it
            advice = f"take {short} out yourself (git revert {short})"
        elif ref and current_ref(repo) != ref:
            advice = (f"revert {short} yourself on {ref.removeprefix('refs/heads/')} "
                      "(git reset --keep HEAD~1 there)")
        else:
            advice = f"revert {short} yourself (git reset --keep HEAD~1)"
        log(f"judged {status} but not reverted: {why_not}; {advice}")
        return EXIT_UNSAFE, result
    return EXIT_OK, result


def say_if_the_bar_moved(ledger_path: str, frozen: dict, kept: dict | None, repo: str,
                         head: str, higher: bool) -> None:
    """A repeat changes the mean a kept commit is valued by (arcore.ledger.standing_best):
    never silently."""
    track = ledger.track_rows(ledger.read_ledger(ledger_path), frozen.get("ledger_start", 0))
    after = ledger.standing_best(track, session.on_branch(repo, head), higher)
    if not kept or not after:
        return
    if after["commit"] != kept["commit"] or round(after["val_bpb"], 6) != round(kept["val_bpb"], 6):
        log(f"the bar moved: the standing best was {kept['commit']} at {kept['val_bpb']:.6f}, now "
            f"{after['commit']} at {after['val_bpb']:.6f} (the mean of its {after['runs']} runs)")


SEED_NOTE = "[seed-only change: a noise sample, never kept]"


def seed_only_change(repo: str, base: str | None, head: str, baseline: bool) -> bool:
    """Whether HEAD differs from the track's last kept commit only in a random seed
    (arcore.seedonly); never for a baseline."""
    if baseline or not base:
        return False
    return seedonly.seed_only(git(repo, "diff", "-U0", base, head, "--", check=False))


def stop_on_environment_failure(log_path: str, exit_code, timed_out: bool, repo: str) -> None:
    """A run that failed before train.py started (arcore.uvenv.environment_failure) is no
    verdict on the idea: no row, nothing reverted, exit 1 with the fix."""
    found = uvenv.environment_failure(uvenv.read_head(log_path), exit_code, timed_out)
    if found:
        raise Stop(EXIT_ERROR, f"the run failed before train.py started ({found['what']}): "
                   f"an environment failure, not a verdict on the idea; no row written, nothing "
                   f"reverted (log: {os.path.relpath(log_path, repo)}); fix: {found['fix']}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(result: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(_clean(result), ensure_ascii=False)
    lines = []
    for key in KEYS:
        value = result.get(key)
        if isinstance(value, bool):
            value = "yes" if value else "no"
        lines.append(f"{key}: {'' if value is None else value}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "run":
        print("usage: python3 -m arcore experiment run [run-experiment.sh options]",
              file=sys.stderr)
        return EXIT_USAGE
    _catch_signals()
    try:
        opts = parse_args(argv[1:])
        code, result = run(opts)
    except Stop as stop:
        log(str(stop))
        return stop.code
    except Interrupted:
        log("interrupted before the run started; nothing written")
        return EXIT_INT
    print(render(result, opts["json"]), flush=True)
    return code
