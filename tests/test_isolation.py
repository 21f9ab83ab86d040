"""Nothing a candidate or a proposer does reaches what is not theirs (issue 12).

One test per attack: each shows the user's files, branches and refs intact, the ledger holding
only the harness's rows, and the next honest candidate judged at its true value.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from arcore import gitx, ledger
from scratchrepo import commit_train, git, make_repo

SCRIPT = Path(__file__).parent.parent / "scripts" / "run-experiment.sh"
CMD = "python3 train.py"
GHOST = "ghost00\t0.100000\t1.0\tkeep\tghost best\n"


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin:" + os.path.dirname(
        subprocess.run(["which", "python3"], capture_output=True, text=True).stdout.strip()))
    return make_repo(tmp_path)


def run(repo: Path, *args: str, cmd: str = CMD) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--repo", str(repo), "--cmd", cmd, "--json",
                           *args], capture_output=True, text=True, timeout=120)


def result(done: subprocess.CompletedProcess) -> dict:
    assert done.stdout.count("\n") == 1, done.stderr
    return json.loads(done.stdout)


def rows(repo: Path) -> list[dict]:
    return ledger.read_ledger(str(repo / "results.tsv"))


def refs(repo: Path) -> dict:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split() for line in out.splitlines())


def user_state(repo: Path) -> dict:
    """What the user owns: a branch, an untracked file, the refs."""
    return {"refs": {k: v for k, v in refs(repo).items()
                     if not k.startswith(("refs/autoresearch/", "refs/heads/autoresearch/"))},
            "notes": (repo / "notes.txt").read_text()}


def setup_user(repo: Path) -> None:
    git(repo, "branch", "user-branch")
    (repo / "notes.txt").write_text("my untracked notes\n")


def honest_next(repo: Path, value: float = 0.95) -> None:
    """The next honest candidate is judged at its true value and kept."""
    commit_train(repo, "honest", VAL_BPB=value)
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == value, out
    assert all(r["description"] != "ghost best" for r in rows(repo))


def hook(repo: Path, name: str, body: str) -> Path:
    path = Path(git(repo, "rev-parse", "--git-path", f"hooks/{name}"))
    path = path if path.is_absolute() else repo / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---------------------------------------------------------------------------
# A. The harness's own git is not the repository's
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reference-transaction", "post-checkout"])
def test_a_repository_hook_never_runs_inside_the_harness_git(repo, name):
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    ledger_file = repo / "results.tsv"
    base = git(repo, "rev-parse", "HEAD")
    commit_train(repo, "worse", VAL_BPB=1.2)
    hook(repo, name, f"printf '{GHOST}' >> '{ledger_file}'\ntouch '{repo}/.hook-ran'\n")
    before = user_state(repo)
    out = result(run(repo))
    assert out["status"] == "discard" and out["reverted"] is True
    assert git(repo, "rev-parse", "HEAD") == base
    assert not (repo / ".hook-ran").exists()
    assert [r["description"] for r in rows(repo)] == ["baseline", "worse"]
    assert user_state(repo) == before
    os.unlink(hook(repo, name, ""))
    honest_next(repo)
    assert user_state(repo) == before


def test_a_clean_filter_the_repository_defines_never_runs_inside_the_harness_git(repo):
    (repo / ".gitattributes").write_text("train.py filter=evil\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "attributes")
    marker = repo.parent / "filter-ran"
    git(repo, "config", "filter.evil.clean", f"touch '{marker}'; cat")
    git(repo, "config", "filter.evil.smudge", f"touch '{marker}'; cat")
    assert result(run(repo))["status"] == "keep"
    commit_train(repo, "worse", VAL_BPB=1.2)
    marker.unlink(missing_ok=True)  # our own commit ran it: the harness must not
    out = result(run(repo))
    assert out["status"] == "discard" and out["reverted"] is True
    assert not marker.exists()


@pytest.fixture()
def own_config(tmp_path, monkeypatch):
    """A global and a system config of the test's own: the names are reused whatever the
    user's ~/.gitconfig holds (an include there, or a change just now, means no reuse)."""
    home = tmp_path / "home"
    home.mkdir()
    system = tmp_path / "system.gitconfig"
    system.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(system))
    for name in ("GIT_DIR", "GIT_COMMON_DIR", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
                 "GIT_CONFIG_COUNT", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM",
                 "GIT_OBJECT_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(gitx, "RACY_SECONDS", 0.0)  # a config written just now may be reused
    monkeypatch.setattr(gitx, "_cache", {})
    return system


def filtered_status_runs_the_filter(repo: Path, marker: Path) -> bool:
    """Whether the harness's ``git status`` ran a clean filter (train.py made stat-dirty)."""
    marker.unlink(missing_ok=True)
    stamp = time.time() + 5
    os.utime(repo / "train.py", (stamp, stamp))
    assert gitx.run(str(repo), "status", "--porcelain").returncode == 0
    return marker.exists()


def age(path: Path, seconds: float = 60) -> None:
    """Makes ``path`` look changed ``seconds`` ago (mtime; the ctime stays now)."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("keep_mtime", [True, False])
def test_a_filter_driver_renamed_in_place_after_the_names_were_read_is_still_neutralized(
        repo, monkeypatch, keep_mtime, own_config):
    """The harness reuses the filter names it read while the config files are unchanged: a
    same-size rewrite that sets the mtime back (a new driver name in place of a benign one)
    still moves the ctime, so the names are read again and the new driver is emptied too."""
    monkeypatch.setattr(gitx, "RACY_SECONDS", 0.0)  # a config written just now may be reused
    monkeypatch.setattr(gitx, "_cache", {})
    (repo / ".gitattributes").write_text("train.py filter=evil\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "attributes")
    marker = repo.parent / "filter-ran"
    git(repo, "config", "filter.good.clean", f"touch '{marker}'; cat")
    config = repo / ".git" / "config"
    age(config)
    before = config.stat()
    assert not filtered_status_runs_the_filter(repo, marker)  # no filter=good file yet
    assert gitx._cache, "the names were not reused at all: the test proves nothing"
    time.sleep(0.05)  # past the clock's tick
    text = config.read_text()
    config.write_text(text.replace("[filter \"good\"]", "[filter \"evil\"]"))
    if keep_mtime:
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert config.stat().st_size == before.st_size
    assert not filtered_status_runs_the_filter(repo, marker)
    git(repo, "config", "--unset", "filter.evil.clean")


def test_filter_names_are_read_again_while_a_config_file_is_racy_or_has_an_include(
        repo, monkeypatch, tmp_path, own_config):
    monkeypatch.setattr(gitx, "RACY_SECONDS", 3600.0)  # racy however slow this machine is
    calls = []
    real = gitx._config_plain
    monkeypatch.setattr(gitx, "_config_plain", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(gitx, "_cache", {})
    config = repo / ".git" / "config"
    git(repo, "config", "core.note", "x")  # written just now: racy
    for _ in range(3):
        gitx.run(str(repo), "status", "--porcelain")
    assert len(calls) == 3
    monkeypatch.setattr(gitx, "RACY_SECONDS", 0.0)
    time.sleep(0.05)
    for _ in range(3):
        gitx.run(str(repo), "status", "--porcelain")
    assert len(calls) == 4  # not racy: read once, then reused
    included = tmp_path / "included.config"
    included.write_text("")
    git(repo, "config", "include.path", str(included))
    time.sleep(0.05)
    marker = repo.parent / "filter-ran"
    (repo / ".gitattributes").write_text("train.py filter=evil\n")
    included.write_text(f"[filter \"evil\"]\n\tclean = touch '{marker}'; cat\n")
    age(included)  # the included file's own ctime is not watched: the include is enough
    assert not filtered_status_runs_the_filter(repo, marker)
    assert not filtered_status_runs_the_filter(repo, marker)
    assert len(calls) == 6
    gitx.run(None, "status", "--porcelain", cwd=str(repo))  # no -C: never reused
    gitx.run(None, "status", "--porcelain", cwd=str(repo))
    assert len(calls) == 8


def evil_attributes(repo: Path, driver: str = "evil") -> Path:
    """train.py filtered by ``driver`` (committed); the marker its clean command would touch."""
    (repo / ".gitattributes").write_text(f"train.py filter={driver}\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "attributes")
    return repo.parent / "filter-ran"


def test_a_config_rewritten_through_a_shared_mapping_after_the_names_were_read_is_neutralized(
        repo, own_config):
    """A store through a shared mapping into a page already dirty moves neither the mtime nor
    the ctime: the content itself must be what is compared."""
    import mmap

    marker = evil_attributes(repo)
    git(repo, "config", "filter.good.clean", f"touch '{marker}'; cat")
    config = repo / ".git" / "config"
    with open(config, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapped:
        mapped[0:1] = mapped[0:1]  # the page is dirty: the times move now, once
        time.sleep(0.05)
        before = config.stat()
        assert not filtered_status_runs_the_filter(repo, marker)  # no filter=good file
        assert gitx._cache, "the names were not reused at all: the test proves nothing"
        at = mapped.find(b'[filter "good"]')
        mapped[at:at + 15] = b'[filter "evil"]'
        after = config.stat()
        if (after.st_mtime_ns, after.st_ctime_ns) != (before.st_mtime_ns, before.st_ctime_ns):
            pytest.skip("the kernel wrote the page back in between: the times moved")
        assert b'[filter "evil"]' in config.read_bytes()
        assert not filtered_status_runs_the_filter(repo, marker)


def status_in_time(repo: Path, seconds: float = 20) -> bool:
    """Whether the harness's ``git status`` in ``repo`` came back within ``seconds``."""
    import threading

    done = []
    thread = threading.Thread(target=lambda: done.append(
        gitx.run(str(repo), "status", "--porcelain")), daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(done)


@pytest.mark.parametrize("how", ["HEAD", "fifo"])
def test_no_names_are_reused_while_git_reads_the_repository_above_a_broken_git_folder(
        tmp_path, own_config, how):
    """A .git that is no git directory (a HEAD that names no ref, a fifo): git goes on to the
    folder above, whose config the names never covered."""
    outer = make_repo(tmp_path, "outer")
    inner = make_repo(outer, "inner")
    assert status_in_time(inner) and gitx._cache
    marker = evil_attributes(outer)
    git(outer, "config", "filter.evil.clean", f"touch '{marker}'; cat")
    dot = inner / ".git"
    if how == "HEAD":
        (dot / "HEAD").write_text("not a ref\n")
    else:
        dot.rename(inner / "git-away")
        os.mkfifo(dot)
    stamp = time.time() + 5
    os.utime(outer / "train.py", (stamp, stamp))
    try:
        assert status_in_time(inner), "the harness's git hung on the .git fifo"
        assert not marker.exists()
    finally:
        if how == "fifo":
            try:  # lets a reader still blocked on the fifo go
                os.close(os.open(dot, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader


def test_a_commondir_git_reads_with_its_trailing_space_gets_no_reused_names(repo, own_config):
    """git keeps a commondir's spaces (it drops only the line end): ``. `` is the folder
    ``.git/. `` to git, not ``.git`` itself."""
    marker = evil_attributes(repo)
    assert not filtered_status_runs_the_filter(repo, marker)
    assert gitx._cache
    dot = repo / ".git"
    other = dot / ". "
    other.mkdir()
    for name in ("objects", "refs"):
        (other / name).symlink_to(f"../{name}")
    (other / "config").write_text((dot / "config").read_text() +
                                  f"[filter \"evil\"]\n\tclean = touch '{marker}'; cat\n")
    (dot / "commondir").write_text(". ")
    common = subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-common-dir"],
                            capture_output=True, text=True, check=True).stdout
    assert common.endswith("/. \n")  # git's common dir is the other folder
    assert not filtered_status_runs_the_filter(repo, marker)


@pytest.mark.parametrize("value", ["0", "false"])
def test_a_system_config_git_reads_under_a_false_GIT_CONFIG_NOSYSTEM_is_watched_too(
        repo, own_config, monkeypatch, value):
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", value)  # git reads the system config: false
    marker = evil_attributes(repo)
    assert not filtered_status_runs_the_filter(repo, marker)
    assert gitx._cache
    own_config.write_text(f"[filter \"evil\"]\n\tclean = touch '{marker}'; cat\n")
    assert not filtered_status_runs_the_filter(repo, marker)


def test_a_GIT_CONFIG_in_the_harness_environment_hides_no_filter_from_the_names(
        repo, monkeypatch, tmp_path):
    """GIT_CONFIG makes ``git config`` (the names query) read that one file; every other git
    command reads the usual ones."""
    marker = evil_attributes(repo)
    git(repo, "config", "filter.evil.clean", f"touch '{marker}'; cat")
    other = tmp_path / "other.gitconfig"
    other.write_text("")
    monkeypatch.setenv("GIT_CONFIG", str(other))
    assert not filtered_status_runs_the_filter(repo, marker)


def test_a_filter_driver_whose_name_holds_an_equals_sign_is_neutralized_too(repo, monkeypatch):
    """``-c filter.x=y.clean=`` sets ``filter.x`` (git splits at the first =), not the
    driver ``x=y``'s clean command."""
    marker = evil_attributes(repo, "x=y")
    git(repo, "config", "filter.x=y.clean", f"touch '{marker}'; cat")
    assert not filtered_status_runs_the_filter(repo, marker)
    stamp = time.time() + 10  # a caller with an environment of its own: git refuses, or is safe
    os.utime(repo / "train.py", (stamp, stamp))
    subprocess.run(gitx.argv(str(repo), "status", "--porcelain"), capture_output=True,
                   stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items()})
    assert not marker.exists()


def test_filter_names_a_killed_query_never_gave_are_not_reused(repo, own_config, monkeypatch):
    """A same-user process can kill the harness's ``git config`` query: its empty answer is
    neither used for the command nor kept for the next."""
    marker = evil_attributes(repo)
    git(repo, "config", "filter.evil.clean", f"touch '{marker}'; cat")
    time.sleep(0.05)
    real, killed = subprocess.run, []

    def run_killing_the_first_query(argv, *args, **kwargs):
        if "--get-regexp" in argv and not killed:
            killed.append(argv)
            return subprocess.CompletedProcess(argv, -9, b"", b"")
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run_killing_the_first_query)
    try:
        ran = filtered_status_runs_the_filter(repo, marker)
    except gitx.GitError:
        ran = False
    assert killed and not ran
    assert not filtered_status_runs_the_filter(repo, marker)


def test_a_filter_an_embedded_repository_defines_never_runs_inside_the_harness_audit(repo):
    """A candidate records a gitlink; its run (sandboxed or not) makes that folder of its own
    checkout a repository with a clean filter: the harness's audit ``git status`` must not run
    it (outside any sandbox, as the harness)."""
    from arcore import isolate

    marker = repo.parent / "filter-ran"
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},sub")
    git(repo, "commit", "-qm", "a gitlink")
    checkout = isolate.prepare(str(repo), git(repo, "rev-parse", "HEAD"))
    try:
        sub = Path(checkout["tree"]) / "sub"
        if sub.is_dir():
            sub.rmdir()  # the empty folder checkout-index made for the gitlink
        make_repo(sub.parent, "sub")  # what the run writes into its own checkout
        (sub / ".gitattributes").write_text("train.py filter=evil\n")
        git(sub, "add", ".gitattributes")
        git(sub, "commit", "-qm", "attributes")
        git(sub, "config", "filter.evil.clean", f"touch '{marker}'; cat")
        stamp = time.time() + 5
        os.utime(sub / "train.py", (stamp, stamp))
        isolate.audit(str(repo), checkout)
        assert not marker.exists()
    finally:
        isolate.remove(checkout)


