"""Proposals in disposable clones: where a proposer (or a queue patch) makes its one commit.

A proposal never runs in the user's repository. For each one the loop makes a fresh clone of
the session branch at the proposal's base (``git clone --shared``: the clone borrows the
repository's objects through its alternates and has its own refs, hooks, config and index;
nothing done in it can delete an object of the repository, and the repository never borrows
from the clone), puts in it what the proposer reads (the tracked files come with the clone; a
read-only copy of results.tsv at ``results.tsv``, named by AUTORESEARCH_LEDGER; the rendered
prompt at ``.autoresearch/proposer-context.md``, named by AUTORESEARCH_CONTEXT), and runs the
proposer there (AUTORESEARCH_REPO names the clone). The clone has no remote, no hooks and the
user's commit identity.

When the proposer is done, the loop first puts the clone's git config, hooks, exclude file
and alternates back as it made them (a proposer cannot get a filter, fsmonitor or hook run by
the harness), then fetches the clone's HEAD into a private ref
(``refs/autoresearch/incoming/<sha>``; fetch copies objects, it adds no alternates), validates
it as ever (one commit on the base, train.py only, a clean tree, no new file, results.tsv copy
untouched) and throws the clone away. Clones live under ``$AUTORESEARCH_CLONE_ROOT`` (default:
the system temp dir) in ``autoresearch-proposals-<uid>/``, each with an owner file naming its
repository; :func:`sweep` removes a repository's leftovers (a SIGKILLed loop's clone).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from arcore import gitx
from arcore import session
from arcore.gitops import SAFE, git, git_ok, head, validate_candidate

ROOT_ENV = "AUTORESEARCH_CLONE_ROOT"
INCOMING = "refs/autoresearch/incoming/"
OWNER = "autoresearch-owner.json"   # in the clone's git dir
CONTEXT = ".autoresearch/proposer-context.md"
LEDGER = "results.tsv"


@dataclass
class Clone:
    """One proposal's clone: where it is, what it was made from, what to put back."""

    repo: str
    branch: str
    base: str
    path: str
    ledger_sha: str | None
    saved: dict  # git-dir relative path -> bytes (None: absent) to put back before reading


def root() -> Path:
    top = os.environ.get(ROOT_ENV) or tempfile.gettempdir()
    return Path(top) / f"autoresearch-proposals-{os.getuid()}"


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _gitdir(path: str) -> Path:
    return Path(path) / ".git"


