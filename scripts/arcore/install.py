"""install: copy the skill's runtime parts into an agent's skill folder, never over local edits.

The runtime parts are SKILL.md, scripts/ (with arcore/, without __pycache__), references/,
templates/ and examples/ (the CPU target scripts/demo.sh runs; 150 kB). The destination keeps a manifest of the sha256 of every file the last install wrote
(MANIFEST); a file there that differs both from that record and from the new package is a local edit,
and the install refuses (exit 4, nothing written) unless --force. Files the user added that the package
does not ship are always kept. The new tree is built beside the destination and swapped in by rename,
so an interrupted install leaves the old one whole.

Where each agent reads skills (checked against the vendors' docs, Nov 2026):
    Claude Code: ~/.claude/skills/<name>/SKILL.md (personal), .claude/skills/<name>/ (project)
                 https://code.claude.com/docs/en/skills
    Codex:       $HOME/.agents/skills (user), .agents/skills from the working directory up to the
                 repository root (repo) https://developers.openai.com/codex/skills ("Where to save
                 skills"); older Codex releases read $CODEX_HOME/skills (~/.codex/skills): use
                 --skills-dir for that.

CLI:
    python3 -m arcore install --target claude|codex [--scope user|project] [--project DIR]
                              [--skills-dir DIR] [--force] [--dry-run] [--source DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

SKILL_NAME = "autoresearch"
MANIFEST = ".autoresearch-install.sha256"
RUNTIME_PARTS = ("SKILL.md", "scripts", "references", "templates", "examples")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".venv"}
SKIP_SUFFIXES = (".pyc", ".pyo")

# (target, scope) -> the skills folder, relative to HOME ("user") or to the project ("project").
SKILL_DIRS = {
    ("claude", "user"): Path(".claude/skills"),
    ("claude", "project"): Path(".claude/skills"),
    ("codex", "user"): Path(".agents/skills"),
    ("codex", "project"): Path(".agents/skills"),
}

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_LOCAL_EDITS, EXIT_INTERRUPTED = 0, 1, 2, 4, 130


class Interrupted(Exception):
    pass


# ---------------------------------------------------------------------------
# Pure functions: file sets, manifest, plan
# ---------------------------------------------------------------------------

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def package_files(source: Path) -> dict[str, str]:
    """{relative posix path: sha256} of the runtime parts under source."""
    files: dict[str, str] = {}
    for part in RUNTIME_PARTS:
        top = source / part
        if not top.exists():
            continue
        if top.is_file():
            files[part] = sha256(top)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(SKIP_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                files[path.relative_to(source).as_posix()] = sha256(path)
    return files


def parse_manifest(text: str) -> dict[str, str]:
    """sha256sum format: '<hex>  <relative path>' per line."""
    out = {}
    for line in text.splitlines():
        digest, sep, rel = line.partition("  ")
        parts = Path(rel).parts
        if sep and len(digest) == 64 and rel and not Path(rel).is_absolute() and ".." not in parts:
            out[rel] = digest  # a path leaving the folder is never trusted (nor deleted)
    return out


def format_manifest(files: dict[str, str]) -> str:
    return "".join(f"{files[rel]}  {rel}\n" for rel in sorted(files))


@dataclass
class Plan:
    add: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def make_plan(package: dict[str, str], present: dict[str, str],
              manifest: dict[str, str]) -> Plan:
    """What an install does. present: {rel: sha256} of the destination's files among the package's
    and the manifest's paths; manifest: what the last install wrote (empty if none)."""
    plan = Plan()
    for rel in sorted(package):
        have = present.get(rel)
        if have is None:
            plan.add.append(rel)
        elif have == package[rel]:
            plan.unchanged.append(rel)
        else:
            plan.update.append(rel)
            if manifest.get(rel) != have:  # not what we wrote last time: the user's
                plan.conflicts.append(rel)
    for rel in sorted(set(manifest) - set(package)):
        if rel in present:
            plan.remove.append(rel)
            if present[rel] != manifest[rel]:
                plan.conflicts.append(rel)
    plan.conflicts.sort()
    return plan


def skills_dir(target: str, scope: str, home: Path, project: Path) -> Path:
    base = home if scope == "user" else project
    return base / SKILL_DIRS[(target, scope)]


# ---------------------------------------------------------------------------
# Effects: read the destination, build the new tree beside it, swap
# ---------------------------------------------------------------------------