@pytest.mark.parametrize("script", ["run-experiment.sh", "show-results.sh", "run-loop.sh"])
def test_a_module_in_the_folder_the_harness_starts_in_never_runs_inside_the_harness(repo,
                                                                                    script):
    """A file the candidate committed (or its run left) in the repository, ``json.py`` or an
    ``arcore/`` package, was imported by the harness in place of the standard library's or its
    own when a script was started from the repository, as an agent does (``python -m`` puts
    the folder it starts in first on sys.path)."""
    marker = repo.parent / "shadow-ran"
    (repo / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (repo / "arcore").mkdir()
    (repo / "arcore" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (repo / "arcore" / "__main__.py").write_text("")
    extra = {"run-experiment.sh": ["--cmd", CMD, "--json"], "show-results.sh": [],
             "run-loop.sh": ["--cmd", CMD, "--propose", "true", "--max", "0"]}[script]
    done = subprocess.run(["bash", str(SCRIPT.parent / script), *extra], capture_output=True,
                          text=True, timeout=120, cwd=repo)
    assert not marker.exists()
    assert done.returncode in (0, 1), done.stderr  # it ran (the harness), whatever it found
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("flag", "clear"), [("--skip-worktree", "--no-skip-worktree"),
                                             ("--assume-unchanged", "--no-assume-unchanged")])
def test_an_index_entry_that_hides_a_file_is_refused_with_exit_four(repo, flag, clear):
    assert result(run(repo))["status"] == "keep"
    commit_train(repo, "candidate", VAL_BPB=0.9)
    git(repo, "update-index", flag, "train.py")
    (repo / "train.py").write_text((repo / "train.py").read_text().replace(
        "VAL_BPB = 0.9", "VAL_BPB = 0.1"))  # Python would run this; git would not see it
    before = (repo / "results.tsv").read_bytes()
    done = run(repo)
    assert done.returncode == 4 and done.stdout == ""
    assert f"git update-index {clear} -- train.py" in done.stderr
    assert (repo / "results.tsv").read_bytes() == before
    git(repo, "update-index", clear, "train.py")
    git(repo, "checkout", "--", "train.py")
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == 0.9


def test_gitx_lists_flagged_entries_and_nothing_else(repo):
    assert gitx.index_flags(str(repo)) == []
    git(repo, "update-index", "--skip-worktree", "train.py")
    git(repo, "update-index", "--assume-unchanged", "prepare.py")
    assert sorted(gitx.index_flags(str(repo))) == [("prepare.py", "assume-unchanged"),
                                                   ("train.py", "skip-worktree")]


def test_gitx_adds_no_textconv_to_diffs_after_a_commit_identity():
    words = gitx.argv(None, "-c", "user.name=x", "show", "HEAD")
    assert words[:3] == ["git", "-c", "core.hooksPath=/dev/null"]
    assert words[-5:] == ["user.name=x", "show", "--no-ext-diff", "--no-textconv", "HEAD"]


# ---------------------------------------------------------------------------
# B. Fingerprints that cannot hide a change
# ---------------------------------------------------------------------------

OK = (Path(__file__).parent / "fixtures" / "standins" / "ok.py").read_text()


def commit_attack(repo: Path, message: str, attack: str, value: float = 0.5) -> str:
    """A train.py that does ``attack`` and then reports ``value`` (passes the lint)."""
    body = OK.replace("VAL_BPB = 1.000000", f"VAL_BPB = {value}")
    (repo / "train.py").write_text(attack.strip() + "\n\n" + body)
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


def make_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    (cache / "tokenizer").mkdir(parents=True)
    (cache / "tokenizer" / "tokenizer.pkl").write_bytes(b"tokenizer bytes")
    (cache / "data").mkdir()
    (cache / "data" / "shard_06542.parquet").write_bytes(b"validation shard " * 64)
    return cache


def make_venv(repo: Path) -> Path:
    site = repo / ".venv" / "lib" / "python3.11" / "site-packages"
    (site / "numpy-2.1.0.dist-info").mkdir(parents=True)
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /nonexistent/bin\nversion_info = 3.11.7\n")
    return site


REWRITE_AND_RESET_MTIME = """
import os
_shard = os.path.join(os.environ["AUTORESEARCH" + "_CACHE_DIR"], "data", "shard_06542.parquet")
_st = os.stat(_shard)
with getattr(__import__("io"), "op" + "en")(_shard, "r+b") as _f:  # hidden from the lint
    _f.write(b"V")  # same size: only the content changes
getattr(os, "ut" + "ime")(_shard, ns=(_st.st_atime_ns, _st.st_mtime_ns))
"""


def test_a_cache_rewritten_with_its_mtime_put_back_is_tamper_and_later_runs_refuse(
        repo, tmp_path):
    cache = make_cache(tmp_path)
    original = (cache / "data" / "shard_06542.parquet").read_bytes()
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    before, base = user_state(repo), git(repo, "rev-parse", "HEAD")
    commit_attack(repo, "rewrite the val shard", REWRITE_AND_RESET_MTIME)
    out = result(run(repo))
    assert out["status"] == "crash" and out["crash_class"] == "tamper", out
    assert "data/shard_06542.parquet was rewritten" in out["description"]
    assert out["reverted"] is True and git(repo, "rev-parse", "HEAD") == base
    commit_train(repo, "honest", VAL_BPB=0.95)
    done = run(repo)
    assert done.returncode == 3 and "data/shard_06542.parquet was rewritten" in done.stderr
    assert "uv run prepare.py" in done.stderr
    (cache / "data" / "shard_06542.parquet").write_bytes(original)  # restored: same content
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == 0.95
    assert [r["status"] for r in rows(repo)] == ["keep", "crash", "keep"]
    assert user_state(repo) == before


@pytest.mark.parametrize("name", ["evil.pth", "sitecustomize.py", "usercustomize"])
def test_a_startup_file_written_into_the_venv_is_tamper_and_named_until_removed(
        repo, tmp_path, name):
    make_cache(tmp_path)
    site = make_venv(repo)
    assert result(run(repo))["status"] == "keep"
    commit_attack(repo, "poison the venv", f"""
import os
_target = {str(site / name)!r}
if _target.endswith("customize"):
    os.makedirs(_target, exist_ok=True)
    _target = os.path.join(_target, "__init__.py")
with open(_target, "w") as _f:
    _f.write("import os\\n")
""")
    out = result(run(repo))
    assert out["status"] == "crash" and out["crash_class"] == "tamper", out
    assert f"start-up file {site / name} appeared" in out["description"]
    commit_train(repo, "honest", VAL_BPB=0.95)
    done = run(repo)
    assert done.returncode == 3 and f"rm -r '{site / name}'" in done.stderr
    subprocess.run(["rm", "-r", str(site / name)], check=True)
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == 0.95


def test_a_distribution_version_change_is_named_with_how_to_restore(repo, tmp_path):
    site = make_venv(repo)
    from arcore import fingerprint
    frozen = fingerprint.environment(str(repo))
    assert frozen["distributions"] == {"numpy": "2.1.0"}
    (site / "numpy-2.1.0.dist-info").rename(site / "numpy-1.26.4.dist-info")
    changes = fingerprint.environment_changes(frozen, fingerprint.environment(str(repo)))
    assert changes == ["distribution numpy 2.1.0 -> 1.26.4 (restore it: uv sync --locked)"]


def test_the_cpu_targets_cache_is_read_from_its_prepare_py(monkeypatch, tmp_path):
    from arcore import session
    cpu = Path(__file__).parent.parent / "examples" / "cpu-target"
    monkeypatch.delenv("AUTORESEARCH_CACHE_DIR", raising=False)
    assert session.cache_location(str(cpu))[0] == os.path.expanduser("~/.cache/autoresearch-cpu")
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(tmp_path))
    assert session.cache_location(str(cpu))[0] == str(tmp_path)


