"""Guarded autonomy: Wilson intervals, measured trust over a store, eligibility, promotion and
demotion as policy versions, the per-outcome gate, and the shadow replay's diff (hand-computed)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.decisions import Action, Decision, Proposal
from domain.governance import gate, mode_of
from domain.models import AutonomyRule, Policy
from runtime import autonomy, policy_versions, shadow
from runtime.store import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)
N = 0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The JSON paths and the window function differ by dialect: each test runs on SQLite, and on
    PostgreSQL too when ``DATABASE_URL`` names a server (a fresh database, dropped afterwards)."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
        s.create_schema()
        yield s
        s.close()
        return
    from tests import services

    if not (services.MACHINE_DATABASE_URL or "").startswith("postgres"):
        pytest.skip("DATABASE_URL names no PostgreSQL server")
    from tests.integration.conftest import fresh_pg_database

    with fresh_pg_database() as url:
        s = Store(url)
        s.create_schema()
        yield s
        s.close()


def action(kind: str = "allocate") -> Action:
    return Action(system="oms", type=kind, payload={"order_id": "SO", "sku": "SKU-1", "qty": 1})


def make(
    workflow: str = "allocation",
    outcome: str = "released",
    *,
    status: str = "executed",
    kind: str | None = None,
    at: datetime | None = None,
    subject: str | None = None,
    cost: float = 10.0,
    confidence: float = 0.9,
    review_required: bool = False,
    gate_reason: str = "",
    actions: list[Action] | None = None,
    wrong: bool = False,
) -> Decision:
    global N
    N += 1
    review: dict[str, Any] | None = {"kind": kind, "by": "planner:p"} if kind else None
    if wrong:
        review = {**(review or {}), "wrong": {"by": "planner:p", "reason": "no"}}
    return Decision(
        id=f"dec-{N:06d}",
        event_id=None,
        workflow=workflow,
        subject=subject or f"SO-{N}",
        outcome=outcome,
        confidence=confidence,
        cost_impact=cost,
        human_review_required=review_required or kind is not None,
        status=status,
        rationale="r",
        evidence={"governance": gate_reason},
        actions=[action()] if actions is None else actions,
        created_at=at or T0 + timedelta(minutes=N),
        review=review,
    )


def seed(store: Store, *decisions: Decision) -> None:
    for d in decisions:
        assert store.save_decision(d)


def test_wilson_interval_matches_the_textbook_values() -> None:
    lo, hi = autonomy.wilson(0, 124)
    assert lo == 0.0 and hi == pytest.approx(0.0301, abs=1e-4)  # z²/(n+z²)
    lo, hi = autonomy.wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert autonomy.wilson(0, 0) == (0.0, 1.0)


def test_trust_counts_reviews_overrides_failures_and_corrections(store: Store) -> None:
    seed(
        store,
        make(kind="approved"),
        make(kind="approved"),
        make(kind="approved_with_changes"),
        make(kind="rejected", status="rejected"),
        make(kind="approved", status="failed"),
        make(kind="stale", status="superseded"),  # not a judgement: not counted
        make(status="pending_review", review_required=True),  # not settled
        make(status="executed", wrong=True),  # autonomous, marked wrong
        make(status="executed", subject="SO-X"),  # autonomous, corrected later:
        make("allocation", "re_sourced", status="executed", subject="SO-X", actions=[action("release_allocation")]),
        make(status="observed"),  # not settled
    )
    [other, pair] = autonomy.trust(store, Policy(modes={"allocation": "autonomous"}))
    assert (pair.workflow, pair.outcome, other.outcome) == ("allocation", "released", "re_sourced")
    a = pair.all_time
    assert (a.settled, a.reviews, a.approved, a.approved_with_changes, a.rejected) == (7, 5, 3, 1, 1)
    assert (a.marked_wrong, a.corrected, a.autonomous, a.failures, a.overrides) == (1, 1, 2, 1, 4)
    w = pair.window
    assert (w.settled, w.reviews, w.overrides, w.failures, w.corrected) == (7, 5, 4, 1, 1)
    report = pair.report()
    assert report["all_time"]["override_rate"] == round(4 / 7, 4)
    assert report["all_time"]["override_wilson"] == [round(x, 4) for x in autonomy.wilson(4, 7)]
    assert not pair.eligible and pair.why_not
    # the check after each review looks for corrections in the windows only: the same figures here
    quick = autonomy.pair_trust(store, "allocation", "released", Policy(modes={"allocation": "autonomous"}))
    assert quick.window == pair.window and quick.all_time == pair.all_time


def test_a_clean_record_is_eligible_and_a_promotion_is_a_policy_version_with_evidence(store: Store) -> None:
    store.set_policy(Policy(modes={"allocation": "propose"}))
    seed(store, *[make(kind="approved") for _ in range(60)])
    rule = AutonomyRule(min_reviews=50, max_override_upper=0.07)
    store.set_policy(Policy(modes={"allocation": "propose"}, autonomy_rules={"allocation": rule}))
    [t] = autonomy.trust(store)
    assert t.eligible, t.why_not
    # under the defaults (upper bound ≤ 3 %), 60 clean reviews are not enough: z²/(60+z²) > 0.03
    store.set_policy(Policy(modes={"allocation": "propose"}))
    with pytest.raises(autonomy.NotEligible, match="Wilson upper bound"):
        autonomy.promote(store, "allocation", "released", "admin:ann", "week 4")
    store.set_policy(Policy(modes={"allocation": "propose"}, autonomy_rules={"allocation": rule}))
    done = autonomy.promote(store, "allocation", "released", "admin:ann", "week 4: clean")
    policy = store.get_policy()
    assert policy.outcome_modes == {"allocation/released": "autonomous"}
    assert mode_of(policy, "allocation", "released") == "autonomous"
    assert mode_of(policy, "allocation", "re_sourced") == "propose"
    [version] = policy_versions.history(store)
    assert version.actor == "admin:ann" and "week 4: clean" in (version.reason or "")
    assert version.diff == {"outcome_modes.allocation/released": {"from": None, "to": "autonomous"}}
    [entry] = store.audit(kind="autonomy.promoted")
    assert entry.payload["evidence"]["window"]["reviews"] == 60 and entry.payload["version"] == done["version"]


def test_a_burst_of_rejections_demotes_an_autonomous_pair(store: Store) -> None:
    store.set_policy(Policy(modes={"backorder_prevention": "autonomous"}))
    wf, out = "backorder_prevention", "transfer_proposed"
    seed(store, *[make(wf, out, kind="approved") for _ in range(15)])
    last = make(wf, out, kind="approved")
    seed(store, last)
    assert autonomy.after_review(store, last) is None  # 0 overrides in the last 20
    for _ in range(4):
        last = make(wf, out, kind="rejected", status="rejected")
        seed(store, last)
        assert autonomy.after_review(store, last) is None  # 1/17, 2/18, 3/19, 4/20: ≤ 0.2
    last = make(wf, out, kind="rejected", status="rejected")
    seed(store, last)
    demoted = autonomy.after_review(store, last)  # 5 of the last 20 = 0.25 > 0.2
    assert demoted is not None and demoted["mode"] == "propose"
    policy = store.get_policy()
    assert policy.outcome_modes == {f"{wf}/{out}": "propose"}
    assert mode_of(policy, "backorder_prevention", "held") == "autonomous"  # the workflow's other outcomes stay
    [version] = policy_versions.history(store)
    assert version.actor == autonomy.SYSTEM_ACTOR and "override rate" in (version.reason or "")
    [entry] = store.audit(kind="autonomy.demoted")
    assert entry.payload["evidence"]["recent"]["rejected"] == 5
    assert autonomy.after_review(store, last) is None  # propose now: nothing more to demote


def test_failures_demote_too(store: Store) -> None:
    store.set_policy(Policy(modes={"allocation": "autonomous"}))
    seed(store, *[make() for _ in range(8)], *[make(status="failed") for _ in range(2)])
    last = make(status="failed")
    seed(store, last)
    done = autonomy.after_review(store, last)
    assert done is not None and "failure rate" in done["evidence"]["demote_why"][0]


def test_auto_promotion_when_the_rule_says_so(store: Store) -> None:
    rule = AutonomyRule(min_reviews=5, max_override_upper=0.5, auto_promote=True)
    store.set_policy(Policy(modes={"allocation": "propose"}, autonomy_rules={"allocation": rule}))
    ds = [make(kind="approved") for _ in range(6)]
    seed(store, *ds)
    done = autonomy.after_review(store, ds[-1])
    assert done is not None and done["mode"] == "autonomous"
    assert store.get_policy().outcome_modes == {"allocation/released": "autonomous"}


def test_the_gate_uses_the_pairs_mode_before_the_workflows() -> None:
    p = Proposal(workflow="allocation", subject="SO-1", outcome="released", confidence=0.9, rationale="r")
    p.actions = [action()]
    policy = Policy(modes={"allocation": "propose"}, outcome_modes={"allocation/released": "autonomous"})
    assert gate(p, policy).status == "executed"
    assert gate(p, policy).reason == "allocation/released is autonomous and within thresholds"
    other = p.model_copy(update={"outcome": "re_sourced"})
    assert gate(other, policy).reason == "allocation runs in propose mode"
    observe = Policy(modes={"allocation": "autonomous"}, outcome_modes={"allocation/released": "observe"})
    assert gate(p, observe).status == "observed"


def test_outcome_modes_keys_are_validated() -> None:
    with pytest.raises(ValueError, match="workflow/outcome"):
        Policy.model_validate({"outcome_modes": {"allocation": "autonomous"}})
    with pytest.raises(ValueError, match="workflow/outcome"):
        Policy.model_validate({"outcome_modes": {"nope/x": "autonomous"}})
    with pytest.raises(ValueError):
        Policy.model_validate({"outcome_modes": {"allocation/x": "yolo"}})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shadow_replay_diff_matches_a_hand_computed_case_and_writes_nothing(store: Store, tmp_path: Path) -> None:
    """Five recorded decisions, the live policy reviewed above 1000; the candidate reviews above 100.

    before: a (cost 50, executed), b (cost 500, executed), c (cost 2000, review), d (engine asked for
    review, cost 20), e (observed). after (review above 100): a executed, b review, c review,
    d review (the engine's reason stands), e observed (no actions)."""
    seed(
        store,
        a := make(cost=50, gate_reason="allocation is autonomous and within thresholds"),
        make(cost=500, gate_reason="allocation is autonomous and within thresholds"),
        c := make(cost=2000, status="pending_review", review_required=True, gate_reason="cost impact 2000 > 1000"),
        make(cost=20, status="pending_review", review_required=True, gate_reason="promise date to a customer"),
        make(cost=0, status="observed", actions=[], gate_reason="nothing to execute"),
        make(at=T0 + timedelta(days=3)),  # outside the period
    )
    candidate = Policy(modes={"allocation": "autonomous"}, review_cost_above=100)
    sqlite = store.dialect == "sqlite"
    before = _digest(tmp_path / "store.db") if sqlite else ""
    audit_before = len(store.audit(limit=10_000))
    got = shadow.replay(store, T0, T0 + timedelta(days=1), candidate)
    assert got["decisions"] == 5
    pair = got["pairs"]["allocation/released"]
    assert pair["before"] == {"reviews_needed": 2, "executed": 2, "observed": 1, "cost_executed": 550.0}
    assert pair["after"] == {"reviews_needed": 3, "executed": 1, "observed": 1, "cost_executed": 50.0}
    assert pair["delta"] == {"reviews_needed": 1, "executed": -1, "observed": 0, "cost_executed": -500.0}
    assert pair["moves"] == {"executed->review": 1} and pair["changed"] == 1
    assert got["total"]["delta"] == pair["delta"]
    # deterministic: the same inputs give the same output
    assert shadow.replay(store, T0, T0 + timedelta(days=1), candidate) == got
    # a looser candidate executes c and keeps d for review (the engine's own reason)
    loose = shadow.replay(store, T0, T0 + timedelta(days=1), candidate.model_copy(update={"review_cost_above": 5000}))
    assert loose["pairs"]["allocation/released"]["after"]["executed"] == 3
    assert shadow.proposal_of(c).review_required is False
    assert shadow.candidate_route(a, Policy()) == "observed"  # a fresh policy observes
    # nothing was written
    assert len(store.audit(limit=10_000)) == audit_before
    assert not sqlite or _digest(tmp_path / "store.db") == before
    assert len(store.list_decisions(limit=100)) == 6 and store.get_policy() == Policy()
