"""Scenario replay against a real Tryton: ``crossdock scenario run FILE --systems tryton``.

Mirrors ``bench.replay`` (HTTP intake → Redis → worker), with Tryton instead of the twin as
WMS, ERP and OMS:

1. A trytond database template is kept under a cache directory (``.cache/tryton`` in the repo,
   or ``CROSSDOCK_TRYTON_CACHE``; built on first use, about 20 s); every run serves a fresh copy
   of it on loopback and seeds it from the scenario with ``connectors.tryton.loader.load_scenario``.
2. Crossdock is bootstrapped with ``erp="tryton"``: the specialists read and write Tryton through
   ``connectors.tryton.adapters``. Notify has no Tryton equivalent; a twin serves only ``/notify``.
3. For every event, the source system's own change is made in Tryton first, as the twin does for
   ``--systems twin``: ``oms.order.created`` creates and confirms the ``sale.sale``,
   ``wms.asn.received`` announces the supplier shipment, ``wms.receipt.posted`` receives it.
   Other events are posted unchanged; a specialist whose action Tryton cannot take fails or
   escalates through the normal decision path (``connectors.tryton.adapters.NOT_MAPPED``).
4. The report's ``final_state`` is read back from Tryton in the contract's shape as far as it
   maps (orders from sales and their customer shipments, stock and waves from the WMS reads,
   book stock and purchase orders from the ERP reads); the KPIs come from ``bench.report``.

trytond is stopped by its PID at the end, on success or error.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import structlog

from api.main import create_app
from bench.replay import RunOptions, _Stack, _stop, load_scenario, replay_events, start_workers
from bench.report import build_report, scenario_orders
from bench.tryton_server import TrytonTemplate, start_server
from connectors.tryton.adapters import Overlay, TrytonErp, TrytonOms, TrytonWms
from connectors.tryton.loader import create_asn, create_sale, post_receipt
from connectors.tryton.loader import load_scenario as seed_tryton
from connectors.tryton.rpc import TrytonClient
from domain.errors import ConnectorError, UnknownDocument, UnknownOrder
from domain.events import CloudEvent
from domain.models import Asn, Order, Receipt, Scenario
from runtime.bootstrap import bootstrap
from runtime.servers import serve_in_thread
from runtime.settings import Settings, hash_key
from twin.server import create_twin_app
from twin.state import TwinState

log = structlog.get_logger("crossdock.replay.tryton")
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "tryton"


def run_scenario_tryton(
    source: Path | dict[str, Any], options: RunOptions | None = None, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Replay a scenario through the whole pipeline with Tryton as the three systems."""
    options = options or RunOptions()
    scenario, events = load_scenario(source)
    cache = cache_dir or Path(os.environ.get("CROSSDOCK_TRYTON_CACHE") or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    template = TrytonTemplate.load_or_create(cache)
    workdir = Path(tempfile.mkdtemp(prefix="crossdock-tryton-"))
    server = None
    try:
        server = start_server(template, workdir / "trytond")
        log.info("tryton.started", url=server.url, pid=server.pid)
        with TrytonClient(server.config()) as client:
            loaded = seed_tryton(client, scenario)
            for skipped in loaded.skipped:
                log.info("tryton.not_loaded", what=skipped)
            return _replay(scenario, events, client, server.config(), options, workdir)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _replay(
    scenario: Scenario,
    events: list[CloudEvent],
    client: TrytonClient,
    config: Any,
    options: RunOptions,
    workdir: Path,
) -> dict[str, Any]:
    notify_twin = TwinState(scenario)  # only its /notify is used
    stack = _start(notify_twin, options, Overlay.from_scenario(scenario), config, workdir)
    source_errors: list[dict[str, str]] = []

    def apply_source(payload: dict[str, Any]) -> None:
        try:
            apply_source_event(client, payload)
        except (ConnectorError, ValueError) as exc:
            # The source system refused its own change: recorded, and the event still goes in.
            log.warning("tryton.source_event_failed", event_id=payload.get("id"), error=str(exc))
            source_errors.append(
                {"event_id": str(payload.get("id")), "type": str(payload.get("type")), "error": str(exc)}
            )

    try:
        seen = replay_events(stack, scenario, events, options, apply_source)
        decisions = stack.container.store.list_decisions(limit=1_000_000)
        systems = stack.container.systems
        assert isinstance(systems.wms, TrytonWms) and isinstance(systems.erp, TrytonErp)
        assert isinstance(systems.oms, TrytonOms)
        state = tryton_state(scenario, systems.wms, systems.erp, systems.oms)
        state["tickets"] = notify_twin.export_state()["tickets"]
        report = build_report(scenario, options.policy, decisions, state)
        report["kpis"].update(seen.kpis())
        report["systems"] = "tryton"
        report["source_errors"] = source_errors
        return report
    finally:
        _stop(stack)


def apply_source_event(client: TrytonClient, event: dict[str, Any]) -> str | None:
    """The source system's own change for ``event``, made in Tryton; the kind of change, or None."""
    kind, data = event.get("type"), event.get("data")
    if not isinstance(data, dict):
        return None
    if kind == "oms.order.created":
        create_sale(client, Order.model_validate(data))
        return "sale"
    if kind == "wms.asn.received":
        create_asn(client, Asn.model_validate(data))
        return "asn"
    if kind == "wms.receipt.posted":
        post_receipt(client, Receipt.model_validate(data))
        return "receipt"
    return None


def tryton_state(scenario: Scenario, wms: TrytonWms, erp: TrytonErp, oms: TrytonOms) -> dict[str, Any]:
    """The report's ``final_state`` read back from Tryton, as far as it maps.

    Not mapped (left empty): WMS tasks (no task model), transfers as twin records (internal
    shipments are not listed), ERP backorders (Tryton keeps them as waiting customer shipments,
    visible as the lines' ``backordered``) and adjustments (inventories; see ``movements``).
    Tryton assigns only stock that is there, so oversells are 0 by construction.
    """
    orders = []
    for order_id in scenario_orders(scenario):
        try:
            view = oms.order(order_id)
        except UnknownOrder:
            continue
        orders.append(
            {
                "id": view.order.id,
                # Extension: the order's customer shipments as Tryton holds them.
                "tryton_shipments": customer_shipments(oms.b.client, order_id),
                "status": view.status,
                "hold_reason": view.hold_reason,
                "lines": [
                    {
                        "line": ln.line,
                        "sku": ln.sku,
                        "qty": ln.qty,
                        "allocations": [{"node": a.node, "qty": a.qty} for a in ln.allocations],
                        "backordered": ln.backordered,
                        "promise_date": ln.promise_date.isoformat() if ln.promise_date else None,
                        "substituted_by": ln.substituted_by,
                    }
                    for ln in view.lines
                ],
            }
        )
    skus = sorted({s.id for s in scenario.skus} | {r.sku for r in scenario.wms.stock})
    stock: list[dict[str, Any]] = []
    book: list[dict[str, Any]] = []
    for sku in skus:
        for ns in wms.stock(sku):
            for loc in ns.locations:
                stock.append(
                    {
                        "node": ns.node,
                        "zone": loc.zone,
                        "location": loc.location,
                        "sku": sku,
                        "lot": loc.lot,
                        "on_hand": loc.on_hand,
                        "locked": loc.locked,
                    }
                )
        book.extend(b.model_dump(mode="json") for b in erp.book_stock(sku))
    purchase_orders = []
    for po in scenario.erp.purchase_orders:
        try:
            po_view = erp.purchase_order(po.id)
        except UnknownDocument:
            continue
        purchase_orders.append(
            {
                "id": po_view.po.id,
                "supplier": po_view.po.supplier,
                "node": po_view.po.node,
                "status": po_view.status,
                "lines": [
                    {
                        "line": ln.line,
                        "sku": ln.sku,
                        "qty": ln.qty,
                        "received": po_view.received.get(ln.line, 0.0),
                        "closed": ln.line in po_view.closed_lines,
                    }
                    for ln in po_view.po.lines
                ],
            }
        )
    return {
        "oms": {"orders": orders},
        "wms": {"waves": wms.wave_dicts(), "transfers": [], "tasks": [], "stock": stock},
        "erp": {"book_stock": book, "backorders": [], "adjustments": [], "purchase_orders": purchase_orders},
        "oversells": {"count": 0, "events": []},
    }


def customer_shipments(client: TrytonClient, order_id: str) -> list[dict[str, Any]]:
    """The ``stock.shipment.out`` serving ``order_id``'s sale: ``{"id", "reference", "state",
    "warehouse", "qty"}`` (qty = its outgoing moves for the sale), oldest first."""
    moves = client.search_read(
        "stock.move",
        [("origin", "like", "sale.line,%"), ("sale.reference", "=", order_id), ("state", "!=", "cancelled")],
        ["shipment", "quantity"],
    )
    qty: dict[int, float] = {}
    for m in moves:
        ref = str(m.get("shipment") or "")
        if ref.startswith("stock.shipment.out,"):
            sid = int(ref.split(",")[1])
            qty[sid] = qty.get(sid, 0.0) + float(m["quantity"])
    if not qty:
        return []
    rows = client.read("stock.shipment.out", sorted(qty), ["reference", "state", "warehouse.code"])
    return [
        {
            "id": int(r["id"]),
            "reference": r.get("reference"),
            "state": r["state"],
            "warehouse": (r.get("warehouse.") or {}).get("code"),
            "qty": qty[int(r["id"])],
        }
        for r in rows
    ]


def _start(notify_twin: TwinState, options: RunOptions, overlay: Overlay, config: Any, workdir: Path) -> _Stack:
    twin = serve_in_thread(create_twin_app(notify_twin))
    keys = {role: secrets.token_urlsafe(24) for role in ("gateway", "planner", "admin")}
    settings = Settings(
        env="test",
        data_dir=options.data_dir or workdir / "crossdock",
        redis_url=options.redis_url,
        database_url=options.database_url,
        stream_prefix=f"crossdock-run-{secrets.token_hex(4)}",
        erp="tryton",
        notify_url=f"{twin.url}/notify",
        key_hashes={hash_key(k): role for role, k in keys.items()},
        claim_idle_ms=5_000,
        block_ms=200,
        retry_base_s=0.05,
        retry_max_s=1.0,
    )
    try:
        container = bootstrap(settings, overlay=overlay, tryton_config=config)
    except BaseException:
        twin.stop()
        raise
    api = serve_in_thread(create_app(container))
    stop = threading.Event()
    return _Stack(container, twin, api, stop, start_workers(container, options.workers, stop), keys, None)
