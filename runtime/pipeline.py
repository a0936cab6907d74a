"""The job handler: event → supervisor → specialist → governance gate → store → executor.

Order of effects, chosen so that a crash anywhere is recoverable by redelivery:
1. decide under the SKU locks and record every decision through the decision service
   (``runtime.lifecycle``: insert-once ids derived from the event, one live proposal per
   subject), then mark the job ``decided``;
2. execute the decisions the gate let through; each action is idempotent.
A redelivered job that was already decided resumes execution instead of deciding again,
so a half-executed decision is finished, never replaced.

In LLM mode the agent's judgement is a job of its own (``crossdock.agent.judge``) on the
background lane (``runtime.queue``): the event's job decides, executes and finishes without
waiting for a model, and no order waits behind one. The judgement job runs the agent without
locks; what it proposes is recorded and executed under the locks, and only if the orders it is
about did not move since the engines decided.

A tick (``crews.backlog``) runs in bounded slices (``_sliced``): each takes only its own locks,
decides, records and executes, then lets them go, so an order on one of the backlog's SKUs waits
for one slice, not for the whole tick. Its progress is kept in the job, so a redelivered tick
finishes what was recorded and goes on with what was not, never deciding a slice twice.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import structlog

from connectors.ports import OmsPort
from crews.backlog import WAVE_PLAN_LOCK, BacklogSpecialist, Slice
from crews.judgement import judgement_reason
from crews.redecide import ORDER_WORKFLOWS
from crews.supervisor import Specialist, route
from domain.context import OrderView
from domain.decisions import Decision, Proposal, decision_id
from domain.events import AGENT_JUDGE, CREW_TRIAGE, CloudEvent
from domain.models import Policy
from runtime.executor import Executor
from runtime.lifecycle import DecisionService, execution_locks
from runtime.locks import StockLocks
from runtime.queue import JobQueue
from runtime.shadow import keep_event, proposal_of
from runtime.store import Store
from tools.context import Systems
from tools.premises import moved, read_facts
from tools.recording import RecordingSystems

log = structlog.get_logger("crossdock.pipeline")
ACTOR = "crossdock-engine"


# The LLM path (``runtime.bootstrap.agent_judge``): given the event and the engines' proposals, an
# agent's extra proposals (gated like any other) and rejected agent outputs (stored, never executed).
Judge = Callable[[CloudEvent, list[Proposal]], list[Any]]


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
        self.decisions = DecisionService(store, systems, executor, locks)

    def handle(self, job_id: str, job: dict[str, str]) -> list[str]:
        event = CloudEvent.model_validate_json(job["event"])
        with structlog.contextvars.bound_contextvars(event_id=event.id, event_type=event.type):
            if event.type == CREW_TRIAGE:
                return self._crew_triage(job_id, job, event)
            if event.type == AGENT_JUDGE:
                return self._judgement(job_id, job, event)
            return self._handle(job_id, job, event)

    def _accepted(self, job_id: str, event: CloudEvent) -> dict[str, Any]:
        """The event's ``event.accepted`` audit entry (once per event key)."""
        return {
            "kind": "event.accepted",
            "subject": event.subject or event.id,
            "actor": f"source:{event.source}",
            "payload": {"event_id": event.id, "source": event.source, "type": event.type, "job_id": job_id},
            "dedup_key": f"event:{event.key}",
        }

    def _handle(self, job_id: str, job: dict[str, str], event: CloudEvent) -> list[str]:
        accepted_at = float(job.get("accepted_at") or time.time())
        policy = self.store.get_policy()
        specialist = route(event.type, policy)
        if job.get("decided"):  # a redelivery resumes: execute what was decided, never decide again
            self.store.append_audit(**self._accepted(job_id, event))
            done = self._resume(job["decided"], specialist)
            if self.judge is not None and not job.get("judgement_job"):
                # The worker died between executing and queueing the judgement: queue it now.
                self._maybe_ask(job_id, event, [proposal_of(d) for d in self._stored(job["decided"])], accepted_at)
            return done
        if isinstance(specialist, BacklogSpecialist):
            return self._sliced(job_id, job, event, specialist, policy, accepted_at)
        when = datetime.fromtimestamp(accepted_at, UTC)
        # The orders the proposal reads are not read again to be recorded with its decisions.
        orders = _OrdersRead(self.systems.oms)
        live = dataclasses.replace(self.systems, oms=cast(OmsPort, orders))
        # Every read the decision makes is kept with the event, for the engine replay (runtime.shadow).
        recorder = RecordingSystems(live) if self.store.record_reads else None
        seen = recorder.systems if recorder is not None else live
        with self.locks.hold(specialist.lock_keys(event, seen)):
            proposals = specialist.propose(event, seen)
            # The event's acceptance, its decisions and their audit entries, and the event kept with
            # its reads (all made by now: only the proposal reads through the recorder): one
            # transaction, which opens at the first write (the reads of recording a decision come
            # before it).
            with self.store.batch() as batch:
                batch.audit_when_open(**self._accepted(job_id, event))
                decisions = self._record(
                    job_id, event, proposals, specialist, policy, when, first_index=0, systems=live
                )
                if recorder is not None:
                    keep_event(self.store, event, when, recorder.reads(), proposals, decisions)
            self.queue.set_fields(job_id, decided=[d.id for d in decisions])
            self.decisions.settle(decisions, ACTOR, verify_stock=specialist.verify_stock, first=True)
            if self.judge is not None:
                self._maybe_ask(job_id, event, proposals, accepted_at)
        return [d.id for d in decisions]

    def _sliced(
        self,
        job_id: str,
        job: dict[str, str],
        event: CloudEvent,
        specialist: BacklogSpecialist,
        policy: Policy,
        accepted_at: float,
    ) -> list[str]:
        """A tick in bounded slices (``BacklogSpecialist.slices``): each locks what it needs,
        decides, records, executes and lets its locks go before the next one is planned.

        Progress is kept in the job: ``tick_index`` (the next decision index, reserved before a
        slice records anything, so no two proposals of a tick ever get one id), ``tick_ids`` (the
        decisions recorded so far) and ``tick_done`` (the stages finished). A redelivered tick first
        executes what the killed run recorded and left executing (found by its job id, so a
        decision recorded just before the kill is found too), then goes on with the stages it had
        not finished. Its reads are then only the second run's: it is not kept for replay."""
        when = datetime.fromtimestamp(accepted_at, UTC)
        resumed = "tick_index" in job
        index = int(job.get("tick_index") or 0)
        ids: list[str] = json.loads(job.get("tick_ids") or "[]")
        finished: list[str] = json.loads(job.get("tick_done") or "[]")
        if resumed:
            self.store.append_audit(**self._accepted(job_id, event))
            left = [d.id for d in self.store.list_decisions(job_id=job_id, limit=10_000) if d.event_id == event.id]
            ids += [i for i in left if i not in ids]
            self._resume(json.dumps(ids), specialist)
        recorder = RecordingSystems(self.systems) if self.store.record_reads and not resumed else None
        seen = recorder.systems if recorder is not None else self.systems
        proposals: list[Proposal] = []
        decided: list[Decision] = []
        stage: str | None = None
        for piece in specialist.slices(event, seen, skip=frozenset(finished)):
            if stage is not None and piece.stage != stage:
                finished.append(stage)
                self.queue.set_fields(job_id, tick_done=finished)
            stage = piece.stage
            made, decisions = self._slice(job_id, event, piece, specialist, policy, when, index, first=not ids)
            index += len(made)
            ids += [d.id for d in decisions]
            self.queue.set_fields(job_id, tick_ids=ids)
            proposals += made
            decided += decisions
        if stage is not None:
            finished.append(stage)
        self.queue.set_fields(job_id, tick_done=finished, decided=ids)
        if self.judge is not None and not job.get("judgement_job"):
            asked = proposals if not resumed else [proposal_of(d) for d in self._stored(json.dumps(ids))]
            self._maybe_ask(job_id, event, asked, accepted_at)
        if recorder is not None:
            keep_event(self.store, event, when, recorder.reads(), proposals, decided)
        return ids

    def _slice(
        self,
        job_id: str,
        event: CloudEvent,
        piece: Slice,
        specialist: BacklogSpecialist,
        policy: Policy,
        when: datetime,
        index: int,
        first: bool,
    ) -> tuple[list[Proposal], list[Decision]]:
        """One slice. A locked one decides, records and executes under its keys; an unlocked one
        (the sweeps) reads and decides with no lock, then records and executes under the locks its
        proposals' actions need (``proposal_locks``)."""
        started = time.monotonic()
        if piece.locked:
            keys = piece.keys
            with self.locks.hold(keys):
                made = piece.decide()
                decisions = self._commit(job_id, event, made, specialist, policy, when, index, first)
        else:
            made = piece.decide()
            keys = proposal_locks(made)
            with self.locks.hold(keys):
                decisions = self._commit(job_id, event, made, specialist, policy, when, index, first)
        log.info(
            "tick.slice",
            stage=piece.stage,
            locks=len(keys),
            ms=round((time.monotonic() - started) * 1000, 1),
            proposals=len(made),
            decisions=len(decisions),
        )
        return made, decisions

    def _commit(
        self,
        job_id: str,
        event: CloudEvent,
        made: list[Proposal],
        specialist: BacklogSpecialist,
        policy: Policy,
        when: datetime,
        index: int,
        first: bool,
    ) -> list[Decision]:
        """Record a slice's proposals (their indexes reserved in the job first) and execute them."""
        self.queue.set_fields(job_id, tick_index=index + len(made))
        with self.store.batch() as batch:
            if first:
                batch.audit_when_open(**self._accepted(job_id, event))
            decisions = self._record(job_id, event, made, specialist, policy, when, first_index=index)
        self.decisions.settle(decisions, ACTOR, verify_stock=specialist.verify_stock, first=True)
        return decisions

    def _maybe_ask(self, job_id: str, event: CloudEvent, proposals: list[Proposal], accepted_at: float) -> None:
        if judgement_reason(event, proposals):
            self._ask_agent(job_id, event, proposals, accepted_at, self._order_facts(proposals))

    def _ask_agent(
        self, job_id: str, event: CloudEvent, proposals: list[Proposal], accepted_at: float, before: dict[str, Any]
    ) -> None:
        """Queue the agent's judgement of this event as its own background job. Its id derives from
        the event's, so a redelivered event job queues it once."""
        ask = CloudEvent.model_validate(
            {
                "specversion": "1.0",
                "id": f"judge:{event.key}",
                "source": "crossdock/agents",
                "type": AGENT_JUDGE,
                "subject": event.subject,
                "data": {
                    "event": event.model_dump(mode="json"),
                    "proposals": [p.model_dump(mode="json") for p in proposals],
                    "before": before,
                    "job_id": job_id,
                    "accepted_at": accepted_at,
                },
            }
        )
        [queued] = self.queue.enqueue_many([(ask.key, ask.type, ask.model_dump_json(), repr(time.time()))])
        self.queue.set_fields(job_id, judgement_job=queued.job_id)

    def _judgement(self, job_id: str, job: dict[str, str], ask: CloudEvent) -> list[str]:
        """The agent's judgement of an event the engines already decided (``_ask_agent``). Its
        decisions carry the event's job id, so the event's job lists them once they exist."""
        if job.get("decided"):  # a redelivery resumes: execute what was decided, never ask again
            return self._resume(job["decided"], route(ask.data["event"]["type"], self.store.get_policy()))
        if self.judge is None:  # this worker has no model: another one with a model must take it
            raise RuntimeError("an agent judgement reached a worker with no model (set CROSSDOCK_LLM_MODEL)")
        event = CloudEvent.model_validate(ask.data["event"])
        proposals = [Proposal.model_validate(p) for p in ask.data["proposals"]]
        policy = self.store.get_policy()
        specialist = route(event.type, policy)
        when = datetime.fromtimestamp(float(ask.data["accepted_at"]), UTC)
        with structlog.contextvars.bound_contextvars(judged_event_id=event.id):
            decisions = self._judged(
                str(ask.data["job_id"]), event, proposals, specialist, policy, when, ask.data["before"]
            )
        self.queue.set_fields(job_id, decided=[d.id for d in decisions])
        return [d.id for d in decisions]

    def _resume(self, ids: str, specialist: Specialist) -> list[str]:
        decisions = self._stored(ids)
        for decision in decisions:
            with self.locks.hold(execution_locks(decision)):
                self.decisions.execute(decision, ACTOR, verify_stock=specialist.verify_stock)
        return [d.id for d in decisions]

    def _stored(self, ids: str) -> list[Decision]:
        stored = [self.store.get_decision(i) for i in json.loads(ids)]
        return [d for d in stored if d is not None]

    def _record(
        self,
        job_id: str,
        event: CloudEvent,
        proposals: list[Proposal],
        specialist: Specialist,
        policy: Policy,
        accepted_at: datetime,
        first_index: int,
        systems: Systems | None = None,
    ) -> list[Decision]:
        out = []
        for i, proposal in enumerate(proposals, start=first_index):
            engine = str(proposal.evidence.get("engine", ""))
            decision = self.decisions.record(
                proposal,
                policy,
                decision_id(event.key, proposal.workflow, i),
                # An agent's proposal is recorded as the agent's, so a planner sees who proposed it.
                actor=engine if engine.startswith("agent:") else ACTOR,
                default_engine=specialist.workflow,
                event_id=event.id,
                job_id=job_id,
                accepted_at=accepted_at,
                systems=systems,
            )
            if decision is not None:
                out.append(decision)
        return out

    def _order_facts(self, proposals: list[Proposal]) -> dict[str, Any]:
        subjects = sorted({p.subject for p in proposals if p.workflow in ORDER_WORKFLOWS})
        return {s: self._order_facts_of(s) for s in subjects}

    def _judged(
        self,
        job_id: str,
        event: CloudEvent,
        proposals: list[Proposal],
        specialist: Specialist,
        policy: Policy,
        accepted_at: datetime,
        before: dict[str, Any],
    ) -> list[Decision]:
        """Ask the agent outside the locks; record what it proposes under them, unless the orders
        it judged moved since the engines decided (then its proposals are stored as rejected,
        never executed). ``job_id`` is the event's job."""
        assert self.judge is not None
        extras = self.judge(event, proposals)
        agent = [x for x in extras if isinstance(x, Proposal)]
        rejected = [x for x in extras if not isinstance(x, Proposal)]
        decisions: list[Decision] = []
        if agent:
            keys = set(specialist.lock_keys(event, self.systems))
            keys |= {f"sku:{a.payload['sku']}" for p in agent for a in p.actions if a.payload.get("sku")}
            with self.locks.hold(sorted(keys)):
                reasons = [r for s, facts in before.items() for r in moved(facts, self._order_facts_of(s))]
                if reasons:
                    rejected += [_stale_agent(p, reasons) for p in agent]
                else:
                    decisions = self._record(
                        job_id, event, agent, specialist, policy, accepted_at, first_index=len(proposals)
                    )
                    self.decisions.settle(decisions, ACTOR, verify_stock=specialist.verify_stock)
        for j, r in enumerate(rejected):
            record = r.to_decision(
                decision_id(event.key, f"agent-rejected:{r.workflow}", j), event_id=event.id, job_id=job_id
            )
            if not self.store.save_decision(record):
                record = self.store.get_decision(record.id) or record
            decisions.append(record)
        return decisions

    def _order_facts_of(self, subject: str) -> dict[str, Any]:
        return read_facts(self.systems, "order_release", subject, [], orders_only=True)

    def _crew_triage(self, job_id: str, job: dict[str, str], event: CloudEvent) -> list[str]:
        """A planner's triage crew (``POST /v1/crews/triage``): engine first for every exception,
        then the hierarchical agent crew when a model is configured; all gated, stored, executed."""
        from crews.triage_crew import ACTOR as CREW_ACTOR
        from crews.triage_crew import OpenException, triage_batch

        policy = self.store.get_policy()
        requested_by = str(event.data.get("requested_by", "planner"))
        if job.get("decided"):  # a redelivery resumes: execute what was decided, never decide again
            decisions = self._stored(job["decided"])
        else:
            items = [OpenException.model_validate(x) for x in event.data.get("exceptions", [])]
            # The mode is the worker's: it is the process that has (or has not) a model.
            if self.agents is not None:
                self.queue.set_fields(job_id, mode="llm", model=self.agents.model_name)
            else:
                self.queue.set_fields(job_id, mode="deterministic", model="")
            decisions = triage_batch(
                items, self.systems, policy, self.decisions, job_id=job_id, runtime=self.agents, hold=self.locks.hold
            )
            self.queue.set_fields(job_id, decided=[d.id for d in decisions])
        with self.locks.hold(sorted({k for d in decisions for k in execution_locks(d)})):
            self.decisions.settle(decisions, CREW_ACTOR, verify_stock=policy.policy != "baseline")
        self.store.append_audit(
            "crew.triage.finished",
            job_id,
            CREW_ACTOR,
            {"job_id": job_id, "requested_by": requested_by, "decisions": [d.id for d in decisions]},
            dedup_key=f"crew:{job_id}",
        )
        return [d.id for d in decisions]

    def maintain(self, resume_after_s: float = 60.0, give_up_s: float = 900.0) -> int:
        """The worker's periodic duty: finish (or undo) decisions left executing."""
        return len(self.decisions.resume_stuck(resume_after_s, give_up_s))


