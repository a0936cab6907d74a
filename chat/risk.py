"""Orders whose promise is in danger, each with a drafted customer message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from chat.facts import OPEN_STATUSES, DecisionReader, as_date
from connectors.ports import WmsTaskReader
from domain.context import OrderView, WaveView
from domain.decisions import Decision
from domain.errors import PermanentConnectorError
from tools.context import Systems

REVIEW = "pending_review"
AWAITING = "awaiting_planner"


def _name(systems: Systems, customer: str, known: dict[str, str]) -> str:
    if customer not in known:
        try:
            known[customer] = systems.oms.customer(customer).name or customer
        except (LookupError, PermanentConnectorError):
            known[customer] = customer
    return known[customer]


def reasons_for(
    view: OrderView,
    waves: list[WaveView],
    decisions: list[Decision],
    now: datetime,
    tasks: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Why this order's promise is in danger (empty: it is not)."""
    out: list[dict[str, Any]] = []
    order = view.order
    ship_by = order.ship_by
    if view.status == "held":
        out.append({"kind": "held", "detail": f"held ({(view.hold_reason or 'no reason').replace('_', ' ')})"})
    for ln in view.lines:
        if ln.backordered > 0:
            late = ship_by is not None and ln.promise_date is not None and ln.promise_date > ship_by.date()
            detail = f"line {ln.line}: {ln.backordered:g} × {ln.substituted_by or ln.sku} backordered"
            if ln.promise_date is not None:
                detail += f", promised {ln.promise_date.isoformat()}"
            out.append({"kind": "late_supply" if late or ln.promise_date is None else "backordered", "detail": detail})
    mine = [w for w in waves if order.id in w.orders]
    if ship_by is not None:
        for w in mine:
            if w.cutoff is not None and w.cutoff > ship_by:
                out.append({"kind": "missed_cutoff", "detail": f"wave {w.wave_id} leaves after ship-by"})
        if not mine and view.status in ("open", "held", "backordered") and ship_by <= now:
            out.append(
                {"kind": "missed_cutoff", "detail": f"not on a wave and ship-by {ship_by:%Y-%m-%d %H:%M} passed"}
            )
    for task in tasks or []:
        out.append({"kind": "open_exception", "detail": f"open {task['type']} task {task['id']} at {task['node']}"})
    for d in decisions:
        if d.status == AWAITING:
            out.append({"kind": "awaiting_planner", "detail": f"a planner must decide ({d.id}): {d.error or ''}"})
        if d.status == REVIEW and d.workflow == "exception_triage":
            out.append({"kind": "open_exception", "detail": f"exception awaiting review ({d.id})"})
    return out


def draft_message(view: OrderView, name: str, reasons: list[dict[str, Any]]) -> str:
    kinds = {r["kind"] for r in reasons}
    order_id = view.order.id
    greeting = f"Dear {name},"
    if "held" in kinds:
        body = (
            f"your order {order_id} is on hold while we resolve an issue with it. We will update you as soon "
            "as it is released."
        )
    elif kinds & {"late_supply", "backordered"}:
        dates = sorted({ln.promise_date.isoformat() for ln in view.lines if ln.backordered > 0 and ln.promise_date})
        when = f" We expect the remaining items by {dates[-1]}." if dates else " We will confirm a date shortly."
        body = f"part of your order {order_id} is waiting for stock and will ship separately.{when}"
    elif "missed_cutoff" in kinds:
        body = f"your order {order_id} may ship later than planned. We are working to get it out as soon as possible."
    else:
        body = f"we are looking into an issue with your order {order_id} and will update you shortly."
    return f"{greeting} {body} We apologise for the inconvenience."


def _malformed(record: Any, exc: ValidationError) -> dict[str, Any]:
    """An at-risk entry for an OMS record that breaks the contract: flagged with the fields named,
    so a person fixes the record; the other orders are listed as usual."""
    order = record.get("order") if isinstance(record, dict) else None
    order_id = order.get("id") if isinstance(order, dict) else None
    customer = order.get("customer") if isinstance(order, dict) else None
    fields = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in exc.errors(include_url=False, include_context=False, include_input=False)[:5]
    )
    return {
        "order_id": str(order_id) if order_id is not None else None,
        "customer_id": str(customer) if customer is not None else None,
        "status": "malformed",
        "hold_reason": None,
        "ship_by": None,
        "reasons": [{"kind": "malformed_record", "detail": f"the OMS record breaks the order contract: {fields}"}],
        "message": None,
    }


def open_orders(systems: Systems) -> tuple[list[OrderView], list[dict[str, Any]]]:
    """The open orders, and an entry per malformed record among them. The port validates the
    whole list at once, so one bad record fails the read; an adapter that can hand back the raw
    records (the HTTP one) is then read again, record by record. Any other adapter's error stands."""
    try:
        return systems.oms.orders(OPEN_STATUSES), []
    except ValidationError:
        raw_get = getattr(systems.oms, "_get", None)
        if raw_get is None:
            raise
    records = raw_get("/api/v1/orders", {"status": ",".join(OPEN_STATUSES)})
    views: list[OrderView] = []
    bad: list[dict[str, Any]] = []
    for record in records if isinstance(records, list) else []:
        try:
            views.append(OrderView.model_validate(record))
        except ValidationError as exc:
            bad.append(_malformed(record, exc))
    return views, bad


def at_risk(systems: Systems, decisions: DecisionReader, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open orders whose promise is in danger, most urgent ship-by first; a malformed OMS record
    is listed as such (``status: malformed``) after them, instead of failing the list."""
    now = now or datetime.now(UTC)
    views, malformed = open_orders(systems)
    waves = systems.wms.waves()
    pending = decisions.list_decisions(status=REVIEW, limit=10_000)
    pending += decisions.list_decisions(status=AWAITING, limit=10_000)
    by_subject: dict[str, list[Decision]] = {}
    for d in pending:
        by_subject.setdefault(d.subject, []).append(d)
    open_tasks: dict[str, list[dict[str, str]]] = {}
    if isinstance(systems.wms, WmsTaskReader):  # optional read: Tryton has no task model
        for t in systems.wms.tasks():
            if t.order_id and t.status == "open":
                open_tasks.setdefault(t.order_id, []).append({"id": t.id, "type": t.task_type, "node": t.node})
    names: dict[str, str] = {}
    out = []
    for view in views:
        oid = view.order.id
        reasons = reasons_for(view, waves, by_subject.get(oid, []), now, open_tasks.get(oid))
        if not reasons:
            continue
        name = _name(systems, view.order.customer, names)
        out.append(
            {
                "order_id": view.order.id,
                "customer_id": view.order.customer,
                "status": view.status,
                "hold_reason": view.hold_reason,
                "ship_by": view.order.ship_by.isoformat() if view.order.ship_by else None,
                "reasons": reasons,
                "message": draft_message(view, name, reasons),
            }
        )
    out.sort(key=lambda r: (as_date(r["ship_by"]) or datetime.max.date(), r["order_id"]))
    return out + sorted(malformed, key=lambda r: str(r["order_id"]))


def clock_of(decisions: DecisionReader) -> datetime | None:
    """The latest ``now`` an engine decided at: the scenario's clock when replaying."""
    latest: datetime | None = None
    for d in decisions.list_decisions(limit=100_000):
        raw = d.evidence.get("now")
        if isinstance(raw, str):
            try:
                at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                continue
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            latest = at if latest is None or at > latest else latest
    return latest
