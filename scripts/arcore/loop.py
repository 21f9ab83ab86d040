"""run-loop.sh's logic: the bounded, resumable overnight loop on top of run-experiment.sh.

One iteration: get a candidate (a proposer command leaves one commit, or the next patch of a
queue is applied; both in a disposable clone, arcore.proposals), check it changes only
train.py, put it on the branch, run it through run-experiment.sh (the judge: keep, discard or
crash, one ledger row, reverts what it rejects), print a status line. A bad candidate is a
``crash`` row; nothing of it ever reached the user's tree. With ``--ahead K`` the next
proposals are made while a run goes (arcore.lane, arcore.ahead). The states and transitions
are written down in references/architecture.md §6.

Resume: before every step the loop writes its phase, the base (last kept) commit and the
candidate commit to ``.autoresearch/loop.json`` (atomically). A restart reads it and settles
the step that was cut short, by these rules:

* ``proposing`` / ``applying``: the proposer (or ``git am``) never finished; its clone is
  removed; no row; the loop proposes again (a queue patch is re-applied).
* ``taking``: the candidate was being put on the branch: if HEAD is it, it runs.
* ``running``: the candidate's row (a row after ``rows_before`` with its short hash) decides.
  A row means the experiment finished: its verdict stands (a discard/crash still at HEAD is
  reverted), it is never run again. No row: the candidate is re-run when HEAD is still the
  candidate; otherwise (HEAD moved) it is abandoned.
* ``rejecting``: the restore is redone (idempotent) and the crash row is appended unless the
  ledger already has it.
* ``confirming``: confirmation re-runs already in the ledger count, the missing ones run.

A stale run of a SIGKILLed loop (run-experiment.sh, train.py, the proposer) is found by the
token the loop puts in its children's environment (``AUTORESEARCH_LOOP_TOKEN``) and its
recorded process group, and is killed before anything else.

Git is only ever reset when HEAD is exactly the commit the journal expects, so a user's own
commit on top is never lost; every commit the loop moves away from stays reachable under
``refs/autoresearch/``.

Noise-aware acceptance (options): ``--baseline-repeats R`` re-runs the baseline with
``run-experiment.sh --rerun`` (each re-run is a row, judged against the best like any run, never
reverted) and stores the sample std of the R values as ``noise_floor`` in session.json.
``--confirm K``: a keep whose gain over the previous best is within the floor is re-run K times
(rows too); its mean must still beat the previous best, else the loop reverts it and appends a
``discard`` row (value: the mean, "not confirmed") for it. The value to beat is the judge's
standing best (``ledger.standing_best``): only kept commits still on the branch count, each by
the mean of all its runs, so a withdrawn keep or the luckiest baseline repeat never sets the bar.

CLI (run-loop.sh calls it)::

    python3 -m arcore loop (--propose CMD | --queue DIR) [options]   # see run-loop.sh --help
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from arcore import ahead as ahead_mod
from arcore import experiment, ledger, procs, proposals, repeats, session, usage
from arcore.lane import SUFFIX as LANE_SUFFIX
from arcore.lane import Lane
from arcore.gitops import (  # noqa: F401 (re-exported: arcore.parallel and tests use them)
    DISCARDED, EDITABLE, KEEP_REMOVED_MAX, REJECTED, SAFE, UNJUDGED, WORKTREE, LoopError,
    apply_patch, changed_files, commits_between, current_branch, default_branch, git, git_ok,
    head, is_ancestor, keep_reachable, list_patches, log, next_patch, remove_new_files, restore,
    revert_candidate,
    save_worktree, short, subject, tracked_changes, untracked, validate_candidate)

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

NAME = "run-loop.sh"
STATE_DIR = ".autoresearch"
JOURNAL = f"{STATE_DIR}/loop.json"
LOCK = f"{STATE_DIR}/loop.lock"
CONTEXT = f"{STATE_DIR}/proposer-context.md"
PROPOSER_LOG = f"{STATE_DIR}/proposer.log"
LEDGER = "results.tsv"


TOKEN_ENV = "AUTORESEARCH_LOOP_TOKEN"
PAUSE_ENV = "AUTORESEARCH_LOOP_PAUSE"       # test hook: PHASE or PHASE:N
HOOK_DIR_ENV = "AUTORESEARCH_LOOP_HOOK_DIR"  # test hook: where paused-PHASE / resume live
RUN_EXPERIMENT_ENV = "AUTORESEARCH_RUN_EXPERIMENT"

OK, FAILED, USAGE, HARNESS, UNSAFE, NOTHING, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130

PACKAGE = Path(__file__).resolve().parent.parent.parent
RUN_EXPERIMENT = PACKAGE / "scripts" / "run-experiment.sh"
PROMPT_TEMPLATE = PACKAGE / "templates" / "proposer-prompt.md"


# ---------------------------------------------------------------------------
# Branch rules
# ---------------------------------------------------------------------------


def top_problem(repo: str) -> str | None:
    """A directory below the work tree's top (the session files would land there)."""
    top = git(repo, "rev-parse", "--show-toplevel", check=False) \
        if git_ok(repo, "rev-parse", "--show-toplevel") else ""
    if top and os.path.realpath(top) != os.path.realpath(repo):
        return f"--repo must be the top of the work tree ({top}); run from there"
    return None


def branch_problem(repo: str) -> str | None:
    """Why the loop may not run here (None when it may): autoresearch/<tag>, clean tree."""
    if not git_ok(repo, "rev-parse", "--git-dir"):
        return f"{repo} is not a git repository"
    if head(repo) is None:
        return "the repository has no commit yet; commit train.py first"
    branch = current_branch(repo)
    if branch is None:
        return "HEAD is detached; check out a branch autoresearch/<tag> first"
    if branch == default_branch(repo):
        return (f"refusing to run on the default branch {branch!r}; "
                "create one first: git checkout -b autoresearch/<tag>")
    if not branch.startswith("autoresearch/") or branch == "autoresearch/":
        return f"branch {branch!r} is not autoresearch/<tag>; git checkout -b autoresearch/<tag>"
    return None


def dirty_problem(repo: str) -> str | None:
    changed = tracked_changes(repo)
    if changed:
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        return f"the tree has uncommitted changes to tracked files ({shown}); commit them first"
    return None


# ---------------------------------------------------------------------------
# The journal: .autoresearch/loop.json
# ---------------------------------------------------------------------------


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
# Ledger facts: the track, streaks, the best
# ---------------------------------------------------------------------------


