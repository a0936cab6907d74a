"""Ports: the only way Crossdock reads from or writes to a WMS, ERP or OMS.

Adapters (the HTTP adapter for the twin and REST systems, Tryton later) implement these
Protocols; ``runtime.bootstrap`` is the one place that picks which. Every write goes
through ``apply`` with the action's idempotency key, so a replayed action is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from domain.context import (
    BookPosition,
    Movement,
    Network,
    NodeStock,
    OrderView,
    PurchaseOrderView,
    SkuInfo,
    Supply,
    WaveView,
)
from domain.decisions import Action
from domain.engines.forecast import TransferView
from domain.engines.triage import WmsTask
from domain.errors import UnknownSku
from domain.models import Asn, Customer, DemandPoint, Receipt


@runtime_checkable
class WmsPort(Protocol):
    def stock(self, sku: str) -> list[NodeStock]:
        """Location-level stock of ``sku`` at every node, with pickable per node."""
        ...

    def movements(self, sku: str, node: str) -> list[Movement]:
        """Adjustments and receipts of ``sku`` at ``node`` as the WMS recorded them."""
        ...

    def asns(self, po_id: str) -> list[Asn]:
        """Advance shipping notices recorded for a purchase order."""
        ...

    def receipts(self, po_id: str) -> list[Receipt]:
        """Goods receipts posted against a purchase order, duplicates included, as posted."""
        ...

    def waves(self, cutoff_after: datetime | None = None, nodes: Sequence[str] | None = None) -> list[WaveView]:
        """Released waves: what each zone has to pick. With ``cutoff_after``, only the waves
        whose truck leaves after it (or that have no cutoff): the work still ahead; with
        ``nodes``, only those nodes' waves (an order decision reads the nodes it can ship from)."""
        ...

    def apply(self, action: Action) -> dict[str, Any]:
        """Execute a ``wms.*`` action; idempotent on ``action.idempotency_key``."""
        ...


@runtime_checkable
class ErpPort(Protocol):
    def sku(self, sku: str) -> SkuInfo:
        """Material master record; raises ``UnknownSku`` if the ERP does not know it."""
        ...

    def book_stock(self, sku: str) -> list[BookPosition]: ...

    def planned_supply(self, sku: str) -> list[Supply]:
        """Open PO lines and in-transit transfers bringing ``sku`` to a node."""
        ...

    def credit_hold(self, customer: str) -> bool: ...

    def postings(self, sku: str, node: str) -> list[Movement]:
        """Inventory postings of ``sku`` at ``node`` as the ERP booked them."""
        ...

    def purchase_order(self, po_id: str) -> PurchaseOrderView:
        """A purchase order with its line status; raises ``UnknownDocument`` if the ERP lacks it."""
        ...

    def open_purchase_orders(self) -> list[PurchaseOrderView]:
        """Every purchase order not fully closed (what a reconciliation sweep looks at)."""
        ...

    def apply(self, action: Action) -> dict[str, Any]: ...


@runtime_checkable
class OmsPort(Protocol):
    def order(self, order_id: str) -> OrderView:
        """The order with its status and reservations; raises ``UnknownOrder``."""
        ...

    def customer(self, customer_id: str) -> Customer: ...

    def orders(self, statuses: list[str]) -> list[OrderView]:
        """Orders in any of ``statuses`` (the open backlog a tick re-plans)."""
        ...

    def network(self) -> Network:
        """Nodes, lanes and carriers the OMS sources from."""
        ...

    def apply(self, action: Action) -> dict[str, Any]: ...


@runtime_checkable
class NotifyPort(Protocol):
    def apply(self, action: Action) -> dict[str, Any]:
        """Deliver a ``notify.ticket`` to a team's queue."""
        ...


# Optional reads (extensions). They are separate Protocols so that an adapter without them
# (Tryton has no task model) still satisfies the core ports; callers check with isinstance.


@runtime_checkable
class WmsTaskReader(Protocol):
    def tasks(self, sku: str | None = None, node: str | None = None) -> list[WmsTask]:
        """Warehouse tasks (re-picks, cycle counts, ...), optionally for one sku and/or node."""
        ...


@runtime_checkable
class WmsTransferReader(Protocol):
    def transfers(self, sku: str | None = None) -> list[TransferView]:
        """Stock transfers created between nodes, optionally for one sku."""
        ...


@runtime_checkable
class DemandHistoryReader(Protocol):
    def demand_history(self, sku: str | None = None, node: str | None = None) -> list[DemandPoint]:
        """Units shipped per day (the ERP's demand history), optionally for one sku and/or node."""
        ...


