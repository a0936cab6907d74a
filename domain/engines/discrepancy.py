"""Cross-system stock discrepancies: ERP book vs WMS physical vs OMS reservations, per SKU@node.

Pure and deterministic. The rule stated in every rationale: **the WMS is the source of truth
for physical stock, the ERP for valuation and blocks.** So a true variance corrects the ERP
book toward the WMS count, never the other way round.

Timing differences
------------------
Each side records its own movements (WMS adjustments and receipts, ERP postings). Within the
grace window (``posting_grace_hours``, default 4 h), a WMS movement with no ERP posting of the
same quantity is *in flight*: the ERP will book it. An ERP posting with no WMS movement of the
same quantity is in flight too: the warehouse will follow. With ``V = WMS on hand − ERP book``,

    residual = V − Σ unpaired WMS movements in the window + Σ unpaired ERP postings in the window

* ``V = 0`` and nothing in flight: **in sync**, nothing to do.
* ``residual = 0``: a **timing difference** — the gap is explained by postings in flight, so
  nothing is corrected (correcting now would correct twice once the posting lands).
* otherwise a **true variance** of ``residual`` units: ``erp.post_adjustment`` by ``residual``.
  A small variance runs autonomously (within the policy's cost threshold); a variance above
  ``max(CYCLE_COUNT_MIN_UNITS, CYCLE_COUNT_SHARE × on hand)`` puts the count itself in doubt: a
  ``wms.create_task`` ``cycle_count`` is proposed with the adjustment, and both wait for review.

Reservations
------------
When the OMS holds more at the node than the WMS can pick (``on hand − locked``), the newest
standard reservations are released first (express and gold last) until the rest is covered;
each such order is held for ``no_stock`` with its reservation released, so the next
``crossdock.tick`` re-sources it with the batch optimiser (the allocation specialist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain.context import BookPosition, Movement, NodeStock
from domain.decisions import Action, Proposal, ticket
from domain.engines.clock import as_utc
from domain.rationale import num, signed

ENGINE_VERSION = "discrepancy/1.0.0"
EPS = 1e-9
CYCLE_COUNT_MIN_UNITS = 5.0
CYCLE_COUNT_SHARE = 0.10
RULE = "the WMS is the source of truth for physical stock, the ERP for valuation and blocks"


@dataclass(frozen=True)
class Reservation:
    order_id: str
    line: int
    qty: float
    priority: str = "standard"
    tier: str = "standard"
    created: datetime | None = None


@dataclass(frozen=True)
class StockPicture:
    """One SKU at one node as the three systems see it, with each side's recent movements."""

    sku: str
    node: str
    now: datetime
    unit_cost: float = 0.0
    wms: NodeStock | None = None
    book: BookPosition | None = None
    wms_moves: list[Movement] = field(default_factory=list)
    erp_postings: list[Movement] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    grace_hours: float = 4.0


def in_flight(p: StockPicture) -> tuple[list[Movement], list[Movement]]:
    """Movements inside the grace window that the other side has not mirrored yet.

    Pairs a WMS movement with an ERP posting of the same quantity (oldest first); what is
    left unpaired on either side is still in flight.
    """
    since = as_utc(p.now) - timedelta(hours=p.grace_hours)

    def recent(moves: list[Movement]) -> list[Movement]:
        return sorted(
            (m for m in moves if m.at is not None and since < as_utc(m.at) <= as_utc(p.now)),
            key=lambda m: (as_utc(m.at or p.now), m.ref or ""),
        )

    wms, erp = recent(p.wms_moves), recent(p.erp_postings)
    unpaired_erp = list(erp)
    unpaired_wms = []
    for m in wms:
        twin = next((e for e in unpaired_erp if abs(e.qty_delta - m.qty_delta) <= EPS), None)
        if twin is None:
            unpaired_wms.append(m)
        else:
            unpaired_erp.remove(twin)
    return unpaired_wms, unpaired_erp


def decide_discrepancy(p: StockPicture) -> list[Proposal]:
    """The stock decision for one SKU@node, then one hold per reservation the WMS cannot cover."""
    subject = f"{p.sku}@{p.node}"
    physical = p.wms.on_hand if p.wms else 0.0
    locked = p.wms.locked if p.wms else 0.0
    book = p.book.qty if p.book else 0.0
    variance = physical - book
    wms_flight, erp_flight = in_flight(p)
    flight = sum(m.qty_delta for m in wms_flight) - sum(m.qty_delta for m in erp_flight)
    residual = round(variance - flight, 6)
    evidence: dict[str, Any] = {
        "engine": ENGINE_VERSION,
        "rule": RULE,
        "wms_on_hand": physical,
        "wms_locked": locked,
        "erp_book": book,
        "erp_blocked": p.book.blocked if p.book else 0.0,
        "variance": round(variance, 6),
        "in_flight": {
            "grace_hours": p.grace_hours,
            "wms_awaiting_erp": [m.model_dump(mode="json") for m in wms_flight],
            "erp_awaiting_wms": [m.model_dump(mode="json") for m in erp_flight],
            "net": round(flight, 6),
        },
        "residual": residual,
    }
    proposals = [_stock_proposal(p, subject, variance, flight, residual, evidence)]
    proposals.extend(_uncovered(p, physical - locked))
    return proposals


