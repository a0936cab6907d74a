"""The naive baseline policy: the yardstick every improvement is measured against.

FIFO, each line from the nearest node whose ERP *book* stock covers it (no WMS view, no
locks, no credit check), and everything it cannot place escalated to a human. It is
what many shops run today; its oversells and escalations are the point of comparison.
"""

from __future__ import annotations

from typing import Any

from domain.decisions import Action, Proposal, ticket
from domain.engines.clock import ship_carrier
from domain.engines.release import ReleaseContext, busiest_zone, validate_order
from domain.engines.waves import rfc3339

ENGINE_VERSION = "baseline/1.0.0"


def decide_baseline_release(ctx: ReleaseContext) -> Proposal:
    order = ctx.order
    validate_order(order, ctx.skus)
    lanes = {ln.from_node: ln for ln in ctx.network.lanes if ln.to_region == order.region}
    nearest = sorted(lanes.values(), key=lambda ln: (ln.transit_days, ln.cost_per_unit, ln.from_node))
    plan: dict[int, str] = {}
    for ln in order.lines:
        book = {b.node: b.qty - b.blocked for b in ctx.book.get(ln.sku, [])}
        node = next((lane.from_node for lane in nearest if book.get(lane.from_node, 0.0) >= ln.qty), None)
        if node is None:
            return escalate(order.id, f"No node's ERP book stock covers {ln.sku} x{ln.qty:g}.", "order_release")
        plan[ln.line] = node
    actions: list[Action] = []
    per_node: dict[str, list[dict[str, Any]]] = {}
    cost = 0.0
    for ln in order.lines:
        node = plan[ln.line]
        actions.append(
            Action(
                system="oms",
                type="allocate",
                payload={"order_id": order.id, "line": ln.line, "sku": ln.sku, "node": node, "qty": ln.qty},
            )
        )
        per_node.setdefault(node, []).append({"line": ln.line, "sku": ln.sku, "qty": ln.qty})
        cost += lanes[node].cost_per_unit * ln.qty
    nodes = {n.id: n for n in ctx.network.nodes}
    for node, node_lines in sorted(per_node.items()):
        actions.append(fifo_wave(ctx, node, nodes, node_lines))
    actions.append(
        Action(system="oms", type="update_order_status", payload={"order_id": order.id, "status": "released"})
    )
    return Proposal(
        workflow="order_release",
        subject=order.id,
        outcome="released",
        confidence=0.8,
        cost_impact=round(cost, 2),
        rationale=f"Baseline: each line from the nearest node with ERP book stock ({', '.join(sorted(per_node))}).",
        evidence={"engine": ENGINE_VERSION, "plan": {str(k): v for k, v in plan.items()}},
        actions=actions,
    )


def escalate(subject: str, why: str, workflow: str) -> Proposal:
    """Baseline answer to anything it cannot place: a ticket and a human."""
    return Proposal(
        workflow=workflow,
        subject=subject,
        outcome="escalated",
        confidence=0.5,
        cost_impact=0.0,
        rationale=f"Baseline escalates to a human: {why}",
        evidence={"engine": ENGINE_VERSION},
        actions=[ticket("planning", f"Escalated: {subject}", why, [subject])],
        review_required=True,
        review_reason="the baseline policy escalates everything it cannot place",
    )


def fifo_wave(ctx: ReleaseContext, node: str, nodes: dict[str, Any], node_lines: list[dict[str, Any]]) -> Action:
    """The order's own wave, no capacity check and no score (FIFO: first come, first picked)."""
    ships = ship_carrier(nodes.get(node), ctx.order.carrier, ctx.now)
    return Action(
        system="wms",
        type="create_wave",
        payload={
            "waveId": f"WV-{ctx.order.id}-{node}",
            "node": node,
            "orders": [{"orderId": ctx.order.id, "priorityScore": 0.0, "lines": node_lines}],
            "parameters": {
                "workZone": busiest_zone(ctx.stock, node, {x["sku"] for x in node_lines}),
                "carrierCode": ships[0].code if ships else None,
                "cutoffTime": rfc3339(ships[1]) if ships else None,
            },
        },
    )
