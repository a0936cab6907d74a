"""Property tests: on random small networks the allocation engine never oversells, accounts for
every unit, respects the split rules (one node for an unsplittable order; with the policy's
split-only-for-service rule, a split only when no single node serves the order as well), and the
optimiser never costs more than the greedy path."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.context import Network
from domain.engines.allocation import (
    AllocationPlan,
    AllocLine,
    NodeStockView,
    Penalties,
    certify,
    greedy,
    greedy_batch,
    optimise,
)
from domain.models import Carrier, Lane, Node

NOW = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)
SKUS = ["A", "B", "C"]
REGIONS = ["east", "west"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[AllocLine], list[NodeStockView], Network]:
    n_nodes = draw(st.integers(1, 4))
    nodes, lanes, stock = [], [], []
    for k in range(n_nodes):
        nid = f"N{k}"
        cutoff = draw(st.sampled_from(["07:00", "12:00", "18:00"]))
        nodes.append(
            Node(id=nid, region="hub", carriers=[Carrier(code=draw(st.sampled_from(["UPS", "DHL"])), cutoff=cutoff)])
        )
        for region in REGIONS:
            if draw(st.booleans()):
                cost = draw(st.integers(1, 5))
                lanes.append(
                    Lane.model_validate({"from": nid, "to_region": region, "cost_per_unit": cost, "transit_days": 1})
                )
        for sku in SKUS:
            usable = draw(st.integers(0, 6))
            safety = draw(st.integers(0, 3))
            if usable or safety:
                stock.append(NodeStockView(node=nid, sku=sku, usable=float(usable), safety=float(safety)))
    lines = []
    for o in range(draw(st.integers(1, 3))):
        region = draw(st.sampled_from(REGIONS))
        express = draw(st.booleans())
        gold = draw(st.booleans())
        split = draw(st.booleans())
        subst = draw(st.booleans())
        carrier = draw(st.sampled_from(["UPS", "DHL", None]))
        ship_by = NOW + timedelta(hours=draw(st.integers(1, 30)))
        for no in range(1, draw(st.integers(1, 3)) + 1):
            sku = draw(st.sampled_from(SKUS))
            lines.append(
                AllocLine(
                    order_id=f"O{o}",
                    line=no,
                    sku=sku,
                    qty=float(draw(st.integers(1, 6))),
                    region=region,
                    priority="express" if express else "standard",
                    tier="gold" if gold else "standard",
                    ship_by=ship_by,
                    carrier=carrier,
                    allow_split=split,
                    allow_substitution=subst,
                    substitutes=draw(st.lists(st.sampled_from([s for s in SKUS if s != sku]), max_size=2, unique=True)),
                )
            )
    return lines, stock, Network(nodes=nodes, lanes=lanes)


def _check_feasible(plan: AllocationPlan, lines: list[AllocLine], stock: list[NodeStockView]) -> None:
    free: dict[tuple[str, str], float] = defaultdict(float)
    safety: dict[tuple[str, str], float] = defaultdict(float)
    for v in stock:
        free[(v.sku, v.node)] += v.usable
        safety[(v.sku, v.node)] += v.safety
    by_key = {ln.key: ln for ln in lines}
    took_free: dict[tuple[str, str], float] = defaultdict(float)
    took_safety: dict[tuple[str, str], float] = defaultdict(float)
    served: dict[tuple[str, int], float] = defaultdict(float)
    nodes_of_order: dict[str, set[str]] = defaultdict(set)
    for a in plan.assignments:
        ln = by_key[(a.order_id, a.line)]
        assert a.qty > 0
        assert a.sku == ln.sku or (ln.allow_substitution and a.sku in ln.substitutes)
        if a.safety_qty > 0:
            assert ln.privileged, f"standard line {ln.key} took safety stock"
        took_free[(a.sku, a.node)] += a.qty - a.safety_qty
        took_safety[(a.sku, a.node)] += a.safety_qty
        served[ln.key] += a.qty
        nodes_of_order[a.order_id].add(a.node)
    for key, qty in took_free.items():
        assert qty <= free[key] + 1e-6, f"oversold free stock at {key}"
    for key, qty in took_safety.items():
        assert qty <= safety[key] + 1e-6, f"oversold safety stock at {key}"
    for ln in lines:
        assert abs(served[ln.key] + plan.unfilled.get(ln.key, 0.0) - ln.qty) <= 1e-6
        if not ln.allow_split:
            assert len(nodes_of_order[ln.order_id]) <= 1
        assert ln.key in plan.evidence


@SETTINGS
@given(instances())
def test_no_plan_oversells_or_loses_units_or_splits_an_unsplittable_order(
    inst: tuple[list[AllocLine], list[NodeStockView], Network],
) -> None:
    lines, stock, network = inst
    _check_feasible(optimise(lines, stock, network, NOW), lines, stock)
    _check_feasible(greedy_batch(lines, stock, network, NOW), lines, stock)


@SETTINGS
@given(instances())
def test_the_optimiser_never_costs_more_than_greedy_and_its_bound_is_the_lp_optimum(
    inst: tuple[list[AllocLine], list[NodeStockView], Network],
) -> None:
    lines, stock, network = inst
    best = optimise(lines, stock, network, NOW)
    fast = greedy_batch(lines, stock, network, NOW)
    assert best.objective <= fast.objective + 1e-6
    assert best.stats.lower_bound is not None
    assert best.stats.lower_bound <= best.objective + 1e-6
    lp = certify(lines, stock, network, NOW)
    assert abs(best.stats.lower_bound - lp) <= 1e-6 * max(1.0, abs(lp))


SERVICE = Penalties(split_only_for_service=True)


def _service(plan: AllocationPlan, lines: list[AllocLine]) -> tuple[float, int, int]:
    """Units unfilled, late lines, substituted lines: what the customer gets (fewer is better)."""
    late = {(a.order_id, a.line) for a in plan.assignments if a.late}
    subs = {
        (a.order_id, a.line)
        for a in plan.assignments
        if a.sku != next(ln.sku for ln in lines if ln.key == (a.order_id, a.line))
    }
    return (sum(plan.unfilled.values()), len(late), len(subs))


@SETTINGS
@given(instances())
def test_with_the_split_rule_a_split_order_has_no_single_node_that_serves_it_as_well(
    inst: tuple[list[AllocLine], list[NodeStockView], Network],
) -> None:
    lines, stock, network = inst
    _check_feasible(optimise(lines, stock, network, NOW, SERVICE), lines, stock)
    _check_feasible(greedy_batch(lines, stock, network, NOW, SERVICE), lines, stock)
    for order in sorted({ln.order_id for ln in lines}):
        mine = [ln for ln in lines if ln.order_id == order]
        plan = greedy(mine, stock, network, NOW, SERVICE)
        if len({a.node for a in plan.assignments}) <= 1:
            continue
        got = _service(plan, mine)
        # Each node alone (its stock only): the order served from that one node.
        for n in sorted({v.node for v in stock}):
            alone = greedy(mine, [v for v in stock if v.node == n], network, NOW, SERVICE)
            one = _service(alone, mine)
            as_good = one[0] <= got[0] + 1e-6 and one[1] <= got[1] and one[2] <= got[2]
            assert not as_good, f"{order} split ({got}) though {n} alone serves it {one}"