def test_a_touched_but_identical_cache_file_is_not_a_change(tmp_path):
    from arcore import fingerprint
    cache = make_cache(tmp_path)
    paths = [str(cache / "data" / "shard_06542.parquet")]
    frozen = fingerprint.data_integrity(str(cache), paths)
    os.chmod(paths[0], 0o600)  # moves ctime, keeps the content
    assert fingerprint.data_changes(frozen, str(cache), paths) == []
    Path(paths[0]).write_bytes(b"x")
    assert fingerprint.data_changes(frozen, str(cache), paths)[0].startswith(
        "data cache file data/shard_06542.parquet was rewritten")


# ---------------------------------------------------------------------------
# C. The ledger holds only what the harness wrote
# ---------------------------------------------------------------------------


def test_a_row_written_by_anything_but_the_harness_stops_the_next_run_naming_the_line(repo):
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    before = user_state(repo)
    with open(repo / "results.tsv", "a") as handle:
        handle.write(GHOST)  # e.g. a process a run left behind, after the judge
    changed = (repo / "results.tsv").read_bytes()
    commit_train(repo, "honest", VAL_BPB=0.95)
    done = run(repo)
    assert done.returncode == 3 and done.stdout == ""
    assert "results.tsv line 3 was added by something other than the harness" in done.stderr
    assert "ghost best" in done.stderr
    assert (repo / "results.tsv").read_bytes() == changed  # nothing thrown away
    kept = list((repo / ".autoresearch").glob("results.changed.*.tsv"))
    assert len(kept) == 1 and kept[0].read_bytes() == changed
    assert (repo / ".autoresearch" / "ledger.sealed.tsv").read_bytes() != changed
    subprocess.run(["cp", str(repo / ".autoresearch" / "ledger.sealed.tsv"),
                    str(repo / "results.tsv")], check=True)  # the way back the message names
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == 0.95 and out["best"] == 1.0
    assert [r["description"] for r in rows(repo)] == ["baseline", "honest"]
    assert user_state(repo) == before


