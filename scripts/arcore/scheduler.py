"""The scheduler: the one engine behind run-loop.sh, for one slot or many, local or Slurm.

A session has *slots* (arcore.slots: 1 by default; ``--workers N``, ``--gpus LIST``, Slurm job
steps with ``--runner slurm``) and a proposal lane (arcore.lane, ``--ahead K``: proposals for
upcoming runs are made while the slots run, on the current best; ``--ahead 0`` proposes in the
foreground only when a slot is free). Candidates come from the proposer (each in a disposable
clone, arcore.proposals) or from a queue of patches. Every run is run-experiment.sh in a slot's
worktree, judged against the standing best as it was when the run started.

When a run ends (``decide``, a pure function):

* ``row``: a discard, a crash, or a run that is never applied (the baseline, a repeat, a
  confirmation): its row is appended, nothing else moves;
* ``keep``: it beat the best and its base *is* the best: its row, then the session branch is
  fast-forwarded to it (one keep at a time; the branch never moves any other way);
* ``hold``: a keep within the noise floor with ``--confirm K``: its row, then K re-runs; the
  branch moves only if their mean still beats the previous best, else a ``discard`` row
  withdraws it;
* ``park``: it beat its base while a confirmation is pending: decided again once that ends;
* ``again``: it beat its base, but another slot's keep superseded that base while it ran: it
  is not kept on a stale comparison and not thrown away: its train.py change is rebased onto
  the new best (3-way) and queued to run first (its row says so; if it no longer applies, it
  says that);
* ``moved``: the session branch moved under the scheduler (a user's commit, a switched
  branch): the row is written, nothing applied, and the scheduler stops (exit 4).

A waiting proposal whose base was superseded is rebased the same way before it runs; one
that no longer applies is re-proposed and recorded (runs.jsonl and the status line, no row).
A candidate whose train.py is identical to one already tried in the track is not run.

The journal is ``.autoresearch/loop.json`` (arcore.journal): the foreground step (``phase``:
idle, proposing, applying, rejecting, withdrawing), the job in each slot (its commit, base,
kind and, once it ended, its answer and decision), the waiting proposals, a pending
confirmation, the counters. It is written before every step; a restart with the same command
after SIGKILL or reboot settles what was cut short (``recover``): a run whose answer is in its
slot is judged (never run twice), one without is queued again when its base is still the best
(else kept as ``refs/autoresearch/unjudged/<sha>``), a row the dead loop was appending is
appended once. The states and transitions are written down in references/architecture.md §8.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from arcore import (ahead, context, experiment, gitx, journal, ledger, proposals,
                    runner, session, slots, usage)
from arcore.gitops import (DISCARDED, UNJUDGED, LoopError, current_branch, git, head,
                           keep_reachable, list_patches, log, rebase_onto, replace_onto, short,
                           tracked_changes)
from arcore.intake import PROPOSER_LOG, Intake
from arcore.lane import WAITING, Lanes, lanes, settle_live_logs
from arcore.noise import Noise

OK, FAILED, USAGE, HARNESS, UNSAFE, NOTHING, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
PAUSE_ENV = "AUTORESEARCH_LOOP_PAUSE"       # test hook: PHASE or PHASE:N
HOOK_DIR_ENV = "AUTORESEARCH_LOOP_HOOK_DIR"  # test hook: where paused-PHASE / resume live
RUN_EXPERIMENT_ENV = "AUTORESEARCH_RUN_EXPERIMENT"
RUN_EXPERIMENT = context.PACKAGE / "scripts" / "run-experiment.sh"
KEPT = "refs/autoresearch/kept/"
RERUN_KINDS = ("repeat", "confirm")
STEP_KEYS = ("clone", "reject", "withdraw", "child")


# ---------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------


def decide(job: dict, status: str | None, tip: str | None, best: str | None,
           on_branch: bool, confirming: bool) -> str:
    """What a finished run becomes (see the module doc): row, keep, park, again or moved.
    ``tip``: the session branch now; ``best``: where the scheduler last put it."""
    if job.get("kind") != "candidate":
        return "row"
    if not on_branch or tip != best:
        return "moved"
    if status != "keep":
        return "row"
    if job.get("base") != best:
        return "again"
    return "park" if confirming else "keep"


def within_noise(value: float | None, prev_best: float | None, floor: float | None) -> bool:
    """--confirm: a keep whose gain over the previous best is within the noise floor."""
    if value is None or prev_best is None or not floor or floor <= 0:
        return False
    return abs(prev_best - value) <= floor


def judge_command(opts: argparse.Namespace, repo: str, desc: str, rerun: bool = False,
                  worker: str | None = None, launcher: str | None = None,
                  env: dict | None = None) -> tuple[list[str], dict]:
    """run-experiment.sh's argv and environment for one run of HEAD in ``repo`` (the one
    place it is built): the loop's pass-through options, ``--worker``/``--launcher``,
    ``--rerun``."""
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
# The scheduler
# ---------------------------------------------------------------------------


@dataclass
class Scheduler(Intake, Noise):
    opts: argparse.Namespace
    repo: str
    branch: str
    state: dict = field(default_factory=dict)
    slots: list = field(default_factory=list)
    lane: Lanes | None = None  # the proposal lanes (--ahead K >= 1), one proposer each
    child: subprocess.Popen | None = None  # the foreground proposer
    stop: int = 0
    verdict: str = "-"
    value: float | None = None
    halt: LoopError | None = None  # why no new job starts (raised once the slots are idle)
    give_up: float | None = None
    crash_key: int | None = None  # the ledger's size when the crash streak was last read
    session_seen: bytes | None = None  # session.json as the loop last read or wrote it

    # -- journal ---------------------------------------------------------------

    @property
    def jobs(self) -> dict:
        return self.state.setdefault("slots", {})

    @property
    def waiting(self) -> list:
        return self.state.setdefault("waiting", [])

    @property
    def many(self) -> bool:
        return len(self.slots) > 1

    @property
    def venv(self) -> str:
        """The target's environment is the repository's (as frozen), whichever slot runs."""
        named = os.environ.get("UV_PROJECT_ENVIRONMENT")
        return os.path.abspath(os.path.join(self.repo, os.path.expanduser(named) if named
                                            else ".venv"))

    @property
    def ledger_path(self) -> str:
        return str(Path(self.repo) / context.LEDGER)

    def save(self) -> None:
        journal.save_journal(self.repo, self.state)

    def step(self, name: str, **facts) -> None:
        """Journal the foreground step about to happen (and its facts) before doing it."""
        self.state.update(facts)
        self.state["phase"] = name
        self.save()
        self.hook(name)

    def idle(self) -> None:
        for key in STEP_KEYS:
            self.state.pop(key, None)
        self.state["phase"] = "idle"
        self.save()

    def hook(self, name: str) -> None:
        """Test hook: pause at a phase until DIR/resume exists or a stop signal arrives."""
        want, where = os.environ.get(PAUSE_ENV, ""), os.environ.get(HOOK_DIR_ENV, "")
        if not want or not where:
            return
        phase, _, number = want.partition(":")
        if phase != name or (number and int(number) != int(self.state.get("done", 0)) + 1):
            return
        Path(where, f"paused-{name}").write_text(str(os.getpid()), encoding="utf-8")
        while not self.stop and not Path(where, "resume").exists():
            time.sleep(0.02)

    def describe(self, text: str) -> str:
        prefix = (self.opts.desc or "").strip()
        return f"{prefix}: {text}" if prefix else text

    def track(self) -> list[dict]:
        return context.track_rows(self.repo)

    def best_value(self) -> float | None:
        return context.best_value(self.track(), self.opts.higher_is_better, self.repo)

    def count(self, job_or_item: dict) -> None:
        """One experiment done (the baseline, repeats and confirmations are not counted);
        its queue patch is done too."""
        if job_or_item.get("kind", "candidate") == "candidate" and not job_or_item.get("again"):
            self.state["done"] = int(self.state.get("done", 0)) + 1
        patch = job_or_item.get("patch")
        if patch and patch not in self.queue_done():
            self.queue_done().append(patch)

    def queue_done(self) -> list[str]:
        queues = self.state.setdefault("queues", {})
        return queues.setdefault(str(self.opts.queue or ""), [])

    # -- signals ---------------------------------------------------------------

    def on_signal(self, signum: int, _frame) -> None:
        first = not self.stop
        self.stop = self.stop or signum
        if self.lane is not None:
            self.lane.signal(first)
        if self.child is not None and self.child.poll() is None:
            journal.signal_group(self.child.pid, signal.SIGTERM if first else signal.SIGKILL)
        for slot in self.slots:
            proc = slot.proc
            if proc is None or proc.poll() is not None:
                continue
            if first:  # run-experiment.sh kills its run's group and writes no row
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)
            else:
                journal.signal_group(proc.pid, signal.SIGKILL)
        if not first:
            for pid in journal.tagged_pids(self.state.get("token", "")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def check_stop(self) -> None:
        if self.stop:
            raise LoopError(INTERRUPTED, f"stopped by {signal.Signals(self.stop).name}")

    # -- starting a run -----------------------------------------------------------

    def candidates_in_flight(self) -> int:
        return sum(1 for j in self.jobs.values()
                   if j.get("kind") == "candidate" and not j.get("again"))

    def free_slot(self):
        return next((s for s in self.slots if s.id not in self.jobs), None)

    def start(self, slot, job: dict) -> bool:
        """Journal the job, then run-experiment.sh in the slot (False: the harness's files
        changed under the loop; nothing started, ``halt`` says why)."""
        if not self.harness_intact():
            return False
        slots.checkout(slot, job["commit"])
        slots.prepare_scratch(self.repo, slot)
        job.update(rows_before=context.row_count(self.repo), started=time.time(), slot=slot.id,
                   best_value=self.best_value())
        self.jobs[slot.id] = job
        self.state["candidate"] = job["commit"]
        if job.get("blob"):
            self.state["tried"] = sorted(set(self.state.get("tried", [])) | {job["blob"]})
        self.save()
        self.hook("taking")
        o = self.opts
        prefix, env = runner.launcher(o.runner, gpu=slot.gpu,
                                      session=slots.session_tag(self.branch),
                                      commit=job["commit"], timeout_s=float(o.timeout or 600),
                                      grace_s=float(o.grace or 10), extra=o.slurm_args)
        env.update(usage.as_env(job.get("usage")))
        env[journal.TOKEN_ENV] = self.run_token(slot)
        env["UV_PROJECT_ENVIRONMENT"] = self.venv  # the frozen environment, not the slot's
        argv, env = judge_command(o, slot.path, slots.tagged(slot.id, job["desc"], self.many),
                                  rerun=job["kind"] in RERUN_KINDS or bool(job.get("rerun")),
                                  worker=slot.id, launcher=o.launcher or prefix or None,
                                  env=env)
        proc = slots.start(slot, argv, env)
        job["child"] = {"pid": proc.pid, "pgid": proc.pid, "kind": "experiment"}
        self.save()
        if self.stop:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        return True

    def run_token(self, slot) -> str:
        """The token a slot's run carries (the loop's, so a restart finds it; the slot's, so
        what one run leaves can be killed while the other slots run)."""
        return f"{self.state['token']}-{slot.id}-run"

    def kill_run_leftovers(self, slot) -> None:
        """Whatever a slot's ended run left (a train.py that ignored SIGTERM after its judge
        was killed) dies with it."""
        for pid in journal.tagged_pids(self.run_token(slot)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def harness_intact(self) -> bool:
        """results.tsv as the harness last sealed it, session.json as the loop last read or
        wrote it (a proposer or a daemon that edits them while runs go is caught here, before
        a copy is judged against or a row appended)."""
        try:
            experiment.check_seal(self.repo, self.ledger_path, session.load(self.repo))
        except experiment.Stop as exc:
            self.halt = LoopError(HARNESS, str(exc))
            return False
        if self.session_seen is not None and self.session_bytes() != self.session_seen:
            self.halt = LoopError(HARNESS, ".autoresearch/session.json changed while the loop "
                                           "ran (not by the harness): check it, then start the "
                                           "loop again, or scripts/setup.sh --new-track")
            return False
        return True

    def session_bytes(self) -> bytes | None:
        try:
            return (Path(session.session_dir(self.repo)) / "session.json").read_bytes()
        except OSError:
            return None

    def saw_session(self) -> None:
        """The loop's own session.update: the new content is the one to expect."""
        self.session_seen = self.session_bytes()

    # -- a run ends -----------------------------------------------------------------

    def reap(self) -> None:
        """Judge every slot whose run has ended."""
        for slot in self.slots:
            proc = slot.proc
            if proc is None or proc.poll() is None:
                continue
            slot.proc = None
            journal.signal_group(proc.pid, signal.SIGKILL)  # nothing of the run lives on
            self.kill_run_leftovers(slot)
            job = self.jobs.get(slot.id)
            if job is None:
                continue
            job.pop("child", None)
            job["exit"] = proc.returncode
            text = slots.output(slot)
            result = slots.answer(slot, job["commit"], proc.returncode, text) \
                if proc.returncode in (OK, UNSAFE) else None
            if self.opts.runner == "slurm" and (result is None or result["status"] == "crash"):
                subprocess.run(runner.cancel_command(slots.session_tag(self.branch),
                                                     job["commit"]),
                               capture_output=True, check=False)
            if result is None:
                self.unjudged(slot.id, job)
                continue
            job["result"] = {k: v for k, v in result.items() if k != "reverted"}
            self.save()
            self.hook("judging")
            self.settle(slot.id, job)

    def unjudged(self, sid: str, job: dict) -> None:
        """A run that wrote no answer: its commit is kept as unjudged, nothing else."""
        code = job.get("exit")
        commit = job["commit"]
        if job.get("kind") == "candidate" and commit != job.get("base"):
            keep_reachable(self.repo, UNJUDGED, commit)
            log(f"reverted the unjudged experiment {short(commit)} (kept as "
                f"{UNJUDGED}{short(commit)})")
        self.state["tried"] = [b for b in self.state.get("tried", []) if b != job.get("blob")]
        del self.jobs[sid]
        self.save()
        if self.stop or code in (INTERRUPTED, None, -signal.SIGTERM, -signal.SIGKILL):
            return
        if code == NOTHING:
            self.halt = self.halt or LoopError(FAILED, f"run-experiment.sh says "
                                                       f"{short(commit)} was already judged")
        elif code == HARNESS:
            self.halt = LoopError(HARNESS, "run-experiment.sh: the harness changed since the "
                                           "freeze; nothing was run (start a new track: "
                                           "scripts/setup.sh --new-track)")
        elif code == UNSAFE:
            self.halt = LoopError(UNSAFE, "run-experiment.sh refused: unsafe git state")
        else:
            self.halt = self.halt or LoopError(
                FAILED, f"run-experiment.sh failed (exit {code}) without judging "
                        f"{short(commit)}; see its messages above")

    def settle(self, sid: str | None, job: dict) -> None:
        """Decide what the ended run means now, write its row once, move the branch."""
        result = job["result"]
        if "decision" not in job:
            tip = head(self.repo)
            on_branch = current_branch(self.repo) == self.branch
            action = decide(job, result.get("status"), tip, self.state.get("best"), on_branch,
                            bool(self.state.get("confirm")))
            if action == "park":
                self.archive_log(sid, job)
                self.state.setdefault("parked", []).append(job)
                self.jobs.pop(sid, None)
                self.save()
                log(f"{short(job['commit'])} beat its base; decided once the pending "
                    "confirmation ends")
                return
            job["decision"] = self.plan(job, action, result, tip, on_branch)
            self.save()
        self.apply(sid, job)

    def plan(self, job: dict, action: str, result: dict, tip: str | None,
             on_branch: bool) -> dict:
        """The row and the git step of a decision (journaled before either happens)."""
        status = result.get("status") or "crash"
        desc = result.get("description") or slots.tagged(job.get("slot", ""), job["desc"],
                                                          self.many)
        started_on = job.get("best_value")
        if status == "keep" and job.get("kind") == "candidate" and started_on is not None \
                and not context.beats(result.get("value"), started_on,
                                      self.opts.higher_is_better):
            status, action = "discard", "row"  # the judge's copy was not the loop's best
            desc = f"{desc} (not kept: it does not beat the best it started on, {started_on:.6f})"
        out = {"action": action, "status": status, "desc": desc}
        if action == "moved":
            where = "was switched" if not on_branch else f"moved to {short(tip)}"
            out["why"] = (f"the session branch {where} during the run of "
                          f"{short(job['commit'])}: its row is logged, nothing applied; check "
                          "the branch, then start the loop again")
            if status == "keep":
                out.update(status="discard", desc=f"{desc} (not applied: the session branch "
                                                  "moved during the run)")
        elif action == "again":
            out.update(self.plan_again(job, desc, tip))
        elif action == "keep" and self.opts.confirm:
            prev = self.best_value()
            floor = (session.load(self.repo) or {}).get("noise_floor")
            floor = floor if isinstance(floor, (int, float)) and not isinstance(floor, bool) \
                else None
            if within_noise(result.get("value"), prev, floor):
                out["action"] = "hold"
                out["confirm"] = {"commit": job["commit"], "base": job["base"],
                                  "prev_best": prev, "k": int(self.opts.confirm),
                                  "desc": job["desc"], "slot": job.get("slot"),
                                  "rows_start": context.row_count(self.repo),
                                  "memory_gb": result.get("memory_gb")}
        return out

    def plan_again(self, job: dict, desc: str, tip: str) -> dict:
        """A keep on a superseded base: its train.py change rebased onto the new best (3-way)
        to run again; when the two changes conflict, its whole train.py on top of the new best
        (so the better of two rival edits of one line is not lost); never kept as it is."""
        beat = f"beat its base {short(job['base'])}, superseded by {short(tip)} while it ran"
        new, why = rebase_onto(self.repo, job["commit"], job["base"], tip)
        how = f"rebased onto it as {short(new)}"
        if new is None and "conflicts" in why:
            new, why = replace_onto(self.repo, job["commit"], tip, note=(
                f"(its train.py in place of {short(tip)}'s: the two changes conflict)"))
            how = f"its change conflicts with {short(tip)}'s, so its train.py runs on top of it " \
                f"as {short(new)}"
        if new is None:
            return {"status": "discard", "desc": f"{desc} ({beat}, and {why}: not run again)"}
        keep_reachable(self.repo, WAITING, new)
        return {"status": "discard", "again": new, "desc": f"{desc} ({beat}; {how}, to run again)"}

    def apply(self, sid: str | None, job: dict) -> None:
        d = job["decision"]
        header = ledger.read_header(self.ledger_path)
        line = ledger.format_row(job["commit"], job["result"].get("value"),
                                 job["result"].get("memory_gb"), d["status"], d["desc"], header)
        named = dict(zip(header, line.split("\t")))
        if not job.get("counted") and not self.harness_intact():
            return  # the row waits in the journal; the restart refuses the changed harness
        present = any((r["commit"], r["description"]) == (named.get("commit"),
                                                          named.get("description"))
                      for r in context.rows_after(self.repo, int(job.get("rows_before", 0))))
        if not present:
            ledger.append_row(self.ledger_path, line)
            self.mark_sealed()
            self.log_run(sid, job, d)
        if not job.get("counted"):  # once, also when a dead loop wrote the row but not this
            self.count(job)
            job["counted"] = True
        action = d["action"]
        if d["status"] != "keep" and job.get("kind") == "candidate" \
                and job["commit"] != job.get("base"):
            keep_reachable(self.repo, DISCARDED, job["commit"])
        if action == "keep":
            self.fast_forward(job["commit"])
        elif action == "hold":
            self.state["confirm"] = d["confirm"]
        elif action == "again" and d.get("again"):
            if not any(w.get("commit") == d["again"] for w in self.waiting):
                self.waiting.insert(0, {"base": self.state["best"], "commit": d["again"],
                                        "again": job["commit"], "described": True,
                                        "desc": f"{ledger.flatten(job['desc'])} (rebased "
                                                f"onto {short(self.state['best'])})"})
        elif action == "moved":
            self.halt = LoopError(UNSAFE, d["why"])
        if sid is not None:
            self.jobs.pop(sid, None)
        git(self.repo, "update-ref", "-d", f"{UNJUDGED}{job['commit']}", check=False)
        self.verdict, self.value = d["status"], job["result"].get("value")
        self.save()
        self.report(sid if self.many else None)

    def fast_forward(self, commit: str) -> None:
        """The session branch moves to the kept commit (one keep at a time, never back)."""
        if head(self.repo) == commit:
            self.state["best"] = commit
            return
        problem = None
        if current_branch(self.repo) != self.branch:
            problem = "the session branch is not checked out"
        elif head(self.repo) != self.state.get("best"):
            problem = f"the session branch moved to {short(head(self.repo))}"
        else:
            proc = subprocess.run(gitx.argv(self.repo, "merge", "--ff-only", "-q", commit),
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  start_new_session=True)  # a Ctrl-C cannot cut it short
            if proc.returncode == 0:
                self.state["best"] = commit
                if self.many:
                    log(f"kept {short(commit)}: {self.branch} fast-forwarded")
                return
            problem = proc.stderr.strip()[:200]
        keep_reachable(self.repo, KEPT, commit)
        self.halt = LoopError(UNSAFE, f"could not fast-forward {self.branch} to the kept "
                                      f"{short(commit)}: {problem} (kept as {KEPT}{commit})")

    def mark_sealed(self) -> None:
        frozen = session.load(self.repo) or {}
        if not frozen.get("ledger_sealed") and ledger.read_seal(self.ledger_path) is not None:
            session.update(self.repo, ledger_sealed=True)
            self.saw_session()

    def append_run(self, record: dict) -> None:
        with contextlib.suppress(OSError):
            experiment.append_jsonl(os.path.join(session.session_dir(self.repo),
                                                 experiment.RUNS), record)

    def log_run(self, sid: str | None, job: dict, d: dict) -> None:
        """The run's runs.jsonl object and archived log in the main session."""
        result = job["result"]
        record = dict(result.get("record") or {}, status=d["status"], description=d["desc"],
                      commit=job["commit"], short=short(job["commit"]))
        record.pop("reverted", None)
        self.archive_log(sid, job)
        if job.get("archived_log"):
            record["log"] = job["archived_log"]
        if self.many:
            record["worker"] = sid
        else:
            record.pop("worker", None)
        self.append_run(record)

    def archive_log(self, sid: str | None, job: dict) -> None:
        """The run's log, copied from its slot to .autoresearch/logs/ (once)."""
        slot = next((s for s in self.slots if s.id == sid), None)
        src = (job.get("result") or {}).get("log")
        if slot is not None and src and not job.get("archived_log"):
            job["archived_log"] = slots.copy_log(self.repo, os.path.join(slot.path, src),
                                                 short(job["commit"]))
            self.save()

    def report(self, sid: str | None = None) -> None:
        o, st = self.opts, self.state
        done = int(st.get("done", 0))
        elapsed = time.time() - float(st.get("started", time.time()))
        deadline = st.get("deadline")
        left = None if deadline is None else float(deadline) - time.time()
        queue_left = None
        if o.queue:
            queue_left = sum(1 for p in list_patches(o.queue) if p.name not in
                             set(self.queue_done()))
        line = context.status_line(done, o.max, self.verdict, self.value, self.best_value(),
                                   elapsed, context.eta(done, elapsed, o.max, left, queue_left))
        if st.get("reproposed"):
            line += f" | re-proposed {st['reproposed']}"
        log(line + (f" | {sid}" if sid else ""))

    # -- bounds ---------------------------------------------------------------------

    def bound(self) -> str | None:
        """Why no new experiment may start (None: one may)."""
        o, st = self.opts, self.state
        done = int(st.get("done", 0)) + self.candidates_in_flight()
        if o.max is not None and done >= o.max:
            return f"reached --max {o.max}"
        deadline = st.get("deadline")
        if deadline is not None:
            left = float(deadline) - time.time()
            finished = int(st.get("done", 0))
            per_run = (time.time() - float(st["started"])) * max(1, len(self.slots)) \
                / finished if finished else 0.0
            if left <= 0 or per_run > left:
                return f"reached --hours {o.hours:g}"
        return None

    def check_crashes(self) -> None:
        """--max-crashes K: K crash rows in a row stop the loop (read when the ledger grew)."""
        with contextlib.suppress(OSError):
            key = os.stat(self.ledger_path).st_size
            if key == self.crash_key:
                return
            self.crash_key = key
        o = self.opts
        crashes = context.trailing(context.rows_after(self.repo,
                                                      int(self.state.get("ledger_rows_at_start",
                                                                         0))), ("crash",))
        if o.max_crashes and crashes >= o.max_crashes and self.halt is None:
            self.halt = LoopError(FAILED, f"stopping after {crashes} crashes in a row "
                                          "(see .autoresearch/logs and "
                                          ".autoresearch/proposer.log)")

    # -- the next thing for a free slot ----------------------------------------------

    def fill(self) -> str | None:
        """Start what may start on free slots. Returns why nothing more can come (the loop
        ends once the slots are idle), or None."""
        while True:
            slot = self.free_slot()
            if slot is None or self.stop or self.halt:
                return None
            job = self.confirm_job()
            if job is not None:
                self.start(slot, job)
                continue
            if self.state.get("confirm"):
                return None  # no new candidate while a keep waits for its confirmation
            again = bool(self.waiting) and bool(self.waiting[0].get("again"))
            why = None if again else self.bound()  # a re-run finishes an experiment begun
            if why:
                return why
            self.check_crashes()
            if self.halt:
                return None
            self.absorb()
            if not self.waiting and not self.opts.queue and self.lane is not None \
                    and (self.lane.busy or self.jobs):
                self.fill_lane()  # the lane proposes while runs go; nothing to start yet
                return None
            problem = dirty_problem(self.repo)
            if problem:  # a fast-forward could not keep anything: stop before proposing
                if not self.jobs:
                    self.halt = LoopError(UNSAFE, problem)
                return None
            if self.waiting:
                self.take(slot, self.waiting.pop(0))
                self.save()
                continue
            if self.opts.queue:
                got = self.apply_next(self.state["best"])
                if got is False:
                    return "the queue is empty"
                if not self.take(slot, got):
                    continue
                continue
            item = self.propose_now(self.state["best"])
            self.check_stop()
            self.take(slot, item)
            self.save()

    def wait(self) -> None:
        """Until a run ends, the lane hands something over, or a short while passes."""
        deadline = time.monotonic() + 0.5
        lane_busy = self.lane is not None and self.lane.busy
        while time.monotonic() < deadline:
            if any(s.proc is not None and s.proc.poll() is not None for s in self.slots):
                return
            if self.lane is not None and self.free_slot() is not None and not self.stop \
                    and (self.lane.ready or (lane_busy and not self.lane.busy)):
                return
            if self.stop and self.give_up is None:
                self.give_up = time.monotonic() + float(self.opts.grace or 10) + 20
            if self.give_up is not None and time.monotonic() > self.give_up:
                log("run-experiment.sh did not stop; killing it")
                for s in self.slots:
                    if s.proc is not None:
                        journal.signal_group(s.proc.pid, signal.SIGKILL)
                self.give_up = time.monotonic() + 3600
            time.sleep(0.05)

    def busy(self) -> bool:
        return any(s.proc is not None for s in self.slots)

    def drain(self) -> None:
        """Wait for every run to end and judge it."""
        while self.busy():
            self.wait()
            self.reap()

    # -- the prelude: the baseline and its repeats ------------------------------------

    def run_one(self, job: dict) -> dict | None:
        """One run on the first slot, waited for; its row (None: not judged)."""
        self.check_stop()
        rows_before = context.row_count(self.repo)
        self.start(self.slots[0], job)
        self.drain()
        self.raise_halt()
        self.check_stop()
        return context.row_for(context.rows_after(self.repo, rows_before), job["commit"])

    def baseline(self) -> None:
        """An empty track (or one with no kept row) starts with HEAD unmodified."""
        track = self.track()
        if not any(r["status"] == "keep" for r in track):
            base = self.state["best"]
            log(f"baseline: running {short(base)} unmodified"
                + (f" ({self.slots[0].id})" if self.many else ""))
            self.run_one({"commit": base, "base": base, "kind": "baseline",
                          "desc": self.describe("baseline"),
                          "rerun": context.row_for(track, base) is not None})
            if not any(r["status"] == "keep" for r in self.track()):
                raise LoopError(FAILED, "the baseline did not produce a metric; see its log "
                                        "under .autoresearch/logs/ and fix the target first")
        self.repeat_baseline()

    # -- recovery ---------------------------------------------------------------------

    def harvest(self) -> None:
        """Before the worktrees are rebuilt: the answer of a run a dead loop did not judge
        but that finished (in its slot's runs.jsonl) is taken as it is."""
        for sid, job in self.jobs.items():
            if job["commit"] != job.get("base"):
                keep_reachable(self.repo, UNJUDGED, job["commit"])
            if job.get("result") is not None:
                continue
            if self.opts.runner == "slurm":
                subprocess.run(runner.cancel_command(slots.session_tag(self.branch),
                                                     job["commit"]),
                               capture_output=True, check=False)
            where = slots.Slot(sid, str(Path(self.repo) / slots.WORKTREES / sid), "", None)
            found = slots.answer(where, job["commit"], None)
            if found is not None:
                job["result"] = {k: v for k, v in found.items() if k != "reverted"}
                if found.get("log") and not job.get("archived_log"):  # the worktree is rebuilt
                    job["archived_log"] = slots.copy_log(
                        self.repo, str(Path(where.path) / found["log"]), short(job["commit"]))
                self.save()

    def recover(self) -> None:
        """Settle what a dead loop (SIGKILL, reboot) left; see the module doc."""
        st = self.state
        phase = st.get("phase", "idle")
        if phase != "idle" or self.jobs:
            log(f"resuming: the previous loop stopped while "
                f"{phase if phase != 'idle' else 'running'}")
        if phase in ("proposing", "applying"):
            proposals.drop(st.get("clone"))
            self.idle()
        elif phase == "rejecting":
            self.finish_reject()
        elif phase == "withdrawing":
            self.finish_withdraw()
        elif phase != "idle":
            self.idle()
        for sid, job in sorted(list(self.jobs.items())):
            if job.get("result") is not None:
                self.settle(sid, job)
                continue
            del self.jobs[sid]
            if job.get("kind") == "candidate" and job.get("base") == st.get("best"):
                keep_reachable(self.repo, WAITING, job["commit"])
                self.waiting.insert(0, {"base": job["base"], "commit": job["commit"],
                                        "desc": job["desc"], "described": True,
                                        "patch": job.get("patch"), "usage": job.get("usage"),
                                        "again": job.get("again")})
                self.state["tried"] = [b for b in st.get("tried", []) if b != job.get("blob")]
                log(f"the unjudged experiment {short(job['commit'])} will run again")
            elif job.get("kind") == "candidate":
                keep_reachable(self.repo, UNJUDGED, job["commit"])
            self.save()
        if st.get("parked") and not st.get("confirm"):  # cut short while being decided
            self.settle_parked()
        self.raise_halt()

    def raise_halt(self) -> None:
        if self.halt is not None:
            halt, self.halt = self.halt, None
            raise halt

    # -- the whole session --------------------------------------------------------------

    def run(self) -> int:
        o, st = self.opts, self.state
        key = journal.args_key(o)
        resumed = st.get("status") in ("running", "interrupted") and st.get("args") == key
        problem = dirty_problem(self.repo)
        if problem:
            raise LoopError(UNSAFE, problem)
        session.ensure_excludes(self.repo)
        if session.load(self.repo) is None:
            frozen = session.freeze(self.repo, metric=o.metric or "val_bpb",
                                    higher_is_better=o.higher_is_better)
            log(f"froze a new session (track starts at results.tsv row "
                f"{frozen['ledger_start'] + 1})")
        changes = session.verify(self.repo)
        if changes:
            raise LoopError(HARNESS, session.verify_message(changes))
        try:
            experiment.check_seal(self.repo, self.ledger_path, session.load(self.repo))
        except experiment.Stop as exc:
            raise LoopError(HARNESS, str(exc)) from None
        stale = journal.kill_stale(st, float(o.grace or 10))
        if stale:
            log(f"killed {len(stale)} process(es) left by the previous loop")
        proposals.sweep(self.repo)
        settle_live_logs(str(Path(self.repo) / PROPOSER_LOG))
        self.harvest()
        now = time.time()
        if not resumed:
            st.update(started=now, done=0, ledger_rows_at_start=context.row_count(self.repo),
                      deadline=None if o.hours is None else now + o.hours * 3600)
            ahead.drop_waiting(self.repo, st)
        st.update(status="running", args=key, pid=os.getpid(), token=os.urandom(16).hex(),
                  best=head(self.repo))
        ahead.settle_orphans(self.repo, st)
        self.save()
        self.slots = slots.make(self.repo, self.branch, o.gpu_list, st["best"])
        self.saw_session()
        if o.propose and o.ahead:
            self.lane = lanes(min(int(o.ahead), len(self.slots)), st["token"], repo=self.repo,
                              branch=self.branch, command=o.propose,
                              timeout=o.propose_timeout,
                              log_path=str(Path(self.repo) / PROPOSER_LOG),
                              ledger_path=self.ledger_path, context=self.lane_context,
                              env_for=self.lane_env)
        if resumed:
            log(f"resuming the loop: {st.get('done', 0)} experiment(s) done so far")
        self.recover()
        if self.state.get("confirm") and self.confirm_due():
            self.resolve_confirm()
        self.baseline()
        return self.loop()

    def loop(self) -> int:
        started_any = False
        while True:
            self.absorb()
            self.reap()
            if self.confirm_due():
                self.resolve_confirm()
            self.check_crashes()
            if self.stop or self.halt:
                if not self.busy():
                    self.raise_halt()
                    self.check_stop()
                self.wait()
                continue
            rows_before = int(self.state.get("done", 0))
            why = self.fill()
            started_any = started_any or bool(self.jobs) or \
                int(self.state.get("done", 0)) > rows_before
            if self.busy() or self.state.get("confirm") or self.halt or self.stop:
                self.fill_lane()
                self.wait()
                continue
            if why is None and self.lane is not None and (self.lane.busy or self.waiting):
                self.wait()
                continue
            if why == "the queue is empty" and not started_any \
                    and not int(self.state.get("done", 0)):
                raise LoopError(NOTHING, f"nothing to do: every patch in {self.opts.queue} "
                                         "was already judged")
            log(f"done: {why or 'nothing left to run'}")
            return OK

    def abandon(self) -> None:
        """At the end (an error, a stop): every run still going is stopped and unjudged."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + float(self.opts.grace or 10) + 20
        while self.busy() and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for slot in self.slots:
            if slot.proc is not None:
                journal.signal_group(slot.proc.pid, signal.SIGKILL)
                slot.proc.wait()
        stop, self.stop = self.stop, self.stop or signal.SIGTERM
        self.reap()
        self.stop = stop


def dirty_problem(repo: str) -> str | None:
    changed = tracked_changes(repo)
    if changed:
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        return f"the tree has uncommitted changes to tracked files ({shown}); commit them first"
    return None


