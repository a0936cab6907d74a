"""Guarded autonomy over HTTP: measured trust per (workflow, outcome), a forced promotion, a burst
of rejections that demotes an autonomous pair, and a planner's "this was wrong"."""

from __future__ import annotations

import re
from typing import Any

import httpx

from runtime import autonomy
from tests.integration.conftest import Stack, order_event


def decide(stack: Stack, event: dict[str, Any]) -> list[dict[str, Any]]:
    resp = stack.publish(event)
    stack.drain()
    job = stack.client.get(f"/v1/jobs/{resp.json()['job_id']}", headers=stack.headers("gateway")).json()
    found: list[dict[str, Any]] = job["decisions"]
    return found


def history(stack: Stack) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = stack.client.get("/v1/policy/history", headers=stack.headers("planner")).json()
    return got


def test_a_burst_of_rejections_demotes_an_autonomous_pair(stack: Stack) -> None:
    rule = {"demote_min": 3, "demote_window": 10, "demote_override_rate": 0.5}
    stack.set_policy(
        modes={"order_release": "propose"},
        outcome_modes={"order_release/released": "autonomous"},
        review_confidence_below=1.0,  # every proposal waits for a planner, even an autonomous pair's
        autonomy_rules={"order_release": rule},
    )
    before = len(history(stack))
    planner = stack.headers("planner")
    for n in range(3):
        [d] = decide(stack, order_event(f"SO-B{n}", [("SKU-100", 1)]))
        assert (d["outcome"], d["status"]) == ("released", "pending_review"), d
        assert "order_release/released" not in d["evidence"]["governance"]  # the pair is autonomous
        resp = stack.client.post(f"/v1/decisions/{d['id']}/reject", json={"reason": "not today"}, headers=planner)
        assert resp.status_code == 200, resp.text
        modes = stack.client.get("/v1/policy", headers=planner).json()["outcome_modes"]
        # two rejections are fewer than demote_min; the third crosses the limit (3 of 3 > 0.5)
        assert modes["order_release/released"] == ("propose" if n == 2 else "autonomous"), n
    [version] = history(stack)[before:]
    assert version["actor"] == autonomy.SYSTEM_ACTOR
    assert version["diff"]["outcome_modes.order_release/released"] == {"from": "autonomous", "to": "propose"}
    assert "override rate 1.00 in the last 3 > 0.5" in version["reason"]
    [entry] = stack.container.store.audit(kind="autonomy.demoted")
    assert entry.payload["evidence"]["recent"]["rejected"] == 3
    pairs = {p["pair"]: p for p in stack.client.get("/v1/autonomy", headers=planner).json()}
    row = pairs["order_release/released"]
    assert row["mode"] == "propose" and row["all_time"]["rejected"] == 3 and row["all_time"]["reviews"] == 3
    assert row["all_time"]["override_wilson"][1] == 1.0 and not row["eligible"]
    # the next proposal of the pair waits because the pair is back in propose
    [d] = decide(stack, order_event("SO-B9", [("SKU-100", 1)]))
    assert "order_release/released runs in propose mode" in d["evidence"]["governance"]