def test_a_deleted_seal_does_not_let_a_ghost_row_through(repo):
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    with open(repo / "results.tsv", "a") as handle:
        handle.write(GHOST)
    for name in ("ledger.seal.json", "ledger.sealed.tsv"):  # the attacker hides the evidence
        (repo / ".autoresearch" / name).unlink()
    changed = (repo / "results.tsv").read_bytes()
    commit_train(repo, "honest", VAL_BPB=0.95)
    done = run(repo)
    assert done.returncode == 3 and done.stdout == ""
    assert "seal of results.tsv" in done.stderr and "deleted" in done.stderr
    assert "setup.sh --new-track" in done.stderr
    assert (repo / "results.tsv").read_bytes() == changed  # nothing written, nothing lost
    assert not (repo / ".autoresearch" / "ledger.seal.json").exists()


def test_a_row_changed_in_place_is_named_by_its_line(repo, tmp_path):
    path = repo / "results.tsv"
    (repo / ".autoresearch").mkdir()
    ledger.init(str(path))
    ledger.append_row(str(path), ledger.format_row("abcdef1", 1.0, 44.0, "keep", "baseline"))
    ledger.append_row(str(path), ledger.format_row("abcdef2", 1.2, 44.0, "discard", "worse"))
    assert ledger.verify(str(path)) is None
    path.write_text(path.read_text().replace("1.200000\t44.0\tdiscard", "0.200000\t44.0\tkeep"))
    assert ledger.verify(str(path)).startswith("results.tsv line 3 was changed")
    ledger.append_row(str(path), ledger.format_row("abcdef3", 1.1, 44.0, "discard", "next"))
    assert ledger.verify(str(path)).startswith("results.tsv line 3 was changed")  # not laundered
    assert ledger.main(["verify", str(path)]) == 3


