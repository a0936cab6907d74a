"""Domain models: the fulfilment network as the scenario contract describes it.

Shapes follow ``shared/contracts/scenario.md``. Unknown keys are ignored so that a
customer's scenario file with extra fields still loads; required fields are enforced
so that bad input fails at the boundary with the field named.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.decisions import Workflow


class Model(BaseModel):
    """Base for contract shapes: extra keys ignored, aliases accepted, numbers finite (NaN and
    Infinity are refused with the field named)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)


# A quantity or an amount: a JSON number, finite. Strict, so "3" and true are refused rather than
# read as 3.0 and 1.0; an int is a number and is taken.
Qty = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# A line number: an integer, strictly (not "2", not true, not 2.5).
LineNo = Annotated[int, Field(strict=True)]


class Zone(Model):
    id: str
    pick_capacity_per_hour: Qty = Field(ge=0)


class Carrier(Model):
    code: str
    cutoff: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class Node(Model):
    id: str
    type: Literal["warehouse", "store"] = "warehouse"
    region: str
    zones: list[Zone] = []
    carriers: list[Carrier] = []


class Lane(Model):
    from_node: str = Field(alias="from")
    to_region: str
    cost_per_unit: Qty = Field(ge=0)
    transit_days: int = Field(ge=0)


class TransferLane(Model):
    from_node: str = Field(alias="from")
    to_node: str = Field(alias="to")
    cost_per_unit: Qty = Field(ge=0)
    transit_days: int = Field(ge=0)


class Sku(Model):
    id: str
    description: str = ""
    unit_cost: Qty = Field(default=0.0, ge=0)
    substitutes: list[str] = []
    safety_stock: dict[str, Qty] = {}


class StockRecord(Model):
    """One WMS location's content: what is physically there."""

    node: str
    zone: str
    location: str
    sku: str
    lot: str | None = None
    on_hand: Qty = Field(ge=0)
    locked: Qty = Field(default=0, ge=0)


class BookStock(Model):
    node: str
    sku: str
    qty: Qty
    blocked: Qty = 0


class InTransit(Model):
    id: str
    sku: str
    from_node: str = Field(alias="from")
    to_node: str = Field(alias="to")
    qty: Qty = Field(gt=0)
    eta: date


class PoLine(Model):
    line: LineNo
    sku: str
    qty: Qty = Field(gt=0)
    unit_price: Qty = Field(default=0.0, ge=0)
    lot: str | None = None


class PurchaseOrder(Model):
    id: str
    supplier: str
    node: str
    expected: date | None = None
    lines: list[PoLine] = Field(min_length=1)


class DemandPoint(Model):
    node: str
    sku: str
    date: date
    qty: Qty = Field(ge=0)


class Customer(Model):
    id: str
    name: str = ""
    tier: Literal["standard", "gold"] = "standard"


class OrderLine(Model):
    line: LineNo
    sku: str = Field(min_length=1)
    qty: Qty = Field(gt=0)


class Order(Model):
    id: str = Field(min_length=1)
    customer: str = Field(min_length=1)
    region: str = ""
    priority: Literal["standard", "express"] = "standard"
    created: datetime | None = None
    ship_by: datetime | None = None
    carrier: str | None = None
    allow_split: bool = True
    allow_substitution: bool = False
    note: str | None = None
    lines: list[OrderLine] = Field(min_length=1)

    @field_validator("lines")
    @classmethod
    def _unique_line_numbers(cls, lines: list[OrderLine]) -> list[OrderLine]:
        seen: set[int] = set()
        for ln in lines:
            if ln.line in seen:
                raise ValueError(f"line number {ln.line} appears twice")
            seen.add(ln.line)
        return lines


class Allocation(Model):
    order: str
    line: LineNo
    node: str
    qty: Qty = Field(gt=0)


class AsnLine(Model):
    po_line: LineNo
    sku: str
    qty: Qty = Field(ge=0)
    lot: str | None = None


class Asn(Model):
    id: str
    po_id: str
    supplier: str = ""
    expected: date | None = None
    lines: list[AsnLine] = Field(min_length=1)


class ReceiptLine(Model):
    po_line: LineNo
    sku: str
    qty: Qty = Field(ge=0)
    lot: str | None = None
    damaged: Qty = Field(default=0, ge=0)


class Receipt(Model):
    id: str
    po_id: str
    asn_id: str | None = None
    node: str
    received_at: datetime | None = None
    lines: list[ReceiptLine] = Field(min_length=1)


Mode = Literal["observe", "propose", "autonomous"]


class AutonomyRule(Model):
    """When a (workflow, outcome) pair has earned autonomy, and when it loses it
    (``runtime.autonomy``; README "Guarded autonomy").

    Eligible: at least ``min_reviews`` reviews in the sliding window (its last ``window``), the
    override rate's Wilson upper bound (95 %) at most ``max_override_upper``, and no failure in the
    pair's last ``no_failure_in_last`` settled decisions. Demoted to propose: in its last
    ``demote_window`` settled decisions (at least ``demote_min`` of them), an override rate above
    ``demote_override_rate`` or a failure rate above ``demote_failure_rate``."""

    min_reviews: int = Field(default=50, ge=1, le=100_000)
    max_override_upper: float = Field(default=0.03, ge=0, le=1)
    no_failure_in_last: int = Field(default=20, ge=0, le=100_000)
    window: int = Field(default=200, ge=1, le=100_000)
    demote_window: int = Field(default=20, ge=1, le=100_000)
    demote_min: int = Field(default=5, ge=1, le=100_000)
    demote_override_rate: float = Field(default=0.2, ge=0, le=1)
    demote_failure_rate: float = Field(default=0.1, ge=0, le=1)
    auto_promote: bool = False


