"""The twin's state: stock arithmetic, idempotent actions, oversell detection, events, export."""

from __future__ import annotations

import json

import pytest

from domain.decisions import Action
from domain.errors import UnknownOrder, UnknownSku
from domain.models import Scenario
from twin.scenarios import EXAMPLE
from twin.state import TwinRejected, TwinState


@pytest.fixture
def raw() -> dict:
    return json.loads(EXAMPLE.read_text())


@pytest.fixture
def state(raw: dict) -> TwinState:
    twin = TwinState(Scenario.model_validate(raw))
    for event in raw["events"]:
        if event["type"] == "oms.order.created":
            twin.apply_event(event)
    return twin


def allocate(order: str, line: int, sku: str, node: str, qty: float, key: str) -> Action:
    payload = {"order_id": order, "line": line, "sku": sku, "node": node, "qty": qty}
    return Action(system="oms", type="allocate", payload=payload, idempotency_key=key)


def at(state: TwinState, sku: str, node: str):
    return next(s for s in state.stock(sku) if s.node == node)


def test_pickable_subtracts_locked_stock(state: TwinState) -> None:
    east = at(state, "SKU-100", "DC-EAST")
    assert (east.on_hand, east.locked, east.allocated, east.pickable) == (35, 10, 0, 25)
    assert len(east.locations) == 2


def test_pickable_subtracts_allocations_of_open_orders_only(state: TwinState) -> None:
    state.apply(allocate("SO-1001", 1, "SKU-100", "DC-EAST", 4, "k-1"))
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 6, "k-2"))
    assert at(state, "SKU-100", "DC-EAST").pickable == 15
    state.apply(
        Action(
            system="oms",
            type="update_order_status",
            payload={"order_id": "SO-1002", "status": "cancelled"},
            idempotency_key="k-3",
        )
    )
    east = at(state, "SKU-100", "DC-EAST")
    assert (east.allocated, east.pickable) == (4, 21)


def test_initial_oms_allocations_are_loaded_as_line_allocations(raw: dict) -> None:
    raw["oms"]["orders"] = [raw["events"][0]["data"]]
    raw["oms"]["allocations"] = [{"order": "SO-1001", "line": 1, "node": "DC-WEST", "qty": 3}]
    twin = TwinState(Scenario.model_validate(raw))
    assert twin.order("SO-1001").lines[0].allocations[0].qty == 3
    assert at(twin, "SKU-100", "DC-WEST").pickable == 57


def test_the_same_idempotency_key_applies_once_and_returns_the_first_result(state: TwinState) -> None:
    first = state.apply(allocate("SO-1001", 1, "SKU-100", "DC-EAST", 4, "same-key"))
    second = state.apply(allocate("SO-1001", 1, "SKU-100", "DC-EAST", 4, "same-key"))
    assert second == first
    assert state.order("SO-1001").lines[0].allocations[0].qty == 4
    assert state.application_count("same-key") == 1
    assert [a["idempotency_key"] for a in state.applied_actions()] == ["same-key"]


def test_allocations_at_the_same_node_merge(state: TwinState) -> None:
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 10, "a"))
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 5, "b"))
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-WEST", 15, "c"))
    allocations = [(a.node, a.qty) for a in state.order("SO-1002").lines[0].allocations]
    assert allocations == [("DC-EAST", 15), ("DC-WEST", 15)]


def test_allocating_beyond_physical_stock_counts_an_oversell(state: TwinState) -> None:
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 25, "fits"))
    assert state.export_state()["oversells"]["count"] == 0
    state.apply(allocate("SO-1001", 1, "SKU-100", "DC-EAST", 1, "too-many"))
    oversells = state.export_state()["oversells"]
    assert oversells["count"] == 1
    assert oversells["events"][0] == {
        "node": "DC-EAST",
        "sku": "SKU-100",
        "allocated": 26,
        "physical": 25,
        "order_id": "SO-1001",
        "line": 1,
        "qty_over": 1,
        "idempotency_key": "too-many",
    }


def test_unknown_action_types_and_unknown_orders_are_rejected(state: TwinState) -> None:
    with pytest.raises(TwinRejected, match="unknown action type"):
        state.apply(Action(system="wms", type="teleport", payload={}, idempotency_key="x"))
    with pytest.raises(TwinRejected, match="SO-404"):
        state.apply(allocate("SO-404", 1, "SKU-100", "DC-EAST", 1, "y"))
    with pytest.raises(TwinRejected, match="no line 9"):
        state.apply(allocate("SO-1001", 9, "SKU-100", "DC-EAST", 1, "z"))
    assert state.applied_actions() == []


