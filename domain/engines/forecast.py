"""Backorder prevention: forecast intermittent demand, project stock day by day, prescribe — pure.

Forecast
--------
Demand per SKU@node is intermittent (many zero days), so the method is **SBA**, the
Syntetos–Boylan approximation of Croston's method: exponential smoothing (``alpha``) of the
non-zero demand sizes ``z`` and of the intervals between them ``p``, and a daily rate of
``(1 − alpha/2) · z / p`` (the factor removes Croston's known upward bias). ``z`` and ``p``
start at the history's mean non-zero size and mean interval, so a short history (a week) is
usable. Days without a record count as zero demand.

Projection
----------
``available = on hand − locked − reserved`` (the open orders already allocated there are
committed demand), then day by day: ``+`` planned receipts (open PO lines, transfers in
transit, transfers created and not yet arrived) on their date, ``−`` the forecast rate (the
first day only for the share of it still ahead). Demand is uncertain, so the level a day is
judged by is the expected level less ``z · σ · √t`` (``σ`` the daily demand's standard
deviation, ``t`` days elapsed, ``z = 1``). The **stockout date** is the first day that
risk-adjusted level goes below zero; the **qty short** is its deficit before the next supply
after that date (or by the horizon's end).

Prescription (priced)
---------------------
* ``wms.create_transfer`` from the node with the most excess (on hand − reserved − what it
  will sell over the horizon − its safety stock), when the transfer lands by the stockout
  date and its lane cost is below the margin it saves (``margin_share × unit cost`` per unit
  short). ``cost_impact`` = transfer cost, so the gate auto-executes cheap transfers.
* ``erp.expedite_po``: an open PO line for the node arriving after the stockout date is asked
  to arrive the day before it. Reviewed (a supplier negotiation); cost = an assumed premium of
  ``expedite_share`` of the line value brought forward.
* ``erp.update_safety_stock`` to ``ceil(rate × safety_days)`` when the node's safety stock is
  lower. Reviewed; cost = the added units' value (capital tied up).
* ``stockout_announced``: when nothing above fully prevents it, the stockout date and qty are
  recorded (an observation, no write) — the planners' early warning.

Re-proposing is avoided by construction: transfers already created count as supply in the
projection, so the next tick sees the gap closed. Every proposal carries
``evidence["dedupe_key"]`` (play, SKU@node, stockout date) so a caller can skip one that is
already pending review.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import Field

from domain.decisions import Action, Proposal
from domain.engines.clock import as_utc
from domain.models import DemandPoint, Model, TransferLane
from domain.rationale import num

ENGINE_VERSION = "forecast/1.0.0"
METHOD = "SBA (Syntetos-Boylan approximation of Croston)"
EPS = 1e-9
DEFAULT_ALPHA = 0.1
HORIZON_DAYS = 14
SAFETY_DAYS = 3.0
MARGIN_SHARE = 0.35  # margin lost per unit short, as a share of unit cost (no sale price in the ERP)
RISK_Z = 1.0  # demand uncertainty buffer in standard deviations (about 84 % one-sided)
EXPEDITE_SHARE = 0.08  # assumed supplier premium for bringing a line forward, share of its value


class TransferView(Model):
    """A stock transfer the WMS created (read back so a tick does not propose it again)."""

    id: str
    sku: str
    from_node: str = Field(alias="from")
    to_node: str = Field(alias="to")
    qty: float
    status: str = "created"
    eta: date | None = None


# --- forecast --------------------------------------------------------------------------


def daily_series(points: Iterable[DemandPoint], end: date, days: int | None = None) -> list[float]:
    """Demand per day up to (not including) ``end``; missing days are zero."""
    by_day: dict[date, float] = {}
    for p in points:
        if p.date < end:
            by_day[p.date] = by_day.get(p.date, 0.0) + p.qty
    if not by_day:
        return [0.0] * (days or 0)
    first = min(by_day) if days is None else end - timedelta(days=days)
    n = (end - first).days
    return [by_day.get(first + timedelta(days=i), 0.0) for i in range(n)]


def sba_rate(series: Sequence[float], alpha: float = DEFAULT_ALPHA) -> float:
    """Daily demand rate by SBA (Croston with the Syntetos–Boylan bias correction)."""
    hits = [i for i, q in enumerate(series) if q > EPS]
    if not hits:
        return 0.0
    sizes = [series[i] for i in hits]
    intervals = [hits[0] + 1] + [b - a for a, b in zip(hits, hits[1:], strict=False)]
    z = sum(sizes) / len(sizes)
    p = len(series) / len(hits)
    for size, gap in zip(sizes, intervals, strict=True):
        z += alpha * (size - z)
        p += alpha * (gap - p)
    return (1.0 - alpha / 2.0) * z / max(p, 1.0)


# --- projection ------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    when: date
    qty: float
    source: str  # "purchase_order PO-1/10", "transfer TR-3", ...


@dataclass(frozen=True)
class Position:
    """One SKU at one node: what is there, what is promised, what comes in, what it sells."""

    node: str
    on_hand: float
    locked: float
    reserved: float
    rate: float
    safety_stock: float = 0.0
    receipts: list[Receipt] = field(default_factory=list)
    outgoing: float = 0.0  # transfers created out of this node and not yet shipped
    sigma: float = 0.0  # standard deviation of daily demand (for the risk buffer)

    @property
    def available(self) -> float:
        return self.on_hand - self.locked - self.reserved - self.outgoing


@dataclass(frozen=True)
class StockoutForecast:
    sku: str
    node: str
    rate: float
    start: float
    stockout: date | None
    short: float
    next_supply: date | None
    projection: list[tuple[date, float]]

    def days_ahead(self, today: date) -> int | None:
        return None if self.stockout is None else (self.stockout - today).days


def project(sku: str, pos: Position, now: datetime, horizon: int = HORIZON_DAYS, z: float = RISK_Z) -> StockoutForecast:
    """Day-by-day projected available stock and the first (risk-adjusted) stockout within ``horizon`` days.

    The projection is the expected level; a day counts as a stockout when the expected level
    is below ``z · sigma · √(days elapsed)`` — the demand uncertainty accumulated by then.
    """
    now = as_utc(now)
    today = now.date()
    left_today = 1.0 - (now.hour * 3600 + now.minute * 60 + now.second) / 86400.0
    level = pos.available
    projection: list[tuple[date, float]] = []
    stockout: date | None = None
    for d in range(horizon):
        day = today + timedelta(days=d)
        level += sum(r.qty for r in pos.receipts if (r.when <= day if d == 0 else r.when == day))
        level -= pos.rate * (left_today if d == 0 else 1.0)
        buffer = z * pos.sigma * math.sqrt(left_today + d)
        projection.append((day, round(level - buffer, 6)))
        if stockout is None and level - buffer < -EPS:
            stockout = day
    short = 0.0
    next_supply: date | None = None
    if stockout is not None:
        later = sorted(r.when for r in pos.receipts if r.when > stockout)
        next_supply = later[0] if later else None
        short = max(
            0.0,
            -min(level for day, level in projection if day >= stockout and (next_supply is None or day < next_supply)),
        )
    return StockoutForecast(sku, pos.node, pos.rate, pos.available, stockout, round(short, 6), next_supply, projection)


# --- prescription ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenPoLine:
    po_id: str
    line: int
    node: str
    qty: float
    expected: date | None


@dataclass(frozen=True)
class SkuNetwork:
    """Everything the prescriber needs for one SKU: each node's position and the ways to move stock."""

    sku: str
    unit_cost: float
    positions: dict[str, Position]
    transfer_lanes: list[TransferLane] = field(default_factory=list)
    po_lines: list[OpenPoLine] = field(default_factory=list)


