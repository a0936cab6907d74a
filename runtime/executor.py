"""Executor: the one place that turns an approved decision into connector writes.

Each action is sent with its idempotency key and recorded in the action log; an action
already in the log is skipped, and the system itself deduplicates on the key, so a
decision executed twice (redelivery, double-click on approve) applies every action once.

The action log is written when the execution ends, in the transaction that moves the decision to
``executed`` and appends its audit entries (``Store.batch``): one transaction for the whole
execution, not two per action. An execution that stops early writes what it applied before the
error goes on (a failure before compensating, a retryable error before it propagates). Only a
crash between two applies leaves applied actions out of the log; the resume sends them again with
the same keys, the systems answer with their first result and change nothing, and since a
resumed execution cannot tell which allocations the dead one made, its stock check counts an
allocation the order already holds at that node as made.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import structlog

from connectors.ports import ErpPort, NotifyPort, OmsPort, WmsPort, stock_of
from domain.context import OrderView
from domain.decisions import Action, Decision
from domain.errors import ConnectorError, PermanentConnectorError, StockConflict, UnknownOrder
from runtime.metrics import ACTIONS
from runtime.store import Store

log = structlog.get_logger("crossdock.executor")


class Executor:
    def __init__(self, store: Store, wms: WmsPort, erp: ErpPort, oms: OmsPort, notify: NotifyPort) -> None:
        self.store = store
        self.wms = wms
        self.ports: dict[str, Any] = {"wms": wms, "erp": erp, "oms": oms, "notify": notify}

    def execute(self, decision: Decision, actor: str, verify_stock: bool = True, *, first: bool = False) -> Decision:
        """Apply the decision's actions (status must be ``executing``); ends executed or failed.

        All or nothing: when an action is refused for good (or stock moved), the actions already
        applied are compensated in reverse order and the decision ends ``failed`` with the reason
        and what was undone. A connector error worth a retry propagates and leaves the decision
        ``executing``: the queue, a second approval or the worker's resume sweep finishes it.
        ``first``: no earlier execution of this decision can have applied anything (it was recorded
        or approved just now); otherwise this may resume one that died (see the module docstring).
        """
        applied: list[tuple[Action, dict[str, Any]]] = []
        try:
            if verify_stock:
                self.verify_stock(decision, resumed=not first, fresh=first)
            for action in decision.actions:
                # A first execution has nothing in the action log: no look-up per action.
                self._apply(decision, action, actor, applied, logged=not first)
        except (PermanentConnectorError, StockConflict) as exc:
            return self.fail(decision, actor, str(exc), applied)
        except BaseException:
            self._log(decision, actor, applied)  # a retry must know what is applied
            raise
        with self.store.batch():
            done = self.store.transition(decision.id, to="executed", from_={"executing"}, actor=actor)
            executed = {
                "kind": "decision.executed",
                "subject": decision.subject,
                "actor": actor,
                "payload": {"decision": decision.id},
                "dedup_key": f"executed:{decision.id}",
            }
            # The chain gets the actions, then (if it moved) the decision's ``decision.executed``.
            self._log(decision, actor, applied, then=[executed] if done is not None else [])
        return done or self.store.get_decision(decision.id) or decision

    def fail(
        self, decision: Decision, actor: str, error: str, applied: list[tuple[Action, dict[str, Any]]] | None = None
    ) -> Decision:
        """Undo what a decision applied (the log, and ``applied`` not logged yet), then mark it failed
        with the reason and the undo record."""
        self._log(decision, actor, applied or [])
        undone = self.compensate(decision, actor)
        with self.store.batch():
            failed = self.store.transition(
                decision.id, to="failed", from_={"executing"}, actor=actor, error=error, undone=undone
            )
            self.store.append_audit(
                "decision.failed", decision.subject, actor, {"decision": decision.id, "error": error, "undone": undone}
            )
        log.warning("decision.failed", decision_id=decision.id, error=error, undone=len(undone))
        return failed or self.store.get_decision(decision.id) or decision

    def _log(
        self,
        decision: Decision,
        actor: str,
        applied: list[tuple[Action, dict[str, Any]]],
        then: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record applied actions in the action log and the audit chain, in apply order, followed in
        the chain by the entries ``then``, in one transaction (the caller's batch, if one is open):
        one statement for the action log's rows, two for the audit entries (their dedup keys looked
        up at once, their rows inserted at once). ``applied`` is emptied."""
        entries = [_executed(decision, action, actor) for action, _ in applied] + list(then or [])
        if not entries:
            return
        with self.store.batch():
            self.store.record_actions([(a.idempotency_key, decision.id, a.name, result) for a, result in applied])
            self.store.append_audits(entries)
        del applied[:]

    def compensate(self, decision: Decision, actor: str) -> list[dict[str, Any]]:
        """Reverse the decision's applied actions, newest first; each entry says what happened."""
        applied = {row["idempotency_key"]: row for row in self.store.actions_of(decision.id)}
        record: list[dict[str, Any]] = []
        for action in reversed(decision.actions):
            row = applied.get(action.idempotency_key)
            if row is None:
                continue
            undo = compensation(action, row["result"] or {}, decision.facts)
            if undo is None:
                record.append({"action": action.name, "undone": False, "why": "no undo for this action"})
                continue
            undo = undo.model_copy(update={"idempotency_key": f"undo-{action.idempotency_key}"})
            try:
                self._apply(decision, undo, actor)
            except ConnectorError as exc:
                record.append({"action": action.name, "undone": False, "why": str(exc)})
                continue
            record.append({"action": action.name, "undone": True, "by": undo.name})
        return record

    def verify_stock(self, decision: Decision, resumed: bool = False, fresh: bool = False) -> None:
        """Refuse to allocate more than is pickable now (stock may have moved since the proposal).

        ``resumed``: an earlier execution may have made allocations it did not live to log; one
        the order already holds (that line, that node, at least that quantity) counts as made.
        ``fresh``: no execution of the decision ran before, so the action log holds none of its
        actions (not looked up). The SKUs' stock is one bulk read (``connectors.ports.stock_of``)."""
        need: dict[tuple[str, str], float] = defaultdict(float)
        orders: dict[str, OrderView | None] = {}
        for action in decision.actions:
            if action.name != "oms.allocate" or (not fresh and self.store.action_done(action.idempotency_key)):
                continue
            if resumed and self._holds(action, orders):
                continue
            need[(action.payload["sku"], action.payload["node"])] += float(action.payload["qty"])
        stock = stock_of(self.wms, sorted({sku for sku, _ in need}))
        for sku, rows in stock.items():
            pickable = {ns.node: ns.pickable for ns in rows}
            for (s, node), qty in need.items():
                if s == sku and pickable.get(node, 0.0) + 1e-9 < qty:
                    raise StockConflict(
                        f"{sku}@{node}: {qty:g} to allocate but only {pickable.get(node, 0.0):g} pickable now"
                    )

    def _holds(self, action: Action, orders: dict[str, OrderView | None]) -> bool:
        """Whether the order already holds this allocation (its line has at least its quantity at
        its node): a resumed execution's sign that the dead one made it."""
        order_id = str(action.payload.get("order_id"))
        if order_id not in orders:
            try:
                orders[order_id] = self.ports["oms"].order(order_id)
            except UnknownOrder:
                orders[order_id] = None
        view = orders[order_id]
        if view is None:
            return False
        held = sum(
            a.qty
            for ln in view.lines
            if ln.line == action.payload.get("line")
            for a in ln.allocations
            if a.node == action.payload.get("node")
        )
        return held + 1e-9 >= float(action.payload["qty"])

    def _apply(
        self,
        decision: Decision,
        action: Action,
        actor: str,
        applied: list[tuple[Action, dict[str, Any]]] | None = None,
        logged: bool = True,
    ) -> None:
        """Send one action (unless the log has it; ``logged=False``: it cannot, not looked up); log
        it now, or add it to ``applied`` to be logged with the rest of the execution."""
        if logged and self.store.action_done(action.idempotency_key):
            return
        try:
            result = self.ports[action.system].apply(action)
        except Exception:
            ACTIONS.labels(action=action.name, result="error").inc()
            raise
        ACTIONS.labels(action=action.name, result="ok").inc()
        log.info("action.applied", action=action.name, idempotency_key=action.idempotency_key)
        if applied is not None:
            applied.append((action, result))
            return
        with self.store.batch():
            self._record(decision, action, actor, result)

    def _record(self, decision: Decision, action: Action, actor: str, result: dict[str, Any]) -> None:
        self.store.record_action(action.idempotency_key, decision.id, action.name, result)
        self.store.append_audit(**_executed(decision, action, actor))


