"""The policy's ``split_only_for_service`` reaches every path that releases an order: the new order's
decision, the tick's batch (``crews.backlog``), the releases a receipt allows (``crews.reconciliation``)
and the re-decision after a planner rejects a plan (``crews.redecide``).

The case: a held order in US-W for 10 of SKU-100 and 1 of SKU-200, due in ten days. SKU-200 is only
at DC-EAST. DC-EAST serves the whole order (one parcel, 3.0 a unit); with the rule off the tick's
batch takes SKU-100 from DC-WEST instead (1.2 a unit: 18 cheaper, more than the split penalty).
A single order that one node fills whole ships from it either way, so the re-decision's case is an
open order for 10 of SKU-200, of which DC-EAST has 7: a part-release, where the rule keeps SKU-100
at DC-EAST with the 7 and the cheaper lane alone would take it from DC-WEST.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.http import http_connectors
from crews.redecide import redecide
from crews.supervisor import route
from domain.decisions import Action, Decision, Proposal
from domain.events import CloudEvent
from domain.models import Policy, Scenario
from runtime.servers import serve_in_thread
from tools.context import Systems
from tools.recording import InMemoryMemo
from twin.scenarios import EXAMPLE
from twin.server import create_twin_app
from twin.state import TwinState

NOW = "2026-03-21T09:00:00Z"
ONE_NODE = {(1, "DC-EAST"): 10.0, (2, "DC-EAST"): 1.0}
SPLIT = {(1, "DC-WEST"): 10.0, (2, "DC-EAST"): 1.0}
PART_ONE_NODE = {(1, "DC-EAST"): 10.0, (2, "DC-EAST"): 7.0}
PART_SPLIT = {(1, "DC-WEST"): 10.0, (2, "DC-EAST"): 7.0}


def _scenario() -> dict[str, Any]:
    scenario = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    scenario["events"] = []
    for order_id, sku_200 in (("SO-W1", 1), ("SO-W2", 10)):
        scenario["oms"]["orders"].append(
            {
                "id": order_id,
                "customer": "CUST-2",
                "region": "US-W",
                "created": "2026-03-21T08:00:00Z",
                "ship_by": "2026-03-31T14:00:00Z",
                "allow_split": True,
                "lines": [{"line": 1, "sku": "SKU-100", "qty": 10}, {"line": 2, "sku": "SKU-200", "qty": sku_200}],
            }
        )
    return scenario


@pytest.fixture
def systems() -> Iterator[Systems]:
    state = TwinState(Scenario.model_validate(_scenario()))
    for action in (
        Action(system="oms", type="hold_order", payload={"order_id": "SO-W1", "reason": "no_stock"}),
        Action(system="oms", type="update_order_status", payload={"order_id": "SO-W1", "status": "held"}),
    ):
        state.apply(action)
    server = serve_in_thread(create_twin_app(state))
    client = httpx.Client(timeout=10.0, trust_env=False)
    u = server.url
    wms, erp, oms, notify = http_connectors(f"{u}/wms", f"{u}/erp", f"{u}/oms", f"{u}/notify", client)
    try:
        yield Systems(wms=wms, erp=erp, oms=oms, notify=notify, memo=InMemoryMemo())
    finally:
        client.close()
        server.stop()


def _plan(proposals: list[Proposal], order_id: str = "SO-W1") -> dict[tuple[int, str], float]:
    [release] = [p for p in proposals if p.subject == order_id and p.outcome != "backordered"]
    return {
        (int(a.payload["line"]), str(a.payload["node"])): float(a.payload["qty"])
        for a in release.actions
        if a.name == "oms.allocate"
    }


def _tick() -> CloudEvent:
    return CloudEvent.model_validate(
        {"specversion": "1.0", "id": "tick-1", "source": "crossdock/clock", "type": "crossdock.tick", "time": NOW}
        | {"data": {"now": NOW}}
    )


@pytest.mark.parametrize(("rule", "expected"), [(True, ONE_NODE), (False, SPLIT)])
def test_the_ticks_batch_follows_the_setting(systems: Systems, rule: bool, expected: dict[Any, float]) -> None:
    specialist = route("crossdock.tick", Policy(split_only_for_service=rule))
    assert _plan(specialist.propose(_tick(), systems)) == expected


@pytest.mark.parametrize(("rule", "expected"), [(True, PART_ONE_NODE), (False, PART_SPLIT)])
def test_a_re_decision_follows_the_setting(systems: Systems, rule: bool, expected: dict[Any, float]) -> None:
    rejected = Decision(
        id="d-1",
        event_id=None,
        workflow="order_release",
        subject="SO-W2",
        outcome="released",
        confidence=0.9,
        cost_impact=0,
        human_review_required=True,
        status="rejected",
        rationale="",
        evidence={},
        actions=[],
    )
    now = datetime(2026, 3, 21, 9, tzinfo=UTC)
    found = redecide(rejected, systems, now, 3.0, split_only_for_service=rule)
    assert found is not None and _plan(found, "SO-W2") == expected


def test_a_receipt_releases_with_the_policys_setting() -> None:
    on, off = route("wms.receipt.posted", Policy()), route("wms.receipt.posted", Policy(split_only_for_service=False))
    assert on.split_only_for_service is True and off.split_only_for_service is False  # type: ignore[attr-defined]
