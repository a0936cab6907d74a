"""The scenario report contract (``shared/contracts/report.md``) as pydantic models.

``bench.report`` validates every report against this before it is written, so a
report that breaks the contract fails loudly in our tests, never at a customer's.
Extra keys are allowed (the contract may be extended, not narrowed).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.decisions import Action, Workflow


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ReportDecision(_Open):
    id: str
    event_id: str | None
    workflow: Workflow
    subject: str
    outcome: str
    confidence: float = Field(ge=0, le=1)
    cost_impact: float
    human_review_required: bool
    status: Literal["executed", "pending_review", "observed", "rejected", "failed", "superseded"]
    rationale: str = Field(min_length=1)
    evidence: dict[str, object]
    actions: list[Action]


class ReportAllocation(_Open):
    node: str
    qty: float


class ReportLine(_Open):
    line: int
    sku: str
    qty: float
    allocations: list[ReportAllocation]
    backordered: float
    promise_date: date | None
    substituted_by: str | None


class ReportOrder(_Open):
    id: str
    status: Literal["open", "released", "partially_released", "held", "backordered", "cancelled", "shipped"]
    hold_reason: str | None
    lines: list[ReportLine]


class ReportOms(_Open):
    orders: list[ReportOrder]


class ReportWms(_Open):
    waves: list[dict[str, object]]
    transfers: list[dict[str, object]]
    tasks: list[dict[str, object]]
    stock: list[dict[str, object]]


class ReportErp(_Open):
    book_stock: list[dict[str, object]]
    backorders: list[dict[str, object]]
    adjustments: list[dict[str, object]]
    purchase_orders: list[dict[str, object]]


class FinalState(_Open):
    oms: ReportOms
    wms: ReportWms
    erp: ReportErp


class Latency(_Open):
    p50: float = Field(ge=0)
    p99: float = Field(ge=0)


class Kpis(_Open):
    orders: int = Field(ge=0)
    lines: int = Field(ge=0)
    oversells: int = Field(ge=0)
    split_shipments: int = Field(ge=0)
    on_time_ship_rate: float = Field(ge=0, le=1)
    fulfilment_cost: float = Field(ge=0)
    backorders: int = Field(ge=0)
    held_orders: int = Field(ge=0)
    auto_resolved_rate: float = Field(ge=0, le=1)
    pending_review: int = Field(ge=0)
    superseded: int = Field(default=0, ge=0)
    stale_approvals: int = Field(default=0, ge=0)
    decision_latency_ms: Latency


class Report(_Open):
    scenario: str
    policy: Literal["crossdock", "baseline", "rules"]
    decisions: list[ReportDecision]
    final_state: FinalState
    kpis: Kpis