def read_session(repo: str) -> dict:
    try:
        data = session.load(repo)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def track_rows(repo: str) -> list[dict]:
    """The rows of the current comparison track ([] before the first freeze)."""
    sess = read_session(repo)
    start = sess.get("ledger_start")
    if not isinstance(start, int) or isinstance(start, bool):
        return []
    return ledger.track_rows(ledger.read_ledger(str(Path(repo) / LEDGER)), start)


def row_count(repo: str) -> int:
    return len(ledger.read_ledger(str(Path(repo) / LEDGER)))


def rows_after(repo: str, start: int) -> list[dict]:
    return ledger.read_ledger(str(Path(repo) / LEDGER))[start:]


def row_for(rows: list[dict], commit: str | None) -> dict | None:
    """The last row naming ``commit`` (by its short hash)."""
    if not commit:
        return None
    for row in reversed(rows):
        if row["commit"] and commit.startswith(row["commit"]):
            return row
    return None


def trailing(rows: list[dict], statuses: tuple[str, ...]) -> int:
    """How many rows at the end have a status in ``statuses``."""
    count = 0
    for row in reversed(rows):
        if row["status"] not in statuses:
            break
        count += 1
    return count


def best_value(rows: list[dict], higher_is_better: bool = False,
               repo: str | None = None) -> float | None:
    """The value to beat: the judge's standing best (see ledger.standing_best)."""
    test = session.on_branch(repo) if repo else None
    best = ledger.standing_best(rows, test, higher_is_better)
    return None if best is None else best["val_bpb"]


def noise_floor(values: list[float]) -> float | None:
    """The sample standard deviation of repeated runs (None below two runs)."""
    return statistics.stdev(values) if len(values) >= 2 else None


def beats(value: float | None, best: float | None, higher_is_better: bool) -> bool:
    if value is None:
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best


# ---------------------------------------------------------------------------
# The proposer's context (env vars + a rendered prompt file)
# ---------------------------------------------------------------------------


def render_prompt(template: str, facts: dict) -> str:
    """Replace ``{{name}}`` placeholders by ``facts[name]`` (unknown names become '')."""
    out = template
    for key, value in facts.items():
        out = out.replace("{{" + key + "}}", str(value))
    while "{{" in out and "}}" in out.split("{{", 1)[1]:
        before, rest = out.split("{{", 1)
        out = before + rest.split("}}", 1)[1]
    return out


TRIED_LIMIT = 6000  # characters of the "what has been tried" digest in the prompt


def tried_digest(rows: list[dict], limit: int = TRIED_LIMIT) -> str:
    """Every experiment of the track, one line each (status, value, description), bounded to
    ``limit`` characters: the keeps always, then the newest others; what does not fit is
    counted. Repeated descriptions are shown once with their count."""
    if not rows:
        return "(nothing yet)"
    seen: dict[str, list] = {}
    for i, r in enumerate(rows):
        desc = ledger.flatten(r["description"])[:200]
        key = f"{r['status']}\t{desc}"
        if key in seen:
            seen[key][1] += 1
            seen[key][0] = i
        else:
            seen[key] = [i, 1, r]
    entries = sorted(seen.values(), key=lambda e: e[0])

    def line(e) -> str:
        r, times = e[2], e[1]
        value = "-" if r["status"] == "crash" else f"{r['val_bpb'] or 0:.6f}"
        return f"{r['status']}\t{value}\t{ledger.flatten(r['description'])[:200]}" + \
            (f" (x{times})" if times > 1 else "")

    chosen, size = set(), 0
    order = [e for e in entries if e[2]["status"] == "keep"] + \
        [e for e in reversed(entries) if e[2]["status"] != "keep"]
    for e in order:
        text = line(e)
        if size + len(text) + 1 > limit:
            continue
        chosen.add(id(e))
        size += len(text) + 1
    shown = [line(e) for e in entries if id(e) in chosen]
    left = len(entries) - len(shown)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("keep", "discard", "crash")}
    head_line = (f"{len(rows)} experiments in this track: {counts['keep']} keep, "
                 f"{counts['discard']} discard, {counts['crash']} crash")
    tail = f"\n({left} older ones not shown)" if left else ""
    return head_line + "\n" + "\n".join(shown) + tail


def context_facts(repo: str, rows: list[dict], base: str, iteration: int, plateau_after: int,
                  metric: str, higher_is_better: bool, recent: int = 10) -> dict:
    best = best_value(rows, higher_is_better, repo)
    failures = trailing(rows, ("discard", "crash"))
    table = "\n".join("\t".join([r["commit"], f"{r['val_bpb'] or 0:.6f}", r["status"],
                                 ledger.flatten(r["description"])]) for r in rows[-recent:])
    plateau = ""
    if plateau_after and failures >= plateau_after:
        tried = "\n".join(f"- {ledger.flatten(r['description'])} ({r['status']})"
                          for r in rows[-failures:][-recent:])
        plateau = (f"## Plateau: the last {failures} experiments did not improve\n\n"
                   f"What was tried since the last keep:\n{tried}\n\n"
                   "Change direction: do not make another small variation of these. Try a "
                   "structurally different idea (architecture, optimizer, schedule, batch "
                   "size, model size), combine earlier near-misses, or simplify.\n")
    return {
        "program": "program.md" if (Path(repo) / "program.md").exists() else "(no program.md)",
        "metric": metric,
        "direction": "higher" if higher_is_better else "lower",
        "best": "none yet" if best is None else f"{best:.6f}",
        "base": short(base),
        "iteration": iteration,
        "recent": table or "(no rows yet)",
        "tried": tried_digest(rows),
        "plateau": plateau,
        "failures": failures,
        "editable": ", ".join(EDITABLE),
    }


# ---------------------------------------------------------------------------
# Status line
# ---------------------------------------------------------------------------


def clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def eta(done: int, elapsed: float, max_n: int | None, deadline_left: float | None,
        queue_left: int | None = None) -> float | None:
    """Seconds left: the smaller of what the bounds allow; None when unbounded or unknown."""
    options = []
    left = [n for n in (None if max_n is None else max_n - done, queue_left) if n is not None]
    if left and done:
        options.append(elapsed / done * max(0, min(left)))
    if deadline_left is not None:
        options.append(max(0.0, deadline_left))
    return min(options) if options else None


