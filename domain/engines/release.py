"""Order release engine: allocate, split with a backorder, or hold — pure and deterministic.

Input is the context gathered from the three systems (WMS pickable stock, ERP blocks,
credit holds and planned supply, OMS order and network); output is one or two
proposals. No I/O happens here, so every branch is unit-testable.

Sourcing is the allocation engine's greedy real-time path for one order (the batch
optimiser re-sources held orders on ticks, see ``backlog``); each released part is offered
to the wave planner beside the lines its zone already has to pick (``waves``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from domain.context import BookPosition, Network, NodeStock, SkuInfo, Supply, WaveView
from domain.decisions import Action, Proposal
from domain.engines import allocation as alloc
from domain.engines.clock import ship_carrier
from domain.engines.waves import ENGINE_VERSION as WAVE_ENGINE
from domain.engines.waves import ReleasableOrder, committed_lines, plan_waves
from domain.errors import InvalidOrder, UnknownSku
from domain.models import Customer, Lane, Node, Order, Policy
from domain.rationale import num

ENGINE_VERSION = "release/1.1.0"
WORKFLOW = "order_release"
# How far ahead a release may commit pick work (the policy's ``wave_window_hours``).
DEFAULT_WAVE_WINDOW_H = Policy.model_fields["wave_window_hours"].default
# Split an order only when no single node serves it as well (the policy's ``split_only_for_service``).
DEFAULT_SPLIT_ONLY_FOR_SERVICE: bool = Policy.model_fields["split_only_for_service"].default


@dataclass(frozen=True)
class ReleaseContext:
    """Everything the release decision reads, already fetched from the systems."""

    order: Order
    customer: Customer
    credit_hold: bool
    skus: dict[str, SkuInfo]
    stock: dict[str, list[NodeStock]]
    book: dict[str, list[BookPosition]]
    supply: dict[str, list[Supply]]
    network: Network
    now: datetime
    # Released waves (what each zone already has to pick) and the planning window; a batch
    # of releases passes ``committed`` so each plan counts the waves the ones before it made.
    waves: list[WaveView] = field(default_factory=list)
    committed: dict[tuple[str, str], float] | None = None
    wave_window_hours: float = DEFAULT_WAVE_WINDOW_H
    split_only_for_service: bool = DEFAULT_SPLIT_ONLY_FOR_SERVICE

    def committed_lines(self) -> dict[tuple[str, str], float]:
        return self.committed if self.committed is not None else committed_lines(self.waves, self.now)


@dataclass
class _NodeView:
    node: str
    sku: str
    pickable: float
    erp_book: float
    erp_blocked: float
    locked: float
    safety: float
    usable: float
    evidence: dict[str, Any] = field(default_factory=dict)


def validate_order(order: Order, skus: dict[str, SkuInfo]) -> None:
    """Raise a clear error for lines no engine can decide on."""
    for ln in order.lines:
        if ln.qty <= 0:
            raise InvalidOrder(f"{order.id} line {ln.line} has quantity {num(ln.qty)}; quantities must be positive")
        if ln.sku not in skus:
            raise UnknownSku(ln.sku)


def may_use_safety_stock(order: Order, customer: Customer) -> bool:
    """Safety stock is for express orders and gold customers only."""
    return order.priority == "express" or customer.tier == "gold"


def decide_release(ctx: ReleaseContext) -> list[Proposal]:
    """Decide release / split / hold for one order. Returns 1 or 2 proposals."""
    order = ctx.order
    validate_order(order, ctx.skus)
    if ctx.credit_hold:
        return [_hold(ctx, "credit_hold", f"Customer {order.customer} is on credit hold in the ERP.", 0.99)]

    lanes = region_lanes(ctx.network, order.region)
    if not lanes:
        return [_hold(ctx, "review", f"No lane serves region {order.region!r}; the order cannot be sourced.", 0.9)]

    return proposals_for(ctx, _source(ctx, lanes), lanes)


def region_lanes(network: Network, region: str) -> dict[str, Lane]:
    """The cheapest lane from each node to ``region`` (several lanes from one node: cheapest wins)."""
    lanes: dict[str, Lane] = {}
    for ln in network.lanes:
        known = lanes.get(ln.from_node)
        if ln.to_region == region and (
            known is None or (ln.cost_per_unit, ln.transit_days) < (known.cost_per_unit, known.transit_days)
        ):
            lanes[ln.from_node] = ln
    return lanes


def proposals_for(ctx: ReleaseContext, sourcing: _Sourcing, lanes: dict[str, Lane]) -> list[Proposal]:
    """Release, split with a backorder, or hold, given where the sourcing engine put each line."""
    order = ctx.order
    safety_ok = may_use_safety_stock(order, ctx.customer)
    views = _node_views(ctx, lanes, safety_ok)
    plan = sourcing.plan
    short = {ln.line: ln.qty - sum(plan.get(ln.line, {}).values()) for ln in order.lines}
    short = {k: v for k, v in short.items() if v > 1e-9}
    if not any(plan.values()) or (short and not order.allow_split):
        return [_no_stock(ctx, views, lanes, sourcing)]
    release = _release_proposal(ctx, sourcing, short, views, lanes, safety_ok)
    if not short:
        return [release]
    return [release, _backorder_proposal(ctx, short, lanes)]


@dataclass
class _Sourcing:
    """Where each line comes from, as the sourcing engine chose it."""

    plan: Plan  # line -> node -> qty
    skus: dict[int, str]  # line -> sku allocated (a substitute when substituted)
    substituted: dict[int, str]
    late: dict[int, list[str]]  # line -> nodes that ship after ship_by
    why: dict[int, str]  # line -> binding-constraint sentence
    cost: dict[str, float]
    stats: dict[str, Any]


def _source(ctx: ReleaseContext, lanes: dict[str, Lane]) -> _Sourcing:
    """Node choice for one order: the allocation engine's greedy real-time path.

    Cheapest node that ships on time with free stock (safety stock only for express/gold),
    one node for the whole order when possible, a split only when allowed, a late node only
    when no on-time node has stock, the first substitute with stock when the order allows it.
    With ``split_only_for_service`` (the default) a split must buy service: when one node
    serves the order as well (as many units, as few late lines, as few substitutes) it ships
    from that node even if another lane is cheaper, and a split uses the order's nodes again
    before it adds one (unless the extra node saves more than a parcel, the split penalty).
    """
    order = ctx.order
    lines = alloc_lines(ctx)
    stock = [ns for sku_stock in ctx.stock.values() for ns in sku_stock if ns.node in lanes]
    book = [b for sku_book in ctx.book.values() for b in sku_book]
    views = alloc.stock_views(stock, book, ctx.skus.values())
    penalties = alloc.Penalties(split_only_for_service=ctx.split_only_for_service)
    return sourcing_from_plan(order, alloc.greedy(lines, views, ctx.network, ctx.now, penalties))


def alloc_lines(ctx: ReleaseContext) -> list[alloc.AllocLine]:
    """The order's lines as the allocation engine sees them."""
    order = ctx.order
    return [
        alloc.AllocLine(
            order_id=order.id,
            line=ln.line,
            sku=ln.sku,
            qty=ln.qty,
            region=order.region,
            priority=order.priority,
            tier=ctx.customer.tier,
            created=order.created,
            ship_by=order.ship_by,
            carrier=order.carrier,
            allow_split=order.allow_split,
            allow_substitution=order.allow_substitution,
            substitutes=[s for s in ctx.skus[ln.sku].substitutes if s in ctx.skus] if order.allow_substitution else [],
        )
        for ln in order.lines
    ]


