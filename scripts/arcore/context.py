"""What the scheduler reads from the ledger and tells: the track's facts (best, streaks), the
proposer's context (a rendered prompt: the digest of everything tried, bounded in size, and
what is running and waiting right now), and the status line.
"""

from __future__ import annotations

import math
from pathlib import Path

from arcore import ledger, session
from arcore.gitops import EDITABLE, short

LEDGER = "results.tsv"
PACKAGE = Path(__file__).resolve().parent.parent.parent
PROMPT_TEMPLATE = PACKAGE / "templates" / "proposer-prompt.md"
CONTEXT = ".autoresearch/proposer-context.md"
DEFAULT_TEMPLATE = ("Improve {{metric}} ({{direction}} is better) by editing train.py; "
                    "commit once.\n")


# ---------------------------------------------------------------------------
# Ledger facts: the track, streaks, the best
# ---------------------------------------------------------------------------


def read_session(repo: str) -> dict:
    try:
        data = session.load(repo)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def track_rows(repo: str) -> list[dict]:
    """The rows of the current comparison track ([] before the first freeze)."""
    sess = read_session(repo)
    start = sess.get("ledger_start")
    if not isinstance(start, int) or isinstance(start, bool):
        return []
    return ledger.track_rows(ledger.read_ledger(str(Path(repo) / LEDGER)), start)


def row_count(repo: str) -> int:
    return len(ledger.read_ledger(str(Path(repo) / LEDGER)))


def rows_after(repo: str, start: int) -> list[dict]:
    return ledger.read_ledger(str(Path(repo) / LEDGER))[start:]


def row_for(rows: list[dict], commit: str | None) -> dict | None:
    """The last row naming ``commit`` (by its short hash)."""
    if not commit:
        return None
    for row in reversed(rows):
        if row["commit"] and commit.startswith(row["commit"]):
            return row
    return None


def trailing(rows: list[dict], statuses: tuple[str, ...]) -> int:
    """How many rows at the end have a status in ``statuses``."""
    count = 0
    for row in reversed(rows):
        if row["status"] not in statuses:
            break
        count += 1
    return count


def best_value(rows: list[dict], higher_is_better: bool = False,
               repo: str | None = None) -> float | None:
    """The value to beat: the judge's standing best (see ledger.standing_best)."""
    test = session.on_branch(repo) if repo else None
    best = ledger.standing_best(rows, test, higher_is_better)
    return None if best is None else best["val_bpb"]


def beats(value: float | None, best: float | None, higher_is_better: bool) -> bool:
    if value is None:
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best


# ---------------------------------------------------------------------------
# The proposer's context (env vars + a rendered prompt file)
# ---------------------------------------------------------------------------


def render_prompt(template: str, facts: dict) -> str:
    """Replace ``{{name}}`` placeholders by ``facts[name]`` (unknown names become '')."""
    out = template
    for key, value in facts.items():
        out = out.replace("{{" + key + "}}", str(value))
    while "{{" in out and "}}" in out.split("{{", 1)[1]:
        before, rest = out.split("{{", 1)
        out = before + rest.split("}}", 1)[1]
    return out


TRIED_LIMIT = 6000  # characters of the "what has been tried" digest in the prompt


def tried_digest(rows: list[dict], limit: int = TRIED_LIMIT) -> str:
    """Every experiment of the track, one line each (status, value, description), bounded to
    ``limit`` characters: the keeps always, then the newest others; what does not fit is
    counted. Repeated descriptions are shown once with their count."""
    if not rows:
        return "(nothing yet)"
    seen: dict[str, list] = {}
    for i, r in enumerate(rows):
        desc = ledger.flatten(r["description"])[:200]
        key = f"{r['status']}\t{desc}"
        if key in seen:
            seen[key][1] += 1
            seen[key][0] = i
        else:
            seen[key] = [i, 1, r]
    entries = sorted(seen.values(), key=lambda e: e[0])

    def line(e) -> str:
        r, times = e[2], e[1]
        value = "-" if r["status"] == "crash" else f"{r['val_bpb'] or 0:.6f}"
        return f"{r['status']}\t{value}\t{ledger.flatten(r['description'])[:200]}" + \
            (f" (x{times})" if times > 1 else "")

    chosen, size = set(), 0
    order = [e for e in entries if e[2]["status"] == "keep"] + \
        [e for e in reversed(entries) if e[2]["status"] != "keep"]
    for e in order:
        text = line(e)
        if size + len(text) + 1 > limit:
            continue
        chosen.add(id(e))
        size += len(text) + 1
    shown = [line(e) for e in entries if id(e) in chosen]
    left = len(entries) - len(shown)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("keep", "discard", "crash")}
    head_line = (f"{len(rows)} experiments in this track: {counts['keep']} keep, "
                 f"{counts['discard']} discard, {counts['crash']} crash")
    tail = f"\n({left} older ones not shown)" if left else ""
    return head_line + "\n" + "\n".join(shown) + tail


