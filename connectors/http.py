"""HTTP adapters for the WMS, ERP, OMS and notify ports, against the twin's REST API.

Any system exposing the same API (a gateway in front of a real WMS, say) works too. Errors
are translated, never retried here: the queue owns retries, so every attempt is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from connectors.ports import SNAPSHOT_PAGE, SkuBooks, SnapshotPage, SnapshotRow, books_one_by_one
from domain.context import (
    BookPosition,
    Movement,
    Network,
    NodeStock,
    OrderView,
    PurchaseOrderView,
    SkuInfo,
    Supply,
    WaveView,
)
from domain.decisions import Action
from domain.engines.forecast import TransferView
from domain.engines.triage import WmsTask
from domain.errors import ConnectorError, PermanentConnectorError, UnknownDocument, UnknownOrder, UnknownSku
from domain.models import Asn, Customer, DemandPoint, PurchaseOrder, Receipt

DEFAULT_TIMEOUT = httpx.Timeout(5.0)
T = TypeVar("T")
BULK_SKUS = 100  # SKUs per bulk read request

# action name -> (path template, payload fields that go into the path). The whole payload is
# also sent as the body; the server takes path parameters from the path.
ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "wms.create_wave": ("/api/v1/waves", ()),
    "wms.create_task": ("/api/v1/tasks", ()),
    "wms.create_transfer": ("/api/v1/transfers", ()),
    "wms.cancel_wave": ("/api/v1/waves/{waveId}/cancel", ("waveId",)),
    "wms.cancel_task": ("/api/v1/tasks/{task_id}/cancel", ("task_id",)),
    "wms.cancel_transfer": ("/api/v1/transfers/{transfer_id}/cancel", ("transfer_id",)),
    "erp.create_backorder": ("/api/v1/backorders", ()),
    "erp.post_adjustment": ("/api/v1/adjustments", ()),
    "erp.close_po_line": ("/api/v1/purchase-orders/{po_id}/lines/{line}/close", ("po_id", "line")),
    "erp.expedite_po": ("/api/v1/purchase-orders/{po_id}/lines/{line}/expedite", ("po_id", "line")),
    "erp.update_safety_stock": ("/api/v1/safety-stock", ()),
    "oms.allocate": ("/api/v1/orders/{order_id}/allocations", ("order_id",)),
    "oms.release_allocation": ("/api/v1/orders/{order_id}/allocations/release", ("order_id",)),
    "oms.update_order_status": ("/api/v1/orders/{order_id}/status", ("order_id",)),
    "oms.hold_order": ("/api/v1/orders/{order_id}/hold", ("order_id",)),
    "oms.split_line": ("/api/v1/orders/{order_id}/lines/{line}/split", ("order_id", "line")),
    "oms.substitute_line": ("/api/v1/orders/{order_id}/lines/{line}/substitute", ("order_id", "line")),
    "oms.update_line_qty": ("/api/v1/orders/{order_id}/lines/{line}/qty", ("order_id", "line")),
    "oms.update_promise_date": ("/api/v1/orders/{order_id}/promise-date", ("order_id",)),
    "notify.ticket": ("/api/v1/tickets", ()),
}


class _HttpSystem:
    """Shared request handling: one client, error translation, action routing."""

    system = ""

    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.bulk = True  # False once the system answered a bulk read's route with 404 or 405

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = self.base_url + path
        try:
            response = self.client.request(
                method, url, params=params, json=json, headers=headers, timeout=DEFAULT_TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise ConnectorError(
                f"{self.system.upper()} at {self.base_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            # Overloaded, timed out or down: worth another attempt, which the queue schedules.
            raise ConnectorError(
                f"{self.system.upper()} {method} {path} failed with {response.status_code}: {_detail(response)}"
            )
        return response

    def _ok(self, response: httpx.Response, method: str, path: str) -> Any:
        if response.status_code >= 400:
            raise PermanentConnectorError(
                f"{self.system.upper()} {method} {path} rejected with {response.status_code}: {_detail(response)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ConnectorError(f"{self.system.upper()} {method} {path} answered with invalid JSON") from exc

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self._ok(self._request("GET", path, params=params), "GET", path)

    def _by_sku(
        self,
        path: str,
        skus: Sequence[str],
        parse: Callable[[dict[str, Any]], T],
        one_by_one: Callable[[list[str]], dict[str, T]],
    ) -> dict[str, T]:
        """Every SKU's answer from the bulk read at ``path`` (``parse`` reads one row), in the
        order asked; a system without that route (404 or 405) is read one SKU at a time from then on."""
        wanted = list(dict.fromkeys(skus))
        if not wanted:
            return {}
        if not self.bulk:
            return one_by_one(wanted)
        try:
            body = self._bulk(path, wanted)
        except _NoBulk:
            self.bulk = False
            return one_by_one(wanted)
        try:
            found = {str(row["sku"]): parse(row) for row in body}
        except (KeyError, TypeError, ValueError) as exc:
            unreadable = f"{self.system.upper()} GET {path} answered an unreadable body: {exc}"
            raise PermanentConnectorError(unreadable) from exc
        missing = [s for s in wanted if s not in found]
        if missing:
            raise PermanentConnectorError(f"{self.system.upper()} GET {path} left out {', '.join(missing)}")
        return {sku: found[sku] for sku in wanted}

    def _bulk(self, path: str, skus: list[str]) -> list[Any]:
        """A bulk read by SKU (``?sku=…&sku=…``), ``BULK_SKUS`` SKUs a request (URLs stay short).
        Raises ``_NoBulk`` when the system has no such route (404 or 405 on it)."""
        rows: list[Any] = []
        for i in range(0, len(skus), BULK_SKUS):
            params: dict[str, Any] = {"sku": skus[i : i + BULK_SKUS]}
            response = self._request("GET", path, params=params)
            if response.status_code in (404, 405):
                raise _NoBulk(path)
            body = self._ok(response, "GET", path)
            if not isinstance(body, list):
                raise PermanentConnectorError(
                    f"{self.system.upper()} GET {path} answered {type(body).__name__}, not a list"
                )
            rows += body
        return rows

    def _snapshot(self, path: str, since: datetime | None, after: str | None, limit: int) -> SnapshotPage:
        params = {"limit": str(limit)}
        if since is not None:
            params["since"] = since.isoformat()
        if after is not None:
            params["after"] = after
        body = self._get(path, params)
        try:
            rows = [
                SnapshotRow(
                    sku=str(r["sku"]),
                    node=str(r["node"]),
                    qty=float(r["qty"]),
                    held=float(r.get("held") or 0.0),
                    changed_at=datetime.fromisoformat(r["changed_at"]) if r.get("changed_at") else None,
                )
                for r in body["rows"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentConnectorError(
                f"{self.system.upper()} GET {path} answered an unreadable page: {exc}"
            ) from exc
        nxt = body.get("next_after")
        return SnapshotPage(rows=rows, next_after=str(nxt) if nxt is not None else None)

    def apply(self, action: Action) -> dict[str, Any]:
        """Send one action to its route with the idempotency key; returns the system's answer."""
        if action.system != self.system:
            raise PermanentConnectorError(f"the {self.system} adapter cannot apply {action.name}")
        route = ROUTES.get(action.name)
        if route is None:
            raise PermanentConnectorError(f"unknown action type {action.name!r}")
        if not action.idempotency_key:
            raise PermanentConnectorError(f"{action.name} has no idempotency key; refusing to write")
        template, fields = route
        missing = [f for f in fields if action.payload.get(f) is None]
        if missing:
            raise PermanentConnectorError(f"{action.name} payload is missing {', '.join(missing)}")
        path = template.format(**{f: quote(str(action.payload[f]), safe="") for f in fields})
        response = self._request("POST", path, json=action.payload, headers={"Idempotency-Key": action.idempotency_key})
        result = self._ok(response, "POST", path)
        return result if isinstance(result, dict) else {"result": result}


