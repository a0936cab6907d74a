"""Guarded autonomy: measured trust per (workflow, outcome), promotion and demotion by rule.

**What counts.** A pair's *settled* decisions are those a person reviewed (``review.kind``
``approved``, ``approved_with_changes`` or ``rejected``) and those that ran without a person
(status ``executed`` or ``failed`` with no review kind). A ``stale`` approval is not a judgement
(the facts moved), and a first of two approvals is not settled yet: neither counts.

* **overrides**: approvals with changes, rejections, executed decisions a planner marked wrong
  (``POST /v1/decisions/{id}/wrong``) and *later corrections*: an executed decision whose subject
  got a later executed decision that undoes a reservation or a movement (an action
  ``release_allocation``, ``cancel_wave``, ``cancel_transfer``, ``cancel_task`` or ``cancel_order``).
* **failures**: settled decisions that ended ``failed`` (approved or autonomous: what ran and broke).

Rates are over the settled decisions, with a Wilson score interval (95 %). The *window* is a pair's
last ``AutonomyRule.window`` settled decisions (newest first by creation); the all-time figures are
SQL aggregates over the decisions table.

**Rules** (``domain.models.AutonomyRule``, per workflow in the policy's ``autonomy_rules``). A pair
is *eligible* with at least ``min_reviews`` reviews in the window, the override rate's Wilson upper
bound at most ``max_override_upper`` and no failure in its last ``no_failure_in_last``. An admin
promotes an eligible pair (``promote``: its ``outcome_modes`` entry becomes ``autonomous``), or the
decision service does when the rule says ``auto_promote``. An autonomous pair is demoted to
``propose`` when its last ``demote_window`` settled decisions (at least ``demote_min``) show an
override or failure rate above the rule's limit, checked after every review (``after_review``),
and at once when a planner marks one of its executed decisions wrong. Each promotion and demotion
is a policy version (``runtime.policy_versions.change``) and an ``autonomy.promoted`` /
``autonomy.demoted`` audit entry with the evidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog

from domain.decisions import Decision
from domain.governance import mode_of
from domain.models import AutonomyRule, Mode, Policy
from runtime import policy_versions
from runtime.store import Store

log = structlog.get_logger("crossdock.autonomy")

REVIEW_KINDS = ("approved", "approved_with_changes", "rejected")
REVERSING = frozenset({"release_allocation", "cancel_wave", "cancel_transfer", "cancel_task", "cancel_order"})
SYSTEM_ACTOR = "crossdock-autonomy"
Z95 = 1.959963984540054


class NotEligible(RuntimeError):
    """A promotion the rule does not allow (the message says why)."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (0, 1) with no trials."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Counts:
    """Settled decisions of one pair over a span (all time, the window or the recent few)."""

    settled: int = 0
    reviews: int = 0
    approved: int = 0
    approved_with_changes: int = 0
    rejected: int = 0
    marked_wrong: int = 0
    corrected: int = 0
    autonomous: int = 0
    failures: int = 0

    @property
    def overrides(self) -> int:
        return self.approved_with_changes + self.rejected + self.marked_wrong + self.corrected

    def rate(self, k: int) -> float:
        return k / self.settled if self.settled else 0.0

    def report(self) -> dict[str, Any]:
        lo, hi = wilson(self.overrides, self.settled)
        flo, fhi = wilson(self.failures, self.settled)
        return {
            **asdict(self),
            "overrides": self.overrides,
            "override_rate": round(self.rate(self.overrides), 4),
            "override_wilson": [round(lo, 4), round(hi, 4)],
            "failure_rate": round(self.rate(self.failures), 4),
            "failure_wilson": [round(flo, 4), round(fhi, 4)],
        }


@dataclass
class Row:
    id: str
    subject: str
    status: str
    kind: str | None
    wrong: bool
    created_at: datetime
    corrected: bool = False


def _add(c: Counts, r: Row) -> None:
    c.settled += 1
    if r.kind in REVIEW_KINDS:
        c.reviews += 1
        setattr(c, r.kind, getattr(c, r.kind) + 1)
    else:
        c.autonomous += 1
    c.marked_wrong += r.wrong
    c.corrected += r.corrected  # never with a wrong mark or changes (``_corrections``)
    c.failures += r.status == "failed"


