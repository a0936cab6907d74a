"""A Tryton receipt names the ASN it fulfils (issue 21).

Tryton keeps one ``stock.shipment.in`` for the announced ASN (draft) and its receipt (received,
done). A shipment announced first and received later must reach the three-way match as a receipt
naming that ASN, with the ASN still recorded (as the twin keeps it): no ``receipt_without_asn``.
A shipment created and received at once was never announced: that one is a receipt without ASN,
as on the twin. Each case is made through Tryton's JSON-RPC as a user makes it (a draft shipment
holding the purchase's moves, then Receive and Done), decided through the follower → intake →
pipeline path or by the reconciliation specialist, and compared with the twin given the same facts.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from connectors.tryton.loader import Loader, post_receipt
from connectors.tryton.rpc import TrytonClient
from domain.decisions import Decision, Proposal
from domain.engines.matching import NO_ASN, match
from domain.models import PurchaseOrder, Receipt

from .harness import Tryton
from .test_tryton_follower import Live, live
from .test_tryton_lots_credit import Pair, event, inbound, pair, reconcile, scenario_event

__all__ = ["live", "pair"]  # the fixtures, shared with the follower and lots tests

TODAY = dt.date.today()


# -- what a Tryton user does, over JSON-RPC -------------------------------------------------------


def purchase(p: Pair, po_id: str, lines: list[tuple[int, str, float, float]]) -> PurchaseOrder:
    """A confirmed purchase at DC-EAST in Tryton, and the same PO in the twin."""
    po = PurchaseOrder.model_validate(
        {
            "id": po_id,
            "supplier": "SUP-1",
            "node": "DC-EAST",
            "expected": TODAY.isoformat(),
            "lines": [{"line": n, "sku": s, "qty": q, "unit_price": u, "lot": None} for n, s, q, u in lines],
        }
    )
    p.twin_state.apply_event(event("erp.po.created", po.model_dump(mode="json"), f"evt-po-{po_id}"))
    t, loaded = p.tryton, p.tryton.loaded
    Loader(t.client).create_purchase(
        po,
        supplier=loaded.parties["SUP-1"],
        warehouse=loaded.warehouses["DC-EAST"],
        products=loaded.products,
        unit=loaded.unit,
        currency=loaded.currency,
    )
    return po


def draft_shipment(c: TrytonClient, po_id: str, reference: str, qty: dict[int, float], planned: dt.date | None) -> int:
    """A supplier shipment in draft holding the purchase's pending moves of the lines in ``qty``, at
    those quantities: what a user enters (the Supplier Shipment form, its incoming moves added from
    the purchase)."""
    moves = []
    for line, q in qty.items():
        (move,) = c.search(
            "stock.move",
            [
                ("purchase.reference", "=", po_id),
                ("origin.sequence", "=", line, "purchase.line"),
                ("state", "=", "draft"),
                ("shipment", "=", None),
            ],
            limit=1,
        )
        c.write("stock.move", [move], {"quantity": q})
        moves.append(move)
    (purchase,) = c.search_read("purchase.purchase", [("reference", "=", po_id)], ["party", "warehouse", "company"])
    (wh,) = c.read("stock.location", [purchase["warehouse"]], ["input_location", "storage_location"])
    (sid,) = c.create(
        "stock.shipment.in",
        [
            {
                "reference": reference,
                "supplier": purchase["party"],
                "company": purchase["company"],
                "warehouse": purchase["warehouse"],
                "warehouse_input": wh["input_location"],
                "warehouse_storage": wh["storage_location"],
                "planned_date": planned,
                "incoming_moves": [("add", moves)],
            }
        ],
    )
    return sid


def receive(c: TrytonClient, sid: int, counted: dict[int, float] | None = None) -> None:
    """Receive and Done; with ``counted`` (line -> quantity) the clerk first types what arrived."""
    if counted:
        for m in c.search_read(
            "stock.move", [("shipment", "=", f"stock.shipment.in,{sid}")], ["origin.sequence"], order=[("id", "ASC")]
        ):
            line = int((m.get("origin.") or {}).get("sequence") or 0)
            if line in counted:
                c.write("stock.move", [m["id"]], {"quantity": counted[line]})
    c.button("stock.shipment.in", "receive", [sid])
    c.button("stock.shipment.in", "do", [sid])


# -- the same facts in the twin -----------------------------------------------------------------


def twin_asn(p: Pair, asn_id: str, po: PurchaseOrder, qty: dict[int, float]) -> None:
    skus = {ln.line: ln.sku for ln in po.lines}
    asn = {
        "id": asn_id,
        "po_id": po.id,
        "supplier": "SUP-1",
        "expected": TODAY.isoformat(),
        "lines": [{"po_line": n, "sku": skus[n], "qty": q, "lot": None} for n, q in qty.items()],
    }
    p.twin_state.apply_event(event("wms.asn.received", asn, f"evt-{asn_id}"))


def twin_receipt(
    p: Pair, receipt_id: str, asn_id: str | None, po: PurchaseOrder, qty: dict[int, float]
) -> dict[str, Any]:
    skus = {ln.line: ln.sku for ln in po.lines}
    data = {
        "id": receipt_id,
        "po_id": po.id,
        "asn_id": asn_id,
        "node": "DC-EAST",
        "received_at": dt.datetime.now(dt.UTC).isoformat(),
        "lines": [{"po_line": n, "sku": skus[n], "qty": q, "lot": None, "damaged": 0} for n, q in qty.items()],
    }
    raw = event("wms.receipt.posted", data, f"evt-{receipt_id}")
    raw["time"] = dt.datetime.now(dt.UTC).isoformat()
    p.twin_state.apply_event(raw)
    return raw


def lines_of(proposals: list[Proposal] | list[Decision]) -> dict[str, tuple[str, list[str]]]:
    """PO line -> (outcome, classes) of the line proposals."""
    return {p.subject: (p.outcome, list(p.evidence.get("classes", []))) for p in proposals if "/" in p.subject}


def findings(proposals: list[Proposal] | list[Decision]) -> list[str]:
    return sorted(str(p.evidence["finding"]) for p in proposals if p.evidence.get("finding"))


def followed_receipt(live: Live, tryton: Tryton, act: Any) -> list[Decision]:
    """Run ``act`` between two polls of a follower; the receipt event it posts is decided by the
    pipeline; that event's reconciliation decisions."""
    follower = live.follower(tryton)
    try:
        follower.poll_once()  # what Tryton held before is decided first, not mixed in below
        live.drain()
        act()
        result = follower.poll_once()
    finally:
        follower.client.close()
    assert result.invalid == [], result
    (event_id,) = [e for e in result.event_ids if e.startswith("tryton:stock.shipment.in:")]
    assert event_id not in result.duplicate_ids
    live.drain()
    decisions = live.container.store.list_decisions(event_id=event_id)
    return [d for d in decisions if d.workflow == "reconciliation"]


