"""The decision service: gate → save → audit → execute, once, for every path that decides.

The pipeline (events and ticks), the chat and the planner's triage crew record decisions here,
and a planner's approve and reject go through here too, so the lifecycle holds everywhere:

* **One live proposal per (workflow, subject).** A newer proposal supersedes the live one (in one
  transaction, linked both ways, audited); a proposal identical to the live one (the same actions
  on facts that still hold) is not recorded again; a plan a planner rejected is not proposed again
  on the same facts.
* **Approval re-checks what the proposal stood on** (``tools.premises``) under the execution
  locks. Facts that moved make the approval ``stale``: nothing executes and the subject is decided
  again at once.
* **Execution finishes or undoes** (``runtime.executor``): a permanent failure compensates what
  was applied; a transient one leaves the decision ``executing`` for a second approval or the
  worker's resume sweep, which gives up (and undoes) after ``give_up_s``.
* **Few transactions.** A decision is stored with its audit entries in one transaction
  (``Store.batch``; the pipeline adds the event's ``event.accepted`` entry to it), and its
  execution's action log, final transition and audit entries go in one more (``runtime.executor``).
* **A rejection leads somewhere**: the subject is decided again with the rejected plan's nodes
  excluded; with nothing else to offer it waits in ``awaiting_planner``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog

from crews.backlog import WAVE_PLAN_LOCK
from crews.redecide import nodes_of, redecide
from domain.decisions import Action, Decision, Proposal, decision_id, plan_signature, with_idempotency_keys
from domain.errors import ConnectorError
from domain.governance import gate, gated_decision
from domain.models import Policy
from knowledge.citations import cite_sop  # the shipped SOPs are reference data (parsed, no Qdrant)
from runtime import autonomy, shadow
from runtime.executor import Executor
from runtime.locks import StockLocks
from runtime.metrics import DECISION_LATENCY, DECISIONS
from runtime.order_changes import fail_if_waved, order_change_locks
from runtime.store import Store
from tools.context import AWAITING_PLANNER as AWAITING
from tools.context import Systems
from tools.premises import moved, read_facts

log = structlog.get_logger("crossdock.lifecycle")


class DecisionNotFound(LookupError):
    """No decision has this id."""


class NotReviewable(RuntimeError):
    """The decision is not in a state this review can act on (the message says which)."""


class ChangeRejected(ValueError):
    """An approval's changes break a constraint (the message names the change and the rule)."""


class SameApprover(RuntimeError):
    """Four-eyes: the person who gave a decision its first approval may not give the second."""


class ExecutionInterrupted(RuntimeError):
    """A system failed in a way worth retrying: the decision stays ``executing`` and is resumed."""


@dataclass
class Review:
    """What an approval or a rejection did: the decision as it ended, and what came next."""

    decision: Decision
    outcome: str  # executed | failed | stale | rejected | pending_review (the first of two approvals)
    fresh: Decision | None = None
    reasons: list[str] = field(default_factory=list)


def needs_four_eyes(decision: Decision, policy: Policy) -> bool:
    """Whether a decision needs two approvers: its cost impact is above its workflow's four-eyes
    amount in the policy (none set: no)."""
    limit = policy.four_eyes_cost_above.get(decision.workflow)
    return limit is not None and decision.cost_impact > limit


def approvals_of(decision: Decision) -> list[dict[str, Any]]:
    """The approvals recorded so far (four-eyes): ``[{by, at}]``."""
    return list((decision.review or {}).get("approvals", []))


def _person(actor: object) -> str:
    """The name in ``role:name``: one person with two keys (two roles) is still one approver."""
    return str(actor).partition(":")[2] or str(actor)


def execution_locks(decision: Decision) -> list[str]:
    """The locks a decision executes under outside its event: every SKU it reserves or moves, the
    wave planner's lock when it creates waves, an order change's SKUs, and the decision itself."""
    keys = {f"decision:{decision.id}"}
    for a in decision.actions:
        if a.name in ("oms.allocate", "wms.create_transfer") and a.payload.get("sku"):
            keys.add(f"sku:{a.payload['sku']}")
        if a.name == "wms.create_wave":
            keys.add(WAVE_PLAN_LOCK)
    return sorted(keys | set(order_change_locks(decision)))