def test_marking_an_executed_decision_wrong_demotes_its_pair_at_once(stack: Stack) -> None:
    [d] = decide(stack, order_event("SO-W1", [("SKU-100", 1)]))
    assert (d["outcome"], d["status"]) == ("released", "executed")
    url = f"/v1/decisions/{d['id']}/wrong"
    assert stack.client.post(url, json={"reason": "x"}, headers=stack.headers("cs_rep")).status_code == 403
    for body in ({}, {"reason": ""}, {"reason": "  "}):
        assert stack.client.post(url, json=body, headers=stack.headers("planner")).status_code == 422, body
    resp = stack.client.post(url, json={"reason": "shipped from the wrong DC"}, headers=stack.headers("planner"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "executed" and body["review"]["wrong"]["reason"] == "shipped from the wrong DC"
    assert body["demoted"]["mode"] == "propose"
    policy = stack.client.get("/v1/policy", headers=stack.headers("planner")).json()
    assert policy["outcome_modes"] == {"order_release/released": "propose"}
    assert policy["modes"]["order_release"] == "autonomous"  # the workflow's other outcomes stay
    [entry] = stack.container.store.audit(kind="decision.marked_wrong")
    assert entry.actor.startswith("planner") and entry.payload["decision"] == d["id"]
    pairs = {p["pair"]: p for p in stack.client.get("/v1/autonomy", headers=stack.headers("planner")).json()}
    assert pairs["order_release/released"]["all_time"]["marked_wrong"] == 1
    # a decision that is not executed cannot be marked wrong
    [p] = decide(stack, order_event("SO-W2", [("SKU-100", 1)]))
    assert p["status"] == "pending_review"
    got = stack.client.post(f"/v1/decisions/{p['id']}/wrong", json={"reason": "x"}, headers=stack.headers("planner"))
    assert got.status_code == 409
    missing = stack.client.post("/v1/decisions/nope/wrong", json={"reason": "x"}, headers=stack.headers("planner"))
    assert missing.status_code == 404


def test_promotion_needs_an_admin_a_reason_and_eligibility_unless_forced(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"})
    [d] = decide(stack, order_event("SO-P1", [("SKU-100", 1)]))
    ok = stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner"))
    assert ok.status_code == 200, ok.text
    assert stack.client.get("/v1/autonomy", headers=stack.headers("cs_rep")).status_code == 403
    [row] = [
        p
        for p in stack.client.get("/v1/autonomy", headers=stack.headers("planner")).json()
        if p["pair"] == "order_release/released"
    ]
    assert row["all_time"]["approved"] == 1 and row["mode"] == "propose" and not row["eligible"]
    assert "1 reviews in the window < 50" in row["why_not"]
    url = "/v1/autonomy/order_release/released/promote"
    assert stack.client.post(url, json={"reason": "r"}, headers=stack.headers("planner")).status_code == 403
    assert stack.client.post(url, json={}, headers=stack.headers("admin")).status_code == 422
    refused = stack.client.post(url, json={"reason": "week 3"}, headers=stack.headers("admin"))
    assert refused.status_code == 409 and "not eligible" in refused.text
    forced = stack.client.post(url, json={"reason": "week 3", "force": True}, headers=stack.headers("admin"))
    assert forced.status_code == 200, forced.text
    assert forced.json()["mode"] == "autonomous"
    last = history(stack)[-1]
    assert "forced" in last["reason"] and last["actor"].startswith("admin")
    assert (
        stack.client.post(
            "/v1/autonomy/nope/x/promote", json={"reason": "r"}, headers=stack.headers("admin")
        ).status_code
        == 404
    )
    demote = "/v1/autonomy/order_release/released/demote"
    assert stack.client.post(demote, json={"reason": "back"}, headers=stack.headers("admin")).status_code == 200
    assert stack.client.post(demote, json={"reason": "again"}, headers=stack.headers("admin")).status_code == 409


def _signed_in(stack: Stack, role: str) -> httpx.Client:
    from api.console.auth import CSRF_FIELD

    client = httpx.Client(base_url=stack.api.url, timeout=30.0, trust_env=False, follow_redirects=True)
    form = client.get("/console/signin").text
    token = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form)
    assert token is not None
    client.post("/console/signin", data={CSRF_FIELD: token.group(1), "key": stack.keys[role]}).raise_for_status()
    return client


def _csrf(page: str) -> str:
    from api.console.auth import CSRF_FIELD

    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_console_autonomy_and_replay_pages(stack: Stack) -> None:
    from api.console.auth import CSRF_FIELD

    stack.set_policy(modes={"order_release": "propose"})
    [d] = decide(stack, order_event("SO-C1", [("SKU-100", 1)]))
    stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner")).raise_for_status()
    planner = _signed_in(stack, "planner")
    try:
        page = planner.get("/console/autonomy")
        assert page.status_code == 200 and 'href="/console/autonomy"' in page.text
        assert "order release / released" in page.text and "Promote" not in page.text  # read-only for a planner
        refused = planner.post(
            "/console/autonomy",
            data={
                CSRF_FIELD: _csrf(page.text),
                "workflow": "order_release",
                "outcome": "released",
                "action": "promote",
                "reason": "x",
            },
        )
        assert refused.status_code == 403
        replay = planner.get("/console/replay")
        since = "2000-01-01T00:00:00Z"
        result = planner.post(
            "/console/replay",
            data={
                CSRF_FIELD: _csrf(replay.text),
                "since": since,
                "until": "2100-01-01T00:00:00Z",
                "policy": '{"modes": {"order_release": "autonomous"}}',
            },
        )
        assert result.status_code == 200 and 'id="replay-result"' in result.text
        assert "review-&gt;executed: 1" in result.text
        bad = planner.post(
            "/console/replay", data={CSRF_FIELD: _csrf(replay.text), "since": since, "until": "x", "policy": "{}"}
        )
        assert bad.status_code == 422
    finally:
        planner.close()
    admin = _signed_in(stack, "admin")
    try:
        page = admin.get("/console/autonomy")
        form = {CSRF_FIELD: _csrf(page.text), "workflow": "order_release", "outcome": "released", "action": "promote"}
        assert admin.post("/console/autonomy", data={**form, "reason": ""}).status_code == 422
        assert admin.post("/console/autonomy", data={**form, "reason": "week 3"}).status_code == 409  # not eligible
        done = admin.post("/console/autonomy", data={**form, "reason": "week 3", "force": "1"})
        assert done.status_code == 200 and "is now autonomous" in done.text
        no_csrf = admin.post("/console/autonomy", data={**form, CSRF_FIELD: "nope", "action": "demote", "reason": "r"})
        assert no_csrf.status_code == 403
    finally:
        admin.close()
    policy = stack.client.get("/v1/policy", headers=stack.headers("planner")).json()
    assert policy["outcome_modes"] == {"order_release/released": "autonomous"}
    assert history(stack)[-1]["actor"].startswith("admin")
