"""The HTTP adapters against the twin served for real over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse

from connectors.http import HttpErp, HttpNotify, HttpOms, HttpWms, http_connectors
from connectors.ports import ErpPort, NotifyPort, OmsPort, WmsPort
from domain.decisions import Action
from domain.errors import ConnectorError, PermanentConnectorError, UnknownOrder, UnknownSku
from domain.models import Scenario
from runtime.servers import free_port, serve_in_thread
from twin.scenarios import EXAMPLE
from twin.server import create_twin_app
from twin.state import TwinState

Adapters = tuple[HttpWms, HttpErp, HttpOms, HttpNotify]
Twin = tuple[TwinState, str]


@pytest.fixture(scope="module")
def twin() -> Iterator[tuple[TwinState, str]]:
    raw = json.loads(EXAMPLE.read_text())
    state = TwinState(Scenario.model_validate(raw))
    server = serve_in_thread(create_twin_app(state))
    try:
        with httpx.Client() as client:
            for event in raw["events"][:4]:
                assert client.post(f"{server.url}/twin/events", json=event).status_code == 200
        yield state, server.url
    finally:
        server.stop()


@pytest.fixture
def adapters(twin: tuple[TwinState, str]) -> Iterator[tuple[HttpWms, HttpErp, HttpOms, HttpNotify]]:
    url = twin[1]
    with httpx.Client() as client:
        yield http_connectors(f"{url}/wms", f"{url}/erp", f"{url}/oms", f"{url}/notify", client)


def test_adapters_implement_the_ports(adapters: Adapters) -> None:
    wms, erp, oms, notify = adapters
    assert isinstance(wms, WmsPort) and isinstance(erp, ErpPort)
    assert isinstance(oms, OmsPort) and isinstance(notify, NotifyPort)


def test_reads_come_back_as_domain_types(adapters: Adapters) -> None:
    wms, erp, oms, _ = adapters
    east = next(s for s in wms.stock("SKU-100") if s.node == "DC-EAST")
    assert (east.on_hand, east.locked, east.pickable) == (35, 10, 25)
    assert erp.sku("SKU-300").substitutes == ["SKU-301"]
    assert {b.node: b.available for b in erp.book_stock("SKU-300")} == {"DC-WEST": 8}
    assert {(s.kind, s.id) for s in erp.planned_supply("SKU-300")} == {("transfer", "TO-300")}
    assert erp.credit_hold("CUST-9") is True and erp.credit_hold("CUST-1") is False
    assert oms.order("SO-1001").order.customer == "CUST-1"
    assert oms.customer("CUST-1").tier == "gold"
    network = oms.network()
    assert {n.id for n in network.nodes} == {"DC-EAST", "DC-WEST", "STORE-12"}
    assert network.transfer_lanes[0].from_node == "DC-WEST"


def test_a_write_replayed_twice_is_applied_once(adapters: Adapters, twin: Twin) -> None:
    state, url = twin
    _, _, oms, _ = adapters
    action = Action(
        system="oms",
        type="allocate",
        idempotency_key="it-alloc-1",
        payload={"order_id": "SO-1002", "line": 1, "sku": "SKU-100", "node": "DC-WEST", "qty": 5},
    )
    first = oms.apply(action)
    second = oms.apply(action)
    third = oms.apply(action)
    assert first == second == third
    assert state.application_count("it-alloc-1") == 1
    assert [a.qty for a in oms.order("SO-1002").lines[0].allocations] == [5]
    replay = httpx.post(
        f"{url}/oms/api/v1/orders/SO-1002/allocations",
        json=action.payload,
        headers={"Idempotency-Key": "it-alloc-1"},
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    counts = {a["idempotency_key"]: a["count"] for a in httpx.get(f"{url}/twin/actions").json()}
    assert counts["it-alloc-1"] == 1


def test_writes_reach_each_system(adapters: Adapters, twin: Twin) -> None:
    state, _ = twin
    wms, erp, oms, notify = adapters
    wms.apply(
        Action(
            system="wms",
            type="create_wave",
            idempotency_key="it-wave",
            payload={
                "waveId": "W-1",
                "node": "DC-EAST",
                "orders": [
                    {
                        "orderId": "SO-1001",
                        "priorityScore": 0.9,
                        "lines": [{"line": 1, "sku": "SKU-100", "qty": 4}],
                    }
                ],
                "parameters": {
                    "workZone": "PICK-ZONE-A",
                    "carrierCode": "FEDX_GROUND",
                    "cutoffTime": "14:00",
                },
            },
        )
    )
    erp.apply(
        Action(
            system="erp",
            type="expedite_po",
            idempotency_key="it-exp",
            payload={"po_id": "PO-9001", "line": 20, "new_date": "2026-03-22"},
        )
    )
    oms.apply(
        Action(
            system="oms",
            type="hold_order",
            idempotency_key="it-hold",
            payload={"order_id": "SO-1003", "reason": "credit_hold", "detail": "CUST-9"},
        )
    )
    notify.apply(
        Action(
            system="notify",
            type="ticket",
            idempotency_key="it-tkt",
            payload={
                "team": "finance",
                "subject": "credit",
                "summary": "s",
                "priority": "high",
                "refs": ["SO-1003"],
            },
        )
    )
    wms.apply(
        Action(
            system="wms",
            type="create_wave",
            idempotency_key="it-wave-2",
            payload={
                "waveId": "W-2",
                "node": "DC-EAST",
                "orders": [{"orderId": "SO-1002", "priorityScore": 50, "lines": [{"line": 1, "sku": "SKU-100"}]}],
                "parameters": {"workZone": "PICK-ZONE-A", "cutoffTime": "2026-03-21T14:00:00Z"},
            },
        )
    )
    exported = state.export_state()
    assert exported["wms"]["waves"][0]["waveId"] == "W-1"
    w1, w2 = wms.waves()
    assert (w1.wave_id, w1.zone, w1.carrier, w1.cutoff, w1.orders) == (
        "W-1",
        "PICK-ZONE-A",
        "FEDX_GROUND",
        None,
        {"SO-1001": 1},  # "14:00" is no RFC 3339 time
    )
    assert w2.cutoff == datetime(2026, 3, 21, 14, 0, tzinfo=UTC)
    # Only the work still ahead: W-2's truck has left by 15:00; W-1 has no cutoff to judge by.
    assert [w.wave_id for w in wms.waves(cutoff_after=datetime(2026, 3, 21, 13, 0, tzinfo=UTC))] == ["W-1", "W-2"]
    assert [w.wave_id for w in wms.waves(cutoff_after=datetime(2026, 3, 21, 15, 0, tzinfo=UTC))] == ["W-1"]
    # Only the nodes an order can ship from (an order decision's read): W-2 is DC-EAST's.
    assert "W-2" in [w.wave_id for w in wms.waves(nodes=["DC-EAST"])]
    assert all(w.node == "DC-EAST" for w in wms.waves(nodes=["DC-EAST"]))
    assert wms.waves(nodes=["NOWHERE"]) == [] and wms.waves(nodes=[]) == []
    assert oms.order("SO-1003").hold_reason == "credit_hold"
    assert [s.date.isoformat() for s in erp.planned_supply("SKU-200")] == ["2026-03-22"]
    assert exported["tickets"][0]["team"] == "finance"


def test_unknown_sku_and_order_raise_domain_errors(adapters: Adapters) -> None:
    _, erp, oms, _ = adapters
    with pytest.raises(UnknownSku, match="SKU-404"):
        erp.sku("SKU-404")
    with pytest.raises(UnknownOrder, match="SO-404"):
        oms.order("SO-404")


def test_a_rejected_action_is_a_permanent_error_naming_the_reason(adapters: Adapters) -> None:
    _, _, oms, _ = adapters
    action = Action(
        system="oms",
        type="update_order_status",
        idempotency_key="it-bad",
        payload={"order_id": "SO-1001", "status": "teleported"},
    )
    with pytest.raises(PermanentConnectorError, match="unknown order status"):
        oms.apply(action)


def test_an_unreachable_system_is_a_retryable_connector_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with httpx.Client() as client:
        wms = HttpWms(url, client)
        with pytest.raises(ConnectorError) as info:
            wms.stock("SKU-100")
    assert not isinstance(info.value, PermanentConnectorError)


def test_bulk_reads_answer_what_the_reads_per_sku_answer(adapters: Adapters) -> None:
    wms, erp, _, _ = adapters
    skus = ["SKU-300", "SKU-NOPE", "SKU-100"]
    assert wms.stock_many(skus) == {sku: wms.stock(sku) for sku in skus}
    assert list(wms.stock_many(skus)) == skus and wms.stock_many([]) == {}
    books = erp.books_many(skus)
    assert list(books) == skus
    assert books["SKU-NOPE"].info is None and not books["SKU-NOPE"].book and not books["SKU-NOPE"].supply
    for sku in ("SKU-300", "SKU-100"):
        assert (books[sku].info, books[sku].book, books[sku].supply) == (
            erp.sku(sku),
            erp.book_stock(sku),
            erp.planned_supply(sku),
        )


def test_a_bulk_read_of_many_skus_is_cut_into_short_requests(adapters: Adapters, twin: Twin) -> None:
    wms, erp, _, _ = adapters
    skus = [f"SKU-X{n}" for n in range(250)] + ["SKU-100"]
    seen: list[str] = []
    wms.client.event_hooks["request"].append(lambda request: seen.append(str(request.url)))
    try:
        stock = wms.stock_many(skus)
    finally:
        wms.client.event_hooks["request"].clear()
    assert len(seen) == 3 and max(len(u) for u in seen) < 4000  # 100 SKUs a request
    assert list(stock) == skus and stock["SKU-100"] == wms.stock("SKU-100") and stock["SKU-X7"] == []
    assert erp.books_many(skus)["SKU-100"].info == erp.sku("SKU-100")


def test_the_network_is_revalidated_with_its_etag(twin: Twin) -> None:
    """The first read keeps the network and its ETag; the next ones ask with If-None-Match and get
    304 with no body while the network is unchanged; after a capacity change, the new network."""
    state, url = twin
    statuses: list[int] = []
    with httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]}) as client:
        _, _, oms, _ = http_connectors(f"{url}/wms", f"{url}/erp", f"{url}/oms", f"{url}/notify", client)
        first = oms.network()
        second = oms.network()
        assert statuses == [200, 304]
        assert second == first == state.network() and second is not first
        second.nodes.clear()  # a caller's changes stay its own
        assert oms.network() == first and statuses[-1] == 304
        node = first.nodes[0]
        zone = node.zones[0]
        capacity = zone.pick_capacity_per_hour + 11
        change = {
            "id": "it-cap",
            "type": "wms.capacity.changed",
            "data": {"node": node.id, "zone": zone.id, "pick_capacity_per_hour": capacity},
        }
        assert client.post(f"{url}/twin/events", json=change).status_code == 200
        statuses.clear()
        after = oms.network()
        assert statuses == [200] and after == state.network() != first
        assert after.nodes[0].zones[0].pick_capacity_per_hour == capacity
        assert oms.network() == after and statuses == [200, 304]
        plain = client.get(f"{url}/oms/api/v1/network")  # no If-None-Match: the whole network
        assert plain.status_code == 200 and plain.json() == after.model_dump(mode="json", by_alias=True)
        other = client.get(f"{url}/oms/api/v1/network", headers={"If-None-Match": '"another"'})
        assert other.status_code == 200 and other.headers["etag"] == plain.headers["etag"]


def test_a_system_without_bulk_reads_is_read_per_sku(twin: Twin) -> None:
    """A WMS and an ERP that answer the bulk routes 404 (written before them): the adapters read per
    SKU instead, with the same answers, and do not ask for the bulk route again."""
    state, _ = twin
    app = create_twin_app(state)
    hidden = ("/wms/api/v1/inventory/by-sku", "/erp/api/v1/materials")

    @app.middleware("http")
    async def without_bulk_reads(request: Request, call_next: Any) -> Any:
        if request.url.path in hidden:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return await call_next(request)

    server = serve_in_thread(app)
    paths: list[str] = []
    try:
        with httpx.Client(event_hooks={"request": [lambda r: paths.append(r.url.path)]}) as client:
            url = server.url
            wms, erp, _, _ = http_connectors(f"{url}/wms", f"{url}/erp", f"{url}/oms", f"{url}/notify", client)
            skus = ["SKU-100", "SKU-NOPE", "SKU-300"]
            assert wms.stock_many(skus) == {sku: state.stock(sku) for sku in skus}
            books = erp.books_many(skus)
            assert books["SKU-NOPE"].info is None and books["SKU-300"].info == state.sku("SKU-300")
            assert books["SKU-100"].book == state.book_stock("SKU-100")
            assert not wms.bulk and not erp.bulk
            paths.clear()
            wms.stock_many(skus)
            erp.books_many(skus)
            assert "/wms/api/v1/inventory/by-sku" not in paths and "/erp/api/v1/materials" not in paths
            assert paths.count("/wms/api/v1/inventory") == 3 and paths.count("/erp/api/v1/stock") == 2
    finally:
        server.stop()
