"""The progress chart upstream's analysis notebook draws as progress.png, as SVG, stdlib only.

Discarded runs are faint grey dots, kept runs green dots labelled with their descriptions, the
running best a green step line; the y-axis runs from just below the best to just above the
baseline (15 % of the improvement either side), as in the notebook. Every text is XML-escaped.
"""

from __future__ import annotations

import math
import os
import re
import tempfile

# ---------------------------------------------------------------------------
# Geometry and style (upstream's colours)
# ---------------------------------------------------------------------------

PLOT_W, PLOT_H = 1000, 500
LEFT, TOP = 95, 60
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
LABEL_SIZE = 11
LABEL_CHARS = 45
GREY, GREEN, STEP, LABEL = "#cccccc", "#2ecc71", "#27ae60", "#1a7a3a"

_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def esc(text: object) -> str:
    """Text safe inside an SVG element or a double-quoted attribute."""
    clean = _NOT_XML.sub("", str(text))
    return (clean.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def label_text(description: object) -> str:
    """Upstream's label: the description, cut to 45 characters with '...'."""
    desc = " ".join(str(description).split())
    return desc if len(desc) <= LABEL_CHARS else desc[: LABEL_CHARS - 3] + "..."


def text_width(text: str, size: float) -> float:
    """A rough rendered width (no font metrics in the standard library)."""
    wide = sum(1 for ch in text if ord(ch) > 0x2E80)
    return size * (0.6 * (len(text) - wide) + 1.0 * wide)


# ---------------------------------------------------------------------------
# Axes
# ---------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def tick_decimals(ticks: list[float]) -> int:
    if len(ticks) < 2:
        return 6
    step = abs(ticks[1] - ticks[0])
    for decimals in range(0, 9):
        if abs(round(step, decimals) - step) < step * 1e-6:
            return decimals
    return 8


# ---------------------------------------------------------------------------
# The chart
# ---------------------------------------------------------------------------


def _measured(row: dict) -> float | None:
    value = row.get("val_bpb")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


MAX_OTHER_POINTS = 1500  # discarded runs drawn: an even sample of them beyond this


def progress_svg(rows: list[dict], within: set | frozenset = frozenset()) -> str:
    """The chart for rows carrying ``n`` (experiment number), val_bpb, status, description
    (and ``role`` from arcore.findings.classify when known). Every kept run and the running best
    are drawn; of the rest an even sample of at most MAX_OTHER_POINTS. Kept runs whose ``n`` is
    in ``within`` (gains below the noise floor) are hollow and marked within noise."""
    kept_count = sum(1 for r in rows if r.get("status") == "keep"
                     and r.get("role", "idea") == "idea")
    if not any("role" in r for r in rows):
        kept_count = max(0, kept_count - 1)  # the first kept run is the baseline
    drawn = [(r["n"], value, r) for r in rows
             if r.get("status") != "crash" and (value := _measured(r)) is not None]
    kept = [(n, v, r.get("description", "")) for n, v, r in drawn if r.get("status") == "keep"]
    others = [(n, v) for n, v, r in drawn if r.get("status") != "keep"]
    return chart(len(rows), kept_count, kept, ([n for n, _ in others], [v for _, v in others]),
                 within)


def chart(total: int, kept_count: int, kept: list[tuple[int, float, str]],
          others: tuple[list[int], list[float]], within: set | frozenset = frozenset()) -> str:
    """progress_svg() from what it draws, every measured run that did not crash: ``kept`` as
    (n, val_bpb, description), in order; the others as two lists, their n and their val_bpb
    (so 100k of them make no 100k tuples: an even sample is drawn). ``total`` and
    ``kept_count`` (kept improvements) go in the title."""
    title = f"Autoresearch Progress: {total} Experiments, {kept_count} Kept Improvements"
    if within:
        title += f" ({len(within)} within noise)"
    others_n, others_v = others
    if not kept and not others_n:
        return _empty_svg(title)
    first_other = (others_n[0], others_v[0]) if others_n else None
    baseline = kept[0][1] if kept else first_other[1]
    best = min(v for _, v, _ in kept) if kept else baseline
    margin = (baseline - best) * 0.15
    if margin <= 0:
        margin = max(abs(baseline) * 0.01, 1e-4)
    y_lo, y_hi = best - margin, baseline + margin
    x_first = min(([kept[0][0]] if kept else []) + others_n[:1])
    x_last = max(([kept[-1][0]] if kept else []) + others_n[-1:])
    span = max(1, x_last - x_first)
    x_lo, x_hi = x_first - 0.03 * span - 0.5, x_last + 0.03 * span + 0.5

    def px(n: float) -> float:
        return LEFT + (n - x_lo) / (x_hi - x_lo) * PLOT_W

    def py(v: float) -> float:
        return TOP + (y_hi - v) / (y_hi - y_lo) * PLOT_H

    parts: list[str] = []
    bbox = [0.0, 0.0, LEFT + PLOT_W + 20.0, TOP + PLOT_H + 62.0]

    # grid and ticks
    y_ticks = [t for t in nice_ticks(y_lo, y_hi) if y_lo <= t <= y_hi]
    decimals = tick_decimals(y_ticks)
    for t in y_ticks:
        y = py(t)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + PLOT_W}" y2="{y:.1f}" '
                     'stroke="#000" stroke-opacity="0.12"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12">'
                     f"{t:.{decimals}f}</text>")
    for t in nice_ticks(max(x_lo, 0), x_hi):
        if t != int(t) or not x_lo <= t <= x_hi:
            continue
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + PLOT_H}" '
                     'stroke="#000" stroke-opacity="0.12"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + PLOT_H + 18}" text-anchor="middle" '
                     f'font-size="12">{int(t)}</text>')

    # data, clipped to the plot area
    parts.append('<g clip-path="url(#plot)">')
    seen: set[tuple[int, int]] = set()
    stride = max(1, math.ceil(len(others_n) / MAX_OTHER_POINTS))
    sample = list(zip(others_n[::stride], others_v[::stride]))
    for n, v in sample:
        if not y_lo <= v <= y_hi:
            continue
        key = (round(px(n)), round(py(v)))  # one dot per pixel is all the eye can see
        if key in seen:
            continue
        seen.add(key)
        parts.append(f'<circle class="discarded" cx="{px(n):.1f}" cy="{py(v):.1f}" r="2.2" '
                     f'fill="{GREY}" fill-opacity="0.5"/>')
    if kept:
        path = []
        running = math.inf
        for n, v, _ in kept:
            if v < running:
                if not path:
                    path.append(f"M{px(n):.1f},{py(v):.1f}")
                else:
                    path.append(f"H{px(n):.1f}V{py(v):.1f}")
                running = v
        path.append(f"H{px(x_last):.1f}")
        parts.append(f'<path class="running-best" d="{"".join(path)}" fill="none" '
                     f'stroke="{STEP}" stroke-width="2" stroke-opacity="0.7"/>')
        for n, v, _ in kept:
            if n in within:
                parts.append(f'<circle class="kept within-noise" cx="{px(n):.1f}" '
                             f'cy="{py(v):.1f}" r="4.5" fill="#fff" stroke="{GREEN}" '
                             f'stroke-width="1.6"><title>within noise</title></circle>')
                continue
            parts.append(f'<circle class="kept" cx="{px(n):.1f}" cy="{py(v):.1f}" r="4.5" '
                         f'fill="{GREEN}" stroke="#000" stroke-width="0.6"/>')
    parts.append("</g>")

    # kept labels, rotated 30 degrees upwards like the notebook's annotations; where they
    # would overlap, the baseline and the largest gains win and the rest are left out
    cos30, sin30 = math.cos(math.radians(30)), math.sin(math.radians(30))
    candidates = []
    previous = None
    for n, v, description in kept:
        gain = math.inf if previous is None else previous - v
        previous = v
        if y_lo <= v <= y_hi:
            text = label_text(description)
            candidates.append((-gain, n, px(n) + 6, py(v) - 6, text))
    placed: list[tuple[float, float, float]] = []  # (along, across, width) in label space
    shown = []
    for _, n, x, y, text in sorted(candidates):
        w = text_width(text, LABEL_SIZE)
        along, across = x * cos30 - y * sin30, x * sin30 + y * cos30
        if any(abs(across - c) < LABEL_SIZE * 1.15 and along < a + wa and a < along + w
               for a, c, wa in placed):
            continue
        placed.append((along, across, w))
        shown.append((n, x, y, text, w))
    for n, x, y, text, w in sorted(shown):
        bbox[0] = min(bbox[0], x - 4)
        bbox[1] = min(bbox[1], y - w * sin30 - LABEL_SIZE)
        bbox[2] = max(bbox[2], x + w * cos30 + LABEL_SIZE)
        parts.append(f'<text class="label" x="{x:.1f}" y="{y:.1f}" '
                     f'transform="rotate(-30 {x:.1f} {y:.1f})" font-size="{LABEL_SIZE}" '
                     f'fill="{LABEL}" fill-opacity="0.9">{esc(text)}</text>')
    if len(shown) < len(candidates):
        parts.append(f'<text class="note" x="{LEFT + PLOT_W}" y="{TOP + PLOT_H + 44}" '
                     f'text-anchor="end" font-size="11" fill="#666">{len(shown)} of '
                     f"{len(candidates)} kept runs labelled (overlaps left out, largest gains "
                     "first)</text>")

    if stride > 1:
        parts.append(f'<text class="note" x="{LEFT}" y="{TOP + PLOT_H + 44}" font-size="11" '
                     f'fill="#666">{len(sample)} of {len(others_n)} other runs drawn '
                     "(an even sample)</text>")

    # frame, axis titles, legend
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" '
                 'stroke="#333"/>')
    parts.append(f'<text x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H + 44}" text-anchor="middle" '
                 'font-size="14">Experiment #</text>')
    mid = TOP + PLOT_H / 2
    parts.append(f'<text x="22" y="{mid}" transform="rotate(-90 22 {mid})" '
                 'text-anchor="middle" font-size="14">Validation BPB (lower is better)</text>')
    lx, ly = LEFT + PLOT_W - 150, TOP + 10
    parts.append(f'<rect x="{lx}" y="{ly}" width="140" height="{84 if within else 66}" '
                 'fill="#fff" fill-opacity="0.85" stroke="#ccc" rx="3"/>')
    if within:
        parts.append(f'<circle cx="{lx + 16}" cy="{ly + 69}" r="4.5" fill="#fff" '
                     f'stroke="{GREEN}" stroke-width="1.6"/>')
        parts.append(f'<text x="{lx + 30}" y="{ly + 73}" font-size="12">Kept, within noise'
                     '</text>')
    parts.append(f'<circle cx="{lx + 16}" cy="{ly + 15}" r="2.5" fill="{GREY}"/>')
    parts.append(f'<text x="{lx + 30}" y="{ly + 19}" font-size="12">Discarded</text>')
    parts.append(f'<circle cx="{lx + 16}" cy="{ly + 33}" r="4.5" fill="{GREEN}" stroke="#000" '
                 'stroke-width="0.6"/>')
    parts.append(f'<text x="{lx + 30}" y="{ly + 37}" font-size="12">Kept</text>')
    parts.append(f'<line x1="{lx + 6}" y1="{ly + 51}" x2="{lx + 26}" y2="{ly + 51}" '
                 f'stroke="{STEP}" stroke-width="2" stroke-opacity="0.7"/>')
    parts.append(f'<text x="{lx + 30}" y="{ly + 55}" font-size="12">Running best</text>')

    # the title sits above everything, labels included
    title_y = bbox[1] + 4
    bbox[1] -= 30
    parts.append(f'<text x="{LEFT + PLOT_W / 2}" y="{title_y:.1f}" text-anchor="middle" '
                 f'font-size="16">{esc(title)}</text>')
    return _document(bbox, parts, title)


def _document(bbox: list[float], parts: list[str], title: str) -> str:
    x0, y0 = math.floor(bbox[0]) - 4, math.floor(bbox[1]) - 4
    w, h = math.ceil(bbox[2] - x0) + 4, math.ceil(bbox[3] - y0) + 4
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="{x0} {y0} {w} {h}" font-family="{FONT}">\n'
            f"<title>{esc(title)}</title>\n"
            f'<defs><clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" '
            f'height="{PLOT_H}"/></clipPath></defs>\n'
            f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fff"/>\n')
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n".join(parts) + "\n</svg>\n"


def _empty_svg(title: str) -> str:
    parts = [
        f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" '
        'stroke="#333"/>',
        f'<text x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" text-anchor="middle" '
        'font-size="16" fill="#666">no measured runs to plot yet</text>',
        f'<text x="{LEFT + PLOT_W / 2}" y="{TOP - 20}" text-anchor="middle" '
        f'font-size="16">{esc(title)}</text>',
    ]
    return _document([0.0, 0.0, LEFT + PLOT_W + 20.0, TOP + PLOT_H + 62.0], parts, title)


def write(path: str, svg: str) -> None:
    """Write the file whole (a temporary file renamed into place)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".plot-", suffix=".svg", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(svg)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
