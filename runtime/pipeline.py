"""The job handler: event → supervisor → specialist → governance gate → store → executor.

Order of effects, chosen so that a crash anywhere is recoverable by redelivery:
1. decide under the SKU locks and save every decision (insert-once, ids derived from
   the event), then mark the job ``decided``;
2. execute the decisions the gate let through; each action is idempotent.
A redelivered job that was already decided resumes execution instead of deciding again,
so a half-executed decision is finished, never replaced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from crews.supervisor import Specialist, route
from domain.decisions import Decision, Proposal, decision_id
from domain.events import CREW_TRIAGE, CloudEvent
from domain.governance import gated_decision
from domain.models import Settings as Policy
from runtime.executor import Executor
from runtime.locks import StockLocks
from runtime.metrics import DECISION_LATENCY, DECISIONS
from runtime.order_changes import fail_if_waved, order_change_locks
from runtime.queue import JobQueue
from runtime.store import Store
from tools.context import Systems

log = structlog.get_logger("crossdock.pipeline")
ACTOR = "crossdock-engine"


# The LLM path (``runtime.bootstrap.agent_judge``): given the event and the engines' proposals, an
# agent's extra proposals (gated like any other) and rejected agent outputs (stored, never executed).
Judge = Callable[[CloudEvent, list[Proposal]], list[Any]]


def execution_locks(decision: Decision) -> list[str]:
    """The SKU locks a decision executes under outside its event: the SKUs it allocates, and for an
    order change (a chat cancel or line change) the order's SKUs, so waves are checked again safely."""
    keys = {f"sku:{a.payload['sku']}" for a in decision.actions if a.name == "oms.allocate"}
    return sorted(keys | set(order_change_locks(decision)))


