"""The candidate-level git operations the loop and its slots share (restore a branch to its base,
keep commits reachable under ``refs/autoresearch/``, validate what a proposer left, apply a
queue patch).

Every git command is built by ``arcore.gitx.argv`` (no repository hook, fsmonitor, filter,
diff driver or pager runs inside the harness): a hook a proposer installed never runs in the
loop's ``reset``/``update-ref``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from arcore import gitx
from arcore import ledger

NAME = "run-loop.sh"
STATE_DIR = ".autoresearch"
KEEP_REMOVED_MAX = 10 * 1024 * 1024  # new untracked files up to this size are moved aside
EDITABLE = ("train.py",)

REJECTED = "refs/autoresearch/rejected/"
DISCARDED = "refs/autoresearch/discarded/"
UNJUDGED = "refs/autoresearch/unjudged/"
WORKTREE = "refs/autoresearch/worktree/"

OK, FAILED, USAGE, HARNESS, UNSAFE, NOTHING, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
SAFE = gitx.BASE  # kept for callers that build their own git command line

class LoopError(Exception):
    """A reason to stop the loop: ``code`` is the exit status, the message one stderr line."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"{NAME}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Git
# ---------------------------------------------------------------------------


def git(repo: str, *args: str, check: bool = True, env: dict | None = None) -> str:
    """Run git in ``repo``; its stdout stripped of the final newline. Raises LoopError(1).
    In a session of its own: a Ctrl-C meant for the loop never cuts a git step short."""
    proc = subprocess.run(gitx.argv(repo, *args), capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LoopError(FAILED, f"git {' '.join(args[:3])} failed: {detail[-1] if detail else ''}")
    return proc.stdout.rstrip("\n")


def git_ok(repo: str, *args: str) -> bool:
    return subprocess.run(gitx.argv(repo, *args), capture_output=True,
                          stdin=subprocess.DEVNULL, start_new_session=True).returncode == 0


def head(repo: str) -> str | None:
    out = git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False)
    return out or None