def context_facts(repo: str, rows: list[dict], base: str, iteration: int, plateau_after: int,
                  metric: str, higher_is_better: bool, recent: int = 10) -> dict:
    best = best_value(rows, higher_is_better, repo)
    failures = trailing(rows, ("discard", "crash"))
    table = "\n".join("\t".join([r["commit"], f"{r['val_bpb'] or 0:.6f}", r["status"],
                                 ledger.flatten(r["description"])]) for r in rows[-recent:])
    plateau = ""
    if plateau_after and failures >= plateau_after:
        tried = "\n".join(f"- {ledger.flatten(r['description'])} ({r['status']})"
                          for r in rows[-failures:][-recent:])
        plateau = (f"## Plateau: the last {failures} experiments did not improve\n\n"
                   f"What was tried since the last keep:\n{tried}\n\n"
                   "Change direction: do not make another small variation of these. Try a "
                   "structurally different idea (architecture, optimizer, schedule, batch "
                   "size, model size), combine earlier near-misses, or simplify.\n")
    return {
        "program": "program.md" if (Path(repo) / "program.md").exists() else "(no program.md)",
        "metric": metric,
        "direction": "higher" if higher_is_better else "lower",
        "best": "none yet" if best is None else f"{best:.6f}",
        "base": short(base),
        "iteration": iteration,
        "recent": table or "(no rows yet)",
        "tried": tried_digest(rows),
        "plateau": plateau,
        "failures": failures,
        "editable": ", ".join(EDITABLE),
    }


def in_flight_section(running: list[str], waiting: list[str]) -> str:
    """The prompt's note on what is being tried right now ('' when nothing is)."""
    if not running and not waiting:
        return ""
    lines = ["", "## In flight right now (propose something different)", ""]
    lines += [f"- running: {ledger.flatten(r)}" for r in running]
    lines += [f"- waiting to run: {ledger.flatten(w)}" for w in waiting]
    return "\n".join(lines) + "\n"


def prompt(repo: str, opts, base: str, n: int, running: list[str], waiting: list[str]
           ) -> tuple[dict, str]:
    """The facts and the rendered prompt for proposal ``n`` on ``base``, also written to
    .autoresearch/proposer-context.md for the user to read."""
    facts = context_facts(repo, track_rows(repo), base, n, opts.plateau,
                          opts.metric or "val_bpb", opts.higher_is_better)
    template_path = Path(opts.prompt) if opts.prompt else PROMPT_TEMPLATE
    template = template_path.read_text(encoding="utf-8") if template_path.exists() \
        else DEFAULT_TEMPLATE
    text = render_prompt(template, facts) + in_flight_section(running, waiting)
    context = Path(repo) / CONTEXT
    context.parent.mkdir(parents=True, exist_ok=True)
    context.write_text(text, encoding="utf-8")
    return facts, text


def proposer_env(facts: dict, base: str, n: int) -> dict:
    """The AUTORESEARCH_* facts a proposer gets (the clone's paths are added to them)."""
    return {"AUTORESEARCH_BASE": base, "AUTORESEARCH_BEST": str(facts["best"]),
            "AUTORESEARCH_ITERATION": str(n),
            "AUTORESEARCH_PLATEAU": "1" if facts["plateau"] else "0",
            "AUTORESEARCH_METRIC": facts["metric"],
            "AUTORESEARCH_DIRECTION": facts["direction"]}


# ---------------------------------------------------------------------------
# Status line
# ---------------------------------------------------------------------------


def clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def eta(done: int, elapsed: float, max_n: int | None, deadline_left: float | None,
        queue_left: int | None = None) -> float | None:
    """Seconds left: the smaller of what the bounds allow; None when unbounded or unknown."""
    options = []
    left = [n for n in (None if max_n is None else max_n - done, queue_left) if n is not None]
    if left and done:
        options.append(elapsed / done * max(0, min(left)))
    if deadline_left is not None:
        options.append(max(0.0, deadline_left))
    return min(options) if options else None


def status_line(done: int, max_n: int | None, verdict: str, value: float | None,
                best: float | None, elapsed: float, eta_s: float | None) -> str:
    total = "?" if max_n is None else str(max_n)
    shown = "" if value is None else f" {value:.6f}"
    best_s = "-" if best is None else f"{best:.6f}"
    return (f"[{done}/{total}] {verdict}{shown} | best {best_s} | "
            f"elapsed {clock(elapsed)} | ETA {clock(eta_s)}")
