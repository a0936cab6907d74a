"""The order release engine (and the naive baseline): release, split with backorder, hold."""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from domain.context import BookPosition, LocationStock, Network, NodeStock, SkuInfo, Supply
from domain.decisions import Proposal
from domain.engines.baseline import decide_baseline_release
from domain.engines.clock import next_cutoff
from domain.engines.release import (
    ReleaseContext,
    decide_release,
    promise_date,
    validate_order,
)
from domain.errors import InvalidOrder, UnknownSku
from domain.models import Carrier, Customer, Lane, Node, Order, OrderLine, Zone

NOW = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)
TODAY = NOW.date()

# Three warehouses serving region "east": N2 is cheapest, then N1, then N3.
NODES = [
    Node(
        id="N1",
        region="north",
        zones=[Zone(id="A", pick_capacity_per_hour=100), Zone(id="B", pick_capacity_per_hour=50)],
        carriers=[Carrier(code="UPS", cutoff="17:00"), Carrier(code="DHL", cutoff="15:00")],
    ),
    Node(
        id="N2",
        region="east",
        zones=[Zone(id="A", pick_capacity_per_hour=80)],
        carriers=[Carrier(code="DPD", cutoff="16:30")],
    ),
    Node(
        id="N3",
        region="south",
        zones=[Zone(id="A", pick_capacity_per_hour=60)],
        carriers=[Carrier(code="UPS", cutoff="18:00")],
    ),
]
LANES = [
    Lane.model_validate({"from": "N1", "to_region": "east", "cost_per_unit": 2.0, "transit_days": 2}),
    Lane.model_validate({"from": "N2", "to_region": "east", "cost_per_unit": 1.0, "transit_days": 1}),
    Lane.model_validate({"from": "N3", "to_region": "east", "cost_per_unit": 3.0, "transit_days": 3}),
    Lane.model_validate({"from": "N3", "to_region": "west", "cost_per_unit": 0.5, "transit_days": 1}),
]
COST = {"N1": 2.0, "N2": 1.0, "N3": 3.0}
TRANSIT = {"N1": 2, "N2": 1, "N3": 3}


def ns(
    node: str,
    pickable: float,
    *,
    sku: str = "SKU-1",
    locked: float = 0.0,
    allocated: float = 0.0,
    zones: dict[str, float] | None = None,
) -> NodeStock:
    """WMS view of one sku at one node; on_hand is whatever makes ``pickable`` consistent."""
    on_hand = pickable + locked + allocated
    by_zone = zones or {"A": on_hand}
    locations = [
        LocationStock(zone=z, location=f"{node}-{z}-01", on_hand=q, locked=locked if i == 0 else 0.0)
        for i, (z, q) in enumerate(by_zone.items())
    ]
    return NodeStock(
        node=node, sku=sku, on_hand=on_hand, locked=locked, allocated=allocated, pickable=pickable, locations=locations
    )


def supply(kind: str, id_: str, node: str, when: date | None, qty: float = 10, sku: str = "SKU-1") -> Supply:
    return Supply(kind=kind, id=id_, node=node, sku=sku, qty=qty, date=when)  # type: ignore[arg-type]


def make_ctx(
    lines: list[tuple[str, float]] | None = None,
    *,
    stock: list[NodeStock] | None = None,
    book: list[BookPosition] | None = None,
    supplies: list[Supply] | None = None,
    safety: dict[str, dict[str, float]] | None = None,
    priority: str = "standard",
    tier: str = "standard",
    credit_hold: bool = False,
    allow_split: bool = True,
    carrier: str | None = None,
    ship_by: datetime | None = None,
    region: str = "east",
    lanes: list[Lane] | None = None,
    now: datetime = NOW,
) -> ReleaseContext:
    lines = lines if lines is not None else [("SKU-1", 5)]
    stock = stock if stock is not None else []
    order = Order(
        id="SO-1",
        customer="C-1",
        region=region,
        priority=priority,  # type: ignore[arg-type]
        created=now,
        ship_by=ship_by,
        carrier=carrier,
        allow_split=allow_split,
        lines=[OrderLine(line=i + 1, sku=sku, qty=qty) for i, (sku, qty) in enumerate(lines)],
    )
    skus = {sku for sku, _ in lines} | {s.sku for s in stock}
    safety = safety or {}
    if book is None:  # by default the books mirror the warehouse exactly
        book = [BookPosition(node=s.node, sku=s.sku, qty=s.on_hand, blocked=s.locked) for s in stock]
    by_sku_stock: dict[str, list[NodeStock]] = defaultdict(list)
    for s in stock:
        by_sku_stock[s.sku].append(s)
    by_sku_book: dict[str, list[BookPosition]] = defaultdict(list)
    for b in book:
        by_sku_book[b.sku].append(b)
    by_sku_supply: dict[str, list[Supply]] = defaultdict(list)
    for sp in supplies or []:
        by_sku_supply[sp.sku].append(sp)
    return ReleaseContext(
        order=order,
        customer=Customer(id="C-1", name="Acme", tier=tier),  # type: ignore[arg-type]
        credit_hold=credit_hold,
        skus={s: SkuInfo(id=s, unit_cost=10.0, safety_stock=safety.get(s, {})) for s in sorted(skus)},
        stock=dict(by_sku_stock),
        book=dict(by_sku_book),
        supply=dict(by_sku_supply),
        network=Network(nodes=NODES, lanes=lanes if lanes is not None else LANES),
        now=now,
    )


def actions(p: Proposal, name: str) -> list[dict[str, Any]]:
    return [a.payload for a in p.actions if a.name == name]


def allocations(p: Proposal) -> dict[tuple[int, str], float]:
    return {(a["line"], a["node"]): a["qty"] for a in actions(p, "oms.allocate")}


# --- release -------------------------------------------------------------------------------


def test_releases_an_order_whose_lines_are_all_pickable_at_one_node() -> None:
    ctx = make_ctx([("SKU-1", 5), ("SKU-2", 2)], stock=[ns("N2", 10), ns("N2", 4, sku="SKU-2")])

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert p.workflow == "order_release" and p.subject == "SO-1"
    assert allocations(p) == {(1, "N2"): 5, (2, "N2"): 2}
    assert actions(p, "oms.update_order_status") == [{"order_id": "SO-1", "status": "released"}]
    assert p.confidence == 0.95
    assert p.cost_impact == 7.0  # 7 units x 1.0 on the N2 lane
    assert p.review_required is False
    assert "N2 (1/unit)" in p.rationale


def test_chooses_the_cheapest_lane_that_can_fill_the_order() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 50), ns("N2", 50), ns("N3", 50)])

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N2"): 5}
    assert p.cost_impact == 5.0


def test_prefers_one_node_to_a_split_when_the_cheapest_lane_is_short() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 50), ns("N2", 3)])

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N1"): 5}
    assert p.cost_impact == 10.0


def test_chooses_by_cost_not_speed_and_breaks_a_cost_tie_by_transit_days() -> None:
    lanes = [
        Lane.model_validate({"from": "N1", "to_region": "east", "cost_per_unit": 0.8, "transit_days": 5}),
        Lane.model_validate({"from": "N2", "to_region": "east", "cost_per_unit": 1.0, "transit_days": 1}),
        Lane.model_validate({"from": "N3", "to_region": "east", "cost_per_unit": 0.8, "transit_days": 4}),
    ]
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 10), ns("N2", 10), ns("N3", 10)], lanes=lanes)

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N3"): 5}
    assert p.cost_impact == 4.0


def test_uses_the_cheapest_of_two_lanes_from_the_same_node() -> None:
    lanes = [
        Lane.model_validate({"from": "N1", "to_region": "east", "cost_per_unit": 0.5, "transit_days": 1}),
        Lane.model_validate({"from": "N1", "to_region": "east", "cost_per_unit": 4.0, "transit_days": 1}),
        Lane.model_validate({"from": "N2", "to_region": "east", "cost_per_unit": 1.0, "transit_days": 1}),
    ]
    ctx = make_ctx([("SKU-1", 4)], stock=[ns("N1", 10), ns("N2", 10)], lanes=lanes)

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N1"): 4}
    assert p.cost_impact == 2.0


def test_ignores_nodes_without_a_lane_to_the_order_region() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N3", 50)], region="west")  # only N3 serves west
    [p] = decide_release(ctx)
    assert allocations(p) == {(1, "N3"): 5}

    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 50), ns("N2", 50)], region="west")
    [held] = decide_release(ctx)
    assert held.outcome == "held"
    assert actions(held, "oms.hold_order")[0]["reason"] == "no_stock"


def test_holds_for_review_an_order_whose_region_no_lane_serves() -> None:
    [p] = decide_release(make_ctx([("SKU-1", 1)], stock=[ns("N1", 50)], region="mars"))

    assert p.outcome == "held"
    assert actions(p, "oms.hold_order")[0]["reason"] == "review"
    assert "'mars'" in p.rationale
    assert actions(p, "oms.allocate") == []


def test_splits_a_line_across_nodes_when_no_single_node_can_fill_it() -> None:
    ctx = make_ctx([("SKU-1", 6)], stock=[ns("N1", 4), ns("N2", 3), ns("N3", 10)])

    [p] = decide_release(ctx)

    # N3 could fill alone, so no split: the single-node plan wins.
    assert allocations(p) == {(1, "N3"): 6}

    ctx = make_ctx([("SKU-1", 6)], stock=[ns("N1", 4), ns("N2", 3), ns("N3", 2)])
    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N2"): 3, (1, "N1"): 3}  # cheapest first, then the next
    assert [w["node"] for w in actions(p, "wms.create_wave")] == ["N1", "N2"]
    assert "split shipment" in p.rationale
    assert p.cost_impact == 3 * 1.0 + 3 * 2.0
    assert actions(p, "oms.split_line") == []


def test_sources_different_lines_from_different_nodes_when_allowed() -> None:
    ctx = make_ctx([("SKU-1", 5), ("SKU-2", 5)], stock=[ns("N2", 5), ns("N1", 5, sku="SKU-2")])

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N2"): 5, (2, "N1"): 5}


def test_needs_the_sum_of_same_sku_lines_at_a_single_node() -> None:
    # Two lines of SKU-1 (4 + 4): N2 has only 6, so the whole order comes from N1.
    ctx = make_ctx([("SKU-1", 4), ("SKU-1", 4)], stock=[ns("N1", 10), ns("N2", 6)])

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N1"): 4, (2, "N1"): 4}


