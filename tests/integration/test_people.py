"""Named people behind API keys: named actors in the audit trail and on decisions, cs_rep keys bound
to customers on every endpoint (chat included), and four-eyes approvals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from runtime.settings import KeyHolder, Settings, hash_key
from tests.integration.conftest import Stack, order_event
from tests.integration.people import add_key

# --- keys -------------------------------------------------------------------------------------


def test_api_keys_carry_a_name_and_the_old_form_still_reads() -> None:
    s = Settings(api_keys="k-alice:planner:alice, k-old:cs_rep, a:b:admin")
    assert s.key_holder(hash_key("k-alice")) == KeyHolder(name="alice", role="planner")
    assert s.key_holder(hash_key("k-old")) == KeyHolder(name="cs_rep", role="cs_rep")  # the name defaults to the role
    assert s.key_holder(hash_key("a:b")) == KeyHolder(name="admin", role="admin")  # a key may hold ':' as before
    assert s.key_hashes[hash_key("k-alice")] == "planner" and s.api_keys == ""
    with pytest.raises(ValidationError, match="key:role:name"):
        Settings(api_keys="k-1:boss:alice")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_keys_file_names_roles_hashes_and_customers(tmp_path: Path, suffix: str) -> None:
    entries = [
        {"name": "alice", "role": "planner", "key": "alice-key-0123456789"},
        {
            "name": "carol",
            "role": "cs_rep",
            "key_sha256": hashlib.sha256(b"carol-key").hexdigest(),
            "customers": ["C1"],
        },
    ]
    path = tmp_path / f"keys{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(entries))
    else:
        path.write_text(
            "keys:\n"
            + "".join(
                f"  - name: {e['name']}\n    role: {e['role']}\n"
                + (f"    key: {e['key']}\n" if "key" in e else f"    key_sha256: {e['key_sha256']}\n")
                + (f"    customers: [{', '.join(e['customers'])}]\n" if "customers" in e else "")
                for e in entries
            )
        )
    s = Settings(api_keys_file=path, api_keys="gw-key:gateway:edge-1")
    assert s.key_holder(hash_key("alice-key-0123456789")) == KeyHolder(name="alice", role="planner")
    assert s.key_holder(hash_key("carol-key")) == KeyHolder(name="carol", role="cs_rep", customers=("C1",))
    assert s.key_holder(hash_key("gw-key")) == KeyHolder(name="edge-1", role="gateway")


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"name": "bob", "role": "planner"}, "exactly one of key or key_sha256"),
        ({"name": "bob", "role": "boss", "key": "k"}, "0.role"),
        ({"name": "bob", "role": "planner", "key": "k", "customers": ["C1"]}, "only a cs_rep key"),
        ({"name": "bob smith", "role": "planner", "key": "k"}, "0.name"),
        ({"name": "bob", "role": "planner", "key_sha256": "abc"}, "0.key_sha256"),
    ],
)
def test_a_bad_keys_file_entry_is_refused_by_name(tmp_path: Path, entry: dict[str, Any], says: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ValidationError, match=says):
        Settings(api_keys_file=path)


# --- named actors -----------------------------------------------------------------------------


def pending(stack: Stack, *orders: str) -> list[Any]:
    for order in orders:
        stack.publish(order_event(order, [("SKU-100", 1)], customer="CUST-1"))
    stack.drain()
    found = [stack.container.store.list_decisions(subject=o, status="pending_review") for o in orders]
    assert all(len(f) == 1 for f in found), found
    return [f[0] for f in found]


def test_approvals_and_rejections_name_the_person(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"})
    alice, bob = add_key(stack, "alice", "planner"), add_key(stack, "bob", "planner")
    one, two = pending(stack, "SO-P1", "SO-P2")
    ok = stack.client.post(f"/v1/decisions/{one.id}/approve", headers=alice)
    assert ok.status_code == 200, ok.text
    assert ok.json()["actor"] == "planner:alice" and ok.json()["review"]["by"] == "planner:alice"
    no = stack.client.post(f"/v1/decisions/{two.id}/reject", json={"reason": "customer called"}, headers=bob)
    assert no.status_code == 200, no.text
    assert no.json()["actor"] == "planner:bob"
    [approved] = stack.container.store.audit(subject="SO-P1", kind="decision.approved")
    [rejected] = stack.container.store.audit(subject="SO-P2", kind="decision.rejected")
    assert (approved.actor, rejected.actor) == ("planner:alice", "planner:bob")
    # a key without a name is named after its role
    three = pending(stack, "SO-P3")[0]
    stack.client.post(f"/v1/decisions/{three.id}/approve", headers=stack.headers("planner")).raise_for_status()
    [entry] = stack.container.store.audit(subject="SO-P3", kind="decision.approved")
    assert entry.actor == "planner:planner"


# --- customers bound to a cs_rep key ----------------------------------------------------------


def seed(stack: Stack) -> None:
    stack.publish(order_event("SO-1", [("SKU-100", 4), ("SKU-200", 1)], customer="CUST-1"))
    stack.publish(order_event("SO-4", [("SKU-300", 5)], region="US-W", allow_split=False))  # CUST-2, held
    stack.publish(order_event("SO-5", [("SKU-300", 5)], customer="CUST-1", region="US-W", allow_split=False))
    assert stack.drain() == 3


def ask(stack: Stack, headers: dict[str, str], message: str, **body: Any) -> dict[str, Any]:
    resp = stack.client.post("/v1/chat", json={"message": message, **body}, headers=headers)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def test_a_bound_cs_rep_sees_only_its_customers_orders(stack: Stack) -> None:
    seed(stack)
    carol = add_key(stack, "carol", "cs_rep", customers=("CUST-1",))
    # the order route: another customer's order is as unknown as an order that does not exist
    assert stack.client.get("/v1/orders/SO-1", headers=carol).status_code == 200
    other = stack.client.get("/v1/orders/SO-4", headers=carol)
    unknown = stack.client.get("/v1/orders/SO-404", headers=carol)
    assert (other.status_code, unknown.status_code) == (404, 404)
    assert other.json()["detail"] == unknown.json()["detail"].replace("SO-404", "SO-4")
    assert stack.client.get("/v1/orders/SO-4", headers=stack.headers("cs_rep")).status_code == 200  # unbound key
    # at-risk: only the key's customers
    everyone = {r["order_id"] for r in stack.client.get("/v1/orders/at-risk", headers=stack.headers("cs_rep")).json()}
    assert {"SO-4", "SO-5"} <= everyone
    mine = stack.client.get("/v1/orders/at-risk", headers=carol).json()
    assert {r["order_id"] for r in mine} == {"SO-5"} and {r["customer_id"] for r in mine} == {"CUST-1"}
    # chat: the binding applies whatever the body says
    refusal = "I can't find an order SO-4 for this customer."
    unknown_reply = ask(stack, carol, "What's the status of SO-9?")["answer"]  # as near to theirs as SO-4
    for body in ({}, {"customer_id": "CUST-2"}, {"customer_id": "CUST-1"}):
        reply = ask(stack, carol, "What's the status of SO-4?", **body)
        assert reply["answer"].startswith(refusal) and reply["citations"] == [], body
        assert reply["answer"] == unknown_reply.replace("SO-9", "SO-4")  # the same as for an unknown order
        assert "held" not in reply["answer"] and "SKU-300" not in reply["answer"]
    assert "SO-1 is released" in ask(stack, carol, "Where is SO-1?")["answer"]
    # ... in the stream too
    with stack.client.stream("POST", "/v1/chat/stream", json={"message": "status of SO-4"}, headers=carol) as resp:
        body_text = "".join(resp.iter_text())
    final = json.loads(body_text.strip().split("\n\n")[-1].split("\n", 1)[1].removeprefix("data: "))
    assert final["answer"].startswith(refusal) and "held" not in body_text and "SKU-300" not in body_text


def test_a_key_bound_to_several_customers_names_one(stack: Stack) -> None:
    seed(stack)
    dana = add_key(stack, "dana", "cs_rep", customers=("CUST-1", "CUST-3"))
    resp = stack.client.post("/v1/chat", json={"message": "status of SO-1"}, headers=dana)
    assert resp.status_code == 422 and "customer_id" in resp.text
    assert "SO-1 is released" in ask(stack, dana, "status of SO-1", customer_id="CUST-1")["answer"]
    not_theirs = stack.client.post(
        "/v1/chat", json={"message": "status of SO-4", "customer_id": "CUST-2"}, headers=dana
    )
    assert not_theirs.status_code == 422 and "SO-4" not in not_theirs.text
    reply = ask(stack, dana, "status of SO-4", customer_id="CUST-1")
    assert reply["answer"].startswith("I can't find an order SO-4 for this customer.")


# --- four-eyes --------------------------------------------------------------------------------


def test_a_costly_decision_needs_two_different_approvers(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"}, four_eyes_cost_above={"order_release": 0})
    alice, bob = add_key(stack, "alice", "planner"), add_key(stack, "bob", "planner")
    alice_admin = add_key(stack, "alice", "admin")  # the same person with another key
    [decision] = pending(stack, "SO-F1")
    assert decision.cost_impact > 0
    first = stack.client.post(f"/v1/decisions/{decision.id}/approve", headers=alice)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "pending_review" and first.json()["needs"] == "second approver"
    stored = stack.container.store.get_decision(decision.id)
    assert stored is not None and stored.status == "pending_review" and stored.actor == decision.actor
    assert stored.review is not None and [a["by"] for a in stored.review["approvals"]] == ["planner:alice"]
    assert stack.state.applied_actions() == []
    for again in (alice, alice_admin):
        twice = stack.client.post(f"/v1/decisions/{decision.id}/approve", headers=again)
        assert twice.status_code == 409 and twice.json()["detail"]["error"] == "same_approver"
    second = stack.client.post(f"/v1/decisions/{decision.id}/approve", headers=bob)
    assert second.status_code == 200, second.text
    done = second.json()
    assert done["status"] == "executed" and done["actor"] == "planner:bob"
    assert [a["by"] for a in done["review"]["approvals"]] == ["planner:alice", "planner:bob"]
    assert stack.state.order("SO-F1").status == "released"
    kinds = [(e.kind, e.actor) for e in stack.container.store.audit(subject="SO-F1") if e.kind.startswith("decision.")]
    assert ("decision.first_approval", "planner:alice") in kinds and ("decision.approved", "planner:bob") in kinds


def test_below_the_four_eyes_amount_one_approver_is_enough(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"}, four_eyes_cost_above={"order_release": 1e9})
    [decision] = pending(stack, "SO-F2")
    ok = stack.client.post(f"/v1/decisions/{decision.id}/approve", headers=add_key(stack, "alice", "planner"))
    assert ok.status_code == 200 and ok.json()["status"] == "executed"