def current_branch(repo: str) -> str | None:
    """The checked-out branch's short name, or None on a detached HEAD."""
    out = git(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return out or None


def default_branch(repo: str) -> str | None:
    """origin's HEAD branch, else main or master when it exists."""
    out = git(repo, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD", check=False)
    if out:
        return out.split("/", 1)[-1]
    for name in ("main", "master"):
        if git_ok(repo, "show-ref", "--verify", "-q", f"refs/heads/{name}"):
            return name
    return None


def tracked_changes(repo: str) -> list[str]:
    """Paths with staged or unstaged changes to tracked files."""
    out = git(repo, "status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in out.splitlines() if line.strip()]


def untracked(repo: str) -> set[str]:
    """Untracked, non-ignored files (the session's files are ignored via info/exclude)."""
    out = git(repo, "ls-files", "--others", "--exclude-standard", "-z")
    return {p for p in out.split("\0") if p}


def commits_between(repo: str, base: str, tip: str) -> list[str]:
    out = git(repo, "rev-list", "--reverse", f"{base}..{tip}")
    return out.split()


def changed_files(repo: str, base: str, tip: str) -> list[str]:
    out = git(repo, "diff", "--name-only", "--no-renames", base, tip)
    return [p for p in out.splitlines() if p]


def is_ancestor(repo: str, older: str, newer: str) -> bool:
    return git_ok(repo, "merge-base", "--is-ancestor", older, newer)


def subject(repo: str, commit: str) -> str:
    return git(repo, "log", "-1", "--format=%s", commit)


def short(commit: str | None) -> str:
    return (commit or "")[: ledger.SHORT]


def keep_reachable(repo: str, prefix: str, commit: str) -> None:
    git(repo, "update-ref", f"{prefix}{commit}", commit)


def save_worktree(repo: str) -> str | None:
    """Keep uncommitted tracked changes reachable (``git stash create``) before a reset."""
    if not tracked_changes(repo):
        return None
    sha = git(repo, "stash", "create", "autoresearch: tree left by an interrupted step",
              check=False)
    if sha:
        git(repo, "update-ref", f"{WORKTREE}{sha}", sha)
        log(f"uncommitted changes to tracked files saved as {WORKTREE}{sha}; "
            f"get them back with: git stash apply {short(sha)}")
    return sha or None


def remove_new_files(repo: str, before: set[str] | list[str] | None) -> list[str]:
    """Take untracked files that were not there before out of the tree (and directories they
    leave empty). ``before`` None means unknown: nothing is removed. A regular file up to
    KEEP_REMOVED_MAX bytes is moved under .autoresearch/removed/<time>/ (it may be the user's,
    made while the step ran); a bigger one (a checkpoint, a download) is deleted."""
    if before is None:
        return []
    gone = sorted(untracked(repo) - set(before))
    root = Path(repo).resolve()
    aside = root / STATE_DIR / "removed" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for rel in gone:
        path = root / rel
        with contextlib.suppress(FileNotFoundError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_size <= KEEP_REMOVED_MAX:
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, aside / rel)
                moved.append(rel)
            else:
                path.unlink()
        parent = path.parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    if moved:
        log(f"moved {len(moved)} new untracked file(s) out of the tree into "
            f"{aside.relative_to(root)}/ ({', '.join(moved[:3])}{' ...' if len(moved) > 3 else ''})")
    return gone


def restore(repo: str, branch: str, base: str, before: set[str] | list[str] | None,
            prefix: str = REJECTED, rewritten: bool = False) -> list[str]:
    """Put ``branch`` back at ``base`` with a clean tree: the state before a step began.

    Commits between base and the old tip stay reachable under ``prefix``; uncommitted tracked
    changes under WORKTREE; only untracked files absent from ``before`` are removed. The reset
    happens only when the old tip descends from ``base`` (a user's rewrite is never undone),
    or with ``rewritten`` (the loop watched the step: a rewrite is the proposer's, and the
    kept commit it dropped goes back on the branch). Returns the removed files.
    """
    if current_branch(repo) != branch:
        save_worktree(repo)
        git(repo, "checkout", "-q", "-f", branch)
    tip = head(repo)
    if tip and tip != base and (rewritten or is_ancestor(repo, base, tip)):
        for commit in commits_between(repo, base, tip):
            keep_reachable(repo, prefix, commit)
        save_worktree(repo)
        # a file that was untracked before and got committed would vanish with the reset
        kept = {}
        for rel in before or ():
            path = Path(repo) / rel
            if path.is_file() and git_ok(repo, "cat-file", "-e", f"{tip}:{rel}"):
                kept[rel] = path.read_bytes()
        git(repo, "reset", "-q", "--hard", base)
        for rel, data in kept.items():
            path = Path(repo) / rel
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    elif tracked_changes(repo):
        save_worktree(repo)
        git(repo, "reset", "-q", "--hard", "HEAD")
    return remove_new_files(repo, before)


def reset_worktree(path: str, branch: str, base: str) -> None:
    """A worker worktree at ``base`` on its branch, no tracked change, no stray untracked file."""
    if current_branch(path) != branch:
        git(path, "checkout", "-q", "-f", "-B", branch, base)
    git(path, "reset", "-q", "--hard", base)
    git(path, "clean", "-q", "-f", "-d")


def revert_candidate(repo: str, base: str, candidate: str, prefix: str) -> bool:
    """Reset HEAD from ``candidate`` back to ``base`` iff HEAD is exactly the candidate."""
    if candidate == base or head(repo) != candidate:
        return False
    keep_reachable(repo, prefix, candidate)
    save_worktree(repo)
    git(repo, "reset", "-q", "--hard", base)
    return True

# ---------------------------------------------------------------------------
# Proposer validation
# ---------------------------------------------------------------------------


def validate_candidate(repo: str, branch: str, base: str, before: set[str] | list[str],
                       exit_code: int | None = 0, timed_out: bool = False,
                       timeout: float | None = None, editable: tuple = EDITABLE,
                       who: str = "proposer") -> tuple[str | None, str]:
    """Check what a proposer (or a queue patch) left: exactly one new commit on top of
    ``base`` changing only ``editable`` files, a clean tree, no new untracked files.

    Returns (reason, commit): reason None when the candidate is good; commit is the candidate
    (or, for a rejection, the commit a crash row names: the offending tip, else the base).
    """
    if current_branch(repo) != branch:
        return f"{who} left branch {branch}", base
    tip = head(repo) or base
    named = tip if tip != base else base
    if timed_out:
        return f"{who} timed out after {timeout:g}s" if timeout else f"{who} timed out", named
    if exit_code not in (0, None):
        return f"{who} exited with status {exit_code}", named
    if tip != base and not is_ancestor(repo, base, tip):
        return f"{who} rewrote history below the last kept commit {short(base)}", named
    commits = commits_between(repo, base, tip)
    if not commits:
        return f"{who} made no commit", base
    if len(commits) > 1:
        return f"{who} made {len(commits)} commits (exactly one is allowed)", tip
    dirty = tracked_changes(repo)
    if dirty:
        return f"{who} left uncommitted changes: {', '.join(dirty[:3])}", tip
    new = sorted(untracked(repo) - set(before))
    if new:
        more = " ..." if len(new) > 3 else ""
        return f"{who} left untracked files: {', '.join(new[:3])}{more}", tip
    files = changed_files(repo, base, tip)
    others = [f for f in files if f not in editable]
    if others:
        return f"{who} changed {', '.join(others[:3])} (only {', '.join(editable)} may change)", tip
    if not files:
        return f"{who}'s commit changes nothing", tip
    return None, tip


# ---------------------------------------------------------------------------
# Queue mode
# ---------------------------------------------------------------------------


def list_patches(directory: str) -> list[Path]:
    """The queue's patch files in name order (hidden files and directories skipped)."""
    root = Path(directory)
    return sorted((p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def next_patch(directory: str, done: list[str] | set[str]) -> Path | None:
    finished = set(done)
    for patch in list_patches(directory):
        if patch.name not in finished:
            return patch
    return None


def _is_mail(patch: Path) -> bool:
    with open(patch, "rb") as handle:
        head_bytes = handle.read(4096)
    return head_bytes.startswith(b"From ") or b"\nSubject:" in head_bytes \
        or head_bytes.startswith(b"Subject:")


def apply_patch(repo: str, patch: Path) -> str | None:
    """Commit ``patch`` on HEAD: ``git am`` for a mail patch (format-patch), else ``git apply``
    plus a commit named after the file. Returns None, or why it did not apply."""
    if _is_mail(patch):
        proc = subprocess.run(gitx.argv(repo, "am", "--quiet", "--no-3way", str(patch)),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            subprocess.run(gitx.argv(repo, "am", "--abort"), capture_output=True,
                           stdin=subprocess.DEVNULL)
            lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            return f"patch {patch.name} does not apply: {lines[0] if lines else 'git am failed'}"
        return None
    proc = subprocess.run(gitx.argv(repo, "apply", "--index", str(patch)),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f"patch {patch.name} does not apply: {lines[0] if lines else 'git apply failed'}"
    proc = subprocess.run(gitx.argv(repo, "commit", "-q", "-m", patch.stem),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return f"patch {patch.name}: commit failed: {lines[-1] if lines else ''}"
    return None


# ---------------------------------------------------------------------------
# Moving a waiting proposal onto a new best
# ---------------------------------------------------------------------------


def _blob_text(repo: str, rev: str, path: str) -> bytes | None:
    proc = subprocess.run(gitx.argv(repo, "cat-file", "blob", f"{rev}:{path}"),
                          capture_output=True, stdin=subprocess.DEVNULL)
    return proc.stdout if proc.returncode == 0 else None


def rebase_onto(repo: str, commit: str, old_base: str, new_base: str,
                path: str = "train.py") -> tuple[str | None, str]:
    """Carry ``commit``'s change of ``path`` (made on ``old_base``) onto ``new_base`` by a
    3-way merge of that one file, without touching any work tree or index of the repo.

    Returns (new commit, "") or (None, why it no longer applies: a conflict, or the change is
    already in ``new_base``). The new commit keeps the author and message of the old one."""
    import tempfile  # noqa: PLC0415

    ours, base, theirs = (_blob_text(repo, rev, path) for rev in (new_base, old_base, commit))
    if ours is None or base is None or theirs is None:
        return None, f"{path} is missing on one side"
    with tempfile.TemporaryDirectory(prefix="autoresearch-rebase-") as tmp:
        files = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            file = Path(tmp) / name
            file.write_bytes(data)
            files.append(str(file))
        merged = subprocess.run(gitx.argv(None, "merge-file", "-p", "-q", *files),
                                capture_output=True, stdin=subprocess.DEVNULL)
    if merged.returncode != 0:
        return None, "its change of train.py conflicts with the new best"
    if merged.stdout == ours:
        return None, "its change of train.py is already in the new best"
    return commit_file(repo, commit, new_base, path, merged.stdout)


def replace_onto(repo: str, commit: str, new_base: str, path: str = "train.py",
                 note: str = "") -> tuple[str | None, str]:
    """``commit``'s whole ``path`` on top of ``new_base`` (for a change that conflicts with
    the new best: the candidate is its file as it ran, with the best as its parent). None
    when ``new_base`` already has that file."""
    theirs, ours = _blob_text(repo, commit, path), _blob_text(repo, new_base, path)
    if theirs is None or ours is None:
        return None, f"{path} is missing on one side"
    if theirs == ours:
        return None, "its train.py is already the new best's"
    return commit_file(repo, commit, new_base, path, theirs, note)


def commit_file(repo: str, commit: str, new_base: str, path: str, data: bytes,
                note: str = "") -> tuple[str | None, str]:
    """A commit on ``new_base`` whose ``path`` is ``data``, with ``commit``'s author and
    message (plus ``note``), made without any work tree or index of the repo."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="autoresearch-rebase-") as tmp:
        blob = subprocess.run(gitx.argv(repo, "hash-object", "-w", "--stdin"),
                              input=data, capture_output=True).stdout.decode().strip()
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", new_base, env=env)
        mode = git(repo, "ls-tree", new_base, "--", path).split(" ", 1)[0] or "100644"
        git(repo, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        tree = git(repo, "write-tree", env=env)
    fmt = git(repo, "log", "-1", "--format=%an%x00%ae%x00%aI%x00%B", commit).split("\0", 3)
    env = {**os.environ, "GIT_AUTHOR_NAME": fmt[0], "GIT_AUTHOR_EMAIL": fmt[1],
           "GIT_AUTHOR_DATE": fmt[2]}
    message = fmt[3] if len(fmt) > 3 else "rebased proposal\n"
    if note:
        message = message.rstrip("\n") + f"\n\n{note}\n"
    proc = subprocess.run(gitx.argv(repo, "commit-tree", tree, "-p", new_base),
                          input=message, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None, f"git commit-tree failed: {proc.stderr.strip()[-200:]}"
    return proc.stdout.strip(), ""