"""The allocation engine on small networks whose optimum is worked out by hand in each test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.allocation import generate_instance
from domain.context import BookPosition, Network, NodeStock, SkuInfo
from domain.engines.allocation import (
    AllocLine,
    NodeStockView,
    Penalties,
    certify,
    greedy,
    greedy_batch,
    optimise,
    stock_views,
)
from domain.models import Carrier, Lane, Node

NOW = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)
SHIP_BY = NOW + timedelta(hours=8)  # 16:00 today: a 14:00 cutoff is on time, tomorrow's 07:00 is late


def node(nid: str, cutoff: str = "14:00", carrier: str = "UPS") -> Node:
    return Node(id=nid, region="hub", carriers=[Carrier(code=carrier, cutoff=cutoff)])


def lane(nid: str, cost: float, region: str = "east") -> Lane:
    return Lane.model_validate({"from": nid, "to_region": region, "cost_per_unit": cost, "transit_days": 1})


def line(order: str = "O1", no: int = 1, sku: str = "A", qty: float = 5, **kw: object) -> AllocLine:
    kw.setdefault("region", "east")
    kw.setdefault("ship_by", SHIP_BY)
    return AllocLine(order_id=order, line=no, sku=sku, qty=qty, **kw)  # type: ignore[arg-type]


def view(nid: str, sku: str, usable: float, safety: float = 0.0) -> NodeStockView:
    return NodeStockView(node=nid, sku=sku, usable=usable, safety=safety)


def placed(plan: object) -> dict[tuple[str, int], dict[str, float]]:
    out: dict[tuple[str, int], dict[str, float]] = {}
    for a in plan.assignments:  # type: ignore[attr-defined]
        out.setdefault((a.order_id, a.line), {})
        out[(a.order_id, a.line)][a.node] = out[(a.order_id, a.line)].get(a.node, 0.0) + a.qty
    return out


def test_equal_cost_nodes_are_broken_by_node_id_in_both_paths() -> None:
    net = Network(nodes=[node("N2"), node("N1")], lanes=[lane("N2", 1.0), lane("N1", 1.0)])
    stock = [view("N2", "A", 10), view("N1", "A", 10)]
    for plan in (optimise([line()], stock, net, NOW), greedy([line()], stock, net, NOW)):
        assert placed(plan) == {("O1", 1): {"N1": 5.0}}
        assert plan.objective == pytest.approx(5.0)


def test_standard_order_leaves_safety_stock_and_the_evidence_says_it_was_kept_back() -> None:
    # N2 whole: 5 × 1.5 = 7.5; splitting 3 free at N1 + 2 at N2 would cost 3 + 3 + 5 (split) = 11.
    net = Network(nodes=[node("N1"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 1.5)])
    stock = [view("N1", "A", 3, safety=4), view("N2", "A", 10)]
    plan = optimise([line()], stock, net, NOW)
    assert placed(plan) == {("O1", 1): {"N2": 5.0}}
    assert not any(a.used_safety for a in plan.assignments)
    assert "N1 had 3 free + 4 safety kept back for express/gold orders" in plan.evidence[("O1", 1)]


@pytest.mark.parametrize("kw", [{"priority": "express"}, {"tier": "gold"}])
def test_express_or_gold_line_uses_safety_stock_and_the_evidence_names_it(kw: dict[str, Any]) -> None:
    net = Network(nodes=[node("N1"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 3.0)])
    stock = [view("N1", "A", 3, safety=4), view("N2", "A", 10)]
    who = "express order" if "priority" in kw else "gold customer"
    for plan in (optimise([line(**kw)], stock, net, NOW), greedy([line(**kw)], stock, net, NOW)):
        (a,) = plan.assignments
        assert (a.node, a.qty, a.used_safety, a.safety_qty) == ("N1", 5.0, True, 2.0)
        assert f"Used 2 units of safety stock at N1 ({who})" in plan.evidence[("O1", 1)]


def test_split_across_two_near_nodes_beats_one_far_node() -> None:
    # 6 + 4 units at 1/unit + one split penalty (5) = 15, against 10 × 10/unit = 100 from N3.
    net = Network(nodes=[node("N1"), node("N2"), node("N3")], lanes=[lane("N1", 1), lane("N2", 1), lane("N3", 10)])
    stock = [view("N1", "A", 6), view("N2", "A", 6), view("N3", "A", 20)]
    plan = optimise([line(qty=10)], stock, net, NOW)
    assert sorted(placed(plan)[("O1", 1)]) == ["N1", "N2"]
    assert plan.cost.split == pytest.approx(5.0)
    assert plan.objective == pytest.approx(15.0)
    assert plan.stats.splits == 1
    assert "Split across N1, N2" in plan.evidence[("O1", 1)]


def test_a_late_node_is_avoided_when_an_on_time_node_has_stock() -> None:
    # N1 is cheaper (5) but its next UPS cutoff is tomorrow 07:00, after ship-by: 5 + 25 > 10 at N2.
    net = Network(nodes=[node("N1", cutoff="07:00"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 2.0)])
    stock = [view("N1", "A", 10), view("N2", "A", 10)]
    for plan in (optimise([line()], stock, net, NOW), greedy([line()], stock, net, NOW)):
        assert placed(plan) == {("O1", 1): {"N2": 5.0}}
        assert plan.cost.late == 0
        assert "N1 would ship late for the 07:00 UPS cutoff" in plan.evidence[("O1", 1)]


def test_the_late_node_is_used_and_flagged_when_it_is_the_only_stock() -> None:
    net = Network(nodes=[node("N1", cutoff="07:00"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 2.0)])
    plan = optimise([line()], [view("N1", "A", 10)], net, NOW)
    (a,) = plan.assignments
    assert (a.node, a.late) == ("N1", True)
    assert plan.cost.late == pytest.approx(25.0)
    assert "late: the next cutoff at N1 (07:00 UPS) is after ship-by" in plan.evidence[("O1", 1)]


def test_order_carrier_cutoff_is_used_when_the_node_offers_it() -> None:
    # N1 offers DHL at 15:00 (on time) and UPS tomorrow 07:00 (late); the order ships DHL.
    n1 = Node(
        id="N1", region="hub", carriers=[Carrier(code="UPS", cutoff="07:00"), Carrier(code="DHL", cutoff="15:00")]
    )
    net = Network(nodes=[n1], lanes=[lane("N1", 1.0)])
    assert optimise([line(carrier="DHL")], [view("N1", "A", 9)], net, NOW).assignments[0].late is False
    assert optimise([line(carrier="UPS")], [view("N1", "A", 9)], net, NOW).assignments[0].late is True


def test_substitution_takes_the_first_listed_substitute_that_has_stock() -> None:
    net = Network(nodes=[node("N1")], lanes=[lane("N1", 1.0)])
    stock = [view("N1", "C", 10), view("N1", "D", 10)]
    ln = line(qty=4, allow_substitution=True, substitutes=["B", "C", "D"])
    for plan in (optimise([ln], stock, net, NOW), greedy([ln], stock, net, NOW)):
        assert plan.substitutions == {("O1", 1): "C"}
        assert [(a.sku, a.qty) for a in plan.assignments] == [("C", 4.0)]
        # C is the second listed substitute: 4 × 1/unit shipping + 4 × 2 × 1.0 substitution.
        assert plan.cost.substitution == pytest.approx(8.0)
        assert plan.objective == pytest.approx(12.0)
        assert "Substituted C (substitute #2) for A" in plan.evidence[("O1", 1)]
        assert plan.substituted_by("O1", 1) == "C"


def test_no_substitution_when_the_order_does_not_allow_it() -> None:
    net = Network(nodes=[node("N1")], lanes=[lane("N1", 1.0)])
    plan = optimise([line(qty=4, substitutes=["B"])], [view("N1", "B", 10)], net, NOW)
    assert plan.substitutions == {}
    assert plan.unfilled == {("O1", 1): 4.0}


def test_an_order_that_may_not_split_is_repaired_onto_one_node() -> None:
    # Flow optimum: A from N1, B from N2 (10). One node must serve both: N3 at 3/unit (30).
    net = Network(nodes=[node("N1"), node("N2"), node("N3")], lanes=[lane("N1", 1), lane("N2", 1), lane("N3", 3)])
    stock = [view("N1", "A", 5), view("N2", "B", 5), view("N3", "A", 5), view("N3", "B", 5)]
    lines = [line(no=1, sku="A", allow_split=False), line(no=2, sku="B", allow_split=False)]
    plan = optimise(lines, stock, net, NOW)
    assert {a.node for a in plan.assignments} == {"N3"}
    assert plan.objective == pytest.approx(30.0)
    assert plan.stats.lower_bound == pytest.approx(10.0)
    assert plan.stats.repaired >= 1
    assert {a.node for a in greedy(lines, stock, net, NOW).assignments} == {"N3"}


def test_an_unsplittable_order_leaves_lines_unfilled_rather_than_split() -> None:
    net = Network(nodes=[node("N1"), node("N2")], lanes=[lane("N1", 1), lane("N2", 1)])
    stock = [view("N1", "A", 5), view("N2", "B", 5)]
    lines = [line(no=1, sku="A", allow_split=False), line(no=2, sku="B", allow_split=False)]
    for plan in (optimise(lines, stock, net, NOW), greedy(lines, stock, net, NOW)):
        assert len({a.node for a in plan.assignments}) == 1
        assert sum(plan.unfilled.values()) == pytest.approx(5.0)


def test_scarce_stock_goes_to_the_express_line_and_the_rest_is_unfilled() -> None:
    net = Network(nodes=[node("N1")], lanes=[lane("N1", 1.0)])
    lines = [line("S", qty=5), line("X", qty=5, priority="express")]
    plan = optimise(lines, [view("N1", "A", 6)], net, NOW)
    assert placed(plan) == {("X", 1): {"N1": 5.0}, ("S", 1): {"N1": 1.0}}
    assert plan.unfilled == {("S", 1): 4.0}
    assert plan.cost.unfilled == pytest.approx(4000.0)
    assert "4 units unfilled" in plan.evidence[("S", 1)]


def test_nothing_is_allocated_when_no_node_has_a_lane_to_the_region() -> None:
    net = Network(nodes=[node("N1")], lanes=[lane("N1", 1.0, region="west")])
    plan = optimise([line()], [view("N1", "A", 10)], net, NOW)
    assert plan.assignments == []
    assert plan.unfilled == {("O1", 1): 5.0}
    assert "no node has a lane to region east" in plan.evidence[("O1", 1)]


def test_greedy_serves_the_whole_order_from_one_node_when_one_node_can() -> None:
    # Per line, A is cheapest at N1; but N2 has both lines, so the order ships from one node.
    net = Network(nodes=[node("N1"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 2.0)])
    stock = [view("N1", "A", 10), view("N2", "A", 10), view("N2", "B", 10)]
    plan = greedy([line(no=1, sku="A"), line(no=2, sku="B")], stock, net, NOW)
    assert {a.node for a in plan.assignments} == {"N2"}


def test_the_optimiser_beats_greedy_when_greedy_takes_the_only_stock_another_order_can_reach() -> None:
    # Greedy serves the express order X first from N1 (cheapest for it), so Y (west, only N1
    # reaches it) goes unfilled: 5 + 5 × 1000. The optimiser sends X to N2: 7.5 + 5 = 12.5.
    net = Network(
        nodes=[node("N1"), node("N2")],
        lanes=[lane("N1", 1.0), lane("N2", 1.5), lane("N1", 1.0, region="west")],
    )
    stock = [view("N1", "A", 5), view("N2", "A", 5)]
    lines = [line("X", priority="express"), line("Y", region="west")]
    best = optimise(lines, stock, net, NOW)
    fast = greedy_batch(lines, stock, net, NOW)
    assert best.objective == pytest.approx(12.5)
    assert fast.objective == pytest.approx(5005.0)
    assert placed(best) == {("X", 1): {"N2": 5.0}, ("Y", 1): {"N1": 5.0}}


def test_greedy_refuses_lines_of_several_orders() -> None:
    net = Network(nodes=[node("N1")], lanes=[lane("N1", 1.0)])
    with pytest.raises(ValueError, match="one order"):
        greedy([line("O1"), line("O2")], [view("N1", "A", 10)], net, NOW)


def test_a_line_quantity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        line(qty=0)


def test_fractional_quantities_are_scaled_and_never_oversold() -> None:
    net = Network(nodes=[node("N1")], lanes=[lane("N1", 1.0)])
    plan = optimise([line("O1", qty=1.25), line("O2", qty=1.5)], [view("N1", "A", 2.5)], net, NOW)
    assert sum(a.qty for a in plan.assignments) == pytest.approx(2.5)
    assert sum(plan.unfilled.values()) == pytest.approx(0.25)


def test_stock_views_deduct_unmirrored_erp_blocks_and_split_off_safety_stock() -> None:
    # pickable 10; ERP blocks 4 of which the WMS locks 1, so 3 more are unusable → 7 usable;
    # safety stock 2 of those is only for express/gold.
    ns = NodeStock(node="N1", sku="A", on_hand=12, locked=1, allocated=1, pickable=10)
    (v,) = stock_views(
        [ns], [BookPosition(node="N1", sku="A", qty=12, blocked=4)], [SkuInfo(id="A", safety_stock={"N1": 2})]
    )
    assert (v.usable, v.safety) == (5.0, 2.0)
    (w,) = stock_views([ns], [], [SkuInfo(id="A", safety_stock={"N1": 50})])
    assert (w.usable, w.safety) == (0.0, 10.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_flow_optimum_equals_the_glop_optimum_on_random_instances(seed: int) -> None:
    inst = generate_instance(lines=300, nodes=8, seed=seed)
    pen = Penalties()
    plan = optimise(inst.lines, inst.stock, inst.network, inst.now, pen)
    lp = certify(inst.lines, inst.stock, inst.network, inst.now, pen)
    assert plan.stats.lower_bound is not None
    assert plan.stats.lower_bound == pytest.approx(lp, rel=1e-6)
    assert plan.objective >= lp - 1e-6


# --- split only for service (the policy's rule) -------------------------------------------------

SERVICE = Penalties(split_only_for_service=True)


def test_the_batch_does_not_split_an_order_one_node_fills_on_time_for_a_cheaper_lane() -> None:
    # N1 (1.0) has A only, N2 (2.0) has A and B, both ship on time. The flow optimum splits the
    # order: A from N1, B from N2 = 5 + 10 = 15, against 20 for the whole order from N2.
    net = Network(nodes=[node("N1"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 2.0)])
    stock = [view("N1", "A", 10), view("N2", "A", 10), view("N2", "B", 10)]
    lines = [line("O1", 1, "A"), line("O1", 2, "B")]

    cheap = optimise(lines, stock, net, NOW)
    assert placed(cheap) == {("O1", 1): {"N1": 5.0}, ("O1", 2): {"N2": 5.0}}

    plan = optimise(lines, stock, net, NOW, SERVICE)
    assert placed(plan) == {("O1", 1): {"N2": 5.0}, ("O1", 2): {"N2": 5.0}}
    assert plan.objective == pytest.approx(20.0)
    assert plan.stats.solver.endswith("+one-node") and plan.stats.repaired >= 1
    # The real-time path agrees: one node fills the order on time, so one node ships it.
    for pen in (Penalties(), SERVICE):
        assert placed(greedy(lines, stock, net, NOW, pen)) == placed(plan)


def test_an_order_no_single_node_ships_on_time_is_split_in_both_paths() -> None:
    # N3 holds A and B but its 07:00 cutoff is tomorrow's, after ship-by: late. N1 has A and N2
    # has B, both on time, so the split buys service and stands.
    net = Network(
        nodes=[node("N1"), node("N2"), node("N3", cutoff="07:00")],
        lanes=[lane("N1", 2.0), lane("N2", 2.0), lane("N3", 1.0)],
    )
    stock = [view("N1", "A", 10), view("N2", "B", 10), view("N3", "A", 10), view("N3", "B", 10)]
    lines = [line("O1", 1, "A"), line("O1", 2, "B")]
    for plan in (optimise(lines, stock, net, NOW, SERVICE), greedy(lines, stock, net, NOW, SERVICE)):
        assert placed(plan) == {("O1", 1): {"N1": 5.0}, ("O1", 2): {"N2": 5.0}}
        assert not any(a.late for a in plan.assignments)


def test_a_short_order_keeps_its_split_when_the_split_ships_more_units() -> None:
    # A needs 5: N1 has 3, N2 has 2 and B. One node would leave more of A unfilled, so the split
    # (3 + 2 of A, B from N2) stands.
    net = Network(nodes=[node("N1"), node("N2")], lanes=[lane("N1", 1.0), lane("N2", 2.0)])
    stock = [view("N1", "A", 3), view("N2", "A", 2), view("N2", "B", 10)]
    lines = [line("O1", 1, "A"), line("O1", 2, "B")]
    for plan in (optimise(lines, stock, net, NOW, SERVICE), greedy(lines, stock, net, NOW, SERVICE)):
        assert placed(plan) == {("O1", 1): {"N1": 3.0, "N2": 2.0}, ("O1", 2): {"N2": 5.0}}
        assert plan.unfilled == {}


def test_greedy_reuses_the_orders_nodes_unless_another_saves_more_than_a_parcel() -> None:
    # A only at N2, C only at N3, B at N1 (cheapest) and N2. With the rule, 4 units of B ride with
    # A (2 parcels, 4 more in lanes: less than the split penalty of 5 for the parcel saved);
    # 10 units of B save 10 on N1's lane, more than a parcel, so B goes to N1 (3 parcels).
    net = Network(nodes=[node("N1"), node("N2"), node("N3")], lanes=[lane("N1", 1.0), lane("N2", 2.0), lane("N3", 3.0)])
    stock = [view("N1", "B", 10), view("N2", "A", 10), view("N2", "B", 10), view("N3", "C", 10)]
    lines = [line("O1", 1, "A"), line("O1", 2, "B", qty=4), line("O1", 3, "C")]
    assert placed(greedy(lines, stock, net, NOW, SERVICE)) == {
        ("O1", 1): {"N2": 5.0},
        ("O1", 2): {"N2": 4.0},
        ("O1", 3): {"N3": 5.0},
    }
    assert placed(greedy(lines, stock, net, NOW))[("O1", 2)] == {"N1": 4.0}
    more = [lines[0], line("O1", 2, "B", qty=10), lines[2]]
    assert placed(greedy(more, stock, net, NOW, SERVICE))[("O1", 2)] == {"N1": 10.0}


def test_a_split_puts_each_line_on_the_cheapest_of_the_nodes_it_uses() -> None:
    # C only at N3; B at N1 and N3; A at N1 and N2; D at N4 (cheapest) and N1. Cheapest per line
    # uses N3, N1 and N4. Fewer nodes: C fixes N3, B could ride with it, but once A brings in N1,
    # B and D both go to N1, the cheaper of the two: 2 parcels for 2.5 more in lanes.
    net = Network(
        nodes=[node("N1"), node("N2"), node("N3"), node("N4")],
        lanes=[lane("N1", 1.0), lane("N2", 2.0), lane("N3", 3.0), lane("N4", 0.5)],
    )
    stock = [
        view("N3", "C", 10),
        view("N1", "B", 10),
        view("N3", "B", 10),
        view("N1", "A", 10),
        view("N2", "A", 10),
        view("N4", "D", 10),
        view("N1", "D", 10),
    ]
    lines = [line("O1", 1, "C"), line("O1", 2, "B"), line("O1", 3, "A"), line("O1", 4, "D")]
    assert placed(greedy(lines, stock, net, NOW, SERVICE)) == {
        ("O1", 1): {"N3": 5.0},
        ("O1", 2): {"N1": 5.0},
        ("O1", 3): {"N1": 5.0},
        ("O1", 4): {"N1": 5.0},
    }
    assert placed(greedy(lines, stock, net, NOW))[("O1", 4)] == {"N4": 5.0}
