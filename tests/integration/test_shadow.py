"""Shadow replay over HTTP and from the command line: a candidate policy re-gates a period's
decisions, or (``--engines``) decides its recorded events again on their recorded reads; the answer
is deterministic, and nothing reaches the twin, the store or the live Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.decisions import Action
from tests.integration.conftest import Stack, order_event
from tools.recording import ReadOnlySystems, ReadOnlyViolation


def state_of(stack: Stack) -> tuple[Any, ...]:
    """What a write anywhere would change: the twin's applied actions and state, the decisions,
    the action log, the event records, the audit chain, the policy, and the live Redis's keys."""
    import sqlalchemy as sa

    store = stack.container.store
    with store.engine.connect() as conn:
        actions = conn.execute(sa.select(sa.func.count()).select_from(store.action_log)).scalar()
        records = conn.execute(sa.select(sa.func.count()).select_from(store.event_records)).scalar()
    prefix = stack.container.settings.stream_prefix
    redis_keys = sorted(str(k) for k in stack.container.redis.scan_iter(match=f"{prefix}:*", count=1000))
    memo = sorted(k for k in redis_keys if ":seen:" in k or ":recheck:" in k or ":value:" in k)
    return (
        json.dumps(stack.state.applied_actions(), sort_keys=True, default=str),
        json.dumps(stack.state.export_state(), sort_keys=True, default=str),
        [d.model_dump_json() for d in store.list_decisions(limit=10_000)],
        actions,
        records,
        [e.hash for e in store.audit(limit=10_000)],
        store.get_policy().model_dump_json(),
        memo,
    )