def read_destination(dest: Path, paths: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    manifest_path = dest / MANIFEST
    manifest = parse_manifest(manifest_path.read_text(encoding="utf-8")) \
        if manifest_path.is_file() else {}
    present = {}
    for rel in paths | set(manifest):
        path = dest / rel
        if path.is_file() and not path.is_symlink():
            present[rel] = sha256(path)
        elif path.exists() or path.is_symlink():
            present[rel] = "not-a-regular-file"
    return present, manifest


def _prune_empty_dirs(root: Path, rel: str) -> None:
    parent = (root / rel).parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def apply_plan(source: Path, dest: Path, package: dict[str, str], plan: Plan) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.installing-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    try:
        if dest.exists():
            shutil.copytree(dest, staging, symlinks=True)
        else:
            staging.mkdir()
        for rel in plan.remove:
            target = staging / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
            _prune_empty_dirs(staging, rel)
        for rel in plan.add + plan.update:
            target = staging / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.is_symlink():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, target)
        (staging / MANIFEST).write_text(format_manifest(package), encoding="utf-8")
        if dest.exists():
            os.rename(dest, old)
        os.rename(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if old.exists():
            if dest.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(old, dest)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        raise SystemExit(f"install.sh: {message}")


def _options(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="install.sh", add_help=False)
    parser.add_argument("--target", choices=("claude", "codex"))
    parser.add_argument("--scope", choices=("user", "project"), default="user")
    parser.add_argument("--project")
    parser.add_argument("--skills-dir")
    parser.add_argument("--source")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    opts = parser.parse_args(argv)
    if opts.skills_dir is None and opts.target is None:
        parser.error("--target claude|codex is required (or --skills-dir DIR)")
    if opts.project is not None and opts.scope != "project":
        parser.error("--project DIR needs --scope project")
    return opts


def _say(msg: str) -> None:
    print(f"install.sh: {msg}", file=sys.stderr)


def _on_signal(signum, _frame):
    raise Interrupted(signum)


def main(argv: list[str]) -> int:
    try:
        opts = _options(argv)
    except SystemExit as err:
        if err.code not in (None, 0):
            print(err.code, file=sys.stderr)
        return EXIT_USAGE
    source = Path(opts.source or Path(__file__).resolve().parents[2]).resolve()
    if not (source / "SKILL.md").is_file():
        _say(f"no SKILL.md in the source {source}")
        return EXIT_FAIL
    if opts.skills_dir is not None:
        parent = Path(opts.skills_dir).expanduser()
    else:
        project = Path(opts.project or os.getcwd()).expanduser()
        if opts.scope == "project" and not project.is_dir():
            _say(f"--project {project}: not a directory")
            return EXIT_USAGE
        parent = skills_dir(opts.target, opts.scope, Path.home(), project)
    dest = parent.absolute() / SKILL_NAME
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        _say(f"{dest} exists and is not a plain folder (a link or a file); move it away first")
        return EXIT_FAIL
    if dest.exists() and dest.resolve() == source:
        _say(f"{dest} is the source itself; nothing to install")
        return EXIT_FAIL

    package = package_files(source)
    present, manifest = read_destination(dest, set(package))
    plan = make_plan(package, present, manifest)
    conflicts = set(plan.conflicts)
    for key, rels in (("add", plan.add), ("update", plan.update), ("remove", plan.remove)):
        for rel in rels:
            print(f"{'conflict' if rel in conflicts and not opts.force else key}: {rel}")
    changes = len(plan.add) + len(plan.update) + len(plan.remove)
    refused = bool(conflicts) and not opts.force
    status = ("refused" if refused else "dry-run" if opts.dry_run
              else "up-to-date" if not changes and (dest / MANIFEST).is_file() else "installed")
    print(f"dest: {dest}")
    print(f"status: {status}")
    for key, rels in (("added", plan.add), ("updated", plan.update), ("removed", plan.remove),
                      ("unchanged", plan.unchanged), ("conflicts", plan.conflicts)):
        print(f"{key}: {len(rels)}")
    sys.stdout.flush()
    if refused:
        _say(f"{len(conflicts)} file(s) in {dest} differ from what the last install wrote "
             f"(local edits, first: {plan.conflicts[0]}); nothing written; "
             "rerun with --force to overwrite them")
        return EXIT_LOCAL_EDITS
    if opts.dry_run or status == "up-to-date":
        _say(f"{status}: {dest}")
        return EXIT_OK

    old_handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        apply_plan(source, dest, package, plan)
    except Interrupted:
        _say("interrupted; the destination is as it was")
        return EXIT_INTERRUPTED
    except OSError as err:
        _say(f"cannot write {dest}: {err}")
        return EXIT_FAIL
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    _say(f"installed {len(package)} files into {dest}; start a new agent session to load the skill")
    return EXIT_OK
