"""The scenario report: percentiles, KPIs from a hand-built final state, contract validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bench.report import build_report, kpis, percentile
from domain.decisions import Action, Decision
from domain.models import Scenario
from domain.report import Report

T0 = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)


def scenario(**overrides: Any) -> Scenario:
    raw: dict[str, Any] = {
        "scenario": "tiny",
        "start": "2026-03-21T08:00:00Z",
        "nodes": [
            {"id": "N1", "region": "north", "carriers": [{"code": "UPS", "cutoff": "17:00"}]},
            {"id": "N2", "region": "east", "carriers": [{"code": "DPD", "cutoff": "12:00"}]},
        ],
        "lanes": [
            {"from": "N1", "to_region": "east", "cost_per_unit": 2.0, "transit_days": 2},
            {"from": "N2", "to_region": "east", "cost_per_unit": 1.0, "transit_days": 1},
        ],
        "transfer_lanes": [{"from": "N1", "to": "N2", "cost_per_unit": 0.5, "transit_days": 1}],
        "oms": {
            "orders": [
                {
                    "id": "SO-1",
                    "customer": "C-1",
                    "region": "east",
                    "created": "2026-03-21T08:00:00Z",
                    "ship_by": "2026-03-21T20:00:00Z",
                    "lines": [{"line": 1, "sku": "SKU-1", "qty": 5}, {"line": 2, "sku": "SKU-2", "qty": 2}],
                },
                {
                    "id": "SO-3",
                    "customer": "C-3",
                    "region": "east",
                    "created": "2026-03-21T08:00:00Z",
                    "lines": [{"line": 1, "sku": "SKU-1", "qty": 1}],
                },
            ]
        },
        # SO-2 only exists as an event in the timeline.
        "events": [
            {
                "specversion": "1.0",
                "id": "evt-2",
                "source": "oms",
                "type": "oms.order.created",
                "data": {
                    "id": "SO-2",
                    "customer": "C-2",
                    "region": "east",
                    "created": "2026-03-21T13:00:00Z",
                    "ship_by": "2026-03-21T14:00:00Z",
                    "lines": [{"line": 1, "sku": "SKU-1", "qty": 4}, {"line": 2, "sku": "SKU-2", "qty": 3}],
                },
            },
            {"specversion": "1.0", "id": "evt-bad", "source": "oms", "type": "oms.order.created", "data": {"id": "X"}},
        ],
    }
    raw.update(overrides)
    return Scenario.model_validate(raw)


def line(no: int, sku: str, qty: float, allocs: list[tuple[str, float]], backordered: float = 0) -> dict[str, Any]:
    return {
        "line": no,
        "sku": sku,
        "qty": qty,
        "allocations": [{"node": n, "qty": q} for n, q in allocs],
        "backordered": backordered,
        "promise_date": "2026-03-25" if backordered else None,
        "substituted_by": None,
    }


def final_state() -> dict[str, Any]:
    return {
        "oms": {
            "orders": [
                # served from N1 and N2 (line 1 split), both cutoffs before ship_by: 2 lines on time
                {
                    "id": "SO-1",
                    "status": "released",
                    "hold_reason": None,
                    "lines": [line(1, "SKU-1", 5, [("N1", 3), ("N2", 2)]), line(2, "SKU-2", 2, [("N2", 2)])],
                },
                # created 13:00, N2's next cutoff is tomorrow 12:00 > ship_by; line 2 partly backordered
                {
                    "id": "SO-2",
                    "status": "partially_released",
                    "hold_reason": None,
                    "lines": [line(1, "SKU-1", 4, [("N2", 4)]), line(2, "SKU-2", 3, [("N1", 1)], backordered=2)],
                },
                {"id": "SO-3", "status": "held", "hold_reason": "credit_hold", "lines": [line(1, "SKU-1", 1, [])]},
            ]
        },
        "wms": {
            "waves": [],
            "transfers": [{"from": "N1", "to": "N2", "sku": "SKU-1", "qty": 10}],
            "tasks": [],
            "stock": [],
        },
        "erp": {"book_stock": [], "backorders": [], "adjustments": [], "purchase_orders": []},
        "tickets": [{"team": "finance", "subject": "SO-3 held"}],
        "oversells": {"count": 0, "events": []},
    }


def decision(n: int, workflow: str, status: str, review: bool = False, latency_ms: float | None = None) -> Decision:
    accepted = T0 + timedelta(minutes=n)
    return Decision(
        id=f"dec-{n}",
        event_id=f"evt-{n}",
        workflow=workflow,
        subject=f"S-{n}",  # type: ignore[arg-type]
        outcome="matched",
        confidence=0.9,
        cost_impact=1.234,
        human_review_required=review,
        status=status,  # type: ignore[arg-type]
        rationale="because",
        evidence={},
        actions=[Action(system="notify", type="ticket", payload={"team": "planning"}, idempotency_key=f"k-{n}")],
        accepted_at=accepted if latency_ms is not None else None,
        decided_at=accepted + timedelta(milliseconds=latency_ms) if latency_ms is not None else None,
    )


def decisions() -> list[Decision]:
    return [
        decision(1, "order_release", "pending_review", review=True, latency_ms=10),
        decision(2, "reconciliation", "executed", latency_ms=20),
        decision(3, "discrepancy", "executed", latency_ms=30),
        decision(4, "exception_triage", "pending_review", review=True, latency_ms=40),
        decision(5, "customer_service", "executed", latency_ms=50),
        decision(6, "allocation", "executed"),  # no timestamps: no latency sample
    ]


# --- percentile ----------------------------------------------------------------------------


def test_percentile_of_no_values_is_zero() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([], 99) == 0.0


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 0) == 7.5
    assert percentile([7.5], 50) == 7.5
    assert percentile([7.5], 100) == 7.5


def test_percentile_uses_the_nearest_rank() -> None:
    ten = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    hundred = [float(v) for v in range(1, 101)]

    assert percentile(ten, 50) == 5.0  # rank ceil(0.5 * 10) = 5
    assert percentile(ten, 90) == 9.0
    assert percentile(ten, 95) == 10.0
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 99) == 99.0
    assert percentile(hundred, 7) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_percentile_bounds_are_the_minimum_and_the_maximum() -> None:
    values = [3.0, 1.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 3.0


# --- kpis ----------------------------------------------------------------------------------


def test_kpis_count_orders_lines_backorders_holds_and_review() -> None:
    k = kpis(scenario(), decisions(), final_state())

    assert k["orders"] == 3
    assert k["lines"] == 5
    assert k["oversells"] == 0
    assert k["backorders"] == 1
    assert k["held_orders"] == 1
    assert k["pending_review"] == 2


def test_an_order_served_from_two_nodes_is_one_split_shipment() -> None:
    # SO-1 has a line split over N1 and N2; SO-2 serves its two lines from N2 and N1.
    assert kpis(scenario(), [], final_state())["split_shipments"] == 2


def test_on_time_counts_fully_allocated_lines_that_ship_by_the_ship_by() -> None:
    # SO-1: both lines on time. SO-2 line 1 misses (next N2 cutoff tomorrow), line 2 is short.
    # SO-3: nothing allocated. 2 of 5 lines.
    assert kpis(scenario(), [], final_state())["on_time_ship_rate"] == 0.4


def test_a_line_of_an_order_without_ship_by_is_on_time_once_allocated() -> None:
    state = final_state()
    state["oms"]["orders"][2]["lines"] = [line(1, "SKU-1", 1, [("N2", 1)])]
    assert kpis(scenario(), [], state)["on_time_ship_rate"] == 0.6


def test_on_time_reads_a_naive_ship_by_as_utc() -> None:
    raw = scenario().model_dump(mode="json", by_alias=True)
    raw["oms"]["orders"][0]["ship_by"] = "2026-03-21T20:00:00"  # no offset
    raw["oms"]["orders"][0]["created"] = "2026-03-21T08:00:00"

    assert kpis(Scenario.model_validate(raw), [], final_state())["on_time_ship_rate"] == 0.4


def test_fulfilment_cost_is_lane_cost_times_quantity_plus_transfers() -> None:
    # SO-1: 3x2 + 2x1 + 2x1 = 10; SO-2: 4x1 + 1x2 = 6; transfer N1->N2: 10 x 0.5 = 5.
    assert kpis(scenario(), [], final_state())["fulfilment_cost"] == 21.0


def test_auto_resolved_rate_is_the_share_of_exception_decisions_executed_without_a_human() -> None:
    assert kpis(scenario(), decisions(), final_state())["auto_resolved_rate"] == 0.6667
    assert kpis(scenario(), [decision(1, "order_release", "executed")], final_state())["auto_resolved_rate"] == 0.0


def test_decision_latency_percentiles_use_only_timed_decisions() -> None:
    k = kpis(scenario(), decisions(), final_state())
    assert k["decision_latency_ms"] == {"p50": 30.0, "p99": 50.0}


def test_oversells_are_read_from_the_final_state() -> None:
    state = final_state()
    state["oversells"] = {"count": 2, "events": [{}, {}]}
    assert kpis(scenario(), [], state)["oversells"] == 2


def test_kpis_of_an_empty_run_are_zero() -> None:
    k = kpis(Scenario.model_validate({"start": "2026-03-21T08:00:00Z"}), [], {})
    assert k["orders"] == k["lines"] == k["split_shipments"] == 0
    assert k["on_time_ship_rate"] == 0.0 and k["fulfilment_cost"] == 0.0
    assert k["decision_latency_ms"] == {"p50": 0.0, "p99": 0.0}


# --- build_report --------------------------------------------------------------------------


def test_build_report_writes_a_report_that_satisfies_the_contract() -> None:
    report = build_report(scenario(), "crossdock", decisions(), final_state())

    Report.model_validate(report)
    assert report["scenario"] == "tiny" and report["policy"] == "crossdock"
    assert [d["id"] for d in report["decisions"]] == [f"dec-{n}" for n in range(1, 7)]
    assert report["decisions"][0]["cost_impact"] == 1.23
    assert report["decisions"][0]["actions"][0]["idempotency_key"] == "k-1"
    assert report["final_state"]["notify"] == {"tickets": [{"team": "finance", "subject": "SO-3 held"}]}
    assert report["final_state"]["oversells"] == {"count": 0, "events": []}
    assert report["kpis"] == kpis(scenario(), decisions(), final_state())


def test_build_report_rejects_a_final_state_that_breaks_the_contract() -> None:
    state = final_state()
    state["oms"]["orders"][0]["status"] = "lost"

    with pytest.raises(ValidationError, match="status"):
        build_report(scenario(), "crossdock", decisions(), state)


def test_build_report_rejects_an_unknown_policy() -> None:
    with pytest.raises(ValidationError, match="policy"):
        build_report(scenario(), "greedy", [], final_state())


def test_an_order_with_stock_reserved_where_it_ships_after_ship_by_is_missing_its_cutoff() -> None:
    # SO-2 (created 13:00, ship by 14:00): N2 next ships tomorrow 12:00, N1 at 17:00. SO-1 ships in time;
    # SO-3 has nothing reserved, so it is held, not late.
    assert kpis(scenario(), [], final_state())["orders_missing_cutoff"] == 1
