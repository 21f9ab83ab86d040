"""The harness's own git: every git command of the core goes through here.

A repository can make git run code: hooks (``.git/hooks/*``, ``core.hooksPath``), an
fsmonitor (``core.fsmonitor``), clean/smudge/process filters and diff drivers named by
``.gitattributes`` (``filter.<driver>.*``, ``diff.<driver>.textconv``/``.command``,
``diff.external``), a pager. A proposer or a candidate that wrote any of them would get its
code run inside the harness's ``update-ref``/``reset``/``status`` (a ``reference-transaction``
hook that appends a ghost best row). So every command here runs as::

    git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.pager=cat
        -c diff.external= -c commit.gpgsign=false [neutralized drivers] -C REPO ARGS

- hooks: git looks for ``/dev/null/<hook>``, which never exists, so no hook runs (git 2.9+);
- filters: the names of every ``filter.*`` driver the repository's config defines (all
  scopes, read with ``git config --get-regexp``, which runs nothing) are overridden with
  empty commands (git skips an empty filter command; ``filter.<x>.required=false`` makes the
  content pass through), for the commands that can run them (``FILTERING``);
  The names are read once and reused while every config file git would read is unchanged: the
  same inode, size, mtime and ctime (a write or a reset mtime moves the ctime, which no user
  can set back) and the same content (a store through a shared mapping moves no time), none
  changed in the last two seconds (a change within the clock's tick), none with an
  ``include``, each a plain file, and ``REPO/.git`` plainly a git directory git would take
  (else git reads the folders above); otherwise they are read again (``_drivers``). A query
  that fails is never kept, one that was killed fails the command (``GitError``). A driver
  whose name holds ``=`` (which ``-c`` cannot name) is emptied with ``--config-env``;
- diff drivers: diff-like commands (``DIFFING``) always get ``--no-ext-diff --no-textconv``
  (an emptied textconv would make git fail instead of skip it);
- environment: ``GIT_EXTERNAL_DIFF``, ``GIT_PAGER`` and the like are dropped,
  ``GIT_TERMINAL_PROMPT=0``, ``GIT_ATTR_NOSYSTEM=1`` (a system-wide attributes file adds
  nothing a session needs), ``maintenance.auto=false`` (no background ``git maintenance`` after
  the harness's merges and commits). The user's system and global config are otherwise read as usual
  (``safe.directory``, identity): ``GIT_CONFIG_NOSYSTEM`` is not set, because a driver
  defined there is neutralized like any other.

``index_flags(repo)`` lists index entries with skip-worktree or assume-unchanged set: with
either, git (and the lint, which reads the committed file) no longer sees the file Python runs,
so the experiment refuses them (exit 4, see ``flag_message``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time

BASE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.pager=cat",
        "-c", "diff.external=", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
        "-c", "core.sshCommand=ssh", "-c", "submodule.recurse=false",
        "-c", "maintenance.auto=false")
# Commands that can run a filter or a diff driver (checkout/convert paths, diffs).
FILTERING = frozenset({"add", "am", "apply", "blame", "cat-file", "checkout", "checkout-index",
                       "cherry-pick", "clone", "commit", "diff", "diff-files", "diff-index",
                       "diff-tree", "format-patch", "grep", "merge", "read-tree",
                       "reset", "restore", "revert", "show", "stash", "status", "switch",
                       "worktree", "update-index"})
# Commands that could run a textconv or an external diff: they get --no-ext-diff --no-textconv.
DIFFING = frozenset({"diff", "diff-files", "diff-index", "diff-tree", "log", "show"})
# GIT_CONFIG: ``git config`` (the names query) would read that one file, every other command
# the usual ones.
DROP_ENV = ("GIT_EXTERNAL_DIFF", "GIT_PAGER", "PAGER", "GIT_EDITOR", "GIT_SSH",
            "GIT_SSH_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_TRACE", "GIT_CONFIG")
# An empty value for ``--config-env`` (a driver name with "=", which ``-c`` cannot name).
EMPTY_ENV = "AR_GITX_EMPTY"


class GitError(RuntimeError):
    def __init__(self, args, returncode: int, stderr: str):
        super().__init__(f"git {' '.join(args)} failed: {stderr.strip()[:300]}")
        self.returncode = returncode
        self.stderr = stderr


def env(base: dict | None = None) -> dict:
    """The environment for the harness's git commands."""
    out = dict(os.environ if base is None else base)
    for name in DROP_ENV:
        out.pop(name, None)
    out["GIT_TERMINAL_PROMPT"] = "0"
    out["GIT_ATTR_NOSYSTEM"] = "1"
    out[EMPTY_ENV] = ""
    return out


