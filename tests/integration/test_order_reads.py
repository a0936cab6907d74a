"""An order decision's reads (issue 20.4): bulk reads per system, the network revalidated by ETag.

The twin is served for real over HTTP from a generated scenario; each order is decided twice, once
through the HTTP adapters with their bulk reads and once through the same adapters reduced to their
reads per SKU (an adapter written before the bulk reads, like Tryton's): the contexts, and so the
decisions, must be the same, with a handful of round trips instead of four per SKU.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.http import http_connectors
from connectors.ports import ErpBooksReader, WmsStockReader, books_of, stock_of
from crews.order_release import OrderReleaseSpecialist
from domain.decisions import with_idempotency_keys
from domain.engines.release import decide_release
from domain.errors import UnknownSku
from domain.events import CloudEvent
from domain.models import Scenario
from runtime.servers import ThreadedServer, serve_in_thread
from tools.context import MAX_SUBSTITUTES, Systems, first_substitutes, release_context, substitutes_of
from twin.generator import generate
from twin.server import create_twin_app
from twin.state import TwinState

ORDERS = 60


class PerSku:
    """A port with only the core reads of its Protocol: what an adapter without bulk reads offers."""

    READS = {
        "wms": ("stock", "waves"),
        "erp": ("sku", "book_stock", "planned_supply", "credit_hold"),
        "oms": ("order", "customer", "network"),
    }

    def __init__(self, port: str, inner: Any) -> None:
        for name in (*self.READS[port], "apply"):
            setattr(self, name, getattr(inner, name))


@dataclass
class Twin:
    state: TwinState
    server: ThreadedServer
    orders: list[dict[str, Any]]
    calls: Counter[str]
    bulk: Systems
    per_sku: Systems


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    raw = generate(7, "medium")
    orders = [e for e in raw["events"] if e["type"] == "oms.order.created"][:ORDERS]
    state = TwinState(Scenario.model_validate(raw))
    server = serve_in_thread(create_twin_app(state))
    calls: Counter[str] = Counter()

    def count(request: httpx.Request) -> None:
        calls[f"{request.method} {request.url.path}"] += 1

    client = httpx.Client(timeout=10.0, trust_env=False, event_hooks={"request": [count]})
    url = server.url
    wms, erp, oms, notify = http_connectors(f"{url}/wms", f"{url}/erp", f"{url}/oms", f"{url}/notify", client)
    per_sku = Systems(wms=PerSku("wms", wms), erp=PerSku("erp", erp), oms=PerSku("oms", oms), notify=notify)  # type: ignore[arg-type]
    try:
        yield Twin(state, server, orders, calls, Systems(wms=wms, erp=erp, oms=oms, notify=notify), per_sku)
    finally:
        client.close()
        server.stop()


def _gets(calls: Counter[str]) -> int:
    return sum(n for k, n in calls.items() if k.startswith("GET "))


def test_bulk_reads_decide_every_order_as_the_reads_per_sku_do(twin: Twin) -> None:
    """Orders decided and executed one after another (the stock each takes is gone for the next):
    the bulk context equals the per-SKU one field by field and key order by key order, and costs
    seven GETs whatever the order's size (order, customer, credit, network, material records, stock,
    waves), eight when it allows substitution and its SKUs have substitutes (their records)."""
    assert not isinstance(twin.per_sku.wms, WmsStockReader) and not isinstance(twin.per_sku.erp, ErpBooksReader)
    multi = substituting = 0
    for raw in twin.orders:
        twin.state.apply_event(raw)
        order_id, now = raw["data"]["id"], datetime.fromisoformat(raw["time"].replace("Z", "+00:00"))
        twin.calls.clear()
        slow = release_context(twin.per_sku, order_id, now)
        per_sku_gets = _gets(twin.calls)
        twin.calls.clear()
        fast = release_context(twin.bulk, order_id, now)
        bulk_gets = _gets(twin.calls)
        assert fast == slow, order_id
        for name in ("skus", "stock", "book", "supply"):
            assert list(getattr(fast, name)) == list(getattr(slow, name)), (order_id, name)
        own = {ln.sku for ln in fast.order.lines}
        subs = {sub for sku in own for sub in fast.skus[sku].substitutes[:MAX_SUBSTITUTES]} - own
        with_subs = fast.order.allow_substitution and bool(subs)
        assert twin.calls["GET /erp/api/v1/materials"] == 1 + with_subs
        assert twin.calls["GET /wms/api/v1/inventory/by-sku"] == 1
        assert bulk_gets == 7 + with_subs, (order_id, twin.calls)
        assert per_sku_gets >= 5 + 4 * len(own) > bulk_gets
        multi += len(own) > 1
        substituting += with_subs
        for n, proposal in enumerate(decide_release(fast)):
            for action in with_idempotency_keys(f"reads-{order_id}-{n}", proposal.actions):
                twin.state.apply(action)
    assert multi >= 10 and substituting >= 1  # the scenario exercised what it is meant to


def test_an_unknown_sku_holds_the_order_with_the_same_error_either_way(twin: Twin) -> None:
    raw = json.loads(json.dumps(twin.orders[0]))
    raw["id"], raw["data"]["id"] = "evt-unknown-sku", "SO-UNKNOWN-SKU"
    raw["data"]["lines"].append({"line": 99, "sku": "SKU-NOPE", "qty": 1})
    raw["data"]["lines"].append({"line": 98, "sku": "SKU-AAA-NOPE", "qty": 1})
    twin.state.apply_event(raw)
    now = datetime.now(UTC)
    errors = []
    for systems in (twin.bulk, twin.per_sku):
        with pytest.raises(UnknownSku) as caught:
            release_context(systems, "SO-UNKNOWN-SKU", now)
        errors.append((caught.value.sku, str(caught.value)))
    assert errors[0] == errors[1] and errors[0][0] == "SKU-AAA-NOPE"  # the first in SKU order
    event = CloudEvent.model_validate(raw)
    (held,) = OrderReleaseSpecialist().propose(event, twin.bulk)
    assert held.outcome == "held" and "SKU-AAA-NOPE" in held.rationale


def test_locks_take_the_same_substitutes_from_one_read(twin: Twin) -> None:
    skus = {ln["sku"] for raw in twin.orders for ln in raw["data"]["lines"]} | {"SKU-NOPE"}
    twin.calls.clear()
    bulk = first_substitutes(twin.bulk, skus)
    assert twin.calls == Counter({"GET /erp/api/v1/materials": 1})
    assert bulk == substitutes_of(twin.bulk, skus) and bulk


def test_the_helpers_read_per_sku_what_a_port_lacks_in_bulk(twin: Twin) -> None:
    skus = ["SKU-NOPE", *sorted({ln["sku"] for ln in twin.orders[0]["data"]["lines"]})]
    twin.calls.clear()
    slow_books, slow_stock = books_of(twin.per_sku.erp, skus), stock_of(twin.per_sku.wms, skus)
    assert twin.calls["GET /erp/api/v1/materials"] == 0 and twin.calls["GET /wms/api/v1/inventory"] == len(skus)
    assert slow_books == books_of(twin.bulk.erp, skus) and slow_stock == stock_of(twin.bulk.wms, skus)
    assert list(slow_books) == skus and slow_books["SKU-NOPE"].info is None and slow_stock["SKU-NOPE"] == []
