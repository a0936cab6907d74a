"""The pure rules of the decision lifecycle: what makes a proposal stale, what undoes an action,
when two plans are the same, and which proposals share a live key."""

from __future__ import annotations

from domain.decisions import Action, live_key, plan_signature
from runtime.executor import compensation
from tools.premises import moved

ORDER = {"status": "open", "hold_reason": None, "lines": [[1, "SKU-1", 3.0, [], None]]}


def facts(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "orders": {"SO-1": ORDER},
        "stock": {"SKU-1@DC-A": {"pickable": 5.0, "need": 3.0}, "SKU-2@*": {"pickable": 0.0, "need": 0.0}},
        "waves": {"SO-1": []},
    }
    base.update(overrides)
    return base


def test_facts_that_still_cover_the_plan_are_not_stale() -> None:
    now = facts(stock={"SKU-1@DC-A": {"pickable": 3.0, "need": 3.0}, "SKU-2@*": {"pickable": 0.0, "need": 0.0}})
    assert moved(facts(), now) == []


def test_consumed_stock_that_no_longer_covers_the_plan_is_stale() -> None:
    now = facts(stock={"SKU-1@DC-A": {"pickable": 2.0, "need": 3.0}, "SKU-2@*": {"pickable": 0.0, "need": 0.0}})
    assert moved(facts(), now) == ["SKU-1@DC-A: 3 needed, only 2 pickable now"]


def test_stock_a_hold_waits_for_arriving_makes_the_hold_stale() -> None:
    now = facts(stock={"SKU-1@DC-A": {"pickable": 5.0, "need": 3.0}, "SKU-2@*": {"pickable": 4.0, "need": 0.0}})
    assert moved(facts(), now) == ["SKU-2@*: pickable rose from 0 to 4"]


def test_an_order_that_changed_or_joined_a_wave_is_stale() -> None:
    released = {**ORDER, "status": "released"}
    assert moved(facts(), facts(orders={"SO-1": released})) == ["SO-1 is now released (was open)"]
    assert moved(facts(), facts(waves={"SO-1": ["WV-9"]})) == ["SO-1 joined wave WV-9"]


def test_each_undoable_action_has_its_compensation() -> None:
    alloc = Action(
        system="oms", type="allocate", payload={"order_id": "SO-1", "line": 1, "sku": "S", "node": "N", "qty": 2}
    )
    assert compensation(alloc, {}, {}) == Action(
        system="oms",
        type="release_allocation",
        payload={"order_id": "SO-1", "line": 1, "node": "N", "qty": 2, "sku": "S"},
    )
    wave = Action(system="wms", type="create_wave", payload={"waveId": "W-1"})
    assert compensation(wave, {}, {}).name == "wms.cancel_wave"  # type: ignore[union-attr]
    transfer = Action(system="wms", type="create_transfer", payload={"sku": "S", "from": "A", "to": "B", "qty": 1})
    assert compensation(transfer, {"transfer_id": "TR-1"}, {}).payload == {"transfer_id": "TR-1"}  # type: ignore[union-attr]
    status = Action(system="oms", type="update_order_status", payload={"order_id": "SO-1", "status": "released"})
    undo = compensation(status, {}, {"orders": {"SO-1": {"status": "open"}}})
    assert undo is not None and undo.payload == {"order_id": "SO-1", "status": "open"}
    ticket = Action(system="notify", type="ticket", payload={"team": "planning"})
    assert compensation(ticket, {}, {}) is None


def test_plans_that_differ_only_in_wave_ids_and_dates_are_the_same_plan() -> None:
    def plan(wave: str, day: str, node: str = "DC-A") -> list[Action]:
        return [
            Action(
                system="oms",
                type="allocate",
                payload={"order_id": "SO-1", "line": 1, "sku": "S", "node": node, "qty": 1},
            ),
            Action(system="wms", type="create_wave", payload={"waveId": wave, "node": node, "orders": []}),
            Action(system="oms", type="update_promise_date", payload={"order_id": "SO-1", "promise_date": day}),
        ]

    assert plan_signature(plan("W-1", "2026-03-22")) == plan_signature(plan("W-2", "2026-03-24"))
    assert plan_signature(plan("W-1", "2026-03-22")) != plan_signature(plan("W-1", "2026-03-22", node="DC-B"))


def test_release_and_resourcing_share_a_live_key_and_the_backorder_half_has_its_own() -> None:
    assert live_key("order_release", "SO-1") == live_key("allocation", "SO-1", "released")
    assert live_key("order_release", "SO-1", "backordered") != live_key("order_release", "SO-1", "released")
    assert live_key("backorder_prevention", "SKU-1@DC-A") != live_key("order_release", "SKU-1@DC-A")