def excess(pos: Position, horizon: int = HORIZON_DAYS) -> float:
    """What a node can give away and still cover its own horizon of demand and safety stock."""
    return max(0.0, math.floor(pos.available - pos.rate * horizon - pos.safety_stock + EPS))


def prescribe(
    net: SkuNetwork,
    now: datetime,
    horizon: int = HORIZON_DAYS,
    margin_share: float = MARGIN_SHARE,
    safety_days: float = SAFETY_DAYS,
) -> list[Proposal]:
    """Proposals for every node of the SKU that runs out within the horizon."""
    today = as_utc(now).date()
    out: list[Proposal] = []
    given: dict[str, float] = {}  # units already promised away by an earlier proposal in this call
    for node in sorted(net.positions):
        pos = net.positions[node]
        fc = project(net.sku, pos, now, horizon)
        if fc.stockout is None:
            continue
        out.extend(_for_node(net, pos, fc, today, now, horizon, margin_share, safety_days, given))
    return out


def _base_evidence(net: SkuNetwork, pos: Position, fc: StockoutForecast, today: date) -> dict[str, Any]:
    return {
        "engine": ENGINE_VERSION,
        "method": METHOD,
        "sku": net.sku,
        "node": pos.node,
        "rate_per_day": round(fc.rate, 4),
        "available_now": round(fc.start, 4),
        "on_hand": pos.on_hand,
        "locked": pos.locked,
        "reserved": pos.reserved,
        "receipts": [{"date": r.when.isoformat(), "qty": r.qty, "source": r.source} for r in pos.receipts],
        "stockout_date": fc.stockout.isoformat() if fc.stockout else None,
        "days_ahead": fc.days_ahead(today),
        "short": fc.short,
        "next_supply": fc.next_supply.isoformat() if fc.next_supply else None,
        "projection": [[d.isoformat(), lvl] for d, lvl in fc.projection],
    }


