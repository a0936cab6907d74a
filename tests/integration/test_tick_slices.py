"""A tick runs in bounded slices (``crews.backlog``, ``runtime.pipeline._sliced``): an order on one of
the backlog's SKUs waits for one slice at most, never for the whole tick; a tick that fails half-way
is redelivered, finishes what it recorded and goes on, deciding nothing twice.

Real parts: the API, Redis (queue and stock locks), the store and the twin over HTTP. The twin
answers every request 8 ms late (a real system's latency), so a tick over a backlog of 40 held
orders on 40 SKUs runs for seconds.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import crews.backlog
from crews.backlog import backlog_batches
from domain.decisions import Action
from domain.models import Order
from runtime.queue import BACKGROUND, DECISIONS, JobQueue
from runtime.shadow import engine_replay
from runtime.worker import Worker
from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.waiting import wait_for

N_HELD = 40
PER_SLICE = 4  # held orders per backlog slice: 10 slices
TWIN_DELAY_S = 0.008
NOW = "2026-03-21T12:00:00Z"


def slow(app: Any) -> Any:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(TWIN_DELAY_S)
        await app(scope, receive, send)

    return wrapped


def sku(n: int) -> str:
    return f"SKU-T{n:02d}"


def backlog_scenario(example: dict[str, Any], stocked: frozenset[int] = frozenset()) -> dict[str, Any]:
    """The example plus ``N_HELD`` SKUs, each wanted by one held order; those in ``stocked`` have
    2 units at DC-EAST (so the tick can release their order), the rest none."""
    scenario = copy.deepcopy(example)
    scenario["events"] = []
    for n in range(N_HELD):
        scenario["skus"].append({"id": sku(n), "description": f"Tick part {n}", "unit_cost": 3.0, "substitutes": []})
        if n in stocked:
            scenario["wms"]["stock"].append(
                {"node": "DC-EAST", "zone": "PICK-ZONE-A", "location": f"T-{n:02d}", "sku": sku(n), "lot": None}
                | {"on_hand": 2, "locked": 0}
            )
            scenario["erp"]["book_stock"].append({"node": "DC-EAST", "sku": sku(n), "qty": 2, "blocked": 0})
        scenario["oms"]["orders"].append(order_event(f"SO-T{n:02d}", [(sku(n), 1)])["data"])
    return scenario


def hold_all(stack: Stack) -> None:
    """The OMS holds every order of the backlog for stock (as an earlier decision would have)."""
    for n in range(N_HELD):
        order_id = f"SO-T{n:02d}"
        stack.state.apply(Action(system="oms", type="hold_order", payload={"order_id": order_id, "reason": "no_stock"}))
        stack.state.apply(
            Action(system="oms", type="update_order_status", payload={"order_id": order_id, "status": "held"})
        )


def tick(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "crossdock/clock",
        "type": "crossdock.tick",
        "time": NOW,
        "data": {"now": NOW},
    }


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crews.backlog, "SLICE_ORDERS", PER_SLICE)


def run_workers(stack: Stack, stop: threading.Event) -> list[threading.Thread]:
    """A background-lane worker and a decisions-lane worker, as ``crossdock serve`` runs them."""
    c = stack.container
    threads = [
        threading.Thread(
            target=Worker(c.queue, c.pipeline.handle, c.settings, name=f"slices-{lane}", lanes=(lane,)).run,
            args=(stop,),
            name=f"slices-{lane}",
        )
        for lane in (BACKGROUND, DECISIONS)
    ]
    for t in threads:
        t.start()
    return threads


def finished(queue: JobQueue, job_id: str, timeout_s: float = 60) -> float:
    """When the job finished (its ``finished_at``, seconds since the epoch), once it is done."""
    job = wait_for(lambda: (j := queue.job(job_id) or {}).get("status") == "done" and j, timeout_s, job_id)
    return datetime.fromisoformat(str(job["finished_at"]).replace("Z", "+00:00")).timestamp()


@pytest.fixture
def backlog(tmp_path: Path, redis_url: str, example: dict[str, Any], small_slices: None) -> Iterator[Stack]:
    stack = make_stack(tmp_path, redis_url, backlog_scenario(example), slow)
    hold_all(stack)
    yield stack
    close_stack(stack)


def test_an_order_on_a_backlog_sku_waits_for_one_slice_not_for_the_whole_tick(backlog: Stack) -> None:
    stack = backlog
    holds: list[tuple[str, list[str], float, float, float]] = []  # thread, keys, waited, held, at

    def observe(keys: list[str], waited: float, held: float) -> None:
        holds.append((threading.current_thread().name, keys, waited, held, time.monotonic()))

    stack.container.pipeline.locks.observe = observe
    stop = threading.Event()
    threads = run_workers(stack, stop)
    try:
        queue = stack.container.queue
        tick_job = stack.publish(tick("tick-slices")).json()["job_id"]
        # The tick is under way: it took the lock of the backlog's first SKU, then either let it go
        # (its first slice is done) or took the last SKU's too (a tick that holds them all).
        prefix, r = stack.container.pipeline.locks.prefix, stack.container.redis
        first, last = f"{prefix}:lock:sku:{sku(0)}", f"{prefix}:lock:sku:{sku(N_HELD - 1)}"
        wait_for(lambda: r.exists(first), 60, "the tick's first slice", every=0.01)
        wait_for(lambda: not r.exists(first) or r.exists(last), 60, "the tick past its first slice", every=0.01)
        sent = time.time()
        # An order on the last slice's SKU: the old tick held that lock from its start to its end.
        free_job = stack.publish(order_event("SO-FREE", [(sku(N_HELD - 1), 1)], customer="CUST-1")).json()["job_id"]
        # Another on a SKU of the slice the tick is in: it waits for that slice to end, no longer.
        middle = f"{prefix}:lock:sku:{sku(N_HELD // 2)}"
        wait_for(lambda: r.exists(middle), 60, "the tick in its middle slice", every=0.01)
        busy_sent = time.time()
        busy_job = stack.publish(order_event("SO-BUSY", [(sku(N_HELD // 2 + 1), 1)])).json()["job_id"]
        done = {job: finished(queue, job) for job in (free_job, busy_job, tick_job)}
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        stack.container.pipeline.locks.observe = None
    tick_done = done[tick_job]
    # Both orders were decided while the tick still ran (a tick holding every backlog SKU for its
    # whole run fails here: their locks came free only when it ended).
    assert done[free_job] < tick_done and done[busy_job] < tick_done, "an order waited for the whole tick"
    assert done[free_job] - sent < (tick_done - sent) / 2
    assert done[busy_job] - busy_sent < (tick_done - busy_sent) / 2
    ticked = [h for h in holds if h[0] == "slices-background"]
    slices = [h for h in ticked if any(k.startswith("sku:SKU-T") for k in h[1])]
    assert len(slices) == N_HELD // PER_SLICE  # one hold per backlog slice, never all SKUs at once
    assert all(len([k for k in h[1] if k.startswith("sku:")]) <= PER_SLICE for h in ticked)
    # Each order waited at most one slice (plus scheduling slack).
    longest = max(h[3] for h in slices)
    for n in (N_HELD - 1, N_HELD // 2 + 1):
        [hold] = [h for h in holds if h[0] == "slices-decisions" and h[1] == [f"sku:{sku(n)}"]]
        assert hold[2] <= longest + 0.5, (sku(n), hold[2], longest)
    # The tick's decisions: one summary per backlog slice (nothing to release), the wave plan.
    decisions = stack.container.store.list_decisions(job_id=tick_job, limit=1000)
    summaries = [d for d in decisions if d.subject == "backlog"]
    assert len(summaries) == N_HELD // PER_SLICE
    assert sum(int(d.evidence["considered"]) for d in summaries) >= N_HELD
    assert [d.evidence["slice"]["n"] for d in summaries] == list(range(1, N_HELD // PER_SLICE + 1))
    assert [d.outcome for d in decisions if d.subject == "waves"] == ["no_action"]


def test_a_tick_that_fails_half_way_resumes_and_decides_nothing_twice(
    tmp_path: Path, redis_url: str, example: dict[str, Any], small_slices: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stocked = frozenset(range(0, N_HELD, 3))  # every third held order can ship now
    stack = make_stack(tmp_path, redis_url, backlog_scenario(example, stocked))
    try:
        hold_all(stack)
        real = crews.backlog.BacklogSpecialist._waves
        calls = {"n": 0}

        def dies_once(self: Any, *args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("worker killed after the backlog slices")
            return real(self, *args)

        monkeypatch.setattr(crews.backlog.BacklogSpecialist, "_waves", dies_once)
        job_id = stack.publish(tick("tick-resume")).json()["job_id"]
        stack.drain()
        job = stack.container.queue.job(job_id) or {}
        assert job["status"] == "done" and calls["n"] == 2  # failed once, then redelivered
        decisions = stack.container.store.list_decisions(job_id=job_id, limit=1000)
        # Each backlog slice decided once: the redelivery went on with the wave plan.
        summaries = [d for d in decisions if d.subject == "backlog"]
        assert len(summaries) == N_HELD // PER_SLICE
        released = sorted(d.subject for d in decisions if d.outcome == "released")
        assert released == sorted(f"SO-T{n:02d}" for n in stocked)
        assert all(d.status == "executed" for d in decisions if d.outcome == "released")
        assert len({d.id for d in decisions}) == len(decisions)
        assert [d.subject for d in decisions].count("waves") == 1
        # Every action ran once (idempotency keys), and nothing was oversold.
        assert all(a["count"] == 1 for a in stack.state.applied_actions())
        assert stack.state.export_state()["oversells"]["count"] == 0
        for n in stocked:
            assert stack.state.order(f"SO-T{n:02d}").status == "released"
        # The job lists every decision it made, the first run's too.
        assert set(job["decisions"]) == {d.id for d in decisions}
    finally:
        close_stack(stack)


def test_a_sliced_tick_is_kept_with_its_reads_and_replays_to_the_same_decisions(backlog: Stack) -> None:
    """The first tick runs the full reconciliation pass (its snapshot pages are not kept: not
    replayable); the next one, a minute later, is kept whole and the engine replay of it, slice by
    slice on the recorded reads, gives the decisions it made live."""
    stack = backlog
    stack.publish(tick("tick-full"))
    stack.drain()
    since = datetime.now(UTC)
    later = "2026-03-21T12:01:00Z"
    job_id = stack.publish({**tick("tick-next"), "time": later, "data": {"now": later}}).json()["job_id"]
    stack.drain()
    until = datetime.now(UTC) + timedelta(seconds=1)
    [record] = stack.container.store.event_records_between(since, until)
    assert record["event_id"] == "tick-next" and not record["reads"].get("incomplete")
    decided = stack.container.store.list_decisions(job_id=job_id, limit=1000)
    assert len([d for d in decided if d.subject == "backlog"]) == N_HELD // PER_SLICE
    report = engine_replay(stack.container.store, since, until, stack.container.store.get_policy())
    assert report["replayed"] == 1 and report["not_replayable"]["count"] == 0, report["not_replayable"]
    assert report["decisions"] == len(decided) and report["total"]["changed"] == 0, report["changed"]


def test_orders_that_may_take_a_common_sku_share_a_slice_and_slices_keep_their_bounds() -> None:
    def order(n: int, *skus: str, subs: bool = False) -> Order:
        lines = [{"line": i + 1, "sku": s, "qty": 1} for i, s in enumerate(skus)]
        return Order.model_validate({"id": f"SO-{n}", "customer": "C", "lines": lines, "allow_substitution": subs})

    subs = {"A": ["B"], "X": ["Y"]}
    orders = [
        order(1, "A", subs=True),  # may take B: joins order 2's component
        order(2, "B", "C"),
        order(3, "D"),
        order(4, "E"),
        order(5, "X"),  # substitution not allowed: Y is not its SKU
        order(6, "Y"),
    ]
    assert backlog_batches(orders, subs, max_orders=10, max_skus=10) == [{"A", "B", "C", "D", "E", "X", "Y"}]
    assert backlog_batches(orders, subs, max_orders=2, max_skus=10) == [{"A", "B", "C"}, {"D", "E"}, {"X", "Y"}]
    # A component bigger than the bounds is solved whole, in a slice of its own.
    assert backlog_batches(orders, subs, max_orders=1, max_skus=1) == [
        {"A", "B", "C"},
        {"D"},
        {"E"},
        {"X"},
        {"Y"},
    ]
    assert backlog_batches([], subs) == []