# -- the cases ----------------------------------------------------------------------------------


def test_an_asn_announced_then_received_through_the_follower_names_its_asn(pair: Pair, live: Live) -> None:
    t, c = pair.tryton, pair.tryton.client
    po = purchase(pair, "PO-H1", [(10, "SKU-100", 100, 4.2), (20, "SKU-200", 50, 11.0)])
    sid = draft_shipment(c, "PO-H1", "ASN-H1", {10: 100, 20: 50}, TODAY)  # the supplier's notice
    (announced,) = t.wms.asns("PO-H1")
    assert (announced.id, [ln.qty for ln in announced.lines]) == ("ASN-H1", [100, 50])

    decisions = followed_receipt(live, t, lambda: receive(c, sid, {10: 99, 20: 49}))  # counted at the dock
    assert findings(decisions) == [], [d.rationale for d in decisions if d.evidence.get("finding")]

    (received,) = t.wms.receipts("PO-H1")
    assert (received.id, received.asn_id) == ("ASN-H1", "ASN-H1")
    # Tryton keeps one document: the ASN stays recorded, holding what arrived.
    assert [(a.id, [ln.qty for ln in a.lines]) for a in t.wms.asns("PO-H1")] == [("ASN-H1", [99, 49])]
    twin_asn(pair, "ASN-H1", po, {10: 100, 20: 50})
    twin = list(reconcile(pair.twin, twin_receipt(pair, "GR-H1", "ASN-H1", po, {10: 99, 20: 49})).values())
    assert findings(twin) == []
    want = {"PO-H1/10": ("matched", []), "PO-H1/20": ("matched", [])}
    assert lines_of(decisions) == lines_of(twin) == want
    assert {d.subject: d.status for d in decisions} == {"PO-H1/10": "executed", "PO-H1/20": "executed"}