@dataclass
class Trust:
    """One (workflow, outcome) pair: its mode, the evidence and what the rule makes of it."""

    workflow: str
    outcome: str
    mode: Mode
    all_time: Counts
    window: Counts
    recent: Counts
    failures_in_last: int
    rule: AutonomyRule
    eligible: bool = False
    why_not: list[str] = field(default_factory=list)
    demote: bool = False
    demote_why: list[str] = field(default_factory=list)

    @property
    def pair(self) -> str:
        return f"{self.workflow}/{self.outcome}"

    def report(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "outcome": self.outcome,
            "pair": self.pair,
            "mode": self.mode,
            "all_time": self.all_time.report(),
            "window": {"size": self.rule.window, **self.window.report()},
            "recent": {"size": self.rule.demote_window, **self.recent.report()},
            "failures_in_last": {"size": self.rule.no_failure_in_last, "failures": self.failures_in_last},
            "eligible": self.eligible,
            "why_not": self.why_not,
            "demote": self.demote,
            "demote_why": self.demote_why,
            "rule": self.rule.model_dump(),
        }


def rule_of(policy: Policy, workflow: str) -> AutonomyRule:
    for name, rule in policy.autonomy_rules.items():
        if name == workflow:
            return rule
    return AutonomyRule()


def _settled_filter(t: sa.Table) -> Any:
    kind = t.c.data["review"]["kind"].as_string()
    return sa.or_(kind.in_(REVIEW_KINDS), sa.and_(t.c.status.in_(("executed", "failed")), kind.is_(None)))