class _NoBulk(Exception):  # noqa: N818 - not an error: a system without bulk reads is read per SKU
    """The system has no bulk read at this path."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:300]


class HttpWms(_HttpSystem):
    system = "wms"

    def stock(self, sku: str) -> list[NodeStock]:
        return [NodeStock.model_validate(s) for s in self._get("/api/v1/inventory", {"sku": sku})]

    def stock_many(self, skus: Sequence[str]) -> dict[str, list[NodeStock]]:
        """Every SKU's stock in one read (``GET /inventory/by-sku?sku=…&sku=…``)."""
        return self._by_sku(
            "/api/v1/inventory/by-sku",
            skus,
            lambda row: [NodeStock.model_validate(s) for s in row["nodes"]],
            lambda wanted: {sku: self.stock(sku) for sku in wanted},
        )

    def movements(self, sku: str, node: str) -> list[Movement]:
        return [Movement.model_validate(m) for m in self._get("/api/v1/movements", {"sku": sku, "node": node})]

    def asns(self, po_id: str) -> list[Asn]:
        return [Asn.model_validate(a) for a in self._get("/api/v1/asns", {"po_id": po_id})]

    def stock_snapshot(
        self, since: datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        return self._snapshot("/api/v1/inventory/snapshot", since, after, limit)

    def receipts(self, po_id: str) -> list[Receipt]:
        return [Receipt.model_validate(r) for r in self._get("/api/v1/receipts", {"po_id": po_id})]

    def tasks(self, sku: str | None = None, node: str | None = None) -> list[WmsTask]:
        params = {k: v for k, v in (("sku", sku), ("node", node)) if v is not None}
        return [WmsTask.model_validate(t) for t in self._get("/api/v1/tasks", params or None)]

    def transfers(self, sku: str | None = None) -> list[TransferView]:
        params = {"sku": sku} if sku is not None else None
        return [TransferView.model_validate(t) for t in self._get("/api/v1/transfers", params)]

    def waves(self, cutoff_after: datetime | None = None, nodes: Sequence[str] | None = None) -> list[WaveView]:
        params: dict[str, Any] = {"cutoff_after": cutoff_after.isoformat()} if cutoff_after is not None else {}
        if nodes is not None:
            params["node"] = list(nodes)
            if not params["node"]:
                return []
        return [WaveView.from_wms(w) for w in self._get("/api/v1/waves", params or None)]


class HttpErp(_HttpSystem):
    system = "erp"

    def sku(self, sku: str) -> SkuInfo:
        path = f"/api/v1/materials/{quote(sku, safe='')}"
        response = self._request("GET", path)
        if response.status_code == 404:
            raise UnknownSku(sku)
        return SkuInfo.model_validate(self._ok(response, "GET", path))

    def book_stock(self, sku: str) -> list[BookPosition]:
        return [BookPosition.model_validate(b) for b in self._get("/api/v1/stock", {"sku": sku})]

    def books_many(self, skus: Sequence[str]) -> dict[str, SkuBooks]:
        """Material master, book stock and planned supply of every SKU in one read
        (``GET /materials?sku=…&sku=…``); an unknown SKU comes back with no record."""
        return self._by_sku(
            "/api/v1/materials",
            skus,
            lambda row: SkuBooks(
                info=SkuInfo.model_validate(row["material"]) if row.get("material") is not None else None,
                book=[BookPosition.model_validate(b) for b in row.get("book_stock") or []],
                supply=[Supply.model_validate(x) for x in row.get("planned_supply") or []],
            ),
            lambda wanted: books_one_by_one(self, wanted),
        )

    def book_snapshot(
        self, since: datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        return self._snapshot("/api/v1/stock/snapshot", since, after, limit)

    def planned_supply(self, sku: str) -> list[Supply]:
        return [Supply.model_validate(s) for s in self._get("/api/v1/supply", {"sku": sku})]

    def demand_history(self, sku: str | None = None, node: str | None = None) -> list[DemandPoint]:
        params = {k: v for k, v in (("sku", sku), ("node", node)) if v is not None}
        return [DemandPoint.model_validate(d) for d in self._get("/api/v1/demand-history", params or None)]

    def credit_hold(self, customer: str) -> bool:
        body = self._get(f"/api/v1/customers/{quote(customer, safe='')}/credit")
        return bool(body["credit_hold"])

    def postings(self, sku: str, node: str) -> list[Movement]:
        return [Movement.model_validate(m) for m in self._get("/api/v1/postings", {"sku": sku, "node": node})]

    def purchase_order(self, po_id: str) -> PurchaseOrderView:
        path = f"/api/v1/purchase-orders/{quote(po_id, safe='')}"
        response = self._request("GET", path)
        if response.status_code == 404:
            raise UnknownDocument("purchase order", po_id)
        return _po_view(self._ok(response, "GET", path))

    def open_purchase_orders(self) -> list[PurchaseOrderView]:
        return [_po_view(p) for p in self._get("/api/v1/purchase-orders", {"status": "open"})]


def _po_view(raw: dict[str, Any]) -> PurchaseOrderView:
    lines = raw.get("lines") or []
    return PurchaseOrderView(
        po=PurchaseOrder.model_validate(raw),
        status=str(raw.get("status", "open")),
        closed_lines=[int(ln["line"]) for ln in lines if ln.get("status") == "closed"],
        received={int(ln["line"]): float(ln.get("received") or 0) for ln in lines},
    )


class HttpOms(_HttpSystem):
    system = "oms"

    def __init__(self, base_url: str, client: httpx.Client) -> None:
        super().__init__(base_url, client)
        self._network: tuple[str, Any] | None = None  # (ETag, body) of the last network read

    def order(self, order_id: str) -> OrderView:
        path = f"/api/v1/orders/{quote(order_id, safe='')}"
        response = self._request("GET", path)
        if response.status_code == 404:
            raise UnknownOrder(order_id)
        return OrderView.model_validate(self._ok(response, "GET", path))

    def orders(self, statuses: list[str]) -> list[OrderView]:
        return [OrderView.model_validate(o) for o in self._get("/api/v1/orders", {"status": ",".join(statuses)})]

    def customer(self, customer_id: str) -> Customer:
        return Customer.model_validate(self._get(f"/api/v1/customers/{quote(customer_id, safe='')}"))

    def allocations_snapshot(
        self, since: datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        return self._snapshot("/api/v1/allocations/snapshot", since, after, limit)

    def network(self) -> Network:
        """The network, revalidated with its ETag: an unchanged one is answered 304 with no body and
        rebuilt from the body kept (a fresh model each call: no caller shares another's)."""
        path = "/api/v1/network"
        kept = self._network
        response = self._request("GET", path, headers={"If-None-Match": kept[0]} if kept else None)
        if response.status_code == 304 and kept is not None:
            return Network.model_validate(kept[1])
        body = self._ok(response, "GET", path)
        etag = response.headers.get("etag")
        self._network = (etag, body) if etag else None
        return Network.model_validate(body)


class HttpNotify(_HttpSystem):
    system = "notify"


def http_connectors(
    wms_url: str, erp_url: str, oms_url: str, notify_url: str, client: httpx.Client
) -> tuple[HttpWms, HttpErp, HttpOms, HttpNotify]:
    """The four adapters sharing one client (one connection pool)."""
    return (
        HttpWms(wms_url, client),
        HttpErp(erp_url, client),
        HttpOms(oms_url, client),
        HttpNotify(notify_url, client),
    )