def _executed(decision: Decision, action: Action, actor: str) -> dict[str, Any]:
    """The ``action.executed`` audit entry of an applied action (``Store.append_audit``'s arguments)."""
    return {
        "kind": "action.executed",
        "subject": decision.subject,
        "actor": actor,
        "payload": {
            "decision": decision.id,
            "action": action.name,
            "idempotency_key": action.idempotency_key,
            "payload": action.payload,
        },
        "dedup_key": f"action:{action.idempotency_key}",
    }


def compensation(action: Action, result: dict[str, Any], facts: dict[str, Any]) -> Action | None:
    """The action that undoes ``action`` (given what the system answered), or None if none exists."""
    p = action.payload
    if action.name == "oms.allocate":
        keep = ("order_id", "line", "node", "qty", "sku")
        return Action(system="oms", type="release_allocation", payload={k: p[k] for k in keep if k in p})
    if action.name == "wms.create_wave" and p.get("waveId"):
        return Action(system="wms", type="cancel_wave", payload={"waveId": p["waveId"]})
    if action.name == "wms.create_transfer" and result.get("transfer_id"):
        return Action(system="wms", type="cancel_transfer", payload={"transfer_id": result["transfer_id"]})
    if action.name == "wms.create_task" and result.get("task_id"):
        return Action(system="wms", type="cancel_task", payload={"task_id": result["task_id"]})
    if action.name == "erp.post_adjustment" and p.get("qty_delta") is not None:
        return Action(
            system="erp", type="post_adjustment", payload={**p, "qty_delta": -float(p["qty_delta"]), "reason": "undo"}
        )
    if action.name == "oms.update_order_status" and p.get("order_id"):
        was = (facts.get("orders", {}).get(str(p["order_id"])) or {}).get("status")
        if was and was != p.get("status"):
            return Action(system="oms", type="update_order_status", payload={"order_id": p["order_id"], "status": was})
    return None