# --- split with backorder ------------------------------------------------------------------


def test_splits_a_short_line_into_a_release_and_a_backorder_for_review() -> None:
    po = supply("purchase_order", "PO-1", "N2", date(2026, 3, 25))
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 3)], supplies=[po])

    release, backorder = decide_release(ctx)

    assert release.outcome == "partially_released"
    assert allocations(release) == {(1, "N2"): 3}
    assert actions(release, "oms.split_line") == [{"order_id": "SO-1", "line": 1, "fulfil_qty": 3, "backorder_qty": 2}]
    assert actions(release, "oms.update_order_status") == [{"order_id": "SO-1", "status": "partially_released"}]
    assert release.confidence == 0.9
    assert "2 units on line(s) 1 are short" in release.rationale

    assert backorder.outcome == "backordered"
    assert backorder.review_required is True
    assert backorder.review_reason
    [bo] = actions(backorder, "erp.create_backorder")
    assert bo["qty"] == 2 and bo["sku"] == "SKU-1" and bo["line"] == 1
    assert bo["promise_date"] == "2026-03-26"  # PO expected 25th + 1 day N2 transit
    assert bo["supply"] == "purchase_order PO-1 at N2"
    assert actions(backorder, "oms.update_promise_date") == [
        {"order_id": "SO-1", "line": 1, "promise_date": "2026-03-26"}
    ]
    assert backorder.cost_impact == 20.0  # 2 units x unit cost 10
    assert actions(backorder, "notify.ticket") == []


def test_promise_date_is_the_earliest_planned_supply_plus_lane_transit() -> None:
    supplies = [
        supply("purchase_order", "PO-1", "N3", date(2026, 3, 23)),  # 23 + 3 = 26
        supply("transfer", "TR-1", "N2", date(2026, 3, 24)),  # 24 + 1 = 25 <- earliest arrival
        supply("purchase_order", "PO-2", "N1", date(2026, 3, 30)),  # 30 + 2 = 1 Apr
    ]
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 1)], supplies=supplies)

    _, backorder = decide_release(ctx)

    [bo] = actions(backorder, "erp.create_backorder")
    assert bo["promise_date"] == "2026-03-25"
    assert bo["supply"] == "transfer TR-1 at N2"
    assert "line 1: 2026-03-25" in backorder.rationale


def test_promise_date_counts_overdue_supply_from_today() -> None:
    lanes = {ln.from_node: ln for ln in LANES if ln.to_region == "east"}
    overdue = [supply("purchase_order", "PO-9", "N1", TODAY - timedelta(days=5))]

    assert promise_date(overdue, lanes, TODAY) == (TODAY + timedelta(days=2), "purchase_order PO-9 at N1")


def test_promise_date_ignores_supply_that_cannot_reach_the_region_or_has_no_date() -> None:
    lanes = {ln.from_node: ln for ln in LANES if ln.to_region == "east"}
    unusable = [
        supply("purchase_order", "PO-1", "N9", date(2026, 3, 22)),  # no lane from N9
        supply("purchase_order", "PO-2", "N2", None),  # no expected date: nothing to promise on
        supply("transfer", "TR-1", "N2", date(2026, 3, 22), qty=0),
    ]

    assert promise_date(unusable, lanes, TODAY) == (None, None)
    assert promise_date([], lanes, TODAY) == (None, None)


def test_a_short_line_with_no_planned_supply_gets_a_planning_ticket_and_no_date() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 3)], priority="express")

    release, backorder = decide_release(ctx)

    assert release.outcome == "partially_released"
    [bo] = actions(backorder, "erp.create_backorder")
    assert bo["promise_date"] is None and bo["supply"] is None
    assert actions(backorder, "oms.update_promise_date") == []
    [ticket] = actions(backorder, "notify.ticket")
    assert ticket["team"] == "planning"
    assert ticket["priority"] == "high"  # express
    assert ticket["refs"] == ["SO-1"]
    assert backorder.confidence == 0.5
    assert "no planned supply" in backorder.rationale


# --- holds ---------------------------------------------------------------------------------


def test_holds_an_order_whose_customer_is_on_credit_hold() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 50)], credit_hold=True)

    [p] = decide_release(ctx)

    assert p.outcome == "held"
    assert actions(p, "oms.allocate") == []
    assert actions(p, "wms.create_wave") == []
    assert actions(p, "oms.hold_order")[0]["reason"] == "credit_hold"
    assert actions(p, "oms.update_order_status") == [{"order_id": "SO-1", "status": "held"}]
    [ticket] = actions(p, "notify.ticket")
    assert ticket["team"] == "finance"
    assert ticket["refs"] == ["SO-1", "C-1"]
    assert p.confidence == 0.99
    assert "credit hold" in p.rationale
    assert p.cost_impact == 50.0  # 5 units x unit cost 10 at stake


def test_holds_for_no_stock_with_a_planning_ticket_when_nothing_is_pickable() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 0), ns("N2", 0)])

    [p] = decide_release(ctx)

    assert p.outcome == "held"
    assert actions(p, "oms.hold_order")[0]["reason"] == "no_stock"
    assert actions(p, "notify.ticket")[0]["team"] == "planning"
    assert actions(p, "oms.allocate") == []
    assert "SKU-1 needs 5, best node has 0 usable" in p.rationale


