"""Facts a chat answer may state, read live through the connector ports and the decision store.

Every fact carries the record it came from, so an answer can cite it and a generated answer
can be checked against it (:func:`chat.check.unsupported_claims`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from domain.context import NodeStock, OrderView, Supply, WaveView
from domain.decisions import Decision
from domain.errors import UnknownOrder, UnknownSku
from tools.context import Systems

CitationKind = Literal["order", "wave", "shipment", "po", "decision", "sop"]


class Citation(BaseModel):
    kind: CitationKind
    id: str
    field: str | None = None


class DecisionReader(Protocol):
    """The part of the store chat reads (``runtime.store.Store`` satisfies it)."""

    def list_decisions(
        self,
        *,
        status: str | None = None,
        job_id: str | None = None,
        event_id: str | None = None,
        workflow: str | None = None,
        subject: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Decision]: ...


class KnowledgeHit(Protocol):
    """One passage the knowledge base returned (``knowledge`` Hit satisfies it)."""

    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def section(self) -> str | None: ...

    @property
    def text(self) -> str: ...

    @property
    def score(self) -> float: ...


class KnowledgeSearch(Protocol):
    """What chat needs from a knowledge base: ranked passages for a query."""

    def search(self, query: str, k: int = 5, **filters: Any) -> list[Any]: ...


@dataclass
class Facts:
    """What the records read for one answer support: statuses, dates, quantities, and the ids
    (order, customer, SKUs, nodes, waves, decisions, supply) an answer may name."""

    statuses: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    quantities: set[float] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)

    def add_date(self, value: date | datetime | str | None) -> None:
        if value is None:
            return
        if isinstance(value, datetime):
            self.dates.add(value.date().isoformat())
        elif isinstance(value, date):
            self.dates.add(value.isoformat())
        else:
            self.dates.add(str(value)[:10])

    def add_qty(self, value: float | int | None) -> None:
        if value is not None:
            self.quantities.add(round(float(value), 3))

    def add_id(self, value: str | None) -> None:
        if value:
            self.ids.add(value.upper())

    def merge(self, other: Facts) -> Facts:
        return Facts(
            self.statuses | other.statuses,
            self.dates | other.dates,
            self.quantities | other.quantities,
            self.ids | other.ids,
        )


OPEN_STATUSES = ["open", "released", "partially_released", "held", "backordered"]
ALL_STATUSES = [*OPEN_STATUSES, "cancelled", "shipped"]


@dataclass
class OrderFacts:
    view: OrderView
    waves: list[WaveView]
    decisions: list[Decision]
    supply: dict[str, list[Supply]]
    customer_name: str = ""

    @property
    def order_id(self) -> str:
        return self.view.order.id

    @property
    def on_wave(self) -> bool:
        return bool(self.waves)

    def wave_of(self, node: str) -> WaveView | None:
        return next((w for w in self.waves if w.node == node), None)

    def latest(self, *outcomes: str) -> Decision | None:
        found = [d for d in self.decisions if d.workflow != "customer_service" and d.outcome in outcomes]
        return found[-1] if found else None

    @property
    def requests(self) -> list[Decision]:
        """What was asked for this order through customer service (chat requests), oldest first."""
        return [d for d in self.decisions if d.workflow == "customer_service"]

    def facts(self) -> Facts:
        f = Facts()
        v = self.view
        f.add_id(self.order_id)
        f.add_id(v.order.customer)
        f.statuses.add(v.status)
        if v.hold_reason:
            f.statuses.add("held")
        for ln in v.lines:
            if ln.backordered > 0:
                f.statuses.add("backordered")
            f.add_id(ln.sku)
            f.add_id(ln.substituted_by)
            f.add_qty(ln.qty)
            f.add_qty(ln.backordered)
            f.add_qty(ln.qty - ln.backordered)
            f.add_qty(sum(a.qty for a in ln.allocations))
            for a in ln.allocations:
                f.add_id(a.node)
                f.add_qty(a.qty)
            f.add_date(ln.promise_date)
        f.add_date(v.order.ship_by)
        f.add_date(v.order.created)
        for w in self.waves:
            f.add_id(w.wave_id)
            f.add_id(w.node)
            f.add_date(w.cutoff)
            f.statuses.add(w.status)
        for d in self.decisions:
            f.add_id(d.id)
            f.statuses.add(d.status)
            f.statuses.add(d.outcome)
            promised, short = d.evidence.get("promise_dates"), d.evidence.get("short")
            for when in promised.values() if isinstance(promised, dict) else []:
                f.add_date(str(when))
            for qty in short.values() if isinstance(short, dict) else [short]:
                if isinstance(qty, int | float) and not isinstance(qty, bool):
                    f.add_qty(qty)
        for sku, supplies in self.supply.items():
            f.add_id(sku)
            for s in supplies:
                f.add_id(s.id)
                f.add_id(s.node)
                f.add_date(s.date)
                f.add_qty(s.qty)
        return f


def read_order_facts(systems: Systems, decisions: DecisionReader, order_id: str) -> OrderFacts:
    """The order, the waves it is on, the decisions about it and supply for its short lines.

    Raises ``UnknownOrder`` when the OMS does not know it."""
    view = systems.oms.order(order_id)
    waves = [w for w in systems.wms.waves() if order_id in w.orders]
    about = decisions.list_decisions(subject=order_id, limit=200)
    supply: dict[str, list[Supply]] = {}
    for ln in view.lines:
        if ln.backordered > 0 or not ln.allocations:
            sku = ln.substituted_by or ln.sku
            if sku not in supply:
                try:
                    supply[sku] = systems.erp.planned_supply(sku)
                except UnknownSku:
                    supply[sku] = []
    return OrderFacts(view=view, waves=waves, decisions=about, supply=supply)


def owned_by(systems: Systems, order_id: str, customer_id: str | None) -> OrderView | None:
    """The order if it exists and (when a customer scopes the chat) belongs to that customer."""
    try:
        view = systems.oms.order(order_id)
    except UnknownOrder:
        return None
    if customer_id is not None and view.order.customer != customer_id:
        return None
    return view


@dataclass
class NodeOption:
    node: str
    pickable: float
    transit_days: int | None


@dataclass
class SupplyOption:
    supply: Supply
    transit_days: int | None

    @property
    def arrives(self) -> date | None:
        if self.supply.date is None or self.transit_days is None:
            return None
        return self.supply.date + timedelta(days=self.transit_days)


@dataclass
class AvailabilityFacts:
    sku: str
    region: str | None
    description: str
    nodes: list[NodeOption]
    supply: list[SupplyOption]

    @property
    def pickable(self) -> float:
        return sum(n.pickable for n in self.nodes if n.pickable > 0)

    @property
    def nearest(self) -> NodeOption | None:
        stocked = [n for n in self.nodes if n.pickable > 0 and n.transit_days is not None]
        return min(stocked, key=lambda n: (n.transit_days or 0, -n.pickable, n.node)) if stocked else None

    @property
    def earliest_supply(self) -> SupplyOption | None:
        dated = [s for s in self.supply if s.arrives is not None]
        return min(dated, key=lambda s: (s.arrives or date.max, s.supply.id)) if dated else None

    def facts(self) -> Facts:
        f = Facts()
        f.add_id(self.sku)
        f.add_qty(self.pickable)
        for n in self.nodes:
            f.add_id(n.node)
            f.add_qty(n.pickable)
            if n.transit_days is not None:
                f.add_qty(n.transit_days)
        for s in self.supply:
            f.add_id(s.supply.id)
            f.add_id(s.supply.node)
            f.add_qty(s.supply.qty)
            f.add_date(s.supply.date)
            f.add_date(s.arrives)
            if s.transit_days is not None:
                f.add_qty(s.transit_days)
        return f


def read_availability(systems: Systems, sku: str, region: str | None) -> AvailabilityFacts:
    """Pickable stock per node, the lane to ``region`` from each, and planned supply (raises ``UnknownSku``)."""
    info = systems.erp.sku(sku)
    stock: list[NodeStock] = systems.wms.stock(sku)
    supply = systems.erp.planned_supply(sku)
    network = systems.oms.network()
    transit: dict[str, int] = {}
    if region is not None:
        for lane in network.lanes:
            if lane.to_region == region:
                transit[lane.from_node] = min(lane.transit_days, transit.get(lane.from_node, lane.transit_days))
    nodes = sorted(
        (NodeOption(s.node, max(0.0, s.pickable), transit.get(s.node) if region else None) for s in stock),
        key=lambda n: n.node,
    )
    options = [SupplyOption(s, transit.get(s.node) if region else 0) for s in supply]
    return AvailabilityFacts(sku=sku, region=region, description=info.description, nodes=nodes, supply=options)


@dataclass
class ProductFacts:
    """What the catalogue (the ERP's material master) holds about a SKU: its description and
    substitutes. Nothing else about the product is known to the chat."""

    sku: str
    description: str
    substitutes: list[tuple[str, str]]  # (SKU, description); description "" when the ERP lacks it

    def facts(self) -> Facts:
        f = Facts()
        f.add_id(self.sku)
        for sub, _ in self.substitutes:
            f.add_id(sub)
        return f


def read_product(systems: Systems, sku: str) -> ProductFacts:
    """The catalogue record of ``sku`` and of its substitutes (raises ``UnknownSku``)."""
    info = systems.erp.sku(sku)
    subs: list[tuple[str, str]] = []
    for other in info.substitutes:
        try:
            subs.append((other, systems.erp.sku(other).description))
        except UnknownSku:
            subs.append((other, ""))
    return ProductFacts(sku=info.id or sku, description=info.description, substitutes=subs)


def visible_order_ids(systems: Systems, customer_id: str | None) -> list[str]:
    """The order ids the caller may see: the scoping customer's, or every order when unscoped."""
    views = systems.oms.orders(ALL_STATUSES)
    return [v.order.id for v in views if customer_id is None or v.order.customer == customer_id]


def order_citations(of: OrderFacts, fields: list[str]) -> list[Citation]:
    return [Citation(kind="order", id=of.order_id, field=f) for f in fields] or [Citation(kind="order", id=of.order_id)]


def as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
