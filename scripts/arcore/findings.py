"""What a researcher reads off a ledger: noise from what it holds, ideas by knob (pure).

Used by arcore.report (show-results.sh). Everything here takes report.number_rows()'s records
(``n``, commit, val_bpb, status, description, fail) and returns plain dicts.

- **Delta convention** (one for every script): ``delta = value - reference`` (run-experiment.sh:
  the standing best; show-results.sh: the previous kept run). For val_bpb, lower is better, so
  an improvement has a *negative* delta; a ``gain`` is ``-delta`` (positive = better).
- **Not ideas**: the track's first kept row (the baseline), repeats (a commit measured again, or a
  description naming a repeat) and seed-only changes (a description that changes only a random
  seed, or a runs.jsonl record with ``seed_only``). They count in no keep rate and no kept count.
- **Noise floor**, from what the ledger has: session.json's ``noise_floor`` (std of baseline
  repeats) when set; else the largest of the pooled std of repeated commits and the root mean
  square of the noise samples (each seed-only row's value minus the standing best at its time,
  and runs.jsonl's ``noise_sample``). The answer says where it came from.
- **Knob**: the thing a description changes: a constant name (``FINAL_LR_FRAC``), else the words
  before its first value ("embedding LR 0.6 to 0.8" -> ``embedding lr``), explanations in
  parentheses, verbs and values left out.
"""

from __future__ import annotations

import bisect
import functools
import math
import re

# ---------------------------------------------------------------------------
# Repeats and seed-only rows
# ---------------------------------------------------------------------------

_REPEAT = re.compile(r"(?i)\b(?:repeat|repeats|repeated run|rerun of|re-run of|noise run)\b")
_SEED = re.compile(r"(?i)\b(?:random\s+|rng\s+|torch\s+|numpy\s+|np\s+|data\s+)?seeds?\b")
_SEED_FILLER = frozenset("random rng change changed only noise sample to from vs a the of and".split())
SEED_NOTE = "seed-only change"


_HINTS = ("seed", "repeat", "rerun", "re-run", "noise run")


def is_repeat_description(desc: str) -> bool:
    return bool(_REPEAT.search(desc or ""))


def seed_only_description(desc: str) -> bool:
    """'random seed 42 to 137', 'seed 1 -> 2', or run-experiment.sh's seed-only note."""
    desc = desc or ""
    if SEED_NOTE in desc:
        return True
    if not _SEED.search(desc):
        return False
    rest = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", _SEED.sub(" ", desc))
    left = [w for w in re.findall(r"[A-Za-z_]+", rest) if w.lower() not in _SEED_FILLER]
    return not left


def hinted(descriptions: list[str]) -> set[int]:
    """Indexes of the descriptions that mention a seed or a repeat: one scan of the joined,
    lower-cased text (substring search is fast on any text; a regex per row is not)."""
    joined = "\n".join(descriptions).lower()
    if len(joined) != sum(map(len, descriptions)) + max(0, len(descriptions) - 1):
        return set(range(len(descriptions)))  # lower() changed a length: check every row
    starts, at = [], 0
    for desc in descriptions:
        starts.append(at)
        at += len(desc) + 1
    hits: set[int] = set()
    for hint in _HINTS:
        i = joined.find(hint)
        while i >= 0:
            hits.add(bisect.bisect_right(starts, i) - 1)
            i = joined.find(hint, i + 1)
    return hits


def classify(track: list[dict], seed_commits: frozenset[str] = frozenset()) -> dict:
    """Marks each record: ``role`` is baseline / repeat / seed / idea. Returns counts."""
    seen: set[str] = set()
    baseline_n = next((r["n"] for r in track if r["status"] == "keep" and r["val_bpb"]), None)
    counts = {"baseline": 0, "repeat": 0, "seed": 0, "idea": 0}
    maybe = hinted([row["description"] for row in track])
    for index, row in enumerate(track):
        commit = row["commit"][:7]
        desc = row["description"]
        if row["n"] == baseline_n:
            role = "baseline"
        elif commit in seen and commit != "baselin":
            role = "repeat"
        elif commit in seed_commits:
            role = "seed"
        elif index not in maybe:
            role = "idea"
        elif is_repeat_description(desc):
            role = "repeat"
        elif seed_only_description(desc):
            role = "seed"
        else:
            role = "idea"
        seen.add(commit)
        row["role"] = role
        counts[role] += 1
    counts.pop("", None)
    return counts


def idea_counts(track: list[dict]) -> dict:
    """keep / discard / crash among ideas only (classify() first), and the keep rate."""
    ideas = [r for r in track if r.get("role") == "idea"]
    keep = sum(1 for r in ideas if r["status"] == "keep")
    discard = sum(1 for r in ideas if r["status"] == "discard")
    crash = sum(1 for r in ideas if r["fail"])
    decided = keep + discard
    return {"ideas": len(ideas), "keep": keep, "discard": discard, "crash": crash,
            "keep_rate": keep / decided if decided else None}


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------


def noise_samples(track: list[dict], recorded: dict[str, float] | None = None) -> list[dict]:
    """Each seed-only row's value minus the standing best (lowest kept value so far) at its
    time; runs.jsonl's own ``noise_sample`` for its commit when recorded."""
    recorded = recorded or {}
    out = []
    best = None
    for row in track:
        value = row["val_bpb"]
        if row.get("role") == "seed" and value is not None:
            commit = (row.get("commit") or "")[:7]
            sample = recorded.get(commit)
            if sample is None and best is not None:
                sample = value - best
            if sample is not None and math.isfinite(sample):
                out.append({"n": row["n"], "sample": sample, "description": row["description"]})
        if row["status"] == "keep" and value is not None and row.get("role") != "seed":
            best = value if best is None else min(best, value)
    return out


