"""show-results.sh's logic: what a session found, for a human (text) and an agent (JSON).

It reads any results.tsv by header name (through ``arcore.ledger``), plus, when present, the
session's sidecars next to it: ``.autoresearch/session.json`` (``noise_floor``, ``ledger_start``)
and ``.autoresearch/runs.jsonl`` (``crash_class``, ``hint`` per commit). Both may be missing or
junk; the ledger is the truth.

The numbers follow upstream's analysis notebook: keep rate = keep / (keep + discard), baseline =
the track's first kept measured row, best = the lowest kept val_bpb, each kept run's delta =
its val_bpb - the previous kept val_bpb (arcore.findings: one delta convention for every script,
value - reference, so an improvement in val_bpb is negative; a "gain" is -delta). The baseline,
repeats and seed-only changes are not ideas: no keep rate or kept count includes them. Rows after
session.json's
``ledger_start`` form the track (``--all`` lifts it).

Views: the default text (at most 40 lines: summary, top N, timeline, crash patterns, then the
four things a human needs: best gains, repeated failures, what has been tried, the next narrow
experiment family), ``--tried`` (the body of templates/program.md's "What has been tried"),
``--json`` (everything), ``--plot FILE.svg`` (arcore.svgplot's progress chart).

Agent cost: runs.jsonl objects carrying ``proposer_usage`` (the loop's record of what each
proposal's agent CLI reported, see arcore.usage) give tokens and dollars per experiment, per
kept gain (the proposals since the previous keep) and for the session (``agent_cost`` in
--json; three text lines). Dollars are only what the CLI reported (Codex reports none).

Noise: a kept gain smaller than the noise floor (session.json's ``noise_floor``, else the
pooled std of commits the ledger measured more than once) is "within noise"; with neither, the
report says single runs cannot separate small gains. Word themes (repeated failures, the next
family, unclassed crash groups) are a heuristic over description words, from the latest
THEME_WINDOW rows.

CLI::

    python3 -m arcore report [--ledger FILE] [--session-dir DIR] [--top N] [--all]
                             [--tried] [--json] [--plot FILE.svg]
"""

from __future__ import annotations

import functools
import heapq
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from itertools import compress
from operator import and_

from arcore import cli, findings
from arcore.crashhints import HINTS
from arcore.ledger import read_columns
from arcore.track import Track, clean
from arcore.track import measured as track_measured

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DELTA_CONVENTION = ("delta = value - reference (the previous kept run here, the standing best in "
                    "run-experiment.sh): negative = lower val_bpb = better; gain = -delta")
DEFAULT_TOP = 5
TEXT_WIDTH = 72  # description characters in the text view
TRIED_WIDTH = 160  # description characters in the --tried block
TIMELINE_LINES = 8
FAILURE_LINES = 3
THEME_WINDOW = 20000  # word themes (failures, next family) come from the latest runs only

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Words that say nothing about *what* was tried: English glue, directions, ledger boilerplate.
STOPWORDS = frozenset(
    """
    a an and are as at be but by for from has have in into is it its no not of on or so than
    that the then this to too up via vs was were when with without only just also same more less
    new old one two all any each per use used using try tried trying test tested add added adds
    remove removed change changed changes set sets make made keep kept instead again back still
    increase increased decrease decreased reduce reduced lower raise raised higher bigger smaller
    larger double doubled halve halved enable enabled disable disabled switch replace replaced
    tweak tune tuned fix fixed revert reverted run rerun default defaults baseline
    crash crashed crashes failed fail failure skipped hung oom error broken
    hypothesis evidence expected result results paper idea see note because after before about
    worse better slightly hurt hurts need needs extra fewer win wins won lost gain gains massive
    novel contribution optimal seems improved improves improvement regression best bottleneck
    here there which while does did do up down doesn didn isn wasn don aren weren can couldn
    wouldn shouldn hasn haven dropped
    """.split()
)

# Parenthesised words that are not crash classes ("(tried)", "(baseline)").
_NOT_CLASSES = STOPWORDS - {"oom", "crash", "error", "hung"}
_WORD = re.compile(r"[^\W\d_][\w-]*[^\W_]")  # two characters or more, no trailing - or _
_CLASS = re.compile(r"(?:^|\s)\(\s*([A-Za-z][\w-]{0,23})\s*\)\W*$")


# ---------------------------------------------------------------------------
# Reading the sidecars (tolerant: absent or junk means "not recorded")
# ---------------------------------------------------------------------------


def load_session(session_dir: str | None) -> dict:
    """session.json as a dict; {} when missing, unreadable or not an object."""
    if not session_dir:
        return {}
    try:
        handle = open(os.path.join(session_dir, "session.json"), encoding="utf-8")
    except OSError:
        return {}
    import json  # here and for --json only: a report without session files never loads it

    with handle:
        try:
            data = json.load(handle)
        except (OSError, ValueError):
            return {}
    return data if isinstance(data, dict) else {}


