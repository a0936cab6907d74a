"""Decision history reaches the knowledge base as decisions settle: executed, failed, and planner
overrides, followed from the real store (SQLite) with the watermark in real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from domain.decisions import Decision
from knowledge.base import KnowledgeBase
from knowledge.history import SETTLED, HistorySync
from runtime.store import Store
from tests.integration.conftest import Stack, order_event
from tests.unit.test_knowledge import TableEmbedder


def _kb() -> KnowledgeBase:
    table = TableEmbedder({"default": [1.0, 0.0, 0.0], "held": [0.0, 1.0, 0.0]})
    return KnowledgeBase(":memory:", embedder=table, engine="local")  # its points are read with the client


def _history_ids(kb: KnowledgeBase) -> set[str]:
    points, _ = kb.client.scroll(kb.collection, limit=1000, with_payload=True)
    return {str(p.payload["doc_id"]) for p in points if p.payload and p.payload.get("doc_type") == "history"}


def test_settled_decisions_and_planner_overrides_reach_the_knowledge_base(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"})  # every release waits for a planner
    for n in range(3):
        stack.publish(order_event(f"SO-H{n}", [("SKU-100", 1)]))
    stack.drain()
    store = stack.container.store
    pending = store.list_decisions(status="pending_review")
    assert len(pending) == 3
    kb = _kb()
    sync = HistorySync.for_base(kb, store, stack.container.redis, stack.container.settings.stream_prefix)
    assert sync.run_once() == 0  # nothing has settled yet: a proposal is not history
    assert kb.count("history") == 0

    approve, reject = pending[0], pending[1]
    assert stack.client.post(f"/v1/decisions/{approve.id}/approve", headers=stack.headers("planner")).status_code == 200
    resp = stack.client.post(
        f"/v1/decisions/{reject.id}/reject", json={"reason": "customer asked to wait"}, headers=stack.headers("planner")
    )
    assert resp.status_code == 200, resp.text
    assert sync.run_once() == 2
    assert _history_ids(kb) == {approve.id, reject.id}
    [hit] = kb.search("override wait", k=1, doc_type="history", workflow="order_release")
    points, _ = kb.client.scroll(kb.collection, limit=10, with_payload=True)
    by_id = {p.payload["doc_id"]: p.payload for p in points if p.payload}
    assert by_id[reject.id]["review"] == "rejected" and by_id[reject.id]["status"] == "rejected"
    assert "rejected by planner:planner, a planner override: customer asked to wait" in by_id[reject.id]["text"]
    assert by_id[approve.id]["review"] == "approved" and by_id[approve.id]["status"] == "executed"
    assert hit.doc_id in {approve.id, reject.id}

    # a second pass writes nothing new; the watermark survives a restart of the syncer
    assert sync.run_once() == 0
    again = HistorySync.for_base(kb, store, stack.container.redis, stack.container.settings.stream_prefix)
    assert again.watermark() == sync.watermark() and again.watermark() is not None
    # a new syncer has no memory of the overlap window (30 s), so it re-embeds those two, no more
    assert again.run_once() == 2

    # losing the watermark costs a full pass, never a missed decision
    again.reset()
    assert again.run_once() == 2
    assert kb.count("history") == 2


def test_keyset_pages_never_skip_decisions_that_share_a_change_time(tmp_path: Path, redis_url: str) -> None:
    import redis

    store = Store(f"sqlite:///{tmp_path}/h.db")
    store.create_schema()
    kv = redis.Redis.from_url(redis_url)
    key = f"test-hist-{datetime.now(UTC).timestamp()}"
    try:
        for n in range(7):
            d = Decision.model_validate(
                {
                    "id": f"dec-{n}",
                    "workflow": "discrepancy",
                    "subject": f"SKU-{n}@DC-1",
                    "outcome": "adjust",
                    "status": "executed" if n % 3 else "pending_review",
                    "confidence": 0.9,
                    "rationale": "count matched the books",
                    "actor": "crossdock-engine",
                    "event_id": f"evt-{n}",
                    "cost_impact": 0.0,
                    "human_review_required": False,
                    "evidence": {},
                    "actions": [],
                }
            )
            store.save_decision(d)
        tie = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
        with store._write() as conn:  # every decision changed at the same instant
            conn.execute(sa.update(store.decisions).values(updated_at=tie))
        settled = {f"dec-{n}" for n in range(7) if n % 3}
        rows = store.decisions_updated_since(None, SETTLED, limit=100)
        assert {d.id for d, _ in rows} == settled
        kb = _kb()
        sync = HistorySync(kb, store, kv, key, page=2, lag_s=0)
        assert sync.run_once() == len(settled)
        assert _history_ids(kb) == settled
        assert sync.watermark() == (tie, max(settled))
        assert store.decisions_updated_since((tie, max(settled)), SETTLED) == []
        assert [d.id for d, _ in store.decisions_updated_since((tie, "dec-2"), SETTLED)] == ["dec-4", "dec-5"]
        assert store.decisions_updated_since((tie + timedelta(seconds=1), ""), SETTLED) == []
    finally:
        kv.delete(key)
        kv.close()
        store.close()
