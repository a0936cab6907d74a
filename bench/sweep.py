"""Continuous reconciliation benchmark: a full pass over N SKU@node against the twin over HTTP.

The twin is built with ``pairs`` SKU@node (``nodes`` nodes, pairs/nodes SKUs each; on hand = book),
one open order per ``ORDER_EVERY`` pairs holding a reservation there, and ``planted`` standing
variances made with ``TwinState.drift``: a book change with no event and no change-feed entry,
which only a full pass can find. It is served over real HTTP on 127.0.0.1 and read through the HTTP
adapters; Crossdock's memory is a real Redis (``REDIS_URL``, else an embedded one).

Measured, in this run:

* **floor**: the bulk reads alone, every page of the three systems (WMS, ERP, OMS);
* **full pass**: ``reconcile_pass`` with no time budget (the reads, the merge, the engine's verdict on
  every SKU@node), then ``judge_suspects`` on what it found (a fresh picture per suspect and the
  decision); every planted variance must be raised, and nothing else;
* **raise once**: a second full pass raises nothing;
* **latency**: the tick's clock is simulated (``CROSSDOCK_TICK_S`` default 60 s, the full-pass
  interval ``CROSSDOCK_RECON_FULL_S`` default 900 s) and each tick runs the real pass against the
  twin with the real per-tick budget. A silent drift planted at several points of the interval is
  decided at the tick that finishes the next full pass; a change the WMS made whose event never
  reached Crossdock (its change feed has it) at the next tick. Latency = simulated time from the plant
  to that tick + the measured wall time of the deciding tick.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis

from connectors.http import HttpNotify, http_connectors
from connectors.ports import SNAPSHOT_PAGE, SnapshotPage
from crews.reconcile_sweep import TICK_BUDGET_S, judge_suspects, reconcile_pass
from domain.models import Scenario
from runtime.memo import RedisMemo
from runtime.servers import serve_in_thread
from tools.context import Systems
from twin.server import create_twin_app
from twin.state import TwinState

ORDER_EVERY = 10
GRACE_H = 4.0
START = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)


def build_twin(pairs: int, nodes: int) -> TwinState:
    """A twin with ``pairs`` SKU@node in step (on hand = book), some of them reserved."""
    return TwinState(Scenario.model_validate(scenario_dict(pairs, nodes)))


def scenario_dict(pairs: int, nodes: int, orders_too: bool = True, shared_bins: bool = False) -> dict[str, Any]:
    """``pairs`` SKU@node in step; with ``shared_bins`` one bin per node holds every SKU (a Tryton
    location per bin: 50,000 bins would be 50,000 locations)."""
    node_ids = [f"N{i:02d}" for i in range(nodes)]
    skus = max(1, pairs // nodes)
    stock, book, orders, allocations = [], [], [], []
    n = 0
    for s in range(skus):
        sku = f"SKU-{s:06d}"
        for node in node_ids:
            qty = 20 + (n % 50)
            where = "Z-01" if shared_bins else f"Z-{sku}"
            stock.append({"node": node, "zone": "Z", "location": where, "sku": sku, "on_hand": qty})
            book.append({"node": node, "sku": sku, "qty": qty, "blocked": 0})
            if orders_too and n % ORDER_EVERY == 0:
                oid = f"SO-{n:07d}"
                line = {"line": 1, "sku": sku, "qty": 3}
                orders.append({"id": oid, "customer": "C-1", "region": "R", "lines": [line]})
                allocations.append({"order": oid, "line": 1, "node": node, "qty": 3})
            n += 1
    return {
        "scenario": f"sweep-{pairs}",
        "start": START.isoformat(),
        "nodes": [{"id": x, "region": "R", "zones": [{"id": "Z", "pick_capacity_per_hour": 100}]} for x in node_ids],
        "skus": [{"id": f"SKU-{s:06d}", "unit_cost": 2.0} for s in range(skus)],
        "wms": {"stock": stock},
        "erp": {"book_stock": book},
        "oms": {"customers": [{"id": "C-1", "name": "C"}], "orders": orders, "allocations": allocations},
    }


def _read_all(read: Callable[[datetime | None, str | None, int], SnapshotPage]) -> int:
    rows, after = 0, None
    while True:
        page = read(None, after, SNAPSHOT_PAGE)
        rows += len(page.rows)
        if page.next_after is None:
            return rows
        after = page.next_after


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    from tests import services  # an embedded Redis, as the tests use

    return services.redis_url()


def run_sweep_bench(pairs: int = 50_000, nodes: int = 10, planted: int = 20, plants: int = 3) -> dict[str, Any]:
    t0 = time.perf_counter()
    state = build_twin(pairs, nodes)
    build_s = time.perf_counter() - t0
    total = len(state.export_state()["wms"]["stock"])
    step = max(1, total // planted)
    keys = [(f"SKU-{(i * step // nodes):06d}", f"N{(i * step) % nodes:02d}") for i in range(planted)]
    for k, (sku, node) in enumerate(keys):
        state.drift(node, sku, -(1 + k % 3))
    client = redis.Redis.from_url(_redis_url())
    prefix = f"bench-sweep-{uuid.uuid4().hex[:8]}"
    server = serve_in_thread(create_twin_app(state))
    try:
        with httpx.Client(timeout=httpx.Timeout(60.0)) as http:
            u = server.url
            wms, erp, oms, notify = http_connectors(f"{u}/wms", f"{u}/erp", f"{u}/oms", f"{u}/notify", http)
            systems = Systems(wms=wms, erp=erp, oms=oms, notify=notify, memo=RedisMemo(client, prefix))
            # Warm the twin's snapshot cache and the connection once (not timed).
            wms.stock_snapshot(limit=1), erp.book_snapshot(limit=1), oms.allocations_snapshot(limit=1)
            t = time.perf_counter()
            counts = [_read_all(wms.stock_snapshot), _read_all(erp.book_snapshot), _read_all(oms.allocations_snapshot)]
            floor_s = time.perf_counter() - t

            t = time.perf_counter()
            report = reconcile_pass(systems, START, budget_s=float("inf"))
            pass_s = time.perf_counter() - t
            t = time.perf_counter()
            decided = judge_suspects(systems, report.suspects, START, GRACE_H)
            judge_s = time.perf_counter() - t
            raised = sorted(p.subject for p in decided if p.outcome == "discrepancy")
            again = reconcile_pass(systems, START + timedelta(seconds=systems.recon_full_s), budget_s=float("inf"))
            repeat = judge_suspects(systems, again.suspects, START, GRACE_H)

            latency = _latency(state, systems, START + timedelta(seconds=systems.recon_full_s), nodes, plants)
    finally:
        server.stop()
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
    expected = sorted(f"{sku}@{node}" for sku, node in keys)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "sku_at_node": total,
        "rows_read (wms, erp, oms)": ", ".join(str(c) for c in counts),
        "twin build s (not timed below)": round(build_s, 2),
        "floor: bulk reads alone s": round(floor_s, 2),
        "full pass s (reads + merge + engine)": round(pass_s, 2),
        "full pass SKU@node/s": round(report.full_rows / pass_s),
        "judge suspects s": round(judge_s, 2),
        "planted standing variances": len(keys),
        "raised (planted found / other)": f"{len(set(raised) & set(expected))} / {len(set(raised) - set(expected))}",
        "raised again by a second full pass": len([p for p in repeat if p.outcome == "discrepancy"]),
        **latency,
    }


def _tick_until(
    systems: Systems, now: datetime, subject: str, tick_s: float, limit: int
) -> tuple[datetime, float] | None:
    """Run ticks from ``now`` until ``subject`` is raised: (that tick's time, its wall time)."""
    for _ in range(limit):
        t = time.perf_counter()
        report = reconcile_pass(systems, now, TICK_BUDGET_S)
        decided = judge_suspects(systems, report.suspects, now, GRACE_H)
        wall = time.perf_counter() - t
        if any(p.subject == subject and p.outcome == "discrepancy" for p in decided):
            return now, wall
        now += timedelta(seconds=tick_s)
    return None


def _latency(state: TwinState, systems: Systems, begin: datetime, nodes: int, plants: int) -> dict[str, Any]:
    """Plant → decision on a simulated tick clock with the default intervals (see the module doc)."""
    tick_s, full_s = 60.0, systems.recon_full_s
    limit = int(2 * full_s / tick_s) + 20
    now = begin
    _tick_until(systems, now, "-", tick_s, 1)  # the pass due at ``begin`` starts; no plant yet
    silent: list[float] = []
    walls: list[float] = []
    for i in range(plants):
        # Plant at a spread of points of the interval, between two ticks.
        offset = (i + 0.5) / plants * full_s
        planted_at = now + timedelta(seconds=offset)
        sku, node = f"SKU-{(7 + i):06d}", f"N{(3 + i) % nodes:02d}"
        state.drift(node, sku, -2.0)
        first_tick = now + timedelta(seconds=(int(offset // tick_s) + 1) * tick_s)
        found = _tick_until(systems, first_tick, f"{sku}@{node}", tick_s, limit)
        if found is None:
            raise RuntimeError(f"the planted drift at {sku}@{node} was not raised within {limit} ticks")
        at, wall = found
        silent.append((at - planted_at).total_seconds() + wall)
        walls.append(wall)
        now = at
    # A WMS count the event for which never reached Crossdock: the change feed has it.
    sku, node = "SKU-000002", f"N{1 % nodes:02d}"
    old = (now - timedelta(hours=GRACE_H + 1)).isoformat()
    state.apply_event(
        {
            "id": "bench-lost-event",
            "type": "wms.inventory.adjusted",
            "time": old,
            "data": {"node": node, "sku": sku, "qty_delta": -4},
        }
    )
    planted_at = now + timedelta(seconds=tick_s / 2)
    found = _tick_until(systems, now + timedelta(seconds=tick_s), f"{sku}@{node}", tick_s, limit)
    if found is None:
        raise RuntimeError("the change-feed plant was not raised")
    at, wall = found
    return {
        "latency clock": f"simulated ticks every {tick_s:g} s, full pass every {full_s:g} s; each tick real",
        "silent drift → decision s (each plant)": ", ".join(f"{x:.0f}" for x in silent),
        "silent drift → decision s (median)": round(statistics.median(silent)),
        "deciding tick wall s (max)": round(max(walls), 2),
        "lost event (change feed) → decision s": round((at - planted_at).total_seconds() + wall, 1),
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _keep_seeded(source: Path, target: Path) -> None:
    """A consistent copy of the live SQLite database ``source`` (its WAL included), renamed into place."""
    import sqlite3

    part = target.with_suffix(".part")
    part.unlink(missing_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(part)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    part.replace(target)


def run_tryton_sweep_bench(pairs: int = 2000, nodes: int = 5) -> dict[str, Any]:
    """A full pass against a real trytond (SQLite) seeded with ``pairs`` SKU@node, and one incremental
    pass after an adjustment. Seeding is timed apart (products, then ``load_scenario``: warehouses and
    the opening stock as done moves, both in batches, no call per SKU@node). Fewer than 50,000 pairs:
    the 50,000 figure is extrapolated linearly and labelled so; from 50,000 on it is the measured one."""
    import shutil
    import tempfile

    from bench.tryton_server import TrytonTemplate, start_server
    from connectors.tryton.adapters import tryton_connectors
    from connectors.tryton.loader import Loader, load_scenario
    from connectors.tryton.rpc import TrytonClient
    from domain.decisions import Action

    cache = Path(os.environ.get("CROSSDOCK_TRYTON_CACHE") or Path(__file__).resolve().parents[1] / ".cache" / "tryton")
    cache.mkdir(parents=True, exist_ok=True)
    template = TrytonTemplate.load_or_create(cache)
    # A seeded database is kept (per pairs x nodes, for this template) and copied by later runs, as the
    # empty template is: seeding 50,000 SKU@node takes far longer than reading them.
    seeded = cache / f"sweep-{pairs}x{nodes}.sqlite"
    meta_file = seeded.with_suffix(".json")
    stamp = template.db_file.stat().st_mtime_ns
    meta: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    reuse = seeded.is_file() and meta.get("template") == stamp and not os.environ.get("CROSSDOCK_TRYTON_RESEED")
    workdir = Path(tempfile.mkdtemp(prefix="crossdock-sweep-tryton-"))
    client = redis.Redis.from_url(_redis_url())
    prefix = f"bench-sweep-{uuid.uuid4().hex[:8]}"
    server = start_server(dataclasses.replace(template, db_file=seeded) if reuse else template, workdir / "trytond")
    try:
        # A seeding call (2,000 moves created, or done) takes longer than a read's timeout.
        with TrytonClient(dataclasses.replace(server.config(), timeout_s=1800.0)) as rpc:
            if not reuse:
                t = time.perf_counter()
                scenario = scenario_dict(pairs, nodes, orders_too=False, shared_bins=True)
                loader = Loader(rpc)
                loader.ensure_company(str(scenario["scenario"]), "USD")
                skus = [(str(x["id"]), str(x["id"]), float(x["unit_cost"])) for x in scenario["skus"]]
                loader.ensure_products(skus, loader.unit_id())  # PRODUCT_CREATE_BATCH per call
                products_s = time.perf_counter() - t
                t = time.perf_counter()
                load_scenario(rpc, scenario)  # products found; warehouses; stock: STOCK_MOVE_BATCH moves per call
                stock_s = time.perf_counter() - t
                _keep_seeded(server.directory / f"{server.database}.sqlite", seeded)
                meta = {"template": stamp, "products_s": products_s, "stock_s": stock_s, "at": _now_iso()}
                meta_file.write_text(json.dumps(meta) + "\n")
            else:
                rpc.login()
            products_s, stock_s = float(meta["products_s"]), float(meta["stock_s"])
            wms, erp, oms = tryton_connectors(rpc)
            with httpx.Client() as http:
                notify = HttpNotify("http://127.0.0.1:9/notify", http)  # the sweep never writes
                systems = Systems(wms=wms, erp=erp, oms=oms, notify=notify, memo=RedisMemo(client, prefix))
                wms.stock_snapshot(limit=1)  # the location index, once (not timed)
                t = time.perf_counter()
                counts = [
                    _read_all(wms.stock_snapshot),
                    _read_all(erp.book_snapshot),
                    _read_all(oms.allocations_snapshot),
                ]
                floor_s = time.perf_counter() - t
                t = time.perf_counter()
                report = reconcile_pass(systems, START, budget_s=float("inf"))
                pass_s = time.perf_counter() - t
                # One change, then a tick: the change feed (stock.move write_date) names it.
                adjust = {"node": "N01", "sku": "SKU-000003", "qty_delta": -2, "reason": "bench"}
                erp.apply(
                    Action.model_validate(
                        {"system": "erp", "type": "post_adjustment", "payload": adjust, "idempotency_key": "bench-adj"}
                    )
                )
                t = time.perf_counter()
                incremental = reconcile_pass(systems, START + timedelta(seconds=60))
                inc_s = time.perf_counter() - t
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
    out: dict[str, Any] = {
        "tryton sku_at_node": report.full_rows,
        "tryton nodes": nodes,
        "tryton seeding s (not timed below)": round(products_s + stock_s, 1),
        "tryton seeded database": f"reused, seeded {meta['at']}" if reuse else "seeded in this run",
        "tryton seeding: products s": round(products_s, 1),
        "tryton seeding: warehouses + stock moves s": round(stock_s, 1),
        "tryton rows_read (wms, erp, oms)": ", ".join(str(c) for c in counts),
        "tryton floor: bulk reads alone s": round(floor_s, 2),
        "tryton full pass s": round(pass_s, 2),
        "tryton full pass − floor (merge + engine) s": round(pass_s - floor_s, 2),
        "tryton full pass suspects": len(report.suspects),
    }
    if report.full_rows < 50_000:
        per_row = pass_s / max(1, report.full_rows)
        out["tryton full pass at 50,000 s (EXTRAPOLATED linearly from this run, not measured)"] = round(
            per_row * 50_000, 1
        )
    out["tryton incremental tick after one adjustment s"] = round(inc_s, 2)
    out["tryton incremental changed SKU@node"] = incremental.changed
    return out