def test_holds_an_order_that_may_not_split_even_if_two_nodes_together_could_fill() -> None:
    ctx = make_ctx([("SKU-1", 6)], stock=[ns("N1", 4), ns("N2", 4)], allow_split=False)

    [p] = decide_release(ctx)

    assert p.outcome == "held"
    assert actions(p, "oms.hold_order")[0]["reason"] == "no_stock"
    assert actions(p, "oms.allocate") == []
    assert "does not allow splitting" in p.rationale
    assert p.evidence["allow_split"] is False


def test_an_order_that_may_not_split_is_still_released_from_one_node_that_can_fill() -> None:
    ctx = make_ctx([("SKU-1", 6)], stock=[ns("N1", 6), ns("N2", 4)], allow_split=False)

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N1"): 6}


# --- what is usable ------------------------------------------------------------------------


def test_never_allocates_locked_stock() -> None:
    # 10 on hand, 6 under a cycle-count lock: only 4 are pickable.
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 4, locked=6)])

    release, backorder = decide_release(ctx)

    assert allocations(release) == {(1, "N2"): 4}
    assert actions(backorder, "erp.create_backorder")[0]["qty"] == 1
    assert release.evidence["lines"][0]["nodes"]["N2"]["usable"] == 4


def test_stock_allocated_to_another_order_forces_a_split() -> None:
    # 8 on hand at N2, 6 already reserved for someone else.
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 2, allocated=6)])

    release, backorder = decide_release(ctx)

    assert allocations(release) == {(1, "N2"): 2}
    assert actions(backorder, "erp.create_backorder")[0]["qty"] == 3


def test_stock_allocated_to_another_order_forces_a_hold_when_splitting_is_not_allowed() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 2, allocated=6)], allow_split=False)

    [p] = decide_release(ctx)

    assert p.outcome == "held"
    assert actions(p, "oms.hold_order")[0]["reason"] == "no_stock"
    assert "best node has 2 usable" in p.rationale


def test_an_erp_block_not_mirrored_by_a_wms_lock_reduces_usable_stock() -> None:
    # WMS: 10 pickable, nothing locked. ERP: 4 of the 10 are quality-blocked.
    stock = [ns("N2", 10)]
    book = [BookPosition(node="N2", sku="SKU-1", qty=10, blocked=4)]
    ctx = make_ctx([("SKU-1", 8)], stock=stock, book=book)

    release, _ = decide_release(ctx)

    assert allocations(release) == {(1, "N2"): 6}
    node = release.evidence["lines"][0]["nodes"]["N2"]
    assert node["erp_blocked"] == 4 and node["usable"] == 6


def test_an_erp_block_mirrored_by_a_wms_lock_is_not_deducted_twice() -> None:
    stock = [ns("N2", 6, locked=4)]
    book = [BookPosition(node="N2", sku="SKU-1", qty=10, blocked=4)]
    ctx = make_ctx([("SKU-1", 6)], stock=stock, book=book)

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N2"): 6}


def test_books_that_lag_the_warehouse_lower_confidence_and_are_named() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)], book=[BookPosition(node="N2", sku="SKU-1", qty=3, blocked=0)])

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert p.confidence == 0.8
    assert "SKU-1@N2" in p.rationale and "books lag" in p.rationale
    assert p.evidence["books_disagree"] == ["SKU-1@N2"]


# --- safety stock --------------------------------------------------------------------------


def test_a_standard_order_does_not_touch_safety_stock_and_the_rationale_says_so() -> None:
    ctx = make_ctx([("SKU-1", 8)], stock=[ns("N2", 10)], safety={"SKU-1": {"N2": 4}}, allow_split=False)

    [p] = decide_release(ctx)

    assert p.outcome == "held"
    assert "best node has 6 usable" in p.rationale
    assert "Safety stock (4 at SKU-1@N2) was kept back" in p.rationale
    assert "express orders and gold customers" in p.rationale
    assert p.evidence["safety_stock_allowed"] is False


def test_a_standard_order_releases_only_above_safety_stock_and_backorders_the_rest() -> None:
    ctx = make_ctx([("SKU-1", 8)], stock=[ns("N2", 10)], safety={"SKU-1": {"N2": 4}})

    release, backorder = decide_release(ctx)

    assert allocations(release) == {(1, "N2"): 6}
    assert "kept back" in release.rationale
    assert actions(backorder, "erp.create_backorder")[0]["qty"] == 2


@pytest.mark.parametrize(("priority", "tier"), [("express", "standard"), ("standard", "gold"), ("express", "gold")])
def test_express_orders_and_gold_customers_may_use_safety_stock(priority: str, tier: str) -> None:
    ctx = make_ctx([("SKU-1", 8)], stock=[ns("N2", 10)], safety={"SKU-1": {"N2": 4}}, priority=priority, tier=tier)

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N2"): 8}
    assert f"Used safety stock at SKU-1@N2 ({priority}/{tier} order)" in p.rationale
    assert p.confidence == 0.9
    assert p.evidence["safety_stock_allowed"] is True


