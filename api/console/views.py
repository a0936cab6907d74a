"""What the console shows of a decision: each action as a change, system by system, with the value
before (from the facts the decision stood on) and after; evidence laid out as tables; times with
their zone. Pure functions of a decision, so they are tested without a browser."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from markupsafe import Markup, escape

from domain.decisions import Action, Decision
from runtime.lifecycle import EDITABLE

SYSTEM_NAMES = {
    "oms": "OMS (orders)",
    "wms": "WMS (warehouse)",
    "erp": "ERP (books and purchasing)",
    "notify": "Tickets",
}
ORDER_OF_SYSTEMS = ("oms", "wms", "erp", "notify")


def fmt_num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"


def when(value: datetime | str | None, zone: str = "UTC") -> Markup:
    """A time as ``2026-03-21 09:00 UTC`` in a ``<time>`` element (the zone always shown)."""
    if value is None or value == "":
        return Markup("—")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return Markup(escape(value))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return Markup('<time datetime="{}">{} {}</time>').format(value.isoformat(), value.strftime("%Y-%m-%d %H:%M"), zone)


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in words a planner reads at a glance: ``3 h 05 min``, ``2 d 4 h``."""
    if value is None:
        return "—"
    now = now or datetime.now(UTC)
    seconds = max(0.0, (now - value).total_seconds())
    minutes = int(seconds // 60)
    if minutes < 1:
        return "< 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


# ------------------------------------------------------------------------------ changes


@dataclass
class Change:
    """One action as a change to one system: what it touches, the value before and after."""

    index: int
    system: str
    type: str
    target: str
    before: str
    after: str
    detail: str = ""
    editable: dict[str, Any] = field(default_factory=dict)  # field -> current value


def _alloc_text(allocs: list[Any]) -> str:
    return ", ".join(f"{fmt_num(q)} at {n}" for n, q in allocs) if allocs else "nothing reserved"


def _order_line(facts: Mapping[str, Any], order_id: str, line: Any) -> list[Any] | None:
    order = (facts.get("orders") or {}).get(str(order_id)) or {}
    for ln in order.get("lines", []):
        if ln and ln[0] == line:
            return list(ln)
    return None


def _describe(i: int, a: Action, facts: Mapping[str, Any]) -> Change:
    p = a.payload
    orders = facts.get("orders") or {}
    stock = facts.get("stock") or {}
    oid = str(p.get("order_id", ""))
    order = orders.get(oid) or {}
    editable = {k: p.get(k) for k in sorted(EDITABLE.get(a.name, set()))}
    ch = Change(i, a.system, a.type, "", "—", "—", editable=editable)
    if a.name == "oms.allocate":
        line = _order_line(facts, oid, p.get("line"))
        ch.target = f"{oid} line {p.get('line')} ({p.get('sku')})"
        before = line[3] if line else []
        ch.before = _alloc_text(before)
        ch.after = _alloc_text([*before, [p.get("node"), p.get("qty")]])
        have = (stock.get(f"{p.get('sku')}@{p.get('node')}") or {}).get("pickable")
        if have is not None:
            left = have - float(p.get("qty") or 0)
            ch.detail = f"pickable {p.get('sku')} at {p.get('node')}: {fmt_num(have)} → {fmt_num(left)}"
    elif a.name == "oms.release_allocation":
        line = _order_line(facts, oid, p.get("line"))
        ch.target = f"{oid} line {p.get('line')}" if p.get("line") is not None else oid
        ch.before = _alloc_text(line[3]) if line else "reserved"
        ch.after = f"{fmt_num(p.get('qty'))} released at {p.get('node')}" if p.get("qty") else "released"
    elif a.name == "oms.update_order_status":
        ch.target = oid
        ch.before = str(order.get("status", "—"))
        ch.after = str(p.get("status"))
    elif a.name == "oms.hold_order":
        ch.target = oid
        ch.before = str(order.get("status", "—"))
        ch.after = f"held ({p.get('reason')})"
    elif a.name == "oms.update_promise_date":
        ch.target = f"{oid} line {p.get('line')}" if p.get("line") is not None else oid
        ch.before = "no confirmed date"
        ch.after = f"promised {p.get('promise_date')}"
    elif a.name in ("oms.update_line_qty", "oms.split_line", "oms.substitute_line"):
        line = _order_line(facts, oid, p.get("line"))
        ch.target = f"{oid} line {p.get('line')}"
        ch.before = f"{fmt_num(line[2])} × {line[1]}" if line else "—"
        if a.name == "oms.substitute_line":
            ch.after = f"substituted by {p.get('substitute')}"
        elif a.name == "oms.split_line":
            ch.after = f"split: {fmt_num(p.get('backorder_qty'))} backordered"
        else:
            ch.after = f"{fmt_num(p.get('qty'))} × {line[1] if line else p.get('sku', '')}"
    elif a.name == "wms.create_wave":
        ids = [str(o.get("orderId")) for o in p.get("orders", []) if isinstance(o, dict)]
        params = p.get("parameters") or {}
        ch.target = f"{p.get('node')} / {params.get('workZone', '')}"
        waves = facts.get("waves") or {}
        before = sorted({w for o in ids for w in waves.get(o, [])})
        ch.before = ", ".join(before) if before else "on no wave"
        ch.after = f"wave {p.get('waveId')} ({', '.join(ids)})"
        cutoff = when(params.get("cutoffTime")).striptags() if params.get("cutoffTime") else "—"
        ch.detail = f"carrier {params.get('carrierCode', '—')}, cutoff {cutoff}"
    elif a.name == "wms.create_transfer":
        ch.target = f"{p.get('sku')} {p.get('from')} → {p.get('to')}"
        src = (stock.get(f"{p.get('sku')}@{p.get('from')}") or {}).get("pickable")
        ch.before = f"pickable at {p.get('from')}: {fmt_num(src)}" if src is not None else "—"
        ch.after = f"{fmt_num(p.get('qty'))} in transit to {p.get('to')}"
        if p.get("eta"):
            ch.detail = f"arrives {p.get('eta')}"
    elif a.name == "wms.create_task":
        ch.target = f"{p.get('node')} {p.get('location') or ''}".strip()
        ch.after = f"{p.get('task_type')} task for {p.get('sku')}"
        ch.detail = str(p.get("reason") or "")
    elif a.name.startswith("wms.cancel_"):
        ch.target = str(p.get("waveId") or p.get("task_id") or p.get("transfer_id") or "")
        ch.before = "open"
        ch.after = "cancelled"
    elif a.name == "erp.create_backorder":
        ch.target = f"{oid} line {p.get('line')} ({p.get('sku')})"
        ch.before = "no backorder"
        ch.after = f"backorder {fmt_num(p.get('qty'))}, promised {p.get('promise_date')}"
        ch.detail = str(p.get("supply") or "")
    elif a.name == "erp.expedite_po":
        ch.target = f"{p.get('po_id')} line {p.get('line')}"
        ch.before = "expected as ordered"
        ch.after = f"asked for {p.get('new_date')}"
        ch.detail = str(p.get("reason") or "")
    elif a.name == "erp.post_adjustment":
        ch.target = f"{p.get('sku')} at {p.get('node')}"
        ch.after = f"book {'+' if float(p.get('qty_delta') or 0) >= 0 else ''}{fmt_num(p.get('qty_delta'))}"
        ch.detail = str(p.get("reason") or "")
    elif a.name == "erp.close_po_line":
        ch.target = f"{p.get('po_id')} line {p.get('line')}"
        ch.before = "open"
        ch.after = "closed"
        ch.detail = str(p.get("reason") or "")
    elif a.name == "erp.update_safety_stock":
        ch.target = f"{p.get('sku')} at {p.get('node')}"
        ch.before = fmt_num(p["previous"]) if "previous" in p else "—"
        ch.after = f"safety stock {fmt_num(p.get('qty'))}"
    elif a.name == "notify.ticket":
        ch.target = f"team {p.get('team')}"
        ch.before = "no ticket"
        ch.after = str(p.get("subject") or "ticket")
        ch.detail = str(p.get("summary") or "")
    else:
        ch.target = oid or str(p.get("sku") or "")
        ch.after = ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, dict | list))
    return ch


