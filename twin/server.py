"""The twin over HTTP: WMS, ERP, OMS and notify APIs in the style of real systems, plus twin control.

Every write route turns its path and body into a contract ``Action`` and applies it through
``TwinState.apply``, so the idempotency of the HTTP API is the idempotency of the state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from domain.decisions import Action, System
from domain.engines.clock import as_utc
from domain.errors import UnknownOrder, UnknownSku
from twin.state import TwinNotFound, TwinRejected, TwinState

Act = Callable[[System, str, str | None, dict[str, Any]], JSONResponse]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
JsonBody = Annotated[dict[str, Any] | None, Body()]
PageLimit = Annotated[int, Query(ge=1, le=5000)]


def create_twin_app(state: TwinState) -> FastAPI:
    """A FastAPI app serving ``state``; one app per twin, no globals."""
    app = FastAPI(title="Crossdock twin", description="Simulated WMS, ERP and OMS")

    @app.exception_handler(TwinRejected)
    async def _rejected(request: Request, exc: TwinRejected) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(TwinNotFound)
    @app.exception_handler(UnknownSku)
    @app.exception_handler(UnknownOrder)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    def act(system: System, type_: str, key: str | None, payload: dict[str, Any]) -> JSONResponse:
        if not key:
            raise HTTPException(status_code=400, detail="the Idempotency-Key header is required")
        result, replayed = state.execute(Action(system=system, type=type_, payload=payload, idempotency_key=key))
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(status_code=200, content=result, headers=headers)

    app.include_router(_wms_routes(state, act), prefix="/wms/api/v1")
    app.include_router(_erp_routes(state, act), prefix="/erp/api/v1")
    app.include_router(_oms_routes(state, act), prefix="/oms/api/v1")
    app.include_router(_notify_routes(act), prefix="/notify/api/v1")
    app.include_router(_twin_routes(state))
    return app


def _wms_routes(state: TwinState, act: Act) -> APIRouter:
    r = APIRouter(tags=["wms"])

    @r.get("/inventory")
    async def inventory(sku: str) -> list[dict[str, Any]]:
        """Location-level stock of a sku at every node, with pickable per node."""
        return [s.model_dump(mode="json") for s in state.stock(sku)]

    @r.get("/inventory/by-sku")
    async def inventory_by_sku(sku: Annotated[list[str], Query()]) -> JSONResponse:
        """Bulk read: ``/inventory`` of every ``sku`` (repeatable) in one answer, in the order asked:
        ``[{"sku", "nodes": [...]}]`` (what an order decision reads, instead of one call per SKU)."""
        found = state.stock_many(list(dict.fromkeys(sku)))
        return JSONResponse([{"sku": k, "nodes": [s.model_dump(mode="json") for s in v]} for k, v in found.items()])

    @r.get("/waves")
    async def waves(
        cutoff_after: datetime | None = None, node: Annotated[list[str] | None, Query()] = None
    ) -> Response:
        """Released waves; with ``cutoff_after``, only those whose truck leaves later (or has no
        cutoff); with ``node`` (repeatable), only those nodes' waves."""
        nodes = set(node) if node is not None else None
        if cutoff_after is None:
            return Response(state.waves_json(nodes), media_type="application/json")
        after = as_utc(cutoff_after)
        ahead = state.waves_json(nodes, lambda w: (at := _cutoff_of(w)) is None or at > after)
        return Response(ahead, media_type="application/json")

    @r.get("/inventory/snapshot")
    async def inventory_snapshot(
        since: datetime | None = None, after: str | None = None, limit: PageLimit = 1000
    ) -> dict[str, Any]:
        """Bulk read: on hand (qty) and locked (held) per SKU@node, a page in key order; with
        ``since``, only what changed at or after it."""
        return state.snapshot("wms", since, after, limit)

    @r.get("/movements")
    async def wms_movements(sku: str, node: str) -> list[dict[str, Any]]:
        """Adjustments and receipts of a sku at a node, as the WMS recorded them."""
        return state.movements("wms", sku, node)

    @r.get("/asns")
    async def asns(po_id: str | None = None) -> list[dict[str, Any]]:
        """Advance shipping notices received, optionally for one purchase order."""
        return state.asns(po_id)

    @r.get("/receipts")
    async def receipts(po_id: str | None = None) -> list[dict[str, Any]]:
        """Goods receipts posted (a receipt posted twice appears twice), optionally for one PO."""
        return state.receipts(po_id)

    @r.get("/tasks")
    async def tasks(sku: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """Warehouse tasks, optionally for one sku and/or node."""
        return state.tasks(sku, node)

    @r.get("/transfers")
    async def transfers(sku: str | None = None) -> list[dict[str, Any]]:
        """Stock transfers created, optionally for one sku."""
        return state.transfers(sku)

    @r.post("/waves")
    async def create_wave(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Release a wave."""
        return act("wms", "create_wave", key, dict(body or {}))

    @r.post("/tasks")
    async def create_task(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Create a warehouse task."""
        return act("wms", "create_task", key, dict(body or {}))

    @r.post("/transfers")
    async def create_transfer(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Create a stock transfer between nodes."""
        return act("wms", "create_transfer", key, dict(body or {}))

    @r.post("/waves/{wave_id}/cancel")
    async def cancel_wave(wave_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Cancel a released wave (a failed decision's compensation)."""
        return act("wms", "cancel_wave", key, {**dict(body or {}), "waveId": wave_id})

    @r.post("/tasks/{task_id}/cancel")
    async def cancel_task(task_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Cancel an open warehouse task."""
        return act("wms", "cancel_task", key, {**dict(body or {}), "task_id": task_id})

    @r.post("/transfers/{transfer_id}/cancel")
    async def cancel_transfer(transfer_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Cancel a transfer not yet received."""
        return act("wms", "cancel_transfer", key, {**dict(body or {}), "transfer_id": transfer_id})

    return r


def _erp_routes(state: TwinState, act: Act) -> APIRouter:
    r = APIRouter(tags=["erp"])

    @r.get("/materials")
    async def materials(sku: Annotated[list[str], Query()]) -> JSONResponse:
        """Bulk read: for every ``sku`` (repeatable), in the order asked, its material master record
        (null when unknown), book stock and planned supply: ``[{"sku", "material", "book_stock",
        "planned_supply"}]``."""
        return JSONResponse(state.books_many(list(dict.fromkeys(sku))))

    @r.get("/materials/{sku}")
    async def material(sku: str) -> dict[str, Any]:
        """Material master record."""
        return state.sku(sku).model_dump(mode="json")

    @r.get("/stock")
    async def stock(sku: str) -> list[dict[str, Any]]:
        """Book stock per node."""
        return [b.model_dump(mode="json") for b in state.book_stock(sku)]

    @r.get("/stock/snapshot")
    async def stock_snapshot(
        since: datetime | None = None, after: str | None = None, limit: PageLimit = 1000
    ) -> dict[str, Any]:
        """Bulk read: book (qty) and blocked (held) per SKU@node, a page in key order; with
        ``since``, only what changed at or after it."""
        return state.snapshot("erp", since, after, limit)

    @r.get("/supply")
    async def supply(sku: str) -> list[dict[str, Any]]:
        """Open PO lines and transfers in transit."""
        return [s.model_dump(mode="json") for s in state.planned_supply(sku)]

    @r.get("/demand-history")
    async def demand_history(sku: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """Units shipped per day, optionally for one sku and/or node."""
        return [d.model_dump(mode="json") for d in state.demand_history(sku, node)]

    @r.get("/customers/{customer}/credit")
    async def credit(customer: str) -> dict[str, Any]:
        """Credit status of a customer."""
        return {"customer": customer, "credit_hold": state.credit_hold(customer)}

    @r.get("/postings")
    async def erp_postings(sku: str, node: str) -> list[dict[str, Any]]:
        """Inventory postings of a sku at a node, as the ERP booked them."""
        return state.movements("erp", sku, node)

    @r.get("/purchase-orders")
    async def purchase_orders(status: str | None = None) -> list[dict[str, Any]]:
        """Purchase orders with line status and received quantity; ``status=open`` for the open ones."""
        return state.purchase_orders(status)

    @r.get("/purchase-orders/{po}")
    async def purchase_order(po: str) -> dict[str, Any]:
        return state.purchase_order(po)

    @r.post("/backorders")
    async def backorder(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Create a backorder."""
        return act("erp", "create_backorder", key, dict(body or {}))

    @r.post("/adjustments")
    async def adjustment(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Post a book stock adjustment."""
        return act("erp", "post_adjustment", key, dict(body or {}))

    @r.post("/purchase-orders/{po}/lines/{line}/close")
    async def close_line(po: str, line: int, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Close a PO line."""
        return act("erp", "close_po_line", key, {**(body or {}), "po_id": po, "line": line})

    @r.post("/purchase-orders/{po}/lines/{line}/expedite")
    async def expedite(po: str, line: int, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Ask the supplier to bring a PO line forward."""
        return act("erp", "expedite_po", key, {**(body or {}), "po_id": po, "line": line})

    @r.post("/safety-stock")
    async def safety_stock(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Set safety stock for a sku at a node."""
        return act("erp", "update_safety_stock", key, dict(body or {}))

    return r


def _oms_routes(state: TwinState, act: Act) -> APIRouter:
    r = APIRouter(tags=["oms"])

    @r.get("/orders")
    async def orders(status: str | None = None) -> list[dict[str, Any]]:
        """Orders, optionally filtered by a comma-separated list of statuses."""
        wanted = {s.strip() for s in status.split(",") if s.strip()} if status else None
        return [o.model_dump(mode="json") for o in state.orders(wanted)]

    @r.get("/allocations/snapshot")
    async def allocations_snapshot(
        since: datetime | None = None, after: str | None = None, limit: PageLimit = 1000
    ) -> dict[str, Any]:
        """Bulk read: units reserved (qty) per SKU@node on orders still holding stock, a page in
        key order; with ``since``, only what changed at or after it (a released one at 0)."""
        return state.snapshot("oms", since, after, limit)

    @r.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, Any]:
        """An order with its status and reservations."""
        return state.order(order_id).model_dump(mode="json")

    @r.get("/customers/{customer_id}")
    async def customer(customer_id: str) -> dict[str, Any]:
        """A customer record."""
        return state.customer(customer_id).model_dump(mode="json")

    @r.get("/network")
    async def network(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """Nodes, lanes and transfer lanes, with an ETag; ``If-None-Match`` with the current one is
        answered 304 with no body (the network changes rarely: a capacity change)."""
        etag, document = state.network_document()
        if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(document, headers={"ETag": etag})

    def order_action(
        type_: str, order_id: str, key: str | None, body: dict[str, Any] | None, **path: Any
    ) -> JSONResponse:
        return act("oms", type_, key, {**(body or {}), "order_id": order_id, **path})

    @r.post("/orders/{order_id}/allocations")
    async def allocate(order_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Reserve stock for a line at a node."""
        return order_action("allocate", order_id, key, body)

    @r.post("/orders/{order_id}/allocations/release")
    async def release_allocation(order_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Give back (part of) a line's reservation at a node."""
        return order_action("release_allocation", order_id, key, body)

    @r.post("/orders/{order_id}/status")
    async def status(order_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Change an order's status."""
        return order_action("update_order_status", order_id, key, body)

    @r.post("/orders/{order_id}/hold")
    async def hold(order_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Put an order on hold."""
        return order_action("hold_order", order_id, key, body)

    @r.post("/orders/{order_id}/lines/{line}/split")
    async def split(order_id: str, line: int, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Split a line into a part fulfilled now and a backordered part."""
        return order_action("split_line", order_id, key, body, line=line)

    @r.post("/orders/{order_id}/lines/{line}/qty")
    async def line_qty(order_id: str, line: int, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Set a line's quantity before release; reservations above it are given back."""
        return order_action("update_line_qty", order_id, key, body, line=line)

    @r.post("/orders/{order_id}/lines/{line}/substitute")
    async def substitute(order_id: str, line: int, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Replace a line's sku by a substitute."""
        return order_action("substitute_line", order_id, key, body, line=line)

    @r.post("/orders/{order_id}/promise-date")
    async def promise_date(order_id: str, key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Set a new promise date for a line or the whole order."""
        return order_action("update_promise_date", order_id, key, body)

    return r


def _notify_routes(act: Act) -> APIRouter:
    r = APIRouter(tags=["notify"])

    @r.post("/tickets")
    async def ticket(key: IdempotencyKey = None, body: JsonBody = None) -> JSONResponse:
        """Open a ticket in a team's queue."""
        return act("notify", "ticket", key, dict(body or {}))

    return r


def _twin_routes(state: TwinState) -> APIRouter:
    r = APIRouter(tags=["twin"])

    @r.post("/twin/events")
    async def event(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Apply the source system's change an event reports (replay driver)."""
        state.apply_event(body)
        return {"applied": body.get("id")}

    @r.get("/twin/state")
    async def export() -> dict[str, Any]:
        """The whole simulated world."""
        return state.export_state()

    @r.get("/twin/actions")
    async def actions() -> list[dict[str, Any]]:
        """Applied actions in order, with application counts."""
        return state.applied_actions()

    @r.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok", "scenario": state.scenario_name}

    return r


def _cutoff_of(wave: dict[str, Any]) -> datetime | None:
    """A wave's cutoff as a time, or None when it has none (or not an RFC 3339 one)."""
    raw = (wave.get("parameters") or {}).get("cutoffTime")
    try:
        return as_utc(datetime.fromisoformat(str(raw).replace("Z", "+00:00"))) if raw else None
    except ValueError:
        return None
