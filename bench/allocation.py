"""Allocation benchmark: batch optimiser vs a second solver, and the greedy real-time path.

``run_allocation_bench`` generates a random network with ``random.Random(seed)`` and measures,
in one run: the optimiser's wall time and objective, the GLOP certificate of the optimum, the
greedy path's per-order latency and the greedy plan's cost gap to the optimiser. Every number
returned is measured here; nothing is hard-coded.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.context import Network
from domain.engines.allocation import (
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
CARRIERS = ("UPS", "FEDX_GROUND", "DHL", "DPD")


@dataclass(frozen=True)
class AllocationInstance:
    lines: list[AllocLine]
    stock: list[NodeStockView]
    network: Network
    now: datetime


def generate_instance(lines: int = 10_000, nodes: int = 50, seed: int = 1) -> AllocationInstance:
    """A random network: regions, lanes, carriers with cutoffs, Pareto SKU demand, scarce SKUs."""
    rng = random.Random(seed)
    regions = [f"R{r}" for r in range(max(2, nodes // 6))]
    node_list: list[Node] = []
    lanes: list[Lane] = []
    for k in range(nodes):
        nid = f"N{k:03d}"
        home = rng.choice(regions)
        carriers = [
            Carrier(code=c, cutoff=f"{rng.randint(11, 19):02d}:{rng.choice((0, 30)):02d}")
            for c in rng.sample(CARRIERS, rng.randint(1, 2))
        ]
        node_list.append(Node(id=nid, type="warehouse" if k < nodes // 5 else "store", region=home, carriers=carriers))
        for region in regions:
            if region == home:
                cost, days = rng.uniform(0.4, 1.5), 1
            elif rng.random() < 0.8:
                cost, days = rng.uniform(1.5, 6.0), rng.randint(2, 4)
            else:
                continue
            lanes.append(
                Lane.model_validate(
                    {"from": nid, "to_region": region, "cost_per_unit": round(cost, 2), "transit_days": days}
                )
            )
    n_skus = max(20, lines // 25)
    skus = [f"SKU{s:05d}" for s in range(n_skus)]
    weights = [rng.paretovariate(1.2) for _ in skus]
    substitutes = {s: rng.sample(skus, rng.randint(1, 2)) if rng.random() < 0.4 else [] for s in skus}

    out: list[AllocLine] = []
    order_no = 0
    while len(out) < lines:
        order_no += 1
        n_lines = min(lines - len(out), rng.randint(1, 5))
        region = rng.choice(regions)
        express = rng.random() < 0.15
        gold = rng.random() < 0.1
        created = NOW - timedelta(minutes=rng.randint(0, 600))
        ship_by = NOW + timedelta(minutes=rng.randint(120, 2400))
        carrier = rng.choice((*CARRIERS, None))
        split = rng.random() < 0.8
        subst = rng.random() < 0.3
        for ln_no, sku in enumerate(rng.choices(skus, weights=weights, k=n_lines), start=1):
            out.append(
                AllocLine(
                    order_id=f"O{order_no:06d}",
                    line=ln_no,
                    sku=sku,
                    qty=float(rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 10))),
                    region=region,
                    priority="express" if express else "standard",
                    tier="gold" if gold else "standard",
                    created=created,
                    ship_by=ship_by,
                    carrier=carrier,
                    allow_split=split,
                    allow_substitution=subst,
                    substitutes=list(substitutes[sku]),
                )
            )
    demand: dict[str, float] = defaultdict(float)
    for ln in out:
        demand[ln.sku] += ln.qty
    stock: list[NodeStockView] = []
    ids = [n.id for n in node_list]
    for sku in skus:
        scarce = rng.random() < 0.2
        total = max(2.0, demand[sku] * (rng.uniform(0.3, 0.9) if scarce else rng.uniform(1.2, 2.0)))
        holders = rng.sample(ids, rng.randint(max(1, nodes // 5), max(1, (nodes * 7) // 10)))
        shares = [rng.random() + 0.1 for _ in holders]
        scale = total / sum(shares)
        for node, share in zip(holders, shares, strict=True):
            qty = float(round(share * scale))
            if qty <= 0:
                continue
            safety = float(round(qty * rng.uniform(0.1, 0.25))) if rng.random() < 0.3 else 0.0
            stock.append(NodeStockView(node=node, sku=sku, usable=qty - safety, safety=safety))
    network = Network(nodes=node_list, lanes=lanes)
    return AllocationInstance(lines=out, stock=stock, network=network, now=NOW)


def _percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


def run_allocation_bench(lines: int = 10_000, nodes: int = 50, seed: int = 1) -> dict[str, float | int | str]:
    """Measure optimiser, certificate and greedy path on one random instance; a flat dict of numbers."""
    gen_start = time.perf_counter()
    inst = generate_instance(lines, nodes, seed)
    gen_ms = (time.perf_counter() - gen_start) * 1000
    pen = Penalties()

    walls: list[float] = []
    phases: list[dict[str, float]] = []
    plan = None
    for _ in range(3):
        started = time.perf_counter()
        plan = optimise(inst.lines, inst.stock, inst.network, inst.now, pen)
        walls.append((time.perf_counter() - started) * 1000)
        phases.append(plan.stats.phases_ms)
    assert plan is not None
    # Phase breakdown (build / solve / repair / greedy / evidence) of the median run.
    median_run = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    breakdown = {f"optimise_{k}_ms": round(v, 1) for k, v in sorted(phases[median_run].items())}
    flow_objective = plan.stats.lower_bound if plan.stats.lower_bound is not None else float("nan")

    started = time.perf_counter()
    lp_objective = certify(inst.lines, inst.stock, inst.network, inst.now, pen)
    certify_ms = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    batch = greedy_batch(inst.lines, inst.stock, inst.network, inst.now, pen)
    greedy_batch_ms = (time.perf_counter() - started) * 1000

    # Real-time path: one order at a time, with the stock views of that order's SKUs (what the
    # real-time caller fetches), timed per call.
    by_order: dict[str, list[AllocLine]] = defaultdict(list)
    for ln in inst.lines:
        by_order[ln.order_id].append(ln)
    by_sku: dict[str, list[NodeStockView]] = defaultdict(list)
    for v in inst.stock:
        by_sku[v.sku].append(v)
    sample = random.Random(seed + 1).sample(sorted(by_order), min(500, len(by_order)))
    latencies: list[float] = []
    for oid in sample:
        order_lines = by_order[oid]
        wanted = {ln.sku for ln in order_lines} | {s for ln in order_lines for s in ln.substitutes}
        views = [v for sku in sorted(wanted) for v in by_sku.get(sku, [])]
        started = time.perf_counter()
        greedy(order_lines, views, inst.network, inst.now, pen)
        latencies.append((time.perf_counter() - started) * 1000)

    filled = sum(a.qty for a in plan.assignments)
    demand = sum(ln.qty for ln in inst.lines)
    return {
        "lines": len(inst.lines),
        "orders": len(by_order),
        "nodes": nodes,
        "skus_stocked": len({v.sku for v in inst.stock}),
        "stock_views": len(inst.stock),
        "seed": seed,
        "generate_ms": round(gen_ms, 1),
        "optimise_ms_median": round(statistics.median(walls), 1),
        "optimise_ms_min": round(min(walls), 1),
        **breakdown,
        "optimise_solver": plan.stats.solver,
        "optimise_arcs": plan.stats.arcs,
        "optimise_graph_nodes": plan.stats.nodes,
        "optimise_objective": round(plan.objective, 4),
        "optimise_flow_objective": round(flow_objective, 4),
        "optimise_splits": plan.stats.splits,
        "optimise_repaired": plan.stats.repaired,
        "optimise_fill_rate": round(filled / demand, 4),
        "optimise_late_lines": len({(a.order_id, a.line) for a in plan.assignments if a.late}),
        "optimise_substituted_lines": len(plan.substitutions),
        "certify_ms": round(certify_ms, 1),
        "certify_objective": round(lp_objective, 4),
        "flow_vs_certify_rel_gap": abs(flow_objective - lp_objective) / max(1.0, abs(lp_objective)),
        "plan_vs_lower_bound_gap_pct": round(100 * (plan.objective - flow_objective) / max(1.0, flow_objective), 4),
        "greedy_orders_timed": len(latencies),
        "greedy_p50_ms": round(_percentile(latencies, 50), 4),
        "greedy_p99_ms": round(_percentile(latencies, 99), 4),
        "greedy_max_ms": round(max(latencies), 4),
        "greedy_batch_ms": round(greedy_batch_ms, 1),
        "greedy_batch_objective": round(batch.objective, 4),
        "greedy_cost_gap_pct": round(100 * (batch.objective - plan.objective) / max(1.0, plan.objective), 4),
        "greedy_splits": batch.stats.splits,
        "greedy_fill_rate": round(sum(a.qty for a in batch.assignments) / demand, 4),
    }