def _for_node(
    net: SkuNetwork,
    pos: Position,
    fc: StockoutForecast,
    today: date,
    now: datetime,
    horizon: int,
    margin_share: float,
    safety_days: float,
    given: dict[str, float],
) -> list[Proposal]:
    assert fc.stockout is not None
    subject = f"{net.sku}@{pos.node}"
    stamp = fc.stockout.isoformat()
    need = math.ceil(fc.short - EPS)
    margin_unit = margin_share * net.unit_cost
    out: list[Proposal] = []
    covered = 0.0
    # Transfer from the node with excess, landing by the stockout date, if it pays.
    options = []
    for lane in net.transfer_lanes:
        if lane.to_node != pos.node or lane.from_node not in net.positions:
            continue
        src = net.positions[lane.from_node]
        spare = excess(src, horizon) - given.get(src.node, 0.0)
        eta = today + timedelta(days=lane.transit_days)
        if spare < 1 or eta > fc.stockout:
            continue
        qty = float(min(spare, need))
        saved = qty * margin_unit
        cost = qty * lane.cost_per_unit
        if cost < saved - EPS:
            options.append((-(saved - cost), lane.transit_days, src.node, qty, cost, saved, eta, lane))
    if options and need > 0:
        _, _, src_node, qty, cost, saved, eta, lane = sorted(options)[0]
        given[src_node] = given.get(src_node, 0.0) + qty
        covered = qty
        ev = _base_evidence(net, pos, fc, today) | {
            "play": "transfer",
            "dedupe_key": f"transfer:{subject}:{stamp}",
            "transfer": {
                "from": src_node,
                "qty": qty,
                "eta": eta.isoformat(),
                "lane_cost_per_unit": lane.cost_per_unit,
            },
            "expected_lost_margin": round(saved, 2),
            "source_excess": excess(net.positions[src_node], horizon),
        }
        out.append(
            Proposal(
                workflow="backorder_prevention",
                subject=subject,
                outcome="transfer_proposed",
                confidence=0.9 if qty + EPS >= fc.short else 0.8,
                cost_impact=round(cost, 2),
                rationale=(
                    f"{net.sku} at {pos.node} runs out on {stamp} ({fc.days_ahead(today)} days; "
                    f"{fc.rate:.2f}/day by SBA, "
                    f"{num(fc.short)} short before the next supply). {src_node} has excess: "
                    f"a transfer of {num(qty)} lands "
                    f"{eta.isoformat()} for {cost:.2f}, against {saved:.2f} of margin lost."
                ),
                evidence=ev,
                actions=[
                    Action(
                        system="wms",
                        type="create_transfer",
                        payload={
                            "from": src_node,
                            "to": pos.node,
                            "sku": net.sku,
                            "qty": qty,
                            "eta": eta.isoformat(),
                            "reason": f"predicted stockout on {stamp}",
                        },
                    )
                ],
            )
        )
    # Expedite a PO line arriving after the stockout.
    if covered + EPS < fc.short:
        late = sorted(
            (
                ln
                for ln in net.po_lines
                if ln.node == pos.node and ln.expected is not None and ln.expected > fc.stockout
            ),
            key=lambda ln: (ln.expected or fc.stockout, ln.po_id, ln.line),
        )
        if late:
            ln = late[0]
            new_date = max(today + timedelta(days=1), fc.stockout - timedelta(days=1))
            if ln.expected is not None and new_date < ln.expected:
                premium = EXPEDITE_SHARE * ln.qty * net.unit_cost
                out.append(
                    Proposal(
                        workflow="backorder_prevention",
                        subject=subject,
                        outcome="expedite_proposed",
                        confidence=0.75,
                        cost_impact=round(premium, 2),
                        rationale=(
                            f"{net.sku} at {pos.node} runs out on {stamp} but {ln.po_id}/{ln.line} "
                            f"({num(ln.qty)}) only "
                            f"arrives {ln.expected.isoformat()}: ask the supplier for {new_date.isoformat()} "
                            f"(premium ~{premium:.2f})."
                        ),
                        evidence=_base_evidence(net, pos, fc, today)
                        | {
                            "play": "expedite",
                            "dedupe_key": f"expedite:{subject}:{ln.po_id}/{ln.line}",
                            "po_line": {"po_id": ln.po_id, "line": ln.line, "expected": ln.expected.isoformat()},
                        },
                        actions=[
                            Action(
                                system="erp",
                                type="expedite_po",
                                payload={
                                    "po_id": ln.po_id,
                                    "line": ln.line,
                                    "new_date": new_date.isoformat(),
                                    "reason": f"predicted stockout of {net.sku} at {pos.node} on {stamp}",
                                },
                            )
                        ],
                        review_required=True,
                        review_reason="expediting is a supplier negotiation",
                    )
                )
    # Raise safety stock when the node keeps less than a few days of demand in reserve.
    target = math.ceil(fc.rate * safety_days - EPS)
    if target > pos.safety_stock + EPS and fc.rate > EPS:
        added = target - pos.safety_stock
        out.append(
            Proposal(
                workflow="backorder_prevention",
                subject=subject,
                outcome="safety_stock_proposed",
                confidence=0.7,
                cost_impact=round(added * net.unit_cost, 2),
                rationale=(
                    f"{net.sku} at {pos.node} sells {fc.rate:.2f}/day (SBA) and keeps "
                    f"{num(pos.safety_stock)} in reserve: "
                    f"{num(safety_days)} days of cover is {num(target)}."
                ),
                evidence=_base_evidence(net, pos, fc, today)
                | {
                    "play": "safety_stock",
                    "dedupe_key": f"safety_stock:{subject}:{target}",
                    "safety_stock": {"from": pos.safety_stock, "to": target},
                },
                actions=[
                    Action(
                        system="erp",
                        type="update_safety_stock",
                        payload={"sku": net.sku, "node": pos.node, "qty": float(target)},
                    )
                ],
                review_required=True,
                review_reason="safety stock ties up capital",
            )
        )
    if covered + EPS < fc.short:
        until = f"the next supply on {fc.next_supply.isoformat()}" if fc.next_supply else "the horizon ends"
        out.append(
            Proposal(
                workflow="backorder_prevention",
                subject=subject,
                outcome="stockout_announced",
                confidence=0.8,
                cost_impact=round(fc.short * margin_unit, 2),
                rationale=(
                    f"{net.sku} at {pos.node} is predicted to run out on {stamp} ({fc.days_ahead(today)} days ahead), "
                    f"{num(fc.short)} short before {until}"
                    + (
                        f"; the transfer covers {num(covered)}."
                        if covered > EPS
                        else "; no transfer pays or lands in time."
                    )
                ),
                evidence=_base_evidence(net, pos, fc, today)
                | {"play": "announce", "dedupe_key": f"announce:{subject}:{stamp}", "covered": covered},
            )
        )
    return out
