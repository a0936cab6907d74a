"""Shadow replay: what a candidate policy would have done with the decisions of a period.

The inputs are what the store recorded: each decision's proposal (workflow, outcome, confidence,
cost impact, actions, evidence) and the gate's recorded reasons. Each proposal is gated again with
the candidate policy (``domain.governance.gate``), and the report compares, by workflow and
outcome, what happened (*before*: executed without a person, sent for review, observed) with what
the candidate would have done (*after*), with the cost impact executed without a person.

What it is not: the engines are not re-run, and each proposal is gated on its own, so knock-on
effects are not modelled (a proposal the candidate would have executed might have made a later one
unnecessary; a re-decision after a rejection exists only because of that rejection). An engine's
own request for review (``review_required``) is read back from the recorded gate reasons.

It writes nothing: one read-only query over the decisions table, no connector, no audit entry, no
queue. Same decisions and policy in, same report out (rows are taken in (created_at, id) order and
figures rounded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from domain.decisions import Decision, Proposal
from domain.governance import gate
from domain.models import Policy
from runtime.store import Store

# Gate reasons that follow from the policy (re-evaluated); any other reason is the engine's own.
_POLICY_REASON = re.compile(r"^(\S+ runs in (observe|propose) mode|cost impact .+ > .+|confidence .+ < .+)$")
# Decisions that are not proposals: a planner's open question, made after a rejection.
_SKIP_STATUSES = ("awaiting_planner",)


def proposal_of(decision: Decision) -> Proposal:
    """The proposal a recorded decision was gated from (as near as the record allows)."""
    reasons = str(decision.evidence.get("governance") or "").split("; ")
    engine = [r for r in reasons if r and decision.human_review_required and not _POLICY_REASON.match(r)]
    evidence = {k: v for k, v in decision.evidence.items() if k != "governance"}
    actions = (decision.review or {}).get("original_actions") or [a.model_dump() for a in decision.actions]
    return Proposal(
        workflow=decision.workflow,
        subject=decision.subject,
        outcome=decision.outcome,
        confidence=min(1.0, max(0.0, decision.confidence)),
        cost_impact=decision.cost_impact,
        rationale=decision.rationale,
        evidence=evidence,
        actions=actions,
        review_required=bool(engine),
        review_reason="; ".join(engine) or None,
    )


def recorded_route(decision: Decision) -> str:
    """What the live gate did with the decision: ``executed`` (no person), ``review`` or ``observed``."""
    if decision.status == "observed" or not decision.actions:
        return "observed"
    if decision.human_review_required or (decision.review or {}).get("kind"):
        return "review"
    return "executed"


def candidate_route(decision: Decision, policy: Policy) -> str:
    verdict = gate(proposal_of(decision), policy)
    if verdict.status == "observed":
        return "observed"
    return "review" if verdict.human_review_required else "executed"


@dataclass
class Side:
    review: int = 0
    executed: int = 0
    observed: int = 0
    cost_executed: float = 0.0

    def add(self, route: str, cost: float) -> None:
        setattr(self, route, getattr(self, route) + 1)
        if route == "executed":
            self.cost_executed += cost

    def report(self) -> dict[str, Any]:
        return {
            "reviews_needed": self.review,
            "executed": self.executed,
            "observed": self.observed,
            "cost_executed": round(self.cost_executed, 2),
        }


@dataclass
class PairDiff:
    before: Side = field(default_factory=Side)
    after: Side = field(default_factory=Side)
    changed: int = 0
    moves: dict[str, int] = field(default_factory=dict)  # "review->executed": n
    examples: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        b, a = self.before.report(), self.after.report()
        return {
            "decisions": self.before.review + self.before.executed + self.before.observed,
            "changed": self.changed,
            "before": b,
            "after": a,
            "delta": {k: round(a[k] - b[k], 2) for k in b},
            "moves": dict(sorted(self.moves.items())),
            "examples": self.examples,
        }


def decisions_between(store: Store, since: datetime, until: datetime) -> list[Decision]:
    """The decisions created in [since, until), oldest first (a read-only query)."""
    t = store.decisions
    stmt = (
        sa.select(t.c.data)
        .where(t.c.created_at >= since, t.c.created_at < until, t.c.status.not_in(_SKIP_STATUSES))
        .order_by(t.c.created_at, t.c.id)
    )
    with store.engine.connect() as conn:
        return [Decision.model_validate(d) for d in conn.execute(stmt).scalars()]


def diff(decisions: list[Decision], candidate: Policy) -> dict[str, Any]:
    """Before (as recorded) and after (the candidate's gate) by workflow and outcome, and in total."""
    pairs: dict[str, PairDiff] = {}
    total = PairDiff()
    for d in sorted(decisions, key=lambda d: (d.created_at.isoformat() if d.created_at else "", d.id)):
        if d.status in _SKIP_STATUSES:
            continue
        before, after = recorded_route(d), candidate_route(d, candidate)
        p = pairs.setdefault(f"{d.workflow}/{d.outcome}", PairDiff())
        for x in (p, total):
            x.before.add(before, d.cost_impact)
            x.after.add(after, d.cost_impact)
            if before != after:
                x.changed += 1
                move = f"{before}->{after}"
                x.moves[move] = x.moves.get(move, 0) + 1
                if len(x.examples) < 5:
                    x.examples.append(d.id)
    return {
        "decisions": sum(x.before.review + x.before.executed + x.before.observed for x in pairs.values()),
        "total": total.report(),
        "pairs": {k: v.report() for k, v in sorted(pairs.items())},
    }


def candidate_policy(current: Policy, body: dict[str, Any]) -> Policy:
    """The candidate: ``body`` merged over the policy in force (``PATCH /v1/policy`` semantics);
    ValueError names the field."""
    from runtime import policy_versions

    try:
        return policy_versions.merged(current, body)
    except policy_versions.PolicyError as exc:
        raise ValueError(str(exc)) from None


def replay(store: Store, since: datetime, until: datetime, candidate: Policy) -> dict[str, Any]:
    """The shadow replay of a period with a candidate policy (writes nothing)."""
    found = decisions_between(store, since, until)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "method": "recorded proposals re-gated with the candidate policy (engines not re-run)",
        "policy": candidate.model_dump(mode="json"),
        **diff(found, candidate),
    }


