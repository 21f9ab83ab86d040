"""What a proposal cost: the token and dollar usage an agent CLI reported in its output.

The loop sends the proposer's stdout and stderr to ``.autoresearch/proposer.log``; the recipes
in references/proposer-recipes.md ask the CLIs for machine-readable output, which ends with
their usage:

- Claude Code ``-p --output-format json``: one ``{"type": "result", ...}`` object with
  ``total_cost_usd``, ``usage`` (``input_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``, ``output_tokens``: the main conversation) and ``modelUsage``
  (per model, side requests included; the dollars are the sum of its ``costUSD``). Tokens come
  from ``modelUsage`` when it is there, so that they add up to the dollars.
- Codex ``exec --json``: JSON lines; each ``{"type": "turn.completed", "usage": {...}}`` sums
  its turn's requests (``input_tokens`` including ``cached_input_tokens``, ``output_tokens``).
  Codex reports no dollar figure, so ``cost_usd`` is None: no price is invented here.

``parse(text)`` returns ``{"input_tokens", "output_tokens", "cached_input_tokens", "cost_usd",
"source"}`` (input tokens count cached ones too; ``source`` is ``claude`` or ``codex``), or None
when the text holds no usage report. Several reports (two CLI calls in one proposal) add up.

CLI::

    python3 -m arcore usage LOG [--offset BYTES]   # one JSON object, or null
"""

from __future__ import annotations

import json
import math
import sys

KEYS = ("input_tokens", "output_tokens", "cached_input_tokens")
MAX_LINE = 4 << 20  # a result line longer than this is not a usage report


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value) if math.isfinite(value) and value > 0 else 0


def _money(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def claude_usage(obj: dict) -> dict | None:
    """A Claude Code ``--output-format json`` result object's usage, or None."""
    if obj.get("type") != "result" or not ("total_cost_usd" in obj or "usage" in obj):
        return None
    models = obj.get("modelUsage")
    if isinstance(models, dict) and models and all(isinstance(m, dict) for m in models.values()):
        cached = sum(_int(m.get("cacheReadInputTokens")) for m in models.values())
        inputs = sum(_int(m.get("inputTokens")) + _int(m.get("cacheCreationInputTokens"))
                     for m in models.values()) + cached
        outputs = sum(_int(m.get("outputTokens")) for m in models.values())
    else:
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        cached = _int(usage.get("cache_read_input_tokens"))
        inputs = _int(usage.get("input_tokens")) + _int(
            usage.get("cache_creation_input_tokens")) + cached
        outputs = _int(usage.get("output_tokens"))
    return {"input_tokens": inputs, "output_tokens": outputs, "cached_input_tokens": cached,
            "cost_usd": _money(obj.get("total_cost_usd")), "source": "claude"}


def codex_usage(obj: dict) -> dict | None:
    """A Codex ``--json`` ``turn.completed`` event's usage, or None."""
    usage = obj.get("usage")
    if obj.get("type") != "turn.completed" or not isinstance(usage, dict):
        return None
    return {"input_tokens": _int(usage.get("input_tokens")),
            "output_tokens": _int(usage.get("output_tokens")),
            "cached_input_tokens": _int(usage.get("cached_input_tokens")),
            "cost_usd": None, "source": "codex"}


def add(total: dict | None, more: dict | None) -> dict | None:
    """Two usage reports summed (None + x = x); dollars stay None unless both have them."""
    if total is None:
        return dict(more) if more else None
    if more is None:
        return total
    out = {k: total.get(k, 0) + more.get(k, 0) for k in KEYS}
    dollars = (total.get("cost_usd"), more.get("cost_usd"))
    out["cost_usd"] = None if None in dollars else round(dollars[0] + dollars[1], 6)
    sources = [s for s in (total.get("source"), more.get("source")) if s]
    out["source"] = sources[0] if len(set(sources)) == 1 else "+".join(sorted(set(sources)))
    return out


def parse(text: str) -> dict | None:
    """The usage every report in ``text`` (a proposer's output) adds up to, or None."""
    total = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or len(line) > MAX_LINE or '"type"' not in line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            total = add(total, claude_usage(obj) or codex_usage(obj))
    if total is not None and total.get("cost_usd") is not None:
        total["cost_usd"] = round(total["cost_usd"], 6)
    return total


def read_log(path: str, offset: int = 0) -> dict | None:
    """parse() of a log file from byte ``offset`` on (this proposal's part); None when the
    file cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, offset))
            data = handle.read()
    except OSError:
        return None
    return parse(data.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------
# Handing a proposal's usage to its judged run (and to runs.jsonl)
# ---------------------------------------------------------------------------

ENV = "AUTORESEARCH_PROPOSER_USAGE"  # JSON: the usage of the proposal HEAD came from


def clean(value) -> dict | None:
    """A usage dict as the loop may pass it on: the known keys with sane values, else None."""
    if not isinstance(value, dict):
        return None
    out: dict = {k: _int(value.get(k)) for k in KEYS}
    out["cost_usd"] = _money(value.get("cost_usd"))
    source = value.get("source")
    out["source"] = source[:40] if isinstance(source, str) and source else None
    return out


def as_env(value: dict | None) -> dict:
    """The environment entry that hands ``value`` to run-experiment.sh ({} for None)."""
    value = clean(value)
    return {ENV: json.dumps(value, sort_keys=True)} if value else {}


def from_env(environ) -> dict | None:
    """run-experiment.sh's side: the proposal's usage from its environment, or None."""
    raw = environ.get(ENV)
    if not raw:
        return None
    try:
        return clean(json.loads(raw))
    except ValueError:
        return None


def rejected_record(value: dict | None, commit: str, description: str, when: str) -> dict | None:
    """The runs.jsonl object for a proposal the loop rejected (None without usage): there is
    no judged run to carry the usage, and the night's spend must still add up."""
    value = clean(value)
    if value is None:
        return None
    return {"commit": commit, "status": "crash", "rejected": True, "description": description,
            "time": when, "proposer_usage": value}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or len(argv) not in (1, 3) \
            or (len(argv) == 3 and (argv[1] != "--offset" or not argv[2].isdigit())):
        print("usage: python3 -m arcore usage LOG [--offset BYTES]",
              file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    print(json.dumps(read_log(argv[0], int(argv[2]) if len(argv) == 3 else 0)))
    return 0
