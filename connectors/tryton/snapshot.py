"""Bulk reads of a Tryton database for continuous reconciliation (``crews.reconcile_sweep``).

Tryton keeps one stock ledger, so the three views are product quantities per location, read for
every product at once (``product.product`` ``quantity`` with context ``locations``), four reads per
warehouse, the same locations the per-SKU reads of ``connectors.tryton.adapters`` use:

* ERP book (``book_snapshot``): the warehouse; blocked: its quarantine ``<node>/LOCK``.
* WMS on hand (``stock_snapshot``): storage zone + quarantine; locked: the quarantine.
* OMS reserved (``allocations_snapshot``): on hand − the same read with ``stock_assign`` (assigned
  outgoing moves counted as gone), as ``TrytonWms.stock`` computes ``allocated``.

trytond spends a read's time in Python per product read (~0.6 ms each on 2 busy cores: the
product's unit, the function field), not in SQL, so the quarantine and ``stock_assign`` reads ask
only for the products that can differ: those with a move into or out of the quarantine, and those
with an assigned move out of storage + quarantine (one ``stock.move`` search each; without such a
move the quarantine holds 0 and ``stock_assign`` changes nothing). The warehouse and on-hand reads
cover every product.

Change feed (``since``): the ``stock.move`` rows created or written at or after ``since``
(``create_date``/``write_date``: the Tryton server's clock, UTC) name the products that moved and
the warehouses they moved in or out of; only those products are read, and a row's ``changed_at`` is
its newest move's. A move written straight into the database behind Tryton's back is not in the
feed: the full pass finds it.

Pages: a read with ``after`` is served from the rows the read without it computed (kept
``CACHE_S``), so a full pass is one computation however many pages it is read in.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from connectors.ports import SNAPSHOT_PAGE, SnapshotPage, SnapshotRow

if TYPE_CHECKING:
    from connectors.tryton.adapters import TrytonBackend

CACHE_S = 300.0
PRODUCT_BATCH = 2000


class TrytonSnapshots:
    """The three bulk views of one Tryton database, computed together."""

    def __init__(self, backend: TrytonBackend) -> None:
        self.b = backend
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, dt.datetime | None], tuple[float, list[SnapshotRow]]] = {}
        self._keys: dict[str, list[str]] = {}
        self._served: set[str] = set()

    # -- reads ---------------------------------------------------------------------------------

    def _codes(self, ids: list[int] | None) -> dict[int, str]:
        """Product id -> code (every stockable product, or ``ids``)."""
        domain: list[Any] = [("code", "!=", None)]
        if ids is not None:
            domain.append(("id", "in", ids))
        rows = self.b.client.search_read("product.product", domain, ["code"])
        return {int(r["id"]): str(r["code"]) for r in rows if r.get("code")}

    def _quantities(self, locations: list[int], products: list[int], assign: bool = False) -> dict[int, float]:
        """Product id -> quantity in ``locations`` (their children included), for ``products``."""
        out: dict[int, float] = {}
        ctx: dict[str, Any] = {"locations": locations, "with_childs": True}
        if assign:
            ctx["stock_assign"] = True
        for i in range(0, len(products), PRODUCT_BATCH):
            batch = products[i : i + PRODUCT_BATCH]
            for r in self.b.client.read("product.product", batch, ["quantity"], context=ctx):
                qty = float(r.get("quantity") or 0)
                if qty:
                    out[int(r["id"])] = qty
        return out

    def _moved(self, locations: list[int], *, assigned_out: bool = False) -> set[int]:
        """Products of the moves into or out of ``locations`` (their children included); with
        ``assigned_out``, of the assigned moves out of them only."""
        if assigned_out:
            domain: list[Any] = [("state", "=", "assigned"), ("from_location", "child_of", locations, "parent")]
        else:
            domain = [
                "OR",
                ("from_location", "child_of", locations, "parent"),
                ("to_location", "child_of", locations, "parent"),
            ]
        return {int(r["product"]) for r in self.b.client.search_read("stock.move", domain, ["product"])}

    def _changes(self, since: dt.datetime) -> dict[tuple[int, str], dt.datetime]:
        """(product id, node) -> newest change time of a move in or out of the node since ``since``."""
        floor = since.astimezone(dt.UTC).replace(tzinfo=None) if since.tzinfo else since
        rows = self.b.client.search_read(
            "stock.move",
            ["OR", ("write_date", ">=", floor), ("create_date", ">=", floor)],
            ["product", "from_location", "to_location", "write_date", "create_date"],
        )
        index = self.b.index()
        out: dict[tuple[int, str], dt.datetime] = {}
        for r in rows:
            stamps = [v for v in (r.get("write_date"), r.get("create_date")) if isinstance(v, dt.datetime)]
            at = max(stamps).replace(tzinfo=dt.UTC) if stamps else None
            if at is None:
                continue
            for loc in (r.get("from_location"), r.get("to_location")):
                node = index.node_of.get(int(loc)) if loc is not None else None
                if node is not None:
                    key = (int(r["product"]), node)
                    out[key] = max(out.get(key, at), at)
        return out

    def compute(self, since: dt.datetime | None) -> dict[str, list[SnapshotRow]]:
        """Every row of the three views (only those the feed names, with ``since``), sorted by key."""
        changed = self._changes(since) if since is not None else None
        codes = self._codes(sorted({p for p, _ in changed}) if changed is not None else None)
        products = sorted(codes)
        views: dict[str, list[SnapshotRow]] = {"wms": [], "erp": [], "oms": []}
        if not products:
            return views
        for node, wh in sorted(self.b.index().warehouses.items()):
            if changed is not None and not any(n == node for _, n in changed):
                continue
            held = [wh.storage] + ([wh.lock] if wh.lock is not None else [])
            book = self._quantities([wh.id], products)
            on_hand = self._quantities(held, products)
            blocked: dict[int, float] = {}
            if wh.lock is not None:
                quarantined = sorted(self._moved([wh.lock]).intersection(products))
                blocked = self._quantities([wh.lock], quarantined) if quarantined else {}
            assigned = self._moved(held, assigned_out=True).intersection(products)
            free = self._quantities(held, sorted(assigned), assign=True) if assigned else {}
            for pid in products:
                at = changed.get((pid, node)) if changed is not None else None
                if changed is not None and at is None:
                    continue
                sku = codes[pid]
                qty, lock = on_hand.get(pid, 0.0), blocked.get(pid, 0.0)
                reserved = max(0.0, qty - free.get(pid, 0.0)) if pid in assigned else 0.0
                if changed is not None or qty or lock:
                    views["wms"].append(SnapshotRow(sku, node, qty, lock, at))
                if changed is not None or book.get(pid) or lock:
                    views["erp"].append(SnapshotRow(sku, node, book.get(pid, 0.0), lock, at))
                if changed is not None or reserved:
                    views["oms"].append(SnapshotRow(sku, node, reserved, 0.0, at))
        for rows in views.values():
            rows.sort(key=lambda r: r.key)
        return views

    def page(self, view: str, since: dt.datetime | None, after: str | None, limit: int) -> SnapshotPage:
        """One page of ``view``: computed afresh for a first page, from the kept rows after it."""
        key = (view, since)
        with self._lock:
            cached = self._cache.get(key)
            # One computation serves the first page of each view once (a chunk of a pass reads the
            # three one after another); a view's next first page computes afresh.
            if cached is None or time.monotonic() - cached[0] > CACHE_S or (after is None and view in self._served):
                stamp = time.monotonic()
                computed = self.compute(since)
                self._cache = {(name, since): (stamp, rows) for name, rows in computed.items()}
                self._keys = {name: [r.key for r in rows] for name, rows in computed.items()}
                self._served = set()
                cached = self._cache[key]
            if after is None:
                self._served.add(view)
            keys = self._keys[view]
        rows = cached[1]
        start = bisect.bisect_right(keys, after) if after is not None else 0
        chunk = rows[start : start + max(1, min(limit, 5 * SNAPSHOT_PAGE))]
        more = start + len(chunk) < len(rows)
        return SnapshotPage(rows=chunk, next_after=chunk[-1].key if more and chunk else None)


_BY_BACKEND: weakref.WeakKeyDictionary[TrytonBackend, TrytonSnapshots] = weakref.WeakKeyDictionary()
_CREATE = threading.Lock()


def snapshots(backend: TrytonBackend) -> TrytonSnapshots:
    """The bulk reads of ``backend``: one per backend, so the three adapters' pages share a computation."""
    with _CREATE:
        found = _BY_BACKEND.get(backend)
        if found is None:
            found = _BY_BACKEND[backend] = TrytonSnapshots(backend)
        return found
