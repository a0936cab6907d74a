"""Exception triage specialist: ``wms.task.exception``, ``oms.payment.failed``, ``oms.order.cancelled``.

Gathers the context across the three systems (WMS locations and open tasks, ERP stock
elsewhere and planned supply, OMS order with its rules) and lets ``domain.engines.triage``
decide. It holds the SKU locks of what it may re-allocate, so a re-allocation never races
a release of the same SKU.

Confidence uses an override model when one is installed (``use_override_model``, loaded by
``runtime.learning.load_model`` at bootstrap), else the playbook's prior.
"""

from __future__ import annotations

from connectors.ports import WmsTaskReader
from crews.order_release import event_now
from domain.context import NodeStock, OrderView, SkuInfo, Supply
from domain.decisions import Proposal
from domain.engines.triage import (
    ExceptionContext,
    OverrideEstimator,
    TaskExceptionFacts,
    WmsTask,
    decide_cancellation,
    decide_exception,
    decide_payment_failed,
)
from domain.errors import PermanentConnectorError, UnknownOrder, UnknownSku
from domain.events import CloudEvent, OrderRef, TaskException
from tools.context import MAX_SUBSTITUTES, Systems, read_stock, read_waves, substitutes_of

TRIAGE_TYPES = frozenset({"wms.task.exception", "oms.payment.failed", "oms.order.cancelled"})

_MODEL: OverrideEstimator | None = None


def use_override_model(model: OverrideEstimator | None) -> None:
    """Install (or remove, with None) the learned override model every new specialist uses."""
    global _MODEL
    _MODEL = model


def current_override_model() -> OverrideEstimator | None:
    return _MODEL


def _order(systems: Systems, order_id: str | None) -> OrderView | None:
    if not order_id:
        return None
    try:
        return systems.oms.order(order_id)
    except UnknownOrder:
        return None


def _tier(systems: Systems, view: OrderView | None) -> str:
    if view is None:
        return "standard"
    try:
        return systems.oms.customer(view.order.customer).tier
    except (LookupError, PermanentConnectorError):
        return "standard"


class TriageSpecialist:
    workflow = "exception_triage"
    verify_stock = True  # a re-allocation or substitution allocates

    def __init__(self, model: OverrideEstimator | None = None) -> None:
        self.model = model if model is not None else _MODEL

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        if event.type == "wms.task.exception":
            sku = str(event.data.get("sku"))
            skus = {sku} | substitutes_of(systems, {sku})
            return sorted(f"sku:{s}" for s in skus)
        if event.type == "oms.order.cancelled":
            view = _order(systems, str(event.data.get("order_id")))
            if view is not None:
                return sorted({f"sku:{ln.substituted_by or ln.sku}" for ln in view.lines})
        return []

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        if event.type == "wms.task.exception":
            proposals = self._exception(event, systems)
        elif event.type == "oms.payment.failed":
            ref = OrderRef.model_validate(event.data)
            view = _order(systems, ref.order_id)
            proposals = [decide_payment_failed(view, ref.order_id, ref.reason, _tier(systems, view), self.model)]
        elif event.type == "oms.order.cancelled":
            ref = OrderRef.model_validate(event.data)
            view = _order(systems, ref.order_id)
            proposals = [decide_cancellation(view, ref.order_id, ref.reason, read_waves(systems), self.model)]
        else:
            raise ValueError(f"the triage specialist does not handle {event.type}")
        for p in proposals:
            p.evidence["trigger"] = {"event_id": event.id, "type": event.type}
        return proposals

    def _exception(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        data = TaskException.model_validate(event.data)
        facts = TaskExceptionFacts(
            task_id=data.task_id,
            node=data.node,
            sku=data.sku,
            reason=data.reason,
            order_id=data.order_id,
            location=data.location,
            expected_qty=data.expected_qty,
            found_qty=data.found_qty,
        )
        view = _order(systems, data.order_id)
        info: SkuInfo | None
        supply: list[Supply]
        try:
            info, supply = systems.erp.sku(data.sku), systems.erp.planned_supply(data.sku)
        except UnknownSku:
            info, supply = None, []
        subs: dict[str, list[NodeStock]] = {}
        if view is not None and view.order.allow_substitution and info is not None:
            for sub in info.substitutes[:MAX_SUBSTITUTES]:
                subs[sub] = read_stock(systems, sub)
        prior: list[WmsTask] = []
        wms_tasks = isinstance(systems.wms, WmsTaskReader)
        if isinstance(systems.wms, WmsTaskReader):
            prior = systems.wms.tasks(data.sku, data.node)
        ctx = ExceptionContext(
            facts=facts,
            now=event_now(event),
            stock=read_stock(systems, data.sku),
            sku_info=info,
            supply=supply,
            network=systems.oms.network(),
            order=view,
            tier=_tier(systems, view),
            substitutes=subs,
            prior=prior,
            wms_tasks=wms_tasks,
        )
        return decide_exception(ctx, self.model)
