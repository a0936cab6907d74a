"""Context read from the three systems: the typed views engines decide on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import Field

from domain.models import Customer, Lane, Model, Node, Order, PurchaseOrder, TransferLane


class LocationStock(Model):
    zone: str
    location: str
    lot: str | None = None
    on_hand: float
    locked: float


class NodeStock(Model):
    """The WMS view of one SKU at one node.

    ``pickable`` = Σ(on_hand − locked) over locations − ``allocated`` (reservations held
    there and not yet shipped), never below zero.
    """

    node: str
    sku: str
    on_hand: float
    locked: float
    allocated: float
    pickable: float
    locations: list[LocationStock] = []


class BookPosition(Model):
    """The ERP view of one SKU at one node."""

    node: str
    sku: str
    qty: float
    blocked: float

    @property
    def available(self) -> float:
        return self.qty - self.blocked


class Supply(Model):
    """Planned supply the ERP knows about: an open PO line or a transfer in transit."""

    kind: Literal["purchase_order", "transfer"]
    id: str
    node: str
    sku: str
    qty: float
    date: date | None


class LineAllocation(Model):
    node: str
    qty: float


class OrderLineView(Model):
    line: int
    sku: str
    qty: float
    allocations: list[LineAllocation] = []
    backordered: float = 0
    promise_date: date | None = None
    substituted_by: str | None = None


class OrderView(Model):
    """An order as the OMS holds it now: the order itself, its status and reservations."""

    order: Order
    status: str = "open"
    hold_reason: str | None = None
    lines: list[OrderLineView] = []


class WaveView(Model):
    """A wave the WMS has released: its zone, truck and how many lines each order has on it."""

    wave_id: str
    node: str
    zone: str | None = None
    carrier: str | None = None
    cutoff: datetime | None = None
    status: str = "released"
    orders: dict[str, int] = {}  # order id -> lines (picks) of that order on the wave

    @classmethod
    def from_wms(cls, w: Mapping[str, Any]) -> WaveView:
        """A wave in the WMS wave API's shape (``waveId``, ``node``, ``status``, ``orders`` with
        ``lines``, ``parameters`` with ``workZone``, ``carrierCode``, ``cutoffTime``)."""
        params = w.get("parameters") or {}
        return cls(
            wave_id=w["waveId"],
            node=w["node"],
            zone=params.get("workZone"),
            carrier=params.get("carrierCode"),
            cutoff=_cutoff(params.get("cutoffTime")),
            status=w.get("status", "released"),
            orders={o["orderId"]: len(o.get("lines") or []) or 1 for o in w.get("orders", [])},
        )


def _cutoff(raw: Any) -> datetime | None:
    """A wave's cutoff: an RFC 3339 time (naive read as UTC), or None for a missing or other-shaped value."""
    try:
        at = datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


class Movement(Model):
    """A stock movement one system recorded: a WMS adjustment or receipt, an ERP posting."""

    kind: Literal["adjustment", "receipt", "posting"]
    node: str
    sku: str
    qty_delta: float
    at: datetime | None = None
    ref: str | None = None


class PurchaseOrderView(Model):
    """A purchase order as the ERP holds it now: the order and which lines are still open."""

    po: PurchaseOrder
    status: str = "open"
    closed_lines: list[int] = []
    received: dict[int, float] = {}  # po line -> quantity the ERP has booked as received


class Network(Model):
    """Sourcing configuration: nodes, customer lanes and transfer lanes."""

    nodes: list[Node] = []
    lanes: list[Lane] = []
    transfer_lanes: list[TransferLane] = []


class SkuInfo(Model):
    id: str
    description: str = ""
    unit_cost: float = 0.0
    substitutes: list[str] = []
    safety_stock: dict[str, float] = Field(default_factory=dict)


__all__ = [
    "BookPosition",
    "Customer",
    "LineAllocation",
    "LocationStock",
    "Movement",
    "Network",
    "NodeStock",
    "OrderLineView",
    "OrderView",
    "PurchaseOrderView",
    "SkuInfo",
    "WaveView",
    "Supply",
]
