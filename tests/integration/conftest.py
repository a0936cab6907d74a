"""Integration fixtures: the real API over HTTP, a real Redis, a real store, the twin.

Redis and PostgreSQL are the servers that ``REDIS_URL`` / ``DATABASE_URL`` point at, else embedded
ones started once per session (``tests/services.py``)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from api.main import create_app
from domain.governance import WORKFLOWS
from domain.models import Policy, Scenario
from runtime.bootstrap import Container, bootstrap
from runtime.servers import ThreadedServer, serve_in_thread
from runtime.settings import Settings, hash_key
from runtime.store import normalise_url
from runtime.worker import Worker
from tests import services
from tests.integration.tryton.harness import tryton_template  # noqa: F401  (one template per session)
from twin.scenarios import EXAMPLE
from twin.server import create_twin_app
from twin.state import TwinState

REPO = Path(__file__).resolve().parents[2]
# A fresh install observes every workflow (README "Rollout"). Most tests exercise what the workflows
# do, so their stack starts where a finished rollout ends: every workflow autonomous, the default
# thresholds. A test of the rollout itself asks for ``policy=None`` (the fresh install).
ROLLED_OUT = Policy(modes=dict.fromkeys(WORKFLOWS, "autonomous"))


def pg_admin_url() -> str:
    """A PostgreSQL server URL (psycopg driver) whose user may create databases: ``DATABASE_URL``,
    else the session's embedded server, started on first use."""
    return normalise_url(services.postgres_url())


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards; an unreachable server fails the test."""
    name = f"crossdock_test_{uuid.uuid4().hex[:12]}"
    admin_url = pg_admin_url()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {admin.url!r}: {exc}")
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The session's PostgreSQL server (``DATABASE_URL``, else embedded); stopped at session end."""
    return pg_admin_url()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The session's Redis (``REDIS_URL``, else embedded); stopped at session end."""
    url = services.redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # a set REDIS_URL that does not answer is a failure, not a skip
        pytest.fail(f"Redis at {url} is not reachable: {exc}")
    return url


@pytest.fixture
def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


@dataclass
class Stack:
    """One Crossdock (API + store + queue) wired to one twin, all on loopback."""

    state: TwinState
    twin: ThreadedServer
    container: Container
    api: ThreadedServer
    keys: dict[str, str]
    env: dict[str, str]
    client: httpx.Client
    threads: list[threading.Thread] = field(default_factory=list)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def post_events(self, body: Any, role: str = "gateway", **kw: Any) -> httpx.Response:
        return self.client.post("/v1/events", json=body, headers=self.headers(role), **kw)

    def publish(self, event: dict[str, Any]) -> httpx.Response:
        """What a source system does: change its own state, then post the event."""
        self.state.apply_event(event)
        return self.post_events(event)

    def set_policy(self, **settings: Any) -> None:
        """Change the given settings (a PATCH: in ``modes``, only the workflows given change)."""
        self.client.patch("/v1/policy", json=settings, headers=self.headers("admin")).raise_for_status()

    def drain(self, workers: int = 1) -> int:
        """Run burst workers in threads until the queue is idle; returns jobs processed."""
        done: list[int] = []

        def run(n: int) -> None:
            w = Worker(self.container.queue, self.container.pipeline.handle, self.container.settings, name=f"t{n}")
            done.append(w.run(burst=True))

        threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return sum(done)

    def worker_process(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A real `crossdock worker` process on the same Redis, store and twin."""
        return subprocess.Popen(
            [sys.executable, "-m", "crossdock.cli", "worker", *args],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def make_stack(
    tmp_path: Path,
    redis_url: str,
    scenario: dict[str, Any],
    twin_app_wrapper: Any = None,
    *,
    policy: Policy | None = ROLLED_OUT,
    **overrides: Any,
) -> Stack:
    state = TwinState(Scenario.model_validate(scenario))
    twin_app = create_twin_app(state)
    twin = serve_in_thread(twin_app_wrapper(twin_app) if twin_app_wrapper else twin_app)
    keys = {role: secrets.token_urlsafe(18) for role in ("gateway", "planner", "cs_rep", "admin")}
    prefix = f"test-{secrets.token_hex(4)}"
    db = f"sqlite:///{tmp_path / 'store.db'}"
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": tmp_path,
        "redis_url": redis_url,
        "database_url": db,
        "stream_prefix": prefix,
        "wms_url": f"{twin.url}/wms",
        "erp_url": f"{twin.url}/erp",
        "oms_url": f"{twin.url}/oms",
        "notify_url": f"{twin.url}/notify",
        "key_hashes": {hash_key(k): role for role, k in keys.items()},
        "block_ms": 100,
        "claim_idle_ms": 60_000,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
        "max_attempts": 3,
        "ready_timeout_s": 10.0,  # /readyz probes: generous on a loaded CI box
    }
    values.update(overrides)
    settings = Settings(**values)
    container = bootstrap(settings)
    if policy is not None:  # set in the store, as an operator's earlier change would have
        container.store.set_policy(policy)
    api = serve_in_thread(create_app(container))
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": str(values["database_url"]),
        "CROSSDOCK_STREAM_PREFIX": prefix,
        "CROSSDOCK_DATA_DIR": str(tmp_path),
        "CROSSDOCK_WMS_URL": f"{twin.url}/wms",
        "CROSSDOCK_ERP_URL": f"{twin.url}/erp",
        "CROSSDOCK_OMS_URL": f"{twin.url}/oms",
        "CROSSDOCK_NOTIFY_URL": f"{twin.url}/notify",
        "CROSSDOCK_BLOCK_MS": "100",
        "CROSSDOCK_ENV": "test",
    }
    client = httpx.Client(base_url=api.url, timeout=30.0, trust_env=False)
    return Stack(state, twin, container, api, keys, env, client)


def close_stack(stack: Stack) -> None:
    stack.client.close()
    stack.api.stop()
    stack.twin.stop()
    r = stack.container.redis
    for key in r.scan_iter(match=f"{stack.container.settings.stream_prefix}:*", count=1000):
        r.delete(key)
    stack.container.close()


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, example: dict[str, Any]) -> Iterator[Stack]:
    s = make_stack(tmp_path, redis_url, example)
    yield s
    close_stack(s)


def capacity_event(
    pick_capacity_per_hour: float, *, node: str = "DC-EAST", zone: str = "PICK-ZONE-A", event_id: str = "evt-cap"
) -> dict[str, Any]:
    """A WMS ``wms.capacity.changed`` event (a zone's pick rate changed)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "wms/test",
        "type": "wms.capacity.changed",
        "time": "2026-03-21T08:30:00Z",
        "data": {"node": node, "zone": zone, "pick_capacity_per_hour": pick_capacity_per_hour},
    }


def order_event(
    order_id: str,
    lines: list[tuple[str, float]],
    *,
    customer: str = "CUST-2",
    region: str = "US-NE",
    allow_split: bool = True,
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data = {
        "id": order_id,
        "customer": customer,
        "region": region,
        "priority": "standard",
        "created": "2026-03-21T08:10:00Z",
        "ship_by": "2026-03-22T14:00:00Z",
        "carrier": "FEDX_GROUND",
        "allow_split": allow_split,
        "allow_substitution": False,
        "lines": [{"line": i + 1, "sku": sku, "qty": qty} for i, (sku, qty) in enumerate(lines)],
        **extra,
    }
    return {
        "specversion": "1.0",
        "id": event_id or f"evt-{order_id}",
        "source": "oms/test",
        "type": "oms.order.created",
        "time": "2026-03-21T08:10:00Z",
        "subject": order_id,
        "data": data,
    }
