"""presets: the VRAM tier table and the edits that apply a tier to prepare.py and train.py.

This table is the one source of truth for the presets: check-hardware.sh recommends a tier from it,
setup.sh applies one, and references/hardware-config.md prints it (``presets table`` renders the
markdown that document must contain verbatim; a test compares them).

The ``80gb`` tier is upstream's own defaults (tested on an H100). The smaller tiers follow upstream
README's advice for small compute: keep the evaluator's constants while memory allows (the ``40gb``
tier only halves DEVICE_BATCH_SIZE), then lower MAX_SEQ_LEN and EVAL_TOKENS in prepare.py, DEPTH,
DEVICE_BATCH_SIZE and TOTAL_BATCH_SIZE (powers of two) in train.py, and use WINDOW_PATTERN "L".
They are starting points that keep every divisibility assertion of upstream's train.py, not measured
optima: nobody here ran them on the GPUs named.

CLI:
    python3 -m arcore presets table            # the markdown table
    python3 -m arcore presets show TIER [--json]
    python3 -m arcore presets for-mib MIB      # the tier name for a GPU with MIB MiB
"""

from __future__ import annotations

import ast
import json
import operator
import re
import sys
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

PREPARE_KEYS = ("MAX_SEQ_LEN", "EVAL_TOKENS")
TRAIN_KEYS = ("DEPTH", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE", "WINDOW_PATTERN")
KEYS = PREPARE_KEYS + TRAIN_KEYS
EVAL_UNIT = 524288  # upstream writes EVAL_TOKENS as a multiple of 2**19


@dataclass(frozen=True)
class Tier:
    name: str
    min_mib: int  # the smallest GPU memory (nvidia-smi memory.total, MiB) the tier is for
    examples: str
    values: dict = field(default_factory=dict)

    def prepare_values(self) -> dict:
        return {k: self.values[k] for k in PREPARE_KEYS}

    def train_values(self) -> dict:
        return {k: self.values[k] for k in TRAIN_KEYS}


def _tier(name, min_gib, examples, seq, eval_units, depth, batch, total, window) -> Tier:
    values = {
        "MAX_SEQ_LEN": seq,
        "EVAL_TOKENS": eval_units * EVAL_UNIT,
        "DEPTH": depth,
        "DEVICE_BATCH_SIZE": batch,
        "TOTAL_BATCH_SIZE": total,
        "WINDOW_PATTERN": window,
    }
    return Tier(name, int(min_gib * 1024), examples, values)


# Largest first. min_gib is compared with the GPU's total memory in GiB.
TIERS: tuple[Tier, ...] = (
    _tier("80gb", 70, "H100, H200, A100 80GB", 2048, 40, 8, 128, 2**19, "SSSL"),
    _tier("40gb", 36, "A100 40GB, L40S, RTX A6000", 2048, 40, 8, 64, 2**19, "SSSL"),
    _tier("24gb", 20, "RTX 4090, RTX 3090, RTX 5090", 1024, 10, 6, 32, 2**17, "L"),
    _tier("12gb", 10, "RTX 3060 12GB, RTX 4070, RTX 3080", 512, 4, 4, 32, 2**15, "L"),
    _tier("6gb", 4, "GTX 1660 Ti, RTX 2060, RTX 3050", 256, 1, 4, 32, 2**14, "L"),
)
DEFAULT_TIER = TIERS[0].name  # upstream's own values


def tier_names() -> list[str]:
    return [t.name for t in TIERS]


def get_tier(name: str) -> Tier:
    for tier in TIERS:
        if tier.name == name.lower():
            return tier
    raise KeyError(f"unknown preset {name!r}; one of: {', '.join(tier_names())}")


def tier_for_mib(mib: float | None) -> Tier | None:
    """The largest tier whose floor the memory reaches; None below the smallest floor."""
    if mib is None:
        return None
    for tier in TIERS:
        if mib >= tier.min_mib:
            return tier
    return None


def check_values(values: dict) -> list[str]:
    """Problems upstream's train.py would assert on (token counts that do not divide)."""
    problems = []
    seq, batch = values.get("MAX_SEQ_LEN"), values.get("DEVICE_BATCH_SIZE")
    total, evals = values.get("TOTAL_BATCH_SIZE"), values.get("EVAL_TOKENS")
    for key, value in values.items():
        if key != "WINDOW_PATTERN" and (not isinstance(value, int) or value <= 0):
            problems.append(f"{key} must be a positive integer, not {value!r}")
    if problems:
        return problems
    if seq and batch and total and total % (seq * batch):
        problems.append(f"TOTAL_BATCH_SIZE {total} is not a multiple of "
                        f"DEVICE_BATCH_SIZE * MAX_SEQ_LEN = {seq * batch}")
    if seq and batch and evals and evals < seq * batch:
        problems.append(f"EVAL_TOKENS {evals} is less than one batch ({seq * batch} tokens)")
    return problems


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def render_value(key: str, value) -> str:
    """The Python literal a constant is written as (upstream's own style)."""
    if isinstance(value, str):
        return json.dumps(value)
    if key == "EVAL_TOKENS" and value % EVAL_UNIT == 0:
        return f"{value // EVAL_UNIT} * {EVAL_UNIT}"
    if key == "TOTAL_BATCH_SIZE" and value > 0 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return str(value)


def render_table() -> str:
    """The markdown table references/hardware-config.md must contain verbatim."""
    head = ["tier", "GPU memory", "for example", *KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for tier in TIERS:
        cells = [f"`{tier.name}`", f">= {tier.min_mib // 1024} GiB", tier.examples]
        cells += [f"`{render_value(k, tier.values[k])}`" for k in KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def as_dict(tier: Tier) -> dict:
    return {"tier": tier.name, "min_mib": tier.min_mib, "examples": tier.examples,
            "prepare_py": tier.prepare_values(), "train_py": tier.train_values()}


# ---------------------------------------------------------------------------
# Reading and writing module-level constants in source text
# ---------------------------------------------------------------------------

_OPS = {ast.Mult: operator.mul, ast.Pow: operator.pow, ast.Add: operator.add,
        ast.Sub: operator.sub, ast.FloorDiv: operator.floordiv}


def _eval(node: ast.AST):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError("not a plain constant expression")


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"^(?P<lhs>{re.escape(name)}\s*=\s*)(?P<rhs>[^#\n]*?)(?P<tail>[ \t]*(#[^\n]*)?)$",
                      re.M)


def read_constant(text: str, name: str):
    """The value of the first module-level ``NAME = expr`` line; None when absent or not plain."""
    match = _pattern(name).search(text)
    if not match:
        return None
    try:
        return _eval(ast.parse(match.group("rhs").strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


def set_constant(text: str, name: str, value) -> str:
    """Rewrites the first ``NAME = expr`` line's expression, keeping its comment; KeyError if absent."""
    pattern = _pattern(name)
    match = pattern.search(text)
    if not match:
        raise KeyError(name)
    tail = match.group("tail")
    if isinstance(value, int) and not isinstance(value, bool):
        tail = _APPROX.sub(lambda _m: "~" + approx(value), tail)  # no stale "~524K" comment
    new = match.group("lhs") + render_value(name, value) + tail
    return text[:match.start()] + new + text[match.end():]


_APPROX = re.compile(r"~\d+(?:\.\d+)?[KMG]?\b")


def approx(number: int) -> str:
    """524288 -> '524K', 32768 -> '33K', 2**24 -> '17M' (a comment's rough size)."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if number >= size:
            return f"{round(number / size)}{unit}"
    return str(number)


def apply(text: str, values: dict) -> tuple[str, list[str]]:
    """Sets every constant in values that the text defines; returns (text, names missing)."""
    missing = []
    for name, value in values.items():
        try:
            text = set_constant(text, name, value)
        except KeyError:
            missing.append(name)
    return text, missing


def differs(text: str, values: dict) -> dict:
    """The constants whose current value is not the wanted one: {name: (current, wanted)}."""
    out = {}
    for name, value in values.items():
        current = read_constant(text, name)
        if current != value:
            out[name] = (current, value)
    return out


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    usage = "usage: python3 -m arcore presets table | show TIER [--json] | for-mib MIB"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "table" and not rest:
        sys.stdout.write(render_table())
        return 0
    if cmd == "show" and rest and set(rest[1:]) <= {"--json"}:
        try:
            tier = get_tier(rest[0])
        except KeyError as err:
            print(f"presets: {err.args[0]}", file=sys.stderr)
            return 2
        if "--json" in rest[1:]:
            print(json.dumps(as_dict(tier)))
        else:
            for key in KEYS:
                print(f"{key}: {render_value(key, tier.values[key])}")
        return 0
    if cmd == "for-mib" and len(rest) == 1:
        try:
            tier = tier_for_mib(float(rest[0]))
        except ValueError:
            print(f"presets: not a number: {rest[0]!r}", file=sys.stderr)
            return 2
        if tier is None:
            print("presets: below the smallest tier", file=sys.stderr)
            return 1
        print(tier.name)
        return 0
    print(usage, file=sys.stderr)
    return 2