def read_runs(session_dir: str | None) -> bytes | None:
    """runs.jsonl's bytes, or None when it is missing or unreadable."""
    if not session_dir:
        return None
    try:
        with open(os.path.join(session_dir, "runs.jsonl"), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def load_runs(session_dir: str | None) -> dict | None:
    """runs_summary() of the session's runs.jsonl, or None when it is missing."""
    data = read_runs(session_dir)
    return None if data is None else runs_summary(data)


def runs_summary(data: bytes, totals: bool = True) -> dict:
    """What runs.jsonl says: ``records`` (judged runs), ``seconds`` (their total run time),
    ``workers`` ({worker: runs}), ``crashes`` ({short commit: {crash_class, hint}}, the last
    record per commit) and ``noise_samples``. Junk lines are skipped. ``totals=False`` leaves
    the first three None (a view that does not print them: three scans of the file fewer).

    A record is a few hundred bytes of which the report needs four keys: the totals come from
    scans of the raw bytes, and only lines naming a crash class are decoded.
    """
    crashes: dict[str, dict] = {}
    for match in _CRASH_CLASS.finditer(data):
        begin = data.rfind(b"\n", 0, match.start()) + 1
        end = data.find(b"\n", match.end())
        record = _json_object(data[begin:] if end < 0 else data[begin:end])
        if record and isinstance(record.get("commit"), str) and record["commit"]:
            crashes[record["commit"][:7]] = {"crash_class": record.get("crash_class"),
                                             "hint": record.get("hint")}
    return {"records": len(_COMMIT.findall(data)) if totals else None,
            "seconds": _total_seconds(_SECONDS.findall(data)) if totals else None,
            "workers": _worker_counts(_WORKER.findall(data)) if totals else None,
            "crashes": crashes,
            "noise_samples": _noise_samples(data)}


def _total_seconds(texts: list[bytes]) -> float | None:
    """The sum of the finite ones (a number JSON would not parse, like 1.2.3, is left out);
    None when there is none."""
    try:
        seconds = list(map(float, texts))
    except ValueError:
        seconds = [x for x in map(_float_or_none, texts) if x is not None]
    total = sum(seconds)
    if not math.isfinite(total):  # an inf or a nan among them: without those
        seconds = [x for x in seconds if math.isfinite(x)]
        total = sum(seconds)
    return total if seconds else None


def _float_or_none(text: bytes) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _worker_counts(names: list[bytes]) -> dict[str, int]:
    """{name: runs} of the raw worker names, decoded once per distinct name (first seen
    first; names that decode alike are one); empty names left out."""
    out: dict[str, int] = {}
    for raw, count in Counter(names).items():
        if raw:
            name = raw.decode("utf-8", "replace")
            out[name] = out.get(name, 0) + count
    return out


_SEED_ONLY = re.compile(rb'"seed_only"\s*:\s*true')


def _noise_samples(data: bytes) -> dict[str, float]:
    """{short commit: noise_sample} of runs.jsonl's seed-only records (arcore.experiment)."""
    out: dict[str, float] = {}
    if b'"seed_only"' not in data:  # one fast scan where there are none
        return out
    for match in _SEED_ONLY.finditer(data):
        begin = data.rfind(b"\n", 0, match.start()) + 1
        end = data.find(b"\n", match.end())
        record = _json_object(data[begin:] if end < 0 else data[begin:end])
        sample = (record or {}).get("noise_sample")
        if isinstance(record.get("commit") if record else None, str) and \
                isinstance(sample, (int, float)) and not isinstance(sample, bool):
            out[record["commit"][:7]] = float(sample)
    return out


def _json_object(line: bytes) -> dict | None:
    import json  # a sidecar's lines only

    try:
        obj = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


_SECONDS = re.compile(rb'"seconds"\s*:\s*([-+]?[0-9][0-9.eE+-]*)')
_WORKER = re.compile(rb'"worker"\s*:\s*"([^"\\\n]*)"')
_CRASH_CLASS = re.compile(rb'"crash_class"\s*:\s*"')
_COMMIT = re.compile(rb'"commit"\s*:\s*"[^"\n]')


def rerun_noise(track: Track) -> dict | None:
    """The pooled std of val_bpb over commits measured more than once (reruns), or None."""
    commits = track.commit
    if len(set(commits)) == len(commits):
        return None
    values: dict[str, list[float]] = {}
    for commit, value in zip(commits, track.value):
        if value is not None and commit:
            values.setdefault(commit[:7], []).append(value)
    groups = [v for v in values.values() if len(v) >= 2]
    n = sum(len(v) for v in groups)
    if not groups or n - len(groups) < 1:
        return None
    squares = sum((x - sum(v) / len(v)) ** 2 for v in groups for x in v)
    std = math.sqrt(squares / (n - len(groups)))
    return {"std": std, "commits": len(groups), "runs": n} if std > 0 else None


def noise_floor(session: dict) -> float | None:
    value = session.get("noise_floor")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def ledger_start(session: dict) -> int:
    value = session.get("ledger_start")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


# ---------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------


def measured(row: dict) -> float | None:
    """The row's val_bpb when it is a real measurement (crash rows carry 0.000000)."""
    return track_measured(row.get("val_bpb"))


def clip(text: object, width: int) -> str:
    """One printable line of at most ``width`` characters (an ellipsis marks a cut)."""
    flat = clean(text)
    return flat if len(flat) <= width else flat[: max(1, width - 1)].rstrip() + "…"


def words(text: str) -> frozenset[str]:
    """The description's content words, lower-cased, without stopwords."""
    return frozenset(_WORD.findall(text.lower())) - STOPWORDS


# Once per distinct description: word themes and --tried / --json's knobs read the same rows.
description_knob = functools.lru_cache(maxsize=None)(findings.knob)
description_words = functools.lru_cache(maxsize=None)(words)


def crash_class_in(description: str) -> str | None:
    """A crash class the description carries in parentheses, e.g. ``double width (oom)``."""
    found = _CLASS.search(description or "")
    if not found:
        return None
    word = found.group(1).lower()
    return None if word in _NOT_CLASSES else word


def _entry(track: Track, i: int) -> dict:
    """Row ``i`` as the report lists a run."""
    return {"n": track.first + i, "commit": track.commit[i], "val_bpb": track.value[i],
            "memory_gb": track.memory[i], "status": track.status[i],
            "description": track.description[i]}


# ---------------------------------------------------------------------------
# Analysis (pure): rows in, one report dict out
# ---------------------------------------------------------------------------


def number_rows(rows: list[dict], start: int = 0) -> list[dict]:
    """The track's rows (after the first ``start``) as records: ``n`` (1-based row number),
    commit, val_bpb (a real measurement or None), memory_gb, status, description (one clean
    line) and ``fail`` (crashed, or ended without a measurement: some ledgers log aborted runs
    as discard), as arcore.track.Track has them by column. read_ledger()'s dicts are completed
    in place (their other keys stay), so call it on rows read for the report."""
    track = Track.from_rows(rows, start)
    out = rows[start:]
    for i, row in enumerate(out):
        row.update(track.record(i))
    return out


_STATUSES = ("keep", "discard", "crash")


def status_counts(by_status: Counter) -> dict[str, int]:
    """keep, discard, crash and other (every other status together), from Counter(statuses)."""
    out = {name: by_status.get(name, 0) for name in _STATUSES}
    out["other"] = sum(c for s, c in by_status.items() if s not in _STATUSES)
    return out


def timeline(track: Track, floor: float | None) -> list[dict]:
    """Kept runs in order, each with its delta vs the previous kept run and a verdict."""
    out: list[dict] = []
    previous: float | None = None
    for i in track.kept:
        value = track.value[i]
        item = _entry(track, i)
        role = track.role[i] if track.role is not None else "idea"
        delta = None if previous is None or role == "baseline" else value - previous
        item["delta"] = delta
        item["gain"] = None if delta is None else -delta
        item["role"] = role
        item["verdict"] = verdict(delta, floor) if role != "repeat" else "repeat"
        out.append(item)
        if role != "repeat" or previous is None:
            previous = value
    return out


def verdict(delta: float | None, floor: float | None) -> str:
    if delta is None:
        return "baseline"
    if floor is not None and abs(delta) < floor:
        return "within noise"
    if delta > 0:
        return "worse than previous kept"
    return "gain" if delta < 0 else "tie"


def failure_class(row: dict, runs: dict[str, dict]) -> tuple[str | None, str, str | None]:
    """(class, where it came from, hint) for a failed row; ``runs`` is load_runs()'s
    ``crashes``: {short commit: {crash_class, hint}}."""
    return _failure_class(str(row.get("commit", "")), row.get("description", ""), runs)


def _failure_class(commit: str, description: str,
                   runs: dict[str, dict]) -> tuple[str | None, str, str | None]:
    run = runs.get(commit[:7])
    if run:
        cls = run.get("crash_class")
        if isinstance(cls, str) and cls.strip():
            hint = run.get("hint")
            return cls.strip(), "session", hint if isinstance(hint, str) and hint else None
    cls = crash_class_in(description)
    if cls:
        return cls, "description", known_hint(cls)
    return None, "", None


def known_hint(crash_class: str) -> str | None:
    """arcore.runlog's hint for one of its crash classes, else None."""
    return HINTS.get(crash_class)


def crash_patterns(track: Track, runs: dict[str, dict]) -> list[dict]:
    """Failures grouped by class (session record, else description), else by repeated words
    (those within the latest THEME_WINDOW rows)."""
    groups: dict[str, dict] = {}
    unclassed: list[int] = []
    for i in compress(range(len(track)), track.fail):
        cls, source, hint = _failure_class(track.commit[i], track.description[i], runs)
        if cls is None:
            unclassed.append(i)
            continue
        group = groups.setdefault(cls, {"pattern": cls, "source": source, "count": 0,
                                        "examples": [], "hint": None})
        group["count"] += 1
        if len(group["examples"]) < 2:
            group["examples"].append(track.description[i])
        group["hint"] = group["hint"] or hint
    patterns = sorted(groups.values(), key=lambda g: -g["count"])
    recent = range(max(0, len(track) - THEME_WINDOW), len(track))
    group = [track.description[i] for i in unclassed if i >= recent.start]
    others = (track.description[i] for i in recent if not track.fail[i])
    for word, count in distinctive_words(group, others)[:FAILURE_LINES]:
        examples = [d for d in group if word in description_words(d)][:2]
        patterns.append({"pattern": word, "source": "words", "count": count,
                         "examples": examples, "hint": None})
    return patterns


def distinctive_words(group: list[str], others: Iterable[str]) -> list[tuple[str, int]]:
    """Words in at least two of ``group``'s descriptions, more common there than in ``others``
    (descriptions too, read only when some word is in two of ``group``)."""
    if len(group) < 2:
        return []
    inside = Counter(w for d in group for w in description_words(d))
    candidates = {w: c for w, c in inside.items() if c >= 2}
    if not candidates:
        return []
    others = list(others)
    outside = Counter(w for d in others for w in description_words(d) if w in candidates)
    n_in, n_out = len(group), max(1, len(others))
    scored = [(w, c) for w, c in candidates.items() if c / n_in > outside[w] / n_out]
    return sorted(scored, key=lambda wc: (-wc[1], outside[wc[0]], wc[0]))


def word_stats(track: Track, indexes, kept_gain: dict[int, float]) -> dict[str, dict]:
    """Per knob (the theme word) of the rows at ``indexes``: how often it was kept, discarded,
    failed, and the gains it carried (``kept_gain``: {n: gain})."""
    stats: dict[str, dict] = {}
    for i in indexes:
        status = track.status[i]
        if status not in ("keep", "discard", "crash"):
            continue
        word = description_knob(track.description[i])
        if not word:
            continue
        outcome = "fail" if track.fail[i] else status
        entry = stats.get(word)
        if entry is None:
            entry = stats[word] = {"keep": 0, "discard": 0, "fail": 0, "gain": 0.0,
                                   "last_keep": None}
        entry[outcome] += 1
        if outcome == "keep":
            n = track.first + i
            entry["gain"] += max(0.0, kept_gain.get(n, 0.0))
            entry["last_keep"] = n
    return stats


def repeated_failures(patterns: list[dict], stats: dict[str, dict]) -> list[dict]:
    """Crash classes seen twice or more, and themes tried twice or more that never kept."""
    out = [{"what": p["pattern"], "kind": "crash class", "count": p["count"],
            "kept": 0} for p in patterns if p["source"] != "words" and p["count"] >= 2]
    themes = [(w, s) for w, s in stats.items() if s["keep"] == 0 and s["discard"] + s["fail"] >= 2]
    themes.sort(key=lambda ws: (-(ws[1]["discard"] + ws[1]["fail"]), ws[0]))
    for word, s in themes:
        out.append({"what": word, "kind": "theme", "count": s["discard"] + s["fail"],
                    "kept": 0, "discarded": s["discard"], "failed": s["fail"]})
    return out


def next_family(stats: dict[str, dict], track: Track, best_n: int | None) -> dict | None:
    """A heuristic suggestion: the theme whose kept runs carried the most gain beyond noise,
    weighted by its keep rate (add-one smoothed), with its latest kept description as the
    anchor to vary."""
    best = None
    for word, s in stats.items():
        if s["keep"] == 0 or s["gain"] <= 0:
            continue
        tried = s["keep"] + s["discard"] + s["fail"]
        score = s["gain"] * (s["keep"] + 1) / (tried + 2)
        key = (score, s["keep"], word)
        if best is None or key > best[0]:
            best = (key, word, s, tried)
    if best is None:
        return None
    _, word, s, tried = best
    return {
        "theme": word,
        "kept": s["keep"],
        "tried": tried,
        "gain": s["gain"],
        "anchor": track.description[track.index(s["last_keep"])],
        "anchor_n": s["last_keep"],
        "anchor_is_best": s["last_keep"] == best_n,
        "advice": "vary the anchor's knob in small steps either side, one change per run",
    }


def _bucket(row: dict) -> str:
    return _outcome(row["status"], row["fail"])


def _outcome(status: str, fail: bool) -> str:
    if status == "keep":
        return "kept"
    if fail:
        return "crashed"
    return "discarded" if status == "discard" else "other"


def tried_counts(track: Track) -> dict[str, int]:
    """How many distinct ideas (descriptions) each outcome holds; the baseline, repeats and
    seed-only changes are not ideas."""
    seen: dict[str, set] = {"kept": set(), "discarded": set(), "crashed": set(), "other": set()}
    ideas = compress(zip(track.status, track.fail, track.description),
                     map("idea".__eq__, track.role))
    for status, fail, description in ideas:  # _outcome(), inline: 100k rows
        seen["kept" if status == "keep" else "crashed" if fail else
             "discarded" if status == "discard" else "other"].add(description)
    return {k: len(v) for k, v in seen.items()}


def tried_lists(rows: list[dict], runs: dict[str, dict] | None = None) -> dict[str, list[dict]]:
    """Ideas by outcome, identical descriptions merged (with a count)."""
    runs = runs or {}
    out: dict[str, dict[str, dict]] = {"kept": {}, "discarded": {}, "crashed": {}, "other": {}}
    for row in rows:
        if row.get("role", "idea") != "idea":
            continue
        status, bucket = row["status"], _bucket(row)
        desc = row["description"] or "(no description)"
        item = out[bucket].get(desc)
        if item is None:
            item = out[bucket][desc] = {"description": desc, "count": 0, "status": status,
                                        "val_bpb": None, "n": row["n"]}
        item["count"] += 1
        if bucket == "crashed" and not item.get("class"):
            cls, _, _ = failure_class(row, runs)
            if cls and f"({cls})" not in desc:
                item["class"] = cls
        value = row["val_bpb"]
        if value is not None and (item["val_bpb"] is None or value < item["val_bpb"]):
            item["val_bpb"] = value
    return {k: list(v.values())[-TRIED_JSON_MAX:] for k, v in out.items()}


MAX_VARIANTS = 50  # variants listed per knob (the rest counted as more_variants)
TRIED_JSON_MAX = 500  # ideas per outcome in --json's "tried" (the latest; tried_counts has all)


def tried_by_knob(rows: list[dict], kept: list[dict], runs: dict | None = None) -> list[dict]:
    """Ideas grouped by the knob they change (arcore.findings.knob), in order of first try:
    {knob, kept, discarded, crashed, best_gain, variants: [{text, outcome, n, count, within}]}.
    A description tried more than once is one variant with its count."""
    verdicts = {k["n"]: k for k in kept}
    groups: dict[str, dict] = {}
    for row in rows:
        if row.get("role", "idea") != "idea":
            continue
        name = description_knob(row["description"]) or "(other)"
        group = groups.get(name)
        if group is None:
            group = groups[name] = {"knob": name, "kept": 0, "discarded": 0, "crashed": 0,
                                    "other": 0, "best_gain": None, "variants": {}}
        bucket = _bucket(row)
        group[bucket] += 1
        key = (bucket, row["description"])  # one description is one variant
        entry = group["variants"].get(key)
        if entry is None and len(group["variants"]) >= MAX_VARIANTS:
            group["more_variants"] = group.get("more_variants", 0) + 1  # counted, not listed
            continue
        if entry is None:
            text = findings.variant(row["description"], name) or "(no description)"
            entry = group["variants"][key] = {"text": text, "outcome": bucket,
                                                         "n": row["n"], "count": 0,
                                                         "gain": None, "within": False,
                                                         "status": row["status"],
                                                         "val_bpb": None, "class": None}
        entry["count"] += 1
        if bucket == "crashed" and not entry["class"]:
            cls, _, _ = failure_class(row, runs or {})
            if cls and f"({cls})" not in row["description"]:
                entry["class"] = cls
        value = row["val_bpb"]
        if value is not None and (entry["val_bpb"] is None or value < entry["val_bpb"]):
            entry["val_bpb"] = value
        k = verdicts.get(row["n"])
        if k is not None and k["gain"] is not None:
            entry["gain"], entry["within"] = k["gain"], k["verdict"] == "within noise"
            if group["best_gain"] is None or k["gain"] > group["best_gain"]:
                group["best_gain"] = k["gain"]
    out = []
    for group in groups.values():
        group["variants"] = list(group["variants"].values())
        out.append(group)
    return out


def analyse(rows: list[dict], runs: dict | None = None,
            floor: float | None = None, top: int = DEFAULT_TOP, start: int = 0) -> dict:
    """The whole report as one JSON-ready dict. ``rows`` are read_ledger()'s dicts."""
    return analyse_track(Track.from_rows(rows, start), len(rows), runs, floor, top)


def analyse_track(track: Track, total: int, runs_info: dict | None = None,
                  floor: float | None = None, top: int = DEFAULT_TOP,
                  view: str = "json") -> dict:
    """analyse() on the track's columns; ``total`` is the ledger's row count, ``runs_info``
    runs_summary()'s answer, ``floor`` session.json's noise_floor (else reruns estimate one).
    ``view`` is what will be printed of it, and only that is worked out (the rest is None):
    "json" everything, "text" all but the per-idea lists (it prints their counts), "tried"
    what render_tried() prints."""
    lists = view != "text"  # the ideas by knob (and --json's by outcome)
    details = view != "tried"  # top N, crash patterns, word themes, tried counts
    runs = (runs_info or {}).get("crashes") or {}
    recorded = (runs_info or {}).get("noise_samples") or {}
    roles = findings.classify(track, frozenset(recorded))
    noise = findings.floor_from(floor, rerun_noise(track) if floor is None else None,
                                findings.noise_samples(track, recorded))
    floor = noise["floor"]
    start = track.first - 1 if len(track) else total
    by_status = Counter(track.status)
    base = track.kept[0] if track.kept else next(
        (i for i, v in enumerate(track.value) if v is not None), None)
    kept = timeline(track, floor)
    ideas = findings.idea_counts(track)
    within = findings.within_noise_summary(kept, floor)
    if within:
        noise["note"] += f"; {within['line']}"
    noise["within"] = within
    best_item = min(kept, key=lambda k: k["val_bpb"]) if kept else None
    baseline = _entry(track, base) if base is not None else None
    improvement = None
    if baseline and best_item:
        absolute = baseline["val_bpb"] - best_item["val_bpb"]
        improvement = {"absolute": absolute, "percent": 100.0 * absolute / baseline["val_bpb"]}
    gains = sorted((k for k in kept if k["delta"] is not None and k["delta"] < 0
                    and k["role"] == "idea"), key=lambda k: k["delta"])
    kept_gain = {k["n"]: k["gain"] for k in kept if k["verdict"] == "gain"}  # beyond noise
    window = range(max(0, len(track) - THEME_WINDOW), len(track))  # the latest runs
    window_ideas = [i for i in window if track.role[i] == "idea"]
    ideas_records = track.records(window_ideas) if lists else []
    patterns = stats = None
    if details:
        patterns = crash_patterns(track, runs)
        stats = word_stats(track, window_ideas, kept_gain)
    return {
        "rows": total,
        "themes_from_last": len(window),
        "track_start": start,
        "experiments": len(track),
        "counts": status_counts(by_status),
        "other_statuses": {s: c for s, c in by_status.items() if s not in _STATUSES},
        "keep_rate": ideas["keep_rate"],  # ideas only: no baseline, repeats, seed changes
        "ideas": dict(ideas, roles=roles),
        "delta_convention": DELTA_CONVENTION,
        "baseline": baseline,
        "best": best_item,
        "improvement": improvement,
        "noise": noise,
        "runs_jsonl": {k: v for k, v in runs_info.items() if k != "crashes"} if runs_info
        else None,
        "top": [_entry(track, i) for i in top_rows(track.value, top)] if details else None,
        "timeline": kept,
        "best_gains": gains,
        "gains_total": sum(k["gain"] for k in gains),
        "crash_patterns": patterns,
        "repeated_failures": repeated_failures(patterns, stats)[:FAILURE_LINES + 2]
        if details else None,
        "next_family": next_family(stats, track, best_item["n"] if best_item else None)
        if details else None,
        # all of them; "tried" lists the latest THEME_WINDOW runs
        "tried_counts": tried_counts(track) if details else None,
        "tried_json_max": TRIED_JSON_MAX,
        "tried": tried_lists(ideas_records, runs) if view == "json" else None,
        "tried_by_knob": tried_by_knob(ideas_records, kept, runs) if lists else None,
    }


def top_rows(values: list[float | None], top: int) -> list[int]:
    """Indexes of the ``top`` lowest measured values (Track.value: None or above 0), lowest
    first; of equal values the earlier row first."""
    if top <= 0:
        return []
    lowest = heapq.nsmallest(top, filter(None, values))  # measured values are above 0
    cut = lowest[-1] if len(lowest) == top else math.inf  # only rows at or below it are listed
    ranked = sorted((v, i) for i, v in enumerate(values) if v is not None and v <= cut)
    return [i for _, i in ranked[:top]]


def chart_points(track: Track) -> tuple[int, int, list[tuple], tuple[list[int], list[float]]]:
    """What arcore.svgplot.chart() draws of a classified track: experiments, kept ideas, the
    kept runs as (n, val_bpb, description) and the other measured runs that did not crash as
    (their n, their val_bpb)."""
    kept_ideas = sum(map(and_, map("keep".__eq__, track.status), map("idea".__eq__, track.role)))
    kept = [(track.first + i, track.value[i], track.description[i]) for i in track.kept]
    other = [v is not None and s != "keep" and s != "crash"
             for v, s in zip(track.value, track.status)]
    numbers = range(track.first, track.first + len(track))
    return (len(track), kept_ideas, kept,
            (list(compress(numbers, other)), list(compress(track.value, other))))


def noise_note(floor: float | None, reruns: dict | None = None) -> dict:
    """The floor kept gains are judged against, where it came from, and one sentence."""
    if floor is not None:
        return {"floor": floor, "source": "session.json", "note": f"noise floor {floor:.6f} "
                "(session.json: std of baseline runs); kept gains below it are marked within noise"}
    if reruns is not None:
        return {"floor": reruns["std"], "source": "reruns",
                "note": f"noise floor ~{reruns['std']:.6f} estimated from {reruns['runs']} runs of "
                f"{reruns['commits']} rerun commit(s); kept gains below it are marked within noise"}
    return {"floor": None, "source": None, "note": "no noise floor measured: single runs cannot "
            "separate gains below the typical run-to-run spread (rerun the baseline to measure it)"}


# ---------------------------------------------------------------------------
# Text views
# ---------------------------------------------------------------------------


def _bpb(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.6f}"


def render_text(rep: dict, ledger: str) -> list[str]:
    """The default view: at most 40 lines with the default --top."""
    c = rep["counts"]
    lines = [f"ledger: {ledger} ({rep['rows']} rows"
             + (f"; track from row {rep['track_start'] + 1})" if rep["track_start"] else ")")]
    other = f" other: {c['other']}" if c["other"] else ""
    lines.append(f"experiments: {rep['experiments']}  keep: {c['keep']}  discard: {c['discard']}"
                 f"  crash: {c['crash']}{other}")
    if rep["experiments"] == 0:
        lines.append("no experiments yet: run one, then look again")
        return lines
    if rep["keep_rate"] is not None:
        lines.append(keep_rate_line(rep["ideas"]))
    base, best, imp = rep["baseline"], rep["best"], rep["improvement"]
    if base and best and imp:
        lines.append(f"val_bpb: {_bpb(base['val_bpb'])} (baseline) -> {_bpb(best['val_bpb'])}"
                     f" (best)  improvement: {imp['absolute']:.6f} ({imp['percent']:.2f}%)")
        lines.append(f"best experiment: #{best['n']} {best['commit']} "
                     f"{clip(best['description'], TEXT_WIDTH)}")
    else:
        lines.append("val_bpb: no kept run with a measurement yet")
    if rep.get("metric_source") == "printed":
        lines.append("metric: unattested (the val_bpb train.py printed; the session was frozen "
                     "with AUTORESEARCH_METRIC_SOURCE=printed)")
    lines.append(f"noise: {rep['noise']['note']}")
    runs = rep["runs_jsonl"]
    if runs:
        line = f"runs.jsonl: {runs['records']} record{'s' if runs['records'] != 1 else ''}"
        if runs["seconds"] is not None:
            line += f", run time {_duration(runs['seconds'])}"
        if runs["workers"]:
            busiest = sorted(runs["workers"].items(), key=lambda kv: -kv[1])[:4]
            line += ", workers: " + ", ".join(f"{clip(w, 16)} {n}" for w, n in busiest)
            if len(runs["workers"]) > 4:
                line += f" (+{len(runs['workers']) - 4} more)"
        lines.append(line)
    if rep["top"]:
        lines.append(f"top {len(rep['top'])} by val_bpb:")
        for e in rep["top"]:
            lines.append(f"  {_bpb(e['val_bpb'])}  #{e['n']:<4} {e['status']:<7} "
                         f"{clip(e['description'], TEXT_WIDTH - 10)}")
    lines.extend(_timeline_lines(rep["timeline"]))
    lines.extend(_pattern_lines(rep["crash_patterns"]))
    lines.extend(_four_things(rep))
    return lines


def keep_rate_line(ideas: dict) -> str:
    """Keep rate over ideas: the baseline, repeats and seed-only changes are left out."""
    roles = ideas["roles"]
    left_out = [f"{roles['baseline']} baseline"] if roles["baseline"] else []
    left_out += [f"{roles['repeat']} repeat{'s' if roles['repeat'] != 1 else ''}"] \
        if roles["repeat"] else []
    left_out += [f"{roles['seed']} seed-only change{'s' if roles['seed'] != 1 else ''}"] \
        if roles["seed"] else []
    line = (f"keep rate: {ideas['keep']}/{ideas['keep'] + ideas['discard']} ideas = "
            f"{100 * ideas['keep_rate']:.1f}%; {ideas['keep']} kept improvements")
    return line + (f" (not counted: {', '.join(left_out)})" if left_out else "")


def _timeline_lines(kept: list[dict]) -> list[str]:
    if len(kept) < 2:
        return []
    shown = kept
    if len(kept) > TIMELINE_LINES:  # the first, the best, the latest, then the largest steps
        best = min(kept, key=lambda k: k["val_bpb"])
        keep_ns = {kept[0]["n"], best["n"], kept[-1]["n"]}
        for k in sorted(kept[1:], key=lambda k: k["delta"] or 0):
            if len(keep_ns) >= TIMELINE_LINES:
                break
            keep_ns.add(k["n"])
        shown = [k for k in kept if k["n"] in keep_ns]
    title = "improvement timeline (kept runs, delta vs previous kept; negative = better)"
    if len(shown) < len(kept):
        hidden = len(kept) - len(shown)
        title += f"; {hidden} smaller step{'s' if hidden > 1 else ''} not shown"
    lines = [title + ":"]
    for k in shown:
        mark = "" if k["verdict"] in ("gain", "baseline") else f" [{k['verdict']}]"
        if k["role"] == "baseline" and k is not kept[0]:
            mark = " [baseline]"
        lines.append(f"  #{k['n']:<4} {_bpb(k['val_bpb'])} {_signed(k['delta']) or 'baseline':>9}"
                     f"  {clip(k['description'], TEXT_WIDTH - 12)}{mark}")
    return lines


def _pattern_lines(patterns: list[dict]) -> list[str]:
    if not patterns:
        return []
    lines = ["crash patterns (crashes and runs without a val_bpb):"]
    for p in patterns[:FAILURE_LINES]:
        label = p["pattern"] if p["source"] != "words" else f"'{p['pattern']}' (repeated word)"
        example = clip(p["examples"][0], 40) if p["examples"] else ""
        hint = f"; hint: {clip(p['hint'], 64)}" if p["hint"] else ""
        lines.append(f"  {label} x{p['count']}: e.g. {example}{hint}")
    if len(patterns) > FAILURE_LINES:
        lines[-1] += f" (+{len(patterns) - FAILURE_LINES} more in --json)"
    return lines


def _four_things(rep: dict) -> list[str]:
    lines = ["best gains:"]
    if rep["best_gains"]:
        for k in rep["best_gains"][:3]:
            mark = " (within noise)" if k["verdict"] == "within noise" else ""
            lines.append(f"  {_signed(k['delta'])} #{k['n']} {clip(k['description'], 56)}{mark}")
    else:
        lines.append("  none: nothing kept improved on the baseline")
    failures = rep["repeated_failures"]
    if failures:
        parts = []
        for f in failures[:FAILURE_LINES]:
            if f["kind"] == "crash class":
                parts.append(f"{f['what']} (crash x{f['count']})")
            else:
                parts.append(f"'{f['what']}' (0 kept / {f['count']} tried)")
        lines.append("repeated failures: " + "; ".join(parts))
    else:
        lines.append("repeated failures: none")
    if rep["themes_from_last"] < rep["experiments"]:
        lines[-1] += f" (themes from the last {rep['themes_from_last']} runs)"
    t = rep["tried_counts"]
    lines.append(f"what has been tried: {t['kept']} kept, {t['discarded']} discarded, "
                 f"{t['crashed']} crashed ideas; paste-ready block: show-results.sh --tried")
    fam = rep["next_family"]
    if fam:
        lines.append(f"next experiment family: '{fam['theme']}' ({fam['kept']}/{fam['tried']} kept,"
                     f" gains {fam['gain']:.6f}); anchor #{fam['anchor_n']}: "
                     f"{clip(fam['anchor'], 50)}")
        lines.append(f"  heuristic: {fam['advice']}")
    elif rep["best_gains"]:
        lines.append("next experiment family: every kept gain is within noise; rerun the best "
                     "commit a few times to confirm it before building on it")
    else:
        lines.append("next experiment family: no kept gain yet to build on; try single-knob "
                     "changes and measure the noise floor first")
    return lines


TRIED_SECTION_LINES = 10  # knob lines per outcome in --tried: one screen in all


def render_tried(rep: dict) -> list[str]:
    """The body of program.md's "What has been tried" section (templates/program.md): under
    Kept:, Discarded:, Crashed: one line per knob (arcore.findings.knob) with its variants,
    at most TRIED_SECTION_LINES lines each (the rest named in a count; all of it in --json).
    The baseline, repeats and seed-only changes are not ideas: the summary counts them."""
    groups = rep["tried_by_knob"] or []
    base, best, roles = rep["baseline"], rep["best"], rep["ideas"]["roles"]
    summary = f"{rep['experiments']} experiments ({rep['ideas']['ideas']} ideas"
    summary += "".join(f", {roles[k]} {name if roles[k] != 1 else name[:-1]}" for k, name in (("repeat", "repeats"),
                                                                        ("seed", "seed-only changes"))
                       if roles[k])
    summary += ")"
    if base and best:
        summary += f"; val_bpb {_bpb(base['val_bpb'])} (baseline) -> {_bpb(best['val_bpb'])} (best)"
    counts = {key: sum(g[key] for g in groups) for key in ("kept", "discarded", "crashed")}
    summary += "; " + ", ".join(f"{n} {key}" for key, n in counts.items())
    if rep["themes_from_last"] < rep["experiments"]:
        summary += f" in the last {rep['themes_from_last']} runs"
    lines = [summary + ".", f"Noise: {rep['noise']['note']}.", ""]
    for title, key in (("Kept", "kept"), ("Discarded", "discarded"), ("Crashed", "crashed"),
                       ("Other", "other")):
        chosen = [g for g in groups if g[key]]
        if key == "kept":
            chosen.sort(key=lambda g: -(g["best_gain"] or 0.0))
        else:
            chosen.sort(key=lambda g: -g[key])
        if not chosen and key == "other":
            continue
        lines.append(f"{title}:")
        if not chosen:
            lines.append("- none")
        for group in chosen[:TRIED_SECTION_LINES]:
            lines.append(_tried_knob_line(group, key))
        if len(chosen) > TRIED_SECTION_LINES:
            rest = chosen[TRIED_SECTION_LINES:]
            lines.append(f"- ... {len(rest)} more knob{'s' if len(rest) != 1 else ''} "
                         f"({sum(g[key] for g in rest)} ideas): show-results.sh --json")
        lines.append("")
    return lines[:-1]


def _tried_knob_line(group: dict, bucket: str) -> str:
    parts = []
    for v in group["variants"]:
        if v["outcome"] != bucket:
            continue
        extra = [v["status"] or "no status"] if bucket == "other" else []
        if v.get("class"):
            extra.append(v["class"])
        if v["val_bpb"] is not None and bucket != "kept":
            extra.append(_bpb(v["val_bpb"]))
        if v["gain"] is not None:
            extra.append(f"{-v['gain']:+.6f}" + (" within noise" if v["within"] else ""))
        if v["count"] > 1:
            extra.append(f"same description x{v['count']}")
        parts.append(v["text"] + (f" ({', '.join(extra)})" if extra else ""))
    count = group[bucket]
    head = f"- {group['knob']}" + (f" x{count}" if count > 1 else "") + ": "
    return clip(head + "; ".join(parts), TRIED_WIDTH)


# ---------------------------------------------------------------------------
# What the agent cost (runs.jsonl's proposer_usage, written from arcore.usage)
# ---------------------------------------------------------------------------

_USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens")


def load_costs(session_dir: str | None, since: str | None = None) -> list[dict]:
    """cost_records() of the session's runs.jsonl; [] when there is none."""
    data = read_runs(session_dir)
    return [] if data is None else cost_records(data, since)


def cost_records(data: bytes, since: str | None = None) -> list[dict]:
    """runs.jsonl objects that carry ``proposer_usage``, in order, from time ``since`` on (only
    lines naming proposer_usage are decoded); [] when there are none."""
    out = []
    for line in _lines_with(data, b'"proposer_usage"'):
        record = _json_object(line)
        if record and isinstance(record.get("proposer_usage"), dict) \
                and (since is None or str(record.get("time", "")) >= since):
            out.append(record)
    return out


def _lines_with(data: bytes, needle: bytes):
    """The lines of ``data`` that hold ``needle`` (no line break in it), in order, each once,
    cut as bytes.splitlines() cuts them (at \\n, \\r or \\r\\n): found with find(), not by
    splitting the whole file into lines."""
    at = data.find(needle)
    while at >= 0:
        newline = data.rfind(b"\n", 0, at)
        begin = max(newline, data.rfind(b"\r", newline + 1, at)) + 1
        end = data.find(b"\n", at)
        end = len(data) if end < 0 else end
        carriage = data.find(b"\r", at, end)
        end = end if carriage < 0 else carriage
        yield data[begin:end]
        at = data.find(needle, end)


def _spend(records: list[dict]) -> dict:
    """Token sums and dollars over records (dollars: None when no record has a price)."""
    usages = [r["proposer_usage"] for r in records]
    out = {k: sum(_count(u.get(k)) for u in usages) for k in _USAGE_KEYS}
    priced = [float(u["cost_usd"]) for u in usages if isinstance(u.get("cost_usd"), (int, float))
              and not isinstance(u.get("cost_usd"), bool) and math.isfinite(u["cost_usd"])]
    out["cost_usd"] = round(sum(priced), 6) if priced else None
    out["priced"], out["proposals"] = len(priced), len(records)
    return out


def _count(value) -> int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return int(value) if ok and value > 0 else 0


def agent_cost(records: list[dict], timeline: list[dict]) -> dict | None:
    """Tokens and dollars per experiment, per kept gain and for the session; None when no
    proposal reported its usage. ``kept_gains`` lists what the proposals since the previous
    keep cost each gain; ``per_kept_gain`` is the session's whole spend over its gains.
    ``timeline`` is analyse()'s kept runs (for each gain's delta)."""
    if not records:
        return None
    deltas = {str(k["commit"])[:7]: k["delta"] for k in timeline}
    experiments, gains, pending = [], [], []
    for record in records:
        commit = str(record.get("commit") or "")[:7]
        usage = record["proposer_usage"]
        experiments.append({"commit": commit, "status": record.get("status"),
                            "rejected": bool(record.get("rejected")),
                            "description": clean(record.get("description") or ""),
                            **{k: _count(usage.get(k)) for k in _USAGE_KEYS},
                            "cost_usd": _spend([record])["cost_usd"],
                            "source": usage.get("source")})
        pending.append(record)
        if record.get("status") == "keep" and not record.get("baseline"):
            gains.append({"commit": commit, "delta": deltas.get(commit), **_spend(pending)})
            pending = []
    session = _spend(records)
    session["sources"] = sorted({str(e["source"]) for e in experiments if e["source"]})
    per_gain = None
    if gains:  # the whole session's spend over its gains: failures are part of a gain's price
        n = len(gains)
        per_gain = {"gains": n, "proposals": round(session["proposals"] / n, 2),
                    "tokens": round((session["input_tokens"] + session["output_tokens"]) / n),
                    "cost_usd": None if session["cost_usd"] is None
                    else round(session["cost_usd"] / n, 6)}
    unpriced = session["proposals"] - session["priced"]
    note = ("dollars as the agent CLI reported them" if not unpriced else
            f"{unpriced} of {session['proposals']} proposals reported tokens but no dollar "
            "figure (Codex reports none); no price is assumed")
    return {"session": session, "per_kept_gain": per_gain, "kept_gains": gains,
            "experiments": experiments, "since_last_keep": _spend(pending) if pending else None,
            "note": note}


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}" if value < 100 else f"${value:,.0f}"


