"""Seed-only candidates: a diff that changes nothing but a random seed is a noise sample.

``seed_only(diff)`` reads a ``git diff -U0`` of the candidate against the standing best and says
whether every changed line differs from its counterpart only in a random seed: a ``SEED = ...``
constant (any name holding "seed"), ``torch.manual_seed(...)`` / ``torch.cuda.manual_seed_all``,
``np.random.seed(...)``, ``random.seed(...)``, ``np.random.default_rng(...)``,
``RandomState(...)``, ``set_seed(...)``, ``PRNGKey(...)``, or a ``seed=...`` argument. Comments
and blank lines are ignored. Such a run measures the run-to-run spread, not an idea: the judge
logs it, never keeps it, and records its difference from the best as a noise sample.
"""

from __future__ import annotations

import re

SEED_MARK = "\x00SEED\x00"
_NUMBER = r"(?:0[xX][0-9a-fA-F_]+|\d[\d_]*)"
# NAME = 42 / NAME: int = 42 / f(seed=42): a name that holds "seed".
_ASSIGN = re.compile(rf"(\b(?:[A-Za-z]\w*_)?(?i:seed)(?:_\w+)?\s*(?::\s*[\w.]+\s*)?=(?!=)\s*)"
                     rf"{_NUMBER}\b")
# manual_seed(42), np.random.seed(42), default_rng(42), RandomState(42), PRNGKey(42) ...
_CALL = re.compile(rf"(\b(?:manual_seed|manual_seed_all|seed|default_rng|RandomState|set_seed|"
                   rf"PRNGKey|Random)\s*\(\s*){_NUMBER}")
_COMMENT = re.compile(r"\s*#[^'\"]*$")


def normalise(line: str) -> str:
    """The line with every seed literal replaced by a mark, its comment and edges stripped."""
    text = _COMMENT.sub("", line).strip()
    text = _ASSIGN.sub(lambda m: m.group(1) + SEED_MARK, text)
    return _CALL.sub(lambda m: m.group(1) + SEED_MARK, text)


def _meaningful(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def hunks(diff: str) -> list[tuple[str, list[str], list[str]]]:
    """(file, removed lines, added lines) per hunk of a unified diff."""
    out: list[tuple[str, list[str], list[str]]] = []
    path = ""
    for line in diff.splitlines():
        if line.startswith("diff --git"):
            path = line.split(" b/", 1)[-1]
        elif line.startswith("+++ "):
            target = line[4:].strip()
            path = target[2:] if target.startswith("b/") else target
        elif line.startswith("--- "):
            continue
        elif line.startswith("@@"):
            out.append((path, [], []))
        elif out and line.startswith("-"):
            out[-1][1].append(line[1:])
        elif out and line.startswith("+"):
            out[-1][2].append(line[1:])
    return out


def seed_only(diff: str, file: str = "train.py") -> bool:
    """True when the diff changes ``file`` only, and only in random seeds (see the module doc)."""
    found = hunks(diff)
    if not found:
        return False
    changed_seed = False
    for path, removed, added in found:
        if path != file:
            return False
        old = [line for line in removed if _meaningful(line)]
        new = [line for line in added if _meaningful(line)]
        if len(old) != len(new):
            return False
        for before, after in zip(old, new):
            a, b = normalise(before), normalise(after)
            if a != b:
                return False
            if SEED_MARK in a and _COMMENT.sub("", before).strip() != _COMMENT.sub("", after).strip():
                changed_seed = True
    return changed_seed