def sourcing_from_plan(order: Order, result: alloc.AllocationPlan) -> _Sourcing:
    """This order's part of an allocation plan (greedy for one order, or the batch optimiser's)."""
    plan: Plan = {ln.line: {} for ln in order.lines}
    skus = {ln.line: ln.sku for ln in order.lines}
    late: dict[int, list[str]] = defaultdict(list)
    for a in result.assignments:
        if a.order_id != order.id:
            continue
        plan[a.line][a.node] = plan[a.line].get(a.node, 0.0) + a.qty
        skus[a.line] = a.sku
        if a.late:
            late[a.line].append(a.node)
    return _Sourcing(
        plan=plan,
        skus=skus,
        substituted={line: sub for (oid, line), sub in result.substitutions.items() if oid == order.id},
        late=dict(late),
        why={line: text for (oid, line), text in result.evidence.items() if oid == order.id},
        cost={
            "shipping": round(result.cost.shipping, 4),
            "late": round(result.cost.late, 4),
            "split": round(result.cost.split, 4),
            "unfilled": round(result.cost.unfilled, 4),
            "substitution": round(result.cost.substitution, 4),
        },
        # Wall time stays out of evidence: the same inputs must give the same decision record.
        stats={"solver": result.stats.solver},
    )


# --- context shaping -----------------------------------------------------------------