def test_an_express_order_that_stays_above_safety_stock_does_not_claim_to_use_it() -> None:
    ctx = make_ctx([("SKU-1", 6)], stock=[ns("N2", 10)], safety={"SKU-1": {"N2": 4}}, priority="express")

    [p] = decide_release(ctx)

    assert "safety stock" not in p.rationale.lower()
    assert p.confidence == 0.95


def test_safety_stock_use_is_judged_on_all_lines_drawing_on_a_node() -> None:
    # 4 + 3 = 7 from N2 eats into the 4 units of safety stock above 6 free units.
    ctx = make_ctx([("SKU-1", 4), ("SKU-1", 3)], stock=[ns("N2", 10)], safety={"SKU-1": {"N2": 4}}, tier="gold")

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N2"): 4, (2, "N2"): 3}
    assert "Used safety stock at SKU-1@N2" in p.rationale


def test_safety_stock_use_accounts_for_an_unmirrored_erp_block() -> None:
    # 10 pickable, 3 ERP-blocked (usable 7), safety 2: taking 6 dips into safety stock.
    ctx = make_ctx(
        [("SKU-1", 6)],
        stock=[ns("N2", 10)],
        book=[BookPosition(node="N2", sku="SKU-1", qty=10, blocked=3)],
        safety={"SKU-1": {"N2": 2}},
        priority="express",
    )

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N2"): 6}
    assert "Used safety stock at SKU-1@N2" in p.rationale


# --- validation ----------------------------------------------------------------------------


def test_a_zero_quantity_line_is_an_invalid_order_with_a_clear_message() -> None:
    order = Order.model_construct(
        id="SO-7",
        customer="C-1",
        region="east",
        priority="standard",
        allow_split=True,
        lines=[OrderLine(line=1, sku="SKU-1", qty=2), OrderLine.model_construct(line=2, sku="SKU-1", qty=0)],
    )
    skus = {"SKU-1": SkuInfo(id="SKU-1")}

    with pytest.raises(InvalidOrder) as exc:
        validate_order(order, skus)

    assert str(exc.value) == "SO-7 line 2 has quantity 0; quantities must be positive"


def test_decide_release_rejects_a_zero_quantity_line() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)])
    bad = ctx.order.model_copy(update={"lines": [OrderLine.model_construct(line=1, sku="SKU-1", qty=0)]})
    ctx = ReleaseContext(**{**ctx.__dict__, "order": bad})

    with pytest.raises(InvalidOrder, match="line 1 has quantity 0"):
        decide_release(ctx)


def test_an_unknown_sku_raises_unknown_sku_naming_the_material_master() -> None:
    ctx = make_ctx([("SKU-1", 1)], stock=[ns("N2", 10)])
    ctx = ReleaseContext(
        **{
            **ctx.__dict__,
            "order": ctx.order.model_copy(
                update={"lines": [OrderLine(line=1, sku="SKU-1", qty=1), OrderLine(line=2, sku="SKU-9", qty=1)]}
            ),
        }
    )

    with pytest.raises(UnknownSku) as exc:
        decide_release(ctx)

    assert exc.value.sku == "SKU-9"
    assert str(exc.value) == "SKU-9 is not in the ERP material master"


def test_the_baseline_also_rejects_an_unknown_sku() -> None:
    ctx = make_ctx([("SKU-1", 1)], stock=[ns("N2", 10)])
    ctx = ReleaseContext(**{**ctx.__dict__, "skus": {}})

    with pytest.raises(UnknownSku, match="SKU-1 is not in the ERP material master"):
        decide_baseline_release(ctx)


# --- actions and the contract vocabulary ---------------------------------------------------

VOCABULARY = {
    "oms.update_order_status",
    "oms.allocate",
    "oms.split_line",
    "oms.substitute_line",
    "oms.hold_order",
    "oms.update_promise_date",
    "wms.create_wave",
    "wms.create_task",
    "wms.create_transfer",
    "erp.create_backorder",
    "erp.post_adjustment",
    "erp.expedite_po",
    "erp.update_safety_stock",
    "erp.close_po_line",
    "notify.ticket",
}


def test_every_action_follows_the_contract_vocabulary() -> None:
    contexts = [
        make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)]),
        make_ctx([("SKU-1", 5)], stock=[ns("N2", 3)], supplies=[supply("transfer", "TR-1", "N2", TODAY)]),
        make_ctx([("SKU-1", 5)], stock=[ns("N2", 3)]),
        make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)], credit_hold=True),
        make_ctx([("SKU-1", 5)], stock=[]),
    ]
    seen = set()
    for ctx in contexts:
        for p in decide_release(ctx):
            for a in p.actions:
                assert a.system in {"wms", "erp", "oms", "notify"}
                assert a.name in VOCABULARY
                seen.add(a.name)
    assert seen == {
        "oms.allocate",
        "oms.update_order_status",
        "wms.create_wave",
        "oms.split_line",
        "erp.create_backorder",
        "oms.update_promise_date",
        "notify.ticket",
        "oms.hold_order",
    }


