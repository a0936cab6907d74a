"""Scenario replay: the whole pipeline on one machine, HTTP intake → Redis → worker → twin.

The twin plays the three systems: for each event it first applies the source system's own
change (the OMS creates the order, the WMS posts the receipt), then the event is posted to
Crossdock's API exactly as an event gateway would, with a gateway key.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from pydantic import ValidationError

from api.main import create_app
from bench.report import build_report
from domain.decisions import live_key
from domain.events import CloudEvent, EventError, parse_event
from domain.models import Scenario
from runtime.bootstrap import Container, bootstrap, make_worker
from runtime.servers import ThreadedServer, serve_in_thread
from runtime.settings import Settings, hash_key
from twin.server import create_twin_app
from twin.state import TwinState

log = structlog.get_logger("crossdock.replay")
Progress = Callable[[int, int], None]


class ScenarioError(ValueError):
    """A scenario file that cannot be replayed; the message names the file, index and field."""


@dataclass
class RunOptions:
    policy: str = "crossdock"
    workers: int = 1
    redis_url: str | None = None
    database_url: str | None = None
    data_dir: Path | None = None
    job_timeout_s: float = 60.0
    progress: Progress | None = None
    # Extra ticks every this many simulated minutes between the scenario's events (None: only its own).
    tick_every_min: float | None = None
    # A simulated planner: approves each proposal once it has waited this many events (None: nobody
    # reviews). What it meets (stale approvals, failures) is what a slow planner would meet.
    planner_lag: int | None = None
    # The simulated planner rejects every proposal of these pairs ("workflow/outcome"), with a
    # reason, instead of approving it (guarded autonomy: a known bad class of proposals).
    planner_rejects: frozenset[str] = frozenset()
    # Called with the governance policy the replay put in force (the API's answer to its PUT).
    on_policy: Callable[[dict[str, Any]], None] | None = None


def load_scenario(source: Path | dict[str, Any]) -> tuple[Scenario, list[CloudEvent]]:
    """Validate a scenario and every event in it; errors say where (``events[3].data.lines.0.qty``)."""
    if isinstance(source, Path):
        try:
            raw = json.loads(source.read_text())
        except FileNotFoundError:
            raise ScenarioError(f"{source}: no such file") from None
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{source}: not valid JSON ({exc})") from None
        name = str(source)
    else:
        raw, name = source, "scenario"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{name}: a scenario is a JSON object")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"{name}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None
    events = []
    for i, item in enumerate(scenario.events):
        try:
            events.append(parse_event(item, ("events", i)))
        except EventError as exc:
            raise ScenarioError(f"{name}: {exc}") from None
    events.sort(key=lambda e: e.time.timestamp() if e.time else 0.0)
    return scenario, events


@dataclass
class _Stack:
    container: Container
    twin: ThreadedServer
    api: ThreadedServer
    stop: threading.Event
    workers: list[threading.Thread]
    keys: dict[str, str]
    tmp: Path | None


def run_scenario(source: Path | dict[str, Any], options: RunOptions | None = None) -> dict[str, Any]:
    """Replay a scenario through the whole pipeline and return the report."""
    report, live = run_scenario_live(source, options)
    live.stop()
    return report


@dataclass
class LiveStack:
    """A replay's stack left running (``crossdock demo --console``): the API with the console, the
    twin and the workers, on loopback, with an API key per role; ``stop()`` ends it."""

    api_url: str
    keys: dict[str, str]
    stack: _Stack

    def stop(self) -> None:
        _stop(self.stack)


def run_scenario_live(
    source: Path | dict[str, Any], options: RunOptions | None = None
) -> tuple[dict[str, Any], LiveStack]:
    """As ``run_scenario``, but the stack stays up after the report (a customer-service key is added
    to the gateway, planner and admin ones), so that a person can look at the day in the console."""
    options = options or RunOptions()
    scenario, events = load_scenario(source)
    state = TwinState(scenario)
    stack = _start(state, options)
    try:
        seen = replay_events(stack, scenario, events, options, state.apply_event)
        decisions = stack.container.store.list_decisions(limit=1_000_000)
        report = build_report(scenario, options.policy, decisions, state.export_state())
        report["kpis"].update(seen.kpis())
    except BaseException:
        _stop(stack)
        raise
    rep = secrets.token_urlsafe(24)
    stack.container.settings.key_hashes[hash_key(rep)] = "cs_rep"
    return report, LiveStack(stack.api.url, {**stack.keys, "cs_rep": rep}, stack)


def with_ticks(events: list[CloudEvent], every_min: float | None) -> list[CloudEvent]:
    """The events with a ``crossdock.tick`` at every ``every_min`` boundary of simulated time between
    the first and the last event (what the built-in clock sends in production)."""
    if not every_min or not events or events[0].time is None or events[-1].time is None:
        return events
    step = every_min * 60
    start, end = events[0].time.timestamp(), events[-1].time.timestamp()
    ticks = []
    at = (start // step + 1) * step
    while at <= end:
        when = datetime.fromtimestamp(at, UTC)
        ticks.append(
            CloudEvent.model_validate(
                {
                    "specversion": "1.0",
                    "id": f"replay-tick-{int(at)}",
                    "source": "crossdock/clock",
                    "type": "crossdock.tick",
                    "time": when.isoformat(),
                    "data": {"now": when.isoformat()},
                }
            )
        )
        at += step
    return sorted([*events, *ticks], key=lambda e: e.time.timestamp() if e.time else 0.0)


@dataclass
class ReviewLog:
    """What the replay saw of the review queue: the most live proposals one subject ever had, and
    the simulated planner's approvals by how they ended."""

    max_live_per_subject: int = 0
    approvals: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, int] = field(default_factory=dict)

    def look(
        self,
        client: httpx.Client,
        headers: dict[str, str],
        step: int,
        lag: int | None,
        rejects: frozenset[str] = frozenset(),
    ) -> None:
        live: list[dict[str, Any]] = []
        for status in ("pending_review", "awaiting_planner"):
            live += client.get("/v1/decisions", params={"status": status, "limit": 1000}, headers=headers).json()
        per: dict[str, int] = {}
        for d in live:
            key = live_key(d["workflow"], d["subject"], d["outcome"])
            per[key] = per.get(key, 0) + 1
            self.first_seen.setdefault(d["id"], step)
        self.max_live_per_subject = max([self.max_live_per_subject, *per.values()])
        if lag is None:
            return
        for d in live:
            if d["status"] == "pending_review" and step - self.first_seen[d["id"]] >= lag:
                if f"{d['workflow']}/{d['outcome']}" in rejects:
                    reason = {"reason": f"simulated planner: {d['workflow']}/{d['outcome']} is refused"}
                    got = client.post(f"/v1/decisions/{d['id']}/reject", json=reason, headers=headers)
                    refused = "rejected" if got.status_code == 200 else f"reject_{got.status_code}"
                    self.approvals[refused] = self.approvals.get(refused, 0) + 1
                    continue
                resp = client.post(f"/v1/decisions/{d['id']}/approve", headers=headers)
                body = resp.json()
                kind = body.get("status") if resp.status_code == 200 else (body.get("detail") or {}).get("error")
                self.approvals[str(kind)] = self.approvals.get(str(kind), 0) + 1

    def kpis(self) -> dict[str, Any]:
        return {"max_live_per_subject": self.max_live_per_subject, "planner_approvals": dict(self.approvals)}


