"""Runs happen in a disposable checkout of exactly the candidate commit.

``prepare(repo, commit)`` writes the commit's files into a fresh folder
``$TMPDIR/autoresearch-run-<short>-XXXX/tree`` (``git read-tree`` into a private index, then
``git checkout-index``: a plain directory, no ``.git``, outside the repository, so nothing run
there finds the user's repository by walking up; ``GIT_CEILING_DIRECTORIES`` stops git there
too). A cluster launcher (srun) whose nodes do not share the temporary folder needs
``AUTORESEARCH_CHECKOUT_DIR`` set to a shared one.

``environment(repo, checkout, base)`` is the training command's environment:

- the target's venv stays the repository's: ``UV_PROJECT_ENVIRONMENT`` = ``<repo>/.venv``
  (or the caller's, made absolute against the repo); when it exists, ``UV_NO_SYNC=1`` (the venv
  is used exactly as fingerprinted, never re-synced during a run) and always ``UV_FROZEN=1``
  (uv never rewrites uv.lock, a tracked file of the checkout);
- ``PYTHONPYCACHEPREFIX`` = a fresh per-run folder: no ``__pycache__`` anywhere (the tree's,
  site-packages') is read, so a poisoned ``prepare.*.pyc`` is never loaded;
- ``PYTHONPATH`` = only the attested launcher's folder (``scripts/attest``, when present);
  ``PYTHONHOME``, ``PYTHONSTARTUP``, ``PYTHONINSPECT``, ``PYTHONBREAKPOINT``,
  ``PYTHONUSERBASE``, ``PYTHONEXECUTABLE`` and every other ``PYTHON*`` not in ``KEEP_PYTHON``
  are dropped, as is the skill's own ``AR_*`` plumbing;
- ``AUTORESEARCH_CACHE_DIR`` passes through unchanged (the data cache as configured).

``audit(repo, checkout)`` after the run: every tracked file that differs from the commit
(``git status`` against the private index) and every new file that could shadow a module
(``SHADOWS``: ``*.py``, ``*.pyc``, ``*.so``, ``*.pth``, ``sitecustomize``/``usercustomize``, a
package folder) is a finding; the judge makes the run ``crash``/``tamper``. ``__pycache__``
folders are not findings: with the prefix set, Python never reads them. ``remove`` deletes the
checkout. run.log and ``.autoresearch/logs/`` stay in the repository, as before.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile

from arcore import gitx

LAUNCHER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "attest")
KEEP_PYTHON = frozenset({"PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8",
                         "PYTHONFAULTHANDLER", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS",
                         "PYTHONNOUSERSITE", "PYTHONLEGACYWINDOWSSTDIO"})
SHADOWS = re.compile(r"(\.py|\.pyc|\.pyo|\.pyw|\.so|\.pyd|\.pth)$|"
                     r"^(sitecustomize|usercustomize)(\.|$)")


class IsolationError(RuntimeError):
    pass


def prepare(repo: str, commit: str, short: str | None = None) -> dict:
    """A fresh checkout of ``commit``: {"root", "tree", "index", "pycache"}."""
    parent = os.environ.get("AUTORESEARCH_CHECKOUT_DIR") or None
    if parent:
        os.makedirs(parent, exist_ok=True)
    root = tempfile.mkdtemp(prefix=f"autoresearch-run-{(short or commit)[:7]}-", dir=parent)
    os.makedirs(os.path.join(root, "pycache"))
    checkout = {"root": root, "tree": os.path.join(root, "tree"),
                "index": os.path.join(root, "index"), "pycache": os.path.join(root, "pycache"),
                "commit": commit}
    os.makedirs(checkout["tree"])
    private = {"GIT_INDEX_FILE": checkout["index"]}
    for args in (("read-tree", commit),
                 ("--work-tree", checkout["tree"], "checkout-index", "-a", "-f", "-u")):
        done = gitx.run(repo, *args, extra_env=private)
        if done.returncode != 0:
            remove(checkout)
            raise IsolationError(f"could not check out {commit[:7]} for the run: "
                                 f"{done.stderr.strip()[:200]}")
    return checkout


def environment(repo: str, checkout: dict, base: dict) -> dict:
    """The training command's environment (see the module doc)."""
    env = {k: v for k, v in base.items()
           if not (k.startswith("PYTHON") and k not in KEEP_PYTHON) and not k.startswith("AR_")}
    venv = base.get("UV_PROJECT_ENVIRONMENT")
    venv = os.path.join(repo, os.path.expanduser(venv)) if venv else os.path.join(repo, ".venv")
    env["UV_PROJECT_ENVIRONMENT"] = os.path.abspath(venv)
    if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        env.setdefault("UV_NO_SYNC", "1")
    env.setdefault("UV_FROZEN", "1")
    env["PYTHONPYCACHEPREFIX"] = checkout["pycache"]
    if os.path.isdir(LAUNCHER_DIR):
        env["PYTHONPATH"] = LAUNCHER_DIR
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(checkout["tree"])
    env["PWD"] = checkout["tree"]
    return env


def audit(repo: str, checkout: dict) -> list[str]:
    """Findings: tracked files that differ from the commit, new files that shadow a module."""
    done = gitx.run(repo, "--work-tree", checkout["tree"], "status", "--porcelain=v1", "-z",
                    "--untracked-files=all", "--ignored=traditional", "--no-renames",
                    "--ignore-submodules=all",  # else it runs `git status` in a gitlink's
                    extra_env={"GIT_INDEX_FILE": checkout["index"]})  # folder the run made a repo
    if done.returncode != 0:
        return [f"the run's checkout could not be compared with {checkout['commit'][:7]} "
                f"({done.stderr.strip()[:120]})"]
    findings = []
    for entry in done.stdout.split("\0"):
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code in ("??", "!!"):
            parts = path.rstrip("/").split("/")
            if "__pycache__" in parts[:-1] or parts[-1] == "__pycache__":
                continue
            if SHADOWS.search(parts[-1]) or any(SHADOWS.search(p) for p in parts[:-1]):
                findings.append(f"the run left {path}, which could shadow a module "
                                "(an untracked file Python imports)")
        elif code[1] != " ":  # the worktree against the private index (X is HEAD's, which
            # the user may move meanwhile)
            findings.append(f"the run changed the tracked file {path} in its checkout")
    return findings


def remove(checkout: dict) -> None:
    """Deletes the checkout, read-only folders a run left included."""
    root = checkout.get("root")
    if not root or not os.path.lexists(root):
        return

    def _retry(func, path, _exc):
        try:
            os.chmod(os.path.dirname(path), stat.S_IRWXU)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
            func(path)
        except OSError:
            pass

    shutil.rmtree(root, onerror=_retry)