def status_line(done: int, max_n: int | None, verdict: str, value: float | None,
                best: float | None, elapsed: float, eta_s: float | None) -> str:
    total = "?" if max_n is None else str(max_n)
    shown = "" if value is None else f" {value:.6f}"
    best_s = "-" if best is None else f"{best:.6f}"
    return (f"[{done}/{total}] {verdict}{shown} | best {best_s} | "
            f"elapsed {clock(elapsed)} | ETA {clock(eta_s)}")


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
    """Processes whose environment carries ``AUTORESEARCH_LOOP_TOKEN=token`` (Linux /proc)."""
    if not token or not os.path.isdir("/proc"):
        return []
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
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


def kill_stale(state: dict, grace: float) -> list[int]:
    """Stop whatever a dead loop left running: SIGTERM to its recorded child (run-experiment.sh
    then kills its run's group and writes no row), then SIGKILL to every tagged process."""
    child = state.get("child") or {}
    token = state.get("token") or ""
    pids = set(tagged_pids(token))
    pid, pgid = child.get("pid"), child.get("pgid")
    if isinstance(pid, int) and pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        wait_gone([pid], grace + 5)
    if isinstance(pgid, int) and (pgid in pids or not token):
        signal_group(pgid, signal.SIGKILL)
    pids = set(tagged_pids(token)) | (set(tagged_pids(token + LANE_SUFFIX)) if token else set())
    for other in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(other, signal.SIGKILL)
    wait_gone(list(pids), 5)
    return sorted(pids)


# ---------------------------------------------------------------------------
# The judge's command line (the one place both engines build it)
# ---------------------------------------------------------------------------


def judge_command(opts: argparse.Namespace, repo: str, desc: str, rerun: bool = False,
                  worker: str | None = None, launcher: str | None = None,
                  env: dict | None = None) -> tuple[list[str], dict]:
    """run-experiment.sh's argv and environment for one run of HEAD in ``repo``: the loop's
    pass-through options, ``--worker``/``--launcher`` for a slot, ``--rerun``. Extra options
    or environment for every run go here."""
    script = os.environ.get(RUN_EXPERIMENT_ENV) or str(RUN_EXPERIMENT)
    argv = [script] if os.access(script, os.X_OK) else ["bash", script]
    argv += ["--repo", repo, "--json"]
    if worker:
        argv += ["--worker", worker]
    argv += ["--desc", desc]
    for flag, value in (("--cmd", opts.cmd), ("--launcher", launcher or opts.launcher),
                        ("--timeout", opts.timeout), ("--grace", opts.grace),
                        ("--metric", opts.metric)):
        if value is not None:
            argv += [flag, str(value)]
    if opts.higher_is_better:
        argv.append("--higher-is-better")
    if rerun:
        argv.append("--rerun")
    return argv, {**os.environ, **(env or {})}


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


