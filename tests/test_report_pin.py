"""Pins show-results.sh's output, byte for byte, in every mode (text, --json, --tried, --plot)
on varied ledgers: the real corpus, generated ledgers with every odd row the report meets
(repeats, seed-only changes, other statuses, junk values, control characters, Unicode, extra
columns, CRLF, a BOM, sidecars with crash classes, noise samples and agent cost), and one of
25k rows (past THEME_WINDOW, MAX_VARIANTS, the timeline's and the chart's sampling).

The expected outputs are in tests/fixtures/report-pin/: whole files for the small cases, one
sha256 per output for the large one (``large.sha256``). A change to the report's output that is
meant is pinned again with ``AR_PIN_WRITE=1 pytest tests/test_report_pin.py`` (then review the
diff of tests/fixtures/report-pin/).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from arcore import report

ROOT = Path(__file__).resolve().parents[1]
PIN = ROOT / "tests" / "fixtures" / "report-pin"
CORPUS = ROOT / "tests" / "fixtures" / "corpus" / "results"
WRITE = os.environ.get("AR_PIN_WRITE") == "1"
UPSTREAM = "commit\tval_bpb\tmemory_gb\tstatus\tdescription"

MODES = {  # name: extra arguments (every mode also draws the chart, to pin it as well)
    "text": [],
    "json": ["--json"],
    "tried": ["--tried"],
    "all": ["--all", "--top", "12"],
}

# ---------------------------------------------------------------------------
# Generated ledgers
# ---------------------------------------------------------------------------

KNOBS = ["matrix LR", "weight decay", "warmdown ratio", "depth", "batch size", "head dim",
         "window pattern", "rope base", "embedding LR", "softcap", "Muon momentum", "MLP ratio",
         "FINAL_LR_FRAC", "x0_lambda", "beta1", "bf16 autocast", "学习率", "café warmup"]
ODD = [  # descriptions the report must survive: classes, seeds, repeats, junk, markup
    "double width (oom)", "double depth (OOM)", "fused adam ( timeout )", "flash attn v3 crash",
    "flash attn v2 crashed (tried)", "random seed 42 to 137", "seed 1 -> 2",
    "seed-only change (noise sample)", "baseline repeat 2/3 (a noise measurement, not an idea)",
    "rerun of a1b2c3d", "noise run", "SEED 42 -> 43 and depth 10", "FINAL_LR_FRAC=0.05",
    "embedding LR (tied) 0.6 to 0.8", "[exp] depth 12", "  leading and trailing spaces  ",
    "two  spaces  inside", "control\x01char and\x7fdel", "line\u2028separator", "“quoted” ü é",
    "<b>markup</b> & \"quotes\" 'single'", "emoji 🚀 rocket LR 0.1", "", "x" * 300,
    "MLP ratio 4 -> 6 (baseline)", "depth 8 to 10 (error) !!", "warmdown ratio 0.5: worse",
    "repeat", "noise run of the best (hung)", "batch size 2**15 to 2**16", "window SSSL to LLLL",
    "revert f989ea1 and retry", "tab\\tescaped", "trailing backslash \\",
]


def _value(rng: random.Random, i: int, status: str) -> str:
    if status == "crash":
        return rng.choice(["0.000000", "0.000000", "0.000000", "", "nan"])
    r = rng.random()
    if r < 0.01:
        return rng.choice(["inf", "-1.0", "abc", "", "0.000000", "1e-3", "nan", "12345.0"])
    return f"{0.95 + 0.05 * 0.5 ** (i / 300) + rng.gauss(0.0, 0.004):.6f}"


def _rows(n: int, seed: int) -> list[tuple[str, str, str, str, str]]:
    """(commit, val_bpb, memory_gb, status, description) rows: mostly an improving search, with
    the odd rows above mixed in."""
    rng = random.Random(seed)
    rows = []
    best = 1.0
    commits: list[str] = []
    for i in range(n):
        r = rng.random()
        if r < 0.08:
            desc = rng.choice(ODD)
        else:
            knob = rng.choice(KNOBS)
            desc = f"{knob} {rng.choice(['up', 'down', 'to', '->', '='])} {rng.random():.3f}"
            if rng.random() < 0.2:
                desc += f" <try #{i % 97}> & “ü”"
            if rng.random() < 0.05:
                desc = f"{knob} {i % 13}"  # identical descriptions tried again
        commit = f"{rng.getrandbits(28):07x}"
        if commits and rng.random() < 0.04:
            commit = rng.choice(commits[-20:])  # a rerun of a recent commit
        elif rng.random() < 0.005:
            commit = rng.choice(["", "baseline", f"{rng.getrandbits(160):040x}", "  abc1234 "])
        commits.append(commit)
        s = rng.random()
        if i and s < 0.07:
            status = "crash"
            if rng.random() < 0.5:
                desc += rng.choice([" (oom)", " (timeout)", " (nan)", " (segfault)", ""])
        elif i and s < 0.085:
            status = rng.choice(["skip", "", "KEEP ", "running", "Discard"])
        else:
            status = "discard"
        value = _value(rng, i, status)
        if status == "discard" and value[:1].isdigit() and float(value) > 0:
            if i == 0 or float(value) < best or rng.random() < 0.03:  # some keeps are worse
                status = "keep"
                best = min(best, float(value))
        if i == 0:
            status = "keep"
        memory = "0.0" if status == "crash" else rng.choice(["44.0"] * 20 + ["", "x", "60.2"])
        rows.append((commit, value, memory, status, desc))
    return rows


def _runs_jsonl(rows, seed: int) -> str:
    """runs.jsonl beside the ledger: crash classes and hints, seed-only noise samples, workers,
    run seconds, the proposer's usage (some with dollars), a junk line."""
    rng = random.Random(seed)
    lines = []
    for i, (commit, value, _, status, desc) in enumerate(rows):
        if rng.random() < 0.15:
            continue
        record = {"status": status, "commit": commit + "0" * 33, "short": commit[:7],
                  "description": desc, "seconds": round(rng.uniform(60, 400), 1),
                  "worker": f"gpu{i % 5}", "time": f"2025-01-01T{i % 24:02d}:00:00"}
        if status == "crash" and rng.random() < 0.7:
            record["crash_class"] = rng.choice(["oom", "timeout", "nan_loss", " "])
            record["hint"] = rng.choice(["halve the batch", "", None])
        if rng.random() < 0.05:
            record["seed_only"] = True
            record["noise_sample"] = round(rng.gauss(0, 0.002), 6)
        if rng.random() < 0.3:
            usage = {"input_tokens": rng.randint(1000, 90000), "output_tokens": rng.randint(10, 900),
                     "cached_input_tokens": rng.randint(0, 500), "source": rng.choice(["claude",
                                                                                      "codex"])}
            if usage["source"] == "claude":
                usage["cost_usd"] = round(rng.uniform(0.01, 2.5), 4)
            record["proposer_usage"] = usage
            record["rejected"] = rng.random() < 0.1
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        if i == 5:
            lines.append("{not json")
    return "\n".join(lines) + "\n"


