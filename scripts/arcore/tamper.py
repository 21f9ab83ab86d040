"""Tamper lint: does a candidate stay inside train.py and leave the evaluator alone?

A candidate is HEAD, compared with a base commit (the last kept commit of the track). It is
refused when:

- its diff touches any file other than ``train.py``;
- its train.py, newly (relative to the base's train.py), does any of:
  redefines or rebinds ``evaluate_bpb`` or patches its attributes (``__code__``...);
  rebinds ``TIME_BUDGET`` or ``EVAL_TOKENS`` (assignment, augmented assignment, walrus,
  loop or ``with`` target, ``global``, or an import from anywhere but prepare);
  sets any attribute of the ``prepare`` module (``prepare.X = ...``, ``setattr(prepare,
  ...)``, ``vars(prepare)[...] = ...``, ``sys.modules["prepare"].X = ...``, through any alias);
  writes into the data cache (a write call -- ``open(..., "w")``, ``write_text``,
  ``shutil.*``, ``os.remove``... -- whose arguments mention ``~/.cache/autoresearch``,
  ``CACHE_DIR``/``DATA_DIR``/``TOKENIZER_DIR``, a ``.parquet`` shard or the tokenizer files).

Only findings absent from the base's train.py count, so an inherited pattern never blocks a
track. The lint reads the source (``ast``); it never runs it. Upstream issue #599 lists the
ways agents gamed the metric that these rules cover.

CLI::

    python3 -m arcore tamper check [--repo DIR] [--base REV] [--head REV]
      prints one finding per line; exit 0 clean, 1 refused, 2 usage
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from arcore import gitx

ALLOWED_FILES = ("train.py",)
PROTECTED_FUNCS = ("evaluate_bpb",)
PROTECTED_CONSTS = ("TIME_BUDGET", "EVAL_TOKENS")
CACHE_NAMES = ("CACHE_DIR", "DATA_DIR", "TOKENIZER_DIR")
_CACHE_TEXT = re.compile(r"\.cache[/\\]autoresearch|autoresearch[/\\](data|tokenizer)"
                         r"|\.parquet|tokenizer\.pkl|token_bytes")
_WRITE_FUNCS = {"open", "write_text", "write_bytes", "unlink", "rmdir", "touch", "mkdir",
                "rename", "replace", "symlink_to", "hardlink_to", "remove", "rmtree", "copy",
                "copy2", "copyfile", "copytree", "move", "makedirs", "symlink", "link",
                "truncate", "save", "to_parquet", "write_table", "dump"}
_READ_MODES = {"r", "rb", "rt", "br", "tr"}

# ---------------------------------------------------------------------------
# Source rules (pure: text in, findings out)
# ---------------------------------------------------------------------------


def _names_in_target(target: ast.AST):
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node


def _is_sys_modules_prepare(node: ast.AST) -> bool:
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "modules" and isinstance(node.slice, ast.Constant)
            and node.slice.value == "prepare")


def _module_aliases(tree: ast.AST) -> set[str]:
    """Names bound to the prepare module itself."""
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "prepare":
                    aliases.add(alias.asname or "prepare")
        elif isinstance(node, ast.Assign) and (
                _is_sys_modules_prepare(node.value)
                or (isinstance(node.value, ast.Call) and node.value.args
                    and isinstance(node.value.args[0], ast.Constant)
                    and node.value.args[0].value == "prepare"
                    and getattr(node.value.func, "attr", getattr(node.value.func, "id", ""))
                    in ("import_module", "__import__"))):
            for target in node.targets:
                aliases.update(n.id for n in _names_in_target(target))
    return aliases


def _is_prepare(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in aliases
    if _is_sys_modules_prepare(node):
        return True
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "vars" and node.args:
        return _is_prepare(node.args[0], aliases)
    if isinstance(node, ast.Attribute) and node.attr == "__dict__":
        return _is_prepare(node.value, aliases)
    return False


def _mentions_cache(node: ast.AST, tainted: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) \
                and _CACHE_TEXT.search(sub.value):
            return True
        if isinstance(sub, ast.Name) and (sub.id in CACHE_NAMES or sub.id in tainted):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr in CACHE_NAMES:
            return True
    return False


def _write_call(node: ast.Call) -> bool:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr \
        if isinstance(func, ast.Attribute) else ""
    if name not in _WRITE_FUNCS:
        return False
    if name == "open":
        mode = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(func, ast.Attribute) and not node.args and mode is None:
            return False  # Path(...).open() reads
        if mode is None:
            return False
        return not (isinstance(mode, ast.Constant) and mode.value in _READ_MODES)
    return True


def findings(source: str) -> list[tuple[int, str]]:
    """(line, finding) for every rule the source breaks; [] when it cannot be parsed."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    aliases = _module_aliases(tree)
    protected = set(PROTECTED_FUNCS) | set(PROTECTED_CONSTS)
    out: list[tuple[int, str]] = []

    def rebind(node: ast.AST, name: str) -> None:
        what = "redefines" if name in PROTECTED_FUNCS else "rebinds"
        out.append((node.lineno, f"{what} {name}"))

    tainted: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _mentions_cache(node.value, set()):
            tainted.update(n.id for t in node.targets for n in _names_in_target(t))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name in protected:
            rebind(node, node.name)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For,
                               ast.With)):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [item.optional_vars for item in node.items if item.optional_vars] \
                if isinstance(node, ast.With) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name) and sub.id in protected \
                            and isinstance(sub.ctx, ast.Store):
                        rebind(node, sub.id)
                    elif isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                        if _is_prepare(sub.value, aliases):
                            out.append((node.lineno, f"sets prepare.{sub.attr}"))
                        elif isinstance(sub.value, ast.Name) and sub.value.id in PROTECTED_FUNCS:
                            out.append((node.lineno, f"patches {sub.value.id}.{sub.attr}"))
                    elif isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store) \
                            and _is_prepare(sub.value, aliases):
                        out.append((node.lineno, "sets an attribute of prepare"))
        elif isinstance(node, ast.Global):
            for name in node.names:
                if name in protected:
                    out.append((node.lineno, f"rebinds {name} (global)"))
        elif isinstance(node, ast.ImportFrom) and node.module != "prepare":
            for alias in node.names:
                if (alias.asname or alias.name) in protected:
                    rebind(node, alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname in protected:
                    rebind(node, alias.asname)
        elif isinstance(node, ast.Call):
            func = node.func
            if getattr(func, "id", "") in ("setattr", "delattr") and node.args:
                if _is_prepare(node.args[0], aliases):
                    out.append((node.lineno, "sets an attribute of prepare"))
                elif isinstance(node.args[0], ast.Name) and node.args[0].id in PROTECTED_FUNCS:
                    out.append((node.lineno, f"patches {node.args[0].id}"))
            elif isinstance(func, ast.Attribute) and func.attr in ("update", "__setitem__",
                                                                    "setdefault") \
                    and _is_prepare(func.value, aliases):
                out.append((node.lineno, "sets an attribute of prepare"))
            elif _write_call(node) and _mentions_cache(node, tainted):
                out.append((node.lineno, "writes into the data cache"))
    return sorted(set(out))


def new_findings(base_source: str | None, head_source: str) -> list[tuple[int, str]]:
    """Findings of the head source whose text the base source does not already have."""
    inherited = {text for _, text in findings(base_source or "")}
    return [(line, text) for line, text in findings(head_source) if text not in inherited]


# ---------------------------------------------------------------------------
# Git side
# ---------------------------------------------------------------------------


def _git(repo: str, *args: str) -> subprocess.CompletedProcess:
    return gitx.run(repo, *args)


def changed_files(repo: str, base: str, head: str = "HEAD") -> list[str]:
    done = _git(repo, "diff", "--no-renames", "--name-only", "-z", base, head, "--")
    if done.returncode != 0:
        raise RuntimeError(f"git diff {base} {head}: {done.stderr.strip()}")
    return [name for name in done.stdout.split("\0") if name]


def _show(repo: str, rev: str, path: str) -> str | None:
    done = _git(repo, "show", f"{rev}:{path}")
    return done.stdout if done.returncode == 0 else None


def check(repo: str, base: str, head: str = "HEAD") -> list[str]:
    """Every reason to refuse the candidate ``head`` against ``base``; [] when clean."""
    problems = [f"touches {name} (only train.py may change)"
                for name in changed_files(repo, base, head) if name not in ALLOWED_FILES]
    head_train = _show(repo, head, "train.py")
    if head_train is not None:
        problems += [f"train.py:{line}: {text}"
                     for line, text in new_findings(_show(repo, base, "train.py"), head_train)]
    return problems


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

USAGE = """usage: python3 -m arcore tamper check [--repo DIR] [--base REV] [--head REV]
prints one finding per line (nothing when clean)
exit: 0 clean, 1 refused, 2 usage or git error"""


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] != "check" or len(argv[1:]) % 2:
        print(USAGE, file=sys.stderr)
        return 2
    opts = {"--repo": ".", "--base": "HEAD~1", "--head": "HEAD"}
    pairs = argv[1:]
    for key, value in zip(pairs[::2], pairs[1::2]):
        if key not in opts:
            print(f"tamper: unknown option {key}", file=sys.stderr)
            return 2
        opts[key] = value
    try:
        problems = check(opts["--repo"], opts["--base"], opts["--head"])
    except RuntimeError as exc:
        print(f"tamper: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    return 1 if problems else 0
