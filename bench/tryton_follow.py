"""``crossdock bench tryton-follow``: change → decision latency against a live trytond, and events
missed or duplicated across a restart of the follower.

1. A local trytond (the ``--systems tryton`` template under ``.cache/tryton``) is seeded with the
   example scenario's master data; Crossdock runs with ``CROSSDOCK_ERP=tryton`` and the network file
   made from the same scenario, every workflow autonomous (decisions write back into Tryton), two
   worker threads, and ``connectors.tryton.follower`` polling every ``interval_s``.
2. Latency: ``sales`` sales are created and confirmed through Tryton's JSON-RPC one after the other,
   as a Tryton user does; each one's latency runs from the moment ``confirm`` returned (the change
   is committed in Tryton) to its decision's ``created_at`` in Crossdock's store, split at the
   intake's ``accepted_at`` (the follower's share, then the pipeline's).
3. Restart: the follower is stopped; ``restart_sales`` more sales are confirmed while it is down
   (the first of them right before it stops, so they fall in its last poll's overlap); a new
   follower (new Tryton session, new HTTP client, same Redis) is started.
4. Missed = sales with no decision; duplicated = sales decided from more than one event (distinct
   event ids among its decisions). Both are read from Crossdock's store, not from the follower.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
import yaml

from api.main import create_app
from bench.replay import start_workers
from bench.replay_tryton import DEFAULT_CACHE
from bench.tryton_server import TrytonServer, TrytonTemplate, start_server
from connectors.tryton.follower import FollowState, Intake, PollResult, TrytonFollower
from connectors.tryton.loader import load_scenario as seed_tryton
from connectors.tryton.network_file import from_scenario
from connectors.tryton.rpc import TrytonClient
from domain.governance import WORKFLOWS
from domain.models import Policy
from runtime.bootstrap import bootstrap
from runtime.servers import serve_in_thread
from runtime.settings import Settings, hash_key
from twin.scenarios import EXAMPLE
from twin.server import create_twin_app
from twin.state import TwinState

SOURCE = "tryton/bench"


def confirm_sale(c: TrytonClient, reference: str | None, customer: str, lines: list[tuple[str, float]]) -> int:
    """What a Tryton user does: a quotation for a customer at DC-EAST, then Quote and Confirm."""
    (party,) = c.search("party.party", [("code", "=", customer)], limit=1)
    (address,) = c.search("party.address", [("party", "=", party)], limit=1)
    (warehouse,) = c.search("stock.location", [("type", "=", "warehouse"), ("code", "=", "DC-EAST")], limit=1)
    products = {
        r["code"]: r
        for r in c.search_read(
            "product.product", [("code", "in", [s for s, _ in lines])], ["code", "list_price", "default_uom"]
        )
    }
    values: dict[str, Any] = {
        "party": party,
        "invoice_address": address,
        "shipment_address": address,
        "warehouse": warehouse,
        "lines": [
            (
                "create",
                [
                    {
                        "type": "line",
                        "sequence": n + 1,
                        "product": products[sku]["id"],
                        "quantity": qty,
                        "unit": products[sku]["default_uom"],
                        "unit_price": products[sku]["list_price"] or Decimal(0),
                    }
                    for n, (sku, qty) in enumerate(lines)
                ],
            )
        ],
    }
    if reference:
        values["reference"] = reference
    (sid,) = c.create("sale.sale", [values])
    c.button("sale.sale", "quote", [sid])
    c.button("sale.sale", "confirm", [sid])
    return sid


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class _Running:
    """A follower polling in a thread until ``stop()``."""

    def __init__(self, server: TrytonServer, api_url: str, key: str, r: redis.Redis, prefix: str, **kw: Any) -> None:
        self.client = TrytonClient(server.config())
        self.intake = Intake(api_url, key)
        self.follower = TrytonFollower(self.client, self.intake, FollowState(r, prefix, SOURCE), source=SOURCE, **kw)
        self.polls: list[PollResult] = []
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, interval_s: float) -> _Running:
        self.follower.poll_once()  # the start: what Tryton holds now is not news
        self.thread = threading.Thread(
            target=self.follower.run, args=(self._stop, interval_s, self.polls.append), name="follower", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(30)
        self.intake.close()
        self.client.close()


def run_tryton_follow_bench(
    sales: int = 20,
    restart_sales: int = 10,
    interval_s: float = 0.2,
    progress: Callable[[str], None] | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    cache = cache_dir or Path(os.environ.get("CROSSDOCK_TRYTON_CACHE") or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    say("trytond template")
    template = TrytonTemplate.load_or_create(cache)
    workdir = Path(tempfile.mkdtemp(prefix="crossdock-follow-"))
    server = start_server(template, workdir / "trytond")
    stack: list[Callable[[], None]] = [server.stop, lambda: shutil.rmtree(workdir, ignore_errors=True)]
    try:
        scenario: dict[str, Any] = json.loads(EXAMPLE.read_text())
        client = TrytonClient(server.config())
        stack.insert(0, client.close)
        say("seeding Tryton")
        seed_tryton(client, scenario)
        network = workdir / "network.yaml"
        network.write_text(yaml.safe_dump(from_scenario(scenario).dump(), sort_keys=False))
        twin = serve_in_thread(create_twin_app(_twin(scenario)))  # only its /notify is used
        stack.insert(0, twin.stop)
        key, prefix = secrets.token_urlsafe(24), f"crossdock-follow-{secrets.token_hex(4)}"
        settings = Settings(
            env="test",
            data_dir=workdir / "crossdock",
            redis_url=os.environ.get("REDIS_URL") or None,
            stream_prefix=prefix,
            erp="tryton",
            network_file=network,
            notify_url=f"{twin.url}/notify",
            key_hashes={hash_key(key): "gateway"},
            block_ms=50,
            claim_idle_ms=30_000,
            retry_base_s=0.05,
            retry_max_s=1.0,
        )
        container = bootstrap(settings, tryton_config=server.config())
        stack.insert(0, container.close)
        container.store.set_policy(Policy(modes=dict.fromkeys(WORKFLOWS, "autonomous")))
        api = serve_in_thread(create_app(container))
        stack.insert(0, api.stop)
        stop_workers = threading.Event()
        workers = start_workers(container, 2, stop_workers)

        def halt_workers() -> None:
            stop_workers.set()
            for t in workers:
                t.join(10)

        stack.insert(0, halt_workers)
        if settings.redis_url:
            stack.insert(0, lambda: _drop_keys(container.redis, prefix))
        store = container.store

        def decided(order_id: str, timeout_s: float = 120.0) -> Any:
            """The order's first decision (its timestamps are the store's, so how often this
            looks does not change the latency measured)."""
            deadline = time.perf_counter() + timeout_s
            while time.perf_counter() < deadline:
                found = store.list_decisions(subject=order_id, limit=1)
                if found:
                    return found[0]
                time.sleep(0.05)
            return None

        say("follower started")
        first = _Running(server, api.url, key, container.redis, prefix).start(interval_s)
        latencies: list[float] = []
        follow: list[float] = []  # confirmed in Tryton → accepted by the intake
        decide: list[float] = []  # accepted by the intake → decision recorded
        refs: list[str] = []
        for n in range(sales):
            ref = f"SO-L{n:03d}"
            confirm_sale(client, ref, "CUST-2", [("SKU-100", 1)])
            t0 = dt.datetime.now(dt.UTC)  # confirm returned: the change is committed in Tryton
            decision = decided(ref)
            refs.append(ref)
            if decision is not None and decision.created_at and decision.accepted_at:
                created, accepted = _utc(decision.created_at), _utc(decision.accepted_at)
                latencies.append((created - t0).total_seconds() * 1000)
                follow.append((accepted - t0).total_seconds() * 1000)
                decide.append((created - accepted).total_seconds() * 1000)
            say(f"sale {n + 1}/{sales}")
        # The restart: one sale right before the stop (inside the last poll's overlap), the rest
        # while no follower runs.
        down: list[str] = []
        ref = "SO-R000"
        confirm_sale(client, ref, "CUST-2", [("SKU-100", 1)])
        down.append(ref)
        first.stop()
        for n in range(1, restart_sales):
            ref = f"SO-R{n:03d}"
            confirm_sale(client, ref, "CUST-1", [("SKU-100", 1)])
            down.append(ref)
        say("follower restarted")
        t_restart = time.perf_counter()
        second = _Running(server, api.url, key, container.redis, prefix).start(interval_s)
        for ref in down:
            decided(ref)
        caught_up_s = time.perf_counter() - t_restart
        time.sleep(max(1.0, 5 * interval_s))  # a few more polls over the overlap
        second.stop()
        time.sleep(0.5)
        per_sale = {ref: {d.event_id for d in store.list_decisions(subject=ref, limit=100)} for ref in refs + down}
        polls = first.polls + second.polls
        poll_ms = [p.seconds * 1000 for p in polls]
        executed = sum(
            1
            for ref in refs + down
            if any(d.status == "executed" for d in store.list_decisions(subject=ref, limit=100))
        )
        return {
            "sales (latency)": sales,
            "poll interval ms": interval_s * 1000,
            "change → decision p50 ms": round(_pct(latencies, 0.5), 1),
            "change → decision p95 ms": round(_pct(latencies, 0.95), 1),
            "change → decision max ms": round(max(latencies), 1) if latencies else float("nan"),
            "of which change → intake p50/p95 ms": f"{_pct(follow, 0.5):.0f} / {_pct(follow, 0.95):.0f}",
            "of which intake → decision p50/p95 ms": f"{_pct(decide, 0.5):.0f} / {_pct(decide, 0.95):.0f}",
            "follower poll p50/p95 ms": f"{_pct(poll_ms, 0.5):.0f} / {_pct(poll_ms, 0.95):.0f}",
            "sales across the restart": len(down),
            "restart: caught up in s": round(caught_up_s, 2),
            "missed": sum(1 for ids in per_sale.values() if not ids),
            "duplicated": sum(1 for ids in per_sale.values() if len(ids) > 1),
            "re-posted, dropped by the intake": sum(p.duplicates for p in polls),
            "decisions executed in Tryton": f"{executed}/{len(per_sale)}",
        }
    finally:
        for undo in stack:  # keep stopping the rest (trytond above all) whatever one of them raises
            with contextlib.suppress(Exception):
                undo()


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _twin(scenario: dict[str, Any]) -> TwinState:
    from domain.models import Scenario

    return TwinState(Scenario.model_validate(scenario))


def _drop_keys(r: redis.Redis, prefix: str) -> None:
    for k in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.delete(k)
