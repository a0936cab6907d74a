"""The scenario generator: deterministic, valid, sized, Pareto-skewed."""

from __future__ import annotations

from collections import Counter

import pytest

from domain.events import parse_event
from domain.models import Scenario
from twin.generator import generate


@pytest.fixture(scope="module")
def medium() -> dict:
    return generate(11, "medium")


def ordered_skus(doc: dict) -> Counter[str]:
    return Counter(ln["sku"] for e in doc["events"] if e["type"] == "oms.order.created" for ln in e["data"]["lines"])


def test_the_same_seed_gives_the_same_scenario() -> None:
    assert generate(3, "small") == generate(3, "small")
    assert generate(3, "small") != generate(4, "small")


def test_the_scenario_and_every_event_validate(medium: dict) -> None:
    scenario = Scenario.model_validate(medium)
    events = [parse_event(e) for e in medium["events"]]
    assert scenario.oms.orders == []
    assert len({e.id for e in events}) == len(events)
    times = [e.time for e in events]
    assert times == sorted(times)


def test_sizes_differ_in_nodes_skus_and_orders(medium: dict) -> None:
    def dims(doc: dict) -> tuple[int, int, int]:
        orders = sum(1 for e in doc["events"] if e["type"] == "oms.order.created")
        return len(doc["nodes"]), len(doc["skus"]), orders

    assert dims(generate(11, "small")) == (3, 15, 30)
    assert dims(medium) == (6, 80, 300)


def test_top_fifth_of_skus_take_more_than_half_of_order_lines(medium: dict) -> None:
    counts = ordered_skus(medium)
    top = sum(n for _, n in counts.most_common(len(medium["skus"]) // 5))
    assert top / sum(counts.values()) > 0.5


def test_planted_exceptions_are_present(medium: dict) -> None:
    types = Counter(e["type"] for e in medium["events"])
    for needed in ("wms.task.exception", "wms.inventory.adjusted", "wms.asn.received", "wms.receipt.posted"):
        assert types[needed] >= 1, needed
    assert types["crossdock.tick"] == 12
    stock = {(r["node"], r["sku"]): 0 for r in medium["wms"]["stock"]}
    for r in medium["wms"]["stock"]:
        stock[(r["node"], r["sku"])] += r["on_hand"]
    book = {(b["node"], b["sku"]): b["qty"] for b in medium["erp"]["book_stock"]}
    assert any(book[k] != v for k, v in stock.items()), "no WMS/ERP discrepancy planted"
    assert any(r["locked"] > 0 for r in medium["wms"]["stock"])
    assert medium["erp"]["credit_holds"]
