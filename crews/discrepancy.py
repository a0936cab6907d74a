"""Discrepancy specialist for ``erp.inventory.posted`` and ``wms.inventory.adjusted``.

Reads the SKU@node from all three systems (WMS physical and movements, ERP book and
postings, OMS reservations) and lets ``domain.engines.discrepancy`` tell a timing
difference from a true variance. It holds the SKU's stock lock: it may release reservations.
"""

from __future__ import annotations

from crews.order_release import event_now
from crews.sweeps import schedule_recheck
from domain.decisions import Proposal
from domain.engines.discrepancy import decide_discrepancy
from domain.events import CloudEvent
from tools.context import Systems, stock_picture


class DiscrepancySpecialist:
    workflow = "discrepancy"
    verify_stock = False  # it only ever gives stock back

    def __init__(self, posting_grace_hours: float = 4.0) -> None:
        self.posting_grace_hours = posting_grace_hours

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        return [f"sku:{event.data['sku']}"]

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        sku, node = str(event.data["sku"]), str(event.data["node"])
        picture = stock_picture(systems, sku, node, event_now(event), self.posting_grace_hours)
        proposals = decide_discrepancy(picture)
        schedule_recheck(systems, picture)  # a gap left as in flight is judged again later
        for p in proposals:
            p.evidence["trigger"] = {"event_id": event.id, "type": event.type, "qty_delta": event.data.get("qty_delta")}
        return proposals