def test_order_created_event_creates_an_open_order_once(raw: dict) -> None:
    twin = TwinState(Scenario.model_validate(raw))
    with pytest.raises(UnknownOrder):
        twin.order("SO-1001")
    twin.apply_event(raw["events"][0])
    twin.apply_event(raw["events"][0])
    view = twin.order("SO-1001")
    assert view.status == "open"
    assert [ln.sku for ln in view.lines] == ["SKU-100", "SKU-200"]
    assert twin.order_ids() == ["SO-1001"]


def test_receipt_and_adjustment_events_change_physical_stock(state: TwinState, raw: dict) -> None:
    receipt = next(e for e in raw["events"] if e["type"] == "wms.receipt.posted")
    state.apply_event(receipt)
    assert at(state, "SKU-100", "DC-EAST").on_hand == 35 + 99
    state.apply_event(
        {
            "type": "wms.inventory.adjusted",
            "id": "e",
            "data": {"node": "DC-EAST", "sku": "SKU-100", "qty_delta": -2, "location": "A-01-01"},
        }
    )
    assert at(state, "SKU-100", "DC-EAST").on_hand == 35 + 99 - 2
    supply = state.planned_supply("SKU-200")
    assert [(s.kind, s.qty) for s in supply] == [("purchase_order", 10)]


def test_reads_raise_specific_errors_for_unknown_ids(state: TwinState) -> None:
    with pytest.raises(UnknownSku):
        state.sku("SKU-999")
    assert state.sku("SKU-300").substitutes == ["SKU-301"]
    assert state.credit_hold("CUST-9") and not state.credit_hold("CUST-1")


def test_export_state_has_the_report_final_state_shape(state: TwinState) -> None:
    state.apply(allocate("SO-1001", 1, "SKU-100", "DC-EAST", 4, "k1"))
    state.apply(
        Action(
            system="oms",
            type="split_line",
            idempotency_key="k2",
            payload={"order_id": "SO-1002", "line": 1, "fulfil_qty": 20, "backorder_qty": 10},
        )
    )
    state.apply(
        Action(
            system="oms",
            type="update_promise_date",
            idempotency_key="k3",
            payload={"order_id": "SO-1002", "line": None, "promise_date": "2026-03-25"},
        )
    )
    state.apply(
        Action(system="erp", type="close_po_line", idempotency_key="k4", payload={"po_id": "PO-9001", "line": 10})
    )
    state.apply(
        Action(
            system="notify",
            type="ticket",
            idempotency_key="k5",
            payload={"team": "planning", "subject": "s", "summary": "x", "priority": "low", "refs": []},
        )
    )
    out = json.loads(json.dumps(state.export_state()))
    assert set(out) >= {"oms", "wms", "erp", "tickets", "oversells"}
    assert set(out["wms"]) >= {"waves", "transfers", "tasks", "stock"}
    assert set(out["erp"]) >= {"book_stock", "backorders", "adjustments", "purchase_orders"}
    so2 = next(o for o in out["oms"]["orders"] if o["id"] == "SO-1002")
    assert so2["lines"][0]["backordered"] == 10 and so2["lines"][0]["promise_date"] == "2026-03-25"
    so1 = next(o for o in out["oms"]["orders"] if o["id"] == "SO-1001")
    assert set(so1["lines"][0]) == {
        "line",
        "sku",
        "qty",
        "allocations",
        "backordered",
        "promise_date",
        "substituted_by",
    }
    assert so1["lines"][0]["allocations"] == [{"node": "DC-EAST", "qty": 4}]
    po = out["erp"]["purchase_orders"][0]
    assert po["status"] == "open" and po["lines"][0]["status"] == "closed"
    assert out["tickets"][0]["team"] == "planning"


def line_qty(order: str, line: int, qty: float, key: str) -> Action:
    return Action(
        system="oms", type="update_line_qty", payload={"order_id": order, "line": line, "qty": qty}, idempotency_key=key
    )


