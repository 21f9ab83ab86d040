"""setup: setup.sh's logic. One command from nothing to a frozen session with a baseline.

Steps, each done only when missing (a second run changes nothing):

 1. the clone: use --dir when it is one, else clone --from DIR (offline) or --repo-url into it
    (a directory holding prepare.py and train.py without git is put under git in place);
 2. ``uv sync`` (``--locked`` when uv.lock exists);
 3. the hardware check (arcore.hardware; --no-gpu-check for CPU targets): stop on blockers
    (the machine's own blockers are checked first, before the clone and ``uv sync``);
 4. the branch ``autoresearch/<tag>`` (default: the session's branch, else today, e.g. ``nov30``);
 5. the optional preset (--preset TIER, or --seq-len/--eval-tokens): prepare.py and train.py
    rewritten, the diff on stderr, the originals backed up under .autoresearch/backup/, one commit;
    refused (exit 3) once a session is frozen unless --new-track;
 6. ``uv run prepare.py`` (--num-shards N; --no-prepare), skipped when the data cache is complete;
 7. results.tsv with upstream's header; results.tsv, run.log, .autoresearch/ in .git/info/exclude;
 8. program.md from templates/program.md when the clone has none;
 9. the session freeze (arcore.session), or its verification when one exists (exit 3 on a change);
10. the baseline through run-experiment.sh unless --no-baseline or the track already has one.

stdout: ``key: value`` lines (repo, branch, preset, session, baseline_commit, status, val_bpb,
peak_vram_mb, memory_gb, next). Exit: 0 done, 1 failure or blockers, 2 usage, 3 refused (frozen
session) or harness changed, 4 unsafe git state, 130 interrupted.
"""

from __future__ import annotations

import datetime
import difflib
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

from arcore import gitx, hardware, ledger, presets, repeats, runlog, session, uvenv

DEFAULT_URL = "https://github.com/karpathy/autoresearch.git"
SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(SCRIPTS)
TEMPLATE = os.path.join(PACKAGE, "templates", "program.md")
RUN_EXPERIMENT = os.path.join(SCRIPTS, "run-experiment.sh")
DEFAULT_SHARDS = 10
IMPORT_EXCLUDES = ("/.venv/", "__pycache__/", "*.py[oc]")  # never committed by the import  # upstream prepare.py's default --num-shards