def open_clone(repo: str, branch: str, base: str, context: str = "",
               ledger_path: str | None = None) -> Clone:
    """A fresh clone of ``branch`` checked out at ``base``, ready for a proposer."""
    top = root()
    top.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = tempfile.mkdtemp(prefix="p-", dir=top)
    owner = {"repo": os.path.realpath(repo), "pid": os.getpid(), "base": base}
    try:
        proc = subprocess.run(gitx.argv(None, "clone", "-q", "--shared", "--no-checkout",
                               "--template=", "--no-tags", "--single-branch", "--branch", branch,
                               repo, path), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise OSError(f"git clone failed: {proc.stderr.strip()[-200:]}")
        (_gitdir(path) / OWNER).write_text(json.dumps(owner), encoding="utf-8")
        git(path, "remote", "remove", "origin")
        for key in ("user.name", "user.email"):
            value = git(repo, "config", "--get", key, check=False)
            if value:
                git(path, "config", key, value)
        git(path, "checkout", "-q", "-B", branch, base)
        info = _gitdir(path) / "info"
        info.mkdir(exist_ok=True)
        src = git(repo, "rev-parse", "--git-path", "info/exclude")
        src_path = Path(src if os.path.isabs(src) else os.path.join(repo, src))
        (info / "exclude").write_bytes(src_path.read_bytes() if src_path.is_file() else b"")
        session.ensure_excludes(path)
        (Path(path) / ".autoresearch").mkdir(exist_ok=True)
        (Path(path) / CONTEXT).write_text(context, encoding="utf-8")
        copy = Path(path) / LEDGER
        if ledger_path and os.path.isfile(ledger_path):
            shutil.copyfile(ledger_path, copy)
            os.chmod(copy, 0o444)
        saved = {}
        for rel in ("config", "info/exclude", "objects/info/alternates", "info/attributes",
                    "hooks"):
            target = _gitdir(path) / rel
            saved[rel] = target.read_bytes() if target.is_file() else None
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return Clone(repo, branch, base, path, _sha(copy), saved)


def env(clone: Clone) -> dict:
    """The proposer's view of where it is (merged into its environment)."""
    return {"AUTORESEARCH_REPO": clone.path,
            "AUTORESEARCH_LEDGER": str(Path(clone.path) / LEDGER),
            "AUTORESEARCH_CONTEXT": str(Path(clone.path) / CONTEXT)}


def sanitize(clone: Clone) -> None:
    """Put the clone's git config, exclude file, alternates, attributes and hooks back as the
    loop made them, before the loop runs any git command in it."""
    gitdir = _gitdir(clone.path)
    if gitdir.is_symlink() or not gitdir.is_dir():  # a proposer replaced .git: start over
        if gitdir.is_symlink() or gitdir.is_file():
            gitdir.unlink()
        else:
            shutil.rmtree(gitdir, ignore_errors=True)
        gitdir.mkdir()
    for rel in ("commondir", "gitdir", "config.worktree", "worktrees"):  # never borrow refs
        target = gitdir / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for rel, data in clone.saved.items():
        target = gitdir / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if data is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def collect(clone: Clone, exit_code: int | None = 0, timed_out: bool = False,
            timeout: float | None = None, who: str = "proposer") -> tuple[str | None, str]:
    """Take the proposal back: (reason or None, commit). The commit (when there is one other
    than the base) is fetched into the repository as ``refs/autoresearch/incoming/<sha>``,
    so that a rejected one can be kept reachable and a good one run."""
    sanitize(clone)
    repo, base = clone.repo, clone.base
    tip = head(clone.path)
    if tip and tip != base:
        proc = subprocess.run(gitx.argv(repo, "-c", "gc.auto=0", "fetch", "-q",
                               "--no-tags", "--no-write-fetch-head", clone.path,
                               f"+HEAD:{INCOMING}{tip}"), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not git_ok(repo, "cat-file", "-e", f"{tip}^{{commit}}"):
            detail = proc.stderr.strip().splitlines()
            return (f"{who}'s commit could not be taken back: "
                    f"{detail[-1] if detail else 'fetch failed'}"), base
    reason, commit = validate_candidate(clone.path, clone.branch, base, [], exit_code,
                                        timed_out, timeout, who=who)
    if _sha(Path(clone.path) / LEDGER) != clone.ledger_sha:
        reason = f"{who} modified results.tsv (its read-only copy; the ledger is untouched)"
    return reason, commit


def salvage(clone: Clone, prefix: str) -> str | None:
    """A proposal cut short (a stop signal): keep whatever commit it made reachable in the
    repository under ``prefix`` before the clone goes. Returns that commit or None."""
    with contextlib.suppress(Exception):
        sanitize(clone)
        tip = head(clone.path)
        if tip and tip != clone.base:
            subprocess.run(gitx.argv(clone.repo, "-c", "gc.auto=0", "fetch", "-q",
                            "--no-tags", "--no-write-fetch-head", clone.path,
                            f"+HEAD:{prefix}{tip}"), capture_output=True,
                           stdin=subprocess.DEVNULL)
            return tip
    return None


def apply(clone: Clone, patch: Path, apply_patch) -> tuple[str | None, str]:
    """Queue mode: commit ``patch`` in the clone (``apply_patch(dir, patch)``), take it back."""
    problem = apply_patch(clone.path, patch)
    if problem:
        return problem, clone.base
    return collect(clone, who=f"patch {patch.name}")


def forget(repo: str, commit: str | None) -> None:
    """Drop the private incoming ref of ``commit`` (the caller has kept it reachable)."""
    if commit:
        git(repo, "update-ref", "-d", f"{INCOMING}{commit}", check=False)


def drop(clone: Clone | str | None) -> None:
    """Throw a clone away."""
    if clone is None:
        return
    path = clone.path if isinstance(clone, Clone) else clone
    if path and Path(path).parent == root():
        shutil.rmtree(path, ignore_errors=True)


def sweep(repo: str) -> list[str]:
    """Remove every clone made for ``repo`` (call it holding the loop's lock) and its
    incoming refs. Returns the removed paths."""
    gone = []
    me = os.path.realpath(repo)
    top = root()
    if top.is_dir():
        for entry in top.iterdir():
            try:
                owner = json.loads((entry / ".git" / OWNER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                owner = None
            if isinstance(owner, dict) and owner.get("repo") == me:
                shutil.rmtree(entry, ignore_errors=True)
                gone.append(str(entry))
    refs = git(repo, "for-each-ref", "--format=%(refname)", INCOMING, check=False)
    for ref in refs.split():
        git(repo, "update-ref", "-d", ref, check=False)
    return gone
