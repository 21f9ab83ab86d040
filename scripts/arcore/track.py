"""The report's rows as columns: one list per field, not a dict per row (pure).

A ``Track`` holds the rows of one comparison track (those after session.json's
``ledger_start``), row ``i`` being the ledger's data row ``n = first + i`` (1-based). Its
columns are what arcore.report.number_rows() puts in each record: ``commit``, ``value``
(val_bpb when it is a real measurement, else None: crash rows carry 0.000000), ``memory``,
``status``, ``description`` (one clean line) and ``fail`` (crashed, or ended without a
measurement: some ledgers log aborted runs as discard); arcore.findings.classify() adds
``role``. A report over 100k rows builds 100k dicts only where it prints them (``record``).
"""

from __future__ import annotations

import math
from itertools import compress

from arcore.ledger import flatten


def measured(value: object) -> float | None:
    """The value when it is a real measurement: a finite number above 0, else None."""
    if value is None or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def clean(text: object) -> str:
    """flatten() with a fast path for text that is already one clean line."""
    if isinstance(text, str) and text.isprintable() and "  " not in text and text == text.strip():
        return text
    return flatten(text)


def _measured_column(values: list) -> list[float | None]:
    inf = math.inf
    return [v if v.__class__ is float and 0 < v < inf else measured(v) for v in values]


class Track:
    """Columns of one track (see the module doc); ``first`` is the first row's ``n``."""

    __slots__ = ("first", "commit", "value", "memory", "status", "description", "fail",
                 "role", "_kept")

    def __init__(self, first: int, commit: list[str], value: list[float | None],
                 memory: list, status: list[str], description: list[str]) -> None:
        self.first = first
        self.commit, self.value, self.memory = commit, value, memory
        self.status, self.description = status, description
        self.fail = [s == "crash" or (v is None and s != "keep") for s, v in zip(status, value)]
        self.role: list[str] | None = None  # arcore.findings.classify()
        self._kept: list[int] | None = None

    @classmethod
    def from_columns(cls, columns: dict[str, list], start: int = 0) -> Track:
        """The track after the first ``start`` rows of arcore.ledger.read_columns()."""
        descriptions = [d if d.isprintable() and "  " not in d and d == d.strip() else clean(d)
                        for d in columns["description"][start:]]  # clean(), its test inline
        return cls(start + 1, columns["commit"][start:],
                   _measured_column(columns["val_bpb"][start:]), columns["memory_gb"][start:],
                   columns["status"][start:], descriptions)

    @classmethod
    def from_rows(cls, rows: list[dict], start: int = 0) -> Track:
        """The track after the first ``start`` rows of read_ledger()'s dicts (or any dicts:
        a missing key reads as empty)."""
        rows = rows[start:]
        return cls(start + 1, [r.get("commit", "") for r in rows],
                   _measured_column([r.get("val_bpb") for r in rows]),
                   [r.get("memory_gb") for r in rows], [r.get("status", "") for r in rows],
                   [clean(r.get("description", "")) for r in rows])

    def __len__(self) -> int:
        return len(self.status)

    @property
    def kept(self) -> list[int]:
        """Indexes of the kept rows with a measurement, in order."""
        if self._kept is None:
            keeps = compress(range(len(self.status)), map("keep".__eq__, self.status))
            self._kept = [i for i in keeps if self.value[i] is not None]
        return self._kept

    def index(self, n: int) -> int:
        """The index of row ``n``."""
        return n - self.first

    def record(self, i: int) -> dict:
        """Row ``i`` as number_rows() makes it (plus ``role`` once classified)."""
        out = {"n": self.first + i, "commit": self.commit[i], "val_bpb": self.value[i],
               "memory_gb": self.memory[i], "status": self.status[i],
               "description": self.description[i], "fail": self.fail[i]}
        if self.role is not None:
            out["role"] = self.role[i]
        return out

    def records(self, indexes) -> list[dict]:
        return [self.record(i) for i in indexes]
