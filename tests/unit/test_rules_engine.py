"""The rules policy: WMS pickable stock, nearest node first, split only when no node can fill, never oversell."""

from __future__ import annotations

from typing import Any, cast

from crews.order_release import BaselineReleaseSpecialist, RulesReleaseSpecialist
from crews.supervisor import BaselineEscalation, route
from domain.context import BookPosition
from domain.engines.rules import decide_rules_release
from domain.events import CloudEvent
from domain.models import Policy
from tests.unit.test_release_engine import actions, allocations, make_ctx, ns

# In the shared fixture, region "east" is served by N2 (1 day), N1 (2 days) and N3 (3 days).


def test_the_nearest_node_that_can_fill_the_whole_order_takes_it() -> None:
    ctx = make_ctx([("SKU-1", 5), ("SKU-2", 2)], stock=[ns("N1", 10), ns("N1", 4, sku="SKU-2"), ns("N3", 50)])

    p = decide_rules_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N1"): 5, (2, "N1"): 2}
    assert actions(p, "oms.update_order_status") == [{"order_id": "SO-1", "status": "released"}]
    [wave] = actions(p, "wms.create_wave")
    assert wave["node"] == "N1" and wave["orders"][0]["priorityScore"] == 0.0  # the baseline's FIFO wave


def test_nearest_first_is_by_transit_days_not_by_which_node_has_more() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N3", 500), ns("N1", 5), ns("N2", 5)])

    assert allocations(decide_rules_release(ctx)) == {(1, "N2"): 5}


def test_a_single_node_is_preferred_to_a_nearer_split() -> None:
    # N2 (nearest) has only SKU-1; N3 (farthest) has both: one shipment from N3, no split.
    ctx = make_ctx([("SKU-1", 5), ("SKU-2", 2)], stock=[ns("N2", 10), ns("N3", 10), ns("N3", 5, sku="SKU-2")])

    p = decide_rules_release(ctx)

    assert allocations(p) == {(1, "N3"): 5, (2, "N3"): 2}
    assert p.evidence["split"] is False


def test_splits_only_when_no_single_node_can_fill_each_line_from_its_nearest_node() -> None:
    ctx = make_ctx(
        [("SKU-1", 5), ("SKU-2", 2)], stock=[ns("N2", 10), ns("N1", 5, sku="SKU-2"), ns("N3", 9, sku="SKU-2")]
    )

    p = decide_rules_release(ctx)

    assert p.outcome == "released"
    assert allocations(p) == {(1, "N2"): 5, (2, "N1"): 2}
    assert p.evidence["split"] is True
    assert sorted(w["node"] for w in actions(p, "wms.create_wave")) == ["N1", "N2"]


def test_a_line_no_node_can_fill_alone_is_spread_over_the_nearest_nodes() -> None:
    ctx = make_ctx([("SKU-1", 10)], stock=[ns("N2", 4), ns("N1", 3), ns("N3", 8)])

    assert allocations(decide_rules_release(ctx)) == {(1, "N2"): 4, (1, "N1"): 3, (1, "N3"): 3}


def test_never_oversells_it_reads_wms_pickable_stock_not_the_erp_book() -> None:
    # The ERP books 100 at N2 but the WMS has 2 pickable (3 allocated to other orders): the baseline
    # would allocate 5 at N2 and oversell; the rules router takes N1, where the units are.
    stock = [ns("N2", 2, allocated=3), ns("N1", 5)]
    book = [
        BookPosition(node="N2", sku="SKU-1", qty=100, blocked=0),
        BookPosition(node="N1", sku="SKU-1", qty=5, blocked=0),
    ]
    ctx = make_ctx([("SKU-1", 5)], stock=stock, book=book)

    p = decide_rules_release(ctx)

    assert allocations(p) == {(1, "N1"): 5}
    for a in actions(p, "oms.allocate"):
        pickable = {s.node: s.pickable for s in stock}[a["node"]]
        assert a["qty"] <= pickable


def test_holds_instead_of_overselling_when_the_network_cannot_fill() -> None:
    ctx = make_ctx([("SKU-1", 20)], stock=[ns("N2", 4), ns("N1", 3)])

    p = decide_rules_release(ctx)

    assert p.outcome == "held"
    assert actions(p, "oms.allocate") == []
    assert actions(p, "oms.update_order_status") == [{"order_id": "SO-1", "status": "held"}]
    assert "SKU-1 needs 20, the network has 7 pickable" in p.rationale
    assert [t["team"] for t in actions(p, "notify.ticket")] == ["planning"]


def test_an_order_that_does_not_allow_splitting_is_held_when_no_single_node_can_fill() -> None:
    ctx = make_ctx([("SKU-1", 5), ("SKU-2", 2)], stock=[ns("N2", 10), ns("N1", 5, sku="SKU-2")], allow_split=False)

    p = decide_rules_release(ctx)

    assert p.outcome == "held" and actions(p, "oms.allocate") == []


def test_two_lines_of_one_sku_are_counted_together() -> None:
    # N2 has 6: enough for either line, not both. The whole order goes to N1, which has 8.
    ctx = make_ctx([("SKU-1", 4), ("SKU-1", 4)], stock=[ns("N2", 6), ns("N1", 8)])

    assert allocations(decide_rules_release(ctx)) == {(1, "N1"): 4, (2, "N1"): 4}


def test_a_customer_on_credit_hold_is_held() -> None:
    ctx = make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)], credit_hold=True)

    p = decide_rules_release(ctx)

    assert p.outcome == "held" and p.evidence["hold_reason"] == "credit_hold"


def test_the_supervisor_routes_the_rules_policy_and_it_locks_and_verifies_stock() -> None:
    rules = route("oms.order.created", Policy(policy="rules"))
    assert isinstance(rules, RulesReleaseSpecialist) and rules.verify_stock is True
    assert not isinstance(route("oms.order.created", Policy(policy="baseline")), RulesReleaseSpecialist)
    assert isinstance(route("oms.order.created", Policy(policy="baseline")), BaselineReleaseSpecialist)
    other = route("wms.task.exception", Policy(policy="rules"))
    assert isinstance(other, BaselineEscalation) and other.policy_name == "rules"


def test_the_rules_specialist_locks_the_orders_own_skus_even_when_it_allows_substitution() -> None:
    event = CloudEvent.model_validate(
        {
            "specversion": "1.0",
            "id": "evt-1",
            "source": "oms/test",
            "type": "oms.order.created",
            "subject": "SO-1",
            "data": {
                "id": "SO-1",
                "customer": "C-1",
                "region": "east",
                "allow_substitution": True,
                "lines": [{"line": 1, "sku": "SKU-2", "qty": 1}, {"line": 2, "sku": "SKU-1", "qty": 2}],
            },
        }
    )
    # No substitution under the rules policy, so no need to read the item master for substitutes.
    assert RulesReleaseSpecialist().lock_keys(event, cast(Any, None)) == ["sku:SKU-1", "sku:SKU-2"]
