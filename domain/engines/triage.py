"""Exception triage: WMS task exceptions, payment failures and cancellations — pure and deterministic.

WMS task exceptions (``short_pick``, ``damaged``, ``location_locked``, ``not_found``)
-----------------------------------------------------------------------------------
The engine sees the exception with the three systems' context: every location of the SKU at
the node (WMS), pickable stock at the other nodes and planned supply (ERP), and the order with
its priority, split and substitution rules (OMS). It fixes the order with the **cheapest
adequate** play, in this order:

1. ``repick`` — another location at the same node holds the missing units and the node can
   spare them (true physical − other reservations): ``wms.create_task`` ``repick``.
2. ``reallocate`` — another node can pick them: ``oms.release_allocation`` at the old node and
   ``oms.allocate`` at the new one (cheapest customer lane; the whole line's reservation at the
   node moves when the order may not split).
3. ``substitute`` — the order allows it and the SKU's first substitute with stock covers the
   whole line: release, ``oms.substitute_line``, allocate the substitute. Customer-visible: review.
4. ``backorder`` — the order may split and supply is planned: release the missing units,
   ``oms.split_line``, ``erp.create_backorder`` and ``oms.update_promise_date``. A promise to a
   customer: review.
5. ``escalate`` — a packaged ``notify.ticket`` to planning.

What the exception revealed about the stock is corrected once per **case**: the units the
location lacks (recorded − found for a short pick or a missing item: the picker saw the bin;
``expected − found`` damaged units)
give, for missing stock, a ``wms.create_task`` ``cycle_count`` at the location (its own
proposal: cheap, autonomous, and it opens the case in the WMS) and an ``erp.post_adjustment``
proposal (always reviewed: one picker's observation is not a count). A locked location is not a
stock error: nothing is corrected.

Cases (grouping)
----------------
``case_key`` = ``<cause>:<sku>@<node>/<location>`` where the cause is ``missing`` (short pick,
not found), ``damaged`` or ``locked``. Many short picks of one SKU in one location are one
root cause: the first exception opens the case (correction + cycle count carry the case key
in their payload), later ones find the open task of that case in the WMS (``prior``) and only
fix their own order. The units the case already found missing are not counted twice.

Payment failures and cancellations
----------------------------------
A failed payment holds the order (``oms.hold_order`` reason ``payment_failed``) and keeps its
reservations, so the stock is still there when finance retries the card; a ticket goes to
finance. A cancellation releases every reservation the OMS still holds
(``oms.release_allocation`` per line and node), sets the status ``cancelled`` when the OMS has
not, and sends a ticket to the warehouse for each wave that still carries the order (there is
no cancel-wave-line action).

Confidence
----------
``confidence = certainty(play) × (1 − p_override)``, where ``certainty`` is how sure the
playbook is by construction (``PLAY_CERTAINTY``) and ``p_override`` is the probability that a
planner overrides a decision of this kind: from a model learned on past decisions
(``OverrideModel``, trained by ``runtime.learning``) when one is given, else the prior
``PRIOR_OVERRIDE``. The features the model sees are recorded in ``evidence["features"]`` so
the next training reads them back from the decision store.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

from domain.context import Network, NodeStock, OrderView, SkuInfo, Supply, WaveView
from domain.decisions import Action, Proposal, ticket
from domain.engines.release import promise_date, region_lanes
from domain.models import Model
from domain.rationale import money, num, where

ENGINE_VERSION = "triage/1.0.0"
EPS = 1e-9

Reason = Literal["short_pick", "damaged", "location_locked", "not_found"]
Play = Literal[
    "repick",
    "reallocate",
    "substitute",
    "backorder",
    "escalate",
    "correct",
    "count",
    "hold_payment",
    "cancel",
    "no_action",
]
PLAYS: tuple[str, ...] = get_args(Play)
REASONS: tuple[str, ...] = ("short_pick", "damaged", "location_locked", "not_found", "payment_failed", "cancelled")

# How sure each play is by construction (before planners' overrides are taken into account).
PLAY_CERTAINTY: dict[str, float] = {
    "repick": 0.97,
    "reallocate": 0.93,
    "substitute": 0.85,
    "backorder": 0.88,
    "escalate": 0.6,
    "correct": 0.8,
    "count": 0.97,
    "hold_payment": 0.97,
    "cancel": 0.98,
    "no_action": 1.0,
}
# Share of decisions of each play planners override, before any history has been learned.
PRIOR_OVERRIDE: dict[str, float] = {
    "repick": 0.02,
    "reallocate": 0.05,
    "substitute": 0.15,
    "backorder": 0.1,
    "escalate": 0.2,
    "correct": 0.2,
    "count": 0.02,
    "hold_payment": 0.02,
    "cancel": 0.01,
    "no_action": 0.0,
}
# A reallocation or substitution costing more than this share of the goods' value goes to review.
COSTLY_SHARE = 0.5


# --- shapes ---------------------------------------------------------------------------


class WmsTask(Model):
    """A warehouse task as the WMS holds it (read back to find a case's open work)."""

    id: str
    node: str
    task_type: str
    sku: str
    location: str | None = None
    qty: float | None = None
    reason: str | None = None
    status: str = "open"
    order_id: str | None = None
    case_key: str | None = None


@dataclass(frozen=True)
class TaskExceptionFacts:
    task_id: str
    node: str
    sku: str
    reason: Reason
    order_id: str | None = None
    location: str | None = None
    expected_qty: float | None = None
    found_qty: float | None = None


class OverrideEstimator(Protocol):
    def override_probability(self, features: Mapping[str, float]) -> float: ...


@dataclass(frozen=True)
class OverrideModel:
    """A logistic model of P(planner overrides) over named features; pure to evaluate.

    ``runtime.learning`` fits it with scikit-learn and stores the coefficients as JSON, so
    loading a model never unpickles code.
    """

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    samples: int = 0

    def override_probability(self, features: Mapping[str, float]) -> float:
        z = self.intercept + sum(
            c * float(features.get(name, 0.0)) for name, c in zip(self.features, self.coef, strict=True)
        )
        z = max(-30.0, min(30.0, z))
        return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class ExceptionContext:
    """A WMS task exception with what the three systems say around it."""

    facts: TaskExceptionFacts
    now: datetime
    stock: list[NodeStock]  # the SKU at every node (WMS)
    sku_info: SkuInfo | None = None
    supply: list[Supply] = field(default_factory=list)  # the SKU's planned supply (ERP)
    network: Network = field(default_factory=Network)
    order: OrderView | None = None
    tier: str = "standard"
    substitutes: dict[str, list[NodeStock]] = field(default_factory=dict)  # substitute sku -> stock
    prior: list[WmsTask] = field(default_factory=list)  # open tasks of the same SKU at the node
    # False when the WMS has no task API (Tryton): tasks become tickets to the warehouse team.
    wms_tasks: bool = True


# --- features and confidence ----------------------------------------------------------


def case_features(
    play: str, reason: str, cost: float, qty: float, express: bool, gold: bool, grouped: bool
) -> dict[str, float]:
    """The features the override model sees (recorded in evidence for the next training)."""
    out: dict[str, float] = {f"play={p}": float(p == play) for p in PLAYS}
    out.update({f"reason={r}": float(r == reason) for r in REASONS})
    out.update(
        {
            "log_cost": math.log1p(max(0.0, cost)),
            "log_qty": math.log1p(max(0.0, qty)),
            "express": float(express),
            "gold": float(gold),
            "grouped": float(grouped),
        }
    )
    return out


def confidence_for(
    play: str, features: Mapping[str, float], model: OverrideEstimator | None
) -> tuple[float, float, str]:
    """(confidence, p_override, source): the play's certainty discounted by the override risk."""
    if model is not None:
        p, source = model.override_probability(features), "learned"
    else:
        p, source = PRIOR_OVERRIDE.get(play, 0.1), "prior"
    p = min(1.0, max(0.0, p))
    return round(max(0.0, min(1.0, PLAY_CERTAINTY.get(play, 0.5) * (1.0 - p))), 4), round(p, 4), source


# --- case key ---------------------------------------------------------------------------


def cause_of(reason: str) -> str:
    return {"short_pick": "missing", "not_found": "missing", "damaged": "damaged"}.get(reason, "locked")


def case_key(facts: TaskExceptionFacts) -> str:
    """One root cause: the same kind of problem with one SKU in one location of one node."""
    return f"{cause_of(facts.reason)}:{facts.sku}@{facts.node}/{facts.location or '*'}"


# --- WMS task exceptions ---------------------------------------------------------------


@dataclass(frozen=True)
class _Numbers:
    short: float  # units this order line still needs
    lost: float  # units the location lacks (or cannot give) per this exception
    own_here: float  # the line's reservation at the node
    line: int | None
    line_qty: float


def _numbers(ctx: ExceptionContext, here: NodeStock | None) -> _Numbers:
    f = ctx.facts
    line_no: int | None = None
    own = 0.0
    line_qty = 0.0
    if ctx.order is not None:
        for ln in ctx.order.lines:
            if (ln.substituted_by or ln.sku) == f.sku:
                line_no, line_qty = ln.line, ln.qty
                own = sum(a.qty for a in ln.allocations if a.node == f.node)
                break
    expected = f.expected_qty if f.expected_qty is not None else own
    found = f.found_qty if f.found_qty is not None else 0.0
    loc = next((lo for lo in (here.locations if here else []) if lo.location == f.location), None)
    loc_avail = max(0.0, loc.on_hand - loc.locked) if loc else 0.0
    if f.reason == "location_locked":
        short = expected
        lost = loc_avail  # the whole location is out of reach until unlocked, not missing
    elif f.reason == "damaged":
        short = max(0.0, expected - found)  # found = the good units
        lost = short  # the damaged units are written off, the rest of the location stands
    else:
        # The picker saw the location: it holds ``found``, not what the WMS records.
        short = max(0.0, expected - found)
        lost = max(0.0, loc_avail - found) if loc else short
    if line_no is not None:
        short = min(short, own)  # the line can only be short of what it holds at the node
    return _Numbers(
        short=short, lost=min(lost, loc_avail) if loc else lost, own_here=own, line=line_no, line_qty=line_qty
    )


def unknown_refs(ctx: ExceptionContext) -> list[str]:
    """What the exception names that the systems do not know: the node (OMS network), the SKU
    (ERP material master, WMS stock), the order (OMS) and the location (a WMS location record of
    the SKU at the node). An empty network or stock list is no evidence either way."""
    f = ctx.facts
    out: list[str] = []
    nodes = {n.id for n in ctx.network.nodes}
    if nodes and f.node not in nodes:
        out.append(f"node {f.node} is not in the network")
    if ctx.sku_info is None and not ctx.stock:
        out.append(f"SKU {f.sku} is not in the ERP material master nor in WMS stock")
    if f.order_id and ctx.order is None:
        out.append(f"order {f.order_id} is not in the OMS")
    here = next((s for s in ctx.stock if s.node == f.node), None)
    if f.location and ctx.stock and f.location not in {lo.location for lo in (here.locations if here else [])}:
        out.append(f"location {f.location} holds no {f.sku} at {f.node} in the WMS")
    return out


def _unknown(ctx: ExceptionContext, missing: list[str], model: OverrideEstimator | None) -> Proposal:
    """An exception naming what does not exist: no task, move or adjustment, one ticket saying what."""
    f = ctx.facts
    what = "; ".join(missing)
    summary = (
        f"Task {f.task_id} reports a {f.reason.replace('_', ' ')} of {f.sku} at {where(f.node, f.location)}, "
        f"but {what}. Check the task's data before anything is moved, counted or booked."
    )
    evidence: dict[str, Any] = {
        "engine": ENGINE_VERSION,
        "exception": dataclasses.asdict(f),
        "unknown": missing,
    }
    actions = [
        ticket(
            "warehouse",
            f"Task {f.task_id} names what the systems do not know",
            summary,
            [r for r in (f.task_id, f.order_id) if r],
        )
    ]
    return _proposal(
        ctx,
        "escalate",
        f.order_id or f.task_id,
        "escalated",
        f"Escalated, nothing proposed: {summary}",
        evidence,
        actions,
        0.0,
        0.0,
        False,
        model,
    )


def decide_exception(ctx: ExceptionContext, model: OverrideEstimator | None = None) -> list[Proposal]:
    """The order's fix (cheapest adequate play), then the case's stock correction if it is new.

    An exception naming a node, SKU, order or location the systems do not know gets neither: one
    escalation saying what is unknown (never a task for a bin that does not exist)."""
    f = ctx.facts
    missing = unknown_refs(ctx)
    if missing:
        return [_unknown(ctx, missing, model)]
    key = case_key(f)
    here = next((s for s in ctx.stock if s.node == f.node), None)
    n = _numbers(ctx, here)
    prior_case = [t for t in ctx.prior if t.case_key == key and t.status == "open"]
    grouped = bool(prior_case)
    # Units already found missing by this case's earlier exceptions are not in the WMS record
    # either, so they are subtracted once (the case's correction), never per exception.
    lost_known = sum(t.qty or 0.0 for t in prior_case if t.task_type == "cycle_count")
    lost_total = max(n.lost, lost_known) if grouped else n.lost
    unit_cost = ctx.sku_info.unit_cost if ctx.sku_info else 0.0
    case = {"key": key, "grouped": grouped, "prior_tasks": [t.id for t in prior_case]}
    evidence: dict[str, Any] = {
        "engine": ENGINE_VERSION,
        "exception": {
            "task_id": f.task_id,
            "reason": f.reason,
            "node": f.node,
            "sku": f.sku,
            "location": f.location,
            "expected_qty": f.expected_qty,
            "found_qty": f.found_qty,
            "order_id": f.order_id,
        },
        "case": case,
        "short": n.short,
        "lost_at_location": lost_total,
        "stock": {
            s.node: {
                "on_hand": s.on_hand,
                "locked": s.locked,
                "allocated": s.allocated,
                "pickable": s.pickable,
                "locations": {lo.location: lo.on_hand - lo.locked for lo in s.locations},
            }
            for s in ctx.stock
        },
    }
    proposals: list[Proposal] = []
    if ctx.order is None or n.line is None or n.short <= EPS:
        why = (
            "no order is attached"
            if ctx.order is None
            else (
                f"{f.order_id} has no line of {f.sku}"
                if n.line is None
                else (
                    f"{f.order_id} holds no {f.sku} at {f.node}, so the pick did not serve it"
                    if n.own_here <= EPS
                    else "nothing is short for the order"
                )
            )
        )
        proposals.append(
            _proposal(ctx, "no_action", f.order_id or key, "no_action", why, evidence, [], 0.0, 0.0, grouped, model)
        )
    else:
        proposals.append(_fix_order(ctx, n, here, lost_total, evidence, grouped, model))
    proposals.extend(_correction(ctx, n, here, key, grouped, unit_cost, model))
    return proposals


def _spare_here(
    ctx: ExceptionContext, n: _Numbers, here: NodeStock | None, lost: float
) -> tuple[float, list[tuple[str, str, float]]]:
    """Units the node can still give this line, and the other locations that physically hold them."""
    if here is None:
        return 0.0, []
    f = ctx.facts
    true_physical = sum(max(0.0, lo.on_hand - lo.locked) for lo in here.locations) - lost
    # The line's own reservation is in ``allocated``; its missing units are what it asks for again.
    spare = true_physical - here.allocated + n.short
    others = sorted(
        ((lo.location, lo.zone, lo.on_hand - lo.locked) for lo in here.locations if lo.location != f.location),
        key=lambda x: (-x[2], x[0]),
    )
    return spare, [o for o in others if o[2] > EPS]


def _target(
    options: list[tuple[float, int, str, float]],
    move: float,
    here: NodeStock | None,
    n: _Numbers,
    grouped: bool,
    evidence: dict[str, Any],
) -> tuple[float, int, str, float]:
    """The node a re-allocation goes to: the cheapest lane, unless the case is a burst.

    In a burst (``grouped``: an earlier exception of the same root cause opened the case), the
    other orders short at this node may have re-allocations of their own waiting for review,
    which the OMS does not show yet: two of them could claim the same units elsewhere. The
    other orders can move at most what they reserve at the node, so the cheapest node whose
    pickable covers this move *and* all of that holds for every one of them; when none does,
    the node with the most pickable (the most room left for the others).
    """
    if not grouped:
        return options[0]
    others_here = max(0.0, (here.allocated if here else 0.0) - n.own_here)
    covering = [o for o in options if o[3] + EPS >= move + others_here]
    chosen = covering[0] if covering else max(options, key=lambda o: (o[3], -o[0], -o[1]))
    evidence["burst_headroom"] = {
        "others_reserved_at_node": others_here,
        "covers_every_other_order": bool(covering),
        "cheapest": options[0][2],
        "chosen": chosen[2],
    }
    return chosen


def _fix_order(
    ctx: ExceptionContext,
    n: _Numbers,
    here: NodeStock | None,
    lost: float,
    evidence: dict[str, Any],
    grouped: bool,
    model: OverrideEstimator | None,
) -> Proposal:
    f = ctx.facts
    assert ctx.order is not None and n.line is not None
    order = ctx.order.order
    unit_cost = ctx.sku_info.unit_cost if ctx.sku_info else 0.0
    subject = order.id
    spare, others = _spare_here(ctx, n, here, lost)
    evidence["spare_at_node"] = round(spare, 6)
    tried: list[str] = []
    # 1. Re-pick from another location at the node.
    holding = sum(q for _, _, q in others)
    if spare + EPS >= n.short and holding + EPS >= n.short:
        picks, left = [], n.short
        for loc, zone, qty in others:
            if left <= EPS:
                break
            take = min(qty, left)
            picks.append((loc, zone, take))
            left -= take
        actions = [
            _task_or_ticket(
                ctx,
                {
                    "task_type": "repick",
                    "node": f.node,
                    "sku": f.sku,
                    "location": loc,
                    "qty": take,
                    "order_id": order.id,
                    "line": n.line,
                    "reason": f"{f.reason} at {where(f.node, f.location)} on task {f.task_id}",
                    "case_key": case_key(f),
                },
            )
            for loc, _, take in picks
        ]
        spots = ", ".join(f"{num(take)} from {loc}" for loc, _, take in picks)
        rationale = (
            f"{f.reason.replace('_', ' ')} of {num(n.short)} {f.sku} at {where(f.node, f.location)}: "
            "the node still holds "
            f"{num(holding)} in other locations and can spare {num(spare)}, so the order is re-picked ({spots})."
        )
        return _proposal(
            ctx, "repick", subject, "auto_resolved", rationale, evidence, actions, 0.0, n.short, grouped, model
        )
    tried.append(f"{f.node} can spare {num(max(0.0, spare))} of {num(n.short)}")
    # 2. Re-allocate to another node.
    lanes = region_lanes(ctx.network, order.region)
    has_other_lines_here = any(
        ln.line != n.line and any(a.node == f.node for a in ln.allocations) for ln in ctx.order.lines
    )
    move = n.short if order.allow_split else n.own_here
    if order.allow_split or not has_other_lines_here:
        options = sorted(
            (
                (lanes[s.node].cost_per_unit, lanes[s.node].transit_days, s.node, s.pickable)
                for s in ctx.stock
                if s.node != f.node and s.node in lanes and s.pickable + EPS >= move
            ),
        )
        if options and move > EPS:
            cost_per_unit, _, node, pickable = _target(options, move, here, n, grouped, evidence)
            own_lane = lanes.get(f.node)
            extra = max(0.0, cost_per_unit - (own_lane.cost_per_unit if own_lane else 0.0)) * move
            actions = [
                Action(
                    system="oms",
                    type="release_allocation",
                    payload={"order_id": order.id, "line": n.line, "node": f.node, "qty": move},
                ),
                Action(
                    system="oms",
                    type="allocate",
                    payload={"order_id": order.id, "line": n.line, "node": node, "sku": f.sku, "qty": move},
                ),
            ]
            rationale = (
                f"{f.node} cannot cover the {num(n.short)} {f.sku} missing at {where(f.node, f.location)} "
                f"({tried[-1]}); {node} has "
                f"{num(pickable)} pickable and the cheapest lane to {order.region}, so {num(move)} "
                f"{'units move' if order.allow_split else '(the whole line, the order may not split) move'} there."
            )
            evidence["reallocation"] = {"to": node, "qty": move, "extra_lane_cost": round(extra, 2)}
            return _proposal(
                ctx,
                "reallocate",
                subject,
                "auto_resolved",
                rationale,
                evidence,
                actions,
                extra,
                move,
                grouped,
                model,
                costly=extra > COSTLY_SHARE * unit_cost * move + EPS and unit_cost > 0,
            )
        tried.append(f"no other node can pick {num(move)} with a lane to {order.region}")
    else:
        tried.append("the order may not split and has other lines at the node")
    # 3. Substitute the whole line.
    if order.allow_substitution and ctx.sku_info is not None:
        for sub in ctx.sku_info.substitutes:
            sub_options = sorted(
                (lanes[s.node].cost_per_unit, s.node)
                for s in ctx.substitutes.get(sub, [])
                if s.node in lanes and s.pickable + EPS >= n.line_qty
            )
            if not sub_options:
                continue
            sub_node = sub_options[0][1]
            line_view = next(ln for ln in ctx.order.lines if ln.line == n.line)
            actions = [
                Action(
                    system="oms",
                    type="release_allocation",
                    payload={"order_id": order.id, "line": n.line, "node": a.node, "qty": a.qty},
                )
                for a in line_view.allocations
                if a.qty > EPS
            ]
            actions += [
                Action(
                    system="oms",
                    type="substitute_line",
                    payload={"order_id": order.id, "line": n.line, "substitute": sub},
                ),
                Action(
                    system="oms",
                    type="allocate",
                    payload={"order_id": order.id, "line": n.line, "node": sub_node, "sku": sub, "qty": n.line_qty},
                ),
            ]
            rationale = (
                f"{f.sku} cannot be found for {order.id} ({'; '.join(tried)}); the order allows substitution and "
                f"{sub} has {num(n.line_qty)} at {sub_node}, so the line is substituted."
            )
            return _proposal(
                ctx,
                "substitute",
                subject,
                "substituted",
                rationale,
                evidence,
                actions,
                0.0,
                n.line_qty,
                grouped,
                model,
                review="a substitution changes what the customer receives",
            )
        tried.append("no substitute with stock for the whole line")
    # 4. Split and backorder with a new promise date.
    if order.allow_split:
        promise, source = promise_date(ctx.supply, lanes, ctx.now.date())
        if promise is not None:
            actions = (
                [
                    Action(
                        system="oms",
                        type="release_allocation",
                        payload={"order_id": order.id, "line": n.line, "node": f.node, "qty": min(n.short, n.own_here)},
                    )
                ]
                if n.own_here > EPS
                else []
            )
            actions += [
                Action(
                    system="oms",
                    type="split_line",
                    payload={"order_id": order.id, "line": n.line, "backorder_qty": n.short},
                ),
                Action(
                    system="erp",
                    type="create_backorder",
                    payload={
                        "order_id": order.id,
                        "line": n.line,
                        "sku": f.sku,
                        "qty": n.short,
                        "promise_date": promise.isoformat(),
                        "supply": source,
                    },
                ),
                Action(
                    system="oms",
                    type="update_promise_date",
                    payload={"order_id": order.id, "line": n.line, "promise_date": promise.isoformat()},
                ),
            ]
            rationale = (
                f"No stock anywhere covers the {num(n.short)} {f.sku} {order.id} lost ({'; '.join(tried)}); "
                "the order may "
                f"split, so they are backordered against {source} with a new promise of {promise.isoformat()}."
            )
            return _proposal(
                ctx,
                "backorder",
                subject,
                "backordered",
                rationale,
                evidence,
                actions,
                unit_cost * n.short,
                n.short,
                grouped,
                model,
                review="a new promise date is given to the customer",
            )
        tried.append("no dated supply to promise against")
    else:
        tried.append("the order may not split")
    # 5. Escalate with a packaged ticket.
    summary = (
        f"Task {f.task_id}: {f.reason.replace('_', ' ')} of {f.sku} at {where(f.node, f.location)}; {order.id} line "
        f"{n.line} is short {num(n.short)}. Tried: {'; '.join(tried)}. Case {case_key(f)}."
    )
    priority = "high" if order.priority == "express" or ctx.tier == "gold" else "normal"
    actions = [
        ticket(
            "planning",
            f"{order.id}: {f.reason.replace('_', ' ')} of {f.sku} needs a planner",
            summary,
            [order.id, f.task_id, case_key(f)],
            priority,
        )
    ]
    return _proposal(
        ctx,
        "escalate",
        subject,
        "escalated",
        f"No play covers it: {summary}",
        evidence,
        actions,
        unit_cost * n.short,
        n.short,
        grouped,
        model,
    )


def _correction(
    ctx: ExceptionContext,
    n: _Numbers,
    here: NodeStock | None,
    key: str,
    grouped: bool,
    unit_cost: float,
    model: OverrideEstimator | None,
) -> list[Proposal]:
    """Correct the stock picture once per case: a cycle count now, a book adjustment after review.

    Two proposals, so the gate can run the cheap count (which opens the case in the WMS) at
    once while the adjustment waits for a planner.
    """
    f = ctx.facts
    if grouped or f.reason == "location_locked" or n.lost <= EPS or f.location is None:
        return []
    subject = f"{f.sku}@{f.node}/{f.location}"
    cost = round(n.lost * unit_cost, 2)
    evidence = {
        "engine": ENGINE_VERSION,
        "case": {"key": key, "grouped": False, "prior_tasks": []},
        "lost_at_location": n.lost,
        "location_record": next(
            (
                {"on_hand": lo.on_hand, "locked": lo.locked}
                for lo in (here.locations if here else [])
                if lo.location == f.location
            ),
            None,
        ),
    }
    out: list[Proposal] = []
    what = f"Task {f.task_id} found {num(n.lost)} {f.sku} fewer at {where(f.node, f.location)} than the WMS records"
    if f.reason in ("short_pick", "not_found"):
        count = _task_or_ticket(
            ctx,
            {
                "task_type": "cycle_count",
                "node": f.node,
                "sku": f.sku,
                "location": f.location,
                "qty": n.lost,
                "reason": (
                    f"task {f.task_id}: {f.reason} found {num(f.found_qty or 0)}, expected {num(f.expected_qty or 0)}"
                ),
                "case_key": key,
            },
        )
        out.append(
            _proposal(
                ctx,
                "count",
                subject,
                "cycle_count",
                f"{what}: the location is cycle counted (case {key}).",
                dict(evidence),
                [count],
                0.0,
                n.lost,
                False,
                model,
            )
        )
    adjust = Action(
        system="erp",
        type="post_adjustment",
        payload={
            "node": f.node,
            "sku": f.sku,
            "qty_delta": -n.lost,
            "reason": f"{f.reason} at {f.location} (task {f.task_id}, case {key})",
        },
    )
    out.append(
        _proposal(
            ctx,
            "correct",
            subject,
            "stock_correction",
            f"{what}: the ERP book is proposed down by {num(n.lost)} ({money(cost)}), for review because one "
            "pick is not a "
            "count.",
            dict(evidence),
            [adjust],
            cost,
            n.lost,
            False,
            model,
            review="a book adjustment waits for the cycle count",
        )
    )
    return out


def _task_or_ticket(ctx: ExceptionContext, payload: dict[str, Any]) -> Action:
    """A ``wms.create_task``, or the same work as a warehouse ticket when the WMS has no task API."""
    if ctx.wms_tasks:
        return Action(system="wms", type="create_task", payload=payload)
    place = where(str(payload["node"]), payload.get("location"))
    return ticket(
        "warehouse",
        f"{payload['task_type'].replace('_', ' ')} {num(payload['qty'])} {payload['sku']} at {place}",
        f"{payload['task_type']}: {payload.get('reason') or ''} (case {payload.get('case_key')}).",
        [str(v) for v in (payload.get("order_id"), payload.get("case_key")) if v],
    )


def _proposal(
    ctx: ExceptionContext,
    play: str,
    subject: str,
    outcome: str,
    rationale: str,
    evidence: dict[str, Any],
    actions: list[Action],
    cost: float,
    qty: float,
    grouped: bool,
    model: OverrideEstimator | None,
    review: str | None = None,
    costly: bool = False,
) -> Proposal:
    express = ctx.order is not None and ctx.order.order.priority == "express"
    feats = case_features(play, ctx.facts.reason, cost, qty, express, ctx.tier == "gold", grouped)
    conf, p_override, source = confidence_for(play, feats, model)
    if costly and review is None:
        review = f"the {play} costs {num(cost)}, more than {COSTLY_SHARE:.0%} of the goods' value"
    ev = {**evidence, "play": play, "features": feats, "override": {"p": p_override, "source": source}}
    return Proposal(
        workflow="exception_triage",
        subject=subject,
        outcome=outcome,
        confidence=conf,
        cost_impact=round(cost, 2),
        rationale=rationale,
        evidence=ev,
        actions=actions,
        review_required=review is not None,
        review_reason=review,
    )


# --- payment failures and cancellations ------------------------------------------------


def decide_payment_failed(
    view: OrderView | None,
    order_id: str,
    reason: str | None,
    tier: str = "standard",
    model: OverrideEstimator | None = None,
) -> Proposal:
    """Hold the order for ``payment_failed``, keep its reservations, ticket finance."""
    base: dict[str, Any] = {"engine": ENGINE_VERSION, "reason": reason}
    if view is None or view.status in ("cancelled", "shipped"):
        why = "the OMS does not know the order" if view is None else f"the order is already {view.status}"
        feats = case_features("no_action", "payment_failed", 0.0, 0.0, False, tier == "gold", False)
        return Proposal(
            workflow="exception_triage",
            subject=order_id,
            outcome="no_action",
            confidence=1.0,
            rationale=f"Payment failed for {order_id} but {why}; nothing to hold.",
            evidence={**base, "play": "no_action", "features": feats, "status": view.status if view else None},
        )
    value = sum(sum(a.qty for a in ln.allocations) for ln in view.lines)
    express = view.order.priority == "express"
    feats = case_features("hold_payment", "payment_failed", 0.0, value, express, tier == "gold", False)
    conf, p, source = confidence_for("hold_payment", feats, model)
    detail = f"payment failed: {reason or 'no reason given'}"
    actions = [
        Action(
            system="oms",
            type="hold_order",
            payload={"order_id": order_id, "reason": "payment_failed", "detail": detail},
        ),
        ticket(
            "finance",
            f"Payment failed for {order_id}",
            f"{detail}. The order is held with its {num(value)} reserved units kept; retry the payment or ask the "
            "customer for another method, then release the hold.",
            [order_id],
            "high" if express or tier == "gold" else "normal",
        ),
    ]
    return Proposal(
        workflow="exception_triage",
        subject=order_id,
        outcome="held",
        confidence=conf,
        rationale=(
            f"Held for payment_failed ({detail}); its reservations are kept so the stock is there when payment clears."
        ),
        evidence={
            **base,
            "play": "hold_payment",
            "features": feats,
            "override": {"p": p, "source": source},
            "status_before": view.status,
            "reserved_units": value,
        },
        actions=actions,
    )


def decide_cancellation(
    view: OrderView | None,
    order_id: str,
    reason: str | None,
    waves: list[WaveView],
    model: OverrideEstimator | None = None,
) -> Proposal:
    """Release what the OMS still reserves, set cancelled, ticket the warehouse for waves carrying it."""
    base: dict[str, Any] = {"engine": ENGINE_VERSION, "reason": reason}
    if view is None or view.status == "shipped":
        why = "the OMS does not know the order" if view is None else "the order has already shipped"
        return Proposal(
            workflow="exception_triage",
            subject=order_id,
            outcome="no_action" if view is None else "escalated",
            confidence=1.0 if view is None else 0.9,
            rationale=f"Cancellation of {order_id}: {why}.",
            evidence={**base, "play": "no_action"},
            actions=[]
            if view is None
            else [
                ticket(
                    "customer_service",
                    f"{order_id} cancelled after shipping",
                    f"{order_id} was cancelled ({reason}) but has shipped: arrange a return.",
                    [order_id],
                )
            ],
        )
    actions: list[Action] = []
    released = 0.0
    for ln in view.lines:
        for a in ln.allocations:
            if a.qty > EPS:
                released += a.qty
                actions.append(
                    Action(
                        system="oms",
                        type="release_allocation",
                        payload={"order_id": order_id, "line": ln.line, "node": a.node, "qty": a.qty},
                    )
                )
    if view.status != "cancelled":
        actions.append(
            Action(system="oms", type="update_order_status", payload={"order_id": order_id, "status": "cancelled"})
        )
    on_waves = sorted(
        (w.wave_id, w.node) for w in waves if order_id in w.orders and w.status not in ("cancelled", "done")
    )
    for wave_id, node in on_waves:
        actions.append(
            ticket(
                "warehouse",
                f"Pull {order_id} from wave {wave_id}",
                f"{order_id} was cancelled ({reason or 'no reason given'}); its picks on wave {wave_id} at {node} must "
                "not ship. Return any picked units to stock.",
                [order_id, wave_id],
                "high",
            )
        )
    feats = case_features("cancel", "cancelled", 0.0, released, view.order.priority == "express", False, False)
    conf, p, source = confidence_for("cancel", feats, model)
    rationale = (
        f"{order_id} cancelled ({reason or 'no reason given'}): "
        + (f"{num(released)} reserved units released" if released > EPS else "no reservation left to release")
        + (f", {len(on_waves)} wave(s) to pull it from (ticket to the warehouse)" if on_waves else "")
        + "."
    )
    return Proposal(
        workflow="exception_triage",
        subject=order_id,
        outcome="cancelled" if actions else "no_action",
        confidence=conf,
        rationale=rationale,
        evidence={
            **base,
            "play": "cancel",
            "features": feats,
            "override": {"p": p, "source": source},
            "released": released,
            "waves": [w for w, _ in on_waves],
            "status_before": view.status,
        },
        actions=actions,
    )
