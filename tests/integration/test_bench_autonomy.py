"""``crossdock bench autonomy`` on the contract's example (8 events): the report carries the trust
per pair and the candidate's replay by both methods, the engine replay with its KPI deltas; bad
arguments are one line before any replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.autonomy import AutonomyBenchError, parse_args, run
from crossdock.cli import app
from twin.scenarios import EXAMPLE

KPIS = {"cost", "splits", "on_time", "reviews_needed", "oversells", "executed", "cost_executed"}


def test_the_report_has_both_replays_and_the_engines_kpi_deltas(redis_url: str) -> None:
    source, rejects, candidate, modes = parse_args(EXAMPLE, ["order_release/held"], '{"review_cost_above": 50}', [])
    result = run(source, planner_lag=1, rejects=rejects, candidate=candidate, modes=modes, redis_url=redis_url)

    assert result["candidate"] == {"review_cost_above": 50}
    assert {p["pair"] for p in result["pairs"]} >= {"order_release/released"}
    assert set(result["replay"]) == {"regate", "engines"}
    regate, engines = result["replay"]["regate"], result["replay"]["engines"]
    assert regate["method"] == "regate" and engines["method"] == "engines"
    assert regate["policy"]["review_cost_above"] == engines["policy"]["review_cost_above"] == 50
    assert regate["deterministic"] and engines["deterministic"]
    # every decided event of the run was recorded with its reads and decided again, except a tick
    # that ran a page of the full reconciliation pass (its snapshot pages are not kept)
    skipped = engines["not_replayable"]
    assert engines["replayed"] > 0 and engines["events"] == engines["replayed"] + skipped["count"]
    assert set(skipped["reasons"]) <= {"recording incomplete"}, skipped
    assert all("full-pass" in str(s["reason"]) for s in skipped["events"]), skipped
    total = engines["total"]
    assert set(total["before"]) >= KPIS and set(total["delta"]) >= KPIS
    for k in KPIS:
        assert total["delta"][k] == round(total["after"][k] - total["before"][k], 2)
    # A lower cost threshold only moves routes: some executed decision now waits for a planner, and
    # the replayed engines decide the same outcomes and plans (cost, splits, on-time unchanged).
    moved = total["moves"].get("executed->review", 0)
    assert moved >= 1 and total["changed"] == moved
    assert total["delta"]["reviews_needed"] == moved and total["delta"]["executed"] == -moved
    assert total["delta"]["cost"] == total["delta"]["splits"] == total["delta"]["on_time"] == 0
    assert total["delta"]["oversells"] == 0 and total["delta"]["cost_executed"] < 0
    assert sum(row["changed"] for row in engines["pairs"].values()) == total["changed"]
    assert regate["total"]["moves"].get("executed->review", 0) >= 1


@pytest.mark.parametrize(
    ("rejects", "candidate", "modes", "says"),
    [
        (["order_release"], "{}", [], "--reject: workflow/outcome"),
        ([], "{not json", [], "--candidate: not valid JSON"),
        ([], "[1]", [], "--candidate: a JSON object"),
        ([], '{"review_cost_above": "cheap"}', [], "--candidate: "),
        ([], "{}", ["order_release"], "--mode: workflow=mode"),
    ],
)
def test_bad_arguments_are_refused_before_the_run(
    rejects: list[str], candidate: str, modes: list[str], says: str
) -> None:
    with pytest.raises(AutonomyBenchError, match=f"^{says}"):
        parse_args(EXAMPLE, rejects, candidate, modes)


def test_the_cli_says_one_line_for_a_missing_scenario(tmp_path: Path) -> None:
    got = CliRunner().invoke(app, ["bench", "autonomy", str(tmp_path / "none.json")])
    assert got.exit_code == 2
    assert "no such file" in got.output and "Traceback" not in got.output