class Stop(Exception):
    """Ends setup with an exit code and one line for stderr."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"{os.environ.get('AR_NAME', 'setup')}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

VALUE_OPTS = {"--dir": "dir", "--repo-url": "repo_url", "--from": "source", "--tag": "tag",
              "--preset": "preset", "--seq-len": "seq_len", "--eval-tokens": "eval_tokens",
              "--num-shards": "num_shards", "--cmd": "cmd", "--timeout": "timeout",
              "--baseline-repeats": "baseline_repeats"}
FLAG_OPTS = {"--no-prepare": "no_prepare", "--no-sync": "no_sync", "--no-gpu-check": "no_gpu",
             "--cpu": "no_gpu", "--no-baseline": "no_baseline", "--new-track": "new_track",
             "--dry-run": "dry_run"}


def _positive_int(opts: dict, key: str, flag: str, allow_all: bool = False) -> None:
    value = opts.get(key)
    if value is None:
        return
    try:
        number = int(value)
    except ValueError:
        raise Stop(2, f"{flag} needs a whole number, not {value!r}") from None
    if number <= 0 and not (allow_all and number == -1):
        raise Stop(2, f"{flag} must be positive{' (or -1 for all)' if allow_all else ''}")
    opts[key] = number


def parse_args(argv: list[str]) -> dict:
    opts: dict = {key: None for key in VALUE_OPTS.values()}
    opts.update({key: False for key in FLAG_OPTS.values()})
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in VALUE_OPTS:
            if not args or args[0] == "":
                raise Stop(2, f"{arg} needs a value")
            opts[VALUE_OPTS[arg]] = args.pop(0)
        elif arg in FLAG_OPTS:
            opts[FLAG_OPTS[arg]] = True
        else:
            raise Stop(2, f"unknown option {arg!r} (see --help)")
    if opts["repo_url"] and opts["source"]:
        raise Stop(2, "--repo-url and --from are alternatives; pass one")
    if opts["source"] and not os.path.isdir(opts["source"]):
        raise Stop(2, f"--from {opts['source']}: no such directory")
    if opts["preset"] and (opts["seq_len"] or opts["eval_tokens"]):
        raise Stop(2, "--preset and --seq-len/--eval-tokens are alternatives; pass one")
    if opts["preset"]:
        try:
            presets.get_tier(opts["preset"])
        except KeyError as err:
            raise Stop(2, err.args[0]) from None
    _positive_int(opts, "seq_len", "--seq-len")
    _positive_int(opts, "eval_tokens", "--eval-tokens")
    _positive_int(opts, "num_shards", "--num-shards", allow_all=True)
    _positive_int(opts, "baseline_repeats", "--baseline-repeats")
    if opts["dry_run"] and not (opts["preset"] or opts["seq_len"] or opts["eval_tokens"]):
        raise Stop(2, "--dry-run shows a preset's diff: pass --preset TIER (or --seq-len/"
                      "--eval-tokens) with it")
    if opts["timeout"] is not None:
        try:
            if float(opts["timeout"]) <= 0:
                raise ValueError
        except ValueError:
            raise Stop(2, f"--timeout needs positive seconds, not {opts['timeout']!r}") from None
    if opts["tag"] is not None:
        tag = opts["tag"].removeprefix("autoresearch/")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", tag) or ".." in tag \
                or "//" in tag or tag.endswith((".", "/", ".lock")):
            raise Stop(2, f"--tag {opts['tag']!r} does not make a valid branch name")
        opts["tag"] = tag
    return opts


def default_tag(today: datetime.date | None = None) -> str:
    """Upstream's program.md style: month abbreviation and day, e.g. ``mar5``."""
    today = today or datetime.date.today()
    return f"{today.strftime('%b').lower()}{today.day}"


