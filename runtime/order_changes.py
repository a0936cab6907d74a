"""Re-check a chat order change just before it runs: the order may have joined a released wave.

The chat's policy lets an order be cancelled or a line lowered only until a wave holding the
order is released. The premise is checked when the proposal is built, and again here, under the
order's SKU locks (wave releases take them too), both when the change executes at once (the
chat's submit) and when a planner approves it later (``Pipeline.approve``).
"""

from __future__ import annotations

from chat.policy import order_change_locks, waved_since
from connectors.ports import WmsPort
from domain.decisions import Decision
from runtime.store import Store

__all__ = ["fail_if_waved", "order_change_locks"]


def fail_if_waved(store: Store, wms: WmsPort, decision: Decision, actor: str) -> Decision | None:
    """Mark an ``executing`` order change failed, with an audit entry, when its order joined a
    released wave meanwhile; returns the failed decision, or None when the change may run."""
    late = waved_since(wms, decision)
    if late is None:
        return None
    failed = store.transition(decision.id, to="failed", from_={"executing"}, actor=actor, error=late)
    if failed is None:  # it moved on meanwhile: report what it is now
        return store.get_decision(decision.id) or decision
    store.append_audit("decision.failed", decision.subject, actor, {"decision": decision.id, "error": late})
    return failed
