"""One connector contract, run against every backend: the twin over HTTP and a real trytond.

Both backends are seeded from the example scenario the repository ships
(``twin/scenarios/example.json``); each test asserts behaviour that every adapter behind
``WmsPort``/``ErpPort``/``OmsPort`` must share, so the engines never need to know which system
they talk to.

What is deliberately left out of the contract (backend differences, tested per backend in
``test_http_connector.py`` and ``tryton/test_tryton_connector.py``):

- Book stock where the books and the floor disagree (SKU-300@DC-WEST): Tryton has one ledger,
  so the scenario's planted discrepancy cannot be loaded there; the contract uses SKU-100@DC-WEST,
  where they agree.
- Location-level detail of ``stock()`` (zone/bin naming) and the order of returned lists.
- Return values of ``apply`` beyond idempotency (each system answers with its own document ids);
  the contract asserts the *effect* (pickable drops by the quantity once) and that a replay
  answers the same as the first call.
- How an order comes to exist: the twin learns it from the ``oms.order.created`` event, Tryton
  from ``create_sale`` (the OMS side of that event); the ``make_order`` hook hides that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from connectors.http import http_connectors
from connectors.ports import ErpPort, OmsPort, WmsPort
from connectors.tryton.loader import create_sale
from domain.decisions import Action
from domain.errors import UnknownOrder, UnknownSku
from domain.models import Order, Scenario
from runtime.servers import serve_in_thread
from tests.integration.conftest import EXAMPLE
from tests.integration.tryton.harness import Tryton, tryton, tryton_server  # noqa: F401  (fixtures)
from twin.server import create_twin_app
from twin.state import TwinState


@dataclass
class Backend:
    name: str
    wms: WmsPort
    erp: ErpPort
    oms: OmsPort
    scenario: dict[str, Any]
    make_order: Callable[[str], None]


def _order_event(scenario: dict[str, Any], order_id: str) -> dict[str, Any]:
    return next(e for e in scenario["events"] if e["type"] == "oms.order.created" and e["data"]["id"] == order_id)


@pytest.fixture(scope="module")
def twin_backend() -> Iterator[Backend]:
    raw: dict[str, Any] = json.loads(EXAMPLE.read_text())
    state = TwinState(Scenario.model_validate(raw))
    server = serve_in_thread(create_twin_app(state))
    client = httpx.Client(trust_env=False, timeout=10.0)

    def make_order(order_id: str) -> None:
        resp = client.post(f"{server.url}/twin/events", json=_order_event(raw, order_id))
        assert resp.status_code == 200, resp.text

    try:
        url = server.url
        wms, erp, oms, _ = http_connectors(f"{url}/wms", f"{url}/erp", f"{url}/oms", f"{url}/notify", client)
        yield Backend("twin", wms, erp, oms, raw, make_order)
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def tryton_backend(tryton: Tryton) -> Backend:  # noqa: F811  (the fixture imported above)
    def make_order(order_id: str) -> None:
        create_sale(tryton.client, Order.model_validate(_order_event(tryton.scenario, order_id)["data"]))

    return Backend("tryton", tryton.wms, tryton.erp, tryton.oms, tryton.scenario, make_order)


@pytest.fixture(scope="module", params=["twin", "tryton"])
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.getfixturevalue(f"{request.param}_backend")
    return value


def test_adapters_are_the_ports(backend: Backend) -> None:
    assert isinstance(backend.wms, WmsPort)
    assert isinstance(backend.erp, ErpPort)
    assert isinstance(backend.oms, OmsPort)


def test_pickable_is_on_hand_less_locked_less_allocated(backend: Backend) -> None:
    stock = {ns.node: ns for ns in backend.wms.stock("SKU-100")}
    west = stock["DC-WEST"]
    assert sum(loc.on_hand - loc.locked for loc in west.locations) - west.allocated == west.pickable
    assert west.pickable == 60
    for ns in stock.values():
        assert ns.pickable == pytest.approx(ns.on_hand - ns.locked - ns.allocated)


def test_unknown_sku_and_unknown_order_raise(backend: Backend) -> None:
    with pytest.raises(UnknownSku):
        backend.erp.sku("SKU-NOPE")
    with pytest.raises(UnknownOrder):
        backend.oms.order("SO-NOPE")


def test_material_master(backend: Backend) -> None:
    info = backend.erp.sku("SKU-300")
    assert (info.id, info.substitutes) == ("SKU-300", ["SKU-301"])


def test_book_stock_where_the_books_agree(backend: Backend) -> None:
    book = {b.node: b.qty for b in backend.erp.book_stock("SKU-100")}
    assert book["DC-WEST"] == 60


def test_planned_supply_includes_the_open_po_line(backend: Backend) -> None:
    po = backend.scenario["erp"]["purchase_orders"][0]
    line = next(ln for ln in po["lines"] if ln["sku"] == "SKU-200")
    supply = backend.erp.planned_supply("SKU-200")
    assert any(
        s.kind == "purchase_order" and s.id == po["id"] and s.node == po["node"] and s.qty == line["qty"]
        for s in supply
    ), supply


def test_credit_hold(backend: Backend) -> None:
    assert backend.erp.credit_hold("CUST-9") is True
    assert backend.erp.credit_hold("CUST-1") is False


def test_network_has_the_scenario_nodes(backend: Backend) -> None:
    network = backend.oms.network()
    assert {n.id for n in network.nodes} == {n["id"] for n in backend.scenario["nodes"]}


def test_an_order_reads_back(backend: Backend) -> None:
    backend.make_order("SO-1002")
    view = backend.oms.order("SO-1002")
    assert view.order.customer == "CUST-2"
    assert [(ln.line, ln.sku, ln.qty) for ln in view.lines] == [(1, "SKU-100", 30)]
    assert view.status == "open"


def test_allocate_twice_with_one_key_reserves_once(backend: Backend) -> None:
    backend.make_order("SO-1002")

    def pickable() -> float:
        return next(ns.pickable for ns in backend.wms.stock("SKU-100") if ns.node == "DC-WEST")

    before = pickable()
    action = Action(
        system="oms",
        type="allocate",
        idempotency_key=f"contract-alloc-{backend.name}",
        payload={"order_id": "SO-1002", "line": 1, "sku": "SKU-100", "node": "DC-WEST", "qty": 5},
    )
    first = backend.oms.apply(action)
    second = backend.oms.apply(action)
    assert first == second
    assert pickable() == before - 5
    line = backend.oms.order("SO-1002").lines[0]
    assert sum(a.qty for a in line.allocations if a.node == "DC-WEST") == 5
