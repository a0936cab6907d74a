"""Context tools: typed reads across WMS, ERP and OMS that specialists decide on.

Each tool declares the scope it needs; an agent is only ever handed tools whose scope
its role allows (enforced where agents are built), so text in an event cannot widen it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from connectors.ports import ErpPort, NotifyPort, OmsPort, SkuBooks, WmsPort, books_of, stock_of
from domain.context import BookPosition, NodeStock, OrderView, SkuInfo, Supply, WaveView
from domain.engines.backlog import AwaitingWave, BacklogContext, HeldOrder, WaveContext
from domain.engines.discrepancy import Reservation, StockPicture
from domain.engines.release import DEFAULT_SPLIT_ONLY_FOR_SERVICE, DEFAULT_WAVE_WINDOW_H, ReleaseContext
from domain.engines.waves import on_a_wave
from domain.errors import PermanentConnectorError, UnknownSku
from domain.models import Customer, Order


class Memo(Protocol):
    """Crossdock's own memory (``runtime.memo.RedisMemo``): findings raised once, re-checks due."""

    def first_time(self, key: str) -> bool: ...

    def schedule(self, queue: str, member: str, due: float) -> None: ...

    def due(self, queue: str, now: float) -> list[str]: ...

    def done(self, queue: str, members: Iterable[str]) -> None: ...

    def value(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class Systems:
    """The connector ports a specialist may use, injected (never global)."""

    wms: WmsPort
    erp: ErpPort
    oms: OmsPort
    notify: NotifyPort
    memo: Memo | None = None  # without it, sweeps re-raise findings and nothing is re-checked
    recon_full_s: float = 900.0  # a full reconciliation pass this often (CROSSDOCK_RECON_FULL_S)


MAX_SUBSTITUTES = 3

SCOPES = {
    "read_order": "oms:read",
    "read_stock": "wms:read",
    "read_books": "erp:read",
    "release_context": "oms:read wms:read erp:read",
    "held_orders": "oms:read",
    "substitutes_of": "erp:read",
    "substitute_map": "erp:read",
    "backlog_context": "oms:read wms:read erp:read",
    "read_waves": "wms:read",
    "stock_picture": "oms:read wms:read erp:read",
    "wave_context": "oms:read wms:read",
}


def read_order(systems: Systems, order_id: str) -> OrderView:
    """The order as the OMS holds it (raises ``UnknownOrder``)."""
    return systems.oms.order(order_id)


def read_stock(systems: Systems, sku: str) -> list[NodeStock]:
    """Location-level pickable stock per node, from the WMS (never ERP book stock)."""
    return systems.wms.stock(sku)


def read_books(systems: Systems, sku: str) -> tuple[SkuInfo, list[BookPosition], list[Supply]]:
    """Material master, book stock with blocks, and planned supply from the ERP."""
    return systems.erp.sku(sku), systems.erp.book_stock(sku), systems.erp.planned_supply(sku)


def read_waves(
    systems: Systems, cutoff_after: datetime | None = None, nodes: Iterable[str] | None = None
) -> list[WaveView]:
    """Released waves: the pick work each zone already has (only what is still ahead, with a time;
    with ``nodes``, only those nodes')."""
    if nodes is None:
        return systems.wms.waves(cutoff_after)
    return systems.wms.waves(cutoff_after, nodes=sorted(set(nodes)))


def _customer(systems: Systems, customer_id: str) -> Customer:
    try:
        return systems.oms.customer(customer_id)
    except (LookupError, PermanentConnectorError):
        # An OMS without the customer record: decide as a standard-tier customer.
        return Customer(id=customer_id)


def _info(books: SkuBooks) -> SkuInfo:
    """The material master record of a SKU known to the ERP."""
    assert books.info is not None
    return books.info


def known_books(systems: Systems, skus: Iterable[str]) -> dict[str, SkuBooks]:
    """The ERP records of the SKUs of ``skus`` the ERP knows (in the order given; an unknown one is
    left out), in one bulk read when the adapter has one (``connectors.ports.books_of``)."""
    return {sku: b for sku, b in books_of(systems.erp, list(skus)).items() if b.info is not None}


def release_context(
    systems: Systems, order_id: str, now: datetime, wave_window_hours: float = DEFAULT_WAVE_WINDOW_H
) -> ReleaseContext:
    """Everything the release engine needs for one order, read fresh from the three systems.

    The order's SKUs (and, when it allows substitution, their first substitutes) are read in bulk:
    one ERP read for the SKUs, one for their substitutes, one WMS read for the stock of both, where
    a read per SKU and kind was a dozen round trips (``connectors.ports.books_of``)."""
    view = read_order(systems, order_id)
    order = view.order
    customer = _customer(systems, order.customer)
    wanted = sorted({ln.sku for ln in order.lines})
    books = books_of(systems.erp, wanted)
    for sku in wanted:  # an unknown SKU of the order holds it (the first, as the reads in turn did)
        if books[sku].info is None:
            raise UnknownSku(sku)
    if order.allow_substitution:
        # The engine may propose a line's first substitute with stock: read those too (an unknown
        # one is left out: a stale substitute list must not hold the order).
        subs = [sub for sku in wanted for sub in _info(books[sku]).substitutes[:MAX_SUBSTITUTES] if sub not in books]
        books.update(known_books(systems, subs))
    stock = stock_of(systems.wms, list(books))
    skus = {sku: _info(b) for sku, b in books.items()}
    book = {sku: b.book for sku, b in books.items()}
    supply = {sku: b.supply for sku, b in books.items()}
    return ReleaseContext(
        order=order,
        customer=customer,
        credit_hold=systems.erp.credit_hold(order.customer),
        skus=skus,
        stock=stock,
        book=book,
        supply=supply,
        network=systems.oms.network(),
        now=now,
        # Only the nodes this order could ship from (they hold pickable stock of its SKUs or their
        # substitutes) have waves the plan counts: reading every wave still ahead was a fifth of
        # an order decision's time on a large network (bench load, py-spy).
        waves=read_waves(
            systems, cutoff_after=now, nodes={ns.node for rows in stock.values() for ns in rows if ns.pickable > 0}
        ),
        wave_window_hours=wave_window_hours,
    )


HELD_FOR_STOCK = "no_stock"


AWAITING_PLANNER = "awaiting"  # the memo queue of orders a planner must decide (``runtime.lifecycle``)


def held_orders(systems: Systems) -> list[OrderView]:
    """The backlog a tick re-sources: orders the OMS holds for lack of stock, and open orders with
    nothing reserved that wait for a planner (a rejected plan and nothing else to offer)."""
    views = [v for v in systems.oms.orders(["held"]) if v.hold_reason == HELD_FOR_STOCK]
    if systems.memo is None:
        return views
    seen = {v.order.id for v in views}
    settled = []
    for order_id in systems.memo.due(AWAITING_PLANNER, float("inf")):
        if order_id in seen:
            continue
        try:
            view = systems.oms.order(order_id)
        except (LookupError, PermanentConnectorError):
            settled.append(order_id)
            continue
        if view.status in ("open", "held") and not any(al.qty > 0 for ln in view.lines for al in ln.allocations):
            views.append(view)
        else:
            settled.append(order_id)
    systems.memo.done(AWAITING_PLANNER, settled)
    return views


def substitute_map(systems: Systems, skus: set[str]) -> dict[str, list[str]]:
    """Each SKU's first substitutes, one material-master read per SKU (an unknown SKU has none)."""
    out: dict[str, list[str]] = {}
    for sku in sorted(skus):
        try:
            out[sku] = systems.erp.sku(sku).substitutes[:MAX_SUBSTITUTES]
        except UnknownSku:
            out[sku] = []
    return out


def substitutes_of(systems: Systems, skus: set[str]) -> set[str]:
    """The first substitutes of ``skus`` (what a release may allocate instead)."""
    return {sub for subs in substitute_map(systems, skus).values() for sub in subs}


def first_substitutes(systems: Systems, skus: Iterable[str]) -> set[str]:
    """``substitutes_of`` in one bulk ERP read (an order decision's locks); the agents' tool keeps
    reading the material master per SKU."""
    return {
        sub for b in known_books(systems, sorted(set(skus))).values() for sub in _info(b).substitutes[:MAX_SUBSTITUTES]
    }


def order_needs(order: Order, subs: Mapping[str, list[str]]) -> set[str]:
    """The SKUs an order may take: its own and, when it allows substitution, their substitutes."""
    own = {ln.sku for ln in order.lines}
    if not order.allow_substitution:
        return own
    return own | {sub for sku in own for sub in subs.get(sku, [])}


def backlog_context(
    systems: Systems,
    now: datetime,
    subs: Mapping[str, list[str]] | None = None,
    only_skus: set[str] | None = None,
    wave_window_hours: float = DEFAULT_WAVE_WINDOW_H,
    split_only_for_service: bool = DEFAULT_SPLIT_ONLY_FOR_SERVICE,
) -> BacklogContext:
    """Held orders with their customers and credit status, and stock for every SKU they need.

    ``subs`` (from ``substitute_map``) saves reading the material master twice per tick; with
    ``only_skus``, an order needing any other SKU (or substitute) is left for a later tick.
    """
    views = held_orders(systems)
    if subs is None:
        subs = substitute_map(systems, {ln.sku for v in views if v.order.allow_substitution for ln in v.order.lines})
    held = []
    wanted: set[str] = set()
    for view in views:
        order = view.order
        needs = order_needs(order, subs)
        if only_skus is not None and not needs <= only_skus:
            continue
        customer = _customer(systems, order.customer)
        held.append(HeldOrder(order=order, customer=customer, credit_hold=systems.erp.credit_hold(order.customer)))
        wanted |= needs
    books = known_books(systems, sorted(wanted))  # an unknown SKU is left out
    stock = stock_of(systems.wms, list(books))
    return BacklogContext(
        orders=held,
        skus={sku: _info(b) for sku, b in books.items()},
        stock=stock,
        book={sku: b.book for sku, b in books.items()},
        supply={sku: b.supply for sku, b in books.items()},
        network=systems.oms.network(),
        now=now,
        waves=read_waves(systems, cutoff_after=now),
        wave_window_hours=wave_window_hours,
        split_only_for_service=split_only_for_service,
    )


RELEASED = ["released", "partially_released"]


def wave_context(systems: Systems, now: datetime, wave_window_hours: float = DEFAULT_WAVE_WINDOW_H) -> WaveContext:
    """Released orders with a reservation on no wave, and the waves each zone already has.

    Orders are read before waves: a release creates its wave before it sets the status, so an
    order read as released is either on a wave this read sees or on none.
    """
    views = systems.oms.orders(RELEASED)
    waves = read_waves(systems)
    waved = on_a_wave(waves)
    waiting = [
        v
        for v in views
        if any((v.order.id, a.node) not in waved for ln in v.lines for a in ln.allocations if a.qty > 0)
    ]
    stock = stock_of(systems.wms, sorted({ln.substituted_by or ln.sku for v in waiting for ln in v.lines}))
    return WaveContext(
        orders=[AwaitingWave(view=v, customer=_customer(systems, v.order.customer)) for v in waiting],
        stock=stock,
        network=systems.oms.network(),
        waves=waves,
        now=now,
        window_hours=wave_window_hours,
    )


RESERVING = ["released", "partially_released", "held", "backordered", "open"]


def stock_picture(
    systems: Systems,
    sku: str,
    node: str,
    now: datetime,
    grace_hours: float,
    reserving: list[OrderView] | None = None,
) -> StockPicture:
    """One SKU@node from all three systems: physical, book, each side's movements, reservations
    (from ``reserving`` when the caller already read the orders that hold stock, for many pictures)."""
    wms = next((s for s in read_stock(systems, sku) if s.node == node), None)
    try:
        info, book, _ = systems.erp.sku(sku), systems.erp.book_stock(sku), None
    except UnknownSku:
        info, book = None, []
    reservations = []
    tiers: dict[str, str] = {}
    for view in systems.oms.orders(RESERVING) if reserving is None else reserving:
        for ln in view.lines:
            if (ln.substituted_by or ln.sku) != sku:
                continue
            for a in ln.allocations:
                if a.node == node and a.qty > 0:
                    reservations.append(
                        Reservation(
                            order_id=view.order.id,
                            line=ln.line,
                            qty=a.qty,
                            priority=view.order.priority,
                            tier=_tier(systems, view.order.customer, tiers),
                            created=view.order.created,
                        )
                    )
    return StockPicture(
        sku=sku,
        node=node,
        now=now,
        unit_cost=info.unit_cost if info else 0.0,
        wms=wms,
        book=next((b for b in book if b.node == node), None),
        wms_moves=systems.wms.movements(sku, node),
        erp_postings=systems.erp.postings(sku, node),
        reservations=reservations,
        grace_hours=grace_hours,
    )


def _tier(systems: Systems, customer_id: str, known: dict[str, str]) -> str:
    """A customer's tier, read once per customer per call."""
    if customer_id not in known:
        known[customer_id] = _customer(systems, customer_id).tier
    return known[customer_id]
