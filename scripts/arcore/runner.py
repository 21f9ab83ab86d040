"""Where a run happens: the launcher for one experiment, locally or as a Slurm job step.

A runner turns "run this candidate on one GPU" into two things run-experiment.sh understands:
an environment (``CUDA_VISIBLE_DEVICES`` for a local GPU) and a launcher prefix put in front of
the target's command (``--launcher PREFIX``). The ledger, git and judging stay on the machine
that calls run-experiment.sh; only the training command moves.

- ``local``: no prefix; ``CUDA_VISIBLE_DEVICES=<gpu>`` when a GPU is given.
- ``slurm``: ``srun --gres=gpu:1 --time=<minutes> --job-name=autoresearch-<session>-<commit> ...``:
  one job step per experiment; Slurm picks the GPU and sets ``CUDA_VISIBLE_DEVICES`` itself.
  ``--time`` is a little above run-experiment.sh's hard timeout plus its grace, so our own timeout
  fires first and Slurm's only catches a run we could not stop.

Slurm outcomes map to our crash classes (see ``slurm_outcome``): a step cancelled for its time
limit prints ``CANCELLED AT ... DUE TO TIME LIMIT`` and exits 143 -> ``timeout``; any other
cancellation (scancel, preemption, node failure) -> ``killed``.

CLI::

    python3 -m arcore runner prefix --runner slurm --session TAG --commit SHA --timeout 600
    python3 -m arcore runner env --runner local --gpu 1
    python3 -m arcore runner classify LOG --exit-code N
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys

RUNNERS = ("local", "slurm")
JOB_PREFIX = "autoresearch"
SLURM_SLACK_S = 60  # Slurm checks limits every ~30 s; leave room for our own kill first

# ---------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------


def slurm_minutes(timeout_s: float, grace_s: float = 10.0) -> int:
    """Slurm's ``--time`` in whole minutes: a little above our hard timeout plus grace."""
    total = max(0.0, float(timeout_s)) + max(0.0, float(grace_s)) + SLURM_SLACK_S
    return max(1, math.ceil(total / 60.0))


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def job_name(session: str, commit: str) -> str:
    """``autoresearch-<session>-<short commit>``, safe for Slurm and for a shell."""
    tag = _NAME_UNSAFE.sub("-", session or "session").strip("-") or "session"
    short = _NAME_UNSAFE.sub("", commit or "")[:7] or "head"
    return f"{JOB_PREFIX}-{tag[:60]}-{short}"


def slurm_prefix(
    session: str,
    commit: str,
    timeout_s: float,
    grace_s: float = 10.0,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The srun command line the target's command is appended to.

    ``--quit-on-interrupt`` makes one SIGINT cancel the step (no "press again" prompt);
    ``--unbuffered`` streams the run's output into run.log as it comes; ``--kill-on-bad-exit``
    ends the step when the task fails.
    """
    return [
        "srun",
        "--ntasks=1",
        "--gres=gpu:1",
        f"--time={slurm_minutes(timeout_s, grace_s)}",
        f"--job-name={job_name(session, commit)}",
        "--quit-on-interrupt",
        "--unbuffered",
        "--kill-on-bad-exit=1",
        *extra,
    ]


def launcher(
    runner: str,
    *,
    gpu: str | None = None,
    session: str = "",
    commit: str = "",
    timeout_s: float = 600.0,
    grace_s: float = 10.0,
    extra: list[str] | tuple[str, ...] = (),
) -> tuple[str, dict[str, str]]:
    """(launcher prefix as one shell string, extra environment) for one run."""
    if runner == "local":
        env = {} if gpu in (None, "") else {"CUDA_VISIBLE_DEVICES": str(gpu)}
        return "", env
    if runner == "slurm":
        words = slurm_prefix(session, commit, timeout_s, grace_s, extra)
        return shlex.join(words), {}
    raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, not {runner!r}")


def cancel_command(session: str, commit: str) -> list[str]:
    """The scancel line that ends one experiment's job step by its name (for Ctrl-C cleanup)."""
    return ["scancel", "--quiet", f"--name={job_name(session, commit)}"]


# ---------------------------------------------------------------------------
# Slurm outcomes -> our crash classes
# ---------------------------------------------------------------------------

_CANCELLED = re.compile(r"\*\*\* (?:STEP|JOB) \S+ ON \S+ CANCELLED AT \S+(?P<rest>[^\n\r]*)")


def slurm_outcome(log_text: str, exit_code: int | None) -> str | None:
    """``timeout``, ``killed`` or None (not a Slurm cancellation) for an srun-launched run."""
    match = None
    for match in _CANCELLED.finditer(log_text or ""):
        pass
    if match is None:
        return None
    if "DUE TO TIME LIMIT" in match.group("rest"):
        return "timeout"
    return "killed"


def _tail(path: str, size: int = 64 * 1024) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        end = handle.tell()
        handle.seek(max(0, end - size))
        return handle.read().decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arcore runner", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("prefix", "env"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--runner", choices=RUNNERS, default="local")
        cmd.add_argument("--gpu", default=None)
        cmd.add_argument("--session", default="")
        cmd.add_argument("--commit", default="")
        cmd.add_argument("--timeout", type=float, default=600.0)
        cmd.add_argument("--grace", type=float, default=10.0)
        cmd.add_argument("--slurm-arg", action="append", default=[], dest="extra")
    classify = sub.add_parser("classify")
    classify.add_argument("log")
    classify.add_argument("--exit-code", type=int, default=None)
    return parser


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command == "classify":
        try:
            text = _tail(args.log)
        except OSError as exc:
            print(f"runner: {args.log}: {exc.strerror}", file=sys.stderr)
            return 1
        print(slurm_outcome(text, args.exit_code) or "none")
        return 0
    prefix, env = launcher(args.runner, gpu=args.gpu, session=args.session, commit=args.commit,
                           timeout_s=args.timeout, grace_s=args.grace, extra=args.extra)
    if args.command == "prefix":
        print(prefix)
    else:
        for key, value in env.items():
            print(f"{key}={value}")
    return 0
