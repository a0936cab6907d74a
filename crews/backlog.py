"""Specialists for time and capacity: ``crossdock.tick`` and ``wms.capacity.changed``.

A tick re-sources held orders with the batch optimiser, then plans waves for every
reservation on no wave yet; a capacity change only re-plans the waves, against the zone's
new rate (the WMS network read already carries it).

A tick is cut into bounded slices (``BacklogSpecialist.slices``), each taking only the locks it
needs for as long as it needs them, so an order on one of the backlog's SKUs waits for one slice,
not for the whole tick (issue 20):

* **backlog**: the held orders are grouped by the SKUs they may take (substitutes included) into
  connected components, so orders that compete for a SKU are still solved jointly; components are
  packed into slices of at most ``SLICE_ORDERS`` orders and ``SLICE_SKUS`` SKUs (a component larger
  than that is one slice of its own). Each slice locks its SKUs, reads the backlog of those SKUs
  again under them, decides, and is recorded and executed before its locks go;
* **waves**: the wave plan, under ``WAVE_PLAN_LOCK`` only (order releases never take it: they
  wave their own orders under their SKU locks);
* **sweeps**: stock re-checks, overdue ASNs, the continuous reconciliation and backorder
  prevention read and decide with no lock; what they propose is recorded and executed under the
  locks of the SKUs its actions name (``runtime.pipeline.proposal_locks``).

``propose`` runs the same slices one after another without locks (the engine replay and tests):
the same reads in the same order, so a recorded tick replays to the proposals it made live.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from crews.backorder import backorder_proposals
from crews.order_release import event_now
from crews.reconcile_sweep import judge_suspects, reconcile_pass
from crews.sweeps import sweep
from domain.decisions import Proposal
from domain.engines.backlog import decide_backlog, decide_waves
from domain.engines.release import DEFAULT_WAVE_WINDOW_H
from domain.events import CloudEvent, Tick
from domain.models import Order, Policy
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


# A backlog slice's bounds: an order on one of its SKUs waits at most one slice's solve and execution.
SLICE_ORDERS = 40
SLICE_SKUS = 60


@dataclass
class Slice:
    """One bounded part of a tick: what it locks, and how it decides (call it under those locks).

    ``locked``: it decides, records and executes under ``keys``; otherwise it decides with no lock
    and its proposals are recorded and executed under the locks their actions name
    (``runtime.pipeline.proposal_locks``)."""

    stage: str  # backlog | waves | sweeps
    keys: list[str]
    decide: Callable[[], list[Proposal]]
    locked: bool = True


def backlog_batches(
    orders: list[Order], subs: dict[str, list[str]], max_orders: int | None = None, max_skus: int | None = None
) -> list[set[str]]:
    """The SKU sets of a tick's backlog slices: orders that may take a common SKU (their own or a
    substitute) are in one connected component and so in one slice; components are packed in SKU
    order into slices of at most ``max_orders`` orders and ``max_skus`` SKUs."""
    max_orders = SLICE_ORDERS if max_orders is None else max_orders
    max_skus = SLICE_SKUS if max_skus is None else max_skus
    parent: dict[str, str] = {}

    def root(sku: str) -> str:
        parent.setdefault(sku, sku)
        while parent[sku] != sku:
            parent[sku] = parent[parent[sku]]
            sku = parent[sku]
        return sku

    needs = [order_needs(o, subs) for o in orders]
    for skus in needs:
        if not skus:
            continue
        first, *rest = sorted(skus)
        root(first)
        for sku in rest:
            a, b = root(first), root(sku)
            if a != b:
                parent[max(a, b)] = min(a, b)
    components: dict[str, tuple[set[str], int]] = {}
    for skus in needs:
        if not skus:
            continue
        r = root(min(skus))
        members, count = components.get(r, (set(), 0))
        components[r] = (members | skus, count + 1)
    batches: list[set[str]] = []
    current: set[str] = set()
    count = 0
    for _, (skus, n) in sorted(components.items()):
        if current and (count + n > max_orders or len(current) + len(skus) > max_skus):
            batches.append(current)
            current, count = set(), 0
        current |= skus
        count += n
    if current:
        batches.append(current)
    return batches


class BacklogSpecialist:
    """Time passed: release held orders that stock now lets ship, plan waves, sweep: in slices."""

    workflow = "allocation"
    verify_stock = True

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.wave_window_hours = self.policy.wave_window_hours

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        # None for the tick as a whole: each slice takes its own (``slices``). Reads nothing, so a
        # replay (which calls it before ``propose``) reads what the live tick read, in its order.
        return []

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        """Every slice in turn, without locks or execution (the engine replay, tests)."""
        return [p for piece in self.slices(event, systems) for p in piece.decide()]

    def slices(self, event: CloudEvent, systems: Systems, skip: frozenset[str] = frozenset()) -> Iterator[Slice]:
        """The tick's slices, planned lazily: each is planned after the one before it ran. Stages in
        ``skip`` are left out (a redelivered tick that finished them)."""
        now = Tick.model_validate(event.data).now
        if "backlog" not in skip:
            yield from self._backlog(systems, now)
        if "waves" not in skip:
            yield Slice("waves", [WAVE_PLAN_LOCK], lambda: [self._waves(event, systems, now)])
        if "sweeps" not in skip:
            yield Slice("sweeps", [], lambda: self._sweeps(systems, now), locked=False)

    def _backlog(self, systems: Systems, now: datetime) -> Iterator[Slice]:
        # Planned without locks: who is held and what they may take. Each slice reads its orders
        # again under its SKU locks; one held after this read, on SKUs no slice locks, waits for
        # the next tick.
        views = held_orders(systems)
        subs = substitute_map(systems, {ln.sku for v in views if v.order.allow_substitution for ln in v.order.lines})
        batches = backlog_batches([v.order for v in views], subs) or [set()]
        for n, skus in enumerate(batches, start=1):
            keys = sorted(f"sku:{s}" for s in skus)
            yield Slice("backlog", keys, partial(self._release, systems, now, subs, skus, n, len(batches)))

    def _release(
        self, systems: Systems, now: datetime, subs: dict[str, list[str]], skus: set[str], n: int, of: int
    ) -> list[Proposal]:
        ctx = backlog_context(
            systems,
            now,
            subs=subs,
            only_skus=skus,
            wave_window_hours=self.wave_window_hours,
            split_only_for_service=self.policy.split_only_for_service,
        )
        summary, *releases = decide_backlog(ctx)
        if of > 1:
            summary.rationale = f"Backlog slice {n} of {of} ({len(skus)} SKU(s)): {summary.rationale}"
            summary.evidence["slice"] = {"n": n, "of": of, "skus": len(skus)}
        return [summary, *releases]

    def _waves(self, event: CloudEvent, systems: Systems, now: datetime) -> Proposal:
        # The backlog's slices ran already: their releases' waves are in the WMS and count there.
        return decide_waves(wave_context(systems, now, self.wave_window_hours), wave_tag(event), event.type)

    def _sweeps(self, systems: Systems, now: datetime) -> list[Proposal]:
        swept = sweep(systems, now, self.policy.posting_grace_hours, self.policy.receipt_tolerance_pct)
        # Continuous reconciliation: SKU@node the bulk reads found out of step (crews.reconcile_sweep).
        suspects = reconcile_pass(systems, now).suspects
        swept += judge_suspects(systems, suspects, now, self.policy.posting_grace_hours)
        prevent = [p for p in backorder_proposals(systems, now, self.policy) if _fresh(systems, p)]
        return [*swept, *fold_prevention(prevent)]


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
