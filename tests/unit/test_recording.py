"""Recorded reads (``tools.recording``) and the engine replay's diff (``runtime.shadow.engine_diff``).

The systems are the twin, served on loopback from the example scenario; the recordings are what a
specialist really read from it. The hand-computed case at the end checks every number of a diff.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.http import http_connectors
from connectors.ports import ErpBooksReader, WmsStockReader, WmsTaskReader
from crews.supervisor import route
from domain.decisions import Action, Decision, Proposal, decision_id
from domain.errors import UnknownOrder, UnknownSku
from domain.events import CloudEvent
from domain.governance import gated_decision
from domain.models import Policy, Scenario
from runtime.servers import serve_in_thread
from runtime.shadow import engine_diff
from tools.context import Systems
from tools.recording import (
    InMemoryMemo,
    NotRecorded,
    ReadOnlySystems,
    ReadOnlyViolation,
    RecordingSystems,
    ReplaySystems,
)
from twin.scenarios import EXAMPLE
from twin.server import create_twin_app
from twin.state import TwinState

LIVE = Policy(modes={"order_release": "autonomous"})  # thresholds: cost 1000, confidence 0.7
ACTION = Action(system="oms", type="update_order_status", payload={"order_id": "SO-1001", "status": "held"})


@dataclass
class Recorded:
    event: CloudEvent
    accepted_at: datetime
    proposals: list[Proposal]
    reads: dict[str, Any]


@dataclass
class Twin:
    state: TwinState
    systems: Systems
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    scenario = json.loads(EXAMPLE.read_text())
    state = TwinState(Scenario.model_validate(scenario))
    server = serve_in_thread(create_twin_app(state))
    client = httpx.Client(timeout=10.0, trust_env=False)
    wms, erp, oms, notify = http_connectors(
        f"{server.url}/wms", f"{server.url}/erp", f"{server.url}/oms", f"{server.url}/notify", client
    )
    try:
        yield Twin(state, Systems(wms=wms, erp=erp, oms=oms, notify=notify, memo=InMemoryMemo()), scenario["events"])
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def recorded(twin: Twin) -> list[Recorded]:
    """Every event of the example decided live (crossdock policy) with its reads recorded."""
    out = []
    for raw in twin.events:
        twin.state.apply_event(raw)
        event = CloudEvent.model_validate(raw)
        recording = RecordingSystems(twin.systems)
        specialist = route(event.type, LIVE)
        specialist.lock_keys(event, recording.systems)
        proposals = specialist.propose(event, recording.systems)
        # stored as JSON, read back as JSON
        reads = json.loads(json.dumps(recording.reads()))
        out.append(Recorded(event, event.time or datetime.now(UTC), proposals, reads))
    return out


def replayed(r: Recorded, policy: Policy = LIVE) -> list[dict[str, Any]]:
    systems = ReplaySystems(r.reads).systems
    specialist = route(r.event.type, policy)
    specialist.lock_keys(r.event, systems)
    return [p.model_dump(mode="json") for p in specialist.propose(r.event, systems)]


def test_replaying_the_recorded_reads_gives_the_live_proposals_every_time(recorded: list[Recorded]) -> None:
    assert {r.event.type for r in recorded} >= {"oms.order.created", "crossdock.tick", "wms.receipt.posted"}
    for r in recorded:
        if r.reads.get("incomplete"):  # a tick that ran a full reconciliation pass: not kept
            assert r.event.type == "crossdock.tick" and all("full-pass" in x for x in r.reads["incomplete"])
            continue
        live = [p.model_dump(mode="json") for p in r.proposals]
        first, second = replayed(r), replayed(r)
        assert first == live, r.event.id
        assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    replayable = [r for r in recorded if not r.reads.get("incomplete")]
    assert {r.event.type for r in replayable} >= {"oms.order.created", "wms.receipt.posted"}


def test_a_recording_keeps_models_with_their_type_and_is_compact(recorded: list[Recorded]) -> None:
    first = recorded[0].reads
    calls = {c["call"] for c in first["calls"]}
    # An order decision reads its SKUs in bulk: one ERP and one WMS read, not four per SKU.
    assert {"oms.order", "wms.stock_many", "erp.books_many", "oms.network"} <= calls
    assert not calls & {"wms.stock", "erp.sku", "erp.book_stock", "erp.planned_supply"}
    stock = next(c for c in first["calls"] if c["call"] == "wms.stock_many")
    assert stock["args"] == [["SKU-100", "SKU-200"]]
    by_sku = stock["answers"][0]["r"]["$d"]
    assert set(by_sku) == {"SKU-100", "SKU-200"} and by_sku["SKU-100"]["$ms"] == "domain.context:NodeStock"
    books = next(c for c in first["calls"] if c["call"] == "erp.books_many")["answers"][0]["r"]["$d"]
    assert books["SKU-100"]["$c"] == "connectors.ports:SkuBooks"
    assert books["SKU-100"]["v"]["info"]["$m"] == "domain.context:SkuInfo"
    assert len(json.dumps(first)) < 20_000


class _PerSku:
    """A port with only its core reads (no bulk reads), like an adapter written before them."""

    READS = {
        "wms": ("stock", "waves", "movements", "asns", "receipts"),
        "erp": ("sku", "book_stock", "planned_supply", "credit_hold", "postings", "purchase_order"),
        "oms": ("order", "customer", "orders", "network"),
    }

    def __init__(self, port: str, inner: Any) -> None:
        for name in self.READS[port] + ("apply",):
            setattr(self, name, getattr(inner, name))


def test_a_recording_made_with_reads_per_sku_replays_by_them(twin: Twin, recorded: list[Recorded]) -> None:
    """A recording made before the bulk reads (or from an adapter without them) lists no bulk
    reader: its replay offers none, so the decision reads per SKU again and finds every answer."""
    order = next(r for r in recorded if r.event.type == "oms.order.created")
    assert {"wms.stock_many", "erp.books_many"} <= set(order.reads["optional"])
    assert isinstance(ReplaySystems(order.reads).systems.erp, ErpBooksReader)
    per_sku = Systems(
        wms=_PerSku("wms", twin.systems.wms),  # type: ignore[arg-type]
        erp=_PerSku("erp", twin.systems.erp),  # type: ignore[arg-type]
        oms=_PerSku("oms", twin.systems.oms),  # type: ignore[arg-type]
        notify=twin.systems.notify,
        memo=InMemoryMemo(),
    )
    recording = RecordingSystems(per_sku)
    specialist = route(order.event.type, LIVE)
    specialist.lock_keys(order.event, recording.systems)
    live = [p.model_dump(mode="json") for p in specialist.propose(order.event, recording.systems)]
    reads = json.loads(json.dumps(recording.reads()))
    calls = {c["call"] for c in reads["calls"]}
    assert {"wms.stock", "erp.sku", "erp.book_stock", "erp.planned_supply"} <= calls
    assert not {"wms.stock_many", "erp.books_many"} & (calls | set(reads.get("optional", [])))
    replay = ReplaySystems(reads).systems
    assert not isinstance(replay.wms, WmsStockReader) and not isinstance(replay.erp, ErpBooksReader)
    assert replayed(Recorded(order.event, order.accepted_at, [], reads)) == live


class _PerSkuWithReaders(_PerSku):
    """Core reads and the optional readers, no bulk reads (the Tryton adapter's shape, less its feeds)."""

    READS = {
        "wms": (*_PerSku.READS["wms"], "transfers"),
        "erp": (*_PerSku.READS["erp"], "open_purchase_orders", "demand_history"),
        "oms": _PerSku.READS["oms"],
    }


def test_the_backorder_sweep_reads_every_sku_at_once_and_decides_as_per_sku_reads_do() -> None:
    """A tick's backorder prevention reads the ERP, the stock and the transfers once for every SKU
    (issue 20), replays from that recording, and decides exactly as the reads per SKU an adapter
    without bulk reads gets (transfers of other SKUs, unknown ones included, count for none)."""
    from crews.backorder import backorder_proposals

    scenario = json.loads(EXAMPLE.read_text())
    state = TwinState(Scenario.model_validate(scenario))
    for raw in scenario["events"]:
        state.apply_event(raw)
    for n, (sku, src, dst, qty) in enumerate(
        [
            ("SKU-100", "DC-WEST", "DC-EAST", 5),
            ("SKU-200", "DC-EAST", "DC-WEST", 1),
            ("SKU-NOPE", "DC-WEST", "DC-EAST", 50),
        ]
    ):
        payload = {"sku": sku, "from": src, "to": dst, "qty": qty, "eta": "2026-03-23"}
        state.apply(Action(system="wms", type="create_transfer", payload=payload, idempotency_key=f"tr-{n}"))
    now = datetime(2026, 3, 21, 12, tzinfo=UTC)
    server = serve_in_thread(create_twin_app(state))
    client = httpx.Client(timeout=10.0, trust_env=False)
    try:
        wms, erp, oms, notify = http_connectors(
            f"{server.url}/wms", f"{server.url}/erp", f"{server.url}/oms", f"{server.url}/notify", client
        )
        bulk = RecordingSystems(Systems(wms=wms, erp=erp, oms=oms, notify=notify))
        live = [p.model_dump(mode="json") for p in backorder_proposals(bulk.systems, now)]
        per_sku = RecordingSystems(
            Systems(
                wms=_PerSkuWithReaders("wms", wms),  # type: ignore[arg-type]
                erp=_PerSkuWithReaders("erp", erp),  # type: ignore[arg-type]
                oms=_PerSkuWithReaders("oms", oms),  # type: ignore[arg-type]
                notify=notify,
            )
        )
        one_by_one = [p.model_dump(mode="json") for p in backorder_proposals(per_sku.systems, now)]
    finally:
        client.close()
        server.stop()
    # The transfer already created for SKU-100 counts as supply (21 short less its 5), no other does.
    [transfer] = [p for p in live if p["outcome"] == "transfer_proposed"]
    assert (transfer["subject"], transfer["actions"][0]["payload"]["qty"]) == ("SKU-100@DC-EAST", 16.0)
    assert one_by_one == live
    reads = json.loads(json.dumps(bulk.reads()))
    calls = [c["call"] for c in reads["calls"]]
    assert {"erp.books_many", "wms.stock_many", "wms.transfers"} <= set(calls)
    assert not set(calls) & {"erp.sku", "erp.book_stock", "erp.planned_supply", "wms.stock"}
    assert [c["args"] for c in reads["calls"] if c["call"] == "wms.transfers"] == [[]]  # one read, every SKU
    assert len(calls) == len(set(calls))  # every read made once
    per_sku_calls = {c["call"] for c in per_sku.reads()["calls"]}
    assert {"erp.sku", "erp.planned_supply", "wms.stock", "wms.transfers"} <= per_sku_calls
    for recording in (reads, json.loads(json.dumps(per_sku.reads()))):
        replay = ReplaySystems(recording).systems
        assert [p.model_dump(mode="json") for p in backorder_proposals(replay, now)] == live


def test_an_error_a_read_raised_is_recorded_and_raised_again(twin: Twin) -> None:
    recording = RecordingSystems(twin.systems)
    with pytest.raises(UnknownOrder):
        recording.systems.oms.order("SO-NOPE")
    with pytest.raises(UnknownSku):
        recording.systems.erp.sku("SKU-NOPE")
    replay = ReplaySystems(recording.reads()).systems
    with pytest.raises(UnknownOrder) as order:
        replay.oms.order("SO-NOPE")
    assert order.value.order_id == "SO-NOPE" and "SO-NOPE" in str(order.value)
    with pytest.raises(UnknownSku):
        replay.erp.sku("SKU-NOPE")


def test_a_read_that_was_not_recorded_is_an_error_not_an_answer(recorded: list[Recorded]) -> None:
    systems = ReplaySystems(recorded[0].reads).systems
    with pytest.raises(NotRecorded, match="oms.order"):
        systems.oms.order("SO-9999")
    # NotRecorded is no LookupError: the context tools must not take it for "unknown customer"
    assert not isinstance(NotRecorded("x"), LookupError)


def test_every_write_is_refused_by_replay_and_read_only_systems(twin: Twin, recorded: list[Recorded]) -> None:
    before = json.dumps(twin.state.applied_actions(), sort_keys=True, default=str)
    for systems in (ReplaySystems(recorded[0].reads).systems, ReadOnlySystems(twin.systems).systems):
        for port in (systems.wms, systems.erp, systems.oms, systems.notify):
            with pytest.raises(ReadOnlyViolation, match="refused"):
                port.apply(ACTION)
    assert json.dumps(twin.state.applied_actions(), sort_keys=True, default=str) == before
    # reads pass through a read-only wrapper, and its memo is its own
    read_only = ReadOnlySystems(twin.systems).systems
    assert read_only.oms.order("SO-1001").order.id == "SO-1001"
    assert read_only.memo is not None and read_only.memo.first_time("k") and not read_only.memo.first_time("k")
    assert twin.systems.memo is not None and twin.systems.memo.first_time("k")  # the live memo never saw it


def test_optional_readers_are_there_only_when_the_recorded_port_had_them(recorded: list[Recorded]) -> None:
    triage = next(r for r in recorded if r.event.type == "wms.task.exception")
    assert "wms.tasks" in triage.reads["optional"]
    assert isinstance(ReplaySystems(triage.reads).systems.wms, WmsTaskReader)
    without = {**triage.reads, "optional": []}
    assert not isinstance(ReplaySystems(without).systems.wms, WmsTaskReader)


# ------------------------------------------------------------------------------ the hand-computed case


def _record(r: Recorded, decided: list[str]) -> dict[str, Any]:
    return {
        "key": r.event.key,
        "event_id": r.event.id,
        "type": r.event.type,
        "accepted_at": r.accepted_at,
        "event": r.event.model_dump(mode="json"),
        "reads": r.reads,
        "decisions": {
            "proposed": [decision_id(r.event.key, p.workflow, i) for i, p in enumerate(r.proposals)],
            "decided": decided,
        },
    }


def _decided(r: Recorded, proposal: Proposal) -> Decision:
    did = decision_id(r.event.key, proposal.workflow, 0)
    d = gated_decision(
        proposal, LIVE, did, actor="crossdock-engine", default_engine="order_release", event_id=r.event.id
    )
    return d.model_copy(update={"status": "executed" if d.status == "executing" else d.status})


def test_an_engine_replay_diff_matches_the_hand_computed_one(recorded: list[Recorded]) -> None:
    """SO-1001 (evt-0001) and SO-1002 (evt-0002), recorded by the engines as executed.

    Live, SO-1001 was released from DC-EAST (4 × SKU-100, 1 × SKU-200; cost 5.5) and SO-1002 from
    DC-WEST (30 × SKU-100; cost 87.0). The record of SO-1001 is made to say an older engine had split
    it: SKU-100 2 at DC-EAST + 2 at DC-WEST, SKU-200 1 at DC-WEST (which held none: recorded pickable
    0), cost 9.0. The candidate reviews anything costing over 50.

    By hand: SO-1001 changes (actions; executed → executed), SO-1002 changes (executed → review).
    Before: 2 decisions, cost 9 + 87 = 96, executed cost 96, 1 split, 1 oversell (SKU-200@DC-WEST),
    0 reviews, 2 on time. After: cost 5.5 + 87 = 92.5, executed cost 5.5, 0 splits, 0 oversells,
    1 review, 2 on time. evt-0003 (SO-1003) has an incomplete recording, and evt-0004 (SO-1004) lost
    its read of the order: neither can be replayed.
    """
    so1, so2, so3, so4 = recorded[:4]
    assert [p.cost_impact for p in so1.proposals + so2.proposals] == [5.5, 87.0]  # what the engines said live
    older = so1.proposals[0].model_copy(
        update={
            "cost_impact": 9.0,
            "actions": [
                Action(
                    system="oms",
                    type="allocate",
                    payload={"order_id": "SO-1001", "line": 1, "sku": "SKU-100", "node": n, "qty": 2},
                )
                for n in ("DC-EAST", "DC-WEST")
            ]
            + [
                Action(
                    system="oms",
                    type="allocate",
                    payload={"order_id": "SO-1001", "line": 2, "sku": "SKU-200", "node": "DC-WEST", "qty": 1},
                )
            ],
        }
    )
    d1, d2 = _decided(so1, older), _decided(so2, so2.proposals[0])
    assert d1.status == d2.status == "executed"
    so4_reads = {**so4.reads, "calls": [c for c in so4.reads["calls"] if c["call"] != "oms.order"]}
    records = [
        _record(so1, [d1.id]),
        _record(so2, [d2.id]),
        {**_record(so3, []), "reads": {**so3.reads, "incomplete": ["erp.sku: cannot record a thing"]}},
        {**_record(so4, []), "reads": so4_reads},
    ]
    candidate = LIVE.model_copy(update={"review_cost_above": 50.0})
    got = engine_diff(records, {d1.id: d1, d2.id: d2}, candidate)

    assert got["events"] == 4 and got["replayed"] == 2 and got["decisions"] == 2
    assert got["not_replayable"]["count"] == 2
    assert got["not_replayable"]["reasons"] == {
        "recording incomplete": 1,
        "the candidate read what was not recorded": 1,
    }
    total = got["total"]
    assert total["changed"] == 2
    assert total["before"] == {
        "decisions": 2,
        "reviews_needed": 0,
        "executed": 2,
        "observed": 0,
        "cost": 96.0,
        "cost_executed": 96.0,
        "splits": 1,
        "on_time": 2,
        "oversells": 1,
    }
    assert total["after"] == {
        "decisions": 2,
        "reviews_needed": 1,
        "executed": 1,
        "observed": 0,
        "cost": 92.5,
        "cost_executed": 5.5,
        "splits": 0,
        "on_time": 2,
        "oversells": 0,
    }
    assert total["delta"]["cost"] == -3.5 and total["delta"]["reviews_needed"] == 1
    assert total["moves"] == {"executed->review": 1}
    assert list(got["pairs"]) == ["order_release/released"]
    changed = {c["subject"]: c for c in got["changed"]}
    assert sorted(changed) == ["SO-1001", "SO-1002"]
    assert changed["SO-1002"]["before"]["route"] == "executed" and changed["SO-1002"]["after"]["route"] == "review"
    after_actions = changed["SO-1001"]["after"]["actions"]
    after_nodes = {(a["payload"]["sku"], a["payload"]["node"]) for a in after_actions if a["type"] == "allocate"}
    assert after_nodes == {("SKU-100", "DC-EAST"), ("SKU-200", "DC-EAST")}
    # the live policy on the true records: nothing changes
    same = engine_diff([_record(so2, [d2.id])], {d2.id: d2}, LIVE)
    assert same["total"]["changed"] == 0 and same["changed"] == []
    # deterministic: the same inputs give the same report
    assert json.dumps(engine_diff(records, {d1.id: d1, d2.id: d2}, candidate), sort_keys=True, default=str) == (
        json.dumps(got, sort_keys=True, default=str)
    )


def test_a_full_pass_snapshot_is_read_live_but_not_kept_and_a_change_feed_read_is(twin: Twin) -> None:
    recording = RecordingSystems(twin.systems)
    page = recording.systems.wms.stock_snapshot(None, None, 1000)  # type: ignore[attr-defined]
    assert page.rows  # the live answer reached the caller
    reads = recording.reads()
    assert reads["incomplete"] == ["wms.stock_snapshot: full-pass snapshot reads are not kept"]
    assert all(c["call"] != "wms.stock_snapshot" for c in reads["calls"])
    feed = RecordingSystems(twin.systems)
    since = datetime(2026, 3, 21, 9, 0, tzinfo=UTC)
    got = feed.systems.wms.stock_snapshot(since, None, 1000)  # type: ignore[attr-defined]
    assert "incomplete" not in feed.reads()
    assert ReplaySystems(feed.reads()).systems.wms.stock_snapshot(since, None, 1000) == got  # type: ignore[attr-defined]


def test_infinities_are_kept_as_strict_json_and_read_back_as_floats() -> None:
    import math

    from tools.recording import decode, encode

    value = {"cover_days": math.inf, "days": [1.5, -math.inf], "gap": math.nan}
    text = json.dumps(encode(value), allow_nan=False)  # PostgreSQL's json type refuses Infinity
    back = decode(json.loads(text))
    assert back["cover_days"] == math.inf and back["days"] == [1.5, -math.inf] and math.isnan(back["gap"])