def _node_views(ctx: ReleaseContext, lanes: dict[str, Lane], safety_ok: bool) -> dict[tuple[str, str], _NodeView]:
    views: dict[tuple[str, str], _NodeView] = {}
    # Every SKU the context holds: the order's own and, when it allows them, its substitutes.
    for sku in sorted(set(ctx.stock) & set(ctx.skus)):
        book = {b.node: b for b in ctx.book.get(sku, [])}
        for ns in ctx.stock.get(sku, []):
            if ns.node not in lanes:
                continue
            b = book.get(ns.node)
            blocked = b.blocked if b else 0.0
            # An ERP quality block not mirrored by a WMS lock still makes units unusable.
            unmirrored_block = max(0.0, blocked - ns.locked)
            usable = max(0.0, ns.pickable - unmirrored_block)
            safety = ctx.skus[sku].safety_stock.get(ns.node, 0.0)
            if not safety_ok:
                usable = max(0.0, usable - safety)
            views[(sku, ns.node)] = _NodeView(
                node=ns.node,
                sku=sku,
                pickable=ns.pickable,
                erp_book=b.qty if b else 0.0,
                erp_blocked=blocked,
                locked=ns.locked,
                safety=safety,
                usable=usable,
                evidence={
                    "on_hand": ns.on_hand,
                    "locked": ns.locked,
                    "allocated": ns.allocated,
                    "pickable": ns.pickable,
                    "erp_book": b.qty if b else 0.0,
                    "erp_blocked": blocked,
                    "safety_stock": safety,
                    "usable": usable,
                },
            )
    return views


Plan = dict[int, dict[str, float]]  # line -> node -> qty


# --- proposals -----------------------------------------------------------------------


