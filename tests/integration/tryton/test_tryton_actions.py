"""The actions mapped onto Tryton modules (stock_supply order points, draft inventories, internal
shipments, purchase line cancellation, shipment planned dates), against a real trytond 8.2: each
applied through the adapter, read back over JSON-RPC, and applied twice = one record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from connectors.ports import ErpPort, OmsPort, WmsPort
from connectors.tryton.adapters import MAPPED, NOT_MAPPED
from connectors.tryton.loader import create_sale
from domain.decisions import Action
from domain.errors import PermanentConnectorError
from domain.models import Order

from .conftest import Tryton


def act(t: Tryton, name: str, key: str, **payload: Any) -> dict[str, Any]:
    system, type_ = name.split(".")
    adapters: dict[str, WmsPort | ErpPort | OmsPort] = {"wms": t.wms, "erp": t.erp, "oms": t.oms}
    action = Action.model_validate({"system": system, "type": type_, "payload": payload, "idempotency_key": key})
    return adapters[system].apply(action)


def twice(t: Tryton, name: str, key: str, **payload: Any) -> dict[str, Any]:
    first = act(t, name, key, **payload)
    assert act(t, name, key, **payload) == first  # a retry changes nothing
    return first


def order(t: Tryton, order_id: str) -> Order:
    data = next(e["data"] for e in t.scenario["events"] if e["data"].get("id") == order_id)
    return Order.model_validate(data)


def location_id(t: Tryton, code: str) -> int:
    (lid,) = t.client.search("stock.location", [("code", "=", code)])
    return lid


def test_every_action_is_mapped_or_says_why_not() -> None:
    assert set(MAPPED).isdisjoint(NOT_MAPPED)
    assert set(NOT_MAPPED) == {"oms.substitute_line"}
    for name in (
        "erp.update_safety_stock",
        "wms.create_task",
        "erp.close_po_line",
        "erp.create_backorder",
        "oms.update_promise_date",
    ):
        assert name in MAPPED


def test_safety_stock_is_a_purchase_order_point_at_the_warehouse(tryton: Tryton) -> None:
    c = tryton.client
    # The scenario's safety stock was loaded as an order point.
    assert tryton.erp.sku("SKU-100").safety_stock == {"DC-EAST": 5}
    east = tryton.loaded.warehouses["DC-EAST"]
    first = twice(tryton, "erp.update_safety_stock", "dec-ss-0", sku="SKU-100", node="DC-EAST", qty=12)
    points = c.search_read(
        "stock.order_point",
        [("product.code", "=", "SKU-100")],
        ["location", "type", "min_quantity", "target_quantity"],
    )
    assert [(p["location"], p["type"], p["min_quantity"], p["target_quantity"]) for p in points] == [
        (east, "purchase", 12, 12)
    ]
    assert first["order_point"] == points[0]["id"]
    assert tryton.erp.sku("SKU-100").safety_stock == {"DC-EAST": 12}
    twice(tryton, "erp.update_safety_stock", "dec-ss-1", sku="SKU-300", node="DC-WEST", qty=4)
    assert c.call("stock.order_point", "search_count", [("product.code", "=", "SKU-300")]) == 1
    assert tryton.erp.sku("SKU-300").safety_stock == {"DC-WEST": 4}
    with pytest.raises(PermanentConnectorError, match="not a warehouse"):
        act(tryton, "erp.update_safety_stock", "dec-ss-2", sku="SKU-300", node="NOWHERE", qty=4)


def test_a_cycle_count_task_is_a_draft_inventory_of_the_bin(tryton: Tryton) -> None:
    c = tryton.client
    before = c.call("stock.inventory", "search_count", [])
    payload = {"task_type": "cycle_count", "node": "DC-EAST", "sku": "SKU-100", "location": "A-01-01"}
    task = twice(tryton, "wms.create_task", "dec-cc-0", **payload, reason="short pick")
    assert c.call("stock.inventory", "search_count", []) == before + 1
    (inv,) = c.read("stock.inventory", [task["tryton_id"]], ["state", "location", "lines"])
    assert (inv["state"], inv["location"], task["status"]) == ("draft", location_id(tryton, "A-01-01"), "open")
    (line,) = c.read("stock.inventory.line", inv["lines"], ["product.code", "expected_quantity", "quantity"])
    assert (line["product."]["code"], line["expected_quantity"], line["quantity"]) == ("SKU-100", 25, None)
    # A count to do moves no stock.
    east = next(ns for ns in tryton.wms.stock("SKU-100") if ns.node == "DC-EAST")
    assert east.on_hand == 35


def test_repick_and_replenish_tasks_are_draft_internal_shipments(tryton: Tryton) -> None:
    c = tryton.client
    repick = twice(
        tryton,
        "wms.create_task",
        "dec-rp-0",
        task_type="repick",
        node="DC-EAST",
        sku="SKU-100",
        location="A-01-01",
        qty=2,
        order_id="SO-1001",
    )
    moved = twice(
        tryton,
        "wms.create_task",
        "dec-rl-0",
        task_type="replenish",
        node="DC-WEST",
        sku="SKU-301",
        from_location="W-03-02",
        to_location="W-01-01",
        qty=6,
    )
    ships = c.search_read(
        "stock.shipment.internal",
        [("reference", "in", ["dec-rp-0", "dec-rl-0"])],
        ["reference", "state", "from_location", "to_location", "moves"],
    )
    assert len(ships) == 2
    by_ref = {s["reference"]: s for s in ships}
    output = c.read("stock.location", [tryton.loaded.warehouses["DC-EAST"]], ["output_location"])[0]
    assert (by_ref["dec-rp-0"]["state"], by_ref["dec-rp-0"]["from_location"], by_ref["dec-rp-0"]["to_location"]) == (
        "draft",
        location_id(tryton, "A-01-01"),
        output["output_location"],
    )
    assert (by_ref["dec-rl-0"]["from_location"], by_ref["dec-rl-0"]["to_location"]) == (
        location_id(tryton, "W-03-02"),
        location_id(tryton, "W-01-01"),
    )
    (move,) = c.read("stock.move", by_ref["dec-rl-0"]["moves"], ["product.code", "quantity", "state"])
    assert (move["product."]["code"], move["quantity"], move["state"]) == ("SKU-301", 6, "draft")
    assert repick["tryton_id"] == by_ref["dec-rp-0"]["id"] and moved["status"] == "open"
    # Nothing is reserved or counted as supply by a task not started.
    assert [(ns.node, ns.allocated) for ns in tryton.wms.stock("SKU-301")] == [("DC-WEST", 0)]
    assert tryton.erp.planned_supply("SKU-301") == []
    with pytest.raises(PermanentConnectorError, match="missing to_location"):
        act(tryton, "wms.create_task", "dec-rl-1", task_type="relocate", node="DC-WEST", sku="SKU-301", qty=1)
    with pytest.raises(PermanentConnectorError, match="task_type 'putaway' has no Tryton equivalent"):
        act(tryton, "wms.create_task", "dec-rl-2", task_type="putaway", node="DC-WEST", sku="SKU-301", qty=1)


def test_close_po_line_cancels_its_pending_moves_and_ignores_them(tryton: Tryton) -> None:
    c = tryton.client
    assert [(s.id, s.qty) for s in tryton.erp.planned_supply("SKU-200")] == [("PO-9001", 50)]
    closed = twice(tryton, "erp.close_po_line", "dec-po-0", po_id="PO-9001", line=20, reason="short shipped")
    assert (closed["status"], closed["received"]) == ("closed", 0)
    (line,) = c.search_read(
        "purchase.line", [("purchase.reference", "=", "PO-9001"), ("sequence", "=", 20)], ["moves", "moves_ignored"]
    )
    states = {m["state"] for m in c.read("stock.move", line["moves"], ["state"])}
    assert states == {"cancelled"} and sorted(line["moves_ignored"]) == sorted(line["moves"])
    (purchase,) = c.search_read("purchase.purchase", [("reference", "=", "PO-9001")], ["state", "shipment_state"])
    assert purchase["state"] == "processing" and purchase["shipment_state"] != "exception"
    view = tryton.erp.purchase_order("PO-9001")
    assert (view.status, view.closed_lines) == ("open", [20])
    assert tryton.erp.planned_supply("SKU-200") == []
    assert [s.id for s in tryton.erp.planned_supply("SKU-100") if s.kind == "purchase_order"] == ["PO-9001"]


def test_backorder_and_promise_dates_are_the_customer_shipments_planned_dates(tryton: Tryton) -> None:
    c = tryton.client
    create_sale(c, order(tryton, "SO-1004"))  # 5 × SKU-300; DC-WEST has 3
    act(tryton, "oms.allocate", "dec-4-0", order_id="SO-1004", line=1, sku="SKU-300", node="DC-WEST", qty=5)
    early = "2026-04-02"
    back = twice(
        tryton, "erp.create_backorder", "dec-4-1", order_id="SO-1004", line=1, sku="SKU-300", qty=2, promise_date=early
    )
    (bid,) = c.search("stock.shipment.out", [("reference", "=", "dec-4-0:backorder")])
    assert back["shipments"] == [bid]
    (ship,) = c.read("stock.shipment.out", [bid], ["planned_date", "state"])
    assert (ship["planned_date"], ship["state"]) == (dt.date(2026, 4, 2), "waiting")
    assert c.call("stock.shipment.out", "search_count", [("reference", "=", "dec-4-1")]) == 0  # none added

    later = "2026-04-06"
    twice(tryton, "oms.update_promise_date", "dec-4-2", order_id="SO-1004", line=1, promise_date=later)
    planned = c.search_read("stock.shipment.out", [("reference", "like", "dec-4-0%")], ["reference", "planned_date"])
    dates = {p["reference"]: p["planned_date"] for p in planned}
    assert dates["dec-4-0:backorder"] == dt.date(2026, 4, 6)
    assert dates["dec-4-0"] != dt.date(2026, 4, 6)  # the assigned 3 keep their reservation and date
    (moved,) = c.search_read(
        "stock.move",
        [("shipment", "=", f"stock.shipment.out,{bid}"), ("origin", "like", "sale.line,%")],
        ["planned_date"],
    )
    assert moved["planned_date"] == dt.date(2026, 4, 6)
    (line,) = tryton.oms.order("SO-1004").lines
    assert (line.promise_date, line.backordered) == (dt.date(2026, 4, 6), 2)

    # A line nobody split yet: the backorder is a waiting shipment of its own, created once.
    create_sale(c, order(tryton, "SO-1002"))  # 30 × SKU-100
    made = twice(
        tryton, "erp.create_backorder", "dec-2-0", order_id="SO-1002", line=1, sku="SKU-100", qty=30, promise_date=later
    )
    ships = c.search_read("stock.shipment.out", [("reference", "=", "dec-2-0")], ["state", "planned_date"])
    assert [(s["id"], s["state"], s["planned_date"]) for s in ships] == [
        (made["shipments"][0], "waiting", dt.date(2026, 4, 6))
    ]
    assert tryton.oms.order("SO-1002").lines[0].backordered == 30


def test_what_tryton_cannot_express_fails_as_a_decision_with_the_reason(tryton: Tryton) -> None:
    with pytest.raises(PermanentConnectorError) as refused:
        act(tryton, "oms.substitute_line", "dec-sub-0", order_id="SO-1004", line=1, sku="SKU-300", substitute="SKU-301")
    assert str(refused.value) == f"oms.substitute_line has no Tryton equivalent: {NOT_MAPPED['oms.substitute_line']}"
