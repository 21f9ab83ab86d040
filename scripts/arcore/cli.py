"""Command-line options shared by the modules: ``--name VALUE``, ``--name=VALUE``, ``--flag``."""

from __future__ import annotations


def parse_options(argv: list[str], opts: dict, valued: dict[str, str], flags: dict[str, str],
                  allow_empty: bool = True) -> dict:
    """Fills ``opts`` (returned) from ``argv``; raises ValueError with a one-line message.

    ``valued`` and ``flags`` map an option (``--ledger``) to its key in ``opts``.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in valued:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise ValueError(f"{name} needs a value")
            if value == "" and not allow_empty:
                raise ValueError(f"{name} needs a non-empty value")
            opts[valued[name]] = value
        elif arg in flags:
            opts[flags[arg]] = True
        else:
            raise ValueError(f"unknown argument: {arg[:80]}")
        i += 1
    return opts