def changes_by_system(decision: Decision) -> list[tuple[str, list[Change]]]:
    """The decision's actions as changes, grouped by system in the order OMS, WMS, ERP, tickets."""
    grouped: dict[str, list[Change]] = {}
    for i, a in enumerate(decision.actions):
        grouped.setdefault(a.system, []).append(_describe(i, a, decision.facts))
    return [(SYSTEM_NAMES.get(s, s), grouped[s]) for s in ORDER_OF_SYSTEMS if s in grouped]


def binding_constraints(decision: Decision) -> list[tuple[str, str]]:
    """The binding constraint of each line (release decisions name one per line in their sourcing)."""
    sourcing = decision.evidence.get("sourcing")
    found = sourcing.get("binding_constraint") if isinstance(sourcing, dict) else None
    if found is None:
        found = decision.evidence.get("binding_constraint")
    if isinstance(found, dict):
        return [(f"line {k}", str(v)) for k, v in found.items()]
    if isinstance(found, str):
        return [("", found)]
    return []


_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
HIDDEN_EVIDENCE = frozenset({"sop", "sop_quote", "governance", "features"})


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


def _cell(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return fmt_num(value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if value is None:
        return "—"
    if isinstance(value, str) and _ISO_TIME.match(value):
        return str(when(value).striptags())
    return str(value)


def evidence_tables(evidence: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[Table]]:
    """The evidence as (name, value) facts plus tables: a list of records or a map of records is a
    table with one row per record; anything else is one fact."""
    facts: list[tuple[str, str]] = []
    tables: list[Table] = []
    for key, value in evidence.items():
        if key in HIDDEN_EVIDENCE:
            continue
        title = key.replace("_", " ")
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cols = list(dict.fromkeys(k for v in value for k in v))
            tables.append(Table(title, cols, [[_cell(v.get(c)) for c in cols] for v in value]))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            cols = list(dict.fromkeys(k for v in value.values() for k in v))
            rows = [[str(name), *[_cell(v.get(c)) for c in cols]] for name, v in value.items()]
            tables.append(Table(title, ["", *cols], rows))
        elif isinstance(value, dict) and value:
            tables.append(Table(title, ["", "value"], [[str(k), _cell(v)] for k, v in value.items()]))
        else:
            facts.append((title, _cell(value)))
    return facts, tables


def review_summary(decision: Decision) -> str | None:
    review = decision.review or {}
    kind = review.get("kind")
    if not kind:
        return None
    by = review.get("by", "someone")
    text = {
        "approved": f"Approved by {by}",
        "approved_with_changes": f"Approved with changes by {by}",
        "rejected": f"Rejected by {by}: {review.get('reason', '')}",
        "stale": f"Approval by {by} found the facts had moved; nothing was executed",
    }.get(str(kind), f"{kind} by {by}")
    return text


def parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
