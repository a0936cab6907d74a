"""Lots (stock_lot) and credit holds (sale_credit_limit) against a real trytond 8.2, each compared
with what the twin gives for the same documents: the reconciliation specialist finds the same lot
mismatch in both, and the release specialist holds an order over its Tryton credit limit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.http import http_connectors
from connectors.tryton.loader import Loader, create_asn, create_sale, post_receipt, set_credit_limit
from crews.order_release import OrderReleaseSpecialist
from crews.reconciliation import ReconciliationSpecialist
from domain.decisions import Proposal
from domain.engines.matching import LOT
from domain.events import CloudEvent
from domain.models import Asn, Order, PurchaseOrder, Receipt, Scenario
from runtime.servers import serve_in_thread
from tools.context import Systems
from twin.server import create_twin_app
from twin.state import TwinState

from .conftest import Tryton


@dataclass
class Pair:
    """The same scenario twice: in the twin (over HTTP) and in Tryton; one notify port (the twin's)."""

    tryton: Tryton
    twin_state: TwinState
    twin: Systems
    real: Systems


@pytest.fixture(scope="module")
def pair(tryton: Tryton) -> Iterator[Pair]:
    state = TwinState(Scenario.model_validate(tryton.scenario))
    server = serve_in_thread(create_twin_app(state))
    client = httpx.Client(trust_env=False, timeout=10.0)
    url = server.url
    wms, erp, oms, notify = http_connectors(f"{url}/wms", f"{url}/erp", f"{url}/oms", f"{url}/notify", client)
    try:
        yield Pair(
            tryton,
            state,
            Systems(wms=wms, erp=erp, oms=oms, notify=notify),
            Systems(wms=tryton.wms, erp=tryton.erp, oms=tryton.oms, notify=notify),
        )
    finally:
        client.close()
        server.stop()


def event(type_: str, data: dict[str, Any], id_: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_,
        "source": "test",
        "type": type_,
        "time": "2026-03-21T12:00:00Z",
        "data": data,
    }


def scenario_event(t: Tryton, event_id: str) -> dict[str, Any]:
    return next(e for e in t.scenario["events"] if e["id"] == event_id)


def inbound(p: Pair, raw: dict[str, Any]) -> None:
    """The document ``raw`` reports, made in both systems: the twin applies the event, Tryton gets
    the supplier shipment the loader makes for it."""
    p.twin_state.apply_event(raw)
    if raw["type"] == "wms.asn.received":
        create_asn(p.tryton.client, Asn.model_validate(raw["data"]))
    elif raw["type"] == "wms.receipt.posted":
        post_receipt(p.tryton.client, Receipt.model_validate(raw["data"]))


def reconcile(systems: Systems, raw: dict[str, Any]) -> dict[str, Proposal]:
    proposals = ReconciliationSpecialist().propose(CloudEvent.model_validate(raw), systems)
    return {pr.subject: pr for pr in proposals}


def lot_tickets(pr: Proposal) -> list[tuple[str, str, str]]:
    return [
        (a.payload["team"], a.payload["subject"], a.payload["summary"])
        for a in pr.actions
        if a.payload.get("resolution") == "correct_lot"
    ]


def done_supplier_lots(t: Tryton, sku: str) -> list[tuple[float, str | None]]:
    moves = t.client.search_read(
        "stock.move",
        [("product.code", "=", sku), ("state", "=", "done"), ("from_location.type", "=", "supplier")],
        ["quantity", "lot.number"],
        order=[("id", "ASC")],
    )
    return [(float(m["quantity"]), (m.get("lot.") or {}).get("number")) for m in moves]


def test_a_wrong_lot_receipt_is_the_same_lot_mismatch_as_on_the_twin(pair: Pair) -> None:
    t = pair.tryton
    # PO-9001 line 20 (SKU-200) expects lot L-77; the loader set it on the line's incoming move.
    assert {ln.line: ln.lot for ln in t.erp.purchase_order("PO-9001").po.lines} == {10: None, 20: "L-77"}
    asn_event, receipt_event = scenario_event(t, "evt-0010"), scenario_event(t, "evt-0012")
    inbound(pair, asn_event)
    (announced,) = t.wms.asns("PO-9001")
    assert [(ln.po_line, ln.lot) for ln in announced.lines] == [(10, None), (20, "L-77")]
    inbound(pair, receipt_event)  # GR-7001: 40 × SKU-200 arrive as lot L-78
    (received,) = t.wms.receipts("PO-9001")
    assert [(ln.po_line, ln.qty, ln.lot) for ln in received.lines] == [(10, 99, None), (20, 40, "L-78")]
    # Tryton holds the lot that arrived: a stock.lot of the product, on the done incoming move.
    assert done_supplier_lots(t, "SKU-200") == [(40, "L-78")]
    assert t.client.call("stock.lot", "search_count", [("number", "=", "L-78"), ("product.code", "=", "SKU-200")]) == 1
    # ... and the PO still says which lot was expected.
    assert {ln.line: ln.lot for ln in t.erp.purchase_order("PO-9001").po.lines} == {10: None, 20: "L-77"}

    twin, real = reconcile(pair.twin, receipt_event), reconcile(pair.real, receipt_event)
    want, got = twin["PO-9001/20"], real["PO-9001/20"]
    assert LOT in want.evidence["classes"]
    assert (got.outcome, got.evidence["classes"]) == (want.outcome, want.evidence["classes"])
    assert got.evidence["po_lot"] == want.evidence["po_lot"] == "L-77"
    lots = [(x["lot"], x["qty"]) for x in want.evidence["received_lots"]]
    assert [(x["lot"], x["qty"]) for x in got.evidence["received_lots"]] == lots == [("L-78", 40)]
    assert lot_tickets(got) == lot_tickets(want)
    assert lot_tickets(got) == [
        (
            "receiving",
            "Lot mismatch on PO-9001/20 (SKU-200)",
            "PO-9001/20 (SKU-200): lot L-78 received where lot L-77 was expected. Please correct the lot in the ERP.",
        )
    ]
    assert LOT not in real["PO-9001/10"].evidence["classes"]


def test_a_lot_received_as_expected_closes_and_a_lot_only_the_asn_announced_is_kept(pair: Pair) -> None:
    t = pair.tryton
    po = PurchaseOrder.model_validate(
        {
            "id": "PO-LOT-1",
            "supplier": "SUP-1",
            "node": "DC-WEST",
            "expected": "2026-03-22",
            "lines": [
                {"line": 10, "sku": "SKU-301", "qty": 100, "unit_price": 3.0, "lot": "L-55"},
                {"line": 20, "sku": "SKU-300", "qty": 50, "unit_price": 2.5, "lot": None},
            ],
        }
    )
    pair.twin_state.apply_event(event("erp.po.created", po.model_dump(mode="json"), "evt-po-lot"))
    loaded = t.loaded
    loader = Loader(t.client)
    args = {"warehouse": loaded.warehouses["DC-WEST"], "unit": loaded.unit, "currency": loaded.currency}
    pid = loader.create_purchase(po, supplier=loaded.parties["SUP-1"], products=loaded.products, **args)
    assert loader.create_purchase(po, supplier=loaded.parties["SUP-1"], products=loaded.products, **args) == pid
    assert [(ln.line, ln.lot) for ln in t.erp.purchase_order("PO-LOT-1").po.lines] == [(10, "L-55"), (20, None)]
    # Line 20 expects no lot on the PO; the ASN announces L-60 for it, and L-61 arrives.
    asn = {
        "id": "ASN-LOT-1",
        "po_id": "PO-LOT-1",
        "supplier": "SUP-1",
        "expected": "2026-03-22",
        "lines": [
            {"po_line": 10, "sku": "SKU-301", "qty": 100, "lot": "L-55"},
            {"po_line": 20, "sku": "SKU-300", "qty": 50, "lot": "L-60"},
        ],
    }
    receipt = {
        "id": "GR-LOT-1",
        "po_id": "PO-LOT-1",
        "asn_id": "ASN-LOT-1",
        "node": "DC-WEST",
        "received_at": "2026-03-21T11:00:00Z",
        "lines": [
            {"po_line": 10, "sku": "SKU-301", "qty": 99, "lot": "L-55", "damaged": 0},
            {"po_line": 20, "sku": "SKU-300", "qty": 49, "lot": "L-61", "damaged": 0},
        ],
    }
    inbound(pair, event("wms.asn.received", asn, "evt-asn-lot"))
    assert [(ln.po_line, ln.lot) for ln in t.wms.asns("PO-LOT-1")[0].lines] == [(10, "L-55"), (20, "L-60")]
    receipt_event = event("wms.receipt.posted", receipt, "evt-gr-lot")
    inbound(pair, receipt_event)
    post_receipt(t.client, Receipt.model_validate(receipt))  # a retry changes nothing
    assert done_supplier_lots(t, "SKU-301") == [(99, "L-55")]
    assert done_supplier_lots(t, "SKU-300") == [(49, "L-61")]
    # Put away with its lot: Tryton's receive step copied it onto the inventory move.
    (stored,) = t.client.search_read(
        "stock.move",
        [("product.code", "=", "SKU-301"), ("state", "=", "done"), ("from_location.code", "=", "DC-WEST/IN")],
        ["lot.number"],
    )
    assert stored["lot."]["number"] == "L-55"

    twin, real = reconcile(pair.twin, receipt_event), reconcile(pair.real, receipt_event)
    # (99 of 100 and 49 of 50: within the tolerance, so the lot alone decides. A line received in
    # full would be closed in Tryton already, none of its moves pending, and get no proposal.)
    # The right lot: no finding, the line closes, as on the twin.
    for got in (twin["PO-LOT-1/10"], real["PO-LOT-1/10"]):
        assert (got.outcome, got.evidence["classes"]) == ("matched", [])
        assert [a.name for a in got.actions] == ["erp.close_po_line"]
    # The lot only the ASN announced is still the expected one after the receipt replaced it.
    want, got = twin["PO-LOT-1/20"], real["PO-LOT-1/20"]
    assert (got.outcome, got.evidence["classes"]) == (want.outcome, want.evidence["classes"]) == ("discrepancy", [LOT])
    assert lot_tickets(got) == lot_tickets(want)
    assert "lot L-61 received where lot L-60 was expected" in lot_tickets(got)[0][2]


def release(systems: Systems, raw: dict[str, Any]) -> Proposal:
    proposals = OrderReleaseSpecialist().propose(CloudEvent.model_validate(raw), systems)
    return next(pr for pr in proposals if pr.subject == raw["data"]["id"])


def credit(t: Tryton, customer: str) -> tuple[Decimal | None, Decimal]:
    (row,) = t.client.search_read("party.party", [("code", "=", customer)], ["credit_limit_amount", "credit_amount"])
    return row["credit_limit_amount"], row["credit_amount"]


def test_an_order_over_the_credit_limit_is_held_and_one_under_is_released(pair: Pair) -> None:
    t = pair.tryton
    # erp.credit_holds = [CUST-9]: a credit limit of 0 in Tryton, no category.
    assert credit(t, "CUST-9") == (Decimal(0), Decimal(0))
    assert t.erp.credit_hold("CUST-9") is True and t.erp.credit_hold("CUST-2") is False
    held_event = scenario_event(t, "evt-0003")  # SO-1003 of CUST-9
    sid = create_sale(t.client, Order.model_validate(held_event["data"]))
    # Confirmed all the same: sale_credit_limit checks only sales shipped on order.
    assert t.client.read("sale.sale", [sid], ["state"])[0]["state"] == "processing"
    limit, amount = credit(t, "CUST-9")
    assert limit == 0 and amount > 0  # the confirmed sale is its exposure
    pair.twin_state.apply_event(held_event)
    twin_pr, real_pr = release(pair.twin, held_event), release(pair.real, held_event)
    assert (twin_pr.outcome, twin_pr.evidence["hold_reason"]) == ("held", "credit_hold")
    assert (real_pr.outcome, real_pr.evidence["hold_reason"]) == ("held", "credit_hold")
    assert [a.payload.get("reason") for a in real_pr.actions if a.name == "oms.hold_order"] == ["credit_hold"]

    # CUST-2 under a limit: SO-1002 is released, as on the twin.
    open_event = scenario_event(t, "evt-0002")
    set_credit_limit(t.client, t.loaded.parties["CUST-2"], Decimal(1_000_000))
    create_sale(t.client, Order.model_validate(open_event["data"]))
    limit, amount = credit(t, "CUST-2")
    assert limit is not None and 0 < amount < limit
    assert t.erp.credit_hold("CUST-2") is False
    pair.twin_state.apply_event(open_event)
    assert release(pair.twin, open_event).outcome == release(pair.real, open_event).outcome == "released"
    # The same customer over a limit below what it owes: held for credit.
    set_credit_limit(t.client, t.loaded.parties["CUST-2"], amount - Decimal("0.01"))
    assert t.erp.credit_hold("CUST-2") is True
    over = release(pair.real, open_event)
    assert (over.outcome, over.evidence["hold_reason"]) == ("held", "credit_hold")
    set_credit_limit(t.client, t.loaded.parties["CUST-2"], amount)  # exactly at the limit: no room left
    assert t.erp.credit_hold("CUST-2") is True
    t.client.write("party.party", [t.loaded.parties["CUST-2"]], {"credit_limit_amount": None})
    assert t.erp.credit_hold("CUST-2") is False  # no limit, no hold


def test_a_sale_tryton_refuses_for_its_credit_limit_stays_a_quotation_and_counts(pair: Pair) -> None:
    t = pair.tryton
    c = t.client
    data = {**scenario_event(t, "evt-0004")["data"], "id": "SO-CREDIT-1"}  # CUST-1, no limit yet
    order = Order.model_validate(data)
    (party,) = c.search("party.party", [("code", "=", "CUST-1")])
    (address,) = c.search("party.address", [("party", "=", party)], limit=1)
    products = {r["code"]: r for r in c.search_read("product.product", [], ["code", "list_price_used", "default_uom"])}
    (sid,) = c.create(
        "sale.sale",
        [
            {
                "reference": order.id,
                "party": party,
                "invoice_address": address,
                "shipment_address": address,
                "warehouse": t.loaded.warehouses["DC-EAST"],
                "shipment_method": "order",  # the one method sale_credit_limit checks on confirm
                "invoice_method": "manual",
                "lines": [
                    (
                        "create",
                        [
                            {
                                "type": "line",
                                "sequence": ln.line,
                                "product": products[ln.sku]["id"],
                                "quantity": ln.qty,
                                "unit": products[ln.sku]["default_uom"],
                                "unit_price": products[ln.sku]["list_price_used"],
                            }
                            for ln in order.lines
                        ],
                    )
                ],
            }
        ],
    )
    (sale,) = c.read("sale.sale", [sid], ["untaxed_amount"])
    assert sale["untaxed_amount"] > 0
    assert t.erp.credit_hold("CUST-1") is False
    set_credit_limit(c, party, sale["untaxed_amount"] - Decimal(1))
    # A draft or quotation is not in credit_amount, but it is exposure: CUST-1 is now over.
    assert t.erp.credit_hold("CUST-1") is True
    assert create_sale(c, order) == sid  # Tryton refuses to confirm it: it stays a quotation
    assert c.read("sale.sale", [sid], ["state"])[0]["state"] == "quotation"
    assert t.oms.order("SO-CREDIT-1").status == "open"
    set_credit_limit(c, party, sale["untaxed_amount"] + Decimal(1))
    assert t.erp.credit_hold("CUST-1") is False
    create_sale(c, order)  # room under the limit again: confirmed now
    assert c.read("sale.sale", [sid], ["state"])[0]["state"] in ("confirmed", "processing")
    assert t.erp.credit_hold("CUST-1") is False