# ---------------------------------------------------------------------------
# D. Runs happen in a disposable checkout of exactly the candidate
# ---------------------------------------------------------------------------

USES_EVALUATOR = """
import prepare
VAL_BPB = prepare.evaluate_bpb(None, None, 1) {offset}
"""

POISON_PYC = """
import importlib.util, marshal, os, sys
_src = "def evaluate_bpb(model, tokenizer, batch_size):\\n    return 0.1\\n"
_st = os.stat("prepare.py")
_head = (importlib.util.MAGIC_NUMBER + bytes(4) + (int(_st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
         + (_st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
os.makedirs("__pycache__", exist_ok=True)
with open(os.path.join("__pycache__", "prepare." + sys.implementation.cache_tag + ".pyc"), "wb") as _f:
    _f.write(_head + marshal.dumps(compile(_src, "prepare.py", "exec")))
"""

SHADOW_PACKAGE = """
import os
os.makedirs("prepare", exist_ok=True)
with open(os.path.join("prepare", "__init__.py"), "w") as _f:
    _f.write("def evaluate_bpb(model, tokenizer, batch_size):\\n    return 0.1\\n")
"""


def commit_evaluated(repo: Path, message: str, attack: str = "", offset: str = "") -> str:
    """A train.py whose value comes from prepare.evaluate_bpb (1.0 in the stand-in)."""
    body = OK.replace("VAL_BPB = 1.000000", USES_EVALUATOR.format(offset=offset).strip())
    (repo / "train.py").write_text(attack.strip() + "\n\n" + body)
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