def floor_from(session_floor: float | None, reruns: dict | None, samples: list[dict]) -> dict:
    """The noise floor and where it came from (see the module doc)."""
    if session_floor is not None:
        return {"floor": session_floor, "source": "session.json", "samples": samples,
                "note": f"noise floor {session_floor:.6f} (session.json: std of baseline runs)"}
    estimates = []
    if reruns is not None:
        estimates.append((reruns["std"], "repeats", f"std of {reruns['runs']} runs of "
                          f"{reruns['commits']} repeated commit(s)"))
    if samples:
        rms = math.sqrt(sum(s["sample"] ** 2 for s in samples) / len(samples))
        which = ", ".join(f"#{s['n']} {s['sample']:+.6f}" for s in samples[:3])
        more = f" (+{len(samples) - 3} more)" if len(samples) > 3 else ""
        estimates.append((rms, "seed-only changes", f"{len(samples)} seed-only change"
                          f"{'s' if len(samples) > 1 else ''} vs the best ({which}{more})"))
    estimates = [e for e in estimates if e[0] > 0]
    if not estimates:
        return {"floor": None, "source": None, "samples": samples,
                "note": "no noise floor measured: single runs cannot separate gains below the "
                        "typical run-to-run spread (rerun the baseline to measure it: "
                        "run-loop.sh --baseline-repeats 3)"}
    floor, source, how = max(estimates)
    others = [e for e in estimates if e[1] != source]
    extra = "".join(f"; {e[1]}: {e[0]:.6f}" for e in others)
    return {"floor": floor, "source": source, "samples": samples,
            "note": f"noise floor ~{floor:.6f} from {how}{extra}"}


def within_noise_summary(kept: list[dict], floor: float | None) -> dict | None:
    """How many kept gains (not the baseline, not repeats) are smaller than the floor."""
    gains = [k for k in kept if k.get("delta") is not None and k.get("role", "idea") == "idea"]
    if floor is None or not gains:
        return None
    small = [k for k in gains if abs(k["delta"]) < floor]
    return {"kept": len(gains), "within_noise": len(small),
            "more_than_half": 2 * len(small) > len(gains),
            "line": f"{len(small)} of {len(gains)} kept gains are smaller than the noise floor "
                    f"({floor:.6f}): within noise"
                    + (" -- more than half; confirm them by rerunning before building on them"
                       if 2 * len(small) > len(gains) else "")}


# ---------------------------------------------------------------------------
# Knobs
# ---------------------------------------------------------------------------

_VERBS = frozenset("""
    a an the add added adds remove removed drop dropped use using try tried set change changed
    increase increased decrease decreased reduce reduced lower lowered raise raised halve halved
    double doubled bump bumped tune tuned tweak tweaked enable enabled disable disabled switch
    replace replaced more less much tiny small smaller big bigger larger short shorter long longer
    new extra higher fix fixed revert reverted rerun retry again back only just also with without
    for of on in at into by to from vs and or no not is are was be it its this that
    up down
    """.split())
_STOP_AT = re.compile(r"^(?:to|->|→|=>|by|from|vs|:|=|,|;|\+|x|/)$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+$")  # FINAL_LR_FRAC, x0_lambda
_WORDNUM = re.compile(r"^[A-Za-z]{2,}\d{1,2}$")  # beta1, bf16
_VALUEISH = re.compile(r"\d|^[SLsl]{3,}$|^[0-9a-f]{6,}$")  # 0.5, 524K, 2**15, SSSL, f989ea1


def knob(desc: str) -> str:
    """The knob a description changes (see the module doc); '' when it names none."""
    text = desc or ""
    if "(" in text or "[" in text:
        text = _PARENS.sub(" ", text)
    # The words before the first digit decide it when they end at a space and name a knob:
    # the next token is a value, where the walk stops. Cached, so 100k rows cost little.
    head = _BEFORE_DIGIT.match(text).group()
    if head != text and head[-1:].isspace():
        found = _knob_of_text(head)
        if found:
            return found
    return _knob_of_text(text)


_BEFORE_DIGIT = re.compile(r"\D*")


@functools.lru_cache(maxsize=65536)
def _knob_of_text(text: str) -> str:
    return _knob_of_words(tuple(text.split(None, _HEAD_TOKENS)[:_HEAD_TOKENS]))


_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_HEAD_TOKENS = 8  # a knob is named in the first words; the rest never changes the answer


def _knob_of_words(tokens: tuple[str, ...]) -> str:
    words: list[str] = []
    for raw in tokens:
        token = raw.strip(".,;:'\"`")
        name, has_value, _ = token.partition("=")
        if _IDENT.match(name) or _WORDNUM.match(name):  # a constant or a name like beta1
            words.append(name if name.isupper() else name.lower())
            if has_value or len(words) == 3:
                break
            continue
        if not token or _STOP_AT.match(token) or _VALUEISH.search(token):
            if words:
                break
            continue
        low = token.lower()
        if low in _VERBS:
            if words:
                break
            continue
        words.append(low)
        if len(words) == 3:
            break
    return " ".join(words)


def variant(desc: str, name: str) -> str:
    """The description without its knob name in front ('embedding LR 0.6 to 0.8' -> '0.6 to
    0.8'); the whole description when it does not start with it."""
    flat = " ".join((desc or "").split())
    low = flat.lower()
    if name and low.startswith(name.lower()):
        rest = flat[len(name):].strip(" :-")
        return rest or flat
    return flat
