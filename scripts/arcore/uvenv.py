"""The environment a run needs: where uv is, and telling an environment failure from a failed idea.

One way to find uv for every script (check-hardware, setup, run-experiment): ``find_uv`` looks on
PATH, then in the places uv's own installer and pip put it (``$UV_INSTALL_DIR``,
``$XDG_BIN_HOME``, ``~/.local/bin``, ``$CARGO_HOME/bin``, ``~/.cargo/bin``) and says where it
found it. ``scripts/common.sh`` asks this module (``python3 -m arcore uvenv find``) and falls back
to the same list, ``UV_DIRS_FOR_BASH``, only when no python3 is there to ask.

``environment_failure`` reads the head of a run's log: a run that failed before train.py started
(the command was not found, exit 127; uv could not create the virtual environment; uv could not
reach its package index) is not an idea that failed. run-experiment.sh writes no row for it,
reverts nothing and exits 1 with the fix.

CLI::

    python3 -m arcore uvenv find      # prints: PATH_TO_UV<TAB>WHERE (exit 1 when not found)
"""

from __future__ import annotations

import os
import re
import sys

# The order the scripts search, after PATH. Kept in step with UV_DIRS_FOR_BASH (a test checks).
UV_DIRS = ("$UV_INSTALL_DIR", "$XDG_BIN_HOME", "~/.local/bin", "$CARGO_HOME/bin", "~/.cargo/bin")
UV_DIRS_FOR_BASH = ('${UV_INSTALL_DIR:-}', '${XDG_BIN_HOME:-}', '${HOME}/.local/bin',
                    '${CARGO_HOME:-}/bin', '${HOME}/.cargo/bin')


def _is_exe(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def uv_dirs(env: dict | None = None, home: str | None = None) -> list[tuple[str, str]]:
    """(directory, how it is named) for each place after PATH, in search order."""
    env = os.environ if env is None else env
    home = home or env.get("HOME") or os.path.expanduser("~")
    out = []
    for spec in UV_DIRS:
        if spec.startswith("~/"):
            path = os.path.join(home, spec[2:])
        else:
            name, _, rest = spec[1:].partition("/")
            value = env.get(name, "")
            if not value:
                continue
            path = os.path.join(value, rest) if rest else value
        out.append((path, spec))
    return out


def find_uv(env: dict | None = None, home: str | None = None) -> tuple[str | None, str]:
    """(the uv executable, where it was found: "PATH" or one of UV_DIRS), or (None, why not)."""
    env = os.environ if env is None else env
    for directory in (env.get("PATH") or "").split(os.pathsep):
        if directory and _is_exe(os.path.join(directory, "uv")):
            return os.path.join(directory, "uv"), "PATH"
    for directory, spec in uv_dirs(env, home):
        if _is_exe(os.path.join(directory, "uv")):
            return os.path.join(directory, "uv"), spec
    looked = ", ".join(["PATH"] + list(UV_DIRS))
    return None, f"uv not found (looked on {looked})"


def path_with_uv(path_value: str, env: dict | None = None, home: str | None = None) -> tuple[str, str | None]:
    """PATH for a training command: unchanged when uv is on it, else uv's directory first.
    Returns (PATH, a one-line note saying where uv came from, or None when nothing changed)."""
    env = dict(os.environ if env is None else env, PATH=path_value)
    found, where = find_uv(env, home)
    if found is None or where == "PATH":
        return path_value, None
    directory = os.path.dirname(found)
    return (directory + (os.pathsep + path_value if path_value else ""),
            f"uv is not on PATH; using {found} (found in {where})")


_USES_UV = re.compile(r"(?:^|[\s;&|(`])uv(?:\s|$)")


def uses_uv(command_line: str) -> bool:
    """Whether a shell command line runs uv (``uv run train.py``, ``srun ... uv run ...``)."""
    return bool(_USES_UV.search(command_line))


# ---------------------------------------------------------------------------
# Environment failures (pure)
# ---------------------------------------------------------------------------

_HEAD_BYTES = 64 * 1024  # the start of the log is enough: these happen before train.py runs
_NOT_FOUND = re.compile(r"^(?:bash: )?(?:line \d+: )?(?P<cmd>[^\s:]+): (?:command not found|No such file or directory)$",
                        re.M)
_NETWORK = re.compile(
    r"(?im)^\s*(?:error|×|caused by|warning)?:?.*(?:failed to fetch|failed to download|error sending "
    r"request|dns error|failed to lookup address|could not connect|connection refused|network is "
    r"unreachable|tcp connect error|temporary failure in name resolution|timed out while|"
    r"operation timed out|no such host|offline mode)")
_VENV = re.compile(r"(?im)^\s*(?:error|×)?:?.*(?:failed to create virtual ?env|could not create "
                   r"(?:the )?virtual ?env|no interpreter found|failed to create directory.*\.venv|"
                   r"permission denied.*\.venv|no python installation|failed to install python)")
_TRAIN_STARTED = re.compile(r"(?m)^(?:Traceback \(most recent call last\)|---$|val_bpb:|step \d)")

FIXES = {
    "command": "install the missing command or fix --cmd; for uv: put it on PATH "
               "(export PATH=\"$HOME/.local/bin:$PATH\") or rerun scripts/setup.sh",
    "network": "uv could not reach its package index: connect the machine (or set a proxy / "
               "UV_INDEX_URL to a mirror), or run `uv sync` once online; then rerun the same "
               "command (the candidate is untouched)",
    "venv": "uv could not create the virtual environment: check free disk and write permission "
            "in the repository (.venv), then `uv sync`; rerun the same command",
}


def environment_failure(log_head: str, exit_code: int | None, timed_out: bool = False) -> dict | None:
    """{"kind", "what", "fix"} when the run failed before train.py started, else None.

    Only a failed exit counts, and never once train.py printed anything of its own (a
    traceback, the summary block, a step line): those are the idea's to answer for."""
    if timed_out or exit_code in (0, None):
        return None
    text = log_head[:_HEAD_BYTES]
    if _TRAIN_STARTED.search(text):
        return None
    missing = _NOT_FOUND.search(text)
    if exit_code == 127 and missing:
        return {"kind": "command", "what": f"`{missing.group('cmd')}`: command not found (exit 127)",
                "fix": FIXES["command"]}
    if exit_code == 127:
        return {"kind": "command", "what": "the command was not found (exit 127)",
                "fix": FIXES["command"]}
    for kind, pattern in (("venv", _VENV), ("network", _NETWORK)):
        found = pattern.search(text)
        if found:
            return {"kind": kind, "what": " ".join(found.group(0).split())[:160], "fix": FIXES[kind]}
    return None


def read_head(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    if argv[:1] != ["find"]:
        print("usage: python3 -m arcore uvenv find", file=sys.stderr)
        return 2
    found, where = find_uv()
    if found is None:
        print(where, file=sys.stderr)
        return 1
    print(f"{found}\t{where}")
    return 0
