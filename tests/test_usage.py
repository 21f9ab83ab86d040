"""What a night cost: arcore.usage (a CLI's usage report), the loop's hand-off to runs.jsonl
and show-results' agent cost, without the real CLIs (tests/test_agent_clis.py runs those).

The fixtures in tests/fixtures/agent-output/ are what the real `claude -p --output-format json`
(2.1.197) and `codex exec --json` (0.171.0) printed against tests/agentserver.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arcore import report, usage
from scratchrepo import git, make_repo

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "fixtures" / "agent-output"
AGENTS = ROOT / "tests" / "fixtures" / "agents"
CLAUDE_LOG = OUTPUT / "claude-print-json.log"
CODEX_LOG = OUTPUT / "codex-exec-json.log"


# ---------------------------------------------------------------------------
# Parsing a proposer's output
# ---------------------------------------------------------------------------


def test_claude_codes_json_result_gives_tokens_that_add_up_to_its_dollars():
    got = usage.parse(CLAUDE_LOG.read_text())
    result = json.loads(CLAUDE_LOG.read_text().splitlines()[0])
    models = result["modelUsage"].values()
    assert got["source"] == "claude"
    assert got["cost_usd"] == pytest.approx(result["total_cost_usd"])
    assert got["cached_input_tokens"] == sum(m["cacheReadInputTokens"] for m in models)
    assert got["input_tokens"] == sum(m["inputTokens"] + m["cacheReadInputTokens"]
                                      + m["cacheCreationInputTokens"] for m in models)
    assert got["output_tokens"] == sum(m["outputTokens"] for m in models)


def test_a_claude_result_without_model_usage_counts_cache_tokens_as_input():
    line = json.dumps({"type": "result", "total_cost_usd": 0.5, "usage": {
        "input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100,
        "output_tokens": 7}})
    assert usage.parse(line) == {"input_tokens": 115, "output_tokens": 7,
                                 "cached_input_tokens": 100, "cost_usd": 0.5,
                                 "source": "claude"}


def test_codex_json_events_give_tokens_and_no_invented_price():
    got = usage.parse(CODEX_LOG.read_text())
    done = [json.loads(x) for x in CODEX_LOG.read_text().splitlines()
            if '"turn.completed"' in x][0]["usage"]
    assert got == {"input_tokens": done["input_tokens"], "output_tokens": done["output_tokens"],
                   "cached_input_tokens": done["cached_input_tokens"], "cost_usd": None,
                   "source": "codex"}


def test_two_turns_add_up_and_a_mix_without_dollars_has_no_dollar_total():
    turn = json.dumps({"type": "turn.completed", "usage": {"input_tokens": 3,
                                                           "output_tokens": 2}})
    assert usage.parse(f"{turn}\n{turn}\n")["input_tokens"] == 6
    mixed = usage.parse(CLAUDE_LOG.read_text() + CODEX_LOG.read_text())
    assert mixed["cost_usd"] is None and mixed["source"] == "claude+codex"


@pytest.mark.parametrize("text", [
    "", "no json here\n", '{"type": "result"\n', '{"type": "item.completed"}\n',
    '["type", 1]\n', '{"type": "turn.completed", "usage": "lots"}\n',
    'echo {"type": "result", "total_cost_usd": 9}\n',
])
def test_output_without_a_usage_report_is_none(text):
    assert usage.parse(text) is None


def test_junk_numbers_count_as_nothing_and_a_negative_price_as_unknown():
    line = json.dumps({"type": "result", "total_cost_usd": -1, "usage": {
        "input_tokens": -5, "output_tokens": True, "cache_read_input_tokens": "9"}})
    assert usage.parse(line) == {"input_tokens": 0, "output_tokens": 0,
                                 "cached_input_tokens": 0, "cost_usd": None,
                                 "source": "claude"}


def test_read_log_reads_only_from_the_offset_on(tmp_path):
    log = tmp_path / "proposer.log"
    log.write_text(CLAUDE_LOG.read_text() + "=== proposal 2 ===\n")
    assert usage.read_log(str(log), 0)["source"] == "claude"
    assert usage.read_log(str(log), len(CLAUDE_LOG.read_bytes())) is None
    assert usage.read_log(str(tmp_path / "missing.log")) is None


def test_the_hand_off_through_the_environment_round_trips_and_refuses_junk():
    got = usage.parse(CLAUDE_LOG.read_text())
    assert usage.from_env(usage.as_env(got)) == got
    assert usage.as_env(None) == {}
    for junk in ("", "not json", "[1]", '"text"'):
        assert usage.from_env({usage.ENV: junk}) is None
    forged = usage.from_env({usage.ENV: json.dumps({"input_tokens": "9" * 9, "x": 1,
                                                    "cost_usd": float("inf")})})
    assert forged == {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0,
                      "cost_usd": None, "source": None}


def test_a_rejected_proposal_gets_a_record_only_when_it_reported_usage():
    assert usage.rejected_record(None, "abc1234", "no commit", "t") is None
    record = usage.rejected_record(usage.parse(CODEX_LOG.read_text()), "abc1234", "no commit",
                                   "2026-01-01T00:00:00Z")
    assert record["rejected"] is True and record["status"] == "crash"
    assert record["proposer_usage"]["source"] == "codex"


# ---------------------------------------------------------------------------
# show-results' agent cost (report.agent_cost, report.cost_lines)
# ---------------------------------------------------------------------------


def _rec(commit, status, cost=None, tokens=100, **extra):
    return {"commit": commit, "status": status, "description": f"try {commit}",
            "proposer_usage": {"input_tokens": tokens, "output_tokens": 10,
                               "cached_input_tokens": 0, "cost_usd": cost,
                               "source": "claude" if cost is not None else "codex"}, **extra}


def test_a_kept_gain_costs_every_proposal_since_the_previous_keep():
    records = [_rec("aaaaaaa", "crash", 0.01, rejected=True), _rec("bbbbbbb", "discard", 0.02),
               _rec("ccccccc", "keep", 0.03), _rec("ddddddd", "discard", 0.5)]
    timeline = [{"commit": "0000000", "delta": None}, {"commit": "ccccccc", "delta": 0.004}]
    cost = report.agent_cost(records, timeline)
    assert cost["session"]["cost_usd"] == pytest.approx(0.56)
    assert cost["session"]["proposals"] == 4 and cost["session"]["input_tokens"] == 400
    assert [e["commit"] for e in cost["experiments"]] == ["aaaaaaa", "bbbbbbb", "ccccccc",
                                                          "ddddddd"]
    assert cost["experiments"][0]["rejected"] is True
    (gain,) = cost["kept_gains"]
    assert gain["commit"] == "ccccccc" and gain["delta"] == 0.004
    assert gain["proposals"] == 3 and gain["cost_usd"] == pytest.approx(0.06)
    assert cost["per_kept_gain"] == {"gains": 1, "proposals": 4, "tokens": 440,
                                     "cost_usd": pytest.approx(0.56)}
    assert cost["since_last_keep"]["cost_usd"] == pytest.approx(0.5)
    lines = report.cost_lines(cost)
    assert lines[0].startswith("agent cost: 4 proposals, 400 tokens in") and "$0.5600" in lines[0]
    assert "per kept gain (session spend / 1 gain): $0.5600, 440 tokens, 4 proposals" in lines[1]
    assert lines[2].startswith("  dearest: ddddddd discard $0.5000")


def test_codex_tokens_are_reported_without_a_dollar_figure():
    cost = report.agent_cost([_rec("aaaaaaa", "keep"), _rec("bbbbbbb", "discard")], [])
    assert cost["session"]["cost_usd"] is None and cost["per_kept_gain"]["cost_usd"] is None
    assert "no price is assumed" in cost["note"]
    text = "\n".join(report.cost_lines(cost))
    assert "no dollar figure" in text and "$" not in text


def test_no_reported_usage_means_no_cost_section():
    assert report.agent_cost([], []) is None and report.cost_lines(None) == []


def test_load_costs_keeps_the_tracks_records_with_usage_and_skips_junk(tmp_path):
    lines = [json.dumps({"commit": "a", "status": "keep", "time": "2026-01-01T00:00:00Z"}),
             json.dumps(_rec("b", "keep", 1.0, time="2025-01-01T00:00:00Z")),
             json.dumps(_rec("c", "keep", 1.0, time="2026-02-01T00:00:00Z")),
             '{"proposer_usage": broken', json.dumps({"proposer_usage": 5})]
    (tmp_path / "runs.jsonl").write_text("\n".join(lines) + "\n")
    assert [r["commit"] for r in report.load_costs(str(tmp_path))] == ["b", "c"]
    assert [r["commit"] for r in report.load_costs(str(tmp_path), "2026-01-01T00:00:00Z")] == ["c"]
    assert report.load_costs(str(tmp_path / "nowhere")) == []


# ---------------------------------------------------------------------------
# The loop's hook, end to end with a stand-in proposer
# ---------------------------------------------------------------------------


def loop_with_usage(tmp_path: Path, *extra: str) -> tuple[Path, dict, list[dict]]:
    """Proposal 1 prints Claude's report and is kept; proposal 2 prints nothing (its record
    must not reuse proposal 1's); proposal 3 prints Codex's report and is rejected."""
    repo = make_repo(tmp_path)
    (tmp_path / "agent").mkdir()
    (tmp_path / "cache").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "FAKE_"))}
    env.update(PATH=f"{AGENTS}:{os.environ['PATH']}", FAKE_AGENT_DIR=str(tmp_path / "agent"),
               FAKE_AGENT_MODE="good,none,none", AUTORESEARCH_CACHE_DIR=str(tmp_path / "cache"),
               AUTORESEARCH_METRIC_SOURCE="printed")
    propose = (f'fake-agent; rc=$?; case "$AUTORESEARCH_ITERATION" in 1) cat "{CLAUDE_LOG}";; '
               f'3) cat "{CODEX_LOG}";; esac; exit $rc')
    done = subprocess.run(["bash", str(ROOT / "scripts" / "run-loop.sh"), "--propose", propose,
                           "--max", "3", *extra, "--cmd", f"{sys.executable} train.py",
                           "--grace", "1"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (repo / ".autoresearch" / "runs.jsonl").read_text()
               .splitlines()]
    return repo, env, records


def test_the_loop_records_each_proposals_own_usage_in_runs_jsonl(tmp_path):
    repo, env, records = loop_with_usage(tmp_path)
    rows = [line.split("\t")[3] for line in (repo / "results.tsv").read_text().splitlines()[1:]]
    assert rows == ["keep", "keep", "crash", "crash"]
    assert [r.get("proposer_usage", {}).get("source") for r in records] == [None, "claude",
                                                                            "codex"]
    assert records[1]["status"] == "keep"
    assert records[1]["proposer_usage"] == usage.parse(CLAUDE_LOG.read_text())
    assert records[2]["rejected"] is True
    assert records[2]["commit"] == git(repo, "rev-parse", "--short=7", "HEAD")
    assert "proposer_usage" not in json.loads((repo / ".autoresearch" / "loop.json").read_text())
    shown = subprocess.run(["bash", str(ROOT / "scripts" / "show-results.sh"), "--json"],
                           cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    cost = json.loads(shown.stdout)["agent_cost"]
    assert cost["session"]["proposals"] == 2 and cost["session"]["priced"] == 1
    assert cost["session"]["cost_usd"] == usage.parse(CLAUDE_LOG.read_text())["cost_usd"]
    text = subprocess.run(["bash", str(ROOT / "scripts" / "show-results.sh")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=60).stdout
    assert "(+1 with no dollar figure)" in text


def test_with_two_slots_each_proposals_usage_is_recorded_too(tmp_path):
    """The same with --workers 2 (two lanes propose while a slot runs): each record carries
    its own proposal's usage, whatever the order, though both proposers shared the log."""
    _, _, records = loop_with_usage(tmp_path, "--workers", "2")
    sources = [r.get("proposer_usage", {}).get("source") for r in records]
    assert sorted(sources, key=str) == [None, "claude", "codex"], records
    by_source = {r.get("proposer_usage", {}).get("source"): r for r in records}
    assert by_source["claude"]["status"] == "keep" and by_source["claude"]["worker"]
    assert by_source["codex"]["status"] == "crash"  # the crash that reported nothing: none
