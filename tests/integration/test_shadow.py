"""Shadow replay over HTTP and from the command line: a candidate policy re-gates a period's
decisions; the answer is deterministic, and nothing reaches the twin or the store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration.conftest import Stack, order_event


def state_of(stack: Stack) -> tuple[Any, ...]:
    """What a write anywhere would change: the twin's applied actions and state, the decisions,
    the audit chain and the policy."""
    store = stack.container.store
    return (
        json.dumps(stack.state.applied_actions(), sort_keys=True, default=str),
        json.dumps(stack.state.export_state(), sort_keys=True, default=str),
        [d.model_dump_json() for d in store.list_decisions(limit=10_000)],
        [e.hash for e in store.audit(limit=10_000)],
        store.get_policy().model_dump_json(),
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