def test_a_poisoned_prepare_pyc_is_never_loaded_by_this_run_or_the_next(repo):
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    before = user_state(repo)
    commit_evaluated(repo, "poison the bytecode", POISON_PYC)
    out = result(run(repo))
    assert out["status"] == "discard" and out["value"] == 1.0, out  # the real evaluator ran
    assert not (repo / "__pycache__").exists()  # the user's tree never got it
    commit_evaluated(repo, "honest", offset="- 0.05")
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == 0.95
    assert [r["description"] for r in rows(repo)] == ["baseline", "poison the bytecode", "honest"]
    assert user_state(repo) == before


def test_an_untracked_prepare_package_shadowing_prepare_py_is_tamper(repo):
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    before = user_state(repo)
    commit_evaluated(repo, "shadow the evaluator", SHADOW_PACKAGE)
    out = result(run(repo))
    assert out["status"] == "crash" and out["crash_class"] == "tamper", out
    assert "prepare/__init__.py, which could shadow a module" in out["description"]
    assert out["reverted"] is True and not (repo / "prepare").exists()
    commit_evaluated(repo, "honest", offset="- 0.05")
    out = result(run(repo))
    assert out["status"] == "keep" and out["value"] == 0.95
    assert user_state(repo) == before


REACH_THE_LINT = """
import importlib.util, os
_found = importlib.util.find_spec("arcore") is not None
_env = sorted(k for k in os.environ if k.startswith(("PYTHON", "AR_")))
print("can reach the lint:", _found, _env)
"""


