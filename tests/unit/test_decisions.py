"""Decision ids and idempotency keys: stable across redelivery, distinct per position."""

from __future__ import annotations

import re

from domain.decisions import Action, Decision, decision_id, with_idempotency_keys

WAVE = Action(system="wms", type="create_wave", payload={"waveId": "WV-1"})
ALLOC = Action(system="oms", type="allocate", payload={"order_id": "SO-1", "qty": 1})


def test_a_decision_id_is_stable_for_the_same_event_workflow_and_index() -> None:
    first = decision_id("oms/x|evt-1", "order_release", 0)

    assert first == decision_id("oms/x|evt-1", "order_release", 0)
    assert first == decision_id("oms/x|evt-1", "order_release")  # index defaults to 0
    assert re.fullmatch(r"dec-[0-9a-f]{20}", first)


def test_a_decision_id_differs_by_event_workflow_and_index() -> None:
    ids = {
        decision_id("oms/x|evt-1", "order_release", 0),
        decision_id("oms/x|evt-2", "order_release", 0),
        decision_id("oms/y|evt-1", "order_release", 0),
        decision_id("oms/x|evt-1", "allocation", 0),
        decision_id("oms/x|evt-1", "order_release", 1),
    }
    assert len(ids) == 5


def test_idempotency_keys_are_stable_when_an_event_is_redelivered() -> None:
    did = decision_id("oms/x|evt-1", "order_release")

    first = [a.idempotency_key for a in with_idempotency_keys(did, [ALLOC, WAVE])]
    again = [a.idempotency_key for a in with_idempotency_keys(did, [ALLOC, WAVE])]

    assert first == again
    assert all(k.startswith(f"{did}-") for k in first)
    assert re.fullmatch(rf"{did}-0-[0-9a-f]{{12}}", first[0])
    assert re.fullmatch(rf"{did}-1-[0-9a-f]{{12}}", first[1])


def test_identical_actions_at_different_positions_get_distinct_keys() -> None:
    keyed = with_idempotency_keys("dec-1", [ALLOC, ALLOC, ALLOC])

    assert len({a.idempotency_key for a in keyed}) == 3


def test_different_decisions_give_different_keys_for_the_same_actions() -> None:
    a = with_idempotency_keys("dec-1", [ALLOC])[0].idempotency_key
    b = with_idempotency_keys("dec-2", [ALLOC])[0].idempotency_key

    assert a != b


def test_keying_keeps_the_actions_and_does_not_mutate_the_input() -> None:
    keyed = with_idempotency_keys("dec-1", [ALLOC, WAVE])

    assert ALLOC.idempotency_key == "" and WAVE.idempotency_key == ""
    assert [(a.system, a.type, a.payload) for a in keyed] == [
        ("oms", "allocate", ALLOC.payload),
        ("wms", "create_wave", WAVE.payload),
    ]
    assert [a.name for a in keyed] == ["oms.allocate", "wms.create_wave"]


def test_no_actions_give_no_keys() -> None:
    assert with_idempotency_keys("dec-1", []) == []


def test_a_decisions_report_dict_follows_the_report_contract() -> None:
    d = Decision(
        id="dec-1",
        event_id=None,
        workflow="order_release",
        subject="SO-1",
        outcome="released",
        confidence=0.912345,
        cost_impact=12.3456,
        human_review_required=False,
        status="executed",
        rationale="ok",
        evidence={"a": 1},
        actions=with_idempotency_keys("dec-1", [ALLOC]),
        engine_version="release/1.1.0",
    )

    out = d.report_dict()

    assert set(out) == {
        "id",
        "event_id",
        "workflow",
        "subject",
        "outcome",
        "confidence",
        "cost_impact",
        "human_review_required",
        "status",
        "rationale",
        "evidence",
        "actions",
    }
    assert out["confidence"] == 0.9123 and out["cost_impact"] == 12.35
    assert out["actions"][0]["idempotency_key"].startswith("dec-1-0-")
