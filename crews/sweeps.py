"""Sweeps on ``crossdock.tick``: what no event will bring up by itself.

* **Stock re-checks.** A stock gap explained by a posting in flight was left alone; when the
  grace window ends the SKU@node is judged again, and a posting that never came becomes a true
  variance (``domain.engines.discrepancy``).
* **Overdue ASNs.** Every open PO is matched again; an ASN whose goods never came is raised
  once (``Memo.first_time``), with a ticket to planning.
* **Continuous reconciliation** (``crews.reconcile_sweep``): every SKU@node compared across the
  three systems by bulk reads. ``schedule_recheck`` marks each judged state (``fingerprint``) so
  that sweep never raises again a state an event or a re-check already judged.

Both need Crossdock's memory (``Systems.memo``); without it the sweeps do nothing and say so.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.decisions import Proposal
from domain.engines.clock import as_utc
from domain.engines.discrepancy import StockPicture, decide_discrepancy, in_flight
from domain.engines.matching import match, reconcile_proposals
from tools.context import Systems, stock_picture

STOCK_QUEUE = "stock"


def fingerprint(picture: StockPicture) -> str:
    """One state of a SKU@node: its quantities in the three systems and how many movements each
    side recorded (a new movement is a new state, even back to the same numbers)."""
    wms, book = picture.wms, picture.book
    reserved = sum(r.qty for r in picture.reservations)
    return (
        f"recon:{picture.sku}@{picture.node}:{wms.on_hand if wms else 0.0:g}/{wms.locked if wms else 0.0:g}"
        f"/{book.qty if book else 0.0:g}/{reserved:g}/{len(picture.wms_moves)}/{len(picture.erp_postings)}"
    )


def schedule_recheck(systems: Systems, picture: StockPicture) -> None:
    """Look at this SKU@node again when its newest posting in flight leaves the grace window, and
    mark its state as judged (the reconciliation sweep raises only states nobody judged)."""
    if systems.memo is None:
        return
    systems.memo.first_time(fingerprint(picture))
    wms, erp = in_flight(picture)
    times = [as_utc(m.at) for m in (*wms, *erp) if m.at is not None]
    key = f"{picture.sku}@{picture.node}"
    if times:
        due = max(times) + timedelta(hours=picture.grace_hours)
        systems.memo.schedule(STOCK_QUEUE, key, due.timestamp())
    else:
        systems.memo.done(STOCK_QUEUE, [key])


def due_stock_rechecks(systems: Systems, now: datetime) -> list[tuple[str, str]]:
    if systems.memo is None:
        return []
    out = []
    for key in systems.memo.due(STOCK_QUEUE, as_utc(now).timestamp()):
        sku, _, node = key.rpartition("@")
        out.append((sku, node))
    return out


def sweep(systems: Systems, now: datetime, grace_hours: float, tolerance_pct: float) -> list[Proposal]:
    if systems.memo is None:
        return []
    proposals: list[Proposal] = []
    for sku, node in due_stock_rechecks(systems, now):
        picture = stock_picture(systems, sku, node, now, grace_hours)
        decided = decide_discrepancy(picture)
        for p in decided:
            p.evidence["sweep"] = "stock re-check after the grace window"
        proposals.extend(decided)
        schedule_recheck(systems, picture)
    for view in systems.erp.open_purchase_orders():
        po_id = view.po.id
        result = match([view.po], systems.wms.asns(po_id), systems.wms.receipts(po_id), tolerance_pct, now)
        if not result.overdue_asns:
            continue
        fresh = {f.doc_id for f in result.overdue_asns if systems.memo.first_time(f"asn_overdue:{f.doc_id}")}
        for p in reconcile_proposals(result, {po_id: view.po}):
            if p.subject in fresh:
                p.evidence["sweep"] = "overdue ASN"
                proposals.append(p)
    return proposals
