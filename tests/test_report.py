"""arcore.report and arcore.svgplot: what show-results.sh tells a human and an agent."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from arcore import report, svgplot
from arcore.ledger import read_ledger

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "corpus" / "results"
CORPUS_FILES = sorted(CORPUS.glob("*.tsv"))
HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
SVG = "{http://www.w3.org/2000/svg}"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def write_ledger(path: Path, rows: list[tuple]) -> Path:
    """rows: (commit, val_bpb, status, description); memory is 44.0 or 0.0 for crashes."""
    lines = [HEADER]
    for commit, value, status, desc in rows:
        mem = "0.0" if status == "crash" else "44.0"
        lines.append(f"{commit}\t{value:.6f}\t{mem}\t{status}\t{desc}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = report.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


SESSION = [
    ("a000001", 1.000, "keep", "baseline"),
    ("a000002", 0.990, "keep", "raise matrix LR to 0.05"),
    ("a000003", 0.995, "discard", "lower weight decay to 0.1"),
    ("a000004", 0.0, "crash", "double width (oom)"),
    ("a000005", 0.9895, "keep", "matrix LR 0.05 -> 0.06"),
    ("a000006", 0.0, "crash", "double depth (oom)"),
    ("a000007", 0.999, "discard", "weight decay 0.2"),
    ("a000008", 0.970, "keep", "warmdown ratio 0.5"),
]


@pytest.fixture
def session_ledger(tmp_path: Path) -> Path:
    return write_ledger(tmp_path / "results.tsv", SESSION)


# ---------------------------------------------------------------------------
# Every real ledger in the corpus
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_every_corpus_ledger_gives_a_short_text_report_and_a_valid_chart(path, tmp_path, capsys):
    plot = tmp_path / "progress.svg"
    code, out, err = run(["--ledger", str(path), "--plot", str(plot)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert 10 <= len(lines) <= 40
    assert lines[1].startswith("experiments: ")
    assert any(line.startswith("best experiment: #") for line in lines)
    root = ET.parse(plot).getroot()
    assert root.tag == f"{SVG}svg"


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_every_corpus_ledger_counts_statuses_by_header_name(path, capsys):
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    column = header.split("\t").index("status")
    statuses = [r.split("\t")[column] for r in rows if r.strip()]
    code, out, _ = run(["--ledger", str(path), "--json"], capsys)
    assert code == 0
    rep = json.loads(out)
    assert rep["experiments"] == len(statuses)
    assert rep["counts"]["keep"] == statuses.count("keep")
    assert rep["counts"]["discard"] == statuses.count("discard")
    assert rep["counts"]["crash"] == statuses.count("crash")
    assert sum(rep["counts"].values()) == len(statuses)


def test_the_upstream_ledger_matches_the_notebooks_numbers(capsys):
    code, out, _ = run(["--ledger", str(CORPUS / "mlx-upstream-5col.tsv"), "--json"], capsys)
    rep = json.loads(out)
    assert code == 0
    assert rep["keep_rate"] == pytest.approx(8 / 10)  # ideas: the baseline is not one
    assert rep["baseline"]["val_bpb"] == pytest.approx(2.667)
    assert rep["best"]["val_bpb"] == pytest.approx(1.416715)
    assert rep["best"]["description"] == "SiLU activation (batch 2^13)"
    assert rep["improvement"]["absolute"] == pytest.approx(1.250285)
    assert rep["improvement"]["percent"] == pytest.approx(46.88, abs=0.005)
    deltas = {k["n"]: k["delta"] for k in rep["timeline"]}
    assert deltas[1] is None
    assert deltas[5] == pytest.approx(1.807902 - 2.533728)  # value - previous: negative = better
    assert rep["best_gains"][0]["description"] == "reduce depth from 8 to 4"
    assert rep["gains_total"] == pytest.approx(2.667 - 1.416715)


def test_the_text_report_shows_baseline_best_and_improvement(capsys):
    code, out, _ = run(["--ledger", str(CORPUS / "mlx-upstream-5col.tsv")], capsys)
    assert code == 0
    assert "keep rate: 8/10 ideas = 80.0%; 8 kept improvements (not counted: 1 baseline)" in out
    assert "2.667000 (baseline) -> 1.416715 (best)  improvement: 1.250285 (46.88%)" in out
    assert "best experiment: #11 38acd33 SiLU activation (batch 2^13)" in out


# ---------------------------------------------------------------------------
# Edge ledgers: missing, empty, only crashes, huge
# ---------------------------------------------------------------------------


def test_a_missing_ledger_is_one_clear_line_and_exit_1(tmp_path, capsys):
    code, out, err = run(["--ledger", str(tmp_path / "nope.tsv")], capsys)
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "no ledger at" in err and "nope.tsv" in err


def test_a_directory_given_as_ledger_is_refused_with_exit_1(tmp_path, capsys):
    code, out, err = run(["--ledger", str(tmp_path)], capsys)
    assert code == 1
    assert out == "" and "cannot read" in err


@pytest.mark.parametrize("content", ["", HEADER, HEADER + "\n\n"], ids=["zero bytes", "header",
                                                                        "blank lines"])
def test_an_empty_ledger_reports_zero_experiments(tmp_path, capsys, content):
    ledger = tmp_path / "results.tsv"
    ledger.write_text(content, encoding="utf-8")
    plot = tmp_path / "p.svg"
    code, out, _ = run(["--ledger", str(ledger), "--plot", str(plot)], capsys)
    assert code == 0
    assert "experiments: 0" in out and "no experiments yet" in out
    assert "no measured runs" in plot.read_text(encoding="utf-8")
    code, out, _ = run(["--ledger", str(ledger), "--json"], capsys)
    rep = json.loads(out)
    assert rep["experiments"] == 0 and rep["best"] is None and rep["keep_rate"] is None
    code, out, _ = run(["--ledger", str(ledger), "--tried"], capsys)
    assert out.startswith("0 experiments (0 ideas)") and "Kept:\n- none" in out


def test_a_ledger_of_only_crashes_groups_them_by_the_class_in_parentheses(tmp_path, capsys):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("c000001", 0.0, "crash", "baseline (oom)"),
        ("c000002", 0.0, "crash", "double width (oom)"),
        ("c000003", 0.0, "crash", "fused adam (timeout)"),
    ])
    plot = tmp_path / "p.svg"
    code, out, _ = run(["--ledger", str(ledger), "--plot", str(plot)], capsys)
    assert code == 0
    assert "no kept run with a measurement yet" in out
    assert "oom x2" in out and "timeout x1" in out
    assert "repeated failures: oom (crash x2)" in out
    ET.parse(plot)
    rep = report.analyse(read_ledger(str(ledger)))
    assert rep["baseline"] is None and rep["improvement"] is None
    assert [p["pattern"] for p in rep["crash_patterns"]] == ["oom", "timeout"]


def test_a_100k_row_ledger_still_fits_in_40_lines(tmp_path, capsys):
    rng = random.Random(3)
    lines = [HEADER]
    best = 1.0
    for i in range(100_000):
        if i and rng.random() < 0.05:
            lines.append(f"{i:07x}\t0.000000\t0.0\tcrash\tknob {i % 7} (oom)\n")
            continue
        value = 0.95 + 0.05 * 0.5 ** (i / 5000) + rng.gauss(0, 0.003)
        status = "keep" if i == 0 or value < best else "discard"
        best = min(best, value) if status == "keep" else best
        lines.append(f"{i:07x}\t{value:.6f}\t44.0\t{status}\tknob {i % 7} to {value:.3f}\n")
    ledger = tmp_path / "results.tsv"
    ledger.write_text("".join(lines), encoding="utf-8")
    code, out, _ = run(["--ledger", str(ledger)], capsys)
    assert code == 0
    assert len(out.splitlines()) <= 40
    assert "experiments: 100000" in out
    assert "(themes from the last 20000 runs)" in out


# ---------------------------------------------------------------------------
# Noise floor, session files, the comparison track
# ---------------------------------------------------------------------------


def test_without_a_noise_floor_the_report_says_single_runs_cannot_separate_small_gains(
        session_ledger, capsys):
    code, out, _ = run(["--ledger", str(session_ledger)], capsys)
    assert code == 0
    assert "single runs cannot separate gains below the typical run-to-run spread" in out
    assert "within noise" not in out


def test_kept_gains_below_the_noise_floor_are_marked_within_noise(session_ledger, capsys):
    (session_ledger.parent / ".autoresearch").mkdir()
    (session_ledger.parent / ".autoresearch" / "session.json").write_text(
        json.dumps({"noise_floor": 0.002}), encoding="utf-8")
    code, out, _ = run(["--ledger", str(session_ledger), "--json"], capsys)
    rep = json.loads(out)
    verdicts = {k["description"]: k["verdict"] for k in rep["timeline"]}
    assert verdicts["matrix LR 0.05 -> 0.06"] == "within noise"  # 0.0005 < 0.002
    assert verdicts["raise matrix LR to 0.05"] == "gain"  # 0.01 > 0.002
    assert rep["noise"]["floor"] == 0.002
    code, out, _ = run(["--ledger", str(session_ledger)], capsys)
    assert "[within noise]" in out and "noise floor 0.002000" in out


@pytest.mark.parametrize("junk", ["{not json", "[1, 2]", '{"noise_floor": "big"}',
                                  '{"noise_floor": -1, "ledger_start": -4}',
                                  '{"noise_floor": true, "ledger_start": 1.5}'])
def test_a_junk_session_file_is_ignored(session_ledger, capsys, junk):
    (session_ledger.parent / ".autoresearch").mkdir()
    (session_ledger.parent / ".autoresearch" / "session.json").write_text(junk, encoding="utf-8")
    code, out, _ = run(["--ledger", str(session_ledger), "--json"], capsys)
    assert code == 0
    rep = json.loads(out)
    assert rep["noise"]["floor"] is None and rep["experiments"] == len(SESSION)


def test_crash_classes_and_hints_come_from_runs_jsonl_when_recorded(session_ledger, capsys):
    session_dir = session_ledger.parent / "elsewhere"
    session_dir.mkdir()
    (session_dir / "runs.jsonl").write_text(
        "garbage\n"
        + json.dumps({"commit": "a000004deadbeef", "crash_class": "cuda_oom",
                      "hint": "halve the device batch size"}) + "\n"
        + "[]\n", encoding="utf-8")
    code, out, _ = run(["--ledger", str(session_ledger), "--session-dir", str(session_dir),
                        "--json"], capsys)
    assert code == 0
    patterns = {p["pattern"]: p for p in json.loads(out)["crash_patterns"]}
    assert patterns["cuda_oom"]["source"] == "session"
    assert patterns["cuda_oom"]["hint"] == "halve the device batch size"
    assert patterns["oom"]["count"] == 1  # the other crash falls back to its description


def test_ledger_start_limits_the_report_to_the_current_track_and_all_lifts_it(
        session_ledger, capsys):
    (session_ledger.parent / ".autoresearch").mkdir()
    (session_ledger.parent / ".autoresearch" / "session.json").write_text(
        json.dumps({"ledger_start": 4}), encoding="utf-8")
    code, out, _ = run(["--ledger", str(session_ledger), "--json"], capsys)
    rep = json.loads(out)
    assert rep["experiments"] == 4 and rep["rows"] == 8
    assert rep["baseline"]["n"] == 5 and rep["baseline"]["val_bpb"] == pytest.approx(0.9895)
    code, out, _ = run(["--ledger", str(session_ledger)], capsys)
    assert "track from row 5" in out
    code, out, _ = run(["--ledger", str(session_ledger), "--all", "--json"], capsys)
    assert json.loads(out)["experiments"] == 8


# ---------------------------------------------------------------------------
# The four things: best gains, repeated failures, what was tried, what next
# ---------------------------------------------------------------------------


def test_best_gains_are_ordered_by_delta_vs_the_previous_kept_run(session_ledger):
    rep = report.analyse(read_ledger(str(session_ledger)))
    gains = [(k["description"], round(k["delta"], 6)) for k in rep["best_gains"]]
    assert gains == [("warmdown ratio 0.5", -0.0195), ("raise matrix LR to 0.05", -0.01),
                     ("matrix LR 0.05 -> 0.06", -0.0005)]
    assert [round(k["gain"], 6) for k in rep["best_gains"]] == [0.0195, 0.01, 0.0005]


def test_a_theme_that_never_kept_is_a_repeated_failure(session_ledger):
    rep = report.analyse(read_ledger(str(session_ledger)))
    themes = {f["what"]: f for f in rep["repeated_failures"]}
    assert themes["weight decay"]["count"] == 2 and themes["weight decay"]["kept"] == 0
    assert "matrix lr" not in themes


def test_the_next_family_is_the_theme_whose_kept_runs_gained_most(tmp_path):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("b000001", 1.00, "keep", "baseline"),
        ("b000002", 0.98, "keep", "batch size 2^15"),
        ("b000003", 0.97, "keep", "batch size 2^14"),
        ("b000004", 0.975, "discard", "softcap 20"),
        ("b000005", 0.969, "keep", "softcap 30"),
        ("b000006", 0.99, "discard", "batch size 2^13"),
    ])
    rep = report.analyse(read_ledger(str(ledger)))
    family = rep["next_family"]
    assert family["theme"] == "batch size"
    assert family["kept"] == 2 and family["tried"] == 3
    assert family["anchor"] == "batch size 2^14"


def test_without_any_gain_there_is_no_next_family(tmp_path):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("b000001", 1.00, "keep", "baseline"), ("b000002", 1.01, "discard", "softcap 20")])
    assert report.analyse(read_ledger(str(ledger)))["next_family"] is None


def test_the_tried_block_fits_the_program_md_template_one_line_per_idea(tmp_path, capsys):
    rows = SESSION + [("a000009", 0.999, "discard", "weight decay 0.2")]
    ledger = write_ledger(tmp_path / "results.tsv", rows)
    code, out, _ = run(["--ledger", str(ledger), "--tried"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("9 experiments (8 ideas); val_bpb 1.000000 (baseline) -> 0.970000 (best)"
                        "; 3 kept, 3 discarded, 2 crashed.")
    kept, discarded, crashed = (lines.index(f"{s}:") for s in ("Kept", "Discarded", "Crashed"))
    assert kept < discarded < crashed
    assert "- warmdown ratio: 0.5 (-0.019500)" in lines[kept:discarded]
    assert "- matrix lr x2: 0.05 -> 0.06 (-0.000500); raise matrix LR to 0.05 (-0.010000)" \
        in lines[kept:discarded] or any("matrix lr x2" in line for line in lines[kept:discarded])
    assert "- weight decay x3: lower weight decay to 0.1 (0.995000); 0.2 (0.999000, same " \
        "description x2)" in lines[discarded:crashed]
    assert not any(line.startswith("- baseline") for line in lines)  # not a kept idea
    assert "- width: double width (oom)" in lines[crashed:]
    assert sum(1 for line in lines if "weight decay" in line) == 1


def test_other_statuses_are_counted_and_listed_apart(capsys):
    code, out, _ = run(["--ledger", str(CORPUS / "moe-13col-hypotheses.tsv"), "--tried"], capsys)
    assert code == 0
    assert "\nOther:\n" in out
    assert "(tentative, 0.954935)" in out


def test_discards_without_a_measurement_count_as_failures(capsys):
    code, out, _ = run(["--ledger", str(CORPUS / "moe-13col-hypotheses.tsv"), "--json"], capsys)
    rep = json.loads(out)
    assert rep["counts"]["crash"] == 0  # the ledger says discard ...
    assert len(rep["tried"]["crashed"]) == 11  # ... but 11 of them have val_bpb 0.000000
    assert rep["crash_patterns"]


@pytest.mark.parametrize("desc,expected", [
    ("double width (oom)", "oom"),
    ("fused kernels (timeout).", "timeout"),
    ("scale by 1/sqrt(layer)", None),
    ("weight tying (lm_head.weight=wte.weight): loss stuck", None),
    ("(hypothesis: faster) tried it", None),
    ("no class here", None),
])
def test_a_crash_class_is_read_only_from_a_trailing_parenthesised_word(desc, expected):
    assert report.crash_class_in(desc) == expected


def test_unclassed_crashes_are_grouped_by_words_they_share(tmp_path):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("d000001", 1.0, "keep", "baseline"),
        ("d000002", 0.0, "crash", "flash attention kernel v3"),
        ("d000003", 0.0, "crash", "flash attention with alibi"),
        ("d000004", 0.99, "keep", "attention dropout off"),
    ])
    patterns = report.analyse(read_ledger(str(ledger)))["crash_patterns"]
    assert patterns[0] == {"pattern": "flash", "source": "words", "count": 2,
                           "examples": ["flash attention kernel v3", "flash attention with alibi"],
                           "hint": None}
    # 'attention' is shared too, but it also appears in a kept run: it ranks after 'flash'
    assert [p["pattern"] for p in patterns] == ["flash", "attention"]


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--top", "x"], ["--top"], ["--bogus"], ["--tried", "--json"],
                                  ["--ledger="]])
def test_bad_usage_is_one_line_and_exit_2(argv, session_ledger, capsys):
    code, out, err = run(argv + ["--ledger", str(session_ledger)] if argv[-1] != "--top"
                         else ["--ledger", str(session_ledger)] + argv, capsys)
    assert code == 2
    assert out == "" and len(err.splitlines()) == 1


def test_top_n_lists_that_many_runs_by_val_bpb(session_ledger, capsys):
    code, out, _ = run(["--ledger", str(session_ledger), "--top", "3", "--json"], capsys)
    top = json.loads(out)["top"]
    assert [t["val_bpb"] for t in top] == [0.97, 0.9895, 0.99]


def test_descriptions_with_control_characters_print_on_one_line(tmp_path, capsys):
    ledger = tmp_path / "results.tsv"
    ledger.write_text(HEADER + "e000001\t1.000000\t1.0\tkeep\tbase\x1b[31m red\r\n",
                      encoding="utf-8")
    code, out, _ = run(["--ledger", str(ledger)], capsys)
    assert code == 0 and "\x1b" not in out and "\r" not in out


# ---------------------------------------------------------------------------
# The chart
# ---------------------------------------------------------------------------


def test_the_chart_escapes_descriptions_and_keeps_them_readable(tmp_path, capsys):
    nasty = 'a<b & "c" \x07 ünï <script>'
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("f000001", 1.0, "keep", "baseline"), ("f000002", 0.9, "keep", nasty)])
    plot = tmp_path / "p.svg"
    code, _, _ = run(["--ledger", str(ledger), "--plot", str(plot)], capsys)
    assert code == 0
    texts = [t.text for t in ET.parse(plot).getroot().iter(f"{SVG}text")]
    assert 'a<b & "c" ünï <script>' in texts
    assert "<script>" not in plot.read_text(encoding="utf-8")


def test_the_chart_draws_kept_green_discarded_grey_and_the_running_best(tmp_path):
    ledger = write_ledger(tmp_path / "results.tsv",
                          SESSION + [("a000009", 1.02, "discard", "far worse")])
    track = report.number_rows(read_ledger(str(ledger)))
    root = ET.fromstring(svgplot.progress_svg(track))
    circles = list(root.iter(f"{SVG}circle"))
    green = [c for c in circles if c.get("class") == "kept"]
    grey = [c for c in circles if c.get("class") == "discarded"]
    assert len(green) == 4 and all(c.get("fill") == svgplot.GREEN for c in green)
    assert len(grey) == 2  # 0.995 and 0.999; 1.02 is above baseline + 15 % of the gain
    assert grey[0].get("fill") == svgplot.GREY
    paths = [p.get("d") for p in root.iter(f"{SVG}path") if p.get("class") == "running-best"]
    assert len(paths) == 1 and paths[0].startswith("M") and paths[0].count("V") == 3
    title = root.find(f"{SVG}title").text
    assert title == "Autoresearch Progress: 9 Experiments, 3 Kept Improvements"  # the baseline is no improvement
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels == ["baseline", "raise matrix LR to 0.05", "matrix LR 0.05 -> 0.06",
                      "warmdown ratio 0.5"]


def test_the_y_axis_runs_from_just_below_the_best_to_just_above_the_baseline(session_ledger):
    track = report.number_rows(read_ledger(str(session_ledger)))
    root = ET.fromstring(svgplot.progress_svg(track))
    ticks = [float(t.text) for t in root.iter(f"{SVG}text")
             if t.get("text-anchor") == "end" and t.text.replace(".", "").isdigit()]
    margin = (1.0 - 0.97) * 0.15
    assert min(ticks) >= 0.97 - margin and max(ticks) <= 1.0 + margin
    assert min(ticks) <= 0.97 + 0.01 and max(ticks) >= 1.0 - 0.01


def test_long_labels_are_cut_like_the_notebooks():
    assert svgplot.label_text("x" * 50) == "x" * 42 + "..."
    assert svgplot.label_text("short") == "short"


@pytest.mark.skipif(shutil.which("rsvg-convert") is None,
                    reason="rsvg-convert (librsvg2-bin) is not installed; cannot render the SVG")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_the_chart_renders_to_png(path, tmp_path, capsys):
    plot = tmp_path / "p.svg"
    assert run(["--ledger", str(path), "--plot", str(plot)], capsys)[0] == 0
    png = tmp_path / "p.png"
    subprocess.run(["rsvg-convert", "-o", str(png), str(plot)], check=True, timeout=60)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unwritable_chart_path_is_exit_1(session_ledger, tmp_path, capsys):
    code, _, err = run(["--ledger", str(session_ledger), "--plot",
                        str(tmp_path / "no" / "dir" / "p.svg")], capsys)
    assert code == 1 and "cannot write" in err


def test_reruns_of_one_commit_give_a_noise_estimate_when_the_session_has_none(tmp_path, capsys):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("g000001", 1.000, "keep", "baseline"),
        ("g000001", 1.006, "discard", "baseline repeat 2/3"),
        ("g000001", 0.998, "keep", "baseline repeat 3/3"),
        ("g000002", 0.990, "keep", "matrix LR 0.05"),
    ])
    code, out, _ = run(["--ledger", str(ledger), "--json"], capsys)
    rep = json.loads(out)
    assert rep["noise"]["source"] == "repeats"
    assert rep["noise"]["floor"] == pytest.approx(0.0041633, abs=1e-6)
    verdicts = [k["verdict"] for k in rep["timeline"]]
    assert verdicts == ["baseline", "repeat", "gain"]  # a repeat is no gain; 0.0042 < 0.010
    assert "std of 3 runs of 1 repeated commit(s)" in rep["noise"]["note"]


def test_runs_jsonl_adds_run_time_and_workers_to_the_summary(session_ledger, capsys):
    session_dir = session_ledger.parent / ".autoresearch"
    session_dir.mkdir()
    records = [{"commit": f"a00000{i}", "seconds": 1800, "worker": f"gpu{i % 2}"}
               for i in range(1, 5)]
    (session_dir / "runs.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + '{"seconds": 5}\n', encoding="utf-8")
    code, out, _ = run(["--ledger", str(session_ledger)], capsys)
    assert code == 0
    assert "runs.jsonl: 4 records, run time 2.0 h, workers: gpu1 2, gpu0 2" in out


def test_a_seconds_field_that_is_no_number_is_left_out_of_the_run_time(session_ledger, capsys):
    session_dir = session_ledger.parent / ".autoresearch"
    session_dir.mkdir()
    (session_dir / "runs.jsonl").write_text(
        '{"commit": "a000001", "seconds": 1800}\n{"commit": "a000002", "seconds": 1.2.3}\n'
        '{"commit": "a000003", "seconds": 1e}\n{"commit": "a000004", "seconds": 1800}\n',
        encoding="utf-8")
    code, out, err = run(["--ledger", str(session_ledger)], capsys)
    assert code == 0, err
    assert "runs.jsonl: 4 records, run time 60 min" in out


def test_crowded_labels_keep_the_baseline_and_the_largest_gains_and_say_so():
    rows = [{"n": 1, "val_bpb": 1.0, "status": "keep", "description": "the baseline"}]
    for i in range(2, 40):  # 38 small steps packed together, then one big gain
        rows.append({"n": i, "val_bpb": 1.0 - i * 1e-4, "status": "keep", "description": f"s{i}"})
    rows.append({"n": 40, "val_bpb": 0.9, "status": "keep", "description": "the big one"})
    root = ET.fromstring(svgplot.progress_svg(rows))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels[0] == "the baseline" and labels[-1] == "the big one"
    assert 2 < len(labels) < 40
    note = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "note"]
    assert note == [f"{len(labels)} of 40 kept runs labelled (overlaps left out, largest gains "
                    "first)"]


def test_a_file_that_is_not_a_ledger_is_refused_with_exit_1(tmp_path, capsys):
    junk = tmp_path / "notes.txt"
    junk.write_text("just some notes\nabout nothing\n", encoding="utf-8")
    code, out, err = run(["--ledger", str(junk)], capsys)
    assert code == 1 and out == ""
    assert "does not look like a results.tsv" in err and len(err.splitlines()) == 1


def test_gains_within_noise_do_not_make_a_next_family(tmp_path, capsys):
    write_ledger(tmp_path / "results.tsv", [
        ("h000001", 1.000, "keep", "baseline"),
        ("h000002", 0.9995, "keep", "softcap 20"),
        ("h000003", 0.9990, "keep", "softcap 25"),
    ])
    (tmp_path / ".autoresearch").mkdir()
    (tmp_path / ".autoresearch" / "session.json").write_text('{"noise_floor": 0.001}')
    code, out, _ = run(["--ledger", str(tmp_path / "results.tsv"), "--json"], capsys)
    rep = json.loads(out)
    assert [k["verdict"] for k in rep["timeline"]] == ["baseline", "within noise", "within noise"]
    assert rep["next_family"] is None
    code, out, _ = run(["--ledger", str(tmp_path / "results.tsv")], capsys)
    assert "next experiment family: every kept gain is within noise" in out


def test_a_long_timeline_keeps_the_first_the_best_and_the_latest_kept_runs(tmp_path, capsys):
    rows = [("i000000", 1.0, "keep", "baseline")]
    value = 1.0
    for i in range(1, 15):
        value -= 0.01 if i < 10 else 0.0001  # big steps first, tiny ones at the end
        rows.append((f"i{i:06d}", value, "keep", f"step {i}"))
    write_ledger(tmp_path / "results.tsv", rows)
    code, out, _ = run(["--ledger", str(tmp_path / "results.tsv")], capsys)
    timeline = out.split("improvement timeline")[1].split("best gains:")[0].splitlines()[1:]
    assert len(timeline) == 8
    assert "baseline" in timeline[0] and "step 14" in timeline[-1]
    assert "7 smaller steps not shown" in out


def test_the_tried_block_uses_the_sections_of_the_program_md_template():
    template = (ROOT / "templates" / "program.md").read_text(encoding="utf-8")
    if "## What has been tried" not in template:
        pytest.skip("templates/program.md has no 'What has been tried' section")
    section = template.split("## What has been tried", 1)[1].split("\n## ", 1)[0]
    rep = report.analyse(read_ledger(str(CORPUS / "mlx-upstream-5col.tsv")))
    body = report.render_tried(rep)
    for title in ("Kept:", "Discarded:", "Crashed:"):
        assert title in section and title in body


def test_a_crash_class_from_a_description_gets_runlogs_hint(tmp_path):
    runlog = pytest.importorskip("arcore.runlog")
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("j000001", 1.0, "keep", "baseline"), ("j000002", 0.0, "crash", "double width (oom)")])
    patterns = report.analyse(read_ledger(str(ledger)))["crash_patterns"]
    assert patterns[0]["pattern"] == "oom" and patterns[0]["hint"] == runlog.HINTS["oom"]


def test_a_plot_path_that_is_not_svg_is_refused_and_nothing_is_overwritten(session_ledger,
                                                                           tmp_path, capsys):
    before = session_ledger.read_bytes()
    train = tmp_path / "train.py"
    train.write_text("my uncommitted work\n")
    for target in (session_ledger, train):
        code, out, err = run(["--ledger", str(session_ledger), "--plot", str(target)], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and ".svg" in err
    assert session_ledger.read_bytes() == before
    assert train.read_text() == "my uncommitted work\n"


def test_a_plot_path_that_is_the_ledger_itself_is_refused(tmp_path, capsys):
    ledger_svg = write_ledger(tmp_path / "results.svg", SESSION)
    before = ledger_svg.read_bytes()
    code, _, err = run(["--ledger", str(ledger_svg), "--plot", str(ledger_svg)], capsys)
    assert code == 2 and "ledger" in err
    assert ledger_svg.read_bytes() == before


def test_a_ledger_that_is_a_named_pipe_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "results.tsv"
    os.mkfifo(fifo)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "show-results.sh"), "--ledger", str(fifo)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "not a readable regular file" in done.stderr


# ---------------------------------------------------------------------------
# The mar8 H100 ledger (upstream exp/H100/mar8): noise from what the ledger holds, knobs
# ---------------------------------------------------------------------------

MAR8 = CORPUS / "h100-mar8-5col.tsv"


def test_mar8_a_seed_only_row_gives_the_noise_floor_and_most_kept_gains_are_within_it(capsys):
    code, out, _ = run(["--ledger", str(MAR8), "--json"], capsys)
    rep = json.loads(out)
    assert rep["noise"]["source"] == "seed-only changes"
    assert rep["noise"]["floor"] == pytest.approx(0.973799 - 0.973104, abs=1e-9)
    assert "#15" in rep["noise"]["note"]
    within = rep["noise"]["within"]
    assert within["kept"] == 22 and within["within_noise"] > 11 and within["more_than_half"]
    marked = [k for k in rep["timeline"] if k["verdict"] == "within noise"]
    assert len(marked) == within["within_noise"]
    code, text, _ = run(["--ledger", str(MAR8)], capsys)
    assert f"{within['within_noise']} of 22 kept gains are smaller than the noise floor" in text
    assert "more than half" in text and "no noise floor measured" not in text


def test_mar8_keep_rate_and_kept_count_leave_out_the_baseline_and_the_seed_change(capsys):
    rep = json.loads(run(["--ledger", str(MAR8), "--json"], capsys)[1])
    assert rep["ideas"]["keep"] == 22 and rep["ideas"]["roles"]["seed"] == 1
    assert rep["keep_rate"] == pytest.approx(22 / (22 + 101))
    assert rep["tried_counts"]["kept"] == 22
    assert all(k["description"] != "baseline" for k in rep["tried"]["kept"])


def test_mar8_families_are_knobs_not_words(capsys):
    rep = json.loads(run(["--ledger", str(MAR8), "--json"], capsys)[1])
    knobs = {g["knob"] for g in rep["tried_by_knob"]}
    assert {"embedding lr", "warmdown", "FINAL_LR_FRAC", "matrix lr", "depth"} <= knobs
    assert not knobs & {"min", "few", "too"}
    themes = [f["what"] for f in rep["repeated_failures"]] + [rep["next_family"]["theme"]]
    assert not set(themes) & {"min", "few", "steps", "worse"}


def test_a_rerun_description_with_a_commit_hash_is_no_family(tmp_path):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("c000001", 1.00, "keep", "baseline"), ("c000002", 0.98, "keep", "warmdown 0.5 to 0.7"),
        ("c000002", 0.981, "keep", "rerun f989ea1"), ("c000003", 0.99, "discard", "rerun f989ea1")])
    rep = report.analyse(read_ledger(str(ledger)))
    assert "f989ea1" not in {f["what"] for f in rep["repeated_failures"]}
    assert all(findings_knob != "f989ea1" for findings_knob in
               (g["knob"] for g in report.tried_by_knob(report.number_rows(
                   read_ledger(str(ledger))), rep["timeline"])))


def test_mar8_tried_is_one_screen_grouped_by_knob_and_says_what_it_merged(capsys):
    code, out, _ = run(["--ledger", str(MAR8), "--tried"], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) <= 40
    assert any(line.startswith("- embedding lr x2: 0.6 to 0.8") for line in lines)
    assert any("same description x2" in line for line in lines)
    assert any("more knobs" in line and "--json" in line for line in lines)
    assert any("within noise" in line for line in lines)


def test_the_delta_convention_is_stated_and_the_same_as_run_experiments(capsys):
    rep = json.loads(run(["--ledger", str(MAR8), "--json"], capsys)[1])
    assert "negative" in rep["delta_convention"]
    second = rep["timeline"][1]
    assert second["delta"] == pytest.approx(0.986041 - 0.997900)  # value - reference
    for script in ("show-results.sh", "run-experiment.sh"):
        help_text = (ROOT / "scripts" / script).read_text(encoding="utf-8")
        assert "delta = value - " in help_text and "negative" in help_text, script


def test_mar8_chart_marks_kept_gains_within_noise_and_stays_small(tmp_path, capsys):
    plot = tmp_path / "p.svg"
    assert run(["--ledger", str(MAR8), "--plot", str(plot)], capsys)[0] == 0
    root = ET.parse(plot).getroot()
    within = [c for c in root.iter(f"{SVG}circle") if "within-noise" in (c.get("class") or "")]
    rep = json.loads(run(["--ledger", str(MAR8), "--json"], capsys)[1])
    assert len(within) == rep["noise"]["within"]["within_noise"]
    assert "within noise" in plot.read_text(encoding="utf-8")


def test_runs_jsonl_noise_samples_give_the_floor_even_when_the_description_says_nothing(tmp_path,
                                                                                         capsys):
    ledger = write_ledger(tmp_path / "results.tsv", [
        ("d000001", 1.000, "keep", "baseline"),
        ("d000002", 0.990, "keep", "matrix LR 0.05"),
        ("d000003", 0.984, "discard", "another try"),
        ("d000004", 0.985, "keep", "warmdown 0.6"),
    ])
    (tmp_path / ".autoresearch").mkdir()
    (tmp_path / ".autoresearch" / "runs.jsonl").write_text(json.dumps(
        {"commit": "d000003" + "0" * 33, "status": "discard", "seed_only": True,
         "noise_sample": -0.006}) + "\n")
    rep = json.loads(run(["--ledger", str(ledger), "--json"], capsys)[1])
    assert rep["noise"]["source"] == "seed-only changes"
    assert rep["noise"]["floor"] == pytest.approx(0.006)
    assert rep["ideas"]["roles"]["seed"] == 1 and rep["keep_rate"] == pytest.approx(1.0)
    verdicts = {k["n"]: k["verdict"] for k in rep["timeline"]}
    assert verdicts == {1: "baseline", 2: "gain", 4: "within noise"}


def test_a_100k_row_chart_draws_every_kept_run_and_a_sample_of_the_rest(tmp_path):
    rng = random.Random(3)
    rows, best = [], 1.0
    for i in range(20000):
        value = 0.95 + 0.05 * 0.5 ** (i / 2000) + rng.gauss(0, 0.003)
        status = "keep" if i == 0 or value < best else "discard"
        best = min(best, value) if status == "keep" else best
        rows.append((f"{i:07x}", value, status, f"idea {i}"))
    ledger = write_ledger(tmp_path / "results.tsv", rows)
    track = report.number_rows(read_ledger(str(ledger)))
    svg = svgplot.progress_svg(track)
    root = ET.fromstring(svg)
    kept = [c for c in root.iter(f"{SVG}circle") if "kept" in (c.get("class") or "")]
    others = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "discarded"]
    assert len(kept) == sum(1 for r in rows if r[2] == "keep")
    assert len(others) <= svgplot.MAX_OTHER_POINTS and "other runs drawn" in svg
    assert len(svg) < 400_000


# ---------------------------------------------------------------------------
# The fast paths read what the plain ones would
# ---------------------------------------------------------------------------


def test_lower_turns_no_other_character_into_a_hints_letter():
    """findings.hinted() lower-cases ASCII only (UTF-8 bytes): that finds what str.lower()
    would as long as lower() makes a hint's letter of no other character, and makes no text
    longer but for the one character hinted() then checks every row for."""
    from arcore import findings

    letters = set("".join(findings._HINTS))
    grows = {c for c in map(chr, range(0x110000)) if len(c.lower()) != 1}
    assert grows == {findings._LOWER_GROWS.decode()}
    assert not {c for c in map(chr, range(0x80, 0x110000))
                if c not in grows and set(c.lower()) & letters}


def test_hinted_finds_each_description_whose_lower_case_names_a_hint():
    from arcore import findings

    rng = random.Random(5)
    parts = ["seed", "SEED", "Repeat", "re-run", "rerun", "noise run", "noise  run", "see d",
             "ſeed", "K", "ü", "“x”", "İ", "x", " ", "NOISE RUN", "repea", "t"]
    for _ in range(300):
        descriptions = ["".join(rng.choice(parts) for _ in range(rng.randint(0, 4)))
                        for _ in range(rng.randint(0, 12))]
        if any("İ" in d for d in descriptions):
            want = set(range(len(descriptions)))  # lower() makes the text longer: all checked
        else:
            want = {i for i, d in enumerate(descriptions)
                    if any(h in d.lower() for h in findings._HINTS)}
        assert findings.hinted(descriptions) == want, descriptions


def test_the_lines_naming_a_key_are_the_lines_splitlines_gives():
    rng = random.Random(6)
    pieces = [b'"proposer_usage"', b"x", b"\n", b"\r", b"\r\n", b"{}", b" "]
    for _ in range(500):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        want = [line for line in data.splitlines() if b'"proposer_usage"' in line]
        assert list(report._lines_with(data, b'"proposer_usage"')) == want, data


def test_the_top_rows_are_the_lowest_values_earliest_first():
    import heapq

    rng = random.Random(7)
    for _ in range(500):
        values = [rng.choice([None, 1.0, 2.0, 0.5, rng.random() + 0.01])
                  for _ in range(rng.randint(0, 30))]
        top = rng.randint(0, 35)
        want = [i for _, i in heapq.nsmallest(top, ((v, i) for i, v in enumerate(values)
                                                    if v is not None))]
        assert report.top_rows(values, top) == want, (values, top)


@pytest.mark.parametrize(("desc", "name", "want"), [
    ("warmup -> 0.1 ratio", "warmup", "-> 0.1 ratio"),
    ("matrix lr -0.01", "matrix lr", "-0.01"),
    ("matrix lr: 0.04 to 0.06", "matrix lr", "0.04 to 0.06"),
    ("depth - 10", "depth", "10"),
    ("DEPTH=10", "DEPTH", "=10"),
    ("depth", "depth", "depth"),
    ("wider mlp", "depth", "wider mlp"),
])
def test_a_variant_keeps_its_sign_and_arrow_and_drops_only_the_separator(desc, name, want):
    from arcore import findings

    assert findings.variant(desc, name) == want