def _pair_key(key: str) -> str:
    workflow, sep, outcome = key.partition("/")
    if not sep or not outcome or workflow not in get_args(Workflow):
        raise ValueError(f"{key!r} is not 'workflow/outcome' with a known workflow")
    return key


PairKey = Annotated[str, AfterValidator(_pair_key)]


class ShadowSpec(Model):
    """Shadow mode: a candidate policy (a partial policy merged over the live one, as ``PATCH
    /v1/policy`` merges) whose governance verdict is recorded beside the live one's for every
    decision of ``workflows``. Nothing the candidate would do is executed."""

    workflows: list[Workflow] = Field(min_length=1)
    candidate: dict[str, Any] = {}


class Policy(Model):
    """Business rules from a scenario (or from the operator): the governance policy.

    A workflow missing from ``modes`` runs in observe mode (``domain.governance.DEFAULT_MODE``):
    a fresh install decides and records, and writes nothing until an admin moves a workflow to
    propose, then autonomous. Values are finite and within range, so a bad policy fails at the
    boundary with the field named (``modes.typo``, ``review_cost_above``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)

    receipt_tolerance_pct: float = Field(default=2.0, ge=0, le=100)
    review_cost_above: float = Field(default=1000.0, ge=0)
    review_confidence_below: float = Field(default=0.7, ge=0, le=1)
    modes: dict[Workflow, Mode] = {}
    # Extension: which decision policy runs ("baseline" is the naive yardstick; "rules" a
    # rule-based router: WMS stock, nearest node first, split only when no node can fill).
    policy: Literal["crossdock", "baseline", "rules"] = "crossdock"
    # Extension: how many hours of pick work a release may commit to a zone ahead of its
    # truck; about 1.5 tick intervals (the generated scenarios tick every 2 h).
    wave_window_hours: float = Field(default=3.0, gt=0, le=24)
    # Extension: split an order over nodes only when that buys service (no single node can fill
    # it, or fill it on time); a cheaper lane alone never buys a second parcel.
    split_only_for_service: bool = True
    # Extension: how long a movement one system recorded may wait for the other's posting
    # before a stock gap counts as a true variance rather than a timing difference.
    posting_grace_hours: float = Field(default=4.0, ge=0, le=168)
    # Extension: four-eyes. A pending decision of a workflow listed here whose cost impact is
    # above the amount needs two approvers with different names (empty: off).
    four_eyes_cost_above: dict[Workflow, Annotated[float, Field(ge=0)]] = {}
    # Extension: guarded autonomy. A mode per (workflow, outcome), keyed "workflow/outcome"; a pair
    # not named runs in its workflow's mode. Set by promotion and demotion (``runtime.autonomy``).
    outcome_modes: dict[PairKey, Mode] = {}
    # The promotion and demotion rule per workflow (a workflow not named: the defaults).
    autonomy_rules: dict[Workflow, AutonomyRule] = {}
    # Shadow mode (``runtime.shadow.live_verdict``): a candidate judged beside the live policy.
    shadow: ShadowSpec | None = None

    @model_validator(mode="after")
    def _candidate_is_a_policy(self) -> Policy:
        if self.shadow is not None:
            if "shadow" in self.shadow.candidate:
                raise ValueError("shadow.candidate cannot itself have a shadow")
            unknown = set(self.shadow.candidate) - set(type(self).model_fields)
            if unknown:
                raise ValueError(f"shadow.candidate has unknown fields: {', '.join(sorted(unknown))}")
            merged = {**self.model_dump(exclude={"shadow"}), **self.shadow.candidate}
            type(self).model_validate(merged)  # a candidate that is not a valid policy fails here, named
        return self


class WmsSnapshot(Model):
    stock: list[StockRecord] = []


class ErpSnapshot(Model):
    book_stock: list[BookStock] = []
    in_transit: list[InTransit] = []
    purchase_orders: list[PurchaseOrder] = []
    credit_holds: list[str] = []
    demand_history: list[DemandPoint] = []


class OmsSnapshot(Model):
    customers: list[Customer] = []
    orders: list[Order] = []
    allocations: list[Allocation] = []


class Scenario(Model):
    """A fulfilment network snapshot plus the timeline of events to replay."""

    scenario: str = "unnamed"
    start: datetime
    settings: Policy = Policy()
    nodes: list[Node] = []
    lanes: list[Lane] = []
    transfer_lanes: list[TransferLane] = []
    skus: list[Sku] = []
    wms: WmsSnapshot = WmsSnapshot()
    erp: ErpSnapshot = ErpSnapshot()
    oms: OmsSnapshot = OmsSnapshot()
    asns: list[Asn] = []
    receipts: list[Receipt] = []
    # Raw envelopes: validated one by one by domain.events when replayed, so one bad
    # event is reported with its index rather than failing the whole file opaquely.
    events: list[dict[str, object]] = []
