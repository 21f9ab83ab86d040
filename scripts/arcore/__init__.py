"""arcore: the stdlib-only Python core behind the autoresearch skill's scripts.

Each module is a small set of pure functions plus a thin ``main(argv) -> int``.
``python3 -m arcore MODULE ARGS...`` dispatches to ``arcore.MODULE.main(ARGS)``.
"""

__version__ = "0.1.0"
