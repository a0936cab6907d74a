"""Forecast engine: SBA on intermittent demand, day-by-day projection, priced prescriptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.engines.forecast import (
    OpenPoLine,
    Position,
    Receipt,
    SkuNetwork,
    daily_series,
    prescribe,
    project,
    sba_rate,
)
from domain.models import DemandPoint, TransferLane

NOW = datetime(2026, 3, 21, 0, 0, tzinfo=UTC)
TODAY = NOW.date()


def lane(a: str, b: str, cost: float = 0.4, days: int = 2) -> TransferLane:
    return TransferLane.model_validate({"from": a, "to": b, "cost_per_unit": cost, "transit_days": days})


def test_sba_on_steady_demand_is_the_mean_less_the_bias_correction() -> None:
    assert sba_rate([10.0] * 14) == pytest.approx(10 * (1 - 0.05))


def test_sba_on_intermittent_demand_spreads_sizes_over_intervals() -> None:
    series = [0, 0, 6, 0, 0, 6, 0, 0, 6, 0, 0, 6.0]
    assert sba_rate(series) == pytest.approx(0.95 * 6 / 3, rel=0.02)
    assert sba_rate([0.0] * 7) == 0.0


def test_daily_series_fills_missing_days_with_zero() -> None:
    points = [DemandPoint(node="A", sku="S", date=TODAY - timedelta(days=d), qty=d) for d in (1, 3)]
    assert daily_series(points, TODAY) == [3.0, 0.0, 1.0]
    assert daily_series([], TODAY, days=2) == [0.0, 0.0]


def test_projection_finds_the_stockout_and_the_shortfall_before_the_next_receipt() -> None:
    pos = Position(
        node="A", on_hand=25, locked=0, reserved=5, rate=5, receipts=[Receipt(TODAY + timedelta(days=6), 100, "po")]
    )
    fc = project("S", pos, NOW)
    # 20 available: 15, 10, 5, 0, -5 (day 4), -10 (day 5), +100 on day 6.
    assert fc.stockout == TODAY + timedelta(days=4)
    assert fc.short == pytest.approx(10)
    assert fc.next_supply == TODAY + timedelta(days=6)
    assert project("S", Position(node="A", on_hand=100, locked=0, reserved=0, rate=1), NOW).stockout is None


def test_a_cheap_transfer_from_the_node_with_excess_is_proposed_and_priced() -> None:
    net = SkuNetwork(
        sku="S",
        unit_cost=20.0,
        positions={
            "A": Position(node="A", on_hand=12, locked=0, reserved=0, rate=3),
            "B": Position(node="B", on_hand=200, locked=0, reserved=0, rate=1, safety_stock=5),
        },
        transfer_lanes=[lane("B", "A", cost=0.5, days=2)],
    )
    proposals = prescribe(net, NOW)
    transfer = next(p for p in proposals if p.outcome == "transfer_proposed")
    [action] = transfer.actions
    assert action.name == "wms.create_transfer" and action.payload["from"] == "B" and action.payload["to"] == "A"
    qty = action.payload["qty"]
    assert transfer.cost_impact == pytest.approx(0.5 * qty)
    assert transfer.evidence["expected_lost_margin"] > transfer.cost_impact
    assert action.payload["eta"] <= transfer.evidence["stockout_date"]
    assert "stockout_announced" not in [p.outcome for p in proposals]


def test_a_transfer_already_created_closes_the_gap_so_it_is_not_proposed_again() -> None:
    base = Position(node="A", on_hand=12, locked=0, reserved=0, rate=3)
    arriving = Position(
        node="A",
        on_hand=12,
        locked=0,
        reserved=0,
        rate=3,
        receipts=[Receipt(TODAY + timedelta(days=2), 60, "transfer TR-1")],
    )
    src = Position(node="B", on_hand=200, locked=0, reserved=0, rate=1, outgoing=60)
    lanes = [lane("B", "A")]
    assert any(
        p.outcome == "transfer_proposed" for p in prescribe(SkuNetwork("S", 20.0, {"A": base, "B": src}, lanes), NOW)
    )
    assert prescribe(SkuNetwork("S", 20.0, {"A": arriving, "B": src}, lanes), NOW) == []


def test_a_transfer_that_costs_more_than_the_margin_is_not_proposed_and_the_stockout_is_announced() -> None:
    net = SkuNetwork(
        sku="S",
        unit_cost=1.0,  # 0.35 margin per unit
        positions={
            "A": Position(node="A", on_hand=6, locked=0, reserved=0, rate=3, safety_stock=20),
            "B": Position(node="B", on_hand=500, locked=0, reserved=0, rate=1),
        },
        transfer_lanes=[lane("B", "A", cost=2.0)],
        po_lines=[OpenPoLine("PO-1", 10, "A", 100, TODAY + timedelta(days=9))],
    )
    outcomes = {p.outcome: p for p in prescribe(net, NOW)}
    assert "transfer_proposed" not in outcomes
    expedite = outcomes["expedite_proposed"]
    assert expedite.review_required
    assert expedite.actions[0].payload == {
        "po_id": "PO-1",
        "line": 10,
        "new_date": (TODAY + timedelta(days=1)).isoformat(),
        "reason": "predicted stockout of S at A on 2026-03-23",
    }
    announced = outcomes["stockout_announced"]
    assert announced.actions == [] and announced.evidence["days_ahead"] == 2


def test_low_safety_stock_is_raised_to_a_few_days_of_cover() -> None:
    net = SkuNetwork("S", 5.0, {"A": Position(node="A", on_hand=4, locked=0, reserved=0, rate=2.2)})
    ss = next(p for p in prescribe(net, NOW) if p.outcome == "safety_stock_proposed")
    assert ss.actions[0].payload == {"sku": "S", "node": "A", "qty": 7.0}
    assert ss.review_required and ss.cost_impact == pytest.approx(35.0)


def test_demand_uncertainty_brings_the_predicted_stockout_forward() -> None:
    calm = Position(node="A", on_hand=30, locked=0, reserved=0, rate=3)
    noisy = Position(node="A", on_hand=30, locked=0, reserved=0, rate=3, sigma=4)
    assert project("S", calm, NOW).stockout == TODAY + timedelta(days=10)  # 30 - 3 × 11 < 0
    stockout = project("S", noisy, NOW).stockout
    assert stockout is not None and stockout < TODAY + timedelta(days=10)


def test_the_backorder_bench_meets_its_goals_on_a_small_run() -> None:
    from bench.backorders import run_backorder_bench

    result = run_backorder_bench(seed=3, pairs=60, size="small")
    xd = result["crossdock"]
    assert xd["transfers_reproposed_next_tick"] == 0
    assert xd["prevented_or_announced_rate_of_those"] >= 0.8
    assert xd["lost_margin"] < result["baseline"]["lost_margin"]
