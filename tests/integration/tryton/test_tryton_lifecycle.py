"""The decision lifecycle against a real trytond: a half-applied approval is undone in Tryton, and an
interrupted one stays executing until a second approval finishes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.tryton.loader import create_sale
from domain.decisions import Action, Proposal
from domain.errors import ConnectorError
from domain.models import Order, Policy
from runtime.executor import Executor
from runtime.lifecycle import DecisionService, ExecutionInterrupted
from runtime.locks import StockLocks
from runtime.store import Store
from tools.context import Systems

from .conftest import Tryton


class Notify:
    def apply(self, action: Action) -> dict[str, Any]:
        return {"ticket_id": "T-1"}


class FlakyOnce:
    """The real Tryton WMS adapter, with one create_wave lost on the network first."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failures = 1

    def apply(self, action: Action) -> dict[str, Any]:
        if action.name == "wms.create_wave" and self.failures:
            self.failures -= 1
            raise ConnectorError("WMS timed out")
        result: dict[str, Any] = self.real.apply(action)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def service(tryton: Tryton, tmp_path: Path, redis_url: str) -> Iterator[DecisionService]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    client = redis.Redis.from_url(redis_url)
    wms = FlakyOnce(tryton.wms)
    systems = Systems(wms=wms, erp=tryton.erp, oms=tryton.oms, notify=Notify())
    executor = Executor(store, wms, tryton.erp, tryton.oms, Notify())
    yield DecisionService(store, systems, executor, StockLocks(client, f"test-tryton-{tmp_path.name}"))
    store.close()
    client.close()


# A fresh policy observes; these plans wait for review because they ask for it, as under any mode
# that is not observe.
AUTONOMOUS = Policy(modes={"order_release": "autonomous"})


def plan(order_id: str, qty: float, last: Action) -> Proposal:
    return Proposal(
        workflow="order_release",
        subject=order_id,
        outcome="released",
        confidence=0.9,
        rationale="a release whose last step may fail",
        actions=[
            Action(
                system="oms",
                type="allocate",
                payload={"order_id": order_id, "line": 1, "sku": "SKU-100", "node": "DC-EAST", "qty": qty},
            ),
            last,
        ],
        review_required=True,
    )


def test_a_refused_step_in_tryton_undoes_the_allocation_it_made(tryton: Tryton, service: DecisionService) -> None:
    create_sale(tryton.client, Order.model_validate({**tryton.scenario["events"][1]["data"], "id": "SO-2101"}))
    # A confirmed sale's lines are read-only in Tryton: the second step is refused for good.
    task = Action(
        system="oms",
        type="substitute_line",
        payload={"order_id": "SO-2101", "line": 1, "sku": "SKU-100", "substitute": "SKU-301"},
    )
    decision = service.record(plan("SO-2101", 2, task), AUTONOMOUS, "dec-try-1", actor="t", default_engine="t")
    assert decision is not None and decision.status == "pending_review"
    review = service.approve("dec-try-1", "planner:ann")
    assert review.decision.status == "failed" and "no Tryton equivalent" in (review.decision.error or "")
    assert review.decision.undone == [{"action": "oms.allocate", "undone": True, "by": "oms.release_allocation"}]
    assert tryton.oms.order("SO-2101").lines[0].allocations == []


def test_an_interrupted_approval_in_tryton_is_finished_by_the_second(tryton: Tryton, service: DecisionService) -> None:
    create_sale(tryton.client, Order.model_validate({**tryton.scenario["events"][1]["data"], "id": "SO-2102"}))
    wave = Action(
        system="wms",
        type="create_wave",
        payload={
            "waveId": "W-2102",
            "node": "DC-EAST",
            "orders": [{"orderId": "SO-2102", "priorityScore": 1.0, "lines": []}],
            "parameters": {
                "workZone": "PICK-ZONE-A",
                "carrierCode": "FEDX_GROUND",
                "cutoffTime": "2026-03-21T14:00:00Z",
            },
        },
    )
    service.record(plan("SO-2102", 2, wave), AUTONOMOUS, "dec-try-2", actor="t", default_engine="t")
    with pytest.raises(ExecutionInterrupted):
        service.approve("dec-try-2", "planner:ann")
    assert service.store.get_decision("dec-try-2").status == "executing"  # type: ignore[union-attr]
    review = service.approve("dec-try-2", "planner:ann")
    assert review.decision.status == "executed"
    assert [(a.node, a.qty) for a in tryton.oms.order("SO-2102").lines[0].allocations] == [("DC-EAST", 2)]
    assert "W-2102" in [w.wave_id for w in tryton.wms.waves()]