def _write(path: Path, header: str, rows, newline: str = "\n", bom: bool = False) -> None:
    text = header + newline + "".join("\t".join(r) + newline for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass"))


def make_case(name: str, where: Path) -> str:
    """Writes case ``name``'s ledger (and sidecars) under ``where``; returns the ledger's name."""
    if name.startswith("corpus-"):
        ledger = name[len("corpus-"):] + ".tsv"
        (where / ledger).write_bytes((CORPUS / ledger).read_bytes())
        return ledger
    side = where / ".autoresearch"
    if name == "varied":  # upstream columns, a track after row 3, every sidecar
        rows = _rows(400, seed=11)
        _write(where / "results.tsv", UPSTREAM, rows)
        side.mkdir()
        (side / "session.json").write_text(json.dumps(
            {"ledger_start": 3, "created": "2025-01-01T04:00:00", "metric_source": "printed"}))
        (side / "runs.jsonl").write_text(_runs_jsonl(rows, seed=12), encoding="utf-8")
        return "results.tsv"
    if name == "columns":  # extra columns, status in column 6, a BOM, CRLF, blank lines
        rows = _rows(300, seed=21)
        header = "commit\tkind\tval_bpb\tartifact_mb\tmemory_gb\tstatus\tdescription"
        wide = [(c, rng_kind, v, "11.9", m, s, d) for (c, v, m, s, d), rng_kind in
                zip(rows, ["lr", "arch", "", "opt"] * 100)]
        wide.insert(40, ("deadbee", "lr", "0.990000", "1", "44.0", "keep", "surplus\tfields\there"))
        wide.insert(50, ("feedbee", "lr", "0.991000"))
        _write(where / "results.tsv", header, wide, newline="\r\n", bom=True)
        text = (where / "results.tsv").read_bytes().replace(b"\r\nfeedbee", b"\r\n\r\n\nfeedbee")
        (where / "results.tsv").write_bytes(text)
        side.mkdir()
        (side / "session.json").write_text(json.dumps({"noise_floor": 0.0025}))
        return "results.tsv"
    if name == "seeds":  # no session floor: seed-only rows and reruns estimate it; no sidecars
        rng = random.Random(31)
        rows = [("b000001", "1.000000", "44.0", "keep", "baseline")]
        for i in range(2, 120):
            kind = rng.random()
            if kind < 0.15:
                rows.append((f"b{i:06d}", f"{0.99 + rng.gauss(0, 0.002):.6f}", "44.0", "discard",
                             rng.choice(["random seed 1 to 2", "seed 3 -> 4", "numpy seed 7"])))
            elif kind < 0.25:
                rows.append(("b000001", f"{1.0 + rng.gauss(0, 0.002):.6f}", "44.0", "discard",
                             "baseline repeat 2/3 (a noise measurement, not an idea)"))
            else:
                value = 1.0 - i * 0.0004 + rng.gauss(0, 0.001)
                rows.append((f"b{i:06d}", f"{value:.6f}", "44.0",
                             "keep" if rng.random() < 0.3 else "discard",
                             f"{rng.choice(KNOBS)} step {i}"))
        _write(where / "results.tsv", UPSTREAM, rows)
        return "results.tsv"
    if name == "crashes":  # nothing measured: only failures and a row of another status
        rows = [("c000001", "0.000000", "0.0", "crash", "baseline (oom)"),
                ("c000002", "0.000000", "0.0", "crash", "double width (oom)"),
                ("c000003", "0.000000", "0.0", "crash", "fused adam (timeout)"),
                ("c000004", "0.000000", "0.0", "crash", "flash attention kernel"),
                ("c000005", "0.000000", "0.0", "discard", "flash attention again"),
                ("c000006", "0.000000", "0.0", "skip", "flash attention skipped")]
        _write(where / "results.tsv", UPSTREAM, rows)
        return "results.tsv"
    if name == "empty":
        (where / "results.tsv").write_text(UPSTREAM + "\n\n", encoding="utf-8")
        return "results.tsv"
    if name == "large":  # past THEME_WINDOW, MAX_VARIANTS, TRIED_JSON_MAX, the chart's sample
        rows = _rows(25_000, seed=41)
        _write(where / "results.tsv", UPSTREAM, rows)
        side.mkdir()
        (side / "session.json").write_text(json.dumps({"ledger_start": 1000}))
        (side / "runs.jsonl").write_text(_runs_jsonl(rows, seed=42), encoding="utf-8")
        return "results.tsv"
    raise KeyError(name)


SMALL = ["varied", "columns", "seeds", "crashes", "empty"] + sorted(
    "corpus-" + p.stem for p in CORPUS.glob("*.tsv"))


# ---------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------


def outputs(case: str, where: Path, monkeypatch, capsys) -> dict[str, bytes]:
    """{"<mode>.out": stdout, "<mode>.svg": the chart} for every mode, run in ``where`` with
    relative paths (the report prints them)."""
    ledger = make_case(case, where)
    monkeypatch.chdir(where)
    out: dict[str, bytes] = {}
    for mode, extra in MODES.items():
        code = report.main(["--ledger", ledger, "--plot", f"{mode}.svg", *extra])
        printed, err = capsys.readouterr()
        assert code == 0, err
        out[f"{mode}.out"] = printed.encode("utf-8", "surrogateescape")
        out[f"{mode}.svg"] = (where / f"{mode}.svg").read_bytes()
    for mode in ("json", "tried"):  # the same track draws the same chart: pinned once
        assert out.pop(f"{mode}.svg") == out["text.svg"], mode
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("case", SMALL)
def test_every_mode_prints_what_it_printed_when_pinned(case, tmp_path, monkeypatch, capsys):
    got = outputs(case, tmp_path, monkeypatch, capsys)
    folder = PIN / case
    if WRITE:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in got.items():
            (folder / name).write_bytes(data)
    for name, data in got.items():
        expected = (folder / name).read_bytes()
        if data != expected:  # a readable first difference, not two megabytes of bytes
            a, b = expected.decode("utf-8", "replace"), data.decode("utf-8", "replace")
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            pytest.fail(f"{case}/{name} differs at character {at}:\n"
                        f"pinned: {a[max(0, at - 200):at + 200]!r}\n"
                        f"now:    {b[max(0, at - 200):at + 200]!r}")


def test_a_large_ledger_prints_what_it_printed_when_pinned(tmp_path, monkeypatch, capsys):
    got = outputs("large", tmp_path, monkeypatch, capsys)
    digests = {name: _digest(data) for name, data in got.items()}
    manifest = PIN / "large.sha256"
    if WRITE:
        manifest.write_text("".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    pinned = dict(line.split("  ")[::-1] for line in manifest.read_text().splitlines())
    assert digests == pinned, [n for n in digests if digests[n] != pinned.get(n)]


def test_the_generated_cases_hold_what_they_are_for(tmp_path, monkeypatch, capsys):
    """The fixtures exercise the paths they claim to (so a pin over them means something)."""
    got = outputs("varied", tmp_path, monkeypatch, capsys)
    rep = json.loads(got["json.out"])
    roles = rep["ideas"]["roles"]
    assert roles["baseline"] == 1 and roles["repeat"] > 5 and roles["seed"] > 3
    assert rep["counts"]["other"] > 0 and rep["counts"]["crash"] > 10
    assert {p["source"] for p in rep["crash_patterns"]} >= {"session", "description"}
    assert rep["agent_cost"] and rep["agent_cost"]["session"]["priced"] > 0
    assert rep["noise"]["source"] in ("repeats", "seed-only changes")
    assert rep["track_start"] == 3
    assert any(k["verdict"] == "within noise" for k in rep["timeline"])
    assert any(k["verdict"] == "worse than previous kept" for k in rep["timeline"])
