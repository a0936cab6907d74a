"""Shadow replay: what a candidate policy would have done with the decisions of a period.

Two methods. ``regate`` (below) gates the recorded proposals again; ``engines``
(:func:`engine_replay`, further down) decides each recorded event again with the engines on the
reads it was decided on. Both write nothing.

``regate``: the inputs are what the store recorded: each decision's proposal (workflow, outcome, confidence,
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
        "method": "regate",
        "note": "recorded proposals re-gated with the candidate policy (engines not re-run)",
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


# ---------------------------------------------------------------------------- engine replay
#
# ``crossdock replay --engines`` / ``POST /v1/replay`` with ``"method": "engines"``: every event
# accepted in [since, until) that was kept with its reads (table ``event_records``, written by the
# pipeline through ``tools.recording``) is decided again, in (accepted_at, event id) order: routed
# with the candidate policy (``crews.supervisor.route``), its specialist's ``lock_keys`` and
# ``propose`` run on ``ReplaySystems`` (the recorded answers; a read that was not recorded stops
# that event, a write is an error), and each proposal is gated with the candidate
# (``domain.governance.gate``). The result is compared, decision by decision, with the decisions
# recorded for the event: outcome, actions and route (executed without a person, review, observed).
#
# What it is not: the period is replayed in sequence, but each event is decided on the facts
# recorded when it was decided live: an engine never sees its own replayed effects (a release the
# candidate would not have made still took its stock in the later events' reads). The live path's
# bookkeeping is not replayed either: a live proposal that repeated a pending one (or a plan a
# planner had rejected) is compared with the decision it repeated, or left out of the comparison
# (``not_compared``). Agents (the LLM path) are not re-run: their decisions are not compared.
#
# Nothing is written: the reads are served from the record, the memo is a throw-away in-memory one,
# and the only queries are reads of ``event_records`` and ``decisions``. Same records, decisions and
# policy in, same report out.

_NO_RECORD = "no recorded reads (decided before reads were kept, with CROSSDOCK_RECORD_READS off, or by a triage crew)"


def _engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"crossdock {version('crossdock')}"
    except PackageNotFoundError:
        return "crossdock"


ENGINE_VERSION = _engine_version()


def keep_event(
    store: Store,
    event: Any,
    accepted_at: datetime,
    reads: dict[str, Any],
    proposals: list[Proposal],
    decisions: list[Decision],
) -> bool:
    """Keep a decided event with the reads its proposals used (the pipeline's hook), once per event
    key. Never fails the decision: a record that cannot be written is logged and skipped."""
    from domain.decisions import decision_id

    try:
        return store.record_event(
            key=event.key,
            event_id=event.id,
            type=event.type,
            accepted_at=accepted_at,
            event=event.model_dump(mode="json"),
            reads=reads,
            decisions={
                "proposed": [decision_id(event.key, p.workflow, i) for i, p in enumerate(proposals)],
                "decided": [d.id for d in decisions],
            },
            engine_version=ENGINE_VERSION,
        )
    except Exception as exc:  # noqa: BLE001 - the record is for replay; the decision stands without it
        import structlog

        structlog.get_logger("crossdock.shadow").warning("event.record_failed", event_id=event.id, error=str(exc))
        return False


@dataclass(frozen=True)
class Item:
    """One side of a compared decision: what was (or would be) decided and how it was routed."""

    id: str
    event_id: str
    workflow: str
    subject: str
    outcome: str
    route: str
    cost: float
    actions: list[dict[str, Any]]
    evidence: dict[str, Any]

    def plan(self) -> str:
        import json

        return json.dumps(sorted(self.actions, key=lambda a: json.dumps(a, sort_keys=True)), sort_keys=True)

    def show(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "route": self.route,
            "cost_impact": round(self.cost, 2),
            "actions": self.actions,
        }


def _actions(actions: list[Any]) -> list[dict[str, Any]]:
    out = []
    for a in actions:
        raw = a.model_dump() if hasattr(a, "model_dump") else dict(a)
        out.append({"system": raw["system"], "type": raw["type"], "payload": raw.get("payload", {})})
    return out


def _allocations(item: Item) -> list[dict[str, Any]]:
    return [a["payload"] for a in item.actions if a["system"] == "oms" and a["type"] == "allocate"]


def is_split(item: Item) -> bool:
    """Served from more than one node (an order, or one of its lines), as ``bench.report`` counts."""
    by_order: dict[str, set[str]] = {}
    by_line: dict[tuple[str, str], set[str]] = {}
    for p in _allocations(item):
        if float(p.get("qty", 0)) <= 0:
            continue
        by_order.setdefault(str(p.get("order_id")), set()).add(str(p.get("node")))
        by_line.setdefault((str(p.get("order_id")), str(p.get("line"))), set()).add(str(p.get("node")))
    return any(len(n) > 1 for n in by_order.values()) or any(len(n) > 1 for n in by_line.values())


def is_on_time(item: Item) -> bool:
    """Allocates, and its evidence says every line ships by ship-by: no late line in the sourcing,
    no wave missed its truck. Without that evidence (the baseline's), not counted as on time."""
    if not _allocations(item):
        return False
    sourcing = item.evidence.get("sourcing")
    if not isinstance(sourcing, dict):
        return False
    waves = item.evidence.get("waves")
    missed = isinstance(waves, dict) and any(
        isinstance(w, dict) and w.get("outcome") == "missed" for w in waves.values()
    )
    return not sourcing.get("late_lines") and not missed


def oversells(item: Item, pickable: dict[tuple[str, str], float]) -> int:
    """SKU@node pairs the decision allocates beyond the pickable stock recorded when it was decided
    (a pair never read counts as 0 pickable)."""
    wanted: dict[tuple[str, str], float] = {}
    for p in _allocations(item):
        key = (str(p.get("sku")), str(p.get("node")))
        wanted[key] = wanted.get(key, 0.0) + float(p.get("qty", 0))
    return sum(qty > pickable.get(key, 0.0) + 1e-9 for key, qty in wanted.items())


def recorded_pickable(reads: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Pickable stock per (sku, node) from a recording's first answer to each ``wms.stock`` read (and
    each ``wms.stock_many`` bulk read, which answers it for several SKUs)."""
    from tools.recording import decode

    out: dict[tuple[str, str], float] = {}
    for entry in reads.get("calls", []):
        call = entry.get("call")
        if call not in ("wms.stock", "wms.stock_many") or not entry.get("answers") or "r" not in entry["answers"][0]:
            continue
        answer = decode(entry["answers"][0]["r"])
        by_sku = (answer or {}) if call == "wms.stock_many" else {str(entry["args"][0]): answer or []}
        for sku, rows in by_sku.items():
            for ns in rows:
                out.setdefault((str(sku), ns.node), float(ns.pickable))
    return out


@dataclass
class EngineSide:
    decisions: int = 0
    review: int = 0
    executed: int = 0
    observed: int = 0
    cost: float = 0.0
    cost_executed: float = 0.0
    splits: int = 0
    on_time: int = 0
    oversells: int = 0

    def add(self, item: Item, pickable: dict[tuple[str, str], float]) -> None:
        self.decisions += 1
        setattr(self, item.route, getattr(self, item.route) + 1)
        self.cost += item.cost
        if item.route == "executed":
            self.cost_executed += item.cost
        self.splits += is_split(item)
        self.on_time += is_on_time(item)
        self.oversells += oversells(item, pickable)

    def report(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "reviews_needed": self.review,
            "executed": self.executed,
            "observed": self.observed,
            "cost": round(self.cost, 2),
            "cost_executed": round(self.cost_executed, 2),
            "splits": self.splits,
            "on_time": self.on_time,
            "oversells": self.oversells,
        }


@dataclass
class EnginePair:
    before: EngineSide = field(default_factory=EngineSide)
    after: EngineSide = field(default_factory=EngineSide)
    changed: int = 0
    moves: dict[str, int] = field(default_factory=dict)  # route moves: "review->executed"
    outcome_moves: dict[str, int] = field(default_factory=dict)  # "released->held", "-" for none

    def add(self, before: Item | None, after: Item | None, pickable: dict[tuple[str, str], float]) -> bool:
        if before is not None:
            self.before.add(before, pickable)
        if after is not None:
            self.after.add(after, pickable)
        if before is not None and after is not None and _same(before, after):
            return False
        self.changed += 1
        b_route, a_route = (before.route if before else "-"), (after.route if after else "-")
        if b_route != a_route:
            self.moves[f"{b_route}->{a_route}"] = self.moves.get(f"{b_route}->{a_route}", 0) + 1
        b_out, a_out = (before.outcome if before else "-"), (after.outcome if after else "-")
        if b_out != a_out:
            self.outcome_moves[f"{b_out}->{a_out}"] = self.outcome_moves.get(f"{b_out}->{a_out}", 0) + 1
        return True

    def report(self) -> dict[str, Any]:
        b, a = self.before.report(), self.after.report()
        return {
            "decisions": self.before.decisions,
            "changed": self.changed,
            "before": b,
            "after": a,
            "delta": {k: round(a[k] - b[k], 2) for k in b},
            "moves": dict(sorted(self.moves.items())),
            "outcome_moves": dict(sorted(self.outcome_moves.items())),
        }


def _same(before: Item, after: Item) -> bool:
    return before.outcome == after.outcome and before.route == after.route and before.plan() == after.plan()


def _before_item(d: Decision) -> Item:
    p = proposal_of(d)
    return Item(
        id=d.id,
        event_id=d.event_id or "",
        workflow=d.workflow,
        subject=d.subject,
        outcome=d.outcome,
        route=recorded_route(d),
        cost=d.cost_impact,
        actions=_actions(p.actions),
        evidence=p.evidence,
    )


def _after_item(did: str, event_id: str, p: Proposal, candidate: Policy) -> Item:
    return Item(
        id=did,
        event_id=event_id,
        workflow=p.workflow,
        subject=p.subject,
        outcome=p.outcome,
        route=_route(gate(p, candidate)),
        cost=p.cost_impact,
        actions=_actions(p.actions),
        evidence=p.evidence,
    )


@dataclass
class Replayed:
    """One event decided again: pairs of (recorded, replayed), or why it could not be."""

    event_id: str
    type: str
    pairs: list[tuple[Item | None, Item | None]] = field(default_factory=list)
    not_compared: int = 0
    reason: str | None = None


def replay_event(
    record: dict[str, Any], recorded: dict[str, Decision], candidate: Policy
) -> tuple[Replayed, dict[tuple[str, str], float]]:
    """Decide one recorded event again with the candidate and pair each replayed proposal with the
    decision recorded for it. ``recorded``: decisions by id (the event's own, and any decision its
    live proposals repeated)."""
    from crews.supervisor import route
    from domain.decisions import decision_id, live_key
    from domain.events import CloudEvent
    from tools.recording import NotRecorded, ReadOnlyViolation, ReplaySystems

    event = CloudEvent.model_validate(record["event"])
    out = Replayed(event_id=event.id, type=event.type)
    reads: dict[str, Any] = record["reads"]
    pickable: dict[tuple[str, str], float] = {}
    if reads.get("incomplete"):
        out.reason = "recording incomplete: " + "; ".join(map(str, reads["incomplete"]))[:300]
        return out, pickable
    if event.time is None:  # the live clock read the wall time: replay at the time it was accepted
        event = event.model_copy(update={"time": record["accepted_at"]})
    try:
        systems = ReplaySystems(reads).systems
        specialist = route(event.type, candidate)
        specialist.lock_keys(event, systems)
        proposals = specialist.propose(event, systems)
        pickable = recorded_pickable(reads)
    except NotRecorded as exc:
        out.reason = f"the candidate read what was not recorded ({exc.call})"
        return out, pickable
    except ReadOnlyViolation:
        raise  # a write is an error, never a no-op
    except Exception as exc:  # noqa: BLE001 - one event that cannot be decided must not stop the report
        out.reason = f"{type(exc).__name__}: {exc}"
        return out, pickable
    ids = record.get("decisions") or {}
    proposed, decided = list(ids.get("proposed", [])), list(ids.get("decided", []))
    mine = {did for did in decided if did in recorded and recorded[did].event_id == event.id}
    # Decisions the live proposals repeated (recorded under an earlier event), by live key.
    repeats = {recorded[did].live_key: did for did in decided if did in recorded and recorded[did].event_id != event.id}
    # The event's own decisions: what its live proposals became (never an agent's, a planner's
    # question or a re-decision, which the engines' replay cannot reproduce).
    engine_own = {did for did in {*proposed, *decided} if did in recorded and recorded[did].event_id == event.id}
    used: set[str] = set()
    for i, p in enumerate(proposals):
        did = decision_id(event.key, p.workflow, i)
        after = _after_item(did, event.id, p, candidate)
        if did in engine_own:
            out.pairs.append((_before_item(recorded[did]), after))
            used.add(did)
            continue
        key = live_key(p.workflow, p.subject, p.outcome)
        if key in repeats and repeats[key] not in used:
            used.add(repeats[key])
            out.pairs.append((_before_item(recorded[repeats[key]]), after))
            continue
        if did in proposed and did not in mine:
            out.not_compared += 1  # live proposed it too and stored no new decision for it
            continue
        out.pairs.append((None, after))
    for did in sorted(engine_own - used):
        out.pairs.append((_before_item(recorded[did]), None))
    return out, pickable


def _engine_decisions(store: Store, ids: set[str]) -> dict[str, Decision]:
    """The recorded decisions with these ids (what the events' engine proposals became), by id."""
    t = store.decisions
    out: dict[str, Decision] = {}
    wanted = sorted(ids)
    with store.engine.connect() as conn:
        for n in range(0, len(wanted), 500):
            stmt = sa.select(t.c.data).where(t.c.id.in_(wanted[n : n + 500]))
            for data in conn.execute(stmt).scalars():
                d = Decision.model_validate(data)
                out[d.id] = d
    return out


def _events_without_record(store: Store, since: datetime, until: datetime, recorded: set[str]) -> dict[str, str]:
    """Events with decisions created in [since, until) but no event record: event id -> workflow."""
    t = store.decisions
    stmt = (
        sa.select(t.c.event_id, t.c.workflow)
        .where(t.c.created_at >= since, t.c.created_at < until, t.c.event_id.is_not(None))
        .order_by(t.c.created_at, t.c.id)
    )
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for event_id, workflow in conn.execute(stmt):
            if event_id not in recorded:
                out.setdefault(str(event_id), str(workflow))
    # An event accepted before the period but decided again within it has its record elsewhere.
    kept = store.event_record_keys(out)
    return {e: w for e, w in out.items() if e not in kept}


def engine_diff(records: list[dict[str, Any]], recorded: dict[str, Decision], candidate: Policy) -> dict[str, Any]:
    """Replay ``records`` (in the order given) against ``recorded`` decisions: the diff."""
    pairs: dict[str, EnginePair] = {}
    total = EnginePair()
    changed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    replayed = not_compared = 0
    for record in records:
        result, pickable = replay_event(record, recorded, candidate)
        if result.reason is not None:
            skipped.append({"event_id": result.event_id, "type": result.type, "reason": result.reason})
            continue
        replayed += 1
        not_compared += result.not_compared
        for before, after in result.pairs:
            first = before or after
            assert first is not None
            pair = pairs.setdefault(f"{first.workflow}/{first.outcome}", EnginePair())
            total.add(before, after, pickable)
            if pair.add(before, after, pickable):
                changed.append(
                    {
                        "id": first.id,
                        "event_id": first.event_id,
                        "workflow": first.workflow,
                        "subject": first.subject,
                        "before": before.show() if before else None,
                        "after": after.show() if after else None,
                    }
                )
    reasons: dict[str, int] = {}
    for s in skipped:
        why = str(s["reason"]).split(" (")[0].split(":")[0]
        reasons[why] = reasons.get(why, 0) + 1
    return {
        "events": len(records),
        "replayed": replayed,
        "not_replayable": {"count": len(skipped), "reasons": dict(sorted(reasons.items())), "events": skipped[:50]},
        "not_compared": not_compared,
        "decisions": total.before.decisions,
        "total": total.report(),
        "pairs": {k: v.report() for k, v in sorted(pairs.items())},
        "changed": changed,
    }


def engine_replay(store: Store, since: datetime, until: datetime, candidate: Policy) -> dict[str, Any]:
    """The engine replay of a period with a candidate policy (writes nothing); see above."""
    records = store.event_records_between(since, until)
    ids = [str(r["event_id"]) for r in records]
    wanted = {did for r in records for part in (r.get("decisions") or {}).values() for did in part}
    recorded = _engine_decisions(store, wanted)
    report = engine_diff(records, recorded, candidate)
    # Events decided in the period without a record cannot be replayed: counted, with the reason.
    missing = _events_without_record(store, since, until, set(ids))
    if missing:
        nr = report["not_replayable"]
        nr["count"] += len(missing)
        nr["reasons"][_NO_RECORD] = nr["reasons"].get(_NO_RECORD, 0) + len(missing)
        room = max(0, 50 - len(nr["events"]))
        nr["events"] += [{"event_id": e, "workflow": w, "reason": _NO_RECORD} for e, w in list(missing.items())[:room]]
        nr["reasons"] = dict(sorted(nr["reasons"].items()))
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "method": "engines",
        "note": "recorded events decided again by the engines on their recorded reads, gated with the candidate",
        "policy": candidate.model_dump(mode="json"),
        **report,
    }