@dataclass
class Loop:
    """One loop's options, the journal it keeps and the child it runs."""

    opts: argparse.Namespace
    repo: str
    branch: str = ""
    state: dict = field(default_factory=dict)
    child: subprocess.Popen | None = None
    stop: int = 0                      # the signal that asked us to stop (0: none)
    last_verdict: str = "-"
    last_value: float | None = None
    ahead: ahead_mod.Ahead | None = None  # --ahead K >= 1 with --propose

    # -- journal ---------------------------------------------------------------

    def save(self) -> None:
        save_journal(self.repo, self.state)

    def dirty(self) -> str | None:
        return dirty_problem(self.repo)

    def stop_unsafe(self, message: str) -> None:
        self.idle(counted=False)
        raise LoopError(UNSAFE, message)

    def phase(self, name: str, **facts) -> None:
        """Record the step about to happen (and its facts) before doing it."""
        self.state.update(facts)
        self.state["phase"] = name
        save_journal(self.repo, self.state)
        self._hook(name)

    def idle(self, counted: bool = True, **facts) -> None:
        """The step is over: count it (and its queue patch as done), clear its facts."""
        if counted and self.state.get("kind") not in ("baseline", "rerun"):
            self.state["done"] = int(self.state.get("done", 0)) + 1
        patch = self.state.get("patch")
        if counted and patch:
            done = self.queue_done()
            if patch not in done:
                done.append(patch)
        for key in ("candidate", "child", "patch", "reject", "untracked_before", "kind",
                    "confirm", "desc", "ledger_sha", "clone", "proposer_usage"):
            self.state.pop(key, None)
        self.state.update(facts)
        self.state["phase"] = "idle"
        save_journal(self.repo, self.state)

    def _hook(self, name: str) -> None:
        """Test hook: pause at a phase until DIR/resume exists or a stop signal arrives."""
        want = os.environ.get(PAUSE_ENV, "")
        where = os.environ.get(HOOK_DIR_ENV, "")
        if not want or not where:
            return
        phase_name, _, number = want.partition(":")
        if phase_name != name or (number and int(number) != int(self.state.get("done", 0)) + 1):
            return
        Path(where, f"paused-{name}").write_text(str(os.getpid()), encoding="utf-8")
        while not self.stop and not Path(where, "resume").exists():
            time.sleep(0.02)

    # -- signals ---------------------------------------------------------------

    def on_signal(self, signum: int, _frame) -> None:
        first = not self.stop
        self.stop = self.stop or signum
        if self.child is not None:
            self.forward(self.child, signum, first)
        if self.ahead is not None:
            self.ahead.lane.signal(first)

    def forward(self, child: subprocess.Popen, signum: int, first: bool) -> None:
        """Pass a stop on: the judge gets the signal itself (it kills its run's group and
        writes no row), the proposer's group gets SIGTERM; a second signal: SIGKILL."""
        if child.poll() is not None:
            return
        if getattr(child, "kind", "") == "proposer":
            signal_group(child.pid, signal.SIGTERM if first else signal.SIGKILL)
        elif first:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)
        else:  # a second signal: stop waiting for a graceful end
            signal_group(child.pid, signal.SIGKILL)
            for pid in tagged_pids(self.state.get("token", "")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def check_stop(self) -> None:
        if self.stop:
            raise LoopError(INTERRUPTED, f"stopped by {signal.Signals(self.stop).name}")

    # -- children --------------------------------------------------------------

    def spawn(self, argv: list[str], kind: str, env: dict, stdout, stderr,
              cwd: str | None = None) -> subprocess.Popen:
        env = {**env, TOKEN_ENV: self.state["token"]}
        proc = subprocess.Popen(argv, cwd=cwd or self.repo, env=env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, start_new_session=True,
                                text=True)
        proc.kind = kind  # type: ignore[attr-defined]
        self.child = proc
        self.state["child"] = {"pid": proc.pid, "pgid": proc.pid, "kind": kind}
        save_journal(self.repo, self.state)
        if self.stop:  # a signal that arrived between the phase write and the spawn
            self.forward(proc, self.stop, True)
        return proc

    def wait(self, proc: subprocess.Popen, timeout: float | None) -> tuple[int, bool]:
        """Wait for the proposer; past ``timeout`` (or once a stop signal came) its group gets
        SIGTERM, then SIGKILL 5 s later. Then every process it left behind is killed."""
        code, timed_out = procs.wait_group(proc, timeout, lambda: bool(self.stop))
        self.child = None
        self.state.pop("child", None)
        self.kill_leftovers(proc.pid)
        return code, timed_out

    def kill_leftovers(self, pgid: int) -> None:
        """Nothing of ours runs between steps: SIGKILL the child's group and anything else
        carrying our token (an agent's background job, even one that left the group)."""
        signal_group(pgid, signal.SIGKILL)
        left = tagged_pids(self.state.get("token", ""))
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(left, 5)

    # -- run-experiment.sh -----------------------------------------------------

    def run_experiment(self, desc: str, rerun: bool = False) -> tuple[int, dict]:
        """Run the judge on HEAD; returns (exit status, its JSON result or {})."""
        o = self.opts
        argv, env = judge_command(o, self.repo, desc, rerun=rerun,
                                  env=usage.as_env(self.state.pop("proposer_usage", None)))
        proc = self.spawn(argv, "experiment", env, subprocess.PIPE, None)
        out_chunks: list[str] = []
        code, give_up = None, None
        patience = float(o.grace or 10) + 20  # run-experiment.sh's own grace, and then some
        while code is None:
            try:
                out, _ = proc.communicate(timeout=0.2)
                out_chunks.append(out or "")
                code = proc.returncode
            except subprocess.TimeoutExpired:
                if self.stop and give_up is None:
                    give_up = time.monotonic() + patience
                elif give_up is not None and time.monotonic() > give_up:
                    log("run-experiment.sh did not stop; killing it")
                    self.kill_leftovers(proc.pid)
                    give_up = time.monotonic() + 3600
        self.child = None
        self.state.pop("child", None)
        self.kill_leftovers(proc.pid)
        text = "".join(out_chunks).strip()
        result: dict = {}
        with contextlib.suppress(ValueError):
            parsed = json.loads(text.splitlines()[-1]) if text else {}
            result = parsed if isinstance(parsed, dict) else {}
        return code, result

    # -- settling a run --------------------------------------------------------

    def settle_run(self) -> dict | None:
        """After run-experiment.sh (or on restart): the candidate's row, with git made to
        match its verdict; None when the run was not judged (no row)."""
        base, cand = self.state.get("base"), self.state.get("candidate")
        row = row_for(rows_after(self.repo, int(self.state.get("rows_before", 0))), cand)
        if row is None:
            return None
        if row["status"] != "keep" and cand and cand != base \
                and self.state.get("kind") != "rerun" \
                and current_branch(self.repo) == self.branch:  # never another branch
            revert_candidate(self.repo, base, cand, DISCARDED)
        return row

    def moved_problem(self, row: dict, cand: str | None) -> str | None:
        """Why the loop must stop after a judged run: the user switched branches, or
        committed on top of a loser during the run (None when neither happened)."""
        now = current_branch(self.repo)
        if now != self.branch:
            return (f"the branch was switched to {now or 'a detached HEAD'} during the run; "
                    f"the loop stops and resets nothing ({short(cand)} was judged "
                    f"{row['status']}; {self.branch} still has it)")
        tip = head(self.repo)
        if row["status"] != "keep" and cand and tip != cand \
                and self.state.get("kind") not in ("rerun", "baseline") \
                and is_ancestor(self.repo, cand, tip):
            return (f"{short(cand)} was judged {row['status']} but commits made during the run "
                    f"sit on top of it (HEAD {short(tip)}); take it out (git revert "
                    f"{short(cand)}) and start the loop again")
        return None

    def abandon_run(self) -> None:
        """An unjudged candidate is reverted (kept as refs/autoresearch/unjudged/<sha>)."""
        base, cand = self.state.get("base"), self.state.get("candidate")
        if cand and base and cand != base and revert_candidate(self.repo, base, cand, UNJUDGED):
            log(f"reverted the unjudged experiment {short(cand)} "
                f"(kept as {UNJUDGED}{short(cand)})")

    # -- recovery --------------------------------------------------------------

    def recover(self) -> None:
        """Settle the step a dead loop (SIGKILL, reboot) was in; see the module docstring."""
        st = self.state
        stale = kill_stale(st, float(self.opts.grace or 10))
        if stale:
            log(f"killed {len(stale)} process(es) left by the previous loop")
        proposals.sweep(self.repo)
        phase = st.get("phase", "idle")
        if phase == "idle":
            return
        base = st.get("base")
        if not base or not git_ok(self.repo, "cat-file", "-e", f"{base}^{{commit}}"):
            log(f"journal names an unknown base commit; ignoring its step ({phase})")
            self.idle(counted=False)
            return
        log(f"resuming: the previous loop stopped while {phase}")
        if phase in ("proposing", "applying"):
            if st.get("clone"):  # the proposal's clone: the user's tree was never touched
                proposals.drop(st["clone"])
            else:  # a journal of a loop that proposed in the tree itself
                restore(self.repo, self.branch, base, st.get("untracked_before"))
            self.idle(counted=False)
        elif phase == "taking":
            cand = st.get("candidate")
            if cand and head(self.repo) == cand:
                pending = {"candidate": cand, "kind": "candidate", "patch": st.get("patch"),
                           "base": base, "desc": None}
                self.idle(counted=False, pending=pending)
                log(f"the unjudged experiment {short(cand)} will run")
            else:
                self.idle(counted=False)
        elif phase == "rejecting":
            self.finish_reject()
        elif phase == "running" and st.get("kind") == "rerun" and st.get("confirm"):
            self.state["resume_confirm"] = dict(st["confirm"])
            self.idle(counted=False)
        elif phase == "withdrawing":
            c = st.get("confirm") or {}
            rows = [r for r in rows_after(self.repo, int(c.get("rows_start", 0)))
                    if r["commit"] and str(c.get("commit", "")).startswith(r["commit"])]
            rows = rows[: int(c.get("k", 0)) + 1]
            crashed = any(r["status"] == "crash" for r in rows) or not rows
            self.finish_withdraw(None if crashed else statistics.fmean(r["val_bpb"] for r in rows),
                                 len(rows))
        elif phase == "running":
            row = self.settle_run()
            if row is not None:
                self.last_verdict, self.last_value = row["status"], row["val_bpb"]
                self.idle()
            elif st.get("kind") == "baseline":
                self.idle(counted=False)  # the baseline step runs it again
            elif head(self.repo) == st.get("candidate"):
                pending = {k: st.get(k) for k in ("candidate", "kind", "desc", "patch", "base")}
                self.idle(counted=False, pending=pending)
                log(f"the unjudged experiment {short(pending['candidate'])} will run again")
            else:
                self.idle(counted=False)

    # -- rejection: restore + a crash row -------------------------------------

    def reject(self, reason: str, commit: str, in_clone: bool = False) -> None:
        self.phase("rejecting", reject={"reason": reason, "commit": commit, "clone": in_clone},
                   rows_before=row_count(self.repo))
        self.finish_reject()

    def finish_reject(self) -> None:
        st = self.state
        reject = st.get("reject") or {}
        if not reject.get("clone"):  # a candidate rejected at HEAD (already judged): restore
            restore(self.repo, self.branch, st["base"], st.get("untracked_before"),
                    rewritten=True)
        self._hook("appending")
        if row_count(self.repo) <= int(st.get("rows_before", 0)):
            desc = self.describe(reject.get("reason", "proposal rejected"))
            line = ledger.format_row(short(reject.get("commit") or st["base"]), None, None,
                                     "crash", desc, ledger.read_header(self.ledger_path))
            ledger.append_row(self.ledger_path, line)
            self._record_usage(short(reject.get("commit") or st["base"]), desc)  # usage
        self.last_verdict, self.last_value = "crash", None
        log(f"crash: {reject.get('reason', '')}")
        self.idle()

    def _record_usage(self, commit: str, desc: str) -> None:
        """usage: a rejected proposal's tokens and dollars, one runs.jsonl object."""
        record = usage.rejected_record(self.state.pop("proposer_usage", None), commit, desc,
                                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if record:
            with contextlib.suppress(OSError):
                experiment.append_jsonl(os.path.join(session.session_dir(self.repo),
                                                     experiment.RUNS), record)

    # -- helpers ---------------------------------------------------------------

    @property
    def ledger_path(self) -> str:
        return str(Path(self.repo) / LEDGER)

    def describe(self, text: str) -> str:
        prefix = (self.opts.desc or "").strip()
        return f"{prefix}: {text}" if prefix else text

    def elapsed(self) -> float:
        return time.time() - float(self.state.get("started", time.time()))

    def report(self) -> None:
        rows = track_rows(self.repo)
        o = self.opts
        deadline = self.state.get("deadline")
        left = None if deadline is None else float(deadline) - time.time()
        queue_left = None
        if o.queue:
            queue_left = sum(1 for p in list_patches(o.queue)
                             if p.name not in set(self.queue_done()))
        line = status_line(int(self.state.get("done", 0)), o.max, self.last_verdict,
                           self.last_value, best_value(rows, o.higher_is_better, self.repo),
                           self.elapsed(), eta(int(self.state.get("done", 0)), self.elapsed(),
                                               o.max, left, queue_left))
        if self.state.get("reproposed"):
            line += f" | re-proposed {self.state['reproposed']}"
        log(line)

    # -- bounds ----------------------------------------------------------------

    def bound_reached(self) -> str | None:
        o, st = self.opts, self.state
        done = int(st.get("done", 0))
        if o.max is not None and done >= o.max:
            return f"reached --max {o.max}"
        deadline = st.get("deadline")
        if deadline is not None:
            left = float(deadline) - time.time()
            per = self.elapsed() / done if done else 0.0
            if left <= 0 or (done and per > left):
                return f"reached --hours {o.hours:g}"
        crashes = trailing(rows_after(self.repo, int(st.get("ledger_rows_at_start", 0))),
                           ("crash",))
        if o.max_crashes and crashes >= o.max_crashes:
            raise LoopError(FAILED, f"stopping after {crashes} crashes in a row "
                                    "(see run.log and .autoresearch/proposer.log)")
        return None

    # -- one experiment --------------------------------------------------------

    def experiment(self, kind: str, desc: str, rerun: bool = False) -> dict | None:
        """Run HEAD through run-experiment.sh (phase 'running'); returns its row, or None when
        the candidate was rejected instead (a crash row written by the loop)."""
        cand = head(self.repo)
        self.phase("running", candidate=cand, kind=kind, desc=desc,
                   rows_before=row_count(self.repo))
        code, result = self.run_experiment(desc, rerun=rerun)
        self._hook("judging")
        row = self.settle_run()
        if row is not None:
            problem = self.moved_problem(row, cand)
            if problem:
                self.judged(row)
                raise LoopError(UNSAFE, problem)
            return row
        if self.stop or code == INTERRUPTED:
            self.abandon_run()
            self.idle(counted=False)
            raise LoopError(INTERRUPTED, "stopped; the running experiment was not judged")
        self.abandon_run()
        if code == NOTHING and kind == "candidate":
            self.reject(f"{short(cand)} was already judged in this track", cand)
            return None
        self.idle(counted=False)
        if code == HARNESS:
            raise LoopError(HARNESS, "run-experiment.sh: the harness changed since the freeze; "
                                     "nothing was run (start a new track: scripts/setup.sh --new-track)")
        if code == UNSAFE:
            raise LoopError(UNSAFE, "run-experiment.sh refused: unsafe git state")
        if code == NOTHING:
            raise LoopError(FAILED, f"run-experiment.sh says {short(cand)} was already judged")
        raise LoopError(FAILED, f"run-experiment.sh failed (exit {code}) without judging "
                                f"{short(cand)}; see its messages above")

    def judged(self, row: dict) -> None:
        self.last_verdict, self.last_value = row["status"], row["val_bpb"]
        self.idle()
        self.report()

    def queue_done(self) -> list[str]:
        """The names of this queue's patches already judged (kept across loop runs)."""
        queues = self.state.setdefault("queues", {})
        return queues.setdefault(str(self.opts.queue or ""), [])

    # -- baseline --------------------------------------------------------------

    def baseline(self) -> None:
        """An empty track (or one with no kept row) starts with HEAD unmodified."""
        rows = track_rows(self.repo)
        if any(r["status"] == "keep" for r in rows):
            self.noise_baseline(None)  # issue 13: top up to --baseline-repeats R runs
            return
        base = head(self.repo)
        self.state["base"] = base
        rerun = row_for(rows, base) is not None
        log(f"baseline: running {short(base)} unmodified")
        row = self.experiment("baseline", self.describe("baseline"), rerun=rerun)
        self.judged(row)
        self.noise_baseline(row)

    def noise_baseline(self, first: dict | None) -> None:
        """--baseline-repeats R: top the track up to R runs of its baseline (arcore.repeats,
        shared with setup.sh); their std is the noise floor."""
        if int(self.opts.baseline_repeats or 1) < 2 or (first is not None
                                                        and first["status"] != "keep"):
            return
        self.state["base"] = head(self.repo)  # a repeat is judged against HEAD, never reverted

        def run_one(desc: str) -> dict | None:
            self.check_stop()
            row = self.experiment("baseline", self.describe(desc), rerun=True)
            self.judged(row)
            return row

        repeats.top_up(self.repo, int(self.opts.baseline_repeats or 1), head(self.repo),
                       run_one, log)

    # -- candidates ------------------------------------------------------------

    def proposer_context(self, base: str, n: int, made: list[str] | None = None
                         ) -> tuple[dict, str]:
        """The facts and the rendered prompt for proposal ``n`` on ``base`` (also written to
        .autoresearch/proposer-context.md for the user to read). With --ahead, what is
        running and waiting (and ``made``: the lane's batch so far) is named at the end."""
        o, repo = self.opts, self.repo
        facts = context_facts(repo, track_rows(repo), base, n, o.plateau, o.metric or "val_bpb",
                              o.higher_is_better)
        template_path = Path(o.prompt) if o.prompt else PROMPT_TEMPLATE
        template = template_path.read_text(encoding="utf-8") if template_path.exists() else \
            "Improve {{metric}} ({{direction}} is better) by editing train.py; commit once.\n"
        text = render_prompt(template, facts)
        if self.ahead is not None:
            text += self.ahead.in_flight(made or [])
        context = Path(repo) / CONTEXT
        context.parent.mkdir(parents=True, exist_ok=True)
        context.write_text(text, encoding="utf-8")
        return facts, text

    def proposer_env(self, facts: dict, base: str, n: int) -> dict:
        """The AUTORESEARCH_* facts a proposer gets (the clone's paths are added to them)."""
        return {"AUTORESEARCH_BASE": base, "AUTORESEARCH_BEST": str(facts["best"]),
                "AUTORESEARCH_ITERATION": str(n),
                "AUTORESEARCH_PLATEAU": "1" if facts["plateau"] else "0",
                "AUTORESEARCH_METRIC": facts["metric"],
                "AUTORESEARCH_DIRECTION": facts["direction"]}

    def propose(self) -> str | None:
        """Run the proposer in a fresh clone; returns the candidate commit (now HEAD) or None
        (rejected, row written; or dropped because the branch moved meanwhile)."""
        o, repo = self.opts, self.repo
        base = head(repo)
        n = int(self.state.get("done", 0)) + 1
        facts, text = self.proposer_context(base, n)
        clone = proposals.open_clone(repo, self.branch, base, text, self.ledger_path)
        self.phase("proposing", base=base, clone=clone.path, candidate=None)
        env = {**os.environ, **proposals.env(clone), **self.proposer_env(facts, base, n)}
        if facts["plateau"]:
            log(f"plateau: {facts['failures']} experiments without a keep; "
                "asking the proposer to change direction")
        with open(Path(repo) / PROPOSER_LOG, "a", encoding="utf-8") as out:
            out.write(f"\n=== proposal {n} on {short(base)} at "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
            out.flush()
            log_offset = out.tell()  # usage: this proposal's part of proposer.log
            proc = self.spawn(["bash", "-c", o.propose], "proposer", env, out, out,
                              cwd=clone.path)
            code, timed_out = self.wait(proc, o.propose_timeout)
        self.state["proposer_usage"] = usage.read_log(str(Path(repo) / PROPOSER_LOG), log_offset)
        if self.stop:
            proposals.salvage(clone, REJECTED)
            proposals.drop(clone)
            self.idle(counted=False)
            raise LoopError(INTERRUPTED, "stopped while proposing; the proposal was dropped")
        reason, commit = proposals.collect(clone, code, timed_out, o.propose_timeout)
        return self.take(clone, reason, commit)

    def apply_next(self) -> str | None | bool:
        """Queue mode: apply the next patch in a fresh clone. False when the queue is empty,
        None when the patch was rejected (row written), else the candidate commit."""
        patch = next_patch(self.opts.queue, self.queue_done())
        if patch is None:
            return False
        base = head(self.repo)
        clone = proposals.open_clone(self.repo, self.branch, base)
        self.phase("applying", base=base, clone=clone.path, patch=patch.name, candidate=None)
        reason, commit = proposals.apply(clone, patch, apply_patch)
        return self.take(clone, reason, commit)

    def take(self, clone: proposals.Clone, reason: str | None, commit: str) -> str | None:
        """A proposal back from its clone: a rejection becomes a crash row (the user's tree is
        not touched: nothing of the proposal is in it); a good one is put on the branch
        (``git reset --keep``, only when HEAD is still its base and the tree is clean)."""
        repo, base = self.repo, clone.base
        try:
            if reason:
                if commit != base and git_ok(repo, "cat-file", "-e", f"{commit}^{{commit}}"):
                    keep_reachable(repo, REJECTED, commit)
                self.reject(reason, commit, in_clone=True)
                return None
            now = current_branch(repo)
            if now != self.branch or dirty_problem(repo):
                keep_reachable(repo, UNJUDGED, commit)
                why = (f"the branch was switched to {now or 'a detached HEAD'}" if now !=
                       self.branch else dirty_problem(repo))
                self.idle(counted=False)
                raise LoopError(UNSAFE, f"{why} while proposing; nothing was reset (the "
                                        f"proposal is kept as {UNJUDGED}{short(commit)})")
            if head(repo) != base:
                keep_reachable(repo, UNJUDGED, commit)
                log(f"the session branch moved while proposing (HEAD {short(head(repo))}, "
                    f"base {short(base)}); proposal {short(commit)} dropped (kept as "
                    f"{UNJUDGED}{short(commit)}), proposing again")
                self.idle(counted=False)
                return None
            self.phase("taking", candidate=commit)
            git(repo, "reset", "-q", "--keep", commit)
            return commit
        finally:
            proposals.forget(repo, commit)
            proposals.drop(clone)

    def candidate_round(self) -> bool:
        """One experiment. False when there is nothing left to do (an empty queue)."""
        st = self.state
        pending = st.pop("pending", None)
        if pending and head(self.repo) == pending.get("candidate"):
            commit, kind = pending["candidate"], pending.get("kind") or "candidate"
            st["base"] = pending.get("base") or commit
            if pending.get("patch"):
                st["patch"] = pending["patch"]
            desc = pending.get("desc") or self.describe(subject(self.repo, commit))
            self.run_candidate(commit, desc, kind)
            return True
        if self.opts.queue:
            got = self.apply_next()
            if got is False:
                return False
        elif self.ahead is not None:
            got = self.ahead.next_candidate()
        else:
            got = self.propose()
        self.check_stop()
        if got:
            self.run_candidate(got, self.describe(subject(self.repo, got)), "candidate")
        else:
            self.report()
        return True

    def run_candidate(self, commit: str, desc: str, kind: str) -> None:
        base = self.state.get("base")
        prev_best = best_value(track_rows(self.repo), self.opts.higher_is_better, self.repo)
        rows_start = row_count(self.repo)
        if self.ahead is not None and kind == "candidate" and base:
            self.ahead.fill(base, desc)  # the lane proposes the next ones while this runs
        try:
            row = self.experiment(kind, desc)
        finally:
            if self.ahead is not None:
                self.ahead.running = None
        if row is None:
            self.report()
            return
        if kind == "candidate" and row["status"] == "keep" \
                and self.needs_confirmation(row, prev_best):
            self.confirm({"commit": commit, "base": base, "desc": desc, "prev_best": prev_best,
                          "k": int(self.opts.confirm), "rows_start": rows_start,
                          "memory_gb": row["memory_gb"]})
            return
        self.judged(row)

    # -- noise-aware acceptance ------------------------------------------------

    def needs_confirmation(self, row: dict, prev_best: float | None) -> bool:
        """--confirm K: a keep whose gain is within the session's noise floor."""
        if not self.opts.confirm or prev_best is None or row["val_bpb"] is None:
            return False
        floor = read_session(self.repo).get("noise_floor")
        if not isinstance(floor, (int, float)) or isinstance(floor, bool) or floor <= 0:
            return False
        return abs(prev_best - row["val_bpb"]) <= float(floor)

    def confirm(self, c: dict) -> None:
        """Re-run a within-noise keep until it has K+1 rows; keep it only if the mean of its
        values still beats the previous best. Otherwise revert it and append a ``discard`` row
        (value: the mean) that withdraws the keep. Resumable: the values are its ledger rows."""
        commit = c["commit"]
        self.state["base"] = c["base"]
        while True:
            rows = [r for r in rows_after(self.repo, c["rows_start"]) if r["commit"]
                    and commit.startswith(r["commit"])]
            failed = any(r["status"] == "crash" for r in rows)
            if failed or len(rows) >= c["k"] + 1 or head(self.repo) != commit:
                break
            self.check_stop()
            self.state["confirm"] = c
            i = len(rows)
            self.experiment("rerun", f"{c['desc']} (confirm {i}/{c['k']})", rerun=True)
            self.idle(counted=False, base=c["base"])
        values = [r["val_bpb"] for r in rows]
        mean = None if failed or None in values or not values else statistics.fmean(values)
        self.state.update(base=c["base"], candidate=commit)
        if head(self.repo) == commit and mean is not None \
                and beats(mean, c["prev_best"], self.opts.higher_is_better):
            log(f"confirmed: mean {mean:.6f} over {len(values)} runs beats {c['prev_best']:.6f}")
            self.last_verdict, self.last_value = "keep", mean
            self.idle()
            self.report()
            return
        self.phase("withdrawing", confirm=c, kind="candidate", rows_before=row_count(self.repo))
        self.finish_withdraw(mean, len(values))

    def finish_withdraw(self, mean: float | None, runs: int) -> None:
        c = self.state["confirm"]
        commit = c["commit"]
        revert_candidate(self.repo, c["base"], commit, DISCARDED)
        shown = "a crash" if mean is None else f"mean {mean:.6f}"
        if row_count(self.repo) <= int(self.state.get("rows_before", 0)):
            line = ledger.format_row(short(commit), mean, c.get("memory_gb"), "discard",
                                     f"{c['desc']} (not confirmed: {shown} over {runs} runs "
                                     f"vs best {c['prev_best']:.6f})",
                                     ledger.read_header(self.ledger_path))
            ledger.append_row(self.ledger_path, line)
        log(f"not confirmed: {shown} over {runs} runs does not beat {c['prev_best']:.6f}; "
            f"reverted {short(commit)}")
        self.last_verdict, self.last_value = "discard", mean
        self.idle()
        self.report()

    # -- the whole loop --------------------------------------------------------

    def run(self) -> int:
        o = self.opts
        st = self.state
        key = args_key(o)
        resumed = st.get("status") == "running" and st.get("args") == key
        self.recover()
        problem = dirty_problem(self.repo)
        if problem:
            raise LoopError(UNSAFE, problem)
        session.ensure_excludes(self.repo)
        now = time.time()
        if not resumed:
            st.update(started=now, done=0, ledger_rows_at_start=row_count(self.repo),
                      deadline=None if o.hours is None else now + o.hours * 3600)
        st.update(status="running", args=key, pid=os.getpid(), token=uuid.uuid4().hex)
        if not resumed:
            ahead_mod.drop_waiting(self.repo, st)
        save_journal(self.repo, st)
        if o.propose and o.ahead:
            lane = Lane(self.repo, self.branch, o.propose, o.propose_timeout, st["token"],
                        str(Path(self.repo) / PROPOSER_LOG), self.ledger_path,
                        context=self.proposer_context, env_for=self.proposer_env)
            self.ahead = ahead_mod.Ahead(self, lane)
        elif st.get("waiting"):
            ahead_mod.drop_waiting(self.repo, st)
        ahead_mod.settle_orphans(self.repo, st)  # a waiting ref the journal does not list
        if resumed:
            log(f"resuming the loop: {st.get('done', 0)} experiment(s) done so far")
        confirm = st.pop("resume_confirm", None)
        if confirm and head(self.repo) == confirm.get("commit"):
            self.confirm(confirm)
        self.baseline()
        ran = 0
        while True:
            self.check_stop()
            reason = self.bound_reached()
            if reason:
                log(f"done: {reason}")
                break
            if not self.candidate_round():
                if not ran and not int(st.get("done", 0)):
                    raise LoopError(NOTHING, f"nothing to do: every patch in {o.queue} "
                                             "was already judged")
                log("done: the queue is empty")
                break
            ran += 1
        return OK


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise LoopError(USAGE, message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    return check_options(parse_options(argv))


def parse_options(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog=NAME, add_help=False)
    p.add_argument("--propose")
    p.add_argument("--queue")
    p.add_argument("--max", type=int)
    p.add_argument("--hours", type=float)
    p.add_argument("--max-crashes", type=int, default=3)
    p.add_argument("--desc", default="")
    p.add_argument("--propose-timeout", type=float, default=1800.0)
    p.add_argument("--plateau", type=int, default=5)
    p.add_argument("--prompt")
    p.add_argument("--baseline-repeats", type=int, default=1)
    p.add_argument("--confirm", type=int, default=0)
    p.add_argument("--ahead", type=int)
    p.add_argument("--repo", default=".")
    p.add_argument("--cmd")
    p.add_argument("--launcher")
    p.add_argument("--timeout")
    p.add_argument("--grace")
    p.add_argument("--metric")
    p.add_argument("--higher-is-better", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus")
    p.add_argument("--runner", default="local")
    p.add_argument("--slurm-arg", action="append", default=[], dest="slurm_args")
    return p.parse_args(argv)


def check_options(opts: argparse.Namespace) -> argparse.Namespace:
    """The single loop's rules for its options (parallel rounds check their own)."""
    if opts.propose and opts.queue:
        raise LoopError(USAGE, "give --propose CMD or --queue DIR, not both")
    if not opts.propose and not opts.queue:
        raise LoopError(USAGE, "no candidates: give --propose CMD (an agent CLI) or --queue DIR "
                               "(patches); re-running the same code is not an experiment")
    if opts.queue and not Path(opts.queue).is_dir():
        raise LoopError(USAGE, f"--queue {opts.queue}: not a directory")
    for name in ("max", "max_crashes", "plateau", "confirm"):
        value = getattr(opts, name)
        if value is not None and value < 0:
            raise LoopError(USAGE, f"--{name.replace('_', '-')} must be >= 0")
    if opts.ahead is not None and opts.ahead < 0:
        raise LoopError(USAGE, "--ahead must be >= 0")
    if opts.ahead is None or opts.queue:  # a queue's patches are ready at once
        opts.ahead = 1 if opts.propose and opts.ahead is None else 0
    if opts.baseline_repeats < 1:
        raise LoopError(USAGE, "--baseline-repeats must be >= 1")
    if opts.hours is not None and not opts.hours > 0:
        raise LoopError(USAGE, "--hours must be > 0")
    if not opts.propose_timeout > 0:
        raise LoopError(USAGE, "--propose-timeout must be > 0")
    if opts.workers < 1:
        raise LoopError(USAGE, "--workers must be >= 1")
    if opts.queue:
        opts.queue = str(Path(opts.queue).resolve())
    return opts


def wants_parallel(opts: argparse.Namespace) -> bool:
    """--workers N > 1, a runner other than local, --slurm-arg, or --gpus listing several."""
    return (opts.workers > 1 or opts.runner != "local" or bool(opts.slurm_args)
            or "," in (opts.gpus or ""))


def main(argv: list[str]) -> int:
    try:
        opts = parse_options(argv)
        if wants_parallel(opts):
            try:
                from arcore import parallel  # noqa: PLC0415
            except ImportError:
                raise LoopError(USAGE, "parallel rounds are not available (no arcore.parallel)")
            return parallel.main(argv)
        check_options(opts)
        if opts.gpus:  # one GPU: the plain loop, on that GPU
            os.environ["CUDA_VISIBLE_DEVICES"] = opts.gpus
        repo = str(Path(opts.repo).resolve())
        problem = top_problem(repo)
        if problem:
            raise LoopError(USAGE, problem)
        problem = branch_problem(repo)
        if problem:
            raise LoopError(UNSAFE, problem)
        lock = acquire_lock(repo)
        if lock is None:
            raise LoopError(UNSAFE, f"another loop is running in {repo} (lock {LOCK} is held)")
    except LoopError as exc:
        log(str(exc))
        return exc.code
    loop = Loop(opts=opts, repo=repo, branch=current_branch(repo) or "",
                state=load_journal(repo))
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN and sig == signal.SIGHUP:
            continue  # nohup: leave it ignored
        handlers[sig] = signal.signal(sig, loop.on_signal)
    code = OK
    try:
        code = loop.run()
        status = "finished"
    except LoopError as exc:
        log(str(exc))
        code = exc.code
        status = "interrupted" if code == INTERRUPTED else "failed"
    except KeyboardInterrupt:
        code, status = INTERRUPTED, "interrupted"
    except OSError as exc:  # a full disk, a read-only ledger: one line; the journal keeps the step
        where = f" ({exc.filename})" if exc.filename else ""
        log(f"could not write{where}: {exc.strerror or exc}; fix it, then restart the same "
            "command to resume")
        code, status = FAILED, "failed"
    except Exception as exc:  # noqa: BLE001 (an internal error: say so, keep the journal)
        import traceback  # noqa: PLC0415
        traceback.print_exc(file=sys.stderr)
        log(f"internal error: {exc}; restart the same command to resume")
        code, status = FAILED, "failed"
    finally:
        if loop.ahead is not None:
            loop.ahead.lane.shutdown()  # no proposer outlives the loop
            if code == OK:
                ahead_mod.drop_waiting(repo, loop.state)
        with contextlib.suppress(Exception):
            proposals.sweep(repo)  # no clone outlives the loop
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if loop.state.get("phase", "idle") != "idle":
        status = "running"  # an unsettled step: a restart must settle it
    loop.state["status"] = status
    with contextlib.suppress(OSError):
        save_journal(repo, loop.state)
    rows = track_rows(repo)
    best = best_value(rows, opts.higher_is_better, repo)
    print(f"status: {status}")
    print(f"experiments: {loop.state.get('done', 0)}")
    print(f"best: {'' if best is None else f'{best:.6f}'}")
    print(f"head: {short(head(repo))}")
    os.close(lock)  # the kernel would at exit; closing keeps an in-process caller honest
    return code