class Pipeline:
    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        systems: Systems,
        executor: Executor,
        locks: StockLocks,
        judge: Judge | None = None,
        agents: Any = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.systems = systems
        self.executor = executor
        self.locks = locks
        self.judge = judge
        # The agent runtime (``crews.agent_runtime.AgentRuntime``) in LLM mode, else None: the
        # planner's triage crews run their agents with it.
        self.agents = agents

    def handle(self, job_id: str, job: dict[str, str]) -> list[str]:
        event = CloudEvent.model_validate_json(job["event"])
        if event.type == CREW_TRIAGE:
            return self._crew_triage(job_id, job, event)
        accepted_at = float(job.get("accepted_at") or time.time())
        self.store.append_audit(
            "event.accepted",
            event.subject or event.id,
            f"source:{event.source}",
            {"event_id": event.id, "source": event.source, "type": event.type, "job_id": job_id},
            dedup_key=f"event:{event.key}",
        )
        policy = self.store.get_policy()
        specialist = route(event.type, policy)
        with self.locks.hold(specialist.lock_keys(event, self.systems)):
            decisions = self._decide(job_id, job, event, specialist, policy, accepted_at)
            for decision in decisions:
                if decision.status == "executing":
                    self.executor.execute(decision, ACTOR, verify_stock=specialist.verify_stock)
        return [d.id for d in decisions]

    def _crew_triage(self, job_id: str, job: dict[str, str], event: CloudEvent) -> list[str]:
        """A planner's triage crew (``POST /v1/crews/triage``): engine first for every exception,
        then the hierarchical agent crew when a model is configured; all gated, stored, executed."""
        from crews.triage_crew import ACTOR as CREW_ACTOR
        from crews.triage_crew import OpenException, triage_batch

        policy = self.store.get_policy()
        requested_by = str(event.data.get("requested_by", "planner"))
        if job.get("decided"):  # a redelivery resumes: execute what was decided, never decide again
            stored = [self.store.get_decision(i) for i in json.loads(job["decided"])]
            decisions = [d for d in stored if d is not None]
        else:
            items = [OpenException.model_validate(x) for x in event.data.get("exceptions", [])]
            # The mode is the worker's: it is the process that has (or has not) a model.
            if self.agents is not None:
                self.queue.set_fields(job_id, mode="llm", model=self.agents.model_name)
            else:
                self.queue.set_fields(job_id, mode="deterministic", model="")
            decisions = triage_batch(
                items, self.systems, policy, self.store, job_id=job_id, runtime=self.agents, hold=self.locks.hold
            )
            self.queue.set_fields(job_id, decided=[d.id for d in decisions])
        for decision in decisions:
            if decision.status == "executing":
                with self.locks.hold(execution_locks(decision)):
                    self.executor.execute(decision, CREW_ACTOR, verify_stock=policy.policy != "baseline")
        self.store.append_audit(
            "crew.triage.finished",
            job_id,
            CREW_ACTOR,
            {"job_id": job_id, "requested_by": requested_by, "decisions": [d.id for d in decisions]},
            dedup_key=f"crew:{job_id}",
        )
        return [d.id for d in decisions]

    def _decide(
        self,
        job_id: str,
        job: dict[str, str],
        event: CloudEvent,
        specialist: Specialist,
        policy: Policy,
        accepted_at: float,
    ) -> list[Decision]:
        if job.get("decided"):
            stored = [self.store.get_decision(i) for i in json.loads(job["decided"])]
            return [d for d in stored if d is not None]
        proposals = specialist.propose(event, self.systems)
        rejected: list[Any] = []
        if self.judge is not None:
            # Agent proposals come beside the engines', never instead of them, and pass the same gate.
            for extra in self.judge(event, proposals):
                (proposals if isinstance(extra, Proposal) else rejected).append(extra)
        decisions = []
        for i, proposal in enumerate(proposals):
            did = decision_id(event.key, proposal.workflow, i)
            engine = str(proposal.evidence.get("engine", ""))
            decision = gated_decision(
                proposal,
                policy,
                did,
                # An agent's proposal is recorded as the agent's, so a planner sees who proposed it.
                actor=engine if engine.startswith("agent:") else ACTOR,
                default_engine=specialist.workflow,
                event_id=event.id,
                job_id=job_id,
                accepted_at=datetime.fromtimestamp(accepted_at, UTC),
            )
            if self.store.save_decision(decision):
                DECISIONS.labels(workflow=decision.workflow, outcome=decision.outcome, status=decision.status).inc()
                DECISION_LATENCY.observe(max(0.0, (decision.decided_at or datetime.now(UTC)).timestamp() - accepted_at))
                self.store.append_audit(
                    "decision.recorded",
                    decision.subject,
                    ACTOR,
                    {
                        "decision": did,
                        "outcome": decision.outcome,
                        "status": decision.status,
                        "confidence": decision.confidence,
                        "gate": decision.evidence["governance"],
                    },
                    dedup_key=f"decision:{did}",
                )
                log.info(
                    "decision.recorded",
                    decision_id=did,
                    event_id=event.id,
                    job_id=job_id,
                    outcome=decision.outcome,
                    status=decision.status,
                )
            else:
                decision = self.store.get_decision(did) or decision
            decisions.append(decision)
        for j, r in enumerate(rejected):
            record = r.to_decision(
                decision_id(event.key, f"agent-rejected:{r.workflow}", j), event_id=event.id, job_id=job_id
            )
            if not self.store.save_decision(record):
                record = self.store.get_decision(record.id) or record
            decisions.append(record)
        self.queue.set_fields(job_id, decided=[d.id for d in decisions])
        return decisions

    def approve(self, decision_id_: str, actor: str) -> Decision | None:
        """Execute a pending decision once: the first approval wins, later ones get None."""
        decision = self.store.get_decision(decision_id_)
        if decision is None:
            return None
        policy = self.store.get_policy()
        with self.locks.hold(execution_locks(decision)):
            claimed = self.store.transition(decision_id_, to="executing", from_={"pending_review"}, actor=actor)
            if claimed is None:
                return None
            self.store.append_audit("decision.approved", decision.subject, actor, {"decision": decision_id_})
            failed = fail_if_waved(self.store, self.systems.wms, claimed, actor)
            if failed is not None:
                return failed
            return self.executor.execute(claimed, actor, verify_stock=policy.policy != "baseline")

    def reject(self, decision_id_: str, actor: str, reason: str | None) -> Decision | None:
        rejected = self.store.transition(
            decision_id_, to="rejected", from_={"pending_review"}, actor=actor, error=reason
        )
        if rejected is not None:
            self.store.append_audit(
                "decision.rejected", rejected.subject, actor, {"decision": decision_id_, "reason": reason}
            )
        return rejected
