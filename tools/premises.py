"""What a decision stood on: the facts it was decided on, read again when a planner approves it.

``read_facts`` reads, for a plan's actions and subject, the orders (status, lines, reservations),
the stock the plan consumes or waits for, the orders' wave membership and the purchase orders it
touches. ``moved`` compares two readings and names each change that matters to the plan: an
order, a wave or a document that changed at all; stock the plan consumes that no longer covers
it; stock a hold or a transfer's destination waited for that has risen. Other stock movements
do not make a proposal stale, so a busy warehouse does not invalidate every pending review.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from domain.decisions import Action
from domain.errors import PermanentConnectorError, UnknownOrder
from tools.context import Systems

SCOPES = {"read_facts": "oms:read wms:read erp:read"}
EPS = 1e-9
# Workflows whose subject is an order id.
ORDER_WORKFLOWS = frozenset({"order_release", "allocation", "customer_service"})


def _order_ids(workflow: str, subject: str, actions: list[Action]) -> set[str]:
    ids = {str(a.payload["order_id"]) for a in actions if a.payload.get("order_id")}
    for a in actions:
        if a.name == "wms.create_wave":
            ids |= {str(o.get("orderId")) for o in a.payload.get("orders", []) if isinstance(o, dict)}
    if workflow in ORDER_WORKFLOWS and subject not in ("waves", "backlog"):
        ids.add(subject)
    return ids


def _needs(actions: list[Action]) -> tuple[dict[str, float], set[str]]:
    """Stock the plan consumes (``sku@node`` → qty) and stock it waits for (``sku@node``)."""
    need: dict[str, float] = defaultdict(float)
    watch: set[str] = set()
    for a in actions:
        p = a.payload
        if a.name == "oms.allocate":
            need[f"{p['sku']}@{p['node']}"] += float(p.get("qty") or 0)
        elif a.name == "wms.create_transfer":
            need[f"{p['sku']}@{p['from']}"] += float(p.get("qty") or 0)
            watch.add(f"{p['sku']}@{p['to']}")
    return dict(need), watch


def _order_fact(systems: Systems, order_id: str) -> dict[str, Any]:
    try:
        view = systems.oms.order(order_id)
    except (UnknownOrder, LookupError, PermanentConnectorError):
        return {"missing": True}
    return {
        "status": view.status,
        "hold_reason": view.hold_reason,
        "lines": [
            [
                ln.line,
                ln.sku,
                ln.qty,
                sorted([al.node, al.qty] for al in ln.allocations if al.qty > 0),
                ln.substituted_by,
            ]
            for ln in sorted(view.lines, key=lambda x: x.line)
        ],
    }


def _allocated(fact: dict[str, Any]) -> bool:
    return any(line[3] for line in fact.get("lines", []))


def read_facts(
    systems: Systems, workflow: str, subject: str, actions: list[Action], orders_only: bool = False
) -> dict[str, Any]:
    """Read the facts a plan of ``actions`` on ``subject`` stands on (see the module's docstring).
    ``orders_only``: just the orders (what a decision that runs at once needs to be undone)."""
    orders = {oid: _order_fact(systems, oid) for oid in sorted(_order_ids(workflow, subject, actions))}
    if orders_only:
        return {"orders": orders}
    need, watch = _needs(actions)
    if not need:
        # A plan that reserves nothing for an open order (a hold): it waits for stock of the lines.
        for fact in orders.values():
            if not fact.get("missing") and not _allocated(fact) and fact["status"] in ("open", "held"):
                watch |= {f"{line[1]}@*" for line in fact["lines"]}
    stock: dict[str, dict[str, float]] = {}
    by_sku: dict[str, list[str]] = defaultdict(list)
    for key in sorted(set(need) | watch):
        by_sku[key.rpartition("@")[0]].append(key)
    for sku, keys in sorted(by_sku.items()):
        try:
            pickable = {ns.node: ns.pickable for ns in systems.wms.stock(sku)}
        except (LookupError, PermanentConnectorError):
            pickable = {}
        for key in keys:
            node = key.rpartition("@")[2]
            have = sum(pickable.values()) if node == "*" else pickable.get(node, 0.0)
            stock[key] = {"pickable": round(have, 6), "need": round(need.get(key, 0.0), 6)}
    facts: dict[str, Any] = {"orders": orders, "stock": stock}
    if orders:
        waved: dict[str, list[str]] = {oid: [] for oid in orders}
        for wave in systems.wms.waves():
            if wave.status in ("cancelled",):
                continue
            for oid in wave.orders:
                if oid in waved:
                    waved[oid].append(wave.wave_id)
        facts["waves"] = {oid: sorted(set(nodes)) for oid, nodes in waved.items()}
    pos = sorted({str(a.payload["po_id"]) for a in actions if a.payload.get("po_id")})
    if pos:
        facts["pos"] = {}
        for po_id in pos:
            try:
                view = systems.erp.purchase_order(po_id)
                facts["pos"][po_id] = {
                    "status": view.status,
                    "closed_lines": sorted(view.closed_lines),
                    "received": {str(k): v for k, v in sorted(view.received.items())},
                }
            except (LookupError, PermanentConnectorError):
                facts["pos"][po_id] = {"missing": True}
    return facts


def moved(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The changes between two readings that matter to the plan, one sentence each (none: still holds)."""
    reasons: list[str] = []
    for oid, was in before.get("orders", {}).items():
        is_ = now.get("orders", {}).get(oid)
        if is_ is None or is_ == was:
            continue
        if is_.get("status") != was.get("status"):
            reasons.append(f"{oid} is now {is_.get('status', 'unknown')} (was {was.get('status', 'unknown')})")
        else:
            reasons.append(f"{oid}'s lines or reservations changed")
    for oid, waves in before.get("waves", {}).items():
        is_waves = now.get("waves", {}).get(oid, waves)
        if is_waves != waves:
            joined = sorted(set(is_waves) - set(waves))
            reasons.append(
                f"{oid} joined wave {', '.join(joined)}" if joined else f"{oid} left wave {', '.join(waves)}"
            )
    for key, was in before.get("stock", {}).items():
        is_ = now.get("stock", {}).get(key)
        if is_ is None:
            continue
        if was["need"] > 0 and is_["pickable"] + EPS < was["need"]:
            reasons.append(f"{key}: {was['need']:g} needed, only {is_['pickable']:g} pickable now")
        elif was["need"] == 0 and is_["pickable"] > was["pickable"] + EPS:
            reasons.append(f"{key}: pickable rose from {was['pickable']:g} to {is_['pickable']:g}")
    for po_id, was in before.get("pos", {}).items():
        if now.get("pos", {}).get(po_id, was) != was:
            reasons.append(f"{po_id} changed in the ERP")
    return reasons