def _stock_proposal(
    p: StockPicture, subject: str, variance: float, flight: float, residual: float, evidence: dict[str, Any]
) -> Proposal:
    if abs(residual) <= EPS:
        if abs(variance) <= EPS and abs(flight) <= EPS:
            return Proposal(
                workflow="discrepancy",
                subject=subject,
                outcome="in_sync",
                confidence=1.0,
                rationale=f"ERP book and WMS physical agree at {num(evidence['erp_book'])}; nothing to correct.",
                evidence=evidence,
            )
        return Proposal(
            workflow="discrepancy",
            subject=subject,
            outcome="timing_difference",
            confidence=0.95,
            rationale=(
                f"WMS has {num(evidence['wms_on_hand'])}, ERP books {num(evidence['erp_book'])}: "
                f"the {signed(variance)} gap is "
                f"postings in flight ({signed(flight)} within {num(p.grace_hours)} h), so nothing is corrected twice."
            ),
            evidence=evidence,
        )
    threshold = max(CYCLE_COUNT_MIN_UNITS, CYCLE_COUNT_SHARE * evidence["wms_on_hand"])
    doubt = abs(residual) > threshold + EPS
    cost = round(abs(residual) * p.unit_cost, 2)
    actions = [
        Action(
            system="erp",
            type="post_adjustment",
            payload={
                "node": p.node,
                "sku": p.sku,
                "qty_delta": residual,
                "reason": f"align the ERP book to the WMS count ({RULE})",
            },
        )
    ]
    rationale = (
        f"True variance of {signed(residual)} units ({num(cost)} at {num(p.unit_cost)}/unit): the WMS counts "
        f"{num(evidence['wms_on_hand'])}, the ERP books {num(evidence['erp_book'])} and {signed(flight)} is in flight. "
        f"The ERP book is corrected because {RULE}."
    )
    if doubt:
        actions.append(
            Action(
                system="wms",
                type="create_task",
                payload={
                    "task_type": "cycle_count",
                    "node": p.node,
                    "sku": p.sku,
                    "reason": f"variance {signed(residual)} exceeds {num(threshold)}: confirm the count before booking",
                },
            )
        )
        rationale += f" A gap above {num(threshold)} units puts the count in doubt: cycle count first."
    evidence["cycle_count_threshold"] = threshold
    return Proposal(
        workflow="discrepancy",
        subject=subject,
        outcome="discrepancy",
        confidence=0.75 if doubt else 0.9,
        cost_impact=cost,
        rationale=rationale,
        evidence=evidence,
        actions=actions,
        review_required=doubt,
        review_reason=f"variance {signed(residual)} above {num(threshold)} units: the count is in doubt"
        if doubt
        else None,
    )


def _uncovered(p: StockPicture, pickable_physical: float) -> list[Proposal]:
    """Release the least urgent reservations the WMS can no longer cover; the tick re-sources them."""
    held = sum(r.qty for r in p.reservations)
    short = held - max(0.0, pickable_physical)
    if short <= EPS:
        return []

    def keep_rank(r: Reservation) -> tuple[int, int, float, str]:
        # Released first: standard, non-gold, newest.
        created = as_utc(r.created).timestamp() if r.created else 0.0
        return (r.priority == "express", r.tier == "gold", -created, r.order_id)

    out: list[Proposal] = []
    by_order: dict[str, list[Reservation]] = {}
    for r in sorted(p.reservations, key=keep_rank):
        if short <= EPS:
            break
        by_order.setdefault(r.order_id, []).append(r)
        short -= r.qty
    for order_id, rs in by_order.items():
        detail = (
            f"{p.sku}@{p.node}: the WMS can pick {num(max(0.0, pickable_physical))} but {num(held)} is reserved; "
            f"this order's {num(sum(r.qty for r in rs))} is released for re-sourcing"
        )
        actions = [
            Action(
                system="oms",
                type="release_allocation",
                payload={"order_id": order_id, "line": r.line, "node": p.node, "qty": r.qty},
            )
            for r in rs
        ]
        actions += [
            Action(
                system="oms", type="hold_order", payload={"order_id": order_id, "reason": "no_stock", "detail": detail}
            ),
            Action(system="oms", type="update_order_status", payload={"order_id": order_id, "status": "held"}),
            ticket("planning", f"{order_id} lost stock at {p.node}", detail, [order_id]),
        ]
        out.append(
            Proposal(
                workflow="discrepancy",
                subject=order_id,
                outcome="held",
                confidence=0.9,
                rationale=f"Held for re-sourcing: {detail} (newest standard reservations go first).",
                evidence={"engine": ENGINE_VERSION, "sku": p.sku, "node": p.node, "reserved": held},
                actions=actions,
            )
        )
    return out