def wanted_values(opts: dict) -> tuple[str | None, dict]:
    if opts["preset"]:
        tier = presets.get_tier(opts["preset"])
        return tier.name, dict(tier.values)
    values = {}
    if opts["seq_len"]:
        values["MAX_SEQ_LEN"] = opts["seq_len"]
    if opts["eval_tokens"]:
        values["EVAL_TOKENS"] = opts["eval_tokens"]
    return ("custom" if values else None), values


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def sh(argv: list[str], cwd: str | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    """Runs a command; its output goes to stderr (stdout is setup's data) unless captured."""
    try:
        return subprocess.run(argv, cwd=cwd, text=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE if capture else sys.stderr,
                              stderr=subprocess.PIPE if capture else sys.stderr)
    except FileNotFoundError:
        raise Stop(1, f"{argv[0]} not found on PATH") from None


def git(repo: str, *args: str, check: bool = True) -> str:
    done = sh(gitx.argv(repo, *args), capture=True)
    if check and done.returncode != 0:
        raise Stop(1, f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip() if done.returncode == 0 else ""


def identity(repo: str) -> list[str]:
    """`-c` options for a commit when the clone has no git identity configured."""
    if git(repo, "config", "user.email", check=False):
        return []
    return ["-c", "user.name=autoresearch setup", "-c", "user.email=autoresearch@localhost"]


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def is_git_top(path: str) -> bool:
    return os.path.exists(os.path.join(path, ".git"))


def ensure_clone(opts: dict) -> str:
    cwd = os.getcwd()
    target = opts["dir"] or (cwd if hardware.is_clone(cwd) else os.path.join(cwd, "autoresearch"))
    target = os.path.abspath(target)
    if hardware.is_clone(target):
        if not is_git_top(target):
            log(f"{target} is not a git repository: putting it under git (one initial commit)")
            git(target, "init", "-q")
            with open(os.path.join(target, ".git", "info", "exclude"), "a",
                      encoding="utf-8") as handle:
                handle.write("".join(f"{p}\n" for p in IMPORT_EXCLUDES))
            session.ensure_excludes(target)
            git(target, "add", "-A")
            git(target, *identity(target), "commit", "-q", "-m", "autoresearch: initial import")
        else:
            log(f"using the clone at {target}")
        return target
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise Stop(1, f"{target} exists but holds no prepare.py and train.py: pass --dir to a "
                      "clone or to a new directory")
    source = opts["source"] or opts["repo_url"] or DEFAULT_URL
    log(f"cloning {source} into {target}")
    if sh(gitx.argv(None, "clone", "--quiet", source, target)).returncode != 0:
        raise Stop(1, f"git clone {source} failed (offline? pass --from DIR with a local mirror)")
    if not hardware.is_clone(target):
        raise Stop(1, f"{source} has no prepare.py and train.py: not an autoresearch repository")
    return target


def check_clean(repo: str) -> None:
    dirty = sh(gitx.argv(repo, "status", "--porcelain", "--untracked-files=no"),
               capture=True).stdout
    if dirty.strip():
        files = ", ".join(line[3:] for line in dirty.splitlines()[:5])
        raise Stop(4, f"uncommitted changes to tracked files in {repo} ({files}): commit or "
                      "stash them first")


def sync(repo: str, opts: dict) -> None:
    if opts["no_sync"]:
        log("skipping uv sync (--no-sync)")
        return
    if not os.path.isfile(os.path.join(repo, "pyproject.toml")):
        log("no pyproject.toml: nothing for uv sync")
        return
    argv = ["uv", "sync"] + (["--locked"] if os.path.isfile(os.path.join(repo, "uv.lock")) else [])
    log(" ".join(argv))
    done = sh(argv, cwd=repo, capture=True)
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise Stop(1, sync_failure(argv, repo, done.stdout + done.stderr, done.returncode))


_STALE_LOCK = re.compile(r"(?i)lockfile .*needs to be updated|uv\.lock.*(?:out of date|stale)")


def sync_failure(argv: list[str], repo: str, output: str, code: int) -> str:
    """What failed in `uv sync`, said plainly; never advice to rewrite uv.lock (it is frozen
    with the session: prepare.py, pyproject.toml and uv.lock are the harness)."""
    cmd = " ".join(argv)
    found = uvenv.environment_failure(output, code or 1)
    if found and found["kind"] == "network":
        return (f"`{cmd}` failed in {repo}: uv could not reach its package index (network: "
                f"{found['what']}); connect the machine or set a proxy / UV_INDEX_URL to a "
                "mirror and rerun, or pass --no-sync where .venv is already synced")
    if found and found["kind"] == "venv":
        return f"`{cmd}` failed in {repo}: {found['what']}; {found['fix']}"
    if _STALE_LOCK.search(output):
        return (f"`{cmd}` failed in {repo}: uv.lock does not match pyproject.toml; both are part "
                "of the frozen harness, so do not rewrite them: restore the clone's committed "
                "ones (git checkout -- pyproject.toml uv.lock) and rerun")
    return f"`{cmd}` failed in {repo} (exit {code}; its output is above)"


def machine_gate(opts: dict) -> None:
    """The machine alone (platform, GPU, driver, tools, disk), before cloning and syncing:
    a Mac or a broken driver is told so before uv downloads torch."""
    if opts["no_gpu"]:
        return
    report = hardware.check(repo=None, find_repo=False)
    if report["ready"]:
        return
    for line in hardware.summary(report):
        log(f"hardware: {line}")
    raise Stop(1, f"not ready: {len(report['blockers'])} blocker(s), listed above; fix them "
                  "and rerun (--no-gpu-check for a CPU-only target)")


def hardware_gate(repo: str, opts: dict) -> dict | None:
    if opts["no_gpu"]:
        log("skipping the GPU check (--no-gpu-check): the target runs without a GPU")
        return None
    report = hardware.check(repo=repo, data=False)
    for line in hardware.summary(report):
        log(f"hardware: {line}")
    if not report["ready"]:
        raise Stop(1, f"not ready: {len(report['blockers'])} blocker(s), listed above; fix them "
                      "and rerun (--no-gpu-check for a CPU-only target)")
    return report


def ensure_branch(repo: str, tag: str) -> str:
    branch = f"autoresearch/{tag}"
    current = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if current == branch:
        log(f"on branch {branch}")
        return branch
    exists = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    git(repo, "switch", "-q", *([] if exists else ["-c"]), branch)
    log(f"{'switched to' if exists else 'created'} branch {branch}")
    return branch


def apply_preset(repo: str, name: str | None, values: dict, frozen: bool, new_track: bool) -> dict | None:
    """Rewrites prepare.py/train.py and commits; None when nothing changes."""
    if not values:
        return None
    texts = {}
    for fname in ("prepare.py", "train.py"):
        with open(os.path.join(repo, fname), encoding="utf-8") as handle:
            texts[fname] = handle.read()
    split = {"prepare.py": {k: v for k, v in values.items() if k in presets.PREPARE_KEYS},
             "train.py": {k: v for k, v in values.items() if k in presets.TRAIN_KEYS}}
    merged = {k: presets.read_constant(texts["train.py"], k) for k in presets.TRAIN_KEYS}
    merged.update({k: presets.read_constant(texts["prepare.py"], k) for k in presets.PREPARE_KEYS})
    merged.update(values)
    problems = presets.check_values({k: v for k, v in merged.items() if v is not None})
    if problems:
        raise Stop(2, f"preset {name}: {problems[0]}")
    changes = {f: presets.differs(texts[f], split[f]) for f in split}
    if not any(changes.values()):
        log(f"preset {name} already in place")
        return None
    if frozen and not new_track:
        raise Stop(3, f"preset {name} would change prepare.py/train.py but a session is frozen "
                      "(.autoresearch/session.json): presets apply only before the freeze; rerun "
                      "as scripts/setup.sh --new-track --preset ... to start a new comparison "
                      "track")
    new_texts = {}
    for fname, wanted in split.items():
        new, missing = presets.apply(texts[fname], wanted)
        if missing:
            raise Stop(1, f"{fname} defines no {', '.join(missing)}: apply the preset by hand")
        new_texts[fname] = new
    head = git(repo, "rev-parse", "--short", "HEAD")
    backup_dir = os.path.join(session.session_dir(repo), "backup")
    os.makedirs(backup_dir, exist_ok=True)
    backups = []
    for fname in split:
        if new_texts[fname] == texts[fname]:
            continue
        backup = os.path.join(backup_dir, f"{fname}.{head}")
        shutil.copyfile(os.path.join(repo, fname), backup)
        backups.append(os.path.relpath(backup, repo))
        diff = difflib.unified_diff(texts[fname].splitlines(True), new_texts[fname].splitlines(True),
                                    f"a/{fname}", f"b/{fname}")
        sys.stderr.write("".join(diff))
        with open(os.path.join(repo, fname), "w", encoding="utf-8") as handle:
            handle.write(new_texts[fname])
    summary = ", ".join(f"{k}={presets.render_value(k, v)}" for k, v in values.items())
    changed = [f for f in split if new_texts[f] != texts[f]]
    git(repo, *identity(repo), "commit", "-q", "-m", f"autoresearch: preset {name} ({summary})",
        "--", *changed)
    commit = git(repo, "rev-parse", "HEAD")
    log(f"preset {name} committed as {commit[:7]}; originals backed up in "
        f"{', '.join(backups)}")
    return {"name": name, "values": values, "commit": commit, "backup": backups}


def data_complete(repo: str, shards: int) -> bool:
    cache, val = session.cache_location(repo)
    data = hardware.probe_data(cache, val)
    return data["tokenizer"] and data["val_shard"] and shards > 0 and data["train_shards"] >= shards


def prepare(repo: str, opts: dict) -> None:
    if opts["no_prepare"]:
        log("skipping prepare.py (--no-prepare)")
        cache, _ = session.cache_location(repo)
        if not cache_has_files(cache):
            log(f"warning: the data cache {cache} is empty and the session freezes it so; when "
                "the data arrives, every run will refuse (exit 3) until you start a new track: "
                "scripts/setup.sh --new-track (or drop --no-prepare to prepare the data first)")
        return
    shards = opts["num_shards"] or DEFAULT_SHARDS
    if data_complete(repo, shards):
        log(f"data cache complete (tokenizer, validation shard, >= {shards} training shards)")
        return
    argv = ["uv", "run", "prepare.py"]
    if opts["num_shards"]:
        argv += ["--num-shards", str(opts["num_shards"])]
    log(" ".join(argv))
    if sh(argv, cwd=repo).returncode != 0:
        raise Stop(1, f"`{' '.join(argv)}` failed in {repo} (see above)")


def cache_has_files(cache: str) -> bool:
    for _root, _dirs, files in os.walk(cache):
        if files:
            return True
    return False


def check_untracked_ledger(repo: str) -> None:
    """results.tsv and run.log must not be tracked (upstream sessions often commit
    results.tsv): every run would leave a tracked change and exit 4. Said before anything."""
    tracked = [name for name in ("results.tsv", "run.log") if git(repo, "ls-files", "--", name)]
    if tracked:
        names = " ".join(tracked)
        raise Stop(4, f"{names} {'is' if len(tracked) == 1 else 'are'} tracked by git in {repo} "
                      "(upstream sessions often commit results.tsv), so every run would exit 4: "
                      f"untrack {'it' if len(tracked) == 1 else 'them'} first, keeping the file: "
                      f"git -C {shlex.quote(repo)} rm --cached {names} && git -C "
                      f"{shlex.quote(repo)} commit -m 'untrack {names}'; then rerun setup.sh")


def ensure_files(repo: str, tag: str) -> None:
    session.ensure_excludes(repo)
    if ledger.init(os.path.join(repo, "results.tsv")):
        log("created results.tsv (header only, untracked)")
    program = os.path.join(repo, "program.md")
    if os.path.exists(program):
        return
    if not os.path.isfile(TEMPLATE):
        log(f"no program.md and no template at {TEMPLATE}: write program.md before starting "
            "the agent")
        return
    with open(TEMPLATE, encoding="utf-8") as handle:
        text = handle.read().replace("{{SESSION_TAG}}", tag)
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(text)
    log("wrote program.md from templates/program.md (untracked): fill in its {{...}} "
        "placeholders before the session")


def ensure_freeze(repo: str, new_track: bool, preset_info: dict | None) -> dict:
    existing = session.load(repo)
    if existing is not None and not new_track:
        changes = session.verify(repo, existing)
        if changes:
            raise Stop(3, session.verify_message(changes))
        log(f"session frozen since {existing.get('created')}; verified unchanged")
        return existing
    if existing is not None and not preset_info and not session.verify(repo, existing):
        log("--new-track: nothing changed since the freeze; keeping the current track")
        return existing
    data = session.freeze(repo, new=existing is not None)
    if preset_info:
        data = session.update(repo, preset=preset_info)
    log(f"session frozen ({'new track, ' if existing else ''}ledger_start "
        f"{data.get('ledger_start')})")
    return data


def _fmt(value, digits: int) -> str | None:
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def _baseline_row(repo: str, data: dict) -> dict | None:
    rows = ledger.read_ledger(os.path.join(repo, data.get("ledger", "results.tsv")))
    track = ledger.track_rows(rows, int(data.get("ledger_start", 0)))
    return track[0] if track else None


def _peak_vram(repo: str, commit: str, log_path: str | None, memory_gb: str | None) -> str:
    candidates = [log_path] if log_path else []
    short = (commit or "")[:7]
    if short:
        candidates += sorted(glob.glob(os.path.join(session.session_dir(repo), "logs",
                                                    f"*-{short}*.log")), reverse=True)
    for path in candidates:
        path = path if os.path.isabs(path) else os.path.join(repo, path)
        if os.path.isfile(path):
            value = runlog.parse(path).get("peak_vram_mb")
            if isinstance(value, float):
                return f"{value:.1f}"
    try:
        return f"{float(memory_gb) * 1024:.1f}" if memory_gb else "unknown"
    except ValueError:
        return "unknown"


def run_experiment(repo: str, opts: dict, desc: str, rerun: bool = False) -> tuple:
    """run-experiment.sh on HEAD: (the finished process, its key: value facts)."""
    argv = ["bash", RUN_EXPERIMENT, "--desc", desc, "--repo", repo] + (["--rerun"] if rerun else [])
    if opts["cmd"]:
        argv += ["--cmd", opts["cmd"]]
    if opts["timeout"]:
        argv += ["--timeout", str(opts["timeout"])]
    log(f"running the {'baseline' if not rerun else desc}: "
        + " ".join(shlex.quote(a) for a in argv[1:]))
    try:
        done = subprocess.run(argv, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=sys.stderr)
    except KeyboardInterrupt:
        raise Stop(130, "interrupted during the baseline: no row was written for it") from None
    facts = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            facts[key.strip()] = value.strip()
    return done, facts


def baseline(repo: str, data: dict, opts: dict) -> dict:
    row = _baseline_row(repo, data)
    if row is not None:
        log(f"the track already has its baseline ({row.get('commit')}): not running it again")
        return {"baseline_commit": row.get("commit"), "status": row.get("status"),
                "val_bpb": _fmt(row.get("val_bpb"), 6), "memory_gb": _fmt(row.get("memory_gb"), 1),
                "peak_vram_mb": _peak_vram(repo, row.get("commit", ""), None,
                                           _fmt(row.get("memory_gb"), 1))}
    if opts["no_baseline"]:
        log("skipping the baseline run (--no-baseline)")
        return {}
    if not os.path.isfile(RUN_EXPERIMENT):
        raise Stop(1, f"{RUN_EXPERIMENT} is missing: cannot run the baseline (--no-baseline)")
    done, facts = run_experiment(repo, opts, "baseline")
    if done.returncode != 0:
        raise Stop(done.returncode if done.returncode in (3, 4, 130) else 1,
                   f"run-experiment.sh exited {done.returncode}: no baseline")
    row = _baseline_row(repo, session.load(repo) or data) or {}
    out = {"baseline_commit": facts.get("commit"), "status": facts.get("status"),
           "val_bpb": _fmt(row.get("val_bpb"), 6) or facts.get("value"),
           "memory_gb": _fmt(row.get("memory_gb"), 1) or facts.get("memory_gb"),
           "peak_vram_mb": _peak_vram(repo, facts.get("commit", ""), facts.get("log"),
                                      facts.get("memory_gb"))}
    if facts.get("status") == "crash":
        out["crash_class"] = facts.get("crash_class")
        out["hint"] = facts.get("hint")
    return out


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def dry_run(opts: dict) -> str:
    """--preset TIER --dry-run: the preset's diff against the clone's prepare.py/train.py (or,
    without a clone, against the upstream defaults' constants), on stdout; nothing written,
    no network."""
    name, values = wanted_values(opts)
    cwd = os.getcwd()
    target = os.path.abspath(opts["dir"] or cwd)
    if not hardware.is_clone(target):
        lines = [f"# no clone at {target}: the values {name} sets"]
        lines += [f"{k} = {presets.render_value(k, v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"
    out = []
    for fname, keys in (("prepare.py", presets.PREPARE_KEYS), ("train.py", presets.TRAIN_KEYS)):
        with open(os.path.join(target, fname), encoding="utf-8") as handle:
            text = handle.read()
        new, missing = presets.apply(text, {k: v for k, v in values.items() if k in keys})
        if missing:
            out.append(f"# {fname} defines no {', '.join(missing)}\n")
        out.extend(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                        f"a/{fname}", f"b/{fname}"))
    return "".join(out) or f"# preset {name}: nothing would change in {target}\n"


def run_repeats(repo: str, opts: dict, result: dict) -> None:
    """--baseline-repeats R: top the track up to R runs of its baseline (arcore.repeats)."""
    total = opts.get("baseline_repeats") or 0
    if total < 2 or result.get("status") not in ("keep", "discard"):
        return
    head = git(repo, "rev-parse", "HEAD")

    def run_one(desc: str) -> dict | None:
        done, facts = run_experiment(repo, opts, desc, rerun=True)
        return facts if done.returncode == 0 and facts.get("status") else None

    floor = repeats.top_up(repo, total, head, run_one, log)
    if floor is not None:
        result["noise_floor"] = f"{floor:.6f}"


def run_setup(opts: dict) -> dict:
    if opts.get("dry_run"):
        sys.stdout.write(dry_run(opts))
        return {}
    machine_gate(opts)
    repo = ensure_clone(opts)
    check_untracked_ledger(repo)
    check_clean(repo)
    sync(repo, opts)
    report = hardware_gate(repo, opts)
    existing = session.load(repo)
    tag = opts["tag"] or ((existing or {}).get("branch") or "").removeprefix("autoresearch/") \
        or default_tag()
    if existing and existing.get("branch") and existing["branch"] != f"autoresearch/{tag}" \
            and not opts["new_track"]:
        raise Stop(3, f"a session is frozen on {existing['branch']}: rerun with --tag "
                      f"{existing['branch'].removeprefix('autoresearch/')}, or start a new comparison "
                      "track there: scripts/setup.sh --new-track")
    branch = ensure_branch(repo, tag)
    name, values = wanted_values(opts)
    preset_info = apply_preset(repo, name, values, existing is not None, opts["new_track"])
    if report and not values and report.get("recommended") and \
            not report["recommended"]["upstream_default"]:
        tier = report["recommended"]["tier"]
        log(f"hardware recommends preset {tier}; this run keeps the clone's values (pass "
            f"--preset {tier} before the first freeze to use it)")
    prepare(repo, opts)
    ensure_files(repo, tag)
    data = ensure_freeze(repo, opts["new_track"], preset_info)
    result = {"repo": repo, "branch": branch,
              "preset": (data.get("preset") or {}).get("name", "none"),
              "session": f"frozen {data.get('created')} ledger_start {data.get('ledger_start')}"}
    result.update(baseline(repo, data, opts))
    run_repeats(repo, opts, result)
    if result.get("status") == "crash":
        result["next"] = ("fix the crash (see the hint and run.log), commit, and rerun "
                          "scripts/run-experiment.sh --desc baseline --repo " + shlex.quote(repo))
    elif result.get("val_bpb"):
        result["next"] = next_loop_command(repo)
    else:
        result["next"] = ("run the baseline: scripts/run-experiment.sh --desc baseline --repo "
                          + shlex.quote(repo))
    return result


RUN_LOOP = os.path.join(SCRIPTS, "run-loop.sh")
PROPOSER = ('claude -p "$(cat "$AUTORESEARCH_CONTEXT")" --permission-mode acceptEdits '
            '--max-turns 40')


def next_loop_command(repo: str) -> str:
    """The `next:` line: a loop command that runs as printed (run-loop.sh needs a source of
    candidates), plus where the other proposers are."""
    command = " ".join([shlex.quote(RUN_LOOP), "--repo", shlex.quote(repo), "--max", "20",
                        "--propose", shlex.quote(PROPOSER)])
    return (f"fill in program.md, then start the loop: {command} (other agents and a patch "
            "queue: references/proposer-recipes.md)")


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
        if os.environ.get("AR_SETUP_CHECK_ONLY"):
            return 0
        result = run_setup(opts)
    except Stop as stop:
        log(str(stop))
        return stop.code
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    for key, value in result.items():  # (--dry-run printed its diff and returns {})
        if value is not None:
            print(f"{key}: {value}")
    return 1 if result.get("status") == "crash" else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
