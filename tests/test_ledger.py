"""results.tsv: reading by header name, formatting, locked appends, validation."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from arcore import ledger

CORPUS = Path(__file__).parent / "fixtures" / "corpus" / "results"
SCRIPTS = Path(__file__).parent.parent / "scripts"


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.tsv")))
def test_every_corpus_ledger_reads_by_header_name(name):
    rows = ledger.read_ledger(str(CORPUS / name))
    assert rows, name
    for row in rows:
        assert set(ledger.HEADER) <= set(row)
        assert len(row["commit"]) == 7 or row["commit"] == "baseline"  # mar8 names its first row so
        assert row["val_bpb"] is None or isinstance(row["val_bpb"], float)
        assert row["status"] in {"keep", "discard", "crash", "tentative", "repair", "support"}
    assert rows[0]["line"] == 2


def test_status_in_column_five_is_read_by_name():
    rows = ledger.read_ledger(str(CORPUS / "blitzo-6col-status-col5.tsv"))
    assert rows[0]["status"] == "keep"
    assert rows[0]["memory_gb"] == 10.0
    assert rows[0]["artifact_mb"] == "11.96"
    assert "—" in rows[2]["description"]


def test_crash_rows_and_long_descriptions_read_whole():
    rows = ledger.read_ledger(str(CORPUS / "rtx5070-11col-long-desc.tsv"))
    crash = [r for r in rows if r["status"] == "crash"]
    assert crash and all(r["val_bpb"] == 0.0 for r in crash)
    assert max(len(r["description"]) for r in rows) >= 600
    assert ledger.best_keep(rows)["val_bpb"] == pytest.approx(1.115866)


def test_a_missing_ledger_reads_as_no_rows(tmp_path):
    assert ledger.read_ledger(str(tmp_path / "nope.tsv")) == []


def test_a_headerless_ledger_reads_with_upstream_columns(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("abc1234\t1.5\t2.0\tkeep\tbaseline\n")
    rows = ledger.read_ledger(str(path))
    assert rows[0]["val_bpb"] == 1.5 and rows[0]["line"] == 1


UPSTREAM = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
ODD_LEDGERS = {  # what read_columns() must read as read_ledger() does, by column
    "plain": UPSTREAM + "a\t1\t2\tkeep\tx\nb\t0.000000\t0.0\tcrash\ty (oom)\n",
    "whitespace row": UPSTREAM + "a\t1\t2\tkeep\tx\n\t\t\t\t\nb\t1\t2\tkeep\ty\n",
    "blank line inside": UPSTREAM + "a\t1\t2\tkeep\tx\n\nb\t1\t2\tkeep\ty\n",
    "short row": UPSTREAM + "a\t1\t2\tkeep\tx\nb\t1\n",
    "tab in a description": UPSTREAM + "a\t1\t2\tkeep\tx\ty\n",
    "trailing blank lines": UPSTREAM + "a\t1\t2\tkeep\tx\n\n\n  \n",
    "no final newline": UPSTREAM + "a\t1\t2\tkeep\tx",
    "headerless": "a\t1\t2\tkeep\tx\nb\tinf\tnan\tKEEP \ty\n",
    "a name twice": "commit\tstatus\tval_bpb\tstatus\ta\tdescription\nc\tkeep\t1\tdiscard\t1\td\n",
    "no description": "commit\tstatus\tval_bpb\nc\tkeep\t1\n d \t crash \t1e400\n",
    "header only": UPSTREAM,
    "empty": "",
    "blank": "\n\n  \n",
    "blank lines first": "\n\n" + UPSTREAM + "a\t1\t2\tkeep\tx\n",
    "crlf": UPSTREAM.replace("\n", "\r\n") + "a\t1\t2\tkeep\tx\r\n",
    "sum past the largest float": UPSTREAM + "a\t1e308\t2\tkeep\tx\nb\t1e308\t2\tkeep\ty\n",
    "junk numbers": UPSTREAM + "a\tabc\t2\tkeep\tx\nb\t1_0\t 3 \tkeep\ty\nc\t-inf\t\tkeep\tz\n",
    "spaced header": " commit \t val_bpb\tmemory_gb\tstatus\tdescription\na\t1\t2\tkeep\tx\n",
}


@pytest.mark.parametrize("name", sorted(ODD_LEDGERS) + sorted(p.name for p in CORPUS.glob("*.tsv")))
def test_read_columns_reads_what_read_ledger_reads_by_column(name, tmp_path):
    path = CORPUS / name if name.endswith(".tsv") else tmp_path / "results.tsv"
    if not name.endswith(".tsv"):
        path.write_text(ODD_LEDGERS[name], encoding="utf-8", newline="")
    rows = ledger.read_ledger(str(path))
    columns = ledger.read_columns(str(path))
    names = list(rows[0]) if rows else [*ledger.HEADER, "line"]
    assert list(columns) == names
    for column in names:  # equal values of equal types (0.0 == 0 would pass a plain ==)
        got, want = columns[column], [row[column] for row in rows]
        assert [(type(v), v) for v in got] == [(type(v), v) for v in want], column


def test_track_rows_skip_the_rows_before_the_freeze():
    rows = [{"status": "keep", "val_bpb": v} for v in (1.0, 2.0, 3.0)]
    assert ledger.track_rows(rows, 1) == rows[1:]
    assert ledger.best_keep(ledger.track_rows(rows, 1))["val_bpb"] == 2.0
    assert ledger.best_keep(rows, higher_is_better=True)["val_bpb"] == 3.0


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def test_a_row_has_upstream_precision_and_a_short_hash():
    row = ledger.format_row("a1b2c3d4e5f6", 0.99712345, 44.04, "keep", "baseline")
    assert row == "a1b2c3d\t0.997123\t44.0\tkeep\tbaseline"


def test_a_crash_row_has_zero_value_and_memory():
    row = ledger.format_row("a1b2c3d", 1.23, 40.0, "crash", "double width (OOM)")
    assert row == "a1b2c3d\t0.000000\t0.0\tcrash\tdouble width (OOM)"


def test_nasty_descriptions_are_flattened_to_one_field():
    row = ledger.format_row("a1b2c3d", 1.0, 1.0, "discard", "a\tb\nc\r\n$(rm -rf /)\x00\x1b[31m")
    assert row.count("\t") == 4 and "\n" not in row
    assert row.endswith("a b c $(rm -rf /) [31m")


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError):
        ledger.format_row("a1b2c3d", 1.0, 1.0, "maybe", "x")


def test_a_row_for_a_wider_ledger_fills_columns_by_name():
    header = ("commit", "val_bpb", "artifact_mb", "memory_gb", "status", "description")
    row = ledger.format_row("a1b2c3d", 1.0, 2.0, "keep", "x", header)
    assert row.split("\t") == ["a1b2c3d", "1.000000", "", "2.0", "keep", "x"]


# ---------------------------------------------------------------------------
# Appending
# ---------------------------------------------------------------------------


def test_the_first_append_writes_the_header(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append_row(str(path), ledger.format_row("a1b2c3d", 1.0, 1.0, "keep", "base"))
    assert path.read_text().splitlines() == [
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription",
        "a1b2c3d\t1.000000\t1.0\tkeep\tbase",
    ]


def test_an_append_never_glues_onto_a_torn_last_line(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t1.0\t1.0\tkeep\tx")
    ledger.append_row(str(path), ledger.format_row("bcd2345", 0.9, 1.0, "keep", "y"))
    assert [r["commit"] for r in ledger.read_ledger(str(path))] == ["abc1234", "bcd2345"]


def test_init_leaves_an_existing_ledger_alone(tmp_path):
    path = tmp_path / "results.tsv"
    assert ledger.init(str(path)) is True
    path.write_text(path.read_text() + "abc1234\t1.0\t1.0\tkeep\tx\n")
    before = path.read_text()
    assert ledger.init(str(path)) is False
    assert path.read_text() == before


def _appender(args):
    path, worker = args
    for i in range(50):
        desc = f"worker {worker} row {i} " + "x" * 3000
        ledger.append_row(path, ledger.format_row(f"{worker:03d}{i:04d}", 1.0 + i, 1.0,
                                                  "discard", desc))


def test_four_concurrent_appenders_never_tear_a_row(tmp_path):
    path = str(tmp_path / "results.tsv")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_appender, [(path, w) for w in range(4)])
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "\t".join(ledger.HEADER)
    assert len(lines) == 1 + 4 * 50
    assert ledger.validate(path) == []
    assert all(len(line.split("\t")) == 5 and line.endswith("x" * 3000) for line in lines[1:])


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_validate_names_each_malformed_row_by_line(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "abc1234\t1.0\t1.0\tkeep\tok\n"
        "abc1234\t1.0\t1.0\tmaybe\tbad status\n"
        "abc1234\tnope\t1.0\tkeep\tbad number\n"
        "abc1234\t1.0\tkeep\ttoo few\n"
        "\n"
        "zzz\t0.000000\t0.0\tcrash\tbad hash\n"
        "abc1234\t1.5\t3.0\tcrash\tcrash with a value\n"
    )
    lines = sorted({n for n, _ in ledger.validate(str(path))})
    assert lines == [3, 4, 5, 6, 7, 8]


def test_validate_passes_upstream_format_corpus_files():
    for name in ("mlx-upstream-5col.tsv", "blitzo-6col-status-col5.tsv",
                 "rtx5070-11col-long-desc.tsv"):
        assert ledger.validate(str(CORPUS / name)) == [], name


def test_validate_reports_a_missing_file(tmp_path):
    assert ledger.validate(str(tmp_path / "x.tsv")) == [(0, "no such file")]


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "arcore", "ledger", *args], cwd=SCRIPTS,
                          capture_output=True, text=True)


def test_the_cli_appends_a_row_and_prints_it(tmp_path):
    path = str(tmp_path / "results.tsv")
    assert _cli("init", path).returncode == 0
    done = _cli("append", path, "abcdef1234", "1.5", "", "crash", "oom", "$(whoami)")
    assert done.returncode == 0
    assert done.stdout == "abcdef1\t0.000000\t0.0\tcrash\toom $(whoami)\n"
    assert _cli("validate", path).returncode == 0


def test_the_cli_validate_exits_one_with_line_numbers(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\tx\t1\tkeep\td\n")
    done = _cli("validate", str(path))
    assert done.returncode == 1
    assert done.stdout.startswith("2\tval_bpb is not a number")


def test_the_cli_refuses_bad_usage_with_exit_two(tmp_path):
    assert _cli("append", str(tmp_path / "r.tsv"), "abc").returncode == 2
    assert _cli("append", str(tmp_path / "r.tsv"), "abc", "1", "1", "maybe", "d").returncode == 2


def _row(commit: str, value: float | None, status: str) -> dict:
    return {"commit": commit, "val_bpb": value, "status": status, "description": ""}


def test_the_standing_best_ignores_a_keep_that_is_no_longer_on_the_branch():
    rows = [_row("aaaaaaa", 1.00, "keep"), _row("bbbbbbb", 0.90, "keep"),
            _row("bbbbbbb", 1.10, "discard"), _row("ccccccc", 0.95, "keep")]
    on_branch = {"aaaaaaa", "ccccccc"}.__contains__
    best = ledger.standing_best(rows, on_branch)
    assert best["commit"] == "ccccccc" and best["val_bpb"] == 0.95
    assert ledger.standing_best(rows)["commit"] == "ccccccc"  # bbbbbbb's mean is 1.0


def test_the_standing_best_values_a_commit_by_the_mean_of_all_its_runs():
    rows = [_row("aaaaaaa", 1.00, "keep"), _row("aaaaaaa", 1.02, "discard"),
            _row("aaaaaaa", 1.04, "discard"), _row("aaaaaaa", 0.0, "crash")]
    best = ledger.standing_best(rows, lambda commit: True)
    assert best["val_bpb"] == pytest.approx(1.02) and best["runs"] == 3


def test_the_standing_best_falls_back_to_every_keep_when_none_is_on_the_branch():
    rows = [_row("aaaaaaa", 1.00, "keep"), _row("bbbbbbb", None, "crash")]
    assert ledger.standing_best(rows, lambda commit: False)["commit"] == "aaaaaaa"
    assert ledger.standing_best([_row("bbbbbbb", None, "crash")]) is None


def test_a_ledger_saved_with_a_byte_order_mark_reads_its_header(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_bytes("\ufeffcommit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                     "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n".encode())
    rows = ledger.read_ledger(str(path))
    assert len(rows) == 1 and rows[0]["commit"] == "a1b2c3d" and rows[0]["status"] == "keep"