def cost_lines(cost: dict | None) -> list[str]:
    """The text view's agent-cost lines (at most three; nothing when none was reported)."""
    if not cost:
        return []
    s = cost["session"]
    plural = "s" if s["proposals"] != 1 else ""
    line = (f"agent cost: {s['proposals']} proposal{plural}, {s['input_tokens']:,} tokens in "
            f"({s['cached_input_tokens']:,} cached), {s['output_tokens']:,} out, ")
    unpriced = s["proposals"] - s["priced"]
    if s["cost_usd"] is None:
        line += "no dollar figure (the CLI reports tokens only)"
    else:
        line += _usd(s["cost_usd"]) + (f" (+{unpriced} with no dollar figure)" if unpriced else "")
    lines = [line]
    per = cost["per_kept_gain"]
    if per:
        money = f"{_usd(per['cost_usd'])}, " if per["cost_usd"] is not None else ""
        lines.append(f"  per kept gain (session spend / {per['gains']} gain"
                     f"{'s' if per['gains'] != 1 else ''}): {money}{per['tokens']:,} tokens, "
                     f"{per['proposals']:g} proposals")
    else:
        lines.append("  per kept gain: no kept gain yet")
    dear = sorted(cost["experiments"], key=lambda e: (-(e["cost_usd"] or 0.0),
                                                      -(e["input_tokens"] + e["output_tokens"])))
    lines.append("  dearest: " + "; ".join(
        f"{e['commit']} {e['status']}{' (rejected)' if e['rejected'] else ''} "
        + (_usd(e["cost_usd"]) if e["cost_usd"] is not None
           else f"{e['input_tokens'] + e['output_tokens']:,} tokens")
        for e in dear[:3]))
    return lines


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

