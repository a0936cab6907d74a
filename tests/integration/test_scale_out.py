"""Past one machine (issue 20.5): two `crossdock serve` processes and two `crossdock worker`
processes on one Redis and one PostgreSQL, with the built-in clock on in both API processes.

Every order is posted to both APIs (a gateway retrying against another instance), 20 orders want
the last 7 units of one SKU, and ticks run meanwhile. What must hold: no event lost (every job
done), none decided twice (one job per event, every action applied once), no oversell (7
allocated, 13 held), and one tick per clock slot whichever instance held the lease.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.servers import free_port
from tests.integration.conftest import REPO, close_stack, fresh_pg_database, make_stack, order_event
from tests.waiting import wait_for

API_KEY = "scale-out-gateway-key"


def test_two_apis_and_two_workers_lose_nothing_decide_once_and_never_oversell(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    scenario = copy.deepcopy(example)
    scenario["events"] = []
    with fresh_pg_database() as db:
        stack = make_stack(tmp_path, redis_url, scenario, database_url=db)
        env = {
            **stack.env,
            "CROSSDOCK_API_KEYS": f"{API_KEY}:gateway",
            "CROSSDOCK_TICK_S": "1",
            "CROSSDOCK_KNOWLEDGE_PATH": str(tmp_path / "no-knowledge"),
        }
        ports = [free_port(), free_port()]
        procs: list[subprocess.Popen[bytes]] = []

        def start(*args: str) -> None:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "crossdock.cli", *args],
                    env=env,
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )

        try:
            for port in ports:
                start("serve", "--port", str(port), "--workers", "1")
            for n in range(2):
                start("worker", "--name", f"scale-{n}")
            apis = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=30.0, trust_env=False) for p in ports]

            def ready() -> bool:
                for p in procs:
                    if p.poll() is not None:
                        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
                        pytest.fail(f"{p.args} exited with {p.returncode}: {err[-2000:]}")
                try:
                    return all(api.get("/readyz").status_code == 200 for api in apis)
                except httpx.HTTPError:
                    return False

            wait_for(ready, 90, "both APIs ready")
            # SKU-200: 7 pickable at DC-EAST, the only node holding it; 20 orders want 1 each.
            events = [order_event(f"SO-{i}", [("SKU-200", 1)], allow_split=False) for i in range(20)]
            headers = {"Authorization": f"Bearer {API_KEY}"}
            jobs: dict[str, str] = {}
            for i, event in enumerate(events):
                stack.state.apply_event(event)
                first, second = apis[i % 2], apis[(i + 1) % 2]
                a = first.post("/v1/events", json=event, headers=headers)
                b = second.post("/v1/events", json=event, headers=headers)  # the same event, the other API
                assert a.status_code == b.status_code == 202, (a.text, b.text)
                assert a.json()["job_id"] == b.json()["job_id"] and b.json()["duplicate"] is True
                jobs[event["data"]["id"]] = a.json()["job_id"]
            queue = stack.container.queue
            wait_for(
                lambda: all((queue.job(j) or {}).get("status") == "done" for j in jobs.values()), 90, "all jobs done"
            )
            store = stack.container.store

            def ticks() -> list[Any]:
                accepted = store.audit(kind="event.accepted", limit=10_000)
                return [e for e in accepted if e.payload["type"] == "crossdock.tick"]

            wait_for(lambda: len(ticks()) >= 2, 60, "two ticks decided")

            state = stack.state.export_state()
            allocated = sum(a["qty"] for o in state["oms"]["orders"] for ln in o["lines"] for a in ln["allocations"])
            assert state["oversells"]["count"] == 0 and allocated == 7
            assert sum(o["status"] == "held" for o in state["oms"]["orders"]) == 13
            # Decided once: each order's event has one job whose engine decision is recorded once,
            # and every action any instance applied was applied exactly once.
            for order_id, job_id in jobs.items():
                decided = [d for d in store.list_decisions(job_id=job_id) if d.subject == order_id]
                assert len(decided) == 1, (order_id, [d.id for d in decided])
            counts = [a["count"] for a in stack.state.applied_actions()]
            assert counts and set(counts) == {1}
            workers = {(queue.job(j) or {}).get("worker") for j in jobs.values()}
            assert len(workers) >= 2, workers  # the jobs were shared out
            # One tick per slot: the clock's event id is its slot, whichever instance queued it.
            slots = [e.payload["event_id"] for e in ticks()]
            assert slots and len(slots) == len(set(slots))
            assert store.verify_audit().ok
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            close_stack(stack)
