"""The Tryton follower as a role inside `crossdock serve` (issue 21, item 1): with
``CROSSDOCK_TRYTON_FOLLOW=true`` a user who runs `serve` against their Tryton gets events without a
second command.

Real parts only: a trytond seeded with the example scenario, a real Redis and PostgreSQL, and two
`crossdock serve` subprocesses with the setting on (no `crossdock connect tryton`). Sales are
confirmed through Tryton's JSON-RPC as a Tryton user confirms them; each must be decided once
(``GET /v1/decisions``) and written back into Tryton (its customer shipment), whichever process
holds the follower's lease, and stopping the holder (SIGTERM) must hand the follower to the other
at once (the lease is released, not left to run out) and leave nothing running.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
import yaml

from bench.replay_tryton import customer_shipments
from bench.tryton_follow import confirm_sale
from connectors.tryton.network_file import from_scenario
from domain.governance import WORKFLOWS
from domain.models import Scenario
from runtime.bootstrap import bootstrap
from runtime.servers import ThreadedServer, free_port, serve_in_thread
from runtime.settings import Settings
from runtime.tryton_follow import FollowerRole, lease_key, status
from tests.integration.conftest import REPO, fresh_pg_database
from tests.waiting import wait_for
from twin.server import create_twin_app
from twin.state import TwinState

from .harness import Tryton

INTERVAL_S = 0.2
SETTLED = ("executed", "failed")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def clean_env() -> dict[str, str]:
    """This process's environment without any Crossdock or Tryton setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CROSSDOCK_", "TRYTON_"))}