# ---------------------------------------------------------------------------- shadow mode, live


def _route(verdict: Any) -> str:
    if verdict.status == "observed":
        return "observed"
    return "review" if verdict.human_review_required else "executed"


def live_verdict(proposal: Proposal, live: Policy) -> dict[str, Any] | None:
    """Shadow mode: what the live policy and the candidate (``live.shadow``) each do with a
    proposal of a shadowed workflow, for the decision's evidence; None when it is not shadowed.
    The candidate's governance (modes, thresholds) is judged; the engines are not re-run with its
    parameters, and nothing the candidate would do is executed."""
    spec = live.shadow
    if spec is None or proposal.workflow not in spec.workflows:
        return None
    candidate = candidate_policy(live.model_copy(update={"shadow": None}), spec.candidate)
    now, then = _route(gate(proposal, live)), gate(proposal, candidate)
    return {"live": now, "candidate": _route(then), "agree": now == _route(then), "candidate_reason": then.reason}


def agreement(store: Store, limit: int = 10_000) -> dict[str, Any]:
    """Shadow mode's report over the newest ``limit`` decisions: per (workflow, outcome), how often
    the candidate agreed with the live policy, and the decisions where it did not."""
    pairs: dict[str, dict[str, int]] = {}
    disagreed: list[dict[str, Any]] = []
    for d in store.list_decisions(limit=limit):
        verdict = d.evidence.get("shadow")
        if not isinstance(verdict, dict):
            continue
        row = pairs.setdefault(f"{d.workflow}/{d.outcome}", {"decisions": 0, "agree": 0})
        row["decisions"] += 1
        row["agree"] += bool(verdict.get("agree"))
        if not verdict.get("agree"):
            disagreed.append({"decision": d.id, "subject": d.subject, **verdict})
    total = sum(r["decisions"] for r in pairs.values())
    agree = sum(r["agree"] for r in pairs.values())
    return {
        "decisions": total,
        "agreement": round(agree / total, 4) if total else None,
        "pairs": {k: {**v, "agreement": round(v["agree"] / v["decisions"], 4)} for k, v in sorted(pairs.items())},
        "disagreed": disagreed[-50:],
    }
