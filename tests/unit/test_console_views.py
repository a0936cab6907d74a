"""The console's pure parts and its store queries, without a browser: what a decision changes (before
→ after), the approve-with-changes form, the queue's filters, sort and paging, an order's decisions,
the KPIs, and who a key is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.console import queries
from api.console.auth import User, user_for_key_hash
from api.console.bench import seed
from api.console.reviews import parse_changes
from api.console.routes import filter_query, queue_filter
from api.console.views import age, binding_constraints, changes_by_system, evidence_tables, when
from domain.decisions import Action, Decision
from runtime.lifecycle import ChangeRejected
from runtime.settings import Settings, hash_key
from runtime.store import Store


def release(**over: object) -> Decision:
    data: dict[str, object] = {
        "id": "dec-1",
        "event_id": "evt-1",
        "workflow": "order_release",
        "subject": "SO-1",
        "outcome": "released",
        "confidence": 0.75,
        "cost_impact": 3.3,
        "human_review_required": True,
        "status": "pending_review",
        "rationale": "released from DC-EAST",
        "evidence": {
            "now": "2026-03-21T08:10:00+00:00",
            "sourcing": {"binding_constraint": {"1": "Binding: none."}},
            "lines": [{"line": 1, "sku": "SKU-100", "qty": 3.0}],
            "governance": "confidence 0.75 < 0.8",
            "sop": "SOP-WAV-001 §2",
        },
        "actions": [
            Action(
                system="oms",
                type="allocate",
                payload={"order_id": "SO-1", "line": 1, "sku": "SKU-100", "node": "DC-EAST", "qty": 3.0},
            ),
            Action(
                system="wms",
                type="create_wave",
                payload={
                    "waveId": "WV-1",
                    "node": "DC-EAST",
                    "orders": [{"orderId": "SO-1"}],
                    "parameters": {"workZone": "A", "cutoffTime": "2026-03-21T14:00:00Z"},
                },
            ),
            Action(system="oms", type="update_order_status", payload={"order_id": "SO-1", "status": "released"}),
        ],
        "facts": {
            "orders": {"SO-1": {"status": "open", "lines": [[1, "SKU-100", 3.0, [], None]]}},
            "stock": {"SKU-100@DC-EAST": {"pickable": 25.0, "need": 3.0}},
            "waves": {"SO-1": []},
        },
    }
    data.update(over)
    return Decision.model_validate(data)


def test_each_action_is_a_change_with_its_value_before_and_after_grouped_by_system() -> None:
    groups = dict(changes_by_system(release()))
    assert list(groups) == ["OMS (orders)", "WMS (warehouse)"]
    alloc, status = groups["OMS (orders)"]
    assert (alloc.before, alloc.after) == ("nothing reserved", "3 at DC-EAST")
    assert alloc.detail == "pickable SKU-100 at DC-EAST: 25 → 22"
    assert alloc.editable == {"node": "DC-EAST", "qty": 3.0}
    assert (status.before, status.after) == ("open", "released")
    [wave] = groups["WMS (warehouse)"]
    assert (wave.before, wave.after) == ("on no wave", "wave WV-1 (SO-1)")
    assert "2026-03-21 14:00 UTC" in wave.detail


def test_binding_constraint_evidence_tables_and_times_with_their_zone() -> None:
    d = release()
    assert binding_constraints(d) == [("line 1", "Binding: none.")]
    facts, tables = evidence_tables(d.evidence)
    assert ("now", "2026-03-21 08:10 UTC") in facts
    assert all(name not in ("sop", "governance") for name, _ in facts)
    assert [t.title for t in tables] == ["sourcing", "lines"]
    assert str(when(datetime(2026, 3, 21, 9, 0, tzinfo=UTC))).endswith(">2026-03-21 09:00 UTC</time>")
    now = datetime(2026, 3, 21, 12, 0, tzinfo=UTC)
    assert age(now - timedelta(hours=3, minutes=5), now) == "3 h 05 min"
    assert age(now - timedelta(days=2, hours=4), now) == "2 d 4 h"


def test_the_changes_form_sends_only_what_the_planner_changed_checked_like_the_api() -> None:
    d = release()
    assert parse_changes(d, {"a0.node": ["DC-EAST"], "a0.qty": ["3"]}) == []
    assert parse_changes(d, {"a0.node": ["STORE-12"], "a0.qty": ["3"]}) == [{"action": 0, "node": "STORE-12"}]
    assert parse_changes(d, {"a0.qty": ["2"]}) == [{"action": 0, "qty": 2.0}]
    with pytest.raises(ChangeRejected, match="qty"):
        parse_changes(d, {"a0.qty": ["-1"]})


def test_queue_filters_read_from_a_query_and_written_back() -> None:
    f = queue_filter(
        {"workflow": "order_release", "q": " SO-1 ", "min_value": "10", "sort": "value", "dir": "desc", "page": "x"}
    )
    assert (f.workflow, f.q, f.min_value, f.sort, f.desc, f.page) == ("order_release", "SO-1", 10.0, "value", True, 1)
    assert queue_filter({"sort": "drop table", "min_value": "nan"}).sort == "age"
    assert queue_filter({"min_value": "nan"}).min_value is None
    assert queue_filter(dict(p.split("=") for p in filter_query(f).split("&"))) == f


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    s.create_schema()
    return s


def test_the_queue_filters_sorts_and_pages_over_the_live_decisions(store: Store) -> None:
    orders = seed(store, 2000)
    page = queries.review_queue(store, queries.QueueFilter(size=25))
    assert page.total == sum(1 for d in store.list_decisions(status="pending_review", limit=10_000))
    assert len(page.rows) == 25 and page.pages == -(-page.total // 25)
    assert [r.created_at for r in page.rows] == sorted(r.created_at for r in page.rows)  # oldest first
    by_value = queries.review_queue(store, queries.QueueFilter(sort="value", desc=True, page=2, size=25))
    values = [r.cost_impact for r in by_value.rows]
    assert values == sorted(values, reverse=True)
    one = queries.review_queue(store, queries.QueueFilter(q=orders[3].lower()))
    assert {r.subject for r in one.rows} <= {orders[3]}
    costly = queries.review_queue(store, queries.QueueFilter(min_value=50, size=200))
    assert all(abs(r.cost_impact) >= 50 for r in costly.rows)
    old = queries.review_queue(store, queries.QueueFilter(min_age_h=48, size=200))
    assert all(r.created_at <= datetime.now(UTC) - timedelta(hours=48) for r in old.rows)
    last = queries.review_queue(store, queries.QueueFilter(page=10_000))  # past the end: the last page
    assert last.page == last.pages == -(-page.total // 50)
    assert all(r.gate == "order_release runs in propose mode" and r.actions == 3 for r in page.rows)


def test_an_orders_decisions_include_the_wave_plans_that_name_it(store: Store) -> None:
    orders = seed(store, 2000)
    found = queries.decisions_about(store, orders[0])
    subjects = {d.subject for d in found}
    assert orders[0] in subjects and "waves" in subjects
    assert all(d.subject == orders[0] or f'"{orders[0]}"' in d.model_dump_json() for d in found)
    assert queries.decisions_about(store, "SO-NOBODY") == []


def test_kpis_count_what_the_store_holds(store: Store) -> None:
    seed(store, 400)
    k = queries.kpis(store)
    assert k.total == 400 and sum(k.by_status.values()) == 400
    assert k.queue_size == k.by_status.get("pending_review", 0)
    assert k.auto_resolved == k.by_status["executed"] and k.override_rate is None


def test_a_key_is_its_holders_role_and_name_or_its_role() -> None:
    class Container:
        settings = Settings(env="test", key_hashes={hash_key("plain-key-123456"): "planner"})

    user = user_for_key_hash(Container(), hash_key("plain-key-123456"))  # type: ignore[arg-type]
    assert user == User("planner", "planner", hash_key("plain-key-123456"))
    assert user.actor == "planner:planner" and user.can("review") and not user.can("admin")
    assert user_for_key_hash(Container(), hash_key("unknown")) is None  # type: ignore[arg-type]

    class Named:
        settings = Settings(env="test", api_keys="alice-key-123456:planner:alice")

    alice = user_for_key_hash(Named(), hash_key("alice-key-123456"))  # type: ignore[arg-type]
    assert alice is not None and alice.actor == "planner:alice"