def test_lowering_a_line_gives_back_the_newest_reservations_above_it_once(state: TwinState) -> None:
    # SO-1002: 30 × SKU-100.
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 10, "k-a"))
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-WEST", 12, "k-b"))
    state.apply(
        Action(
            system="oms",
            type="split_line",
            payload={"order_id": "SO-1002", "line": 1, "backorder_qty": 8},
            idempotency_key="k-c",
        )
    )
    result = state.apply(line_qty("SO-1002", 1, 15, "k-q"))
    assert (result["qty"], result["previous_qty"]) == (15, 30)
    assert result["released"] == [{"node": "DC-WEST", "sku": "SKU-100", "qty": 7}]
    view = state.order("SO-1002")
    [line] = view.lines
    assert (line.qty, line.backordered) == (15, 0)
    assert [(a.node, a.qty) for a in line.allocations] == [("DC-EAST", 10), ("DC-WEST", 5)]
    assert view.order.lines[0].qty == 15  # the demand the engines read shrinks too
    assert at(state, "SKU-100", "DC-WEST").allocated == 5
    # A replay with the same key changes nothing; the same quantity again is a no-op.
    assert state.apply(line_qty("SO-1002", 1, 15, "k-q")) == result and state.application_count("k-q") == 1
    assert state.apply(line_qty("SO-1002", 1, 15, "k-r"))["released"] == []
    # Below the newest reservation, the older one is reduced as well.
    state.apply(line_qty("SO-1002", 1, 4, "k-s"))
    assert [(a.node, a.qty) for a in state.order("SO-1002").lines[0].allocations] == [("DC-EAST", 4)]
    exported = next(o for o in state.export_state()["oms"]["orders"] if o["id"] == "SO-1002")
    assert exported["lines"][0]["qty"] == 4 and exported["lines"][0]["allocations"] == [{"node": "DC-EAST", "qty": 4}]


def test_a_line_qty_change_keeps_the_unreserved_backorder_within_the_line(state: TwinState) -> None:
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 6, "k-a"))
    state.apply(
        Action(
            system="oms",
            type="split_line",
            payload={"order_id": "SO-1002", "line": 1, "backorder_qty": 24},
            idempotency_key="k-b",
        )
    )
    state.apply(line_qty("SO-1002", 1, 10, "k-q"))
    [line] = state.order("SO-1002").lines
    assert (line.qty, line.backordered, [(a.node, a.qty) for a in line.allocations]) == (10, 4, [("DC-EAST", 6)])


def test_lowering_a_short_line_to_what_is_reserved_clears_its_backorder_and_releases_the_order(
    state: TwinState,
) -> None:
    state.apply(allocate("SO-1002", 1, "SKU-100", "DC-EAST", 6, "k-a"))
    state.apply(
        Action(
            system="oms",
            type="split_line",
            payload={"order_id": "SO-1002", "line": 1, "backorder_qty": 24},
            idempotency_key="k-b",
        )
    )
    state.apply(
        Action(
            system="oms",
            type="update_order_status",
            payload={"order_id": "SO-1002", "status": "partially_released"},
            idempotency_key="k-c",
        )
    )
    backorder = {"order_id": "SO-1002", "line": 1, "qty": 24, "promise_date": "2026-03-30"}
    state.apply(Action(system="erp", type="create_backorder", payload=backorder, idempotency_key="k-d"))
    state.apply(line_qty("SO-1002", 1, 10, "k-q"))  # still 4 short: the backorder shrinks to 4
    assert [b["qty"] for b in state.export_state()["erp"]["backorders"]] == [4]
    assert state.order("SO-1002").status == "partially_released"
    state.apply(line_qty("SO-1002", 1, 6, "k-r"))  # nothing short any more
    assert state.export_state()["erp"]["backorders"] == []
    view = state.order("SO-1002")
    assert (view.status, view.lines[0].backordered) == ("released", 0)


def test_a_line_qty_change_is_refused_for_unknown_lines_closed_orders_and_waved_lines(state: TwinState) -> None:
    with pytest.raises(TwinRejected, match="order SO-404 is not known"):
        state.apply(line_qty("SO-404", 1, 1, "k-1"))
    with pytest.raises(TwinRejected, match="order SO-1001 has no line 9"):
        state.apply(line_qty("SO-1001", 9, 1, "k-2"))
    with pytest.raises(TwinRejected, match=r"payload\.qty must be > 0"):
        state.apply(line_qty("SO-1001", 1, 0, "k-3"))
    state.apply(
        Action(
            system="wms",
            type="create_wave",
            payload={
                "waveId": "WV-1",
                "node": "DC-EAST",
                "orders": [{"orderId": "SO-1001", "lines": [{"line": 1, "sku": "SKU-100", "qty": 4}]}],
            },
            idempotency_key="k-4",
        )
    )
    with pytest.raises(TwinRejected, match="SO-1001 line 1 is on released wave WV-1"):
        state.apply(line_qty("SO-1001", 1, 2, "k-5"))
    assert state.apply(line_qty("SO-1001", 2, 0.5, "k-6"))["qty"] == 0.5  # line 2 is not on the wave
    state.apply(
        Action(
            system="oms",
            type="update_order_status",
            payload={"order_id": "SO-1003", "status": "shipped"},
            idempotency_key="k-7",
        )
    )
    with pytest.raises(TwinRejected, match="order SO-1003 is shipped"):
        state.apply(line_qty("SO-1003", 1, 1, "k-8"))
    assert state.order("SO-1003").lines[0].qty == 2