def _release_proposal(
    ctx: ReleaseContext,
    sourcing: _Sourcing,
    short: dict[int, float],
    views: dict[tuple[str, str], _NodeView],
    lanes: dict[str, Lane],
    safety_ok: bool,
) -> Proposal:
    order = ctx.order
    lines = {ln.line: ln for ln in order.lines}
    actions: list[Action] = []
    cost = 0.0
    used_safety: list[str] = []
    disagree: list[str] = []
    per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    taken: dict[tuple[str, str], float] = defaultdict(float)
    for line_no, sub in sorted(sourcing.substituted.items()):
        actions.append(
            _act("oms", "substitute_line", order_id=order.id, line=line_no, sku=lines[line_no].sku, substitute=sub)
        )
    for line_no, by_node in sorted(sourcing.plan.items()):
        sku = sourcing.skus[line_no]
        for node, qty in sorted(by_node.items()):
            actions.append(_act("oms", "allocate", order_id=order.id, line=line_no, sku=sku, node=node, qty=qty))
            per_node[node].append({"line": line_no, "sku": sku, "qty": qty})
            cost += lanes[node].cost_per_unit * qty
            taken[(sku, node)] += qty
    # Judge safety stock and book disagreement on the total taken per sku@node (several lines
    # may draw on one node), against usable stock (ERP blocks already deducted).
    for (sku, node), qty in sorted(taken.items()):
        v = views.get((sku, node))
        if v is None:
            continue
        if safety_ok and v.safety and qty > v.usable - v.safety + 1e-9:
            used_safety.append(f"{sku}@{node}")
        if v.erp_book - v.erp_blocked < qty:
            disagree.append(f"{sku}@{node}")
    for line_no, qty in short.items():
        fulfil = lines[line_no].qty - qty
        actions.append(_act("oms", "split_line", order_id=order.id, line=line_no, fulfil_qty=fulfil, backorder_qty=qty))
    nodes = _nodes_by_id(ctx.network)
    wave_actions, wave_evidence, wave_promise = _plan_waves_for(ctx, per_node, nodes)
    actions.extend(wave_actions)
    late_promise = _late_promise(ctx, sourcing, nodes, lanes)
    promise = max(filter(None, [late_promise, wave_promise]), default=None)
    if promise is not None:
        actions.append(_act("oms", "update_promise_date", order_id=order.id, line=None, promise_date=promise))
    status = "partially_released" if short else "released"
    actions.append(_act("oms", "update_order_status", order_id=order.id, status=status))

    confidence = (
        0.95 - 0.05 * bool(used_safety) - 0.15 * bool(disagree) - 0.05 * bool(short) - 0.05 * bool(sourcing.late)
    )
    sources = ", ".join(f"{n} ({num(lanes[n].cost_per_unit)}/unit)" for n in sorted(per_node))
    if short:
        rationale = (
            f"Released what is pickable from {sources}; "
            f"{num(sum(short.values()))} units on line(s) {', '.join(map(str, sorted(short)))} are short everywhere "
            "and go to a backorder."
        )
    else:
        split = " as a split shipment" if len(per_node) > 1 else ""
        if split and ctx.split_only_for_service:
            split += " (no single node serves it as well: in full, on time and without substitutes)"
        # "On-time" only when it is: a line placed at a node that ships after ship-by is late.
        which = "the cheapest source(s) with stock" if sourcing.late else "the cheapest on-time source(s)"
        rationale = f"All lines are pickable; released from {sources}{split}, {which}."
    if sourcing.substituted:
        subs = ", ".join(f"line {n}: {lines[n].sku} → {s}" for n, s in sorted(sourcing.substituted.items()))
        rationale += f" Substituted {subs} (the first allowed substitute with stock)."
    if late_promise is not None:
        rationale += f" No node with stock ships by ship-by; the promise date moves to {late_promise}."
    rationale += _wave_sentence(wave_evidence, wave_promise)
    if short and not safety_ok:
        rationale += _safety_kept_back(ctx, views, {lines[n].sku for n in short})
    if used_safety:
        rationale += f" Used safety stock at {', '.join(used_safety)} ({order.priority}/{ctx.customer.tier} order)."
    if disagree:
        rationale += f" ERP book stock is below the allocation at {', '.join(disagree)}: books lag the warehouse."
    evidence = _evidence(ctx, views, plan=sourcing.plan, short=short, safety_ok=safety_ok, disagree=disagree)
    evidence["waves"] = wave_evidence
    evidence["sourcing"] = {
        "binding_constraint": {str(k): v for k, v in sorted(sourcing.why.items())},
        "cost": sourcing.cost,
        "late_lines": {str(k): v for k, v in sorted(sourcing.late.items())},
        "substituted": {str(k): v for k, v in sorted(sourcing.substituted.items())},
        "split_only_for_service": ctx.split_only_for_service,
        **sourcing.stats,
    }
    return Proposal(
        workflow=WORKFLOW,
        subject=order.id,
        outcome="substituted" if sourcing.substituted and not short else status,
        confidence=round(max(0.0, confidence), 4),
        cost_impact=round(cost, 2),
        rationale=rationale,
        evidence=evidence,
        actions=actions,
    )


def _late_promise(
    ctx: ReleaseContext, sourcing: _Sourcing, nodes: dict[str, Node], lanes: dict[str, Lane]
) -> str | None:
    """When a line can only ship late: the new promise is the latest late node's next cutoff + transit."""
    dates = []
    for late_nodes in sourcing.late.values():
        for node_id in late_nodes:
            ships = ship_carrier(nodes.get(node_id), ctx.order.carrier, ctx.now)
            if ships is not None:
                dates.append(ships[1].date() + timedelta(days=lanes[node_id].transit_days))
    return max(dates).isoformat() if dates else None