class DecisionService:
    def __init__(
        self,
        store: Store,
        systems: Systems,
        executor: Executor,
        locks: StockLocks,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.systems = systems
        self.executor = executor
        self.locks = locks
        # The time a re-decision runs at: the engines' "now" (a replay's scenario clock or the wall).
        self.clock = clock or (lambda: datetime.now(UTC))

    # ------------------------------------------------------------------ record

    def record(
        self,
        proposal: Proposal,
        policy: Policy,
        did: str,
        *,
        actor: str,
        default_engine: str,
        event_id: str | None = None,
        job_id: str | None = None,
        accepted_at: datetime | None = None,
        supersedes: str | None = None,
        systems: Systems | None = None,
    ) -> Decision | None:
        """Gate a proposal and store it as a decision (superseding the live one of its subject).

        Returns the decision as stored (an identical live one when nothing new was proposed), or
        None when the proposal repeats a plan a planner rejected on facts that still hold. Call it
        under the locks the decision would execute under. ``systems``: what to read the decision's
        facts through (the pipeline's, which answers the orders its proposal read already)."""
        known = self.store.get_decision(did)
        if known is not None:  # a redelivery: what was recorded stands
            return known
        cited = cite_sop(proposal)
        decision = gated_decision(
            cited,
            policy,
            did,
            actor=actor,
            default_engine=default_engine,
            event_id=event_id,
            job_id=job_id,
            accepted_at=accepted_at,
        )
        verdict = shadow.live_verdict(cited, policy)
        if verdict is not None:  # shadow mode: the candidate's verdict is recorded, never acted on
            decision.evidence["shadow"] = verdict
        if decision.actions and decision.status in ("pending_review", "executing"):
            pending = decision.status == "pending_review"
            # A decision that runs now needs only the order statuses it may have to restore if a
            # later step fails (``executor.compensation``): read nothing more on the hot path.
            restores = any(a.name == "oms.update_order_status" for a in decision.actions)
            facts = (
                read_facts(
                    systems or self.systems,
                    decision.workflow,
                    decision.subject,
                    decision.actions,
                    orders_only=not pending,
                )
                if pending or restores
                else {}
            )
            decision = decision.model_copy(update={"facts": facts, "supersedes": supersedes})
            if pending:
                same = self._repeat(decision)
                if same is not None:
                    return same if same.status == "pending_review" else None
        return self._save(decision, actor)

    def save_rejected(self, decision: Decision) -> Decision:
        """Store a rejected agent output (never executed); a known id keeps what was stored."""
        _, stored, _ = self.store.record_decision(decision)
        return stored

    def _repeat(self, decision: Decision) -> Decision | None:
        """The live proposal this one repeats (same actions, facts still holding), or the rejected
        plan it repeats; None when it is new."""
        sig = plan_signature(decision.actions)
        live = self.store.live_decision(decision.live_key)
        if live is not None and plan_signature(live.actions) == sig and not moved(live.facts, decision.facts):
            return live
        rejected = self.store.latest(decision.live_key, "rejected")
        if (
            rejected is not None
            and plan_signature(rejected.actions) == sig
            and not moved(rejected.facts, decision.facts)
        ):
            log.info("decision.not_reproposed", subject=decision.subject, rejected=rejected.id)
            return rejected
        return None

    def _save(self, decision: Decision, actor: str) -> Decision:
        # The decision, the proposals it supersedes and their audit entries: one transaction.
        with self.store.batch():
            inserted, decision, superseded = self.store.record_decision(decision)
            if not inserted:
                return decision
            self.store.append_audit(
                "decision.recorded",
                decision.subject,
                actor,
                {
                    "decision": decision.id,
                    "outcome": decision.outcome,
                    "status": decision.status,
                    "confidence": decision.confidence,
                    "gate": decision.evidence.get("governance"),
                    "job_id": decision.job_id,
                    "supersedes": decision.supersedes,
                },
                dedup_key=f"decision:{decision.id}",
            )
            for old in superseded:
                self.store.append_audit(
                    "decision.superseded",
                    old.subject,
                    actor,
                    {"decision": old.id, "superseded_by": decision.id},
                    dedup_key=f"superseded:{old.id}",
                )
        DECISIONS.labels(workflow=decision.workflow, outcome=decision.outcome, status=decision.status).inc()
        if decision.accepted_at is not None:
            latency = (decision.decided_at or datetime.now(UTC)) - decision.accepted_at
            DECISION_LATENCY.observe(max(0.0, latency.total_seconds()))
        if decision.status in ("pending_review", "executing"):
            self._watch(decision, waiting=False)
        log.info(
            "decision.recorded",
            decision_id=decision.id,
            event_id=decision.event_id,
            job_id=decision.job_id,
            outcome=decision.outcome,
            status=decision.status,
            superseded=[o.id for o in superseded],
        )
        return decision

    def _watch(self, decision: Decision, waiting: bool) -> None:
        """Keep the tick's list of orders a planner must decide: on when one waits, off when a
        plan for it is live again."""
        memo = self.systems.memo
        if memo is None or decision.workflow not in ("order_release", "allocation"):
            return
        if waiting:
            memo.schedule(AWAITING, decision.subject, 0.0)
        else:
            memo.done(AWAITING, [decision.subject])

    # ------------------------------------------------------------------ execute

    def execute(self, decision: Decision, actor: str, verify_stock: bool, *, first: bool = False) -> Decision:
        """Run an ``executing`` decision's actions (call under its locks); see ``Executor.execute``
        (``first``: it was recorded or approved just now, so no earlier execution applied anything)."""
        if decision.status != "executing":
            return decision
        with structlog.contextvars.bound_contextvars(decision_id=decision.id):
            failed = fail_if_waved(self.store, self.systems.wms, decision, actor)
            if failed is not None:
                return failed
            return self.executor.execute(decision, actor, verify_stock=verify_stock, first=first)

    def settle(self, decisions: list[Decision], actor: str, verify_stock: bool, *, first: bool = False) -> None:
        """Execute a batch's executing decisions (call under their locks), then re-read the facts
        of its pending ones: a sibling that ran (the release half of a short order) changed what
        they stand on, and a planner's approval must compare against the world they will act in.
        ``first``: the decisions were recorded just now (see ``execute``)."""
        ran = False
        for decision in decisions:
            if decision.status == "executing":
                self.execute(decision, actor, verify_stock, first=first)
                ran = True
        if not ran:
            return
        for decision in decisions:
            if decision.status == "pending_review" and decision.facts:
                facts = read_facts(self.systems, decision.workflow, decision.subject, decision.actions)
                self.store.transition(
                    decision.id, to="pending_review", from_={"pending_review"}, actor=decision.actor, facts=facts
                )

    def _finish(self, decision: Decision, actor: str, verify_stock: bool, *, first: bool = False) -> Decision:
        try:
            return self.execute(decision, actor, verify_stock, first=first)
        except ConnectorError as exc:
            with self.store.batch():
                touched = self.store.transition(
                    decision.id, to="executing", from_={"executing"}, actor=actor, error=str(exc)
                )
                self.store.append_audit(
                    "decision.interrupted", decision.subject, actor, {"decision": decision.id, "error": str(exc)}
                )
            if touched is None:  # it settled meanwhile (another approval finished it)
                return self.store.get_decision(decision.id) or decision
            raise ExecutionInterrupted(f"{decision.id} is executing and will be resumed: {exc}") from exc

    # ------------------------------------------------------------------ review

    def approve(
        self,
        id: str,
        actor: str,
        changes: list[dict[str, Any]] | None = None,
        note: str = "",
        lines: list[int] | None = None,
    ) -> Review:
        """Approve a pending proposal (or resume an interrupted one). See the module docstring.

        ``lines`` (indexes into its actions) approves only those: the rest are declined, recorded in
        ``review.declined`` and the audit chain, and never run (an override, like changes)."""
        review = self._approve(id, actor, changes, note, lines)
        self._autonomy(review.decision)
        return review

    def _autonomy(self, decision: Decision) -> None:
        """Guarded autonomy after a review: demote (or auto-promote) the decision's pair by rule
        (``runtime.autonomy``). A failure here never undoes the review: it is logged."""
        try:
            autonomy.after_review(self.store, decision)
        except Exception:  # noqa: BLE001 - the review stands whatever the trust check does
            log.exception("autonomy.check_failed", decision_id=decision.id)

    def mark_wrong(self, id: str, actor: str, reason: str) -> tuple[Decision, dict[str, Any] | None]:
        """A planner says an executed decision was wrong (a reason is required): recorded on the
        decision (``review.wrong``) and in the audit chain, and its pair, if autonomous, goes back
        to propose at once. Returns the decision and the demotion (None when there was none)."""
        if not reason or not reason.strip():
            raise ChangeRejected("marking a decision wrong needs a reason")
        current = self.store.get_decision(id)
        if current is None:
            raise DecisionNotFound(f"no decision {id!r}")
        wrong = {"by": actor, "at": _now(), "reason": reason}
        marked = self.store.transition(
            id,
            to="executed",
            from_={"executed"},
            actor=current.actor,
            review={**(current.review or {}), "wrong": wrong},
        )
        if marked is None:
            raise NotReviewable(f"decision {id} is {current.status}, not executed")
        self.store.append_audit("decision.marked_wrong", marked.subject, actor, {"decision": id, "reason": reason})
        demoted = autonomy.demote(
            self.store, marked.workflow, marked.outcome, actor, f"{id} marked wrong by {actor}: {reason}"
        )
        return marked, demoted

    def _approve(
        self, id: str, actor: str, changes: list[dict[str, Any]] | None, note: str, lines: list[int] | None = None
    ) -> Review:
        current = self.store.get_decision(id)
        if current is None:
            raise DecisionNotFound(f"no decision {id!r}")
        policy = self.store.get_policy()
        verify = policy.policy != "baseline"
        with self.locks.hold(execution_locks(current)):
            decision = self.store.get_decision(id) or current
            if decision.status == "executing":  # an earlier approval was interrupted: finish it
                done = self._finish(decision, actor, verify)
                return Review(done, done.status)
            if decision.status != "pending_review":
                raise NotReviewable(f"decision {id} is {decision.status}, not pending_review")
            keep = _lines(decision, lines, changes)
            if keep is not None and needs_four_eyes(decision, policy) and not approvals_of(decision):
                raise ChangeRejected(
                    f"{decision.id} needs two approvers: the first approves it whole (or rejects it with a reason)"
                )
            first = self._first_of_two(decision, actor, changes, note, policy)
            if first is not None:
                return first
            actions = decision.actions
            if changes:
                actions = self._changed(decision, changes, policy)
            reasons = moved(
                decision.facts, read_facts(self.systems, decision.workflow, decision.subject, decision.actions)
            )
            if reasons:
                return self._stale(decision, actor, reasons, policy)
            review: dict[str, Any] = {"kind": "approved", "by": actor, "at": _now(), "note": note}
            if needs_four_eyes(decision, policy):
                review["approvals"] = [*approvals_of(decision), {"by": actor, "at": review["at"]}]
            update: dict[str, Any] = {"review": review}
            if changes:
                review.update(
                    kind="approved_with_changes",
                    changes=changes,
                    original_actions=decision.model_dump(mode="json")["actions"],
                )
                update["actions"] = actions
            declined = [i for i in range(len(decision.actions)) if keep is not None and i not in keep]
            if keep is not None and declined:
                original = decision.model_dump(mode="json")["actions"]
                review.update(
                    kind="approved_with_changes",
                    lines=keep,
                    declined=[{"line": i, "action": original[i]} for i in declined],
                    original_actions=original,
                )
                update["actions"] = [decision.actions[i] for i in keep]
            with self.store.batch():  # the approval and its audit entry: one transaction
                claimed = self.store.transition(id, to="executing", from_={"pending_review"}, actor=actor, **update)
                if claimed is not None:
                    self.store.append_audit(
                        "decision.approved",
                        decision.subject,
                        actor,
                        {"decision": id, "kind": review["kind"], "changes": changes or [], "note": note}
                        | ({"lines": keep, "declined": declined} if keep is not None else {}),
                    )
            if claimed is None:
                now = self.store.get_decision(id)
                raise NotReviewable(f"decision {id} is {now.status if now else 'gone'}, not pending_review")
            done = self._finish(claimed, actor, verify, first=True)
            return Review(done, done.status)

    def _first_of_two(
        self, decision: Decision, actor: str, changes: list[dict[str, Any]] | None, note: str, policy: Policy
    ) -> Review | None:
        """Four-eyes (``policy.four_eyes_cost_above``): the first approval of a decision above its
        workflow's amount is recorded in ``review.approvals`` and the decision stays pending
        (outcome ``pending_review``); the same name again is refused (``SameApprover``); None when
        this approval may execute (no four-eyes, or a second name). Call under the decision's locks."""
        if not needs_four_eyes(decision, policy):
            return None
        approvals = approvals_of(decision)
        if any(_person(a.get("by")) == _person(actor) for a in approvals):
            raise SameApprover(f"{actor} already approved {decision.id}; it needs a second approver with another name")
        if approvals:
            return None
        if changes:
            raise ChangeRejected(
                f"{decision.id} needs two approvers: the first approves it as proposed (or rejects it with a reason)"
            )
        at = _now()
        review = {**(decision.review or {}), "kind": "first_approval", "approvals": [{"by": actor, "at": at}]}
        if note:
            review["note"] = note
        # A touch: the decision stays pending (and keeps the actor that proposed it).
        kept = self.store.transition(
            decision.id, to="pending_review", from_={"pending_review"}, actor=decision.actor, review=review
        )
        if kept is None:
            now = self.store.get_decision(decision.id)
            raise NotReviewable(f"decision {decision.id} is {now.status if now else 'gone'}, not pending_review")
        self.store.append_audit(
            "decision.first_approval",
            decision.subject,
            actor,
            {"decision": decision.id, "needs": "second approver", "note": note},
        )
        log.info("decision.first_approval", decision=decision.id, actor=actor)
        return Review(kept, "pending_review")

    def _stale(self, decision: Decision, actor: str, reasons: list[str], policy: Policy) -> Review:
        """Nothing executes; the subject is decided again at once. The fresh proposal supersedes the
        stale one (one transaction); with none, the stale one ends failed with the reasons."""
        self.store.append_audit(
            "decision.stale", decision.subject, actor, {"decision": decision.id, "reasons": reasons}
        )
        fresh = self._again(decision, actor, policy)
        review = {"kind": "stale", "by": actor, "at": _now(), "reasons": reasons}
        error = "stale: " + "; ".join(reasons)
        after = self.store.get_decision(decision.id)
        replaced = after is not None and after.status == "superseded"
        stale = self.store.transition(
            decision.id,
            to="superseded" if replaced else "failed",
            from_={"superseded"} if replaced else {"pending_review"},
            actor=actor,
            error=error,
            review=review,
        )
        return Review(stale or decision, "stale", fresh, reasons)

    def reject(self, id: str, actor: str, reason: str) -> Review:
        """Reject a live proposal with a reason; the subject is decided again (or awaits a planner)."""
        review = self._reject(id, actor, reason)
        self._autonomy(review.decision)
        return review

    def _reject(self, id: str, actor: str, reason: str) -> Review:
        if not reason or not reason.strip():
            raise ChangeRejected("a rejection needs a reason")
        current = self.store.get_decision(id)
        if current is None:
            raise DecisionNotFound(f"no decision {id!r}")
        policy = self.store.get_policy()
        with self.locks.hold(execution_locks(current)):
            review = {"kind": "rejected", "by": actor, "at": _now(), "reason": reason}
            rejected = self.store.transition(
                id,
                to="rejected",
                from_={"pending_review", "awaiting_planner"},
                actor=actor,
                error=reason,
                review=review,
            )
            if rejected is None:
                now = self.store.get_decision(id)
                raise NotReviewable(f"decision {id} is {now.status if now else 'gone'}, not pending_review")
            self.store.append_audit("decision.rejected", rejected.subject, actor, {"decision": id, "reason": reason})
            if current.status == "awaiting_planner":  # the planner closed the question: it stays theirs
                return Review(rejected, "rejected")
            fresh = self._again(rejected, actor, policy, override=reason)
            return Review(rejected, "rejected", fresh)

    def _again(self, decision: Decision, actor: str, policy: Policy, override: str | None = None) -> Decision | None:
        """Decide the decision's subject again (call under its locks); the fresh live decision."""
        now = self._now_for(decision)
        rule = policy.split_only_for_service
        found = redecide(decision, self.systems, now, policy.wave_window_hours, split_only_for_service=rule)
        if found is None:
            return None
        if override is not None and any(plan_signature(p.actions) == plan_signature(decision.actions) for p in found):
            # The planner refused this plan: try without the nodes it reserved at.
            without = nodes_of(decision)
            found = redecide(decision, self.systems, now, policy.wave_window_hours, without, rule) or []
        fresh: Decision | None = None
        for n, proposal in enumerate(found):
            if override is not None and (not proposal.actions or proposal.outcome == "held"):
                continue  # no alternative: a person decides
            if override is not None:
                proposal.evidence["override"] = {"rejected": decision.id, "reason": override}
            recorded = self.record(
                proposal,
                policy,
                decision_id(f"{decision.id}#again", proposal.workflow, n),
                actor=actor,
                default_engine=decision.workflow,
                accepted_at=datetime.now(UTC),
                supersedes=decision.id,
            )
            if recorded is not None and recorded.status in ("pending_review", "executing"):
                fresh = fresh or recorded
                if recorded.status == "executing":
                    self.execute(recorded, actor, verify_stock=policy.policy != "baseline")
        if fresh is None and override is not None and found is not None:
            fresh = self._awaiting(decision, actor, override)
        return fresh

    def _now_for(self, decision: Decision) -> datetime:
        """The engines' clock for deciding again: the decision's own clock (a replay runs in scenario
        time), moved on by the wall time since it was decided."""
        wall = self.clock()
        raw = decision.evidence.get("now")
        if not isinstance(raw, str) or decision.decided_at is None:
            return wall
        try:
            then = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return wall
        then = then if then.tzinfo else then.replace(tzinfo=UTC)
        return then + max(timedelta(0), wall - decision.decided_at)

    def _awaiting(self, decision: Decision, actor: str, reason: str) -> Decision:
        waiting = Decision(
            id=decision_id(f"{decision.id}#awaiting", decision.workflow),
            event_id=decision.event_id,
            workflow=decision.workflow,
            subject=decision.subject,
            outcome="awaiting_planner",
            confidence=1.0,
            cost_impact=0.0,
            human_review_required=True,
            status="awaiting_planner",
            rationale=(
                f"A planner rejected {decision.outcome} ({reason}); the engines have no other plan on these facts. "
                "A person decides: the next tick proposes again when stock or the order changes."
            ),
            evidence={"rejected": decision.id, "reason": reason, "governance": "rejected by a planner"},
            actions=[],
            engine_version=decision.engine_version,
            actor=actor,
            created_at=datetime.now(UTC),
            decided_at=datetime.now(UTC),
            facts=decision.facts,
            supersedes=decision.id,
        )
        with self.store.batch():
            _, saved, _ = self.store.record_decision(waiting)
            self.store.append_audit(
                "decision.awaiting_planner", saved.subject, actor, {"decision": saved.id, "rejected": decision.id}
            )
        self._watch(saved, waiting=True)
        return saved

    # ------------------------------------------------------------------ changes

    def _changed(self, decision: Decision, changes: list[dict[str, Any]], policy: Policy) -> list[Action]:
        """The plan with a planner's edits, checked against the engines' constraints and the gate."""
        actions = [a.model_copy(deep=True) for a in decision.actions]
        network = self.systems.oms.network()
        nodes = {n.id for n in network.nodes}
        for change in changes:
            i = change.get("action")
            if not isinstance(i, int) or not 0 <= i < len(actions):
                raise ChangeRejected(f"change {change}: 'action' must index one of the {len(actions)} actions")
            a = actions[i]
            edits = {k: v for k, v in change.items() if k != "action"}
            allowed = EDITABLE.get(a.name, set())
            unknown = set(edits) - allowed
            if unknown:
                raise ChangeRejected(
                    f"action {i} ({a.name}): cannot change {', '.join(sorted(unknown))}"
                    + (f"; editable: {', '.join(sorted(allowed))}" if allowed else "; it is not editable")
                )
            for key, value in edits.items():
                a.payload[key] = _checked(a, key, value, nodes)
        for a in actions:
            if a.name == "oms.allocate":
                self._check_allocation(decision, a, network)
            if a.name == "wms.create_transfer":
                if a.payload["from"] == a.payload["to"]:
                    raise ChangeRejected("a transfer's source and destination must differ")
                self._check_stock(str(a.payload["sku"]), str(a.payload["from"]), float(a.payload["qty"]))
        proposal = Proposal(
            workflow=decision.workflow,
            subject=decision.subject,
            outcome=decision.outcome,
            confidence=decision.confidence,
            cost_impact=decision.cost_impact,
            rationale=decision.rationale,
            actions=actions,
        )
        if gate(proposal, policy).status == "observed":
            raise ChangeRejected(f"{decision.workflow} runs in observe mode: nothing may execute")
        return with_idempotency_keys(f"{decision.id}~{plan_signature(actions)[:8]}", actions)

    def _check_allocation(self, decision: Decision, a: Action, network: Any) -> None:
        order = (decision.facts.get("orders") or {}).get(str(a.payload.get("order_id")), {})
        line = next((ln for ln in order.get("lines", []) if ln[0] == a.payload.get("line")), None)
        if line is not None and float(a.payload["qty"]) > float(line[2]) + 1e-9:
            raise ChangeRejected(f"line {line[0]} orders {line[2]:g}; cannot allocate {a.payload['qty']:g}")
        region = self.systems.oms.order(str(a.payload["order_id"])).order.region
        if not any(ln.from_node == a.payload["node"] and ln.to_region == region for ln in network.lanes):
            raise ChangeRejected(f"no lane from {a.payload['node']} serves region {region}")
        self._check_stock(str(a.payload["sku"]), str(a.payload["node"]), float(a.payload["qty"]))

    def _check_stock(self, sku: str, node: str, qty: float) -> None:
        pickable = {ns.node: ns.pickable for ns in self.systems.wms.stock(sku)}.get(node, 0.0)
        if pickable + 1e-9 < qty:
            raise ChangeRejected(f"{sku}@{node}: {qty:g} wanted, only {pickable:g} pickable")

    # ------------------------------------------------------------------ resume

    def resume_stuck(self, after_s: float, give_up_s: float, actor: str = "crossdock-resume") -> list[Decision]:
        """Finish decisions left ``executing`` for ``after_s`` seconds; undo and fail those older than
        ``give_up_s`` (nothing stays executing forever). Returns what was settled."""
        now = datetime.now(UTC)
        settled = []
        policy = self.store.get_policy()
        for stuck in self.store.executing_since(now - timedelta(seconds=after_s)):
            with self.locks.hold(execution_locks(stuck)):
                decision = self.store.get_decision(stuck.id)
                if decision is None or decision.status != "executing":
                    continue
                began = (decision.review or {}).get("at")
                start = datetime.fromisoformat(began) if began else (decision.decided_at or now)
                age = (now - start).total_seconds()
                if age > give_up_s:
                    settled.append(self.executor.fail(decision, actor, f"gave up after {age:.0f}s executing"))
                    continue
                try:
                    settled.append(self._finish(decision, actor, policy.policy != "baseline"))
                except ExecutionInterrupted as exc:
                    log.warning("decision.resume_failed", decision_id=decision.id, error=str(exc))
        return settled


# What a planner may change in an approval, per action.
EDITABLE: dict[str, set[str]] = {
    "oms.allocate": {"node", "qty"},
    "wms.create_transfer": {"qty", "from"},
    "oms.update_promise_date": {"promise_date"},
    "erp.create_backorder": {"promise_date"},
}


def _checked(a: Action, key: str, value: Any, nodes: set[str]) -> Any:
    if key == "qty":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ChangeRejected(f"{a.name}: qty must be a positive finite number, not {value!r}")
        return float(value)
    if key in ("node", "from"):
        if value not in nodes:
            raise ChangeRejected(f"{a.name}: {key} {value!r} is not a node of the network")
        return value
    if key == "promise_date":
        try:
            day = date.fromisoformat(str(value))
        except ValueError:
            raise ChangeRejected(f"{a.name}: promise_date must be YYYY-MM-DD, not {value!r}") from None
        return day.isoformat()
    raise ChangeRejected(f"{a.name}: cannot change {key}")


def _lines(decision: Decision, lines: list[int] | None, changes: list[dict[str, Any]] | None) -> list[int] | None:
    """The action indexes a per-line approval keeps (sorted, unique), or None for the whole decision."""
    if lines is None:
        return None
    if changes:
        raise ChangeRejected("approve some lines or approve with changes, not both at once")
    if not lines:
        raise ChangeRejected(f"approve at least one line of {decision.id}; reject it to decline them all")
    last = len(decision.actions) - 1
    wrong = [i for i in lines if not 0 <= i <= last]
    if wrong:
        raise ChangeRejected(f"line(s) {', '.join(map(str, wrong))} are not actions of {decision.id} (0..{last})")
    return sorted(set(lines))


def _now() -> str:
    return datetime.now(UTC).isoformat()