def test_a_shipment_received_without_announcement_is_a_receipt_without_asn_as_on_the_twin(
    pair: Pair, live: Live
) -> None:
    t, c = pair.tryton, pair.tryton.client
    po = purchase(pair, "PO-H2", [(10, "SKU-100", 100, 4.2)])

    def walk_in() -> None:  # goods at the dock, nothing announced: entered and received at once
        receive(c, draft_shipment(c, "PO-H2", "DN-H2", {10: 99}, None))  # DN = the delivery note

    decisions = followed_receipt(live, t, walk_in)
    (received,) = t.wms.receipts("PO-H2")
    assert (received.id, received.asn_id) == ("DN-H2", None)
    assert t.wms.asns("PO-H2") == []
    twin = list(reconcile(pair.twin, twin_receipt(pair, "DN-H2", None, po, {10: 99})).values())
    assert findings(decisions) == findings(twin) == [NO_ASN]
    (ticket,) = [d for d in decisions if d.evidence.get("finding")]
    assert (ticket.subject, ticket.status) == ("DN-H2", "pending_review")
    assert ticket.evidence["reason"] == "the receipt names no ASN"
    assert lines_of(decisions) == lines_of(twin) == {"PO-H2/10": ("matched", [])}


def test_an_asn_received_as_announced_names_it_once_it_stood_as_an_announcement(pair: Pair, monkeypatch: Any) -> None:
    """No line typed at the dock: the time the draft stood before the receive tells (the wait is
    shortened here; the default is ``ANNOUNCED_AFTER``)."""
    t, c = pair.tryton, pair.tryton.client
    po = purchase(pair, "PO-H3", [(10, "SKU-100", 100, 4.2)])
    monkeypatch.setattr(t.wms.b, "announced_after", dt.timedelta(seconds=3))
    sid = draft_shipment(c, "PO-H3", "ASN-H3", {10: 99}, TODAY)
    time.sleep(4)
    receive(c, sid)
    (received,) = t.wms.receipts("PO-H3")
    assert (received.id, received.asn_id) == ("ASN-H3", "ASN-H3")
    twin_asn(pair, "ASN-H3", po, {10: 99})
    raw = twin_receipt(pair, "ASN-H3", "ASN-H3", po, {10: 99})
    real, twin = list(reconcile(pair.real, raw).values()), list(reconcile(pair.twin, raw).values())
    assert findings(real) == findings(twin) == []
    assert lines_of(real) == lines_of(twin) == {"PO-H3/10": ("matched", [])}


def test_scenario_documents_loaded_into_tryton_match_as_on_the_twin(pair: Pair) -> None:
    """The loader's path (scenario runs): ASN-5001 then GR-7001 naming it, and a receipt without ASN."""
    t = pair.tryton
    asn_event, receipt_event = scenario_event(t, "evt-0010"), scenario_event(t, "evt-0012")
    inbound(pair, asn_event)
    inbound(pair, receipt_event)  # GR-7001, right after: the loader types what arrived
    (received,) = t.wms.receipts("PO-9001")
    assert (received.id, received.asn_id) == ("ASN-5001", "ASN-5001")
    now = dt.datetime.now(dt.UTC)
    for systems in (pair.twin, pair.real):
        view = systems.erp.purchase_order("PO-9001")
        result = match([view.po], systems.wms.asns("PO-9001"), systems.wms.receipts("PO-9001"), 2.0, now)
        assert [f.kind for f in result.findings] == [], result.findings
    real, twin = reconcile(pair.real, receipt_event), reconcile(pair.twin, receipt_event)
    assert lines_of(list(real.values())) == lines_of(list(twin.values()))

    po = purchase(pair, "PO-H4", [(10, "SKU-100", 100, 4.2)])
    data = twin_receipt(pair, "GR-H4", None, po, {10: 99})
    post_receipt(t.client, Receipt.model_validate(data["data"]))
    (received,) = t.wms.receipts("PO-H4")
    assert (received.id, received.asn_id) == ("GR-H4", None)
    real_p, twin_p = list(reconcile(pair.real, data).values()), list(reconcile(pair.twin, data).values())
    assert findings(real_p) == findings(twin_p) == [NO_ASN]
    assert lines_of(real_p) == lines_of(twin_p) == {"PO-H4/10": ("matched", [])}