def _backorder_proposal(ctx: ReleaseContext, short: dict[int, float], lanes: dict[str, Lane]) -> Proposal:
    order = ctx.order
    lines = {ln.line: ln for ln in order.lines}
    actions: list[Action] = []
    promises: dict[int, str | None] = {}
    value = 0.0
    for line_no, qty in sorted(short.items()):
        ln = lines[line_no]
        promise, source = promise_date(ctx.supply.get(ln.sku, []), lanes, ctx.now.date())
        promises[line_no] = promise.isoformat() if promise else None
        value += ctx.skus[ln.sku].unit_cost * qty
        actions.append(
            _act(
                "erp",
                "create_backorder",
                order_id=order.id,
                line=line_no,
                sku=ln.sku,
                qty=qty,
                promise_date=promises[line_no],
                supply=source,
            )
        )
        if promise:
            actions.append(
                _act("oms", "update_promise_date", order_id=order.id, line=line_no, promise_date=promise.isoformat())
            )
    missing = [n for n, p in promises.items() if p is None]
    if missing:
        actions.append(
            _act(
                "notify",
                "ticket",
                team="planning",
                subject=f"No planned supply for {order.id}",
                summary=f"Line(s) {', '.join(map(str, missing))} of {order.id} are short with no open PO or transfer.",
                priority="high" if order.priority == "express" else "normal",
                refs=[order.id],
            )
        )
    dated = {n: p for n, p in promises.items() if p}
    rationale = "Backorder the short quantity; "
    rationale += (
        "promise date(s) "
        + ", ".join(f"line {n}: {p}" for n, p in sorted(dated.items()))
        + " from the earliest planned supply."
        if dated
        else "no planned supply exists, so planning must source it."
    )
    return Proposal(
        workflow=WORKFLOW,
        subject=order.id,
        outcome="backordered",
        confidence=0.75 if not missing else 0.5,
        cost_impact=round(value, 2),
        rationale=rationale,
        evidence={
            "short": {str(k): v for k, v in short.items()},
            "promise_dates": {str(k): v for k, v in promises.items()},
            "supply": {sku: [s.model_dump(mode="json") for s in sup] for sku, sup in ctx.supply.items()},
        },
        actions=actions,
        review_required=True,
        review_reason="a backorder and its promise date go to planner review",
    )


def promise_date(supply: list[Supply], lanes: dict[str, Lane], today: date) -> tuple[date | None, str | None]:
    """Earliest date planned supply can reach the customer: supply date + lane transit."""
    best: tuple[date, str] | None = None
    for s in supply:
        lane = lanes.get(s.node)
        # Supply with no date (a PO without an expected date) cannot back a customer promise.
        if lane is None or s.qty <= 0 or s.date is None:
            continue
        arrival = max(s.date, today) + timedelta(days=lane.transit_days)
        if best is None or arrival < best[0]:
            best = (arrival, f"{s.kind} {s.id} at {s.node}")
    return (best[0], best[1]) if best else (None, None)


def _no_stock(
    ctx: ReleaseContext,
    views: dict[tuple[str, str], _NodeView],
    lanes: dict[str, Lane],
    sourcing: _Sourcing | None = None,
) -> Proposal:
    order = ctx.order
    parts = []
    for ln in order.lines:
        best = max((v.usable for (sku, _), v in views.items() if sku == ln.sku), default=0.0)
        if best < ln.qty:
            parts.append(f"{ln.sku} needs {num(ln.qty)}, best node has {num(best)} usable")
    why = "; ".join(parts) or "no single node can fill every line"
    if not order.allow_split:
        why += " and the order does not allow splitting"
    detail = f"Not enough pickable stock: {why}."
    if not may_use_safety_stock(order, ctx.customer):
        detail += _safety_kept_back(ctx, views, {ln.sku for ln in order.lines})
    proposal = _hold(ctx, "no_stock", detail, 0.9)
    proposal.evidence.update(
        _evidence(ctx, views, plan={}, short={}, safety_ok=may_use_safety_stock(order, ctx.customer))
    )
    if sourcing is not None:
        proposal.evidence["sourcing"] = {
            "binding_constraint": {str(k): v for k, v in sorted(sourcing.why.items())},
            "partial_plan": {str(k): v for k, v in sorted(sourcing.plan.items()) if v},
        }
    return proposal