def test_bulk_reads_answer_what_the_reads_per_sku_answer(state: TwinState, raw: dict) -> None:
    state.apply(allocate("SO-1001", 1, "SKU-100", "DC-EAST", 4, "k-bulk-1"))
    state.apply_event(next(e for e in raw["events"] if e["type"] == "wms.receipt.posted"))
    skus = ["SKU-300", "SKU-NOPE", "SKU-100", "SKU-200"]
    assert state.stock_many(skus) == {sku: state.stock(sku) for sku in skus}
    assert list(state.stock_many(skus)) == skus and state.stock_many(["SKU-NOPE"]) == {"SKU-NOPE": []}
    assert at(state, "SKU-100", "DC-EAST").allocated == 4
    books = state.books_many(skus)
    assert [b["sku"] for b in books] == skus
    nope = books[1]
    assert nope == {"sku": "SKU-NOPE", "material": None, "book_stock": [], "planned_supply": []}
    sku300 = books[0]
    assert sku300["material"] == state.sku("SKU-300").model_dump(mode="json")
    assert sku300["book_stock"] == [b.model_dump(mode="json") for b in state.book_stock("SKU-300")]
    assert sku300["planned_supply"] == [s.model_dump(mode="json") for s in state.planned_supply("SKU-300")]


def test_stock_at_a_new_location_is_read_at_once(state: TwinState) -> None:
    """The stock read keeps the WMS records by SKU; a record a change adds shows in the next read."""
    assert [s.node for s in state.stock("SKU-300")] == ["DC-WEST"]
    state.apply_event(
        {"type": "wms.inventory.adjusted", "id": "e-new", "data": {"node": "DC-EAST", "sku": "SKU-300", "qty_delta": 7}}
    )
    east = at(state, "SKU-300", "DC-EAST")
    assert (east.on_hand, east.pickable, len(east.locations)) == (7, 7, 1)
    assert [s.node for s in state.stock_many(["SKU-300"])["SKU-300"]] == ["DC-EAST", "DC-WEST"]


def test_the_network_etag_changes_when_the_network_does_and_differs_between_twins(state: TwinState, raw: dict) -> None:
    etag, doc = state.network_document()
    assert state.network_document() == (etag, doc) and etag == state.network_etag()
    assert doc == state.network().model_dump(mode="json", by_alias=True)
    zone = state.network().nodes[0].zones[0]
    state.apply_event(
        {
            "type": "wms.capacity.changed",
            "id": "e-cap",
            "data": {"node": state.network().nodes[0].id, "zone": zone.id, "pick_capacity_per_hour": 7.0},
        }
    )
    changed, after = state.network_document()
    assert changed != etag and after["nodes"][0]["zones"][0]["pick_capacity_per_hour"] == 7.0
    state.apply_event(
        {"type": "wms.inventory.adjusted", "id": "e-x", "data": {"node": "DC-EAST", "sku": "SKU-100", "qty_delta": 1}}
    )
    assert state.network_etag() == changed  # stock moved, the network did not
    assert (
        TwinState(Scenario.model_validate(raw)).network_etag() != TwinState(Scenario.model_validate(raw)).network_etag()
    )


def test_the_wave_api_document_is_the_waves_it_keeps_without_copying_them(state: TwinState) -> None:
    for n, (node, cutoff) in enumerate([("DC-EAST", "2026-03-21T14:00:00Z"), ("DC-WEST", None), ("DC-EAST", None)]):
        parameters = {"workZone": "PICK-ZONE-A", **({"cutoffTime": cutoff} if cutoff else {})}
        payload = {"waveId": f"W-{n}", "node": node, "orders": [{"orderId": "SO-1001"}], "parameters": parameters}
        state.apply(Action(system="wms", type="create_wave", payload=payload, idempotency_key=f"k-w{n}"))
    assert json.loads(state.waves_json()) == state.waves()
    assert json.loads(state.waves_json({"DC-EAST"})) == state.waves({"DC-EAST"})
    kept = json.loads(state.waves_json({"DC-EAST"}, lambda w: "cutoffTime" in w["parameters"]))
    assert [w["waveId"] for w in kept] == ["W-0"]
    state.waves_json()  # the document is written from the waves, which it leaves as they were
    assert [w["waveId"] for w in state.waves()] == ["W-0", "W-1", "W-2"]
