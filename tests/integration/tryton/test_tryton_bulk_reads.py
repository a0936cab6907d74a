"""The bulk reads (connectors/tryton/snapshot.py) agree with the per-SKU reads once stock is quarantined
and reserved: the quarantine and ``stock_assign`` reads ask only for the products that have such moves,
so every other product must come out with nothing blocked and nothing reserved."""

from __future__ import annotations

from typing import Any

from connectors.ports import SnapshotRow
from connectors.tryton.loader import create_sale
from domain.decisions import Action
from domain.models import Order

from .harness import Tryton, tryton, tryton_server

__all__ = ["tryton", "tryton_server"]


def every_row(read: Any) -> list[SnapshotRow]:
    rows: list[SnapshotRow] = []
    after = None
    while True:
        page = read(after=after, limit=3)
        rows.extend(page.rows)
        if page.next_after is None:
            return rows
        after = page.next_after


def allocate(t: Tryton, key: str, **payload: Any) -> dict[str, Any]:
    action = Action.model_validate({"system": "oms", "type": "allocate", "payload": payload, "idempotency_key": key})
    return t.oms.apply(action)


def test_quarantine_and_reservations_in_bulk_match_the_per_sku_reads(tryton: Tryton) -> None:
    create_sale(tryton.client, Order.model_validate(tryton.scenario["events"][0]["data"]))  # SO-1001
    first = allocate(tryton, "bulk-1", order_id="SO-1001", line=1, sku="SKU-100", node="DC-EAST", qty=4)
    assert first["allocated"] == 4
    allocate(tryton, "bulk-2", order_id="SO-1001", line=2, sku="SKU-200", node="DC-EAST", qty=1)
    stock = every_row(tryton.wms.stock_snapshot)
    reserved = every_row(tryton.oms.allocations_snapshot)
    want_stock: dict[str, tuple[float, float]] = {}
    want_reserved: dict[str, float] = {}
    for sku in sorted({s["id"] for s in tryton.scenario["skus"]}):
        for ns in tryton.wms.stock(sku):
            if ns.on_hand or ns.locked:
                want_stock[f"{sku}@{ns.node}"] = (ns.on_hand, ns.locked)
            if ns.allocated:
                want_reserved[f"{sku}@{ns.node}"] = ns.allocated
    assert {r.key: (r.qty, r.held) for r in stock} == want_stock
    assert {r.key: r.qty for r in reserved} == want_reserved
    # What the test set up is there: a quarantine and the two reservations.
    assert any(held for _, held in want_stock.values())
    assert want_reserved == {"SKU-100@DC-EAST": 4, "SKU-200@DC-EAST": 1}
