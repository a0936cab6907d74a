"""Specialists for time and capacity: ``crossdock.tick`` and ``wms.capacity.changed``.

A tick re-sources held orders with the batch optimiser, then plans waves for every
reservation on no wave yet; a capacity change only re-plans the waves, against the zone's
new rate (the WMS network read already carries it).
"""

from __future__ import annotations

import dataclasses
import hashlib

from crews.backorder import backorder_proposals
from crews.order_release import event_now
from crews.reconcile_sweep import judge_suspects, reconcile_pass
from crews.sweeps import due_stock_rechecks, sweep
from domain.decisions import Proposal
from domain.engines.backlog import decide_backlog, decide_waves
from domain.engines.release import DEFAULT_WAVE_WINDOW_H
from domain.engines.waves import add_committed, committed_lines
from domain.events import CloudEvent, Tick
from domain.models import Policy
from domain.rationale import money
from tools.context import Systems, backlog_context, held_orders, order_needs, substitute_map, wave_context

# One planner at a time: two concurrent plans could put one order on two waves.
WAVE_PLAN_LOCK = "plan:waves"


def wave_tag(event: CloudEvent) -> str:
    """Wave ids of a plan derive from its event: unique per plan, the same on redelivery."""
    return hashlib.sha256(event.key.encode()).hexdigest()[:10]


class WavePlanningSpecialist:
    """Capacity changed: plan the reservations waiting for a wave against the new rate."""

    workflow = "order_release"
    verify_stock = False  # waves reserve nothing: the stock was reserved at release

    def __init__(self, wave_window_hours: float = DEFAULT_WAVE_WINDOW_H) -> None:
        self.wave_window_hours = wave_window_hours

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        return [WAVE_PLAN_LOCK]

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        ctx = wave_context(systems, event_now(event), self.wave_window_hours)
        return [decide_waves(ctx, wave_tag(event), event.type)]


class BacklogSpecialist:
    """Time passed: release held orders that stock now lets ship (one solve), plan waves, sweep."""

    workflow = "allocation"
    verify_stock = True

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.wave_window_hours = self.policy.wave_window_hours
        self.locked: set[str] | None = None
        self.subs: dict[str, list[str]] | None = None
        self.rechecks: list[str] = []
        self.suspects: list[tuple[str, str]] = []

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        # Every SKU a held order could take, substitutes included, so no release races this batch.
        views = held_orders(systems)
        self.subs = substitute_map(
            systems, {ln.sku for v in views if v.order.allow_substitution for ln in v.order.lines}
        )
        self.locked = {sku for v in views for sku in order_needs(v.order, self.subs)}
        # Stock re-checks may release reservations: their SKUs are locked too.
        rechecks = {sku for sku, _ in due_stock_rechecks(systems, Tick.model_validate(event.data).now)}
        # Continuous reconciliation: SKU@node the bulk reads found out of step (crews.reconcile_sweep).
        self.suspects = reconcile_pass(systems, Tick.model_validate(event.data).now).suspects
        rechecks |= {sku for sku, _ in self.suspects}
        return [WAVE_PLAN_LOCK, *sorted(f"sku:{s}" for s in self.locked | rechecks)]

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        now = Tick.model_validate(event.data).now
        # Orders held after the locks were taken wait for the next tick: their SKUs are not locked.
        ctx = backlog_context(
            systems, now, subs=self.subs, only_skus=self.locked, wave_window_hours=self.wave_window_hours
        )
        backlog = decide_backlog(ctx)
        # The releases above are not executed yet: their waves count through ``committed``,
        # and their orders are still held in the OMS, so the wave plan does not see them twice.
        waves = wave_context(systems, now, self.wave_window_hours)
        committed = committed_lines(waves.waves, now)
        for p in backlog:
            for a in p.actions:
                add_committed(committed, a)
        plan = decide_waves(dataclasses.replace(waves, committed=committed), wave_tag(event), event.type)
        swept = sweep(systems, now, self.policy.posting_grace_hours, self.policy.receipt_tolerance_pct)
        swept += judge_suspects(systems, self.suspects, now, self.policy.posting_grace_hours)
        prevent = [p for p in backorder_proposals(systems, now, self.policy) if _fresh(systems, p)]
        return [*backlog, plan, *swept, *fold_prevention(prevent)]


# Outcomes a planner reads as one list per tick rather than one decision per SKU@node.
FOLDED = {"stockout_announced": "stockouts", "safety_stock_proposed": "safety-stock"}


def fold_prevention(proposals: list[Proposal]) -> list[Proposal]:
    """Transfers and expedites stay one decision each (priced, gated one by one); announcements
    and safety-stock raises become one decision per tick each, so the review queue holds one
    list instead of hundreds of rows."""
    kept = [p for p in proposals if p.outcome not in FOLDED]
    for outcome, subject in FOLDED.items():
        group = [p for p in proposals if p.outcome == outcome]
        if not group:
            continue
        items = [{"subject": p.subject, "rationale": p.rationale, "cost_impact": p.cost_impact} for p in group]
        shown = ", ".join(f"{p.subject}" for p in group[:10]) + (" …" if len(group) > 10 else "")
        total = round(sum(p.cost_impact for p in group), 2)
        if outcome == "safety_stock_proposed":
            said = (
                f"{len(group)} SKU@node pair(s) keep less than their days of cover in reserve: {shown}. "
                f"Raise their safety stock ({money(total)} of stock tied up; one approval for the list)."
            )
        else:
            said = f"{len(group)} SKU@node pair(s) forecast to run short before their next supply: {shown}."
        kept.append(
            Proposal(
                workflow="backorder_prevention",
                subject=subject,
                outcome=outcome,
                confidence=min(p.confidence for p in group),
                cost_impact=total,
                rationale=said,
                evidence={"engine": str(group[0].evidence.get("engine", "forecast")), "items": items},
                actions=[a for p in group for a in p.actions],
                review_required=any(p.review_required for p in group),
                review_reason=next((p.review_reason for p in group if p.review_reason), None),
            )
        )
    return kept


def _fresh(systems: Systems, p: Proposal) -> bool:
    """A prevention proposal with a dedupe key is raised once (the memory remembers it)."""
    key = p.evidence.get("dedupe_key")
    return key is None or systems.memo is None or systems.memo.first_time(f"prevent:{key}")
