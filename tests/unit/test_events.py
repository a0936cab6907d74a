"""Event intake: the CloudEvents envelope and each type's data schema, errors naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from domain.events import DATA_SCHEMAS, INTERNAL_TYPES, CloudEvent, EventError, parse_event
from domain.models import Order

ORDER = {
    "id": "SO-78451",
    "customer": "C-1",
    "region": "east",
    "priority": "express",
    "lines": [{"line": 1, "sku": "SKU-1", "qty": 2}, {"line": 2, "sku": "SKU-2", "qty": 1}],
}

DATA: dict[str, dict[str, Any]] = {
    "oms.order.created": ORDER,
    "oms.order.cancelled": {"order_id": "SO-1", "reason": "customer"},
    "oms.payment.failed": {"order_id": "SO-1"},
    "erp.inventory.posted": {"node": "N1", "sku": "SKU-1", "qty_delta": -3},
    "erp.po.created": {
        "id": "PO-1",
        "supplier": "S-1",
        "node": "N1",
        "lines": [{"line": 1, "sku": "SKU-1", "qty": 10}],
    },
    "wms.asn.received": {"id": "ASN-1", "po_id": "PO-1", "lines": [{"po_line": 1, "sku": "SKU-1", "qty": 10}]},
    "wms.receipt.posted": {
        "id": "R-1",
        "po_id": "PO-1",
        "node": "N1",
        "lines": [{"po_line": 1, "sku": "SKU-1", "qty": 9, "damaged": 1}],
    },
    "wms.task.exception": {"task_id": "T-1", "node": "N1", "sku": "SKU-1", "reason": "short_pick"},
    "wms.inventory.adjusted": {"node": "N1", "sku": "SKU-1", "qty_delta": 2},
    "wms.capacity.changed": {"node": "N1", "zone": "A", "pick_capacity_per_hour": 80},
    "crossdock.tick": {"now": "2026-03-21T09:00:00Z"},
}


def envelope(type_: str = "oms.order.created", data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-000123",
        "source": "oms/oracle-om",
        "type": type_,
        "time": "2026-03-21T08:05:00Z",
        "subject": "SO-78451",
        "datacontenttype": "application/json",
        "data": copy.deepcopy(DATA[type_] if data is None else data),
    }
    raw.update(extra)
    return raw


def error_locs(raw: Any, prefix: tuple[str | int, ...] = ()) -> list[str]:
    with pytest.raises(EventError) as exc:
        parse_event(raw, prefix)
    return [e["loc"] for e in exc.value.errors]


def test_every_event_type_in_the_contract_is_known() -> None:
    assert set(DATA_SCHEMAS) - INTERNAL_TYPES == set(DATA)


def test_an_internal_job_type_is_refused_from_outside_and_accepted_from_crossdock() -> None:
    raw = envelope(type_="crossdock.tick", type="crossdock.crew.triage", data={"exceptions": [{}], "requested_by": "x"})
    with pytest.raises(EventError) as exc:
        parse_event(raw, (3,))
    assert exc.value.errors[0]["loc"] == "3.type" and exc.value.errors[0]["type"] == "internal_type"
    assert parse_event(raw, allow_internal=True).type == "crossdock.crew.triage"


@pytest.mark.parametrize("type_", sorted(DATA))
def test_a_valid_event_of_each_type_parses(type_: str) -> None:
    event = parse_event(envelope(type_))

    assert event.type == type_
    assert isinstance(event.typed_data(), DATA_SCHEMAS[type_])


def test_an_order_created_event_carries_a_typed_order() -> None:
    event = parse_event(envelope())

    order = event.typed_data()
    assert isinstance(order, Order)
    assert order.id == "SO-78451" and order.priority == "express"
    assert [(ln.sku, ln.qty) for ln in order.lines] == [("SKU-1", 2), ("SKU-2", 1)]
    assert event.time is not None and event.time.isoformat() == "2026-03-21T08:05:00+00:00"


def test_the_event_key_is_its_source_and_id() -> None:
    event = parse_event(envelope())

    assert event.key == "oms/oracle-om|evt-000123"
    assert parse_event(envelope(source="oms/other")).key != event.key


def test_extension_attributes_are_kept() -> None:
    event = parse_event(envelope(traceparent="00-abc-def-01"))
    assert event.model_dump()["traceparent"] == "00-abc-def-01"


def test_an_unknown_event_type_is_rejected_naming_the_type_field() -> None:
    with pytest.raises(EventError) as exc:
        parse_event({**envelope(), "type": "oms.order.exploded"})

    [err] = exc.value.errors
    assert err["loc"] == "type"
    assert "unknown event type 'oms.order.exploded'" in err["msg"]
    assert "oms.order.created" in err["msg"]  # the known types are listed


@pytest.mark.parametrize("field", ["specversion", "id", "source", "type", "data"])
def test_a_missing_required_attribute_is_named(field: str) -> None:
    raw = envelope()
    del raw[field]

    assert error_locs(raw) == [field]


def test_only_cloudevents_1_0_is_accepted() -> None:
    assert error_locs(envelope(specversion="0.3")) == ["specversion"]


def test_non_json_data_is_rejected() -> None:
    assert error_locs(envelope(datacontenttype="application/xml")) == ["datacontenttype"]


def test_a_zero_quantity_order_line_is_rejected_naming_the_field() -> None:
    data = copy.deepcopy(ORDER)
    data["lines"][1]["qty"] = 0

    with pytest.raises(EventError) as exc:
        parse_event(envelope(data=data))

    assert [e["loc"] for e in exc.value.errors] == ["data.lines.1.qty"]
    assert "data.lines.1.qty" in str(exc.value)


def test_a_missing_required_data_field_is_named() -> None:
    assert error_locs(envelope("oms.order.cancelled", data={"reason": "x"})) == ["data.order_id"]
    assert error_locs(envelope("wms.capacity.changed", data={"node": "N1", "zone": "A"})) == [
        "data.pick_capacity_per_hour"
    ]


def test_an_order_without_lines_is_rejected() -> None:
    assert error_locs(envelope(data={**ORDER, "lines": []})) == ["data.lines"]


def test_a_task_exception_reason_outside_the_vocabulary_is_rejected() -> None:
    data = {**DATA["wms.task.exception"], "reason": "gremlins"}
    assert error_locs(envelope("wms.task.exception", data=data)) == ["data.reason"]


def test_several_bad_fields_are_all_named() -> None:
    data = copy.deepcopy(ORDER)
    del data["customer"]
    data["lines"][0]["qty"] = -1

    assert sorted(error_locs(envelope(data=data))) == ["data.customer", "data.lines.0.qty"]


def test_errors_in_a_batch_are_prefixed_with_the_events_index() -> None:
    data = copy.deepcopy(ORDER)
    data["lines"][0]["qty"] = 0

    assert error_locs(envelope(data=data), prefix=(2,)) == ["2.data.lines.0.qty"]
    assert error_locs({**envelope(), "type": "nope"}, prefix=(0,)) == ["0.type"]


def test_a_body_that_is_not_an_object_is_rejected_as_the_body() -> None:
    assert error_locs(["not", "an", "event"]) == ["body"]
    assert error_locs("text", prefix=(3,)) == ["3"]


def test_data_that_is_not_an_object_is_rejected() -> None:
    raw = envelope()
    raw["data"] = "SO-1"
    assert error_locs(raw) == ["data"]


def test_an_event_error_is_a_value_error_carrying_field_message_and_type() -> None:
    with pytest.raises(ValueError) as exc:
        parse_event(envelope("oms.payment.failed", data={}))

    assert isinstance(exc.value, EventError)
    [err] = exc.value.errors
    assert set(err) == {"loc", "msg", "type"}
    assert err["loc"] == "data.order_id" and err["type"] == "missing"


def test_cloud_event_model_validates_directly() -> None:
    event = CloudEvent.model_validate(envelope("crossdock.tick"))
    assert event.data == {"now": "2026-03-21T09:00:00Z"}
