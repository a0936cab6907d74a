"""``crossdock bench load`` end to end, small: 20 events/s for 3 s through a real twin, API and one
worker process on a real Redis; every event sent is decided, latencies are measured from the
schedule, and the report and its plot are written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.load import LoadOptions, _medium_day, build_events, run_load_bench, summary_rows
from tests import services


def test_events_follow_the_scenario_mix_and_repeat_orders_under_new_ids() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)
    scenario, events = build_events(7, "small", 80, now)
    assert len(events) == 80
    assert not any(e["type"] == "crossdock.tick" for e in events)
    assert {"oms.order.created", "wms.task.exception"} <= {e["type"] for e in events}
    assert scenario["start"].startswith("2026-12-06")  # the day moved to today
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    orders = [e["data"]["id"] for e in events if e["type"] == "oms.order.created"]
    assert len(set(orders)) == len(orders)  # repeated orders carry new ids


@pytest.mark.skipif(not os.environ.get("CROSSDOCK_TEST_BENCH"), reason="starts real processes: CROSSDOCK_TEST_BENCH=1")
def test_load_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", services.redis_url())
    monkeypatch.delenv("DATABASE_URL", raising=False)  # SQLite in the run's folder
    result = run_load_bench(
        LoadOptions(rate=20, duration_s=3, workers=(1,), size="medium", out=tmp_path, floor_samples=20, tick_s=3600)
    )
    (run,) = result["runs"]
    assert run["workers"] == 1 and run["events_sent"] == 60
    assert run["errors"]["not_accepted"] == 0 and run["errors"]["not_settled"] == 0, run["errors"]
    rows = run["events"]
    assert all(r["status"] == "done" for r in rows), [r for r in rows if r["status"] != "done"][:3]
    assert all(r["decisions"] >= 1 and r["decision_ms"] >= 0 for r in rows), [r for r in rows if not r["decisions"]][:3]
    assert all(r["settled_ms"] >= r["decision_ms"] for r in rows)
    orders = run["by_kind"]["orders"]
    assert orders["with_decision"] == orders["sent"] > 0
    assert 0 < orders["decision"]["p50_ms"] <= orders["decision"]["p99_ms"] <= orders["decision"]["max_ms"]
    for floor in ("api_healthz", "xadd", "twin_read_order", "twin_read_inventory"):
        assert run["floors"][floor]["n"] == 20 and run["floors"][floor]["p50_ms"] > 0
    assert run["queue_depth"]["samples"] and run["latency_per_second"]
    saved = json.loads((tmp_path / "load.json").read_text())
    assert saved["runs"][0]["events_sent"] == 60
    svg = (tmp_path / "load.svg").read_text()
    assert svg.startswith("<svg") and "<polyline" in svg
    assert any(name == "1w orders decision ms" for name, _ in summary_rows(result))


def test_the_days_latency_by_event_type_adds_up_to_every_decision() -> None:
    """The medium-day report on a real replay (the small day, real Redis): each event type's
    decisions sum to every decision, the overall figures are the report's own, the slowest
    decisions are the slowest of their type, and the table's goal row names the orders' p99."""
    day = _medium_day(services.redis_url(), LoadOptions(seed=7), size="small")
    by_type = day["by_type"]
    assert {"oms.order.created", "crossdock.tick"} <= set(by_type)
    assert sum(s["n"] for s in by_type.values()) == day["timed"] == day["decisions"] > 0
    assert abs(day["p50_ms"] - day["kpi_p50_ms"]) <= 0.01 and abs(day["p99_ms"] - day["kpi_p99_ms"]) <= 0.01
    assert max(s["max_ms"] for s in by_type.values()) == day["max_ms"]
    for s in by_type.values():
        assert 0 <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"] and s["max_subject"]
    slowest = day["slowest"]
    assert len(slowest) == 5 and [x["ms"] for x in slowest] == sorted((x["ms"] for x in slowest), reverse=True)
    assert slowest[0]["ms"] == round(day["max_ms"], 1)
    assert slowest[0]["subject"] == by_type[slowest[0]["event_type"]]["max_subject"]
    rows = dict(summary_rows({"loadavg_at_end": "0", "medium_day": day}))
    orders = by_type["oms.order.created"]
    assert rows["medium day goal: order p99 ≤ 300 ms"].startswith(f"{orders['p99_ms']:.1f} ms")
    assert f"({orders['n']} decisions)" in rows["medium day oms.order.created ms"]
    assert sum(1 for name in rows if name.startswith("medium day slowest")) == 5
