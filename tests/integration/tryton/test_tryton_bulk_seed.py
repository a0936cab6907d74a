"""Bulk seeding of a real trytond (connectors/tryton/loader.py): products and opening stock go in
batches, and the bulk reads (connectors/tryton/snapshot.py) find every SKU@node at its quantity."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.sweep import scenario_dict
from bench.tryton_server import TrytonServer
from connectors.ports import SnapshotPage, SnapshotRow
from connectors.tryton import loader as loader_module
from connectors.tryton.adapters import tryton_connectors
from connectors.tryton.loader import PRODUCT_CREATE_BATCH, load_scenario
from connectors.tryton.rpc import TrytonClient

from .harness import tryton_server

__all__ = ["tryton_server"]

NODES = 2
# More SKUs than two product batches hold, so one call could not have created them (SQLite's parser
# stack overflows past 85 products a call).
SKUS = 2 * PRODUCT_CREATE_BATCH + 7


@pytest.fixture(scope="module")
def client(tryton_server: TrytonServer) -> Iterator[TrytonClient]:
    with TrytonClient(tryton_server.config()) as c:
        yield c


def _read_all(read: Callable[..., SnapshotPage], since: datetime | None = None) -> list[SnapshotRow]:
    rows: list[SnapshotRow] = []
    after: str | None = None
    while True:
        page = read(since, after, 1000)
        rows.extend(page.rows)
        if page.next_after is None:
            return rows
        after = page.next_after


def test_products_and_stock_are_seeded_in_batches_and_read_back(
    client: TrytonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = scenario_dict(SKUS * NODES, NODES, orders_too=False, shared_bins=True)
    calls: list[tuple[str, str, int]] = []
    real_call = client.call

    def counting(model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if method in ("create", "do") and model in ("product.template", "stock.move"):
            calls.append((model, method, len(args[0])))
        return real_call(model, method, *args, **kwargs)

    monkeypatch.setattr(client, "call", counting)
    monkeypatch.setattr(loader_module, "STOCK_MOVE_BATCH", 100)
    loaded = load_scenario(client, scenario)

    templates = [n for m, k, n in calls if m == "product.template"]
    assert sum(templates) == SKUS and max(templates) <= PRODUCT_CREATE_BATCH and len(templates) == 3
    moves = [n for m, k, n in calls if m == "stock.move" and k == "create"]
    done = [n for m, k, n in calls if m == "stock.move" and k == "do"]
    assert moves == done and sum(moves) == SKUS * NODES and max(moves) == 100
    assert len(loaded.products) == SKUS

    wms, erp, _ = tryton_connectors(client)
    want = {(r["sku"], r["node"]): float(r["on_hand"]) for r in scenario["wms"]["stock"]}
    on_hand = {(r.sku, r.node): r.qty for r in _read_all(wms.stock_snapshot)}
    book = {(r.sku, r.node): r.qty for r in _read_all(erp.book_snapshot)}
    assert on_hand == want
    assert book == want

    # A second load finds everything: no product and no stock is added.
    calls.clear()
    load_scenario(client, scenario)
    assert [c for c in calls if c[1] == "create"] == []
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert {(r.sku, r.node): r.qty for r in _read_all(wms.stock_snapshot)} == want
    # The change feed names every SKU@node the seeding moved.
    assert len(_read_all(wms.stock_snapshot, since)) == SKUS * NODES
