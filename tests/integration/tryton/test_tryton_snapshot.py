"""Bulk reads of the Tryton connector (connectors/tryton/snapshot.py) against a real trytond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.ports import AllocationSnapshotReader, BookSnapshotReader, SnapshotRow, StockSnapshotReader
from domain.decisions import Action

from .conftest import Tryton


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
    before = datetime.now(UTC) - timedelta(seconds=1)
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