def _config_plain(repo: str | None, pattern: str) -> list[str] | None:
    """The config names matching ``pattern``; None when git failed (1 is "none matched")."""
    argv = ["git", *BASE]
    if repo:
        argv += ["-C", repo]
    argv += ["config", "-z", "--name-only", "--get-regexp", pattern]
    done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, env=env(),
                          start_new_session=True)  # a Ctrl-C meant for the harness: not this
    if done.returncode < 0:  # killed (a same-user process can): no names is no answer
        raise GitError(argv[-5:], done.returncode, "the filter names query was killed")
    if done.returncode not in (0, 1):
        return None
    return [name for name in done.stdout.decode("utf-8", "replace").split("\0") if name]


# Environment that changes which config files git reads: with any of the first set, no reuse.
_CONFIG_ENV_NO_CACHE = ("GIT_DIR", "GIT_COMMON_DIR", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
                        "GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY")
_CONFIG_ENV = ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
               "GIT_CONFIG_NOSYSTEM")
RACY_SECONDS = 2.0
_cache: dict[tuple, tuple[tuple, list[str]]] = {}


def _plain_line(path: str) -> str | None:
    """A ``.git`` file's or a ``commondir``'s one line as git reads it (git drops only the
    line end), or None where it might read it otherwise (not a plain file, a space or a NUL)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a fifo must not block
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, 4097)
    except OSError:
        return None
    finally:
        os.close(fd)
    line = data.rstrip(b"\r\n")
    if len(data) > 4096 or not line or line != line.strip() or any(c in line for c in b"\0\r\n"):
        return None
    return os.fsdecode(line)


def _is_git_dir(gitdir: str, common: str) -> bool:
    """Whether git takes ``gitdir`` for a git directory (its ``is_git_directory``, stricter):
    if not, git goes on to ``repo`` itself and the folders above, which no name covers."""
    head = os.path.join(gitdir, "HEAD")
    try:
        st = os.lstat(head)
        if stat.S_ISLNK(st.st_mode):
            ok = os.readlink(head).startswith("refs/")
        elif stat.S_ISREG(st.st_mode) and st.st_size <= 255:
            with open(head, "rb") as handle:
                text = handle.read(256).removesuffix(b"\n")
            ok = ((text.startswith(b"ref: refs/") and b"\0" not in text and b"\n" not in text)
                  or (len(text) in (40, 64) and all(c in b"0123456789abcdef" for c in text)))
        else:
            ok = False
    except OSError:
        return False
    return ok and all(os.access(os.path.join(common, name), os.X_OK)
                      for name in ("objects", "refs"))


def _git_dirs(repo: str) -> tuple[str, str] | None:
    """(git dir, common dir) of the worktree at ``repo``, or None (not its top level, or not
    plainly what git would take)."""
    dot = os.path.join(repo, ".git")
    try:
        st = os.stat(dot)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        gitdir = dot
    else:
        line = _plain_line(dot)
        if line is None or not line.startswith("gitdir: "):
            return None
        gitdir = os.path.join(repo, line[len("gitdir: "):])
    common = gitdir
    commondir = os.path.join(gitdir, "commondir")
    if os.path.lexists(commondir):
        line = _plain_line(commondir)
        if line is None:
            return None
        common = os.path.join(gitdir, line)
    return (gitdir, common) if _is_git_dir(gitdir, common) else None


def _config_files(repo: str | None, environ) -> list[str] | None:
    """Every config file git reads in ``repo`` (existing or not), or None when unsure."""
    if not repo or any(environ.get(name) for name in _CONFIG_ENV_NO_CACHE):
        return None  # no -C: git reads the repository of whatever folder it runs in
    dirs = _git_dirs(repo)
    if dirs is None:
        return None
    gitdir, common = dirs
    files = [os.path.join(common, "config"), os.path.join(gitdir, "config.worktree"),
             os.path.join(common, "config.worktree")]
    home = environ.get("HOME", "")
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files += [environ.get("GIT_CONFIG_GLOBAL") or os.path.join(home, ".gitconfig"),
              os.path.join(xdg, "git", "config")]
    # The system files even under GIT_CONFIG_NOSYSTEM (git reads them where it is 0 or false).
    files.append(environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig")
    found = shutil.which("git", path=environ.get("PATH"))
    if found:  # a git built with another prefix reads PREFIX/etc/gitconfig
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(found)))
        files.append(os.path.join(prefix, "etc", "gitconfig"))
    return files


def _signature(files: list[str]) -> tuple | None:
    """The files' identities and contents (a store through a shared mapping moves no time), or
    None when one is racy (changed just now), not a plain file or has includes."""
    now = time.time()
    out = []
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a fifo must not block
        except (FileNotFoundError, NotADirectoryError):
            out.append(None)
            continue
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev:
                out.append("null")  # GIT_CONFIG_GLOBAL=/dev/null: always empty
                continue
            if not stat.S_ISREG(st.st_mode):
                return None  # a fifo, /dev/zero: git reads what it reads
            if now - st.st_ctime < RACY_SECONDS or now - st.st_mtime < RACY_SECONDS:
                return None
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        finally:
            os.close(fd)
        if b"include" in data.lower():
            return None  # an include can name any file: read the names every time
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, data))
    return tuple(out)


def _drivers(repo: str | None) -> list[str]:
    """The filter driver config names, reused while the config files are unchanged."""
    environ = os.environ
    files = _config_files(repo, environ)
    signature = _signature(files) if files is not None else None
    key = (repo and os.path.abspath(repo), *(environ.get(n) for n in _CONFIG_ENV))
    if signature is not None:
        hit = _cache.get(key)
        if hit is not None and hit[0] == signature:
            return hit[1]
    names = _config_plain(repo, r"^filter\..+\.")
    if names is None:  # git failed: its command will too, and nothing is kept
        return []
    if (signature is not None and _config_files(repo, environ) == files
            and _signature(files) == signature):  # unchanged while read
        _cache[key] = (signature, names)
    return names


def driver_overrides(repo: str | None) -> list[str]:
    """``-c`` pairs that empty every filter driver the config defines (git skips an empty
    filter command; ``required=false`` lets the content pass through unchanged)."""
    out: list[str] = []
    seen = set()
    for name in _drivers(repo):
        driver = name.partition(".")[2].rpartition(".")[0]
        if driver and driver not in seen:
            seen.add(driver)
            if "=" in driver:  # -c splits at the first "=": the empty value comes from the
                # environment (env() sets it; where a caller's lacks it, git refuses to run)
                out += [f"--config-env=filter.{driver}.{key}={EMPTY_ENV}"
                        for key in ("clean", "smudge", "process", "required")]
                continue
            out += ["-c", f"filter.{driver}.clean=", "-c", f"filter.{driver}.smudge=",
                    "-c", f"filter.{driver}.process=", "-c", f"filter.{driver}.required=false"]
    return out


def argv(repo: str | None, *args: str) -> list[str]:
    """The full command line for ``git ARGS`` in ``repo`` (None: no ``-C``). ``ARGS`` may
    start with ``-c NAME=VALUE`` pairs (a commit identity) before the subcommand."""
    at = 0
    while at + 1 < len(args) and args[at] in ("-c", "--work-tree", "--git-dir"):
        at += 2
    command = args[at] if at < len(args) else ""
    words = ["git", *BASE]
    if command in FILTERING:
        words += driver_overrides(repo)
    if repo:
        words += ["-C", repo]
    if command in DIFFING:
        return [*words, *args[:at + 1], "--no-ext-diff", "--no-textconv", *args[at + 1:]]
    return [*words, *args]


def run(repo: str | None, *args: str, text: bool = True, input=None,
        extra_env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Runs git (stdin /dev/null unless ``input``), output captured."""
    environment = env()
    if extra_env:
        environment.update(extra_env)
    kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(argv(repo, *args), capture_output=True, text=text, env=environment,
                          cwd=cwd, **kwargs)