# Bulk reads for continuous reconciliation (``crews.reconcile_sweep``): one page of SKU@node rows,
# ordered by ``snapshot_key``, from every system. With ``since``, only the rows the system changed
# at or after that time (its change feed); without, every row (a full pass).

SNAPSHOT_PAGE = 1000


def snapshot_key(sku: str, node: str) -> str:
    """The order bulk reads page in (the same string in every system, so pages can be merged)."""
    return f"{sku}@{node}"


@dataclass(frozen=True)
class SnapshotRow:
    """One SKU@node in a bulk read. ``qty``: WMS on hand, ERP book or OMS allocated; ``held``: WMS
    locked or ERP blocked (0 for the OMS); ``changed_at``: when the system last changed the row, by
    its own clock (None: not since it was loaded)."""

    sku: str
    node: str
    qty: float
    held: float = 0.0
    changed_at: datetime | None = None

    @property
    def key(self) -> str:
        return snapshot_key(self.sku, self.node)


@dataclass(frozen=True)
class SnapshotPage:
    """Rows with keys after the ``after`` asked for, in key order; ``next_after`` is the cursor for
    the next page (None: there is none)."""

    rows: list[SnapshotRow]
    next_after: str | None = None


@runtime_checkable
class StockSnapshotReader(Protocol):
    def stock_snapshot(
        self, since: datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """WMS physical stock per SKU@node (on hand, locked), a page at a time."""
        ...


@runtime_checkable
class BookSnapshotReader(Protocol):
    def book_snapshot(
        self, since: datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """ERP book stock per SKU@node (book, blocked), a page at a time."""
        ...


@runtime_checkable
class AllocationSnapshotReader(Protocol):
    def allocations_snapshot(
        self, since: datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """OMS reservations per SKU@node on orders that still hold stock, a page at a time."""
        ...


# Bulk reads for an order decision: every SKU an order needs in one call per system instead of
# one per SKU and read (``tools.context.release_context``). Optional like the readers above: an
# adapter without them (Tryton) is read one SKU at a time by ``books_of`` and ``stock_of``.


@dataclass(frozen=True)
class SkuBooks:
    """One SKU as the ERP holds it: its material master record (None: the ERP does not know the
    SKU), its book stock and its planned supply (both empty for an unknown SKU)."""

    info: SkuInfo | None
    book: list[BookPosition]
    supply: list[Supply]


@runtime_checkable
class ErpBooksReader(Protocol):
    def books_many(self, skus: Sequence[str]) -> dict[str, SkuBooks]:
        """Material master, book stock and planned supply of each of ``skus`` (every one a key)."""
        ...


@runtime_checkable
class WmsStockReader(Protocol):
    def stock_many(self, skus: Sequence[str]) -> dict[str, list[NodeStock]]:
        """``WmsPort.stock`` of each of ``skus`` (every one a key), in one read."""
        ...


def books_of(erp: ErpPort, skus: Sequence[str]) -> dict[str, SkuBooks]:
    """``skus``' ERP records, in the order given (duplicates once): one bulk read when the adapter
    has one, else ``sku``, ``book_stock`` and ``planned_supply`` per SKU (an unknown SKU's books
    are not read)."""
    wanted = list(dict.fromkeys(skus))
    if not wanted:
        return {}
    if isinstance(erp, ErpBooksReader):
        found = erp.books_many(wanted)
        return {sku: found[sku] for sku in wanted}
    return books_one_by_one(erp, wanted)


def books_one_by_one(erp: ErpPort, skus: Sequence[str]) -> dict[str, SkuBooks]:
    """``books_of`` with the core reads only: ``sku``, then ``book_stock`` and ``planned_supply`` of
    each known SKU."""
    out: dict[str, SkuBooks] = {}
    for sku in dict.fromkeys(skus):
        try:
            info = erp.sku(sku)
        except UnknownSku:
            out[sku] = SkuBooks(None, [], [])
            continue
        out[sku] = SkuBooks(info, erp.book_stock(sku), erp.planned_supply(sku))
    return out


def stock_of(wms: WmsPort, skus: Sequence[str]) -> dict[str, list[NodeStock]]:
    """``skus``' WMS stock, in the order given (duplicates once): one bulk read when the adapter
    has one, else ``stock`` per SKU."""
    wanted = list(dict.fromkeys(skus))
    if not wanted:
        return {}
    if isinstance(wms, WmsStockReader):
        found = wms.stock_many(wanted)
        return {sku: found[sku] for sku in wanted}
    return {sku: wms.stock(sku) for sku in wanted}
