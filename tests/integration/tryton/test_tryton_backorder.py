"""Backorder prevention on Tryton: its adapters have none of the bulk reads (``books_many``,
``stock_many``, ``transfers``), so the tick's sweep reads each SKU in turn (``connectors.ports.books_of``
and ``stock_of`` fall back) and decides on those reads; a recording of them replays to the same
proposals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from connectors.ports import ErpBooksReader, WmsStockReader, WmsTransferReader
from connectors.tryton.loader import create_sale
from crews.backorder import backorder_proposals
from domain.decisions import Action
from domain.models import Order
from tools.context import Systems
from tools.recording import RecordingSystems, ReplaySystems

from .harness import Tryton, tryton, tryton_server

__all__ = ["tryton", "tryton_server"]


class _Notify:
    def apply(self, action: Action) -> dict[str, Any]:
        raise AssertionError(f"backorder prevention only proposes: {action.name}")


def test_backorder_prevention_reads_tryton_per_sku_and_replays_the_same(tryton: Tryton) -> None:
    create_sale(tryton.client, Order.model_validate(tryton.scenario["events"][0]["data"]))  # SO-1001
    reserve = {"order_id": "SO-1001", "line": 1, "sku": "SKU-100", "node": "DC-EAST", "qty": 4}
    tryton.oms.apply(Action(system="oms", type="allocate", payload=reserve, idempotency_key="bo-1"))
    assert not isinstance(tryton.erp, ErpBooksReader)
    assert not isinstance(tryton.wms, WmsStockReader) and not isinstance(tryton.wms, WmsTransferReader)
    live = RecordingSystems(Systems(wms=tryton.wms, erp=tryton.erp, oms=tryton.oms, notify=_Notify()))
    now = datetime(2026, 3, 21, 12, tzinfo=UTC)
    proposals = [p.model_dump(mode="json") for p in backorder_proposals(live.systems, now)]
    reads = json.loads(json.dumps(live.reads()))
    per_sku = {(c["call"], str(c["args"][0])) for c in reads["calls"] if c["args"]}
    # The reserved SKU is a candidate, read per SKU: material, supply and stock.
    assert {("erp.sku", "SKU-100"), ("erp.planned_supply", "SKU-100"), ("wms.stock", "SKU-100")} <= per_sku
    assert not {c["call"] for c in reads["calls"]} & {"erp.books_many", "wms.stock_many", "wms.transfers"}
    replay = ReplaySystems(reads).systems
    assert [p.model_dump(mode="json") for p in backorder_proposals(replay, now)] == proposals