def replay_events(
    stack: _Stack,
    scenario: Scenario,
    events: list[CloudEvent],
    options: RunOptions,
    apply_source: Callable[[dict[str, Any]], Any],
) -> ReviewLog:
    """Set the scenario's policy explicitly (a fresh store would observe every workflow; a workflow
    the scenario's ``modes`` leaves out still does), then post each event as the gateway would and
    wait for its job; after each, look at the review queue (and let the simulated planner approve,
    if there is one).

    ``apply_source`` first applies the event to the system that emitted it (the twin, or Tryton).
    """
    log_ = ReviewLog()
    events = with_ticks(events, options.tick_every_min)
    with httpx.Client(base_url=stack.api.url, timeout=30.0, trust_env=False) as client:
        admin = {"Authorization": f"Bearer {stack.keys['admin']}"}
        gateway = {"Authorization": f"Bearer {stack.keys['gateway']}"}
        planner = {"Authorization": f"Bearer {stack.keys['planner']}"}
        policy = scenario.settings.model_copy(update={"policy": options.policy})
        put = client.put(
            "/v1/policy",
            json={**policy.model_dump(mode="json"), "reason": f"replay of {scenario.scenario} ({options.policy})"},
            headers=admin,
        )
        put.raise_for_status()
        if options.on_policy is not None:
            options.on_policy(put.json())
        total = len(events)
        for i, event in enumerate(events, 1):
            payload = event.model_dump(mode="json", exclude_none=True)
            if event.source != "crossdock/clock":
                apply_source(payload)
            resp = client.post("/v1/events", json=payload, headers=gateway)
            if resp.status_code != 202:
                raise ScenarioError(f"event {event.id} refused by the API: {resp.status_code} {resp.text}")
            _wait(client, resp.json()["job_id"], gateway, options.job_timeout_s)
            log_.look(client, planner, i, options.planner_lag, options.planner_rejects)
            if options.progress:
                options.progress(i, total)
    return log_


