"""The governance policy over HTTP: a fresh install observes, PATCH merges, PUT replaces only when
complete, bad values are refused by name, and every change is a version in the audit chain."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.governance import WORKFLOWS
from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.integration.people import add_key

FULL = {
    "receipt_tolerance_pct": 2.0,
    "review_cost_above": 1000.0,
    "review_confidence_below": 0.7,
    "modes": {"order_release": "autonomous"},
    "policy": "crossdock",
    "wave_window_hours": 3.0,
    "split_only_for_service": True,
    "posting_grace_hours": 4.0,
    "four_eyes_cost_above": {},
    "outcome_modes": {},
    "autonomy_rules": {},
    "shadow": None,
}


@pytest.fixture
def fresh(tmp_path: Path, redis_url: str, example: dict[str, Any]) -> Iterator[Stack]:
    """A stack whose store holds no policy: what a fresh install runs."""
    s = make_stack(tmp_path, redis_url, example, policy=None)
    yield s
    close_stack(s)


def policy(stack: Stack) -> dict[str, Any]:
    got: dict[str, Any] = stack.client.get("/v1/policy", headers=stack.headers("planner")).json()
    return got


def locs(resp: Any) -> list[str]:
    assert resp.status_code == 422, resp.text
    return [e["loc"] for e in resp.json()["detail"]]


def test_a_fresh_install_observes_every_workflow_and_writes_nothing(fresh: Stack) -> None:
    assert policy(fresh)["modes"] == {}
    resp = fresh.publish(order_event("SO-1", [("SKU-100", 4)], customer="CUST-1"))
    assert fresh.drain() == 1
    job = fresh.client.get(f"/v1/jobs/{resp.json()['job_id']}", headers=fresh.headers("gateway")).json()
    [decision] = job["decisions"]
    assert (decision["outcome"], decision["status"]) == ("released", "observed")
    assert decision["evidence"]["governance"] == "order_release runs in observe mode"
    assert decision["actions"]  # decided and recorded ...
    assert fresh.state.applied_actions() == []  # ... and nothing was written
    assert fresh.state.order("SO-1").status != "released"
    assert fresh.state.export_state()["wms"]["waves"] == []


def test_patch_changes_only_what_it_names(fresh: Stack) -> None:
    admin = fresh.headers("admin")
    first = fresh.client.patch("/v1/policy", json={"modes": {"order_release": "propose"}}, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["modes"] == {"order_release": "propose"}
    second = fresh.client.patch(
        "/v1/policy", json={"modes": {"allocation": "autonomous"}, "review_cost_above": 250}, headers=admin
    )
    assert second.status_code == 200, second.text
    now = policy(fresh)
    assert now == second.json()
    assert now["modes"] == {"order_release": "propose", "allocation": "autonomous"}
    assert (now["review_cost_above"], now["review_confidence_below"]) == (250, 0.7)
    # null takes a workflow back to the default (observe)
    fresh.client.patch("/v1/policy", json={"modes": {"allocation": None}}, headers=admin).raise_for_status()
    assert policy(fresh)["modes"] == {"order_release": "propose"}
    # the propose step of the rollout: proposals wait for a planner, still nothing is written
    fresh.publish(order_event("SO-1", [("SKU-100", 4)], customer="CUST-1"))
    fresh.drain()
    [decision] = fresh.container.store.list_decisions(subject="SO-1")
    assert decision.status == "pending_review" and fresh.state.applied_actions() == []


def test_put_replaces_only_with_every_field(fresh: Stack) -> None:
    admin = fresh.headers("admin")
    partial = {k: v for k, v in FULL.items() if k not in ("posting_grace_hours", "four_eyes_cost_above")}
    resp = fresh.client.put("/v1/policy", json=partial, headers=admin)
    assert sorted(locs(resp)) == ["body.four_eyes_cost_above", "body.posting_grace_hours"]
    assert policy(fresh)["modes"] == {}  # nothing changed
    ok = fresh.client.put("/v1/policy", json=FULL, headers=admin)
    assert ok.status_code == 200, ok.text
    assert policy(fresh) == FULL
    # a PUT replaces the modes: the ones it leaves out go back to observe
    fresh.client.put("/v1/policy", json={**FULL, "modes": {"allocation": "propose"}}, headers=admin)
    assert policy(fresh)["modes"] == {"allocation": "propose"}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"modes": {"order_relase": "autonomous"}}, "body.modes.order_relase"),
        ({"modes": {"order_release": "yolo"}}, "body.modes.order_release"),
        ({"review_cost_above": "NaN"}, "body.review_cost_above"),
        ({"review_cost_above": "Infinity"}, "body.review_cost_above"),
        ({"review_confidence_below": "-Infinity"}, "body.review_confidence_below"),
        ({"wave_window_hours": "inf"}, "body.wave_window_hours"),
        ({"review_cost_above": -1}, "body.review_cost_above"),
        ({"receipt_tolerance_pct": -0.5}, "body.receipt_tolerance_pct"),
        ({"review_confidence_below": 1.5}, "body.review_confidence_below"),
        ({"posting_grace_hours": -2}, "body.posting_grace_hours"),
        ({"split_only_for_service": "sometimes"}, "body.split_only_for_service"),
        ({"four_eyes_cost_above": {"order_release": -10}}, "body.four_eyes_cost_above.order_release"),
        ({"four_eyes_cost_above": {"order_release": "NaN"}}, "body.four_eyes_cost_above.order_release"),
        ({"four_eyes_cost_above": {"nobody": 10}}, "body.four_eyes_cost_above.nobody"),
        ({"review_cost_abov": 10}, "body.review_cost_abov"),
    ],
)
def test_bad_values_are_refused_by_name(fresh: Stack, body: dict[str, Any], where: str) -> None:
    before = policy(fresh)
    for method, payload in (("PATCH", body), ("PUT", {**FULL, **body})):
        resp = fresh.client.request(method, "/v1/policy", json=payload, headers=fresh.headers("admin"))
        assert any(loc == where or loc.startswith(where + ".") for loc in locs(resp)), (method, resp.text)
    assert policy(fresh) == before
    assert fresh.container.store.audit(kind="policy.changed") == []


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_json_numbers_change_nothing(fresh: Stack, number: float) -> None:
    """NaN and Infinity as JSON literals (what json.dumps and JavaScript write) are refused too:
    by the API's request guard when it sees them first, else by the policy model, by name."""
    before = policy(fresh)
    headers = {**fresh.headers("admin"), "Content-Type": "application/json"}
    for field, body in (
        ("review_cost_above", {"review_cost_above": number}),
        ("four_eyes_cost_above.order_release", {"four_eyes_cost_above": {"order_release": number}}),
    ):
        resp = fresh.client.patch("/v1/policy", content=json.dumps(body), headers=headers)
        assert resp.status_code == 422, resp.text
        assert all(e["loc"] in ("body", f"body.{field}") for e in resp.json()["detail"]), resp.text
    assert policy(fresh) == before
    assert fresh.container.store.audit(kind="policy.changed") == []


