"""The exact allocation MIP: known optima on hand-computed batches, a proven bound no plan beats,
rule-keeping solutions, and the component split of a batch."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings

from bench.allocation import generate_instance
from domain.context import Network
from domain.engines.allocation import AllocLine, NodeStockView, optimise
from domain.engines.allocation_exact import ExactResult, component_stock, components, exact, plan_cost
from domain.models import Carrier, Lane, Node
from tests.unit.test_allocation_properties import _check_feasible, instances

NOW = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)
SHIP_BY = NOW + timedelta(hours=12)


def node(nid: str, cutoff: str = "14:00") -> Node:
    return Node(id=nid, region="hub", carriers=[Carrier(code="UPS", cutoff=cutoff)])


def lane(nid: str, cost: float) -> Lane:
    return Lane.model_validate({"from": nid, "to_region": "east", "cost_per_unit": cost, "transit_days": 1})


def line(order: str, no: int, sku: str, qty: float, **kw: object) -> AllocLine:
    base: dict[str, object] = {"region": "east", "carrier": "UPS", "ship_by": SHIP_BY}
    base.update(kw)
    return AllocLine(order_id=order, line=no, sku=sku, qty=qty, **base)  # type: ignore[arg-type]


def check_rules(result: ExactResult, lines: list[AllocLine], stock: list[NodeStockView]) -> None:
    """The exact plan keeps every rule: stock, the safety reserve, one node per unsplittable order."""
    by_key = {ln.key: ln for ln in lines}
    free = {(v.sku, v.node): v.usable for v in stock}
    total = {(v.sku, v.node): v.usable + v.safety for v in stock}
    std: dict[tuple[str, str], float] = defaultdict(float)
    used: dict[tuple[str, str], float] = defaultdict(float)
    served: dict[tuple[str, int], float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for order, no, nid, sku, qty in result.assignments:
        ln = by_key[(order, no)]
        assert sku == ln.sku or (ln.allow_substitution and sku in ln.substitutes)
        used[(sku, nid)] += qty
        if not ln.privileged:
            std[(sku, nid)] += qty
        served[ln.key] += qty
        nodes[order].add(nid)
    assert all(q <= total.get(k, 0.0) + 1e-6 for k, q in used.items())
    assert all(q <= free.get(k, 0.0) + 1e-6 for k, q in std.items())
    for ln in lines:
        assert served[ln.key] <= ln.qty + 1e-6
        if not ln.allow_split:
            assert len(nodes[ln.order_id]) <= 1


def test_a_one_node_order_and_a_split_order_reach_the_hand_computed_optimum() -> None:
    # O1 must ship whole (2 A + 1 B); O2 wants 3 A and may split. N0's lane costs 1, N1's 2.
    # O1 at N0 (3) leaves O2 the 3 A at N1 (6): 9. O1 at N1 (6) leaves O2 2 A at N0 and 1 A at
    # N1 (2 + 2) plus a split (5): 15. Nothing is late (both cutoffs are before ship-by).
    net = Network(nodes=[node("N0"), node("N1")], lanes=[lane("N0", 1.0), lane("N1", 2.0)])
    stock = [
        NodeStockView("N0", "A", 2.0),
        NodeStockView("N0", "B", 1.0),
        NodeStockView("N1", "A", 3.0),
        NodeStockView("N1", "B", 1.0),
    ]
    lines = [
        line("O1", 1, "A", 2, allow_split=False),
        line("O1", 2, "B", 1, allow_split=False),
        line("O2", 1, "A", 3),
    ]
    result = exact(lines, stock, net, NOW, time_limit_s=10)
    assert result.status == "OPTIMAL"
    assert result.objective is not None and abs(result.objective - 9.0) < 1e-9
    assert abs(result.bound - 9.0) < 1e-6
    assert sorted(result.assignments) == [
        ("O1", 1, "N0", "A", 2.0),
        ("O1", 2, "N0", "B", 1.0),
        ("O2", 1, "N1", "A", 3.0),
    ]
    plan = optimise(lines, stock, net, NOW)
    assert plan.objective >= result.objective - 1e-9


def test_safety_stock_and_lateness_are_priced_as_the_engine_prices_them() -> None:
    # N0 (lane 1) ships late: its next cutoff (07:00 tomorrow) is after ship-by, so each unit from
    # it costs 25 / qty more. N0 holds 1 free A + 2 safety A; N1 (lane 2, on time) holds 1 free A.
    # The express line takes N0's safety stock: 2 × (1 + 12.5) = 27. The standard line may not:
    # 1 free A at N0 (13.5) + 1 at N1 (2) + a split (5) = 20.5. Optimum 47.5.
    net = Network(nodes=[node("N0", cutoff="07:00"), node("N1")], lanes=[lane("N0", 1.0), lane("N1", 2.0)])
    stock = [NodeStockView("N0", "A", 1.0, safety=2.0), NodeStockView("N1", "A", 1.0)]
    lines = [line("S", 1, "A", 2), line("E", 1, "A", 2, priority="express")]
    result = exact(lines, stock, net, NOW, time_limit_s=10)
    assert result.status == "OPTIMAL"
    assert result.objective is not None and abs(result.objective - 47.5) < 1e-9
    check_rules(result, lines, stock)
    plan = optimise(lines, stock, net, NOW)
    assert plan.objective >= result.objective - 1e-9
    assert abs(plan_cost(plan, lines, stock, net, NOW) - plan.objective) < 1e-9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_no_plan_costs_less_than_the_proven_optimum_and_the_exact_plan_keeps_every_rule(
    inst: tuple[list[AllocLine], list[NodeStockView], Network],
) -> None:
    lines, stock, network = inst
    plan = optimise(lines, stock, network, NOW)
    _check_feasible(plan, lines, stock)
    result = exact(lines, stock, network, NOW, time_limit_s=10, hint=plan)
    assert result.status == "OPTIMAL"
    assert result.objective is not None
    check_rules(result, lines, stock)
    assert result.bound <= result.objective + 1e-9
    assert plan.objective >= result.bound - 1e-6 * max(1.0, result.bound)
    # The plan's cost recomputed line by line is its objective (what the bench prices per component).
    assert abs(plan_cost(plan, lines, stock, network, NOW) - plan.objective) <= 1e-6 * max(1.0, plan.objective)


def test_the_component_split_is_a_partition_of_independent_sub_batches() -> None:
    inst = generate_instance(lines=400, nodes=10, seed=3)
    parts = components(inst.lines)
    flat = sorted(i for c in parts for i in c)
    assert flat == list(range(len(inst.lines)))  # every line exactly once
    assert len(parts) > 1
    comp_of = {i: k for k, c in enumerate(parts) for i in c}
    sku_comp: dict[str, int] = {}
    for i, ln in enumerate(inst.lines):
        for sku in [ln.sku, *(ln.substitutes if ln.allow_substitution else [])]:
            assert sku_comp.setdefault(sku, comp_of[i]) == comp_of[i]  # no SKU in two components
    for i, ln in enumerate(inst.lines):
        if not ln.allow_split:
            assert all(comp_of[j] == comp_of[i] for j, o in enumerate(inst.lines) if o.order_id == ln.order_id)
    # A component's stock is only its own SKUs' and the component solves on its own.
    small = min(parts, key=len)
    sub = [inst.lines[i] for i in small]
    views = component_stock(sub, inst.stock)
    assert {v.sku for v in views} <= set(sku_comp) and all(sku_comp[v.sku] == comp_of[small[0]] for v in views)
    assert exact(sub, views, inst.network, inst.now, time_limit_s=10).status == "OPTIMAL"
