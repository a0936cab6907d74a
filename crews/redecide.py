"""Decide a subject again: after a stale approval, or a planner's rejection.

Orders are the subjects that must never be stranded: an open order with no reservation and no
live decision is one nobody will look at again. ``redecide`` runs the release engine on the
order as it is now; ``without`` drops nodes from its stock picture, which is how a rejection of
a sourcing plan becomes a different plan rather than the same one again. Other workflows have no
re-decider: their next event or tick decides again (``None``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from domain.decisions import Decision, Proposal
from domain.engines.release import DEFAULT_SPLIT_ONLY_FOR_SERVICE, decide_release
from domain.errors import InvalidOrder, PermanentConnectorError, UnknownOrder, UnknownSku
from tools.context import Systems, release_context

ORDER_WORKFLOWS = ("order_release", "allocation")
# The order states an engine may still source; anything else moved on without it.
UNDECIDED = ("open", "held")


def redecide(
    decision: Decision,
    systems: Systems,
    now: datetime,
    wave_window_hours: float,
    without: Iterable[str] = (),
    split_only_for_service: bool = DEFAULT_SPLIT_ONLY_FOR_SERVICE,
) -> list[Proposal] | None:
    """Fresh proposals for the decision's subject (empty: the subject needs no decision any more),
    or None when no engine can decide this kind of subject on demand."""
    if decision.workflow not in ORDER_WORKFLOWS or decision.subject in ("waves", "backlog"):
        return None
    try:
        view = systems.oms.order(decision.subject)
    except (UnknownOrder, LookupError, PermanentConnectorError):
        return []
    if view.status not in UNDECIDED or any(al.qty > 0 for ln in view.lines for al in ln.allocations):
        return []
    try:
        ctx = release_context(systems, decision.subject, now, wave_window_hours)
        ctx = dataclasses.replace(ctx, split_only_for_service=split_only_for_service)
        excluded = set(without)
        if excluded:
            stock = {sku: [ns for ns in rows if ns.node not in excluded] for sku, rows in ctx.stock.items()}
            ctx = dataclasses.replace(ctx, stock=stock)
        return [p for p in decide_release(ctx) if p.subject == decision.subject]
    except (UnknownSku, InvalidOrder):
        return []


def nodes_of(decision: Decision) -> set[str]:
    """The nodes a plan reserves stock at (what a planner rejecting it objected to)."""
    return {str(a.payload["node"]) for a in decision.actions if a.name == "oms.allocate" and a.payload.get("node")}