def test_the_wave_payload_has_the_wms_wave_api_shape() -> None:
    stock = [ns("N1", 10, zones={"A": 3, "B": 7})]
    ctx = make_ctx([("SKU-1", 5)], stock=stock, carrier="DHL", priority="express", tier="gold")

    [p] = decide_release(ctx)

    [wave] = actions(p, "wms.create_wave")
    assert wave["waveId"] == "WV-SO-1-N1"
    assert wave["node"] == "N1"
    [entry] = wave["orders"]
    assert entry["orderId"] == "SO-1" and entry["lines"] == [{"line": 1, "sku": "SKU-1", "qty": 5}]
    assert 25.0 <= entry["priorityScore"] <= 100.0  # express + gold alone give 25
    assert wave["parameters"] == {"workZone": "B", "carrierCode": "DHL", "cutoffTime": "2026-03-21T15:00:00Z"}


def test_the_wave_falls_back_to_the_nodes_earliest_carrier_and_the_next_days_cutoff() -> None:
    # The order's FEDEX does not serve N1; at 17:30 both trucks have left, DHL's 15:00 is first tomorrow.
    late = datetime(2026, 3, 21, 17, 30, tzinfo=UTC)
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 10)], carrier="FEDEX", now=late)

    [p] = decide_release(ctx)

    [wave] = actions(p, "wms.create_wave")
    assert wave["parameters"]["carrierCode"] == "DHL"
    assert wave["parameters"]["cutoffTime"] == "2026-03-22T15:00:00Z"


def test_next_cutoff_is_the_first_utc_cutoff_at_or_after_now() -> None:
    assert next_cutoff(datetime(2026, 3, 21, 15, 0, tzinfo=UTC), "15:00") == datetime(2026, 3, 21, 15, 0, tzinfo=UTC)
    assert next_cutoff(datetime(2026, 3, 21, 15, 1, tzinfo=UTC), "15:00") == datetime(2026, 3, 22, 15, 0, tzinfo=UTC)
    assert next_cutoff(datetime(2026, 3, 21, 9, 0), "15:00") == datetime(2026, 3, 21, 15, 0, tzinfo=UTC)


def test_next_cutoff_converts_a_time_in_another_zone_to_utc_first() -> None:
    # 16:00 at UTC+2 is 14:00 UTC: the 15:00 UTC cutoff is still ahead today.
    now = datetime(2026, 3, 21, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    assert next_cutoff(now, "15:00") == datetime(2026, 3, 21, 15, 0, tzinfo=UTC)


def test_the_wave_priority_is_the_wave_engines_score_and_rises_for_express_gold_and_urgency() -> None:
    from domain.engines.waves import ReleasableOrder, score

    def wave_score(**kw: Any) -> float:
        [p] = decide_release(make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)], **kw))
        return float(actions(p, "wms.create_wave")[0]["orders"][0]["priorityScore"])

    plain = wave_score()
    assert wave_score(priority="express") > plain and wave_score(tier="gold") > plain
    assert wave_score(ship_by=NOW + timedelta(hours=4)) > wave_score(ship_by=NOW + timedelta(hours=47))
    cutoff = NOW.replace(hour=16, minute=30)  # N2's DPD cutoff today
    expected, _ = score(
        ReleasableOrder(order_id="SO-1", node="N2", zone="A", carrier="DPD", lines=[(1, "SKU-1", 5)], created=NOW),
        NOW,
        cutoff,
    )
    assert plain == expected


def test_decisions_are_deterministic() -> None:
    def ctx() -> ReleaseContext:
        return make_ctx([("SKU-1", 7), ("SKU-2", 3)], stock=[ns("N1", 4), ns("N2", 2), ns("N3", 2, sku="SKU-2")])

    assert [p.model_dump() for p in decide_release(ctx())] == [p.model_dump() for p in decide_release(ctx())]


# --- property: never more than usable -----------------------------------------------------


def _usable(pickable: float, locked: float, blocked: float, safety: float, safety_ok: bool) -> float:
    usable = max(0.0, pickable - max(0.0, blocked - locked))
    return usable if safety_ok else max(0.0, usable - safety)