class _OrdersRead:
    """An OMS port that answers an order it has read already with that read (a copy of it): within
    one job under its locks, the facts a decision keeps about its order (to restore its status if the
    execution is undone) are the order the proposal just read, not a second request. Everything
    else goes to the port."""

    def __init__(self, port: OmsPort) -> None:
        self._port = port
        self._orders: dict[str, OrderView] = {}

    def order(self, order_id: str) -> OrderView:
        known = self._orders.get(order_id)
        if known is not None:
            return known.model_copy(deep=True)
        view = self._port.order(order_id)
        self._orders[order_id] = view.model_copy(deep=True)
        return view

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


def proposal_locks(proposals: list[Proposal]) -> list[str]:
    """The locks proposals made without locks (a tick's sweeps) are recorded and executed under:
    the SKU of every action that names one (a stock correction, a transfer, a released
    reservation) and the wave planner's lock for a wave."""
    keys = {f"sku:{a.payload['sku']}" for p in proposals for a in p.actions if isinstance(a.payload.get("sku"), str)}
    if any(a.name == "wms.create_wave" for p in proposals for a in p.actions):
        keys.add(WAVE_PLAN_LOCK)
    return sorted(keys)


def _stale_agent(p: Proposal, reasons: list[str]) -> Any:
    from agents.proposals import RejectedProposal

    return RejectedProposal(
        agent=str(p.evidence.get("engine", "agent")).removeprefix("agent:"),
        workflow=p.workflow,
        subject=p.subject,
        reason="the facts moved while the agent ran: " + "; ".join(reasons),
        evidence={"stale": reasons},
    )
