"""Backlog specialist for ``crossdock.tick``: re-source held orders with the batch optimiser."""

from __future__ import annotations

from domain.decisions import Proposal
from domain.engines.backlog import decide_backlog
from domain.events import CloudEvent, Tick
from tools.context import Systems, backlog_context, held_orders, order_needs, substitute_map


class BacklogSpecialist:
    """Time passed: see whether stock now lets held orders ship, all of them in one solve."""

    workflow = "allocation"
    verify_stock = True

    def __init__(self) -> None:
        self.locked: set[str] | None = None
        self.subs: dict[str, list[str]] | None = None

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        # Every SKU a held order could take, substitutes included, so no release races this batch.
        views = held_orders(systems)
        self.subs = substitute_map(
            systems, {ln.sku for v in views if v.order.allow_substitution for ln in v.order.lines}
        )
        self.locked = {sku for v in views for sku in order_needs(v.order, self.subs)}
        return sorted(f"sku:{s}" for s in self.locked)

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        now = Tick.model_validate(event.data).now
        # Orders held after the locks were taken wait for the next tick: their SKUs are not locked.
        return decide_backlog(backlog_context(systems, now, subs=self.subs, only_skus=self.locked))