def _safety_kept_back(ctx: ReleaseContext, views: dict[tuple[str, str], _NodeView], skus: set[str]) -> str:
    """Rationale clause for a standard order that was not allowed to touch safety stock."""
    kept = [
        f"{num(v.safety)} at {sku}@{node}" for (sku, node), v in sorted(views.items()) if sku in skus and v.safety > 0
    ]
    if not kept:
        return ""
    return (
        f" Safety stock ({', '.join(kept)}) was kept back: only express orders and gold customers may use it"
        f" ({ctx.order.priority}/{ctx.customer.tier} order)."
    )


def _hold(ctx: ReleaseContext, reason: str, detail: str, confidence: float) -> Proposal:
    order = ctx.order
    team = "finance" if reason == "credit_hold" else "planning"
    value = sum(ctx.skus[ln.sku].unit_cost * ln.qty for ln in order.lines if ln.sku in ctx.skus)
    actions = [
        _act("oms", "hold_order", order_id=order.id, reason=reason, detail=detail),
        _act("oms", "update_order_status", order_id=order.id, status="held"),
        _act(
            "notify",
            "ticket",
            team=team,
            subject=f"{order.id} held: {reason}",
            summary=detail,
            priority="high" if order.priority == "express" else "normal",
            refs=[order.id, order.customer],
        ),
    ]
    return Proposal(
        workflow=WORKFLOW,
        subject=order.id,
        outcome="held",
        confidence=confidence,
        cost_impact=round(value, 2),
        rationale=f"Held ({reason}). {detail}",
        evidence={"hold_reason": reason, "customer": ctx.customer.model_dump(), "credit_hold": ctx.credit_hold},
        actions=actions,
    )


def _evidence(
    ctx: ReleaseContext,
    views: dict[tuple[str, str], _NodeView],
    *,
    plan: Plan,
    short: dict[int, float],
    safety_ok: bool,
    disagree: list[str] | None = None,
) -> dict[str, Any]:
    lines = []
    for ln in ctx.order.lines:
        lines.append(
            {
                "line": ln.line,
                "sku": ln.sku,
                "qty": ln.qty,
                "nodes": {n: v.evidence for (sku, n), v in sorted(views.items()) if sku == ln.sku},
                "allocated": plan.get(ln.line, {}),
                "short": short.get(ln.line, 0.0),
            }
        )
    return {
        "engine": ENGINE_VERSION,
        "now": ctx.now.isoformat(),
        "customer": {"id": ctx.customer.id, "tier": ctx.customer.tier, "credit_hold": ctx.credit_hold},
        "priority": ctx.order.priority,
        "allow_split": ctx.order.allow_split,
        "safety_stock_allowed": safety_ok,
        "books_disagree": disagree or [],
        "lines": lines,
    }


def releasable_parts(
    order: Order,
    customer: Customer,
    per_node: Mapping[str, list[dict[str, Any]]],
    nodes: Mapping[str, Node],
    stock: Mapping[str, list[NodeStock]],
    now: datetime,
) -> tuple[list[ReleasableOrder], dict[str, str]]:
    """The order's part at each node as the wave planner sees it (zone, carrier, lines).

    A part with no carrier or no zone at its node cannot be planned; it comes back in the
    second value with the reason, keyed by node.
    """
    parts: list[ReleasableOrder] = []
    unplanned: dict[str, str] = {}
    for node_id, node_lines in sorted(per_node.items()):
        ships = ship_carrier(nodes.get(node_id), order.carrier, now)
        zone = busiest_zone(stock, node_id, {x["sku"] for x in node_lines})
        if ships is None or zone is None:
            unplanned[node_id] = f"{node_id} has no carrier" if ships is None else f"no stock location at {node_id}"
            continue
        parts.append(
            ReleasableOrder(
                order_id=order.id,
                node=node_id,
                zone=zone,
                carrier=ships[0].code,
                lines=[(int(x["line"]), str(x["sku"]), float(x["qty"])) for x in node_lines],
                priority=order.priority,
                tier=customer.tier,
                ship_by=order.ship_by,
                created=order.created or now,
                allow_split=order.allow_split,
                split=len(per_node) > 1,
            )
        )
    return parts, unplanned