@pytest.mark.parametrize("seed", range(4))
def test_allocations_never_exceed_usable_stock_at_any_node(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        skus = ["SKU-1", "SKU-2"][: rng.randint(1, 2)]
        stock, book, usable_at = [], [], {}
        safety: dict[str, dict[str, float]] = {s: {} for s in skus}
        priority, tier = rng.choice(["standard", "express"]), rng.choice(["standard", "gold"])
        safety_ok = priority == "express" or tier == "gold"
        for sku in skus:
            for node in rng.sample(["N1", "N2", "N3"], rng.randint(0, 3)):
                pickable, locked = float(rng.randint(0, 12)), float(rng.randint(0, 4))
                blocked, allocated = float(rng.randint(0, 6)), float(rng.randint(0, 5))
                safety[sku][node] = float(rng.randint(0, 4))
                stock.append(ns(node, pickable, sku=sku, locked=locked, allocated=allocated))
                book.append(BookPosition(node=node, sku=sku, qty=pickable + locked + allocated, blocked=blocked))
                usable_at[(sku, node)] = _usable(pickable, locked, blocked, safety[sku][node], safety_ok)
        lines = [(rng.choice(skus), float(rng.randint(1, 15))) for _ in range(rng.randint(1, 3))]
        ctx = make_ctx(
            lines,
            stock=stock,
            book=book,
            safety=safety,
            priority=priority,
            tier=tier,
            allow_split=rng.random() < 0.7,
            credit_hold=rng.random() < 0.1,
        )

        proposals = decide_release(ctx)

        taken: dict[tuple[str, str], float] = defaultdict(float)
        per_line: dict[int, float] = defaultdict(float)
        for a in actions(proposals[0], "oms.allocate"):
            assert a["qty"] > 0
            taken[(a["sku"], a["node"])] += a["qty"]
            per_line[a["line"]] += a["qty"]
        for key, qty in taken.items():
            assert qty <= usable_at[key] + 1e-9, (seed, key, qty, usable_at[key])
        backordered = {a["line"]: a["qty"] for p in proposals for a in actions(p, "erp.create_backorder")}
        outcome = proposals[0].outcome
        if outcome == "held":
            assert not taken and len(proposals) == 1
            continue
        for i, (_, qty) in enumerate(lines, start=1):
            assert per_line[i] + backordered.get(i, 0.0) == pytest.approx(qty)
            assert per_line[i] <= qty + 1e-9
        assert (outcome == "partially_released") == bool(backordered) == (len(proposals) == 2)
        if not ctx.order.allow_split:
            assert len({node for _, node in taken}) == 1 and not backordered
        for p in proposals:
            assert all(a.system in {"wms", "erp", "oms", "notify"} and a.name in VOCABULARY for a in p.actions)


# --- the naive baseline --------------------------------------------------------------------


def test_the_baseline_takes_the_nearest_node_whose_erp_book_stock_covers_each_line() -> None:
    # N2 is nearest (1 day) but its books are short; N1 (2 days) has book stock.
    book = [
        BookPosition(node="N2", sku="SKU-1", qty=2, blocked=0),
        BookPosition(node="N1", sku="SKU-1", qty=9, blocked=1),
        BookPosition(node="N3", sku="SKU-1", qty=99, blocked=0),
    ]
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 0, locked=8)], book=book)

    p = decide_baseline_release(ctx)

    # It never looks at the WMS: N1 has nothing pickable, yet the baseline allocates there.
    assert p.outcome == "released"
    assert allocations(p) == {(1, "N1"): 5}
    assert p.cost_impact == 10.0
    assert p.evidence == {"engine": "baseline/1.0.0", "plan": {"1": "N1"}}
    assert [w["waveId"] for w in actions(p, "wms.create_wave")] == ["WV-SO-1-N1"]


def test_the_baseline_escalates_what_no_node_book_stock_covers() -> None:
    book = [BookPosition(node="N2", sku="SKU-1", qty=4, blocked=0)]
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 50)], book=book)

    p = decide_baseline_release(ctx)

    assert p.outcome == "escalated"
    assert p.review_required is True
    assert actions(p, "oms.allocate") == []
    [ticket] = actions(p, "notify.ticket")
    assert ticket["team"] == "planning" and "SKU-1 x5" in ticket["summary"]


# --- sourcing through the allocation engine (issue 3) ----------------------------------------


def with_substitutes(ctx: ReleaseContext, subs: dict[str, list[str]]) -> ReleaseContext:
    order = ctx.order.model_copy(update={"allow_substitution": True})
    skus = {k: v.model_copy(update={"substitutes": subs.get(k, [])}) for k, v in ctx.skus.items()}
    return dataclasses.replace(ctx, order=order, skus=skus)


def test_a_short_line_takes_the_first_substitute_with_stock_when_the_order_allows_it() -> None:
    base = make_ctx(
        [("SKU-1", 5)], stock=[ns("N2", 2), ns("N2", 10, sku="SKU-2"), ns("N2", 10, sku="SKU-3")], allow_split=False
    )
    ctx = with_substitutes(base, {"SKU-1": ["SKU-9", "SKU-2", "SKU-3"]})  # SKU-9 is unknown: skipped

    [p] = decide_release(ctx)

    assert p.outcome == "substituted"
    assert actions(p, "oms.substitute_line") == [{"order_id": "SO-1", "line": 1, "sku": "SKU-1", "substitute": "SKU-2"}]
    assert [(a["sku"], a["node"], a["qty"]) for a in actions(p, "oms.allocate")] == [("SKU-2", "N2", 5)]
    assert "Substituted line 1: SKU-1 → SKU-2" in p.rationale


def test_without_permission_to_substitute_the_short_order_is_held() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 2), ns("N2", 10, sku="SKU-2")], allow_split=False)
    ctx = dataclasses.replace(
        ctx, skus={k: v.model_copy(update={"substitutes": ["SKU-2"]}) for k, v in ctx.skus.items()}
    )

    [p] = decide_release(ctx)

    assert p.outcome == "held" and actions(p, "oms.substitute_line") == []


def test_a_cheaper_node_that_would_ship_late_is_avoided_and_the_evidence_says_why() -> None:
    # Ship by 16:00 today: N2 (cheapest) ships at 16:30 DPD, N1 at 15:00 DHL (its earliest carrier).
    ship_by = NOW.replace(hour=16)
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N1", 10), ns("N2", 10)], ship_by=ship_by)

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N1"): 5}
    why = p.evidence["sourcing"]["binding_constraint"]["1"]
    assert "N2 would ship late" in why and "16:30 DPD" in why
    assert actions(p, "oms.update_promise_date") == []