def test_replay_regates_the_period_and_writes_nothing(stack: Stack, tmp_path: Path) -> None:
    stack.set_policy(modes={"order_release": "propose"})
    since = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(3):
        stack.publish(order_event(f"SO-S{n}", [("SKU-100", 1)]))
    stack.drain()
    until = datetime.now(UTC) + timedelta(seconds=1)
    before = state_of(stack)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    body: dict[str, Any] = {
        **window,
        "policy": {"modes": {"order_release": "autonomous"}},
    }
    resp = stack.client.post("/v1/replay", json=body, headers=stack.headers("planner"))
    assert resp.status_code == 200, resp.text
    got = resp.json()
    pair = got["pairs"]["order_release/released"]
    assert pair["before"]["reviews_needed"] == 3 and pair["before"]["executed"] == 0
    assert pair["after"]["reviews_needed"] == 0 and pair["after"]["executed"] == 3
    assert pair["moves"] == {"review->executed": 3}
    assert got["policy"]["modes"]["order_release"] == "autonomous"
    # deterministic, and nothing was written anywhere
    assert stack.client.post("/v1/replay", json=body, headers=stack.headers("planner")).json() == got
    assert state_of(stack) == before
    # the command line gives the same report
    policy_file = tmp_path / "candidate.json"
    policy_file.write_text(json.dumps({"modes": {"order_release": "autonomous"}}))
    cli = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "replay", "--since", window["since"], "--until", window["until"]]
        + ["--policy", str(policy_file), "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == got
    assert state_of(stack) == before
    # refusals
    bad = {**body, "policy": {"review_cost_above": -1}}
    assert stack.client.post("/v1/replay", json=bad, headers=stack.headers("planner")).status_code == 422
    backwards = {**body, "since": window["until"], "until": window["since"]}
    assert stack.client.post("/v1/replay", json=backwards, headers=stack.headers("planner")).status_code == 422
    assert stack.client.post("/v1/replay", json=body, headers=stack.headers("cs_rep")).status_code == 403
    ancient = {**body, "since": "0001-01-01T00:00:00+00:01", "until": "0001-01-01T00:00:00Z"}
    assert stack.client.post("/v1/replay", json=ancient, headers=stack.headers("planner")).status_code == 422


def test_shadow_mode_records_the_candidates_verdict_beside_the_live_one_and_executes_only_the_live(
    stack: Stack,
) -> None:
    # Live: order_release autonomous. Candidate: everything above 0 in cost waits for a person.
    stack.set_policy(
        modes={"order_release": "autonomous"},
        shadow={"workflows": ["order_release"], "candidate": {"review_cost_above": 0}},
    )
    planner = stack.headers("planner")
    resp = stack.publish(order_event("SO-S1", [("SKU-100", 2)]))
    stack.drain()
    [d] = stack.client.get(f"/v1/jobs/{resp.json()['job_id']}", headers=planner).json()["decisions"]
    assert d["status"] == "executed"  # the live policy acted
    assert d["evidence"]["shadow"]["live"] == "executed" and d["evidence"]["shadow"]["candidate"] == "review"
    assert d["evidence"]["shadow"]["agree"] is False
    assert [(a.node, a.qty) for ln in stack.state.order("SO-S1").lines for a in ln.allocations] == [("DC-EAST", 2)]
    report = stack.client.get("/v1/shadow", headers=planner).json()
    assert report["decisions"] == 1 and report["agreement"] == 0.0
    assert report["pairs"]["order_release/released"] == {"decisions": 1, "agree": 0, "agreement": 0.0}
    assert report["disagreed"][0]["decision"] == d["id"]


def test_a_shadow_candidate_that_is_not_a_valid_policy_is_refused_with_the_field(stack: Stack) -> None:
    admin = stack.headers("admin")
    bad = {"shadow": {"workflows": ["order_release"], "candidate": {"review_cost_above": -1}}}
    resp = stack.client.patch("/v1/policy", json=bad, headers=admin)
    assert resp.status_code == 422 and "review_cost_above" in resp.text
    unknown = {"shadow": {"workflows": ["order_release"], "candidate": {"reveiw_cost_above": 5}}}
    resp = stack.client.patch("/v1/policy", json=unknown, headers=admin)
    assert resp.status_code == 422 and "reveiw_cost_above" in resp.text


def test_an_engine_replay_decides_the_recorded_events_again_and_writes_nothing(stack: Stack, tmp_path: Path) -> None:
    """A real pipeline over the twin keeps each event with its reads; the engine replay of the period
    with the policy in force changes nothing, a stricter candidate sends the costed releases to
    review, and neither reaches the twin, the action log, the decisions, the audit chain or Redis."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    for n, qty in enumerate((2, 40, 3)):
        stack.publish(order_event(f"SO-E{n}", [("SKU-100", qty)]))
    stack.drain()
    # A decision taken while recording is off has no record: it cannot be replayed, and says so.
    stack.container.store.record_reads = False
    try:
        stack.publish(order_event("SO-E9", [("SKU-200", 1)]))
        stack.drain()
    finally:
        stack.container.store.record_reads = True
    until = datetime.now(UTC) + timedelta(seconds=1)
    records = stack.container.store.event_records_between(since, until)
    assert [r["event_id"] for r in records] == ["evt-SO-E0", "evt-SO-E1", "evt-SO-E2"]
    assert all(r["reads"]["calls"] and r["decisions"]["decided"] for r in records)
    before = state_of(stack)
    planner = stack.headers("planner")
    window = {"since": since.isoformat(), "until": until.isoformat(), "method": "engines"}

    same = stack.client.post("/v1/replay", json={**window, "policy": {}}, headers=planner)
    assert same.status_code == 200, same.text
    got = same.json()
    assert got["method"] == "engines" and got["events"] == 3 and got["replayed"] == 3
    assert got["total"]["changed"] == 0 and got["changed"] == [] and got["decisions"] == 3
    assert got["not_replayable"]["count"] == 1
    assert got["not_replayable"]["events"][0]["event_id"] == "evt-SO-E9"
    assert "no recorded reads" in next(iter(got["not_replayable"]["reasons"]))

    executed = [
        d
        for d in stack.container.store.list_decisions(limit=100)
        if d.status == "executed" and d.cost_impact > 0 and d.event_id != "evt-SO-E9"
    ]
    assert executed  # the releases that cost something and ran without a person
    strict = {**window, "policy": {"review_cost_above": 0}}
    diff = stack.client.post("/v1/replay", json=strict, headers=planner).json()
    assert sorted(c["id"] for c in diff["changed"]) == sorted(d.id for d in executed)
    assert diff["total"]["moves"] == {"executed->review": len(executed)}
    assert diff["total"]["delta"]["reviews_needed"] == len(executed)
    assert diff["total"]["delta"]["oversells"] == 0 and diff["total"]["after"]["oversells"] == 0
    # deterministic, over HTTP and from the command line, and nothing was written anywhere
    assert stack.client.post("/v1/replay", json=strict, headers=planner).json() == diff
    policy_file = tmp_path / "strict.json"
    policy_file.write_text(json.dumps({"review_cost_above": 0}))
    cli = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "replay", "--engines", "--since", window["since"]]
        + ["--until", window["until"], "--policy", str(policy_file), "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == diff
    # the console's Replay page, the same method
    from api.console.auth import CSRF_FIELD
    from tests.integration.test_autonomy import _csrf, _signed_in

    console = _signed_in(stack, "planner")
    try:
        page = console.get("/console/replay")
        form = {CSRF_FIELD: _csrf(page.text), "since": window["since"], "until": window["until"]}
        shown = console.post(
            "/console/replay", data={**form, "policy": '{"review_cost_above": 0}', "method": "engines"}
        )
        assert shown.status_code == 200 and 'id="replay-changed"' in shown.text
        assert all(d.id in shown.text for d in executed) and 'id="replay-not-replayable"' in shown.text
    finally:
        console.close()
    assert state_of(stack) == before

    # A read-only wrapper over the live connectors: a write is an error and never reaches the twin.
    read_only = ReadOnlySystems(stack.container.pipeline.systems).systems
    assert read_only.oms.order("SO-E0").order.id == "SO-E0"
    hold = Action(system="oms", type="update_order_status", payload={"order_id": "SO-E0", "status": "held"})
    for port in (read_only.wms, read_only.erp, read_only.oms, read_only.notify):
        with pytest.raises(ReadOnlyViolation):
            port.apply(hold)
    assert state_of(stack) == before
