"""The rules policy: an honest rule-based router, the comparison a shop running one would make.

What order-brokering rules in an OMS do (filter nodes by available stock, sort by distance,
split only when no node can fill), and nothing more:

* **Stock** is the WMS's pickable quantity (on hand − locked − allocated), never the ERP book,
  so it never oversells; the release is reserved under the SKU lock and re-checked against
  the WMS before it executes (``verify_stock``), like the crossdock policy.
* **Nearest first**: nodes with a lane to the order's region, by lane transit days, then lane
  cost per unit, then node id.
* **One node when possible**: the nearest node that can fill every line takes the whole order.
  Only when no single node can, and the order allows splitting, each line goes to the nearest
  node that can fill it, and a line no node can fill alone is spread over the nearest nodes.
* **Hold, not oversell**: an order the network cannot fill (or that does not allow a split it
  would need) is held with a ticket; so is one whose customer is on credit hold.
* **Waves**: the baseline's FIFO wave, one per order and node (no capacity check, no score).

No safety-stock rule, no substitution, no cost/lateness trade-off, no re-sourcing on ticks:
those are what the crossdock policy adds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from domain.decisions import Action, Proposal
from domain.engines.baseline import fifo_wave
from domain.engines.release import ReleaseContext, region_lanes, validate_order
from domain.models import Lane
from domain.rationale import num

ENGINE_VERSION = "rules/1.0.0"
WORKFLOW = "order_release"

Plan = dict[int, dict[str, float]]  # line -> node -> qty


def nearest_nodes(lanes: dict[str, Lane]) -> list[str]:
    """Nodes serving the region, nearest first: transit days, then lane cost, then id."""
    return sorted(lanes, key=lambda n: (lanes[n].transit_days, lanes[n].cost_per_unit, n))


def decide_rules_release(ctx: ReleaseContext) -> Proposal:
    """Release from the nearest node that can fill the order; split only when none can; else hold."""
    order = ctx.order
    validate_order(order, ctx.skus)
    if ctx.credit_hold:
        return _hold(ctx, "credit_hold", f"Customer {order.customer} is on credit hold in the ERP.")
    lanes = region_lanes(ctx.network, order.region)
    if not lanes:
        return _hold(ctx, "review", f"No lane serves region {order.region!r}; the order cannot be sourced.")
    nearest = nearest_nodes(lanes)
    free: dict[tuple[str, str], float] = defaultdict(float)
    for sku_stock in ctx.stock.values():
        for ns in sku_stock:
            if ns.node in lanes:
                free[(ns.sku, ns.node)] += max(0.0, ns.pickable)

    single = next((n for n in nearest if _fills_all(ctx, n, free)), None)
    if single is not None:
        return _release(ctx, {ln.line: {single: ln.qty} for ln in order.lines}, lanes, split=False)
    if not order.allow_split:
        return _hold(
            ctx, "no_stock", "No single node has pickable stock for every line and the order does not allow splitting."
        )
    plan = _split_plan(ctx, nearest, free)
    if plan is None:
        short = _short_lines(ctx, nearest, free)
        return _hold(ctx, "no_stock", f"Not enough pickable stock in the network: {short}.")
    return _release(ctx, plan, lanes, split=True)


def _fills_all(ctx: ReleaseContext, node: str, free: dict[tuple[str, str], float]) -> bool:
    need: dict[str, float] = defaultdict(float)
    for ln in ctx.order.lines:
        need[ln.sku] += ln.qty
    return all(free.get((sku, node), 0.0) + 1e-9 >= qty for sku, qty in need.items())


def _split_plan(ctx: ReleaseContext, nearest: list[str], free: dict[tuple[str, str], float]) -> Plan | None:
    """Each line from the nearest node that can fill it; a line none can fill alone is spread
    over the nearest nodes with stock. None when the network cannot fill every line."""
    left = dict(free)
    plan: Plan = {}
    for ln in ctx.order.lines:
        whole = next((n for n in nearest if left.get((ln.sku, n), 0.0) + 1e-9 >= ln.qty), None)
        if whole is not None:
            plan[ln.line] = {whole: ln.qty}
            left[(ln.sku, whole)] = left.get((ln.sku, whole), 0.0) - ln.qty
            continue
        need = ln.qty
        parts: dict[str, float] = {}
        for n in nearest:
            take = min(need, left.get((ln.sku, n), 0.0))
            if take > 1e-9:
                parts[n] = take
                left[(ln.sku, n)] -= take
                need -= take
            if need <= 1e-9:
                break
        if need > 1e-9:
            return None
        plan[ln.line] = parts
    return plan


def _short_lines(ctx: ReleaseContext, nearest: list[str], free: dict[tuple[str, str], float]) -> str:
    parts = []
    for ln in ctx.order.lines:
        total = sum(free.get((ln.sku, n), 0.0) for n in nearest)
        if total + 1e-9 < ln.qty:
            parts.append(f"{ln.sku} needs {num(ln.qty)}, the network has {num(total)} pickable")
    return "; ".join(parts) or "lines of one SKU together need more than is pickable"


def _release(ctx: ReleaseContext, plan: Plan, lanes: dict[str, Lane], *, split: bool) -> Proposal:
    order = ctx.order
    skus = {ln.line: ln.sku for ln in order.lines}
    actions: list[Action] = []
    per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cost = 0.0
    for line_no, by_node in sorted(plan.items()):
        for node, qty in sorted(by_node.items()):
            sku = skus[line_no]
            actions.append(
                Action(
                    system="oms",
                    type="allocate",
                    payload={"order_id": order.id, "line": line_no, "sku": sku, "node": node, "qty": qty},
                )
            )
            per_node[node].append({"line": line_no, "sku": sku, "qty": qty})
            cost += lanes[node].cost_per_unit * qty
    nodes = {n.id: n for n in ctx.network.nodes}
    for node, node_lines in sorted(per_node.items()):
        actions.append(fifo_wave(ctx, node, nodes, node_lines))
    actions.append(
        Action(system="oms", type="update_order_status", payload={"order_id": order.id, "status": "released"})
    )
    where = ", ".join(sorted(per_node))
    rationale = (
        f"Rules: no single node can fill the order; each line goes to the nearest node with pickable stock ({where})."
        if split
        else f"Rules: the nearest node with pickable stock for every line ({where}) takes the whole order."
    )
    return Proposal(
        workflow=WORKFLOW,
        subject=order.id,
        outcome="released",
        confidence=0.9,
        cost_impact=round(cost, 2),
        rationale=rationale,
        evidence={
            "engine": ENGINE_VERSION,
            "plan": {str(k): v for k, v in sorted(plan.items())},
            "nearest_first": nearest_nodes(lanes),
            "split": split,
        },
        actions=actions,
    )


def _hold(ctx: ReleaseContext, reason: str, detail: str) -> Proposal:
    order = ctx.order
    team = "finance" if reason == "credit_hold" else "planning"
    value = sum(ctx.skus[ln.sku].unit_cost * ln.qty for ln in order.lines if ln.sku in ctx.skus)
    return Proposal(
        workflow=WORKFLOW,
        subject=order.id,
        outcome="held",
        confidence=0.9,
        cost_impact=round(value, 2),
        rationale=f"Rules: held ({reason}). {detail}",
        evidence={"engine": ENGINE_VERSION, "hold_reason": reason},
        actions=[
            Action(system="oms", type="hold_order", payload={"order_id": order.id, "reason": reason, "detail": detail}),
            Action(system="oms", type="update_order_status", payload={"order_id": order.id, "status": "held"}),
            Action(
                system="notify",
                type="ticket",
                payload={
                    "team": team,
                    "subject": f"{order.id} held: {reason}",
                    "summary": detail,
                    "priority": "high" if order.priority == "express" else "normal",
                    "refs": [order.id, order.customer],
                },
            ),
        ],
    )
