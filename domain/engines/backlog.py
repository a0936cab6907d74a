"""Backlog work on ``crossdock.tick``: re-source held orders, then wave what waits for a wave.

Orders held for ``no_stock`` carry no reservation and are on no wave, so re-sourcing them
moves nothing already released. The batch optimiser (min-cost flow) places all of them at
once against the stock there is now, so scarce units go where they cost least and the
express/gold orders get them first (an order it would split moves to one node when one node
serves it as well: the policy's ``split_only_for_service``); each order it can release becomes a
normal release decision, and the tick itself records a summary with the solver's figures.

``decide_waves`` (on ticks and on ``wms.capacity.changed``) plans the orders whose stock is
reserved but which are on no wave yet (their zone's window was full, or they could not make
the truck when released): most urgent first, per zone and carrier, within the zone's pick
capacity, never into a wave that would miss its cutoff. Nothing already on a wave moves.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from domain.context import BookPosition, Network, NodeStock, OrderView, SkuInfo, Supply, WaveView
from domain.decisions import Action, Proposal
from domain.engines import allocation as alloc
from domain.engines.release import (
    DEFAULT_SPLIT_ONLY_FOR_SERVICE,
    DEFAULT_WAVE_WINDOW_H,
    ReleaseContext,
    alloc_lines,
    proposals_for,
    region_lanes,
    releasable_parts,
    sourcing_from_plan,
)
from domain.engines.waves import ENGINE_VERSION as WAVE_ENGINE
from domain.engines.waves import ReleasableOrder, add_committed, committed_lines, on_a_wave, plan_waves
from domain.models import Customer, Order

ENGINE_VERSION = "backlog/1.0.0"


@dataclass(frozen=True)
class HeldOrder:
    order: Order
    customer: Customer
    credit_hold: bool


@dataclass(frozen=True)
class BacklogContext:
    orders: list[HeldOrder]
    skus: dict[str, SkuInfo]
    stock: dict[str, list[NodeStock]]
    book: dict[str, list[BookPosition]]
    supply: dict[str, list[Supply]]
    network: Network
    now: datetime
    waves: list[WaveView] = dataclasses.field(default_factory=list)
    wave_window_hours: float = DEFAULT_WAVE_WINDOW_H
    split_only_for_service: bool = DEFAULT_SPLIT_ONLY_FOR_SERVICE


def decide_backlog(ctx: BacklogContext) -> list[Proposal]:
    """A summary of the re-optimisation, then a release decision per order that can now ship."""
    eligible = [h for h in ctx.orders if not h.credit_hold and all(ln.sku in ctx.skus for ln in h.order.lines)]
    contexts = [
        ReleaseContext(
            order=h.order,
            customer=h.customer,
            credit_hold=False,
            skus=ctx.skus,
            stock=ctx.stock,
            book=ctx.book,
            supply=ctx.supply,
            network=ctx.network,
            now=ctx.now,
        )
        for h in eligible
    ]
    # Releases in one batch share the zones: each one's waves count against the next one's plan.
    committed = committed_lines(ctx.waves, ctx.now)
    contexts = [
        dataclasses.replace(
            rc,
            committed=committed,
            wave_window_hours=ctx.wave_window_hours,
            split_only_for_service=ctx.split_only_for_service,
        )
        for rc in contexts
    ]
    lines = [ln for rc in contexts for ln in alloc_lines(rc)]
    proposals: list[Proposal] = []
    stats: dict[str, Any] = {"considered": len(ctx.orders), "eligible": len(eligible), "lines": len(lines)}
    if lines:
        views = alloc.stock_views(
            [ns for s in ctx.stock.values() for ns in s], [b for s in ctx.book.values() for b in s], ctx.skus.values()
        )
        penalties = alloc.Penalties(split_only_for_service=ctx.split_only_for_service)
        result = alloc.optimise(lines, views, ctx.network, ctx.now, penalties)
        stats.update(
            solver=result.stats.solver,
            status=result.stats.status,
            objective=round(result.objective, 4),
            lower_bound=None if result.stats.lower_bound is None else round(result.stats.lower_bound, 4),
        )
        for rc in contexts:
            sourcing = sourcing_from_plan(rc.order, result)
            if not any(sourcing.plan.values()):
                continue  # still nothing for it: it stays held, no new decision
            decided = proposals_for(rc, sourcing, region_lanes(ctx.network, rc.order.region))
            if decided[0].outcome == "held":
                continue
            for p in decided:
                p.evidence["backlog"] = {"engine": ENGINE_VERSION, "reason": "re-sourced on tick"}
                for action in p.actions:
                    add_committed(committed, action)
            proposals.extend(decided)
    released = sorted({p.subject for p in proposals})
    stats["released"] = released
    summary = Proposal(
        workflow="allocation",
        subject="backlog",
        outcome="reoptimised" if released else "no_action",
        confidence=1.0,
        rationale=(
            f"Re-optimised {len(eligible)} order(s) held for stock in one batch: "
            + (f"{len(released)} can ship now ({', '.join(released)})." if released else "none can ship yet.")
        ),
        evidence={"engine": ENGINE_VERSION, **stats},
    )
    return [summary, *proposals]


@dataclass(frozen=True)
class AwaitingWave:
    """A released order with stock reserved at a node and no wave there yet."""

    view: OrderView
    customer: Customer


@dataclass(frozen=True)
class WaveContext:
    orders: list[AwaitingWave]
    stock: dict[str, list[NodeStock]]
    network: Network
    waves: list[WaveView]
    now: datetime
    window_hours: float = DEFAULT_WAVE_WINDOW_H
    # Lines already released per (node, zone); None: counted from ``waves``.
    committed: dict[tuple[str, str], float] | None = None


def decide_waves(ctx: WaveContext, tag: str, trigger: str) -> Proposal:
    """One wave plan for every reserved part on no wave: waves, new promises, and why."""
    nodes = {n.id: n for n in ctx.network.nodes}
    waved = on_a_wave(ctx.waves)
    parts: list[ReleasableOrder] = []
    unplanned: dict[str, str] = {}
    promised: dict[str, date | None] = {}
    for a in ctx.orders:
        order = a.view.order
        per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ln in a.view.lines:
            for al in ln.allocations:
                if al.qty > 0 and (order.id, al.node) not in waved:
                    per_node[al.node].append({"line": ln.line, "sku": ln.substituted_by or ln.sku, "qty": al.qty})
        if not per_node:
            continue
        promised[order.id] = max((ln.promise_date for ln in a.view.lines if ln.promise_date), default=None)
        found, why = releasable_parts(order, a.customer, per_node, nodes, ctx.stock, ctx.now)
        parts.extend(dataclasses.replace(p, promised=promised[order.id]) for p in found)
        unplanned.update({f"{order.id}@{node}": reason for node, reason in why.items()})
    committed = ctx.committed if ctx.committed is not None else committed_lines(ctx.waves, ctx.now)
    plan = plan_waves(parts, ctx.network.nodes, ctx.now, ctx.window_hours, committed, wave_tag=tag)
    actions: list[Action] = [a for a in plan.actions if a.name == "wms.create_wave"]
    moved: list[str] = []
    for act in plan.actions:
        if act.name != "oms.update_promise_date":
            continue
        order_id = str(act.payload["order_id"])
        old = promised.get(order_id)
        if old is None or date.fromisoformat(str(act.payload["promise_date"])) > old:
            actions.append(act)  # a promise only ever moves out, and only once per new date
            moved.append(order_id)
    for key, reason in plan.unplanned:
        unplanned[key] = reason
    waved_orders = sorted({k.split("@")[0] for k in plan.waved})
    n_waves = len([a for a in actions if a.name == "wms.create_wave"])
    parts_text = [f"{len(waved_orders)} order(s) waved in {n_waves} wave(s)"]
    if plan.missed:
        parts_text.append(f"{len(plan.missed)} part(s) cannot make their truck ({len(moved)} promise(s) moved)")
    if plan.deferred:
        parts_text.append(f"{len(plan.deferred)} part(s) wait for room in their zone's window")
    if unplanned:
        parts_text.append(f"{len(unplanned)} part(s) cannot be planned (see evidence)")
    return Proposal(
        workflow="order_release",
        subject="waves",
        outcome="waves_planned" if actions else "no_action",
        confidence=1.0,
        rationale=(
            f"Wave plan on {trigger} for {len(parts) + len(unplanned)} reserved part(s) on no wave: "
            + "; ".join(parts_text)
            + "."
            if parts or unplanned
            else f"Wave plan on {trigger}: every reserved order is already on a wave."
        ),
        evidence={
            "engine": WAVE_ENGINE,
            "trigger": trigger,
            "window_hours": ctx.window_hours,
            "committed_lines": {f"{n}/{z}": v for (n, z), v in sorted(committed.items())},
            "zones": plan.zones,
            "waved": plan.waved,
            "deferred": plan.deferred,
            "missed": [{"part": m.key, "cutoff": m.cutoff_at.isoformat(), "reason": m.reason} for m in plan.missed],
            "unplanned": unplanned,
            "parts": plan.evidence,
        },
        actions=actions,
    )
