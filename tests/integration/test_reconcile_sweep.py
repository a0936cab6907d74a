"""Continuous reconciliation (crews/reconcile_sweep.py) against the twin over real HTTP, real Redis."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from connectors.http import HttpWms, http_connectors
from connectors.ports import AllocationSnapshotReader, BookSnapshotReader, StockSnapshotReader
from crews import reconcile_sweep
from crews.reconcile_sweep import judge_suspects, reconcile_pass, state_of
from crews.sweeps import STOCK_QUEUE
from domain.decisions import Proposal
from domain.models import Scenario
from runtime.memo import RedisMemo
from runtime.servers import serve_in_thread
from tools.context import Systems
from twin.scenarios import EXAMPLE
from twin.server import create_twin_app
from twin.state import TwinState

GRACE_H = 4.0


@dataclass
class World:
    state: TwinState
    systems: Systems
    url: str


@pytest.fixture
def world(redis_url: str) -> Iterator[World]:
    state = TwinState(Scenario.model_validate(json.loads(EXAMPLE.read_text())))
    server = serve_in_thread(create_twin_app(state))
    client = redis.Redis.from_url(redis_url)
    prefix = f"test-recon-{uuid.uuid4().hex[:8]}"
    try:
        with httpx.Client() as http:
            u = server.url
            wms, erp, oms, notify = http_connectors(f"{u}/wms", f"{u}/erp", f"{u}/oms", f"{u}/notify", http)
            systems = Systems(wms=wms, erp=erp, oms=oms, notify=notify, memo=RedisMemo(client, prefix))
            yield World(state, systems, u)
    finally:
        server.stop()
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


def tick(world: World, now: datetime) -> list[Proposal]:
    """What a tick does for reconciliation: the pass (in lock_keys), then the judgement (in propose)."""
    suspects = reconcile_pass(world.systems, now).suspects
    return judge_suspects(world.systems, suspects, now, GRACE_H)


def raised(proposals: list[Proposal], subject: str) -> list[Proposal]:
    return [p for p in proposals if p.subject == subject and p.outcome == "discrepancy"]


def test_http_adapters_have_the_bulk_reads(world: World) -> None:
    s = world.systems
    assert isinstance(s.wms, StockSnapshotReader) and isinstance(s.erp, BookSnapshotReader)
    assert isinstance(s.oms, AllocationSnapshotReader)
    first = s.wms.stock_snapshot(limit=2)
    rest = s.wms.stock_snapshot(after=first.next_after, limit=1000)
    keys = [r.key for r in first.rows + rest.rows]
    assert len(first.rows) == 2 and keys == sorted(keys) and len(set(keys)) == len(keys)
    east = next(r for r in first.rows + rest.rows if r.key == "SKU-100@DC-EAST")
    assert (east.qty, east.held) == (35, 10) and rest.next_after is None


def test_a_planted_standing_variance_is_raised_within_one_tick_and_only_once(world: World) -> None:
    now = datetime.now(UTC)
    world.state.drift("DC-EAST", "SKU-100", -6.0)  # no event, no change feed: a silent drift
    first = raised(tick(world, now), "SKU-100@DC-EAST")
    assert len(first) == 1
    assert first[0].actions[0].payload["qty_delta"] == 6.0  # the book goes back to the WMS count
    assert "continuous reconciliation" in first[0].evidence["sweep"]
    # The next tick (incremental) and the next full passes see the same standing state: no repeat.
    later = [tick(world, now + timedelta(seconds=60)), tick(world, now + timedelta(seconds=901))]
    assert state_of(world.systems)["passes"] == 2
    assert all(not raised(p, "SKU-100@DC-EAST") for p in later)


def test_a_gap_with_a_movement_in_flight_is_not_raised(world: World) -> None:
    now = datetime.now(UTC)
    tick(world, now)  # the first full pass: watermarks set
    adjusted = {
        "specversion": "1.0",
        "id": "evt-recon-1",
        "source": "wms",
        "type": "wms.inventory.adjusted",
        "time": now.isoformat(),
        "data": {"node": "DC-EAST", "sku": "SKU-100", "qty_delta": -3},
    }
    # The WMS changed (its feed says so); the ERP posting has not landed: a timing difference.
    assert httpx.post(f"{world.url}/twin/events", json=adjusted).status_code == 200
    report = reconcile_pass(world.systems, now + timedelta(seconds=60))
    assert ("SKU-100", "DC-EAST") in report.suspects
    assert not raised(judge_suspects(world.systems, report.suspects, now, GRACE_H), "SKU-100@DC-EAST")
    assert world.systems.memo is not None
    assert "SKU-100@DC-EAST" in world.systems.memo.due(STOCK_QUEUE, float("inf"))  # judged when grace ends


def test_the_incremental_pass_reads_only_what_changed(world: World) -> None:
    now = datetime.now(UTC)
    full = reconcile_pass(world.systems, now)
    assert full.full_done and full.full_rows >= 5
    posted = {
        "specversion": "1.0",
        "id": "evt-recon-2",
        "source": "erp",
        "type": "erp.inventory.posted",
        "time": (now - timedelta(hours=10)).isoformat(),
        "data": {
            "node": "STORE-12",
            "sku": "SKU-100",
            "qty_delta": 2,
            "posted_at": (now - timedelta(hours=10)).isoformat(),
        },
    }
    assert httpx.post(f"{world.url}/twin/events", json=posted).status_code == 200
    report = reconcile_pass(world.systems, now + timedelta(seconds=60))
    assert (report.changed, report.full_rows, report.full_done) == (1, 0, False)
    assert ("SKU-100", "STORE-12") in report.suspects
    # The feed itself: only the changed row since the watermark.
    mark = datetime.fromisoformat(state_of(world.systems)["marks"]["erp"])
    erp = world.systems.erp
    assert isinstance(erp, BookSnapshotReader)
    assert [r.key for r in erp.book_snapshot(since=mark - timedelta(minutes=1)).rows] == ["SKU-100@STORE-12"]
    # A posting outside the grace window with no WMS movement: a true variance, raised.
    assert raised(judge_suspects(world.systems, report.suspects, now, GRACE_H), "SKU-100@STORE-12")


def test_a_system_without_the_bulk_reads_does_not_fail_the_tick(world: World) -> None:
    with httpx.Client() as http:
        gateway = HttpWms(f"{world.url}/elsewhere", http)  # answers 404 to every bulk read
        systems = dataclasses.replace(world.systems, wms=gateway)
        tick(world, datetime.now(UTC))  # a pass with the real WMS: the state to resume from
        before = state_of(systems)
        report = reconcile_pass(systems, datetime.now(UTC) + timedelta(seconds=901))
    assert report.error is not None and "404" in report.error
    assert (report.full_rows, report.suspects) == (0, [])
    assert state_of(systems) == before  # nothing advanced: the next tick tries again


def test_too_many_changes_for_per_sku_reads_start_a_full_pass(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    assert reconcile_pass(world.systems, now).full_done  # the first pass; the next is 900 s away
    monkeypatch.setattr(reconcile_sweep, "MAX_KEY_READS", 0)
    posted = {
        "specversion": "1.0",
        "id": "evt-recon-3",
        "source": "erp",
        "type": "erp.inventory.posted",
        "time": now.isoformat(),
        "data": {"node": "DC-EAST", "sku": "SKU-100", "qty_delta": 1},
    }
    assert httpx.post(f"{world.url}/twin/events", json=posted).status_code == 200
    report = reconcile_pass(world.systems, now + timedelta(seconds=60))
    assert report.changed == 1 and report.full_done and report.full_rows >= 5
