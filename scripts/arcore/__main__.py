"""Dispatcher: ``python3 -m arcore MODULE [ARGS...]`` runs ``arcore.MODULE.main(ARGS)``."""

from __future__ import annotations

import importlib
import os
import sys

import arcore


def modules() -> list[str]:
    import pkgutil  # only for the list (pkgutil pulls in inspect and typing: start-up time)

    return sorted(
        m.name
        for m in pkgutil.iter_modules(arcore.__path__)
        if not m.name.startswith("_")
    )


def is_module(name: str) -> bool:
    """Whether ``name`` is one of modules(), without listing them all."""
    return name.isidentifier() and not name.startswith("_") and any(
        os.path.isfile(os.path.join(folder, name + ".py")) for folder in arcore.__path__)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The core's own bytecode is cached beside it (scripts/arcore/__pycache__, or under a
    # PYTHONPYCACHEPREFIX) even where PYTHONDONTWRITEBYTECODE is set: every experiment starts
    # the core a few times, and compiling it from source each time cost ~0.1 s of CPU a start.
    # Only this process: the training command's environment is the isolated one (arcore.isolate).
    sys.dont_write_bytecode = False
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python3 -m arcore MODULE [ARGS...]", file=sys.stderr)
        print("modules: " + ", ".join(modules()), file=sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if not is_module(name):
        print(f"arcore: unknown module {name!r}; one of: {', '.join(modules())}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"arcore.{name}")
    entry = getattr(module, "main", None)
    if entry is None:
        print(f"arcore: module {name!r} has no command line", file=sys.stderr)
        return 2
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