def _plan_waves_for(
    ctx: ReleaseContext, per_node: dict[str, list[dict[str, Any]]], nodes: dict[str, Node]
) -> tuple[list[Action], dict[str, Any], str | None]:
    """Wave this order now if its zone can pick it before its truck; otherwise leave it for a plan.

    The wave planner sees the order beside the lines already released to each zone: a part
    that fits the planning window is waved at once (its own wave, ``WV-<order>-<node>``); a part
    that would miss its cutoff is not waved and the promise moves to the following cutoff's
    day; a part the window cannot take yet waits for the next tick's plan.
    """
    order = ctx.order
    parts, unplanned = releasable_parts(order, ctx.customer, per_node, nodes, ctx.stock, ctx.now)
    plan = plan_waves(parts, ctx.network.nodes, ctx.now, ctx.wave_window_hours, ctx.committed_lines())
    actions: list[Action] = []
    evidence: dict[str, Any] = {"engine": WAVE_ENGINE, "window_hours": ctx.wave_window_hours}
    for wave in plan.actions:
        if wave.name != "wms.create_wave":
            continue
        node_id = str(wave.payload["node"])
        actions.append(wave.model_copy(update={"payload": {**wave.payload, "waveId": f"WV-{order.id}-{node_id}"}}))
    for part in parts:
        ev = plan.evidence.get(part.key, {})
        evidence[part.node] = {
            k: ev[k] for k in ("outcome", "reason", "score", "cutoff", "zone", "carrier", "capacity") if k in ev
        }
    for node_id, why in unplanned.items():
        # Nothing to plan against: release to the WMS as before and say the wave is unchecked.
        actions.append(
            _act(
                "wms",
                "create_wave",
                waveId=f"WV-{order.id}-{node_id}",
                node=node_id,
                orders=[{"orderId": order.id, "priorityScore": 0.0, "lines": per_node[node_id]}],
                parameters={"workZone": None, "carrierCode": None, "cutoffTime": None},
            )
        )
        evidence[node_id] = {"outcome": "waved_unplanned", "reason": why}
    promise = max((m.promise_date for m in plan.missed), default=None)
    return actions, evidence, promise.isoformat() if promise else None


def _wave_sentence(evidence: dict[str, Any], promise: str | None) -> str:
    missed = sorted(n for n, ev in evidence.items() if isinstance(ev, dict) and ev.get("outcome") == "missed")
    deferred = sorted(n for n, ev in evidence.items() if isinstance(ev, dict) and ev.get("outcome") == "deferred")
    text = ""
    if missed:
        text += (
            f" Not waved at {', '.join(missed)}: the zone cannot pick it before the truck"
            f" ({evidence[missed[0]].get('cutoff')}); the promise moves to {promise}."
        )
    if deferred:
        text += (
            f" Stock reserved at {', '.join(deferred)}; the wave waits for the next plan (the zone's window is full)."
        )
    return text


def busiest_zone(stock: Mapping[str, list[NodeStock]], node: str, skus: set[str]) -> str | None:
    """The zone at ``node`` holding most free units of ``skus``: where the order is picked."""
    by_zone: dict[str, float] = defaultdict(float)
    for sku in skus:
        for ns in stock.get(sku, []):
            if ns.node == node:
                for loc in ns.locations:
                    by_zone[loc.zone] += loc.on_hand - loc.locked
    return max(sorted(by_zone), key=lambda z: by_zone[z]) if by_zone else None


def _nodes_by_id(network: Network) -> dict[str, Node]:
    return {n.id: n for n in network.nodes}


def _act(system: str, type_: str, **payload: Any) -> Action:
    return Action(system=system, type=type_, payload=payload)
