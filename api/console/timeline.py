"""One order's story: the OMS's view now, and every decision, review, audit entry, wave, ticket and
transfer about it, in time order."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.console import queries
from api.console.auth import User
from api.console.views import fmt_num, review_summary
from domain.context import OrderView, WaveView
from domain.decisions import Decision
from domain.errors import ConnectorError, UnknownOrder
from runtime.bootstrap import Container


class NotVisible(LookupError):
    """The order is not one this key may see (a cs_rep key bound to other customers)."""


@dataclass
class Entry:
    at: datetime
    kind: str  # order, decision, review, audit, wave, ticket, transfer, action
    title: str
    detail: str = ""
    actor: str = ""
    link: str | None = None


@dataclass
class OrderTimeline:
    order_id: str
    view: OrderView | None
    waves: list[WaveView]
    decisions: list[Decision]
    entries: list[Entry]
    restricted: bool  # the role may not read decisions and the audit trail (as in the API)
    problems: list[str] = field(default_factory=list)


def _action_entry(action: queries.AppliedAction, decision: Decision | None) -> Entry:
    payload: dict[str, Any] = {}
    if decision is not None:
        for a in decision.actions:
            if a.idempotency_key == action.key:
                payload = a.payload
    name = action.action
    link = f"/console/decisions/{action.decision_id}"
    if name == "notify.ticket":
        ticket = action.result.get("ticket_id") or action.result.get("id") or ""
        return Entry(
            action.at,
            "ticket",
            f"Ticket {ticket} opened".replace("  ", " "),
            str(payload.get("subject", "")),
            link=link,
        )
    if name == "wms.create_transfer":
        ref = action.result.get("transfer_id") or action.result.get("id") or ""
        return Entry(action.at, "transfer", f"Transfer {ref} created".replace("  ", " "), "", link=link)
    if name == "wms.create_wave":
        ref = action.result.get("waveId") or action.result.get("wave_id") or ""
        return Entry(action.at, "wave", f"Wave {ref} released".replace("  ", " "), "", link=link)
    return Entry(action.at, "action", f"{name} applied", "", link=link)


def _audit_detail(payload: dict[str, Any]) -> str:
    parts = []
    for key, value in payload.items():
        if isinstance(value, dict | list) or value in (None, "", []):
            continue
        parts.append(f"{key}: {fmt_num(value)}")
    return ", ".join(parts)[:300]


def order_timeline(container: Container, order_id: str, user: User) -> OrderTimeline:
    """Read the order's timeline (call in a worker thread). Decisions and the audit trail are read
    only for roles the API lets read them (planner, admin)."""
    systems, store = container.systems, container.store
    problems: list[str] = []
    view: OrderView | None = None
    try:
        view = systems.oms.order(order_id)
    except UnknownOrder:
        problems.append(f"The OMS has no order {order_id}.")
    except ConnectorError as exc:
        problems.append(f"The OMS could not be reached, so the order's current state is missing: {exc}")
    if view is not None and not user.may_see(view.order.customer):
        raise NotVisible(order_id)
    if view is None and user.customers is not None:
        raise NotVisible(order_id)  # a bound key learns nothing about orders it cannot see
    waves: list[WaveView] = []
    try:
        waves = [w for w in systems.wms.waves() if order_id in w.orders]
    except ConnectorError as exc:
        problems.append(f"The WMS could not be reached, so waves are missing: {exc}")
    entries: list[Entry] = []
    if view is not None:
        if view.order.created is not None:
            entries.append(
                Entry(view.order.created, "order", "Order created in the OMS", f"customer {view.order.customer}")
            )
        if view.order.ship_by is not None:
            entries.append(Entry(view.order.ship_by, "order", "Ship-by", "the latest the order may leave"))
    for w in waves:
        if w.cutoff is not None:
            entries.append(
                Entry(
                    w.cutoff,
                    "wave",
                    f"Wave {w.wave_id} cutoff",
                    f"{w.node} {w.zone or ''} {w.carrier or ''} ({w.status})",
                )
            )
    restricted = not user.can("review")
    decisions: list[Decision] = []
    if not restricted:
        decisions = queries.decisions_about(store, order_id)
        by_id = {d.id: d for d in decisions}
        for d in decisions:
            link = f"/console/decisions/{d.id}"
            about = "" if d.subject == order_id else f" (subject {d.subject})"
            entries.append(
                Entry(
                    d.created_at or datetime.now(UTC),
                    "decision",
                    f"{d.workflow.replace('_', ' ')}: {d.outcome.replace('_', ' ')}{about}",
                    f"now {d.status.replace('_', ' ')}. {d.rationale[:240]}",
                    d.actor,
                    link,
                )
            )
            summary = review_summary(d)
            at = (d.review or {}).get("at")
            if summary and isinstance(at, str):
                entries.append(
                    Entry(datetime.fromisoformat(at), "review", summary, "", str((d.review or {}).get("by", "")), link)
                )
        for applied in queries.applied_actions(store, list(by_id)):
            entries.append(_action_entry(applied, by_id.get(applied.decision_id)))
        for e in store.audit(subject=order_id, limit=2000):
            entries.append(Entry(e.at, "audit", e.kind, _audit_detail(e.payload), e.actor))
    entries.sort(key=lambda e: e.at.astimezone(UTC) if e.at.tzinfo else e.at.replace(tzinfo=UTC))
    return OrderTimeline(order_id, view, waves, decisions, entries, restricted, problems)
