"""What a researcher reads off a ledger: noise from what it holds, ideas by knob (pure).

Used by arcore.report (show-results.sh). Everything here takes an arcore.track.Track (the rows
as columns: commit, value, status, description, fail, role) or plain text, and returns plain
dicts.

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

import functools
import math
import re
from collections import Counter
from itertools import compress

from arcore.track import Track

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
    """Indexes of the descriptions whose lower-cased text names a seed or a repeat (_HINTS).

    Descriptions are one-line texts (arcore.track.clean). One scan of the joined text, as
    UTF-8 with ASCII lower-cased: the hints are ASCII, and str.lower() turns no other
    character into a hint's letter (tests/test_report.py checks every character), so this finds
    what a lower() of each would, in a fraction of the time. Should lower() change a length
    (U+0130), or a description hold a newline, every index is returned, to be checked.
    """
    low = "\n".join(descriptions).encode("utf-8", "surrogatepass").lower()  # ASCII only
    if _LOWER_GROWS in low or low.count(b"\n") != max(0, len(descriptions) - 1):
        return set(range(len(descriptions)))
    hits = []
    for hint in _HINT_BYTES:
        at = low.find(hint)
        while at >= 0:
            hits.append(at)
            at = low.find(hint, at + 1)
    found: set[int] = set()
    row = start = 0
    for at in sorted(hits):  # the row of a hit: the newlines before it
        row += low.count(b"\n", start, at)
        start = at
        found.add(row)
    return found


_HINT_BYTES = tuple(hint.encode() for hint in _HINTS)
_LOWER_GROWS = "\u0130".encode()  # the one character lower() makes longer (test_report.py)

ROLES = ("baseline", "repeat", "seed", "idea")


def classify(track: Track, seed_commits: frozenset[str] = frozenset()) -> dict:
    """Sets ``track.role``, one of ROLES per row, and returns how many rows hold each.

    The track's first kept measured row is the baseline; a row whose commit (7 characters) an
    earlier row already has is a repeat; a commit runs.jsonl recorded as seed-only
    (``seed_commits``) is a seed; else a description naming a repeat or only a seed change
    decides; the rest are ideas. The earlier test wins.
    """
    commits = track.commit
    if commits and max(map(len, commits)) > 7:
        commits = [c[:7] for c in commits]
    role = ["idea"] * len(commits)
    for index in hinted(track.description):  # the latest tests first: an earlier one overrides
        desc = track.description[index]
        if is_repeat_description(desc):
            role[index] = "repeat"
        elif seed_only_description(desc):
            role[index] = "seed"
    if seed_commits:
        for index, commit in enumerate(commits):
            if commit in seed_commits:
                role[index] = "seed"
    if len(set(commits)) < len(commits):
        seen: set[str] = set()
        for index, commit in enumerate(commits):
            if commit in seen and commit != "baselin":
                role[index] = "repeat"
            seen.add(commit)
    if track.kept:
        role[track.kept[0]] = "baseline"
    track.role = role
    return {name: role.count(name) for name in ROLES}


def idea_counts(track: Track) -> dict:
    """keep / discard / crash among ideas only (classify() first), and the keep rate."""
    is_idea = list(map("idea".__eq__, track.role))
    statuses = Counter(compress(track.status, is_idea))
    keep, discard = statuses["keep"], statuses["discard"]
    decided = keep + discard
    return {"ideas": sum(is_idea), "keep": keep, "discard": discard,
            "crash": sum(compress(track.fail, is_idea)),
            "keep_rate": keep / decided if decided else None}


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------


def noise_samples(track: Track, recorded: dict[str, float] | None = None) -> list[dict]:
    """Each seed-only row's value minus the standing best (lowest kept value so far) at its
    time; runs.jsonl's own ``noise_sample`` for its commit when recorded."""
    if "seed" not in track.role:  # the common case, in one scan
        return []
    recorded = recorded or {}
    seeds = [i for i, (r, v) in enumerate(zip(track.role, track.value))
             if r == "seed" and v is not None]
    kept = {i for i in track.kept if track.role[i] != "seed"}
    out = []
    best = None
    for index in sorted(kept.union(seeds)):  # in order: a seed row is judged by earlier keeps
        value = track.value[index]
        if index not in kept:
            sample = recorded.get((track.commit[index] or "")[:7])
            if sample is None and best is not None:
                sample = value - best
            if sample is not None and math.isfinite(sample):
                out.append({"n": track.first + index, "sample": sample,
                            "description": track.description[index]})
        else:
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
        # a separator after the name goes (':', ' - '); a minus sign or an arrow stays
        rest = _SEPARATOR.sub("", flat[len(name):], count=1).rstrip()
        return rest or flat
    return flat


_SEPARATOR = re.compile(r"^[\s:]*(?:-(?=\s|$))?[\s:]*")
