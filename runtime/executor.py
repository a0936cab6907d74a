"""Executor: the one place that turns an approved decision into connector writes.

Each action is sent with its idempotency key and recorded in the action log; an action
already in the log is skipped, and the system itself deduplicates on the key, so a
decision executed twice (redelivery, double-click on approve) applies every action once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import structlog

from connectors.ports import ErpPort, NotifyPort, OmsPort, WmsPort
from domain.decisions import Action, Decision
from domain.errors import PermanentConnectorError, StockConflict
from runtime.metrics import ACTIONS
from runtime.store import Store

log = structlog.get_logger("crossdock.executor")


class Executor:
    def __init__(self, store: Store, wms: WmsPort, erp: ErpPort, oms: OmsPort, notify: NotifyPort) -> None:
        self.store = store
        self.wms = wms
        self.ports: dict[str, Any] = {"wms": wms, "erp": erp, "oms": oms, "notify": notify}

    def execute(self, decision: Decision, actor: str, verify_stock: bool = True) -> Decision:
        """Apply the decision's actions (status must be ``executing``); ends executed or failed.

        Connector errors worth a retry propagate (the queue owns retries); a permanent
        rejection or a stock conflict marks the decision failed with the reason.
        """
        try:
            if verify_stock:
                self.verify_stock(decision)
            for action in decision.actions:
                self._apply(decision, action, actor)
        except (PermanentConnectorError, StockConflict) as exc:
            failed = self.store.transition(decision.id, to="failed", from_={"executing"}, actor=actor, error=str(exc))
            self.store.append_audit(
                "decision.failed", decision.subject, actor, {"decision": decision.id, "error": str(exc)}
            )
            log.warning("decision.failed", decision_id=decision.id, error=str(exc))
            return failed or decision
        done = self.store.transition(decision.id, to="executed", from_={"executing"}, actor=actor)
        if done is not None:
            self.store.append_audit(
                "decision.executed",
                decision.subject,
                actor,
                {"decision": decision.id},
                dedup_key=f"executed:{decision.id}",
            )
        return done or self.store.get_decision(decision.id) or decision

    def verify_stock(self, decision: Decision) -> None:
        """Refuse to allocate more than is pickable now (stock may have moved since the proposal)."""
        need: dict[tuple[str, str], float] = defaultdict(float)
        for action in decision.actions:
            if action.name == "oms.allocate" and not self.store.action_done(action.idempotency_key):
                need[(action.payload["sku"], action.payload["node"])] += float(action.payload["qty"])
        for sku in sorted({sku for sku, _ in need}):
            pickable = {ns.node: ns.pickable for ns in self.wms.stock(sku)}
            for (s, node), qty in need.items():
                if s == sku and pickable.get(node, 0.0) + 1e-9 < qty:
                    raise StockConflict(
                        f"{sku}@{node}: {qty:g} to allocate but only {pickable.get(node, 0.0):g} pickable now"
                    )

    def _apply(self, decision: Decision, action: Action, actor: str) -> None:
        if self.store.action_done(action.idempotency_key):
            return
        try:
            result = self.ports[action.system].apply(action)
        except Exception:
            ACTIONS.labels(action=action.name, result="error").inc()
            raise
        self.store.record_action(action.idempotency_key, decision.id, action.name, result)
        self.store.append_audit(
            "action.executed",
            decision.subject,
            actor,
            {
                "decision": decision.id,
                "action": action.name,
                "idempotency_key": action.idempotency_key,
                "payload": action.payload,
            },
            dedup_key=f"action:{action.idempotency_key}",
        )
        ACTIONS.labels(action=action.name, result="ok").inc()