def test_the_training_process_cannot_reach_the_skills_scripts(repo, tmp_path, monkeypatch):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sitecustomize.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.setenv("PYTHONPATH", str(evil))  # run-experiment.sh adds scripts/ in front
    monkeypatch.setenv("PYTHONSTARTUP", str(evil / "sitecustomize.py"))
    assert result(run(repo))["status"] == "keep"
    commit_attack(repo, "rewrite the lint", REACH_THE_LINT, value=1.2)
    out = result(run(repo))
    assert out["status"] == "discard"
    log = (repo / "run.log").read_text()
    assert "can reach the lint: False" in log
    assert "PYTHONPATH" not in log.split("can reach the lint:")[1].split("\n")[0] or \
        os.path.isdir(Path(__file__).parent.parent / "scripts" / "attest")
    assert "'PYTHONPYCACHEPREFIX'" in log and "AR_CALLER_PATH" not in log
    assert not (tmp_path / "ran").exists()


def test_the_run_happens_in_a_checkout_of_exactly_the_candidate_and_it_is_removed(repo):
    assert result(run(repo))["status"] == "keep"
    (repo / "scratch.py").write_text("untracked\n")
    sha = commit_attack(repo, "where am I", """
import os
print("cwd:", os.getcwd())
print("files:", sorted(os.listdir(".")))
""", value=1.2)
    result(run(repo))
    log = (repo / "run.log").read_text()
    cwd = log.split("cwd: ")[1].split("\n")[0]
    assert cwd != str(repo) and not os.path.exists(cwd)
    files = log.split("files: ")[1].split("\n")[0]
    assert files == str(sorted(git(repo, "ls-tree", "--name-only", sha).split()))
    assert (repo / "scratch.py").read_text() == "untracked\n"


# ---------------------------------------------------------------------------
# E. A run's processes end with it; its log is capped
# ---------------------------------------------------------------------------

DAEMON = """
import os, sys, time
_pidfile = {pidfile!r}
_ledger = {ledger!r}
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if {clear_env}:  # leave the environment tag behind too
            os.execve(sys.executable, [sys.executable, "-c", {daemon!r}], {{}})
        exec({daemon!r})
    os._exit(0)
time.sleep(0.2)
"""
DAEMON_BODY = """
import fcntl, os, time
_held = open(PIDFILE + ".lock", "w")
fcntl.flock(_held, fcntl.LOCK_EX)  # held for as long as the daemon lives
open(PIDFILE, "w").write(str(os.getpid()))
for _ in range(3000):
    time.sleep(0.01)  # outlives the run and the judge
    if os.path.exists(PIDFILE + ".go"):
        break
with open(LEDGER, "a") as f:
    f.write("ghost00\\t0.100000\\t1.0\\tkeep\\tghost best\\n")
"""


def _lock_held(path: str) -> bool:
    """Whether a live process holds the flock (released when its holder dies)."""
    import fcntl
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@pytest.mark.parametrize(("mode", "clear_env"), [
    ("pid namespace", False), ("cgroup", True), ("environment tag", False)])
def test_a_double_forked_daemon_is_ended_with_the_run_and_writes_no_ghost_row(
        repo, tmp_path, monkeypatch, mode, clear_env):
    from arcore import procs
    works = procs.describe()
    if mode == "pid namespace" and not works["pid_namespace"]:
        pytest.skip("unshare --pid does not work here (needs root or user namespaces)")
    if mode == "cgroup" and not works["cgroup"]:
        pytest.skip("no writable cgroup here (needs root or a delegated cgroup)")
    if mode != "pid namespace":
        monkeypatch.setenv("AUTORESEARCH_NO_PIDNS", "1")
    if mode == "environment tag":
        monkeypatch.setenv("AUTORESEARCH_NO_CGROUP", "1")
    setup_user(repo)
    assert result(run(repo))["status"] == "keep"
    before = user_state(repo)
    pidfile = tmp_path / "daemon.pid"
    body = (f"PIDFILE = {str(pidfile)!r}\nLEDGER = {str(repo / 'results.tsv')!r}\n"
            + DAEMON_BODY)
    commit_attack(repo, "leave a daemon", DAEMON.format(
        pidfile=str(pidfile), ledger=str(repo / "results.tsv"), daemon=body,
        clear_env=clear_env), value=1.2)
    out = result(run(repo))
    assert out["status"] == "discard"
    assert pidfile.exists()  # it did start
    assert not _lock_held(str(pidfile) + ".lock"), f"the daemon outlived the run ({mode})"
    Path(str(pidfile) + ".go").touch()  # had it lived, it would write its row now
    honest_next(repo)
    assert [r["description"] for r in rows(repo)] == ["baseline", "leave a daemon", "honest"]
    assert user_state(repo) == before


FLOOD = """
import sys
_line = "x" * 1023 + "\\n"
for _ in range(8 * 1024):  # 8 MiB
    sys.stdout.write(_line)
sys.stdout.flush()
"""


