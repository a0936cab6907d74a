"""Backlog specialist for ``crossdock.tick``: re-source held orders with the batch optimiser."""

from __future__ import annotations

from domain.decisions import Proposal
from domain.engines.backlog import decide_backlog
from domain.events import CloudEvent, Tick
from tools.context import Systems, backlog_context, held_orders, substitutes_of


class BacklogSpecialist:
    """Time passed: see whether stock now lets held orders ship, all of them in one solve."""

    workflow = "allocation"
    verify_stock = True

    def __init__(self) -> None:
        self.locked: set[str] | None = None

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        # Every SKU a held order could take, substitutes included, so no release races this batch.
        skus: set[str] = set()
        subs_wanted: set[str] = set()
        for view in held_orders(systems):
            own = {ln.sku for ln in view.order.lines}
            skus |= own
            if view.order.allow_substitution:
                subs_wanted |= own
        skus |= substitutes_of(systems, subs_wanted)
        self.locked = skus
        return sorted(f"sku:{s}" for s in skus)

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        now = Tick.model_validate(event.data).now
        # Orders held after the locks were taken wait for the next tick: their SKUs are not locked.
        return decide_backlog(backlog_context(systems, now, only_skus=self.locked))
