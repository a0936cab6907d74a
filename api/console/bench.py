"""Server time of the console's review queue and order timeline over a store of 10,000 decisions,
beside the bare ``GET /v1/decisions`` of the same data.

``python -m api.console.bench [--decisions 10000] [--requests 200]`` (``tests/e2e/test_console_bench.py``
runs it too). It starts the twin, a store (SQLite in a temporary folder, or ``DATABASE_URL``), Redis
(``REDIS_URL``, or an embedded one) and the API with the console in threads, writes the decisions
straight into the store, signs in a planner, then times each page on the server: from the request
reaching the app to the last byte of the answer leaving it (an ASGI wrapper), so client and loopback
time are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from domain.decisions import Action, Decision, live_key, with_idempotency_keys
from domain.models import Scenario
from runtime.bootstrap import Container
from runtime.store import Store

Scope = dict[str, Any]

TARGET_P95_MS = 300.0


class ServerTimer:
    """ASGI wrapper: how long the app took for each request, from call to the last body byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {}
        self.label: str | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.label is None:
            await self.app(scope, receive, send)
            return
        label, started = self.label, time.perf_counter()

        async def timed(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.times.setdefault(label, []).append((time.perf_counter() - started) * 1000)

        await self.app(scope, receive, timed)


def _decision(i: int, subject: str, status: str, at: datetime) -> dict[str, Any]:
    """A decision shaped like the release engine's (evidence, actions, facts), about 3 kB of JSON."""
    node = ("DC-EAST", "DC-WEST", "STORE-12")[i % 3]
    qty = float(1 + i % 7)
    actions = [
        Action(
            system="oms",
            type="allocate",
            payload={"order_id": subject, "line": 1, "sku": "SKU-100", "node": node, "qty": qty},
        ),
        Action(
            system="wms",
            type="create_wave",
            payload={
                "waveId": f"WV-{subject}-{node}",
                "node": node,
                "orders": [
                    {"orderId": subject, "priorityScore": 12.0, "lines": [{"line": 1, "sku": "SKU-100", "qty": qty}]}
                ],
                "parameters": {
                    "workZone": "PICK-ZONE-A",
                    "carrierCode": "FEDX_GROUND",
                    "cutoffTime": "2026-03-21T14:00:00Z",
                },
            },
        ),
        Action(system="oms", type="update_order_status", payload={"order_id": subject, "status": "released"}),
    ]
    d = Decision(
        id=f"dec-bench-{i:06d}",
        event_id=f"evt-bench-{i}",
        job_id=f"job-bench-{i}",
        workflow="order_release",
        subject=subject,
        outcome="released",
        confidence=0.5 + (i % 50) / 100,
        cost_impact=round(1.1 * qty + (i % 13) * 7.3, 2),
        human_review_required=status == "pending_review",
        status=status,
        rationale=f"All lines are pickable; released from {node} (1.1/unit), the cheapest on-time source(s).",
        evidence={
            "engine": "release/1.1.0",
            "now": at.isoformat(),
            "customer": {"id": f"CUST-{i % 40}", "tier": "standard", "credit_hold": False},
            "lines": [
                {
                    "line": 1,
                    "sku": "SKU-100",
                    "qty": qty,
                    "nodes": {
                        n: {"on_hand": 25.0, "locked": 0.0, "allocated": 0.0, "pickable": 25.0, "erp_book": 25.0}
                        for n in ("DC-EAST", "DC-WEST", "STORE-12")
                    },
                    "allocated": {node: qty},
                    "short": 0.0,
                }
            ],
            "sourcing": {
                "binding_constraint": {"1": f"Served {qty:g} × SKU-100 from {node}; binding: none."},
                "cost": {"shipping": 1.1 * qty, "late": 0.0, "split": 0.0},
                "solver": "greedy",
            },
            "sop": "SOP-WAV-001 §2",
            "sop_quote": "An order is released only when it is fully allocated (or split by decision).",
            "governance": "order_release runs in propose mode",
        },
        actions=with_idempotency_keys(f"dec-bench-{i:06d}", actions),
        engine_version="release/1.1.0",
        actor="crossdock-engine",
        created_at=at,
        decided_at=at,
        facts={
            "orders": {subject: {"status": "open", "hold_reason": None, "lines": [[1, "SKU-100", qty, [], None]]}},
            "stock": {f"SKU-100@{node}": {"pickable": 25.0, "need": qty}},
            "waves": {subject: []},
        },
    )
    return d.model_dump(mode="json")


def _wave_plan(i: int, orders: list[str], at: datetime) -> dict[str, Any]:
    """A wave plan (subject ``waves``): one wave naming a dozen orders."""
    named = [orders[(i * 7 + k) % len(orders)] for k in range(12)]
    d = Decision(
        id=f"dec-bench-{i:06d}",
        event_id=f"evt-bench-{i}",
        workflow="order_release",
        subject="waves",
        outcome="waves_planned",
        confidence=1.0,
        cost_impact=0.0,
        human_review_required=False,
        status="executed",
        rationale="Planned waves for the released orders within the window.",
        evidence={"engine": "waves/1.1.0", "waved": named, "deferred": [], "governance": "autonomous"},
        actions=with_idempotency_keys(
            f"dec-bench-{i:06d}",
            [
                Action(
                    system="wms",
                    type="create_wave",
                    payload={
                        "waveId": f"WV-PLAN-{i}",
                        "node": "DC-EAST",
                        "orders": [{"orderId": o, "lines": [{"line": 1, "sku": "SKU-100", "qty": 1}]} for o in named],
                    },
                )
            ],
        ),
        created_at=at,
        decided_at=at,
    )
    return d.model_dump(mode="json")


def _prevention(i: int, at: datetime) -> dict[str, Any]:
    """A backorder-prevention proposal about a SKU at a node (names no order)."""
    d = Decision(
        id=f"dec-bench-{i:06d}",
        event_id=f"evt-bench-{i}",
        workflow="backorder_prevention",
        subject=f"SKU-{i % 300}@DC-EAST",
        outcome="expedite_proposed",
        confidence=0.75,
        cost_impact=10.0 + i % 17,
        human_review_required=True,
        status="executed",
        rationale="Runs out before the PO arrives: ask the supplier to expedite.",
        evidence={"engine": "forecast/1.0.0", "projection": [[f"2026-03-{10 + k}", -k * 1.5] for k in range(14)]},
        actions=[],
        created_at=at,
        decided_at=at,
    )
    return d.model_dump(mode="json")


def seed(store: Store, count: int, now: datetime | None = None, seed_: int = 7) -> list[str]:
    """Write ``count`` decisions, a mix like a busy day's: 80 % about single orders (``SO-B<n>``, four
    decisions per order: the earlier ones executed or superseded, the newest pending review for
    about half the orders), 10 % wave plans naming a dozen orders each, 10 % backorder prevention;
    in one transaction, straight into the store's table. Returns the order ids."""
    rng = random.Random(seed_)
    now = now or datetime.now(UTC)
    per_order = [i for i in range(count) if i % 10 >= 2]
    orders = [f"SO-B{n:05d}" for n in range(max(1, len(per_order) // 4))]
    last_of: dict[str, int] = {}
    for n, i in enumerate(per_order):
        last_of[orders[n % len(orders)]] = i
    subject_of = {i: orders[n % len(orders)] for n, i in enumerate(per_order)}
    rows = []
    for i in range(count):
        at = now - timedelta(minutes=rng.uniform(1, 72 * 60))
        if i % 10 == 0:
            data = _wave_plan(i, orders, at)
        elif i % 10 == 1:
            data = _prevention(i, at)
        else:
            subject = subject_of[i]
            if last_of[subject] == i:
                status = "pending_review" if rng.random() < 0.5 else "executed"
            else:
                status = rng.choice(["superseded", "executed"])
            data = _decision(i, subject, status, at)
        rows.append(
            {
                "id": data["id"],
                "event_id": data["event_id"],
                "job_id": data["job_id"],
                "workflow": data["workflow"],
                "subject": data["subject"],
                "live_key": live_key(data["workflow"], data["subject"], data["outcome"]),
                "outcome": data["outcome"],
                "status": data["status"],
                "confidence": data["confidence"],
                "cost_impact": data["cost_impact"],
                "human_review_required": data["human_review_required"],
                "created_at": at,
                "updated_at": at,
                "data": data,
            }
        )
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(sa.insert(store.decisions), rows[start : start + 1000])
    return orders


@dataclass
class Timing:
    label: str
    ms: list[float] = field(default_factory=list)

    def pct(self, p: float) -> float:
        data = sorted(self.ms)
        return data[min(len(data) - 1, max(0, round(p / 100 * len(data)) - 1))]

    def row(self) -> dict[str, Any]:
        return {
            "page": self.label,
            "requests": len(self.ms),
            "p50_ms": round(statistics.median(self.ms), 1),
            "p95_ms": round(self.pct(95), 1),
            "max_ms": round(max(self.ms), 1),
        }


def measure(
    client: httpx.Client, timer: ServerTimer, label: str, paths: list[str], requests: int, warmup: int = 5
) -> Timing:
    """GET each path in turn ``requests`` times (after ``warmup`` untimed ones); the server's times."""
    for n in range(warmup):
        client.get(paths[n % len(paths)]).raise_for_status()
    timer.label = label
    timer.times[label] = []
    try:
        for n in range(requests):
            resp = client.get(paths[n % len(paths)])
            if resp.status_code != 200:
                raise RuntimeError(f"{paths[n % len(paths)]}: {resp.status_code} {resp.text[:300]}")
    finally:
        timer.label = None
    return Timing(label, timer.times[label])


def sign_in(client: httpx.Client, key: str) -> None:
    page = client.get("/console/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    resp = client.post("/console/signin", data={"csrf": token.group(1), "key": key})
    if resp.status_code != 303:
        raise RuntimeError(f"sign-in failed: {resp.status_code}")


def run_bench(
    container: Container,
    api_url: str,
    timer: ServerTimer,
    planner_key: str,
    state: Any,
    *,
    decisions: int = 10_000,
    requests: int = 200,
) -> list[dict[str, Any]]:
    """Seed the store, then time the pages (see the module docstring). ``state``: the twin's state,
    given the timed orders so the timeline reads them from the OMS."""
    orders = seed(container.store, decisions)
    timed_orders = orders[:: max(1, len(orders) // 20)][:20]
    for oid in timed_orders:
        state.apply_event(
            {
                "specversion": "1.0",
                "id": f"evt-{oid}",
                "source": "oms/bench",
                "type": "oms.order.created",
                "time": "2026-03-21T08:10:00Z",
                "data": {
                    "id": oid,
                    "customer": "CUST-1",
                    "region": "US-NE",
                    "priority": "standard",
                    "created": "2026-03-21T08:10:00Z",
                    "ship_by": "2026-03-22T14:00:00Z",
                    "carrier": "FEDX_GROUND",
                    "lines": [{"line": 1, "sku": "SKU-100", "qty": 2}],
                },
            }
        )
        for kind in ("event.accepted", "decision.recorded", "decision.approved"):
            container.store.append_audit(kind, oid, "bench", {"decision": oid})
    with httpx.Client(base_url=api_url, timeout=60.0, trust_env=False, follow_redirects=False) as client:
        sign_in(client, planner_key)
        queue = measure(client, timer, "console: review queue (first page of 50)", ["/console/queue"], requests)
        filtered = measure(
            client,
            timer,
            "console: review queue (workflow + subject filter, by value, page 3)",
            ["/console/queue?workflow=order_release&q=SO-B0&sort=value&dir=desc&page=3"],
            requests,
        )
        timeline = measure(
            client, timer, "console: order timeline", [f"/console/orders/{o}" for o in timed_orders], requests
        )
        bare_headers = {"Authorization": f"Bearer {planner_key}"}
        with httpx.Client(base_url=api_url, timeout=60.0, trust_env=False, headers=bare_headers) as api:
            bare = measure(
                api,
                timer,
                "API: GET /v1/decisions?status=pending_review&limit=50",
                ["/v1/decisions?status=pending_review&limit=50"],
                requests,
            )
    return [t.row() for t in (queue, filtered, timeline, bare)]


def table(rows: list[dict[str, Any]], decisions: int) -> str:
    lines = [
        f"Server time with {decisions:,} decisions in the store (goal: p95 <= {TARGET_P95_MS:.0f} ms)",
        "",
        "| page | requests | p50 (ms) | p95 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['page']} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} |")
    return "\n".join(lines)


@contextmanager
def bench_stack(redis_url: str | None, database_url: str | None, data_dir: Path) -> Iterator[tuple[Any, ...]]:
    """The twin, a container and the API (with the timer in front) in threads; a planner key."""
    from api.main import create_app
    from runtime.bootstrap import bootstrap
    from runtime.servers import serve_in_thread
    from runtime.settings import Settings, hash_key
    from twin.scenarios import EXAMPLE
    from twin.server import create_twin_app
    from twin.state import TwinState

    state = TwinState(Scenario.model_validate(json.loads(EXAMPLE.read_text())))
    twin = serve_in_thread(create_twin_app(state))
    key = secrets.token_urlsafe(24)
    settings = Settings(
        env="test",
        data_dir=data_dir,
        redis_url=redis_url,
        database_url=database_url or f"sqlite:///{data_dir / 'bench.db'}",
        stream_prefix=f"crossdock-bench-{secrets.token_hex(4)}",
        wms_url=f"{twin.url}/wms",
        erp_url=f"{twin.url}/erp",
        oms_url=f"{twin.url}/oms",
        notify_url=f"{twin.url}/notify",
        key_hashes={hash_key(key): "planner"},
    )
    container = bootstrap(settings)
    timer = ServerTimer(create_app(container))
    api = serve_in_thread(timer)
    try:
        yield container, api.url, timer, key, state
    finally:
        api.stop()
        twin.stop()
        for k in container.redis.scan_iter(match=f"{settings.stream_prefix}:*", count=1000):
            container.redis.delete(k)
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crossdock-console-bench-") as tmp:
        redis_url = os.environ.get("REDIS_URL") or None
        with bench_stack(redis_url, os.environ.get("DATABASE_URL") or None, Path(tmp)) as (c, url, timer, key, st):
            rows = run_bench(c, url, timer, key, st, decisions=args.decisions, requests=args.requests)
    print(table(rows, args.decisions))


if __name__ == "__main__":
    main()
