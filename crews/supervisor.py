"""Supervisor: route each event type to its specialist (or record that none exists yet).

Routing is code, not a prompt: the event's type picks the specialist, so nothing inside
an event's text can send it somewhere else.
"""

from __future__ import annotations

from typing import Protocol

from crews.backlog import BacklogSpecialist, WavePlanningSpecialist
from crews.discrepancy import DiscrepancySpecialist
from crews.order_release import BaselineReleaseSpecialist, OrderReleaseSpecialist, RulesReleaseSpecialist
from crews.reconciliation import ReconciliationSpecialist
from crews.triage import TRIAGE_TYPES, TriageSpecialist
from domain.decisions import Proposal, Workflow
from domain.engines.baseline import escalate
from domain.events import CloudEvent
from domain.models import Policy
from tools.context import Systems

WORKFLOW_BY_TYPE: dict[str, Workflow] = {
    "oms.order.created": "order_release",
    "oms.order.cancelled": "order_release",
    "oms.payment.failed": "exception_triage",
    "erp.inventory.posted": "discrepancy",
    "erp.po.created": "backorder_prevention",
    "wms.asn.received": "reconciliation",
    "wms.receipt.posted": "reconciliation",
    "wms.task.exception": "exception_triage",
    "wms.inventory.adjusted": "discrepancy",
    "wms.capacity.changed": "order_release",
    "crossdock.tick": "order_release",
}


class Specialist(Protocol):
    @property
    def workflow(self) -> str: ...

    @property
    def verify_stock(self) -> bool: ...

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]: ...

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]: ...


class NoSpecialist:
    """Accept and record an event whose workflow has no specialist yet: visible, never dropped."""

    verify_stock = False

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        return []

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        return [
            Proposal(
                workflow=self.workflow,
                subject=event.subject or event.id,
                outcome="no_action",
                confidence=1.0,
                rationale=f"No {self.workflow} specialist handles {event.type} yet; the event is recorded for audit.",
                evidence={"event_type": event.type, "reason": "no_specialist"},
            )
        ]


class BaselineEscalation(NoSpecialist):
    """The baseline (and the rules router) sends everything it cannot place to a human."""

    def __init__(self, workflow: Workflow, policy_name: str = "baseline") -> None:
        super().__init__(workflow)
        self.policy_name = policy_name

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        if event.type == "crossdock.tick":
            return super().propose(event, systems)
        return [
            escalate(
                event.subject or event.id,
                f"{event.type} needs a human under the {self.policy_name} policy",
                self.workflow,
            )
        ]


def route(event_type: str, policy: Policy | None = None) -> Specialist:
    """The specialist for an event type under the policy (the crossdock policy by default)."""
    policy = policy or Policy()
    workflow = WORKFLOW_BY_TYPE[event_type]
    wave_window_hours = policy.wave_window_hours
    if policy.policy in ("baseline", "rules"):
        # The rules router only routes new orders; like the baseline, it has no specialist for
        # the rest (a human handles it) and does not re-source held orders on ticks.
        if event_type == "oms.order.created":
            return RulesReleaseSpecialist() if policy.policy == "rules" else BaselineReleaseSpecialist()
        return BaselineEscalation(workflow, policy.policy)
    if event_type == "oms.order.created":
        return OrderReleaseSpecialist(wave_window_hours, policy.split_only_for_service)
    if event_type == "crossdock.tick":
        return BacklogSpecialist(policy)
    if event_type == "wms.capacity.changed":
        return WavePlanningSpecialist(wave_window_hours)
    if event_type in ("wms.asn.received", "wms.receipt.posted"):
        return ReconciliationSpecialist(policy.receipt_tolerance_pct, wave_window_hours, policy.split_only_for_service)
    if event_type in ("erp.inventory.posted", "wms.inventory.adjusted"):
        return DiscrepancySpecialist(policy.posting_grace_hours)
    if event_type in TRIAGE_TYPES:
        return TriageSpecialist()
    return NoSpecialist(workflow)