def test_a_log_past_the_cap_is_a_log_flood_crash_keeping_its_head_and_tail(repo):
    assert result(run(repo))["status"] == "keep"
    base = git(repo, "rev-parse", "HEAD")
    commit_attack(repo, "flood", FLOOD + "\nimport time\ntime.sleep(30)\n", value=0.5)
    out = result(run(repo, "--max-log-mb", "1"))
    assert out["status"] == "crash" and out["crash_class"] == "log-flood", out
    assert out["reverted"] is True and git(repo, "rev-parse", "HEAD") == base
    text = (repo / "run.log").read_text()
    assert len(text) < 2 << 20 and "[autoresearch: log-flood:" in text
    assert text.startswith("x" * 100) and (repo / out["log"]).read_text() == text
    honest_next(repo)


def test_max_log_mb_must_be_a_positive_number(repo):
    for bad in ("0", "-1", "lots"):
        done = run(repo, "--max-log-mb", bad)
        assert done.returncode == 2 and "--max-log-mb" in done.stderr


# ---------------------------------------------------------------------------
# F. The optional OS sandbox
# ---------------------------------------------------------------------------

ESCAPE = """
import os, socket
_hits = []
for _path in ({ledger!r}, {cache!r}, {venv!r}, os.path.join({repo!r}, "escaped.txt")):
    try:
        with open(_path, "a") as _f:
            _f.write("x")
        _hits.append(_path)
    except OSError:
        pass
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    _hits.append("network")
except OSError:
    pass
with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "scratch.txt"), "w") as _f:
    _f.write("scratch is writable")  # its own scratch folder
print("escaped:", _hits)
"""


def test_a_sandboxed_run_cannot_write_the_repo_the_venv_or_the_cache_nor_reach_the_network(
        repo, tmp_path):
    # Read-only bind mounts refuse writes even to root (EROFS): this does not rely on
    # file permissions, so it holds on the root CI machine.
    from arcore import sandbox
    works, why = sandbox.probe()
    if not works:
        pytest.skip(f"--sandbox not available here: {why}")
    cache = make_cache(tmp_path)
    site = make_venv(repo)
    assert result(run(repo, "--sandbox"))["status"] == "keep"
    before = (repo / "results.tsv").read_bytes()
    commit_attack(repo, "escape", ESCAPE.format(
        ledger=str(repo / "results.tsv"), cache=str(cache / "data" / "shard_06542.parquet"),
        venv=str(site / "evil.pth"), repo=str(repo)), value=1.2)
    out = result(run(repo, "--sandbox"))
    assert out["status"] == "discard" and out["value"] == 1.2, out
    assert "escaped: []" in (repo / "run.log").read_text()
    assert not (repo / "escaped.txt").exists() and not (site / "evil.pth").exists()
    assert (repo / "results.tsv").read_bytes().startswith(before)
    honest_next(repo)


def test_sandbox_says_why_when_bwrap_is_missing(monkeypatch):
    from arcore import sandbox
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    works, why = sandbox.probe()
    assert not works and "apt-get install bubblewrap" in why


def test_run_loop_and_setup_take_sandbox_as_an_environment_switch(tmp_path):
    script = (f"source {Path(__file__).parent.parent / 'scripts' / 'common.sh'}; "
              "ar_take_sandbox --max 1 --sandbox --repo 'a b'; "
              "printf '%s|' \"${AR_ARGS[@]}\"; echo \"${AUTORESEARCH_SANDBOX:-unset}\"")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "--max|1|--repo|a b|1"


def test_a_venv_the_first_uv_run_creates_is_recorded_not_called_tamper(repo, tmp_path):
    assert result(run(repo, cmd=f"mkdir -p '{repo}/.venv/lib/python3.11/site-packages' && "
                              f"echo 'home = /x/bin' > '{repo}/.venv/pyvenv.cfg' && {CMD}"))[
        "status"] == "keep"
    frozen = json.loads((repo / ".autoresearch" / "session.json").read_text())
    assert frozen["environment"]["venv"] is True
    site = repo / ".venv" / "lib" / "python3.11" / "site-packages"
    (site / "evil.pth").write_text("import os\n")  # later changes to it do count
    commit_train(repo, "honest", VAL_BPB=0.95)
    done = run(repo)
    assert done.returncode == 3 and "evil.pth appeared" in done.stderr


def test_a_venv_a_later_candidate_creates_is_not_adopted(repo, tmp_path):
    assert result(run(repo))["status"] == "keep"
    commit_attack(repo, "make a venv", f"""
import os
os.makedirs({str(repo / '.venv' / 'lib' / 'python3.11' / 'site-packages')!r}, exist_ok=True)
open({str(repo / '.venv' / 'pyvenv.cfg')!r}, "w").write("home = /x/bin\\n")
""", value=0.5)
    out = result(run(repo))
    assert out["status"] == "crash" and out["crash_class"] == "tamper"
    assert "environment moved" in out["description"]


def test_the_log_cap_can_come_from_the_environment_a_loop_passes_on(repo, monkeypatch):
    assert result(run(repo))["status"] == "keep"
    commit_attack(repo, "flood", FLOOD + "\nimport time\ntime.sleep(30)\n", value=0.5)
    monkeypatch.setenv("AUTORESEARCH_MAX_LOG_MB", "1")
    out = result(run(repo))
    assert out["status"] == "crash" and out["crash_class"] == "log-flood"
