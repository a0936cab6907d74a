"""The write path: an order decision in two write transactions (``Store.batch``) and a bounded
number of SQL statements, with the audit chain in order and sealed, batches atomic, and a crashed
execution resumed once."""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crews.supervisor import route
from domain.events import CloudEvent
from runtime.audit_seal import AuditSealer
from runtime.store import Store
from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.integration.test_store import pg_database, store_url  # noqa: F401 - shared fixtures

SEAL_KEY = b"write-path-seal-key-0123456789ab"


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:  # noqa: F811 - the fixture imported above
    s = Store(store_url, sealer=AuditSealer(SEAL_KEY, file=tmp_path / "audit.seals"))
    s.create_schema()
    yield s
    s.close()


class Commits:
    """Counts the write transactions a store commits (its write engine's ``commit`` events)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        self.engine = store._write_engine
        sa.event.listen(self.engine, "commit", self._on_commit)

    def _on_commit(self, _conn: Any) -> None:
        self.count += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "commit", self._on_commit)


class Statements:
    """Counts the SQL statements a store sends (its engine's ``before_cursor_execute`` events, its
    write transactions' included), grouped by their text; ``report`` prints where they come from."""

    def __init__(self, store: Store) -> None:
        self.texts: list[str] = []
        self.engine = store.engine
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.texts.append(" ".join(statement.split()))

    @property
    def count(self) -> int:
        return len(self.texts)

    def report(self) -> str:
        rows = collections.Counter(self.texts).most_common()
        return f"{self.count} statements:\n" + "\n".join(f"{n:3d}  {text[:160]}" for text, n in rows)

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)


def _decide_order(stack: Stack, order_id: str, lines: list[tuple[str, float]]) -> tuple[Statements, Commits]:
    """One ``oms.order.created`` job through the real pipeline and worker, counted."""
    store = stack.container.store
    stack.publish(order_event(order_id, lines))
    statements, commits = Statements(store), Commits(store)
    try:
        assert stack.drain() == 1
    finally:
        statements.close()
        commits.close()
    [decision] = store.list_decisions(subject=order_id)
    assert decision.status == "executed", decision.error
    return statements, commits


# An autonomous order release (its event, its decision, the execution of its actions and the event
# kept with its reads) on SQLite: 2 BEGIN IMMEDIATEs (a read of one statement sends no BEGIN); the
# policy; the decision (2 looks by id, its live key, its insert); per batch the chain's head, its
# seals and its new head (6); the audit rows (event and decision: 2; the execution: their keys looked
# up and their rows inserted, 2); the action log (1); the transition (2); the event record (1).
# PostgreSQL sends no BEGIN but takes an advisory lock and a savepoint (3).
ORDER_STATEMENTS = {"sqlite": 21, "postgresql": 22}


