"""Reconciliation specialist for ``wms.asn.received`` and ``wms.receipt.posted``.

Reads the purchase order from the ERP and every ASN and receipt for it from the WMS, runs the
three-way match (``domain.engines.matching``), and proposes only what this document changed:
the PO lines it touches and the findings about it, so a PO's later documents never raise the
same ticket twice. Lines the ERP already closed are left alone. A receipt then hands the
orders held for the received SKUs to the batch optimiser (the allocation specialist's
re-sourcing), by priority, so a backorder is released as soon as its goods are in.
"""

from __future__ import annotations

from crews.order_release import event_now
from domain.decisions import Proposal, ticket
from domain.engines.backlog import decide_backlog
from domain.engines.matching import match, reconcile_proposals
from domain.engines.release import DEFAULT_SPLIT_ONLY_FOR_SERVICE
from domain.errors import UnknownDocument, UnknownSku
from domain.events import CloudEvent
from domain.models import Asn, Receipt
from tools.context import Systems, backlog_context, held_orders, order_needs, substitute_map


class ReconciliationSpecialist:
    workflow = "reconciliation"
    verify_stock = True  # a receipt may release held orders

    def __init__(
        self,
        tolerance_pct: float = 2.0,
        wave_window_hours: float = 3.0,
        split_only_for_service: bool = DEFAULT_SPLIT_ONLY_FOR_SERVICE,
    ) -> None:
        self.tolerance_pct = tolerance_pct
        self.wave_window_hours = wave_window_hours
        self.split_only_for_service = split_only_for_service  # the policy's rule, for the releases a receipt allows
        self.locked: set[str] = set()
        self.subs: dict[str, list[str]] = {}

    def lock_keys(self, event: CloudEvent, systems: Systems) -> list[str]:
        if event.type != "wms.receipt.posted":
            return []
        received = {str(ln["sku"]) for ln in event.data.get("lines", []) if isinstance(ln, dict)}
        views = [v for v in held_orders(systems) if {ln.sku for ln in v.order.lines} & received]
        self.subs = substitute_map(
            systems, {ln.sku for v in views if v.order.allow_substitution for ln in v.order.lines}
        )
        self.locked = received | {s for v in views for s in order_needs(v.order, self.subs)}
        return sorted(f"sku:{s}" for s in self.locked)

    def propose(self, event: CloudEvent, systems: Systems) -> list[Proposal]:
        doc: Asn | Receipt = (Receipt if event.type == "wms.receipt.posted" else Asn).model_validate(event.data)
        now = event_now(event)
        try:
            view = systems.erp.purchase_order(doc.po_id)
        except UnknownDocument as exc:
            return [_unknown_po(doc, str(exc))]
        result = match([view.po], systems.wms.asns(doc.po_id), systems.wms.receipts(doc.po_id), self.tolerance_pct, now)
        # A duplicate receipt changes no line (it is not counted): only the finding about it is new.
        duplicate = any(f.doc_id == doc.id for f in result.duplicate_receipts)
        touched = set() if duplicate else {f"{doc.po_id}/{ln.po_line}" for ln in doc.lines}
        closed = {f"{doc.po_id}/{n}" for n in view.closed_lines}
        unit_cost = {}
        for sku in sorted({ln.sku for ln in view.po.lines}):
            try:
                unit_cost[sku] = systems.erp.sku(sku).unit_cost
            except UnknownSku:
                continue
        proposals = [
            p
            for p in reconcile_proposals(result, {view.po.id: view.po}, unit_cost)
            if (p.subject in touched and p.subject not in closed) or p.subject == doc.id
        ]
        for p in proposals:
            p.evidence["trigger"] = {"event_id": event.id, "type": event.type, "document": doc.id}
        if not proposals:
            proposals = [
                Proposal(
                    workflow="reconciliation",
                    subject=doc.id,
                    outcome="no_action",
                    confidence=1.0,
                    rationale=f"{doc.id} for {doc.po_id}: nothing to settle yet (goods still awaited or lines closed).",
                    evidence={"po_id": doc.po_id, "stats": result.stats},
                )
            ]
        if event.type == "wms.receipt.posted" and self.locked:
            ctx = backlog_context(
                systems,
                now,
                subs=self.subs,
                only_skus=self.locked,
                wave_window_hours=self.wave_window_hours,
                split_only_for_service=self.split_only_for_service,
            )
            _summary, *released = decide_backlog(ctx)
            proposals.extend(released)
        return proposals


def _unknown_po(doc: Asn | Receipt, error: str) -> Proposal:
    return Proposal(
        workflow="reconciliation",
        subject=doc.id,
        outcome="escalated",
        confidence=1.0,
        rationale=f"{doc.id} names {doc.po_id}, which the ERP does not know: receiving must check the paperwork.",
        evidence={"error": error},
        actions=[ticket("receiving", f"{doc.id}: unknown PO {doc.po_id}", error, [doc.id, doc.po_id])],
        review_required=True,
        review_reason="unknown purchase order",
    )