def _wait(client: httpx.Client, job_id: str, headers: dict[str, str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job.get("status") in ("done", "dead"):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    raise TimeoutError(f"job {job_id} not finished after {timeout_s:g}s")


def _start(state: TwinState, options: RunOptions) -> _Stack:
    tmp = None
    data_dir = options.data_dir
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="crossdock-run-"))
        data_dir = tmp
    twin = serve_in_thread(create_twin_app(state))
    keys = {role: secrets.token_urlsafe(24) for role in ("gateway", "planner", "admin")}
    settings = Settings(
        env="test",
        data_dir=data_dir,
        redis_url=options.redis_url,
        database_url=options.database_url,
        stream_prefix=f"crossdock-run-{secrets.token_hex(4)}",
        wms_url=f"{twin.url}/wms",
        erp_url=f"{twin.url}/erp",
        oms_url=f"{twin.url}/oms",
        notify_url=f"{twin.url}/notify",
        key_hashes={hash_key(k): role for role, k in keys.items()},
        claim_idle_ms=5_000,
        block_ms=200,
        retry_base_s=0.05,
        retry_max_s=1.0,
    )
    container = bootstrap(settings)
    api = serve_in_thread(create_app(container))
    stop = threading.Event()
    return _Stack(container, twin, api, stop, start_workers(container, options.workers, stop), keys, tmp)


def start_workers(container: Container, count: int, stop: threading.Event) -> list[threading.Thread]:
    """``count`` worker threads consuming the container's queue until ``stop`` is set."""
    threads = []
    for n in range(count):
        worker = make_worker(container, name=f"replay-worker-{n}")
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"worker-{n}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _stop(stack: _Stack) -> None:
    stack.stop.set()
    for t in stack.workers:
        t.join(10)
    stack.api.stop()
    stack.twin.stop()
    container = stack.container
    if container.settings.redis_url:
        # A shared Redis: remove this run's keys so runs never see each other.
        for key in container.redis.scan_iter(match=f"{container.settings.stream_prefix}:*", count=1000):
            container.redis.delete(key)
    container.close()
    if stack.tmp is not None:
        shutil.rmtree(stack.tmp, ignore_errors=True)