def out(repo: str | None, *args: str, check: bool = True) -> str:
    """stdout, stripped; raises GitError on failure when ``check``, else ''."""
    done = run(repo, *args)
    if done.returncode != 0:
        if check:
            raise GitError(args, done.returncode, done.stderr)
        return ""
    return done.stdout.strip()


def ok(repo: str | None, *args: str) -> bool:
    return run(repo, *args).returncode == 0


# ---------------------------------------------------------------------------
# Index flags that hide a file from git
# ---------------------------------------------------------------------------


def index_flags(repo: str) -> list[tuple[str, str]]:
    """(path, 'skip-worktree' | 'assume-unchanged') for each flagged index entry."""
    done = run(repo, "ls-files", "-v", "-z", text=False)
    found = []
    for entry in done.stdout.split(b"\0"):
        if len(entry) < 3:
            continue
        tag, path = entry[:1].decode("ascii", "replace"), entry[2:].decode("utf-8", "replace")
        if tag in ("S", "s"):
            found.append((path, "skip-worktree"))
        elif tag.islower():
            found.append((path, "assume-unchanged"))
    return found


def flag_message(flags: list[tuple[str, str]]) -> str:
    path, what = flags[0]
    option = "--no-skip-worktree" if what == "skip-worktree" else "--no-assume-unchanged"
    more = f" (and {len(flags) - 1} more)" if len(flags) > 1 else ""
    return (f"{path} is marked {what} in the index{more}: git no longer compares it with the "
            f"file Python would run; clear it: git update-index {option} -- {path}")
