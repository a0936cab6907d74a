"""Backlog re-optimisation on ``crossdock.tick``: re-source orders held for stock in one batch.

Orders held for ``no_stock`` carry no reservation and are on no wave, so re-sourcing them
moves nothing already released. The batch optimiser (min-cost flow) places all of them at
once against the stock there is now, so scarce units go where they cost least and the
express/gold orders get them first; each order it can release becomes a normal release
decision, and the tick itself records a summary with the solver's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.context import BookPosition, Network, NodeStock, SkuInfo, Supply
from domain.decisions import Proposal
from domain.engines import allocation as alloc
from domain.engines.release import (
    ReleaseContext,
    alloc_lines,
    proposals_for,
    region_lanes,
    sourcing_from_plan,
)
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
    lines = [ln for rc in contexts for ln in alloc_lines(rc)]
    proposals: list[Proposal] = []
    stats: dict[str, Any] = {"considered": len(ctx.orders), "eligible": len(eligible), "lines": len(lines)}
    if lines:
        views = alloc.stock_views(
            [ns for s in ctx.stock.values() for ns in s], [b for s in ctx.book.values() for b in s], ctx.skus.values()
        )
        result = alloc.optimise(lines, views, ctx.network, ctx.now)
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
