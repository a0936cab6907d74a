"""The Tryton connector against a real trytond 8.2 seeded from the example scenario."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bench.tryton_server import free_port
from connectors.ports import (
    AllocationSnapshotReader,
    BookSnapshotReader,
    ErpPort,
    OmsPort,
    SnapshotRow,
    StockSnapshotReader,
    WmsPort,
)
from connectors.tryton.adapters import NOT_MAPPED
from connectors.tryton.loader import create_asn, create_sale, post_receipt
from connectors.tryton.rpc import TrytonAuthError, TrytonClient, TrytonConfig
from domain.decisions import Action
from domain.errors import ConnectorError, PermanentConnectorError, UnknownDocument, UnknownOrder, UnknownSku
from domain.models import Asn, Order, Receipt

from .conftest import Tryton


def act(t: Tryton, system: str, type_: str, key: str, **payload: Any) -> dict[str, Any]:
    adapters: dict[str, WmsPort | ErpPort | OmsPort] = {"wms": t.wms, "erp": t.erp, "oms": t.oms}
    action = Action.model_validate({"system": system, "type": type_, "payload": payload, "idempotency_key": key})
    return adapters[system].apply(action)


def order_data(t: Tryton, index: int, **changes: Any) -> Order:
    data = {**t.scenario["events"][index]["data"], **changes}
    return Order.model_validate(data)


def test_adapters_implement_the_ports(tryton: Tryton) -> None:
    assert isinstance(tryton.wms, WmsPort)
    assert isinstance(tryton.erp, ErpPort)
    assert isinstance(tryton.oms, OmsPort)


def test_stock_per_node_and_location_matches_the_scenario_inventory(tryton: Tryton) -> None:
    expected: dict[tuple[str, str], dict[tuple[str, str], tuple[float, float]]] = defaultdict(dict)
    for rec in tryton.scenario["wms"]["stock"]:
        expected[(rec["sku"], rec["node"])][(rec["zone"], rec["location"])] = (rec["on_hand"], rec["locked"])
    for sku in {s["id"] for s in tryton.scenario["skus"]}:
        seen = {ns.node: ns for ns in tryton.wms.stock(sku)}
        nodes = {node for (s, node) in expected if s == sku}
        assert set(seen) == nodes, sku
        for node in nodes:
            ns, want = seen[node], expected[(sku, node)]
            got = {(loc.zone, loc.location): (loc.on_hand, loc.locked) for loc in ns.locations}
            assert got == want, (sku, node)
            assert ns.on_hand == sum(v[0] for v in want.values())
            assert ns.locked == sum(v[1] for v in want.values())
            assert ns.allocated == 0
            assert ns.pickable == ns.on_hand - ns.locked
    assert tryton.wms.stock("SKU-NOPE") == []


def test_book_stock_is_the_physical_stock_and_blocked_mirrors_the_lock(tryton: Tryton) -> None:
    book = {b.node: b for b in tryton.erp.book_stock("SKU-100")}
    assert {n: (b.qty, b.blocked) for n, b in book.items()} == {
        "DC-EAST": (35, 10),
        "DC-WEST": (60, 0),
        "STORE-12": (8, 0),
    }
    # The scenario's planted book/physical discrepancy cannot exist in one ledger: reported, not loaded.
    assert any("SKU-300@DC-WEST" in s for s in tryton.loaded.skipped)
    assert [(b.node, b.qty) for b in tryton.erp.book_stock("SKU-300")] == [("DC-WEST", 3)]


def test_planned_supply_comes_from_confirmed_purchases_and_transfers(tryton: Tryton) -> None:
    supply = tryton.erp.planned_supply("SKU-200")
    assert [(s.kind, s.id, s.node, s.qty, str(s.date)) for s in supply] == [
        ("purchase_order", "PO-9001", "DC-EAST", 50, "2026-03-23")
    ]
    transfers = tryton.erp.planned_supply("SKU-300")
    assert [(s.kind, s.id, s.node, s.qty, str(s.date)) for s in transfers] == [
        ("transfer", "TO-300", "DC-WEST", 10, "2026-03-24")
    ]
    # The PO's moves count in Tryton's forecast_quantity (its past date is dropped as late, so
    # Tryton plans it open-ended rather than forgetting it).
    assert tryton.erp.forecast("SKU-100")["DC-EAST"] == 35 + 100


def test_material_master_customers_credit_and_network(tryton: Tryton) -> None:
    info = tryton.erp.sku("SKU-300")
    assert (info.id, info.description, info.unit_cost, info.substitutes) == ("SKU-300", "Sprocket", 2.5, ["SKU-301"])
    with pytest.raises(UnknownSku):
        tryton.erp.sku("SKU-NOPE")
    assert tryton.erp.credit_hold("CUST-9") is True
    assert tryton.erp.credit_hold("CUST-1") is False
    assert tryton.oms.customer("CUST-1").tier == "gold"
    assert tryton.oms.customer("CUST-2").tier == "standard"
    network = tryton.oms.network()
    assert [n.id for n in network.nodes] == ["DC-EAST", "DC-WEST", "STORE-12"]
    assert network.nodes[0].zones[0].id == "PICK-ZONE-A"
    assert len(network.lanes) == len(tryton.scenario["lanes"])


def test_an_order_reads_back_after_creating_its_sale(tryton: Tryton) -> None:
    order = order_data(tryton, 1)  # SO-1002, with a customer note and substitution allowed
    sale_id = create_sale(tryton.client, order)
    assert create_sale(tryton.client, order) == sale_id  # idempotent on the reference
    (sale,) = tryton.client.read("sale.sale", [sale_id], ["state", "reference"])
    assert sale == {"id": sale_id, "state": "processing", "reference": "SO-1002"}
    view = tryton.oms.order("SO-1002")
    assert view.order.model_dump() == order.model_dump()
    assert view.status == "open"
    assert [(ln.line, ln.sku, ln.qty, ln.allocations) for ln in view.lines] == [(1, "SKU-100", 30, [])]
    assert "SO-1002" in [v.order.id for v in tryton.oms.orders(["open"])]
    with pytest.raises(UnknownOrder):
        tryton.oms.order("SO-NOPE")


def test_allocate_reserves_stock_once_and_the_wave_releases_it(tryton: Tryton) -> None:
    create_sale(tryton.client, order_data(tryton, 0))  # SO-1001: 4 × SKU-100, 1 × SKU-200 (express)
    first = act(tryton, "oms", "allocate", "dec-1-0", order_id="SO-1001", line=1, sku="SKU-100", node="DC-EAST", qty=4)
    again = act(tryton, "oms", "allocate", "dec-1-0", order_id="SO-1001", line=1, sku="SKU-100", node="DC-EAST", qty=4)
    assert first == again and first["allocated"] == 4 and first["backordered"] == 0
    act(tryton, "oms", "allocate", "dec-1-1", order_id="SO-1001", line=2, sku="SKU-200", node="DC-EAST", qty=1)
    east = next(ns for ns in tryton.wms.stock("SKU-100") if ns.node == "DC-EAST")
    assert (east.on_hand, east.locked, east.allocated, east.pickable) == (35, 10, 4, 21)
    view = tryton.oms.order("SO-1001")
    assert [[(a.node, a.qty) for a in ln.allocations] for ln in view.lines] == [[("DC-EAST", 4)], [("DC-EAST", 1)]]
    parameters = {"workZone": "PICK-ZONE-A", "carrierCode": "FEDX_GROUND", "cutoffTime": "2026-03-21T14:00:00Z"}
    wave = act(
        tryton,
        "wms",
        "create_wave",
        "dec-1-2",
        waveId="W-1",
        node="DC-EAST",
        orders=[{"orderId": "SO-1001", "priorityScore": 0.9, "lines": []}],
        parameters=parameters,
    )
    assert wave["status"] == "released"
    (released,) = [w for w in tryton.wms.waves() if w.wave_id == "W-1"]
    assert (released.node, released.zone, released.carrier, released.status) == (
        "DC-EAST",
        "PICK-ZONE-A",
        "FEDX_GROUND",
        "released",
    )
    assert released.cutoff == datetime(2026, 3, 21, 14, tzinfo=UTC) and released.orders == {"SO-1001": 2}
    assert "W-1" not in [w.wave_id for w in tryton.wms.waves(cutoff_after=datetime(2026, 3, 21, 15, tzinfo=UTC))]
    (w,) = [w for w in tryton.wms.wave_dicts() if w["waveId"] == "W-1"]
    assert w["orders"][0]["orderId"] == "SO-1001" and w["orders"][0]["priorityScore"] == 0.9
    assert sorted((ln["line"], ln["sku"], ln["qty"]) for ln in w["orders"][0]["lines"]) == [
        (1, "SKU-100", 4),
        (2, "SKU-200", 1),
    ]
    act(tryton, "oms", "update_order_status", "dec-1-3", order_id="SO-1001", status="released")
    assert tryton.oms.order("SO-1001").status == "released"
    # A third allocation would exceed the line: Tryton's shipments already cover it.
    with pytest.raises(PermanentConnectorError, match="exceed"):
        act(tryton, "oms", "allocate", "dec-1-9", order_id="SO-1001", line=1, sku="SKU-100", node="DC-EAST", qty=1)


def test_release_allocation_gives_the_reservation_back(tryton: Tryton) -> None:
    # SO-1001 holds 4 × SKU-100 at DC-EAST (previous test).
    for _ in range(2):
        act(tryton, "oms", "release_allocation", "dec-r-0", order_id="SO-1001", line=1, node="DC-EAST", qty=1)
    east = next(ns for ns in tryton.wms.stock("SKU-100") if ns.node == "DC-EAST")
    assert (east.allocated, east.pickable) == (3, 22)
    act(tryton, "oms", "release_allocation", "dec-r-1", order_id="SO-1001", line=1, node="DC-EAST", qty=3)
    assert tryton.oms.order("SO-1001").lines[0].allocations == []
    with pytest.raises(PermanentConnectorError, match="holds 0 at DC-EAST"):
        act(tryton, "oms", "release_allocation", "dec-r-2", order_id="SO-1001", line=1, node="DC-EAST", qty=1)
    again = act(tryton, "oms", "allocate", "dec-r-3", order_id="SO-1001", line=1, sku="SKU-100", node="DC-EAST", qty=4)
    assert again["allocated"] == 4


def test_short_stock_is_partially_assigned_and_the_rest_goes_to_a_backorder_shipment(tryton: Tryton) -> None:
    order = order_data(tryton, 3)  # SO-1004: 5 × SKU-300; DC-WEST has 3
    create_sale(tryton.client, order)
    result = act(tryton, "oms", "allocate", "dec-4-0", order_id="SO-1004", line=1, sku="SKU-300", node="DC-WEST", qty=5)
    assert (result["allocated"], result["backordered"]) == (3, 2)
    ships = tryton.client.search_read(
        "stock.shipment.out", [("reference", "in", ["dec-4-0", "dec-4-0:backorder"])], ["reference", "state"]
    )
    assert {s["reference"]: s["state"] for s in ships} == {"dec-4-0": "assigned", "dec-4-0:backorder": "waiting"}
    (line,) = tryton.oms.order("SO-1004").lines
    assert ([(a.node, a.qty) for a in line.allocations], line.backordered) == ([("DC-WEST", 3)], 2)
    (west,) = tryton.wms.stock("SKU-300")
    assert (west.allocated, west.pickable) == (3, 0)
    # Retried, the action changes nothing.
    assert (
        act(tryton, "oms", "allocate", "dec-4-0", order_id="SO-1004", line=1, sku="SKU-300", node="DC-WEST", qty=5)[
            "backorder_shipment"
        ]
        == result["backorder_shipment"]
    )
    act(tryton, "oms", "hold_order", "dec-4-1", order_id="SO-1004", reason="no_stock", detail="2 short")
    held = tryton.oms.orders(["held"])
    assert [(v.order.id, v.hold_reason) for v in held] == [("SO-1004", "no_stock")]


def test_transfer_and_adjustment_write_tryton_documents_once(tryton: Tryton) -> None:
    transfer = act(
        tryton, "wms", "create_transfer", "dec-t-0", **{"from": "DC-WEST", "to": "DC-EAST", "sku": "SKU-301", "qty": 5}
    )
    assert transfer["status"] == "assigned"
    assert (
        act(
            tryton,
            "wms",
            "create_transfer",
            "dec-t-0",
            **{"from": "DC-WEST", "to": "DC-EAST", "sku": "SKU-301", "qty": 5},
        )
        == transfer
    )
    (west,) = tryton.wms.stock("SKU-301")
    assert (west.allocated, west.pickable) == (5, 35)
    assert [(s.kind, s.node, s.qty) for s in tryton.erp.planned_supply("SKU-301")] == [("transfer", "DC-EAST", 5)]

    first = act(
        tryton, "erp", "post_adjustment", "dec-a-0", node="STORE-12", sku="SKU-100", qty_delta=-3, reason="cycle count"
    )
    assert (
        act(
            tryton,
            "erp",
            "post_adjustment",
            "dec-a-0",
            node="STORE-12",
            sku="SKU-100",
            qty_delta=-3,
            reason="cycle count",
        )
        == first
    )
    assert first["book_qty"] == 5
    assert [(b.node, b.qty) for b in tryton.erp.book_stock("SKU-100") if b.node == "STORE-12"] == [("STORE-12", 5)]
    with pytest.raises(PermanentConnectorError, match="would leave"):
        act(tryton, "erp", "post_adjustment", "dec-a-1", node="STORE-12", sku="SKU-100", qty_delta=-50)


def test_actions_without_a_tryton_equivalent_are_refused_with_the_reason(tryton: Tryton) -> None:
    for name in NOT_MAPPED:
        system, type_ = name.split(".")
        with pytest.raises(PermanentConnectorError, match="no Tryton equivalent"):
            act(tryton, system, type_, "dec-x", order_id="SO-1001")
    with pytest.raises(PermanentConnectorError, match="idempotency key"):
        tryton.oms.apply(Action(system="oms", type="hold_order", payload={"order_id": "SO-1001", "reason": "x"}))


def test_a_rejected_call_becomes_a_short_permanent_error(tryton: Tryton) -> None:
    with pytest.raises(PermanentConnectorError) as rejected:
        tryton.client.create("product.template", [{"name": "no unit"}])
    message = str(rejected.value)
    assert message.startswith("Tryton product.template.create: ")
    assert "Default UoM" in message and "\n" not in message and len(message) < 250
    with pytest.raises(PermanentConnectorError, match=r"^Tryton sale\.sale\.no_such_method rejected with HTTP 403"):
        tryton.client.call("sale.sale", "no_such_method", [1])


def test_credentials_and_transport_errors(tryton: Tryton) -> None:
    server = tryton.server
    wrong = TrytonClient(TrytonConfig(server.url, server.database, server.admin_login, "not-the-password"))
    with pytest.raises(TrytonAuthError) as refused:
        wrong.login()
    assert "not-the-password" not in str(refused.value)
    wrong.close()
    down = TrytonClient(
        TrytonConfig(f"http://127.0.0.1:{free_port()}", server.database, "admin", "x", timeout_s=1, read_retries=1),
        httpx.Client(trust_env=False),
    )
    with pytest.raises(ConnectorError) as unreachable:
        down.search("sale.sale", [])
    assert not isinstance(unreachable.value, PermanentConnectorError)
    down.close()


def test_asn_and_receipt_are_one_supplier_shipment_and_the_rest_stays_on_order(tryton: Tryton) -> None:
    events = {e["id"]: e["data"] for e in tryton.scenario["events"]}
    asn = Asn.model_validate(events["evt-0010"])  # ASN-5001: PO-9001 lines 10 (100) and 20 (50)
    assert create_asn(tryton.client, asn) == create_asn(tryton.client, asn)
    (announced,) = tryton.wms.asns("PO-9001")
    assert [(ln.po_line, ln.sku, ln.qty, ln.lot) for ln in announced.lines] == [
        (10, "SKU-100", 100, None),
        (20, "SKU-200", 50, "L-77"),
    ]
    receipt = Receipt.model_validate(events["evt-0012"])  # 99 and 40 arrive
    assert post_receipt(tryton.client, receipt) == post_receipt(tryton.client, receipt)
    # The ASN stays recorded (as on the twin), holding what arrived; the receipt names it.
    assert [(a.id, [ln.qty for ln in a.lines]) for a in tryton.wms.asns("PO-9001")] == [("ASN-5001", [99, 40])]
    (received,) = tryton.wms.receipts("PO-9001")
    assert (received.id, received.asn_id, received.node) == ("ASN-5001", "ASN-5001", "DC-EAST")
    assert [(ln.po_line, ln.qty, ln.lot) for ln in received.lines] == [(10, 99, None), (20, 40, "L-78")]
    view = tryton.erp.purchase_order("PO-9001")
    assert (view.status, view.received, view.closed_lines) == ("open", {10: 99, 20: 40}, [])
    assert [v.po.id for v in tryton.erp.open_purchase_orders()] == ["PO-9001"]
    with pytest.raises(UnknownDocument):
        tryton.erp.purchase_order("PO-NOPE")
    # Tryton's purchase process keeps the shortfall on order: 10 × SKU-200 still to come.
    assert [(s.id, s.qty) for s in tryton.erp.planned_supply("SKU-200")] == [("PO-9001", 10)]
    assert [(m.kind, m.qty_delta, m.ref) for m in tryton.wms.movements("SKU-200", "DC-EAST")] == [
        ("receipt", 40, "ASN-5001")
    ]
    # One ledger: the ERP's postings are the WMS's movements (here the cycle count at STORE-12).
    wms_moves = tryton.wms.movements("SKU-100", "STORE-12")
    erp_posts = tryton.erp.postings("SKU-100", "STORE-12")
    assert [(m.kind, m.qty_delta) for m in wms_moves] == [("adjustment", -3)]
    assert [(m.qty_delta, m.ref) for m in erp_posts] == [(m.qty_delta, m.ref) for m in wms_moves]


def test_update_line_qty_writes_a_quotation_and_refuses_a_confirmed_sale(tryton: Tryton) -> None:
    c = tryton.client
    create_sale(c, order_data(tryton, 0))  # SO-1001, confirmed: its lines are read-only in Tryton
    with pytest.raises(PermanentConnectorError, match="SO-1001 is processing in Tryton: a confirmed sale's lines"):
        act(tryton, "oms", "update_line_qty", "dec-q-0", order_id="SO-1001", line=1, qty=2)
    (sid,) = c.search("sale.sale", [("reference", "=", "SO-1001")], limit=1)
    (quote,) = c.call("sale.sale", "copy", [sid], {"reference": "SO-Q1"})
    c.button("sale.sale", "quote", [quote])
    for _ in range(2):  # a retry changes nothing and ends in the same state
        result = act(tryton, "oms", "update_line_qty", "dec-q-1", order_id="SO-Q1", line=1, qty=2)
        assert result == {"order_id": "SO-Q1", "line": 1, "qty": 2, "previous_qty": 4, "released": []}
        (sale,) = c.read("sale.sale", [quote], ["state"])
        assert sale["state"] == "quotation"
        (line,) = c.search_read("sale.line", [("sale", "=", quote), ("sequence", "=", 1)], ["quantity"])
        assert float(line["quantity"]) == 2
    with pytest.raises(PermanentConnectorError, match="has no line 9"):
        act(tryton, "oms", "update_line_qty", "dec-q-2", order_id="SO-Q1", line=9, qty=1)


# Bulk reads for continuous reconciliation (connectors/tryton/snapshot.py); last, on the state the
# tests above left.


def every_row(read: object, **kw: object) -> list[SnapshotRow]:
    rows: list[SnapshotRow] = []
    after = None
    while True:
        page = read(after=after, **kw)  # type: ignore[operator]
        rows.extend(page.rows)
        if page.next_after is None:
            return rows
        after = page.next_after


def test_the_bulk_views_are_the_per_sku_reads_in_bulk(tryton: Tryton) -> None:
    assert isinstance(tryton.wms, StockSnapshotReader) and isinstance(tryton.erp, BookSnapshotReader)
    assert isinstance(tryton.oms, AllocationSnapshotReader)
    stock = every_row(tryton.wms.stock_snapshot, limit=2)  # paged two rows at a time
    book = every_row(tryton.erp.book_snapshot, limit=1000)
    keys = [r.key for r in stock]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) and len(keys) > 4
    for sku in sorted({s["id"] for s in tryton.scenario["skus"]}):
        want_stock = {s.node: (s.on_hand, s.locked) for s in tryton.wms.stock(sku) if s.on_hand or s.locked}
        want_book = {b.node: (b.qty, b.blocked) for b in tryton.erp.book_stock(sku)}
        assert {r.node: (r.qty, r.held) for r in stock if r.sku == sku} == want_stock, sku
        assert {r.node: (r.qty, r.held) for r in book if r.sku == sku} == want_book, sku


def test_the_change_feed_names_what_moved_since(tryton: Tryton) -> None:
    before = datetime.now(UTC)  # trytond on this host stamps write_date in UTC, to the microsecond
    assert every_row(tryton.erp.book_snapshot, since=before + timedelta(seconds=1)) == []
    action = Action.model_validate(
        {
            "system": "erp",
            "type": "post_adjustment",
            "payload": {"node": "DC-WEST", "sku": "SKU-100", "qty_delta": -2, "reason": "count"},
            "idempotency_key": "snap-adj-1",
        }
    )
    tryton.erp.apply(action)
    changed = every_row(tryton.erp.book_snapshot, since=before)
    assert [r.key for r in changed] == ["SKU-100@DC-WEST"]
    assert changed[0].qty == next(b.qty for b in tryton.erp.book_stock("SKU-100") if b.node == "DC-WEST")
    assert changed[0].changed_at is not None and changed[0].changed_at >= before
    stock = every_row(tryton.wms.stock_snapshot, since=before)
    assert [(r.key, r.qty) for r in stock] == [("SKU-100@DC-WEST", changed[0].qty)]
