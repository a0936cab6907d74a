"""Decision history into the knowledge base: every executed or reviewed decision, as it settles.

``HistorySync.run_once`` follows the decision store by its change time (a keyset on
``updated_at, id``), turns each executed, failed or rejected decision into a ``history`` chunk
(its outcome, and whether a planner approved or overrode it) and upserts it: the point id is
the decision's, so a decision that changes again replaces its chunk.

Where it runs: in the process that owns the knowledge base. Qdrant local mode is one process
at a time, so ``crossdock serve`` runs the sync in a background thread beside the chat and the
agents that read the base; ``crossdock knowledge sync-history`` does one pass by hand (with the
server stopped, or against ``QDRANT_URL``).

The watermark (the last change ingested) is kept in Redis. Each pass starts a little before it
(``lag_s``) so that a decision committed late by another process is not skipped; what was
already ingested in that overlap is recognised and not embedded twice. Losing the watermark
costs one full pass, never a missed decision.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from domain.decisions import Decision

log = structlog.get_logger("crossdock.knowledge.history")

# Settled decisions: executed (by the engine, an agent's approved proposal, or a planner's
# approval), failed while executing, or rejected by a planner (an override).
SETTLED = ("executed", "failed", "rejected")


class DecisionFeed(Protocol):
    def decisions_updated_since(
        self, after: tuple[datetime, str] | None, statuses: Iterable[str], limit: int = 200
    ) -> list[tuple[Decision, datetime]]: ...


class HistoryIndex(Protocol):
    def ingest_decisions(self, decisions: Iterable[Decision]) -> int: ...


class KeyValue(Protocol):
    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: str) -> Any: ...


@dataclass
class HistorySync:
    kb: HistoryIndex
    store: DecisionFeed
    kv: KeyValue
    key: str  # the Redis key of the watermark, one per knowledge base
    page: int = 200
    lag_s: float = 30.0
    _seen: dict[str, datetime] = field(default_factory=dict)  # id -> change ingested, within the lag

    @classmethod
    def for_base(cls, kb: Any, store: DecisionFeed, kv: KeyValue, prefix: str, **kw: Any) -> HistorySync:
        location = str(getattr(kb, "location", "kb"))
        collection = str(getattr(kb, "collection", ""))
        return cls(kb, store, kv, f"{prefix}:kb:history:{collection}@{location}", **kw)

    def watermark(self) -> tuple[datetime, str] | None:
        raw = self.kv.get(self.key)
        if not raw:
            return None
        body = json.loads(raw)
        return datetime.fromisoformat(body["at"]), str(body["id"])

    def reset(self) -> None:
        """Forget the watermark: the next pass re-reads every settled decision (upserts are idempotent)."""
        self.kv.set(self.key, "")
        self._seen.clear()

    def run_once(self) -> int:
        """Ingest every decision settled since the last pass; returns how many chunks were written."""
        mark = self.watermark()
        cursor = None if mark is None else (mark[0] - timedelta(seconds=self.lag_s), "")
        written = 0
        while True:
            rows = self.store.decisions_updated_since(cursor, SETTLED, self.page)
            if not rows:
                break
            fresh = [d for d, at in rows if self._seen.get(d.id) != at]
            if fresh:
                written += self.kb.ingest_decisions(fresh)
            for d, at in rows:
                self._seen[d.id] = at
            last, at = rows[-1][0], rows[-1][1]
            cursor = (at, last.id)
            if mark is None or (at, last.id) > mark:
                mark = (at, last.id)
                self.kv.set(self.key, json.dumps({"at": at.isoformat(), "id": last.id}))
            if len(rows) < self.page:
                break
        if mark is not None:  # keep the overlap's memory only
            horizon = mark[0] - timedelta(seconds=self.lag_s)
            self._seen = {k: v for k, v in self._seen.items() if v >= horizon}
        if written:
            log.info("knowledge.history.synced", chunks=written)
        return written

    def run_forever(self, stop: threading.Event, every_s: float) -> None:
        """Sync every ``every_s`` seconds until ``stop`` is set; a failed pass is logged and retried."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the next pass retries; the server stays up
                log.warning("knowledge.history.sync_failed", error=f"{type(exc).__name__}: {exc}")
            stop.wait(every_s)
