"""Allocation/release specialist for ``oms.order.created``: gather context, let the engine decide.

Data errors (an unknown SKU, a zero-quantity line) are not retried: they become a held
order with the error as the reason, so the planner sees it instead of a dead letter.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from domain.decisions import Action, Proposal, ticket
from domain.engines.baseline import decide_baseline_release
from domain.engines.release import (
    DEFAULT_SPLIT_ONLY_FOR_SERVICE,
    DEFAULT_WAVE_WINDOW_H,
    ReleaseContext,
    decide_release,
)
from domain.engines.rules import decide_rules_release
from domain.errors import InvalidOrder, UnknownOrder, UnknownSku
from domain.events import CloudEvent
from tools.context import Systems, first_substitutes, release_context


class OrderReleaseSpecialist:
    """Release, split or hold one new order (the crossdock policy)."""

    workflow = "order_release"
    verify_stock = True

    def __init__(
        self,
        wave_window_hours: float = DEFAULT_WAVE_WINDOW_H,
        split_only_for_service: bool = DEFAULT_SPLIT_ONLY_FOR_SERVICE,
    ) -> None:
        self.wave_window_hours = wave_window_hours
        self.split_only_for_service = split_only_for_service  # the policy's rule

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        # One lock per SKU covers every node: read-decide-allocate is atomic per SKU. A substitute
        # may be allocated instead, so when the order allows substitution its SKUs are locked too.
        skus = {str(line.get("sku")) for line in event.data.get("lines", []) if isinstance(line, dict)}
        if event.data.get("allow_substitution"):
            skus |= first_substitutes(systems, skus)
        return sorted(f"sku:{s}" for s in skus)

    def decide(self, ctx: ReleaseContext) -> list[Proposal]:
        return decide_release(dataclasses.replace(ctx, split_only_for_service=self.split_only_for_service))

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        order_id = str(event.data.get("id"))
        try:
            return self.decide(release_context(systems, order_id, event_now(event), self.wave_window_hours))
        except (UnknownSku, InvalidOrder) as exc:
            return [hold_for_review(order_id, str(exc), self.workflow)]
        except UnknownOrder as exc:
            return [escalate_unknown(order_id, str(exc), self.workflow)]


class BaselineReleaseSpecialist(OrderReleaseSpecialist):
    """The naive yardstick: book stock, nearest node, no locks."""

    verify_stock = False

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        return []

    def decide(self, ctx: ReleaseContext) -> list[Proposal]:
        return [decide_baseline_release(ctx)]


class RulesReleaseSpecialist(OrderReleaseSpecialist):
    """The rule-based router: WMS pickable stock, nearest node first, split only when no node can
    fill, hold rather than oversell. It reserves under the SKU lock and its allocations are
    re-checked against the WMS before they execute, like the crossdock policy's."""

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        # No substitution under the rules policy: the order's own SKUs are the ones it may take.
        skus = {str(line.get("sku")) for line in event.data.get("lines", []) if isinstance(line, dict)}
        return sorted(f"sku:{s}" for s in skus)

    def decide(self, ctx: ReleaseContext) -> list[Proposal]:
        return [decide_rules_release(ctx)]


def event_now(event: CloudEvent) -> datetime:
    """The simulated clock: the event's own time (a replay runs in scenario time)."""
    return event.time or datetime.now(UTC)


def hold_for_review(order_id: str, error: str, workflow: str) -> Proposal:
    return Proposal(
        workflow=workflow,
        subject=order_id,
        outcome="held",
        confidence=1.0,
        cost_impact=0.0,
        rationale=f"Held for review: {error}.",
        evidence={"error": error},
        actions=[
            Action(
                system="oms", type="hold_order", payload={"order_id": order_id, "reason": "review", "detail": error}
            ),
            Action(system="oms", type="update_order_status", payload={"order_id": order_id, "status": "held"}),
            ticket("planning", f"{order_id} held: data error", error, [order_id]),
        ],
    )


def escalate_unknown(order_id: str, error: str, workflow: str) -> Proposal:
    return Proposal(
        workflow=workflow,
        subject=order_id,
        outcome="escalated",
        confidence=1.0,
        cost_impact=0.0,
        rationale=f"Escalated: {error}; nothing can be held or released.",
        evidence={"error": error},
        actions=[ticket("customer_service", f"{order_id} unknown to the OMS", error, [order_id])],
    )