@dataclass
class Serve:
    name: str
    proc: subprocess.Popen[bytes]
    api: httpx.Client
    log: Path

    def ready(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            pytest.fail(f"serve {self.name} exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            answer = self.api.get("/readyz")
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def follower(self) -> dict[str, Any]:
        status: dict[str, Any] = self.api.get("/readyz").json()["follower"]
        return status

    def events_counted(self, admin: dict[str, str]) -> dict[str, float]:
        """This process's ``crossdock_events_total`` by result (its own intake, HTTP or in-process)."""
        out: dict[str, float] = {}
        for line in self.api.get("/metrics", headers=admin).text.splitlines():
            if line.startswith("crossdock_events_total{"):
                result = line.split('result="', 1)[1].split('"', 1)[0]
                out[result] = float(line.rsplit(" ", 1)[1])
        return out


@dataclass
class Stack:
    env: dict[str, str]
    tmp: Path
    redis: redis.Redis
    prefix: str
    admin: dict[str, str]
    notify: ThreadedServer
    serves: list[Serve] = field(default_factory=list)

    def start(self, name: str) -> Serve:
        port = free_port()
        log = self.tmp / f"serve-{name}.log"
        env = {**self.env, "CROSSDOCK_KNOWLEDGE_PATH": str(self.tmp / f"kb-{name}")}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "crossdock.cli", "serve", "--port", str(port), "--workers", "2"],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        serve = Serve(name, proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0, trust_env=False), log)
        self.serves.append(serve)
        return serve

    def decisions(self, serve: Serve, subject: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = serve.api.get(
            "/v1/decisions", params={"subject": subject}, headers=self.admin
        ).json()
        return found

    def holder(self) -> Serve:
        """The process whose follower thread holds the lease (each /readyz says the same holder)."""
        views = [s.follower() for s in self.serves if s.proc.poll() is None]
        assert len({v["holder"] for v in views}) == 1, views
        (serve,) = [s for s in self.serves if s.proc.poll() is None and s.follower()["this_instance"]]
        return serve


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, as a service manager stops it; the exit code (SIGKILL only if it hangs: a failure)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        pytest.fail(f"serve (pid {proc.pid}) did not stop within {timeout:g} s of SIGTERM")


@pytest.fixture(scope="module")
def stack(tryton: Tryton, tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("serve-follow")
    network = tmp / "network.yaml"
    network.write_text(yaml.safe_dump(from_scenario(tryton.scenario).dump(), sort_keys=False))
    notify = serve_in_thread(create_twin_app(TwinState(Scenario.model_validate(tryton.scenario))))  # its /notify
    admin, prefix = secrets.token_urlsafe(18), f"test-serve-follow-{secrets.token_hex(4)}"
    config = tryton.server.config()
    client = redis.Redis.from_url(redis_url)
    with fresh_pg_database() as db:
        env = {
            **clean_env(),
            "REDIS_URL": redis_url,
            "DATABASE_URL": db,
            "CROSSDOCK_ENV": "test",
            "CROSSDOCK_DATA_DIR": str(tmp / "data"),
            "CROSSDOCK_STREAM_PREFIX": prefix,
            "CROSSDOCK_API_KEYS": f"{admin}:admin:admin",
            "CROSSDOCK_ERP": "tryton",
            "CROSSDOCK_NETWORK_FILE": str(network),
            "CROSSDOCK_NOTIFY_URL": f"{notify.url}/notify",
            "CROSSDOCK_TICK_S": "0",
            "CROSSDOCK_KNOWLEDGE_SYNC_S": "0",
            "CROSSDOCK_BACKGROUND_WORKERS": "0",
            "CROSSDOCK_BLOCK_MS": "100",
            "CROSSDOCK_TRYTON_FOLLOW": "true",
            "CROSSDOCK_TRYTON_FOLLOW_S": str(INTERVAL_S),
            "TRYTON_URL": config.url,
            "TRYTON_DATABASE": config.database,
            "TRYTON_USER": config.user,
            "TRYTON_PASSWORD": config.password,
        }
        s = Stack(env, tmp, client, prefix, {"Authorization": f"Bearer {admin}"}, notify)
        try:
            yield s
        finally:
            for serve in s.serves:
                if serve.proc.poll() is None:
                    serve.proc.kill()
                    serve.proc.wait(10)
                serve.api.close()
            notify.stop()
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
            client.close()


@pytest.mark.timeout(300)  # the module's trytond is seeded first (about a minute when busy), then 4 starts
def test_a_bad_tryton_login_stops_serve_at_start_with_one_line(stack: Stack) -> None:
    def serve(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crossdock.cli", "serve", "--port", str(free_port())],
            env={**stack.env, "DATABASE_URL": f"sqlite:///{stack.tmp / 'refused.db'}", **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for env, expected in [
        ({"TRYTON_URL": "http://127.0.0.1:9"}, "Tryton at http://127.0.0.1:9 unreachable during login"),
        ({"TRYTON_PASSWORD": "not-the-password"}, "Tryton refused the login of 'admin'"),
        ({"TRYTON_DATABASE": ""}, "Tryton connector is not configured: set TRYTON_DATABASE"),
        ({"CROSSDOCK_ERP": "twin"}, "CROSSDOCK_TRYTON_FOLLOW needs CROSSDOCK_ERP=tryton"),
    ]:
        done = serve(**env)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2, (env, done.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (env, done.stderr)
        assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr + done.stdout


@pytest.mark.timeout(600)  # two serve processes start, then 12 sales are decided in Tryton: minutes when busy
def test_serve_follows_tryton_once_across_two_processes_and_hands_over_on_sigterm(tryton: Tryton, stack: Stack) -> None:
    started = time.monotonic()
    one = stack.start("one")
    wait_for(one.ready, 120, "serve one ready")
    to_ready = time.monotonic() - started
    two = stack.start("two")
    wait_for(two.ready, 120, "serve two ready")
    one.api.patch(
        "/v1/policy", json={"modes": dict.fromkeys(WORKFLOWS, "autonomous")}, headers=stack.admin
    ).raise_for_status()
    # The follower is running in exactly one of them, and both /readyz say which.
    wait_for(lambda: one.follower().get("running") and one.follower()["last_poll"], 60, "a follower polling")
    holder = stack.holder()
    status = holder.follower()
    assert status["enabled"] and status["interval_s"] == INTERVAL_S and status["last_error"] is None, status
    assert status["lag_s"] is not None and status["lag_s"] < 30, status

    c = tryton.client
    confirmed: dict[str, float] = {}

    def sale(order_id: str, sku: str = "SKU-100", qty: float = 1) -> None:
        confirm_sale(c, order_id, "CUST-2", [(sku, qty)])
        confirmed[order_id] = time.time()  # the change is committed in Tryton

    def decided(order_id: str) -> dict[str, Any]:
        found = wait_for(lambda: stack.decisions(two, order_id), 120, f"{order_id} decided")
        return found[0]  # type: ignore[no-any-return]

    sale("SO-SF1", qty=2)
    first = decided("SO-SF1")
    sid = c.search("sale.sale", [("reference", "=", "SO-SF1")])[0]
    assert first["event_id"] == f"tryton:sale.sale:{sid}:confirmed" and first["workflow"] == "order_release"
    wait_for(lambda: stack.decisions(two, "SO-SF1")[0]["status"] == "executed", 120, "SO-SF1 executed")
    shipments = customer_shipments(c, "SO-SF1")  # the decision, written back into Tryton
    assert shipments and sum(s["qty"] for s in shipments) == 2, shipments

    # 10 sales one after another, as `crossdock bench tryton-follow` confirms them (each once the
    # last is decided): each decided once, from one event posted once; the latency from `confirm`
    # returning to the decision, split at the intake's acceptance (the follower's share).
    # (3 in the default suite, the 10 of the reported figure with CROSSDOCK_TEST_BENCH=1.)
    orders = [f"SO-SF{n}" for n in range(2, 12 if os.environ.get("CROSSDOCK_TEST_BENCH") == "1" else 5)]
    latencies, follow = [], []
    for order_id in orders:
        sale(order_id)
        d = decided(order_id)
        latencies.append(datetime.fromisoformat(d["created_at"]).timestamp() - confirmed[order_id])
        follow.append(datetime.fromisoformat(d["accepted_at"]).timestamp() - confirmed[order_id])

    def settled(order_id: str) -> bool:
        return stack.decisions(two, order_id)[0]["status"] in SETTLED

    for order_id in ["SO-SF1", *orders]:
        wait_for(lambda: settled(order_id), 120, f"{order_id} settled")  # noqa: B023 - called at once
        assert len({d["event_id"] for d in stack.decisions(two, order_id)}) == 1, order_id
    executed = [o for o in orders if stack.decisions(two, o)[0]["status"] == "executed"]
    assert len(executed) == len(orders), [(o, stack.decisions(two, o)[0]["error"]) for o in orders]
    # Posted once: the intake of the two processes together accepted each sale's event once and
    # was never handed a duplicate (the other process did not post it too).
    counted = [s.events_counted(stack.admin) for s in (one, two)]
    assert sum(n.get("accepted", 0) for n in counted) == 1 + len(orders), counted
    assert sum(n.get("duplicate", 0) for n in counted) == 0, counted
    assert holder.follower()["accepted"] == 1 + len(orders)
    idle = two if holder is one else one
    assert idle.events_counted(stack.admin).get("accepted", 0) == 0  # the other did not follow at all
    print(  # noqa: T201 - the measurement this test reports (pytest -s)
        f"\nin-serve follower, {len(latencies)} sales one by one, polling every {INTERVAL_S} s: change -> decision "
        f"p50 {pct(latencies, 0.5):.2f} s, p95 {pct(latencies, 0.95):.2f} s; of which change -> queued p50 "
        f"{pct(follow, 0.5):.2f} s, p95 {pct(follow, 0.95):.2f} s; serve one to /readyz {to_ready:.1f} s; "
        f"load {os.getloadavg()[0]:.2f}"
    )

    # SIGTERM the holder: it exits cleanly, releases the lease (the other takes over well before
    # the 15 s lease would run out), and leaves no process or thread behind.
    other = two if holder is one else one
    children = [p.pid for p in psutil.Process(holder.proc.pid).children(recursive=True)]
    stopped_at = time.monotonic()
    code = stop(holder.proc)
    assert code in (0, 128 + signal.SIGTERM), holder.log.read_text()[-3000:]
    assert not psutil.pid_exists(holder.proc.pid) or psutil.Process(holder.proc.pid).status() == "zombie"
    assert not [p for p in children if psutil.pid_exists(p)], children
    wait_for(lambda: other.follower()["this_instance"] and other.follower()["last_poll"], 30, "the other takes over")
    assert time.monotonic() - stopped_at < 12, "taken over only when the lease ran out: it was not released"
    assert other.follower()["running"]
    sale("SO-SF99")
    d = decided("SO-SF99")
    assert len({x["event_id"] for x in stack.decisions(other, "SO-SF99")}) == 1 and d["event_id"].startswith(
        "tryton:sale.sale:"
    )
    assert other.follower()["accepted"] == 1  # the new holder's own count

    # The last one stops too: no follower is left running anywhere, the lease is free.
    assert stop(other.proc) in (0, 128 + signal.SIGTERM), other.log.read_text()[-3000:]
    assert stack.redis.get(f"{stack.prefix}:tryton-follow:lease") is None
    assert "Traceback" not in holder.log.read_text() + other.log.read_text()


@pytest.mark.timeout(300)
def test_the_follower_thread_reports_tryton_away_retries_and_releases_its_lease(
    tryton: Tryton, tmp_path: Path, redis_url: str
) -> None:
    """In-process: Tryton unreachable is an error in the status (not a dead thread), the next
    retry after it is back polls again, and stopping the thread frees the lease."""
    network = tmp_path / "network.yaml"
    network.write_text(yaml.safe_dump(from_scenario(tryton.scenario).dump(), sort_keys=False))
    prefix = f"test-follow-role-{secrets.token_hex(4)}"
    settings = Settings(
        env="test",
        data_dir=tmp_path,
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        stream_prefix=prefix,
        erp="tryton",
        network_file=network,
        tryton_follow=True,
        tryton_follow_s=0.1,
    )
    container = bootstrap(settings, tryton_config=tryton.server.config())
    good = tryton.server.config()
    role = FollowerRole(container, replace(good, url="http://127.0.0.1:9"), 0.1)
    stop_event = threading.Event()
    thread = role.start(stop_event)
    try:
        away = wait_for(
            lambda: (st := status(container.redis, prefix))["last_error"] and st, 30, "the error in the status"
        )
        assert "unreachable" in away["last_error"] and away["running"] and away["last_poll"] is None, away
        assert away["this_instance"] and thread.is_alive()
        role.config = good  # Tryton is back
        back = wait_for(lambda: (st := status(container.redis, prefix))["last_poll"] and st, 60, "a poll")
        assert back["last_error"] is None and back["lag_s"] < 30 and back["running"], back
    finally:
        stop_event.set()
        thread.join(30)
        alive = thread.is_alive()
        leased = container.redis.get(lease_key(prefix))
        for key in container.redis.scan_iter(match=f"{prefix}:*", count=1000):
            container.redis.delete(key)
        container.close()
    assert not alive and leased is None  # the thread ended and gave the lease up