USAGE = """usage: python3 -m arcore report [--ledger FILE] [--session-dir DIR] [--top N] [--all]
                                [--tried] [--json] [--plot FILE.svg]
exit: 0 ok, 1 no ledger, not a ledger, unreadable or chart not written, 2 usage,
      130 interrupted"""


def _prog() -> str:
    return os.environ.get("AR_NAME") or "report"


def _err(msg: str) -> None:
    print(f"{_prog()}: {msg}", file=sys.stderr)


def parse_args(argv: list[str]) -> dict:
    """Options as a dict; raises ValueError with a one-line message on bad usage."""
    opts = {"ledger": "results.tsv", "session_dir": None, "top": DEFAULT_TOP, "all": False,
            "tried": False, "json": False, "plot": None}
    valued = {"--ledger": "ledger", "--session-dir": "session_dir", "--top": "top",
              "--plot": "plot"}
    flags = {"--all": "all", "--tried": "tried", "--json": "json"}
    cli.parse_options(argv, opts, valued, flags, allow_empty=False)
    top = str(opts["top"])
    if not top.isdigit() or int(top) > 10**6:
        raise ValueError(f"--top needs a whole number, not {top[:40]!r}")
    opts["top"] = int(top)
    if opts["tried"] and opts["json"]:
        raise ValueError("--tried and --json are alternatives; pick one")
    if opts["plot"] and not opts["plot"].lower().endswith(".svg"):  # never over a ledger
        raise ValueError(f"--plot needs a FILE.svg, not {opts['plot'][:80]!r}")
    if opts["plot"] and os.path.exists(opts["plot"]) and os.path.exists(opts["ledger"]) \
            and os.path.samefile(opts["plot"], opts["ledger"]):
        raise ValueError("--plot must not be the ledger itself")
    return opts


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # a reader such as `head` stopped early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK
    try:
        opts = parse_args(argv)
    except ValueError as exc:
        _err(f"{exc} (see --help)")
        return EXIT_USAGE
    ledger = opts["ledger"]
    if not os.path.exists(ledger):
        _err(f"no ledger at {ledger}: run an experiment first, or pass --ledger FILE")
        return EXIT_FAIL
    if not os.path.isfile(ledger) or not os.access(ledger, os.R_OK):  # a FIFO would block
        _err(f"cannot read the ledger {ledger}: not a readable regular file")
        return EXIT_FAIL
    session_dir = opts["session_dir"] or os.path.join(os.path.dirname(ledger) or ".",
                                                      ".autoresearch")
    session = load_session(session_dir)
    try:
        columns = read_columns(ledger)
    except OSError as exc:
        _err(f"cannot read the ledger {ledger}: {exc.strerror or exc}")
        return EXIT_FAIL
    total = len(columns["status"])
    if total and not any(s in _STATUSES for s in columns["status"]) \
            and not any(map(track_measured, columns["val_bpb"])):
        _err(f"{ledger} does not look like a results.tsv: no row is keep, discard or crash, "
             "and none has a val_bpb")
        return EXIT_FAIL
    start = 0 if opts["all"] else min(ledger_start(session), total)
    track = Track.from_columns(columns, start)
    del columns  # the track has what it needs
    runs = read_runs(session_dir)
    view = "json" if opts["json"] else "tried" if opts["tried"] else "text"
    rep = analyse_track(track, total, None if runs is None
                        else runs_summary(runs, totals=view != "tried"),  # --tried: not shown
                        noise_floor(session), opts["top"], view=view)
    rep["metric_source"] = session.get("metric_source") if session else None  # arcore.attest
    if opts["plot"]:
        try:
            within = {k["n"] for k in rep["timeline"] if k["verdict"] == "within noise"}
            from arcore import svgplot  # only a chart needs it (start-up time)
            svgplot.write(opts["plot"], svgplot.chart(*chart_points(track), within=within))
        except OSError as exc:
            _err(f"cannot write {opts['plot']}: {exc.strerror or exc}")
            return EXIT_FAIL
    costs = [] if runs is None else cost_records(runs, None if opts["all"]
                                                 else session.get("created"))
    rep["agent_cost"] = agent_cost(costs, rep["timeline"])
    if opts["json"]:
        import json  # only here and for the sidecars: start-up time

        rep["ledger"] = ledger
        rep["plot"] = opts["plot"]
        print(json.dumps(rep, ensure_ascii=False, allow_nan=False))
    elif opts["tried"]:
        print("\n".join(render_tried(rep)))
    else:
        print("\n".join(render_text(rep, ledger) + cost_lines(rep["agent_cost"])))
        if opts["plot"]:
            print(f"plot: {opts['plot']}")
    return EXIT_OK