def test_only_an_admin_changes_the_policy(fresh: Stack) -> None:
    for role in ("planner", "cs_rep", "gateway"):
        resp = fresh.client.patch("/v1/policy", json={"review_cost_above": 1}, headers=fresh.headers(role))
        assert resp.status_code == 403
    assert fresh.client.get("/v1/policy/history", headers=fresh.headers("cs_rep")).status_code == 403


def test_every_change_is_a_version_in_the_audit_chain(fresh: Stack) -> None:
    ana = add_key(fresh, "ana", "admin")
    ben = add_key(fresh, "ben", "admin")
    step1 = fresh.client.patch(
        "/v1/policy",
        json={"modes": {"order_release": "propose"}, "reason": "week 2 of the rollout"},
        headers=ana,
    )
    assert step1.headers["X-Crossdock-Policy-Version"] == "1"
    step2 = fresh.client.patch(
        "/v1/policy",
        json={"modes": {"order_release": "autonomous"}, "review_cost_above": 400},
        headers={**ben, "X-Crossdock-Reason": "shadow period clean"},
    )
    assert step2.headers["X-Crossdock-Policy-Version"] == "2"
    # a change that changes nothing is no version
    same = fresh.client.patch("/v1/policy", json={"review_cost_above": 400}, headers=ben)
    assert same.status_code == 200 and "X-Crossdock-Policy-Version" not in same.headers

    history = fresh.client.get("/v1/policy/history", headers=fresh.headers("planner"))
    assert history.status_code == 200, history.text
    v1, v2 = history.json()
    assert (v1["version"], v1["actor"], v1["reason"]) == (1, "admin:ana", "week 2 of the rollout")
    assert v1["diff"] == {"modes.order_release": {"from": None, "to": "propose"}}
    assert (v2["version"], v2["actor"], v2["reason"]) == (2, "admin:ben", "shadow period clean")
    assert v2["diff"] == {
        "modes.order_release": {"from": "propose", "to": "autonomous"},
        "review_cost_above": {"from": 1000.0, "to": 400.0},
    }
    assert v2["policy"] == policy(fresh) and v1["at"] <= v2["at"]

    [e1, e2] = fresh.container.store.audit(kind="policy.changed")
    assert (e1.subject, e1.actor, e2.actor) == ("policy", "admin:ana", "admin:ben")
    assert set(e2.payload) == {"version", "actor", "reason", "diff", "policy"}
    verify = fresh.client.get("/v1/audit/verify", headers=fresh.headers("planner")).json()
    assert verify["ok"] is True


def test_the_generated_scenario_names_every_workflow() -> None:
    from twin.generator import generate

    modes = generate(7, "small")["settings"]["modes"]
    assert set(modes) == set(WORKFLOWS)