def test_an_order_decision_costs_a_bounded_number_of_statements_whatever_its_size(
    tmp_path: Path,
    redis_url: str,
    example: dict[str, Any],
    store_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    """The statement count of one order decision is bounded, on both backends, and does not grow
    with its actions: the audit entries and action-log rows of an execution go in one statement each
    (their dedup keys in one look-up), an entry's insert is its own dedup check."""
    scenario = copy.deepcopy(example)
    scenario["events"] = []
    stack = make_stack(tmp_path, redis_url, scenario, database_url=store_url)
    store = stack.container.store
    try:
        _decide_order(stack, "SO-0", [("SKU-100", 1)])  # the first order of a worker warms it up
        small, small_commits = _decide_order(stack, "SO-1", [("SKU-100", 1)])
        large, large_commits = _decide_order(stack, "SO-2", [("SKU-100", 2), ("SKU-301", 1), ("SKU-300", 1)])
        [decision] = store.list_decisions(subject="SO-2")
        assert len(decision.actions) > len(store.list_decisions(subject="SO-1")[0].actions) + 1
        assert small.count <= ORDER_STATEMENTS[store.dialect], small.report()
        assert large.count == small.count, f"{small.report()}\n---\n{large.report()}"
        assert small_commits.count == large_commits.count == 2
        check = store.verify_audit()
        assert check.ok, check
    finally:
        close_stack(stack)


def test_an_autonomous_order_release_costs_at_most_two_write_transactions(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example)
    store = stack.container.store
    try:
        stack.publish(order_event("SO-1", [("SKU-100", 4), ("SKU-200", 1)]))
        commits = Commits(store)
        try:
            stack.drain()
        finally:
            commits.close()
        [decision] = store.list_decisions()
        assert decision.status == "executed" and len(decision.actions) == 4
        # The event, the decision, their audit entries and the event kept with its reads
        # (``record_reads``, on by default); the execution (action log, the final transition, audit).
        assert commits.count <= 2, commits.count
        kinds = [e.kind for e in store.audit()]
        assert kinds == ["event.accepted", "decision.recorded", *["action.executed"] * 4, "decision.executed"]
        logged = [e.payload["idempotency_key"] for e in store.audit(kind="action.executed")]
        assert logged == [a.idempotency_key for a in decision.actions]  # in apply order
        assert [a["idempotency_key"] for a in store.actions_of(decision.id)] == logged
        check = store.verify_audit()
        assert (check.ok, check.entries, check.sealed_seq) == (True, 7, 7), check
    finally:
        close_stack(stack)


def test_a_batch_shares_one_transaction_and_its_seals_reach_the_file_in_order(store: Store) -> None:
    commits = Commits(store)
    try:
        with store.batch() as batch:
            batch.audit_when_open("event.accepted", "SO-1", "source:test", {"n": 0}, dedup_key="event:1")
            assert store.audit() == []  # nothing opened yet: a batch that has only read takes no lock
            store.record_action("k-1", "dec-1", "oms.allocate", {"ok": True})
            for i in range(1, 4):
                store.append_audit("action.executed", "SO-1", "engine", {"n": i})
            # Reads inside the batch see its writes.
            assert [e.payload["n"] for e in store.audit()] == [0, 1, 2, 3]
            assert store.action_done("k-1")
    finally:
        commits.close()
    assert commits.count == 1
    check = store.verify_audit()
    assert (check.ok, check.entries, check.sealed_seq) == (True, 4, 4), check
    assert store.sealer.file is not None
    assert [s.seq for s in store.sealer.file_seals()] == [1, 2, 3, 4]


def test_a_batch_that_raises_leaves_nothing_behind_not_even_a_seal(store: Store) -> None:
    store.append_audit("before", "s", "a", {})
    with pytest.raises(RuntimeError, match="boom"), store.batch():
        store.record_action("k-1", "dec-1", "oms.allocate", {})
        store.append_audit("inside", "s", "a", {})
        raise RuntimeError("boom")
    assert not store.action_done("k-1")
    assert [e.kind for e in store.audit()] == ["before"]
    assert [s.seq for s in store.sealer.file_seals()] == [1]
    store.append_audit("after", "s", "a", {})
    check = store.verify_audit()
    assert (check.ok, check.entries) == (True, 2), check


def test_batches_from_four_threads_keep_each_batch_consecutive_and_the_chain_verifies(store: Store) -> None:
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            for b in range(5):
                with store.batch():
                    for i in range(3):
                        store.append_audit("t", f"{tag}-{b}", tag, {"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    entries = store.audit(limit=1000)
    assert [e.seq for e in entries] == list(range(1, 61))
    for start in range(0, 60, 3):  # each batch's three entries are consecutive, in order
        group = entries[start : start + 3]
        assert len({e.subject for e in group}) == 1 and [e.payload["i"] for e in group] == [0, 1, 2]
    check = store.verify_audit()
    assert (check.ok, check.entries, check.sealed_seq) == (True, 60, 60), check


def test_an_execution_that_died_before_logging_is_resumed_once_without_a_false_stock_conflict(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    """The state a worker killed mid-execution leaves (its log is written at the end): the decision
    ``executing``, its allocations of the last SKU-200 units applied in the OMS, none logged. The
    resume's stock check sees nothing pickable, but the order already holds the units: it resumes
    (the systems dedupe on the keys) instead of failing with the units leaked. A real SIGKILL
    mid-execution is ``test_resilience``'s."""
    scenario = copy.deepcopy(example)
    scenario["events"] = []
    stack: Stack = make_stack(tmp_path, redis_url, scenario)
    store, pipeline = stack.container.store, stack.container.pipeline
    try:
        pickable = {s.node: s.pickable for s in stack.state.stock("SKU-200")}["DC-EAST"]
        body = order_event("SO-9", [("SKU-200", pickable)], allow_split=False)
        stack.state.apply_event(body)
        event = CloudEvent.model_validate(body)
        policy = store.get_policy()
        specialist = route(event.type, policy)
        proposals = specialist.propose(event, pipeline.systems)
        [decision] = pipeline._record("job-9", event, proposals, specialist, policy, datetime.now(UTC), 0)
        assert decision.status == "executing"
        allocations = [a for a in decision.actions if a.name == "oms.allocate"]
        assert allocations and sum(float(a.payload["qty"]) for a in allocations) == pickable
        for action in allocations:  # what the dead worker did before it died
            stack.state.apply(action)
        assert store.actions_of(decision.id) == []
        done = pipeline.decisions.execute(decision, "crossdock-resume", verify_stock=True)
        assert done.status == "executed", done.error
        counts = {a["idempotency_key"]: a["count"] for a in stack.state.applied_actions()}
        assert len(counts) == len(decision.actions) and set(counts.values()) == {1}
        assert stack.state.export_state()["oversells"]["count"] == 0
        logged = [a["idempotency_key"] for a in store.actions_of(decision.id)]
        assert logged == [a.idempotency_key for a in decision.actions]
        assert store.verify_audit().ok
    finally:
        close_stack(stack)


def test_inside_an_open_batch_an_entry_whose_key_is_known_is_returned_and_the_chain_goes_on(store: Store) -> None:
    first = store.append_audit("decision.recorded", "SO-1", "engine", {"n": 1}, dedup_key="decision:1")
    with store.batch():
        store.append_audit("other", "SO-1", "engine", {"n": 2})  # opens the batch: it holds the head
        again = store.append_audit("decision.recorded", "SO-1", "engine", {"n": 3}, dedup_key="decision:1")
        after = store.append_audit("other", "SO-1", "engine", {"n": 4}, dedup_key="other:1")
    assert again == first
    assert after.seq == 3 and [e.payload["n"] for e in store.audit()] == [1, 2, 4]
    check = store.verify_audit()
    assert (check.ok, check.entries, check.sealed_seq) == (True, 3, 3), check
    assert [s.seq for s in store.sealer.file_seals()] == [1, 2, 3]


def test_append_audits_looks_the_keys_up_once_and_inserts_the_new_entries_in_one_statement(store: Store) -> None:
    known = store.append_audit("action.executed", "SO-1", "engine", {"n": 0}, dedup_key="action:k-0")
    statements = Statements(store)
    try:
        with store.batch():
            store.record_actions([(f"k-{i}", "dec-1", "oms.allocate", {"i": i}) for i in range(1, 4)])
            out = store.append_audits(
                [
                    {"kind": "action.executed", "subject": "SO-1", "actor": "e", "payload": {"n": 1}, "dedup_key": k}
                    for k in ("action:k-0", "action:k-1", "action:k-2", "action:k-1")
                ]
                + [{"kind": "decision.executed", "subject": "SO-1", "actor": "e", "payload": {"n": 5}}]
            )
    finally:
        statements.close()
    assert out[0] == known and out[3] == out[1]
    assert [e.seq for e in out] == [1, 2, 3, 2, 4]
    assert [e.payload["n"] for e in store.audit()] == [0, 1, 1, 5]
    on_the_log = [t for t in statements.texts if "audit_log" in t]
    assert len(on_the_log) == 2, statements.report()  # one look-up, one insert
    assert [a["idempotency_key"] for a in store.actions_of("dec-1")] == ["k-1", "k-2", "k-3"]  # in list order
    check = store.verify_audit()
    assert (check.ok, check.entries, check.sealed_seq) == (True, 4, 4), check
    assert [s.seq for s in store.sealer.file_seals()] == [1, 2, 3, 4]


def test_an_order_decision_reads_its_order_once_and_keeps_it_as_its_facts(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    """The facts a decision that runs at once keeps (its order, to restore its status if undone)
    come from the order its proposal read in the same job, not from a second request."""
    scenario = copy.deepcopy(example)
    scenario["events"] = []
    stack = make_stack(tmp_path, redis_url, scenario)
    oms = stack.container.pipeline.systems.oms
    read = oms.order
    reads: list[str] = []

    def counted(order_id: str) -> Any:
        reads.append(order_id)
        return read(order_id)

    oms.order = counted  # type: ignore[method-assign]  # the real port, its calls counted
    try:
        stack.publish(order_event("SO-1", [("SKU-100", 4), ("SKU-200", 1)]))
        stack.drain()
        [decision] = stack.container.store.list_decisions()
        assert decision.status == "executed"
        assert reads == ["SO-1"]
        fact = decision.facts["orders"]["SO-1"]
        assert fact["status"] == "open" and [line[:3] for line in fact["lines"]] == [
            [1, "SKU-100", 4.0],
            [2, "SKU-200", 1.0],
        ]
    finally:
        close_stack(stack)