def test_when_only_a_late_node_has_stock_the_promise_date_moves_to_its_ship_date_plus_transit() -> None:
    ship_by = NOW.replace(hour=16)
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)], ship_by=ship_by)

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N2"): 5}
    # N2 ships today at 16:30 and the lane to "east" takes 1 day.
    assert actions(p, "oms.update_promise_date") == [
        {"order_id": "SO-1", "line": None, "promise_date": (TODAY + timedelta(days=1)).isoformat()}
    ]
    assert p.evidence["sourcing"]["late_lines"] == {"1": ["N2"]}
    assert "promise date moves" in p.rationale


# --- split only for service (policy ``split_only_for_service``) ---------------------------------


def test_a_part_release_ships_from_one_node_when_one_node_fills_what_can_ship() -> None:
    # SKU-3 is short everywhere: lines 1 and 2 ship now, line 3 is backordered. N2 has the
    # cheaper lane for line 1 but not line 2; N1 fills both on time, so both ship from N1 (one
    # parcel) rather than line 1 from N2 and line 2 from N1 for a lane saving of 3.
    ctx = make_ctx(
        [("SKU-1", 3), ("SKU-2", 2), ("SKU-3", 4)],
        stock=[ns("N2", 10), ns("N1", 10), ns("N1", 10, sku="SKU-2")],
    )

    release, backorder = decide_release(ctx)

    assert release.outcome == "partially_released" and backorder.outcome == "backordered"
    assert allocations(release) == {(1, "N1"): 3, (2, "N1"): 2}
    assert release.cost_impact == 10.0  # 5 units × 2.0 on the N1 lane
    assert release.evidence["sourcing"]["split_only_for_service"] is True

    # With the rule off, the lane saving alone splits the order over N2 and N1.
    [cheap, _] = decide_release(dataclasses.replace(ctx, split_only_for_service=False))
    assert allocations(cheap) == {(1, "N2"): 3, (2, "N1"): 2}
    assert cheap.cost_impact == 7.0


def test_an_order_splits_when_no_single_node_ships_it_on_time() -> None:
    # Ship by 17:30: N1 (15:00 DHL) and N2 (16:30 DPD) ship on time, N3 (18:00 UPS) late. Only N3
    # holds both SKUs; a split over N1 and N2 ships every line on time, so the split stands.
    ship_by = NOW.replace(hour=17, minute=30)
    ctx = make_ctx(
        [("SKU-1", 5), ("SKU-2", 2)],
        stock=[ns("N1", 10), ns("N2", 10, sku="SKU-2"), ns("N3", 10), ns("N3", 10, sku="SKU-2")],
        ship_by=ship_by,
    )

    [p] = decide_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N1"): 5, (2, "N2"): 2}
    assert p.evidence["sourcing"]["late_lines"] == {}
    assert "as a split shipment (no single node serves it as well" in p.rationale
    assert actions(p, "oms.update_promise_date") == []


def test_an_order_that_one_node_fills_on_time_is_not_split_for_a_cheaper_lane() -> None:
    # N2 (1.0) has line 1 only, N1 (2.0) has both lines: the whole order ships from N1.
    ctx = make_ctx([("SKU-1", 5), ("SKU-2", 2)], stock=[ns("N2", 10), ns("N1", 10), ns("N1", 10, sku="SKU-2")])

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N1"): 5, (2, "N1"): 2}
    assert "split shipment" not in p.rationale


def test_a_needed_split_reuses_the_orders_nodes_before_adding_one() -> None:
    # SKU-1 only at N1, SKU-3 only at N3, SKU-2 at N2 (cheapest) and N1. No node holds all three,
    # so the order splits; line 2 goes with line 1 to N1 instead of a third parcel from N2.
    ctx = make_ctx(
        [("SKU-1", 2), ("SKU-2", 2), ("SKU-3", 2)],
        stock=[ns("N1", 5), ns("N1", 5, sku="SKU-2"), ns("N2", 5, sku="SKU-2"), ns("N3", 5, sku="SKU-3")],
    )

    [p] = decide_release(ctx)

    assert allocations(p) == {(1, "N1"): 2, (2, "N1"): 2, (3, "N3"): 2}
    [cheap] = decide_release(dataclasses.replace(ctx, split_only_for_service=False))
    assert allocations(cheap) == {(1, "N1"): 2, (2, "N2"): 2, (3, "N3"): 2}


def test_the_policy_setting_reaches_the_release_specialist() -> None:
    from crews.order_release import OrderReleaseSpecialist
    from crews.supervisor import route
    from domain.models import Policy

    ctx = make_ctx(
        [("SKU-1", 3), ("SKU-2", 2), ("SKU-3", 4)],
        stock=[ns("N2", 10), ns("N1", 10), ns("N1", 10, sku="SKU-2")],
    )
    on, off = route("oms.order.created", Policy()), route("oms.order.created", Policy(split_only_for_service=False))
    assert isinstance(on, OrderReleaseSpecialist) and isinstance(off, OrderReleaseSpecialist)
    assert allocations(on.decide(ctx)[0]) == {(1, "N1"): 3, (2, "N1"): 2}
    assert allocations(off.decide(ctx)[0]) == {(1, "N2"): 3, (2, "N1"): 2}
