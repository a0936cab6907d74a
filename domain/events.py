"""Event envelope (CloudEvents 1.0, structured JSON) and the schema of each type's data.

The registry ``DATA_SCHEMAS`` is the single list of event types Crossdock accepts; an
unknown type is rejected at intake with the ``type`` field named.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.models import Asn, Model, Order, PurchaseOrder, Qty, Receipt


class OrderRef(Model):
    order_id: str = Field(min_length=1)
    reason: str | None = None


class InventoryPosted(Model):
    node: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    qty_delta: Qty
    movement_type: str | None = None
    document_id: str | None = None
    posted_at: datetime | None = None


class TaskException(Model):
    task_id: str = Field(min_length=1)
    node: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    reason: Literal["short_pick", "damaged", "location_locked", "not_found"]
    order_id: str | None = None
    location: str | None = None
    expected_qty: Qty | None = None
    found_qty: Qty | None = None


class InventoryAdjusted(Model):
    node: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    qty_delta: Qty
    location: str | None = None
    reason: str | None = None


class CapacityChanged(Model):
    node: str = Field(min_length=1)
    zone: str = Field(min_length=1)
    pick_capacity_per_hour: Qty = Field(ge=0)


class Tick(Model):
    now: datetime


class CrewTriage(Model):
    """A planner's triage crew over open exceptions (each checked by ``crews.triage_crew.OpenException``)."""

    exceptions: list[dict[str, Any]] = Field(min_length=1, max_length=50)
    requested_by: str = Field(min_length=1)


class AgentJudge(Model):
    """An agent's judgement of an event the engines already decided (``runtime.pipeline``)."""

    event: dict[str, Any]
    proposals: list[dict[str, Any]]
    before: dict[str, Any]
    job_id: str = Field(min_length=1)
    accepted_at: float


CREW_TRIAGE = "crossdock.crew.triage"
AGENT_JUDGE = "crossdock.agent.judge"
# Job types only Crossdock itself queues (a planner's request through its own route, the pipeline's
# request for an agent's judgement); a source system posting one to /v1/events is refused.
INTERNAL_TYPES = frozenset({CREW_TRIAGE, AGENT_JUDGE})


DATA_SCHEMAS: dict[str, type[Model]] = {
    "oms.order.created": Order,
    "oms.order.cancelled": OrderRef,
    "oms.payment.failed": OrderRef,
    "erp.inventory.posted": InventoryPosted,
    "erp.po.created": PurchaseOrder,
    "wms.asn.received": Asn,
    "wms.receipt.posted": Receipt,
    "wms.task.exception": TaskException,
    "wms.inventory.adjusted": InventoryAdjusted,
    "wms.capacity.changed": CapacityChanged,
    "crossdock.tick": Tick,
    CREW_TRIAGE: CrewTriage,
    AGENT_JUDGE: AgentJudge,
}


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope in structured JSON mode; extension attributes kept."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=512)
    type: str
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = "application/json"
    data: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in DATA_SCHEMAS:
            raise ValueError(f"unknown event type {value!r}; known: {', '.join(sorted(DATA_SCHEMAS))}")
        return value

    @field_validator("source")
    @classmethod
    def _source_as_sent(cls, value: str) -> str:
        # Sources are compared exactly (signing secrets, a key's sources, dedup): a padded or
        # control-character source would be a second name for the same system.
        if value != value.strip() or not value.isprintable():
            raise ValueError("source must not start or end with whitespace or contain control characters")
        return value

    @field_validator("datacontenttype")
    @classmethod
    def _json_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("application/json"):
            raise ValueError("only application/json data is accepted")
        return value

    @property
    def key(self) -> str:
        """The identity of an event: posting the same (source, id) again is a duplicate."""
        return f"{self.source}|{self.id}"

    def typed_data(self) -> Model:
        return DATA_SCHEMAS[self.type].model_validate(self.data)


class EventError(ValueError):
    """An event failed validation; ``errors`` name each bad field by its JSON path."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))


def parse_event(raw: Any, prefix: tuple[str | int, ...] = (), *, allow_internal: bool = False) -> CloudEvent:
    """Validate an envelope and its data against the type's schema.

    Errors carry a dotted location such as ``data.lines.0.qty`` (prefixed with the batch
    index when given) so that the 422 answer names the field. An internal job type is refused
    unless ``allow_internal`` (Crossdock's own routes).
    """
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise EventError(_errors(exc, prefix)) from None
    if event.type in INTERNAL_TYPES and not allow_internal:
        loc = ".".join(str(p) for p in (*prefix, "type"))
        msg = f"{event.type!r} is queued by Crossdock itself (POST /v1/crews/triage), not posted as an event"
        raise EventError([{"loc": loc, "msg": msg, "type": "internal_type"}])
    try:
        event.typed_data()
    except ValidationError as exc:
        raise EventError(_errors(exc, (*prefix, "data"))) from None
    return event


def _errors(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(p) for p in (*prefix, *err["loc"]))
        out.append({"loc": loc or "body", "msg": err["msg"], "type": err["type"]})
    return out