def _rows(store: Store, workflow: str | None, outcome: str | None, per_pair: int) -> dict[tuple[str, str], list[Row]]:
    """Each pair's last ``per_pair`` settled decisions, newest first (a window function)."""
    t = store.decisions
    kind = t.c.data["review"]["kind"].as_string().label("kind")
    wrong = t.c.data["review"]["wrong"]["by"].as_string().label("wrong")
    rn = (
        sa.func.row_number()
        .over(partition_by=(t.c.workflow, t.c.outcome), order_by=(t.c.created_at.desc(), t.c.id.desc()))
        .label("rn")
    )
    inner = sa.select(t.c.id, t.c.workflow, t.c.outcome, t.c.subject, t.c.status, t.c.created_at, kind, wrong, rn)
    inner = inner.where(_settled_filter(t))
    if workflow is not None:
        inner = inner.where(t.c.workflow == workflow)
    if outcome is not None:
        inner = inner.where(t.c.outcome == outcome)
    sub = inner.subquery()
    stmt = sa.select(sub).where(sub.c.rn <= per_pair).order_by(sub.c.workflow, sub.c.outcome, sub.c.rn)
    out: dict[tuple[str, str], list[Row]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(stmt):
            out.setdefault((r.workflow, r.outcome), []).append(
                Row(r.id, r.subject, r.status, r.kind, r.wrong is not None, _utc(r.created_at))
            )
    return out


def _all_time(store: Store, workflow: str | None, outcome: str | None) -> dict[tuple[str, str], Counts]:
    """All-time counts per pair: one GROUP BY over the decisions table."""
    t = store.decisions
    kind = t.c.data["review"]["kind"].as_string()
    wrong = t.c.data["review"]["wrong"]["by"].as_string()

    def count(cond: Any) -> Any:
        return sa.func.sum(sa.case((cond, 1), else_=0))

    stmt = (
        sa.select(
            t.c.workflow,
            t.c.outcome,
            sa.func.count().label("settled"),
            count(kind.in_(REVIEW_KINDS)).label("reviews"),
            count(kind == "approved").label("approved"),
            count(kind == "approved_with_changes").label("changed"),
            count(kind == "rejected").label("rejected"),
            count(wrong.is_not(None)).label("wrong"),
            count(kind.is_(None)).label("autonomous"),
            count(t.c.status == "failed").label("failures"),
        )
        .where(_settled_filter(t))
        .group_by(t.c.workflow, t.c.outcome)
    )
    if workflow is not None:
        stmt = stmt.where(t.c.workflow == workflow)
    if outcome is not None:
        stmt = stmt.where(t.c.outcome == outcome)
    out = {}
    with store.engine.connect() as conn:
        for r in conn.execute(stmt):
            out[(r.workflow, r.outcome)] = Counts(
                settled=int(r.settled),
                reviews=int(r.reviews or 0),
                approved=int(r.approved or 0),
                approved_with_changes=int(r.changed or 0),
                rejected=int(r.rejected or 0),
                marked_wrong=int(r.wrong or 0),
                autonomous=int(r.autonomous or 0),
                failures=int(r.failures or 0),
            )
    return out


def _corrections(
    store: Store, workflow: str | None, outcome: str | None, among: list[str] | None = None
) -> dict[str, tuple[str, str]]:
    """Executed decisions (of the pair, or all; only those ``among`` when given) that a later
    executed decision on the same subject reversed: ``{decision id: (workflow, outcome)}``. One
    already counted as an override (changed or marked wrong) is left out."""
    t = store.decisions
    kind = t.c.data["review"]["kind"].as_string()
    stmt = sa.select(t.c.id, t.c.workflow, t.c.outcome, t.c.subject, t.c.created_at).where(
        t.c.status == "executed",
        # counted once: an approval with changes or a wrong mark is an override already
        sa.or_(kind.is_(None), kind != "approved_with_changes"),
        t.c.data["review"]["wrong"]["by"].as_string().is_(None),
    )
    if workflow is not None:
        stmt = stmt.where(t.c.workflow == workflow)
    if outcome is not None:
        stmt = stmt.where(t.c.outcome == outcome)
    if among is not None:
        stmt = stmt.where(t.c.id.in_(among))
    with store.engine.connect() as conn:
        executed = conn.execute(stmt).all()
        if not executed:
            return {}
        # The latest reversing execution per subject (subjects of executed decisions only).
        later = sa.select(t.c.subject, t.c.created_at, t.c.data["actions"].label("actions")).where(
            t.c.status == "executed"
        )
        if workflow is not None or outcome is not None or among is not None:
            later = later.where(t.c.subject.in_(sorted({r.subject for r in executed})))
        last_reverse: dict[str, datetime] = {}
        for r in conn.execute(later):
            if any(str(a.get("type")) in REVERSING for a in (r.actions or []) if isinstance(a, dict)):
                at = _utc(r.created_at)
                if r.subject not in last_reverse or at > last_reverse[r.subject]:
                    last_reverse[r.subject] = at
    return {
        r.id: (r.workflow, r.outcome)
        for r in executed
        if r.subject in last_reverse and last_reverse[r.subject] > _utc(r.created_at)
    }


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def trust(
    store: Store,
    policy: Policy | None = None,
    workflow: str | None = None,
    outcome: str | None = None,
    *,
    windows_only: bool = False,
) -> list[Trust]:
    """The measured trust of every pair with settled decisions (or of one workflow / pair).

    ``windows_only`` (the check after each review): later corrections are looked for among the
    windows' decisions only, so the all-time ``corrected`` count covers those alone; the rules read
    the windows, so what they decide is the same, at a cost bounded by the window."""
    policy = policy or store.get_policy()
    rules = [rule_of(policy, w) for w in (policy.autonomy_rules or {})] + [AutonomyRule()]
    depth = max(max(r.window, r.demote_window, r.no_failure_in_last) for r in rules)
    rows = _rows(store, workflow, outcome, depth)
    totals = _all_time(store, workflow, outcome)
    among = [r.id for pair in rows.values() for r in pair] if windows_only else None
    corrected = _corrections(store, workflow, outcome, among)
    for (w, o), n in _count_pairs(corrected).items():
        totals.setdefault((w, o), Counts()).corrected = n
    out = []
    for (w, o), total in sorted(totals.items()):
        rule = rule_of(policy, w)
        pair_rows = rows.get((w, o), [])
        for r in pair_rows:
            r.corrected = r.id in corrected
        window, recent = Counts(), Counts()
        for r in pair_rows[: rule.window]:
            _add(window, r)
        for r in pair_rows[: rule.demote_window]:
            _add(recent, r)
        fails = sum(r.status == "failed" for r in pair_rows[: rule.no_failure_in_last])
        item = Trust(w, o, mode_of(policy, w, o), total, window, recent, fails, rule)  # type: ignore[arg-type]
        _judge(item)
        out.append(item)
    return out


def _count_pairs(corrected: dict[str, tuple[str, str]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for pair in corrected.values():
        out[pair] = out.get(pair, 0) + 1
    return out


def _judge(t: Trust) -> None:
    rule, w = t.rule, t.window
    _, upper = wilson(w.overrides, w.settled)
    if w.reviews < rule.min_reviews:
        t.why_not.append(f"{w.reviews} reviews in the window < {rule.min_reviews}")
    if w.settled == 0 or upper > rule.max_override_upper:
        t.why_not.append(f"override rate's Wilson upper bound {upper:.3f} > {rule.max_override_upper:g}")
    if t.failures_in_last:
        t.why_not.append(f"{t.failures_in_last} failure(s) in the last {rule.no_failure_in_last}")
    t.eligible = not t.why_not and t.mode != "observe"
    if t.mode == "observe" and not t.why_not:
        t.why_not.append("the pair runs in observe mode")
    r = t.recent
    if t.mode == "autonomous" and r.settled >= rule.demote_min:
        if r.rate(r.overrides) > rule.demote_override_rate:
            t.demote_why.append(
                f"override rate {r.rate(r.overrides):.2f} in the last {r.settled} > {rule.demote_override_rate:g}"
            )
        if r.rate(r.failures) > rule.demote_failure_rate:
            t.demote_why.append(
                f"failure rate {r.rate(r.failures):.2f} in the last {r.settled} > {rule.demote_failure_rate:g}"
            )
    t.demote = bool(t.demote_why)


def pair_trust(
    store: Store, workflow: str, outcome: str, policy: Policy | None = None, *, windows_only: bool = True
) -> Trust:
    found = trust(store, policy, workflow, outcome, windows_only=windows_only)
    if found:
        return found[0]
    policy = policy or store.get_policy()
    rule = rule_of(policy, workflow)
    empty = Trust(workflow, outcome, mode_of(policy, workflow, outcome), Counts(), Counts(), Counts(), 0, rule)  # type: ignore[arg-type]
    _judge(empty)
    return empty


def _set_mode(store: Store, t: Trust, mode: Mode, actor: str, reason: str, kind: str) -> dict[str, Any]:
    policy = store.get_policy()
    modes = {**policy.outcome_modes, t.pair: mode}
    new = policy.model_copy(update={"outcome_modes": modes})
    evidence = t.report()
    summary = (
        f"{kind} {t.pair} to {mode}: {reason} (window: {t.window.reviews} reviews, "
        f"{t.window.overrides} overrides, upper {evidence['window']['override_wilson'][1]}; "
        f"recent: {t.recent.settled} settled, {t.recent.overrides} overrides, {t.recent.failures} failures)"
    )
    version = policy_versions.change(store, new, actor, summary)
    store.append_audit(
        f"autonomy.{kind}",
        t.pair,
        actor,
        {
            "pair": t.pair,
            "mode": mode,
            "reason": reason,
            "version": version.version if version else None,
            "evidence": evidence,
        },
    )
    log.info(f"autonomy.{kind}", pair=t.pair, mode=mode, actor=actor, reason=reason)
    return {"pair": t.pair, "mode": mode, "version": version.version if version else None, "evidence": evidence}


def promote(
    store: Store, workflow: str, outcome: str, actor: str, reason: str, *, force: bool = False
) -> dict[str, Any]:
    """Make a pair autonomous: a policy version with the evidence. Refused (``NotEligible``) when the
    rule does not make it eligible, unless ``force`` (an admin's explicit override, recorded)."""
    if not reason.strip():
        raise NotEligible("a promotion needs a reason")
    t = pair_trust(store, workflow, outcome, windows_only=False)
    if t.mode == "autonomous":
        raise NotEligible(f"{t.pair} is autonomous already")
    if not t.eligible and not force:
        raise NotEligible(f"{t.pair} is not eligible: " + "; ".join(t.why_not))
    why = reason if t.eligible else f"{reason} [forced: {'; '.join(t.why_not)}]"
    return _set_mode(store, t, "autonomous", actor, why, "promoted")


def demote(store: Store, workflow: str, outcome: str, actor: str, reason: str) -> dict[str, Any] | None:
    """Take a pair back to propose (a policy version with the evidence); None when it is not autonomous."""
    t = pair_trust(store, workflow, outcome, windows_only=False)
    if t.mode != "autonomous":
        return None
    return _set_mode(store, t, "propose", actor, reason, "demoted")


def after_review(store: Store, decision: Decision) -> dict[str, Any] | None:
    """The decision service's hook after each review: demote the decision's pair when its recent
    window crossed a limit, or promote it when the rule allows automatic promotion."""
    policy = store.get_policy()
    if mode_of(policy, decision.workflow, decision.outcome) == "observe":
        return None
    t = pair_trust(store, decision.workflow, decision.outcome, policy)
    if t.demote:
        return _set_mode(store, t, "propose", SYSTEM_ACTOR, "; ".join(t.demote_why), "demoted")
    if t.eligible and t.rule.auto_promote and t.mode == "propose":
        return _set_mode(store, t, "autonomous", SYSTEM_ACTOR, "eligible under the rule (auto_promote)", "promoted")
    return None
