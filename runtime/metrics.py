"""Prometheus metrics shared by the API and the workers of one process.

Counters and histograms count what this process did. The gauges (queue, reviews, dead letters,
decisions by status) describe the shared state in Redis and the store; ``refresh`` sets them when
``GET /metrics`` is scraped, so every instance reports the same truth.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("crossdock_events_total", "Events posted to intake, by result", ["result"])
JOBS = Counter("crossdock_jobs_total", "Jobs settled by workers, by status", ["status"])
DECISIONS = Counter("crossdock_decisions_total", "Decisions recorded", ["workflow", "outcome", "status"])
DECISION_LATENCY = Histogram(
    "crossdock_decision_latency_seconds",
    "Event accepted by the API to decision recorded",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS = Counter("crossdock_actions_total", "Actions executed through connectors", ["action", "result"])

HTTP_REQUESTS = Counter(
    "crossdock_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "crossdock_http_request_duration_seconds",
    "HTTP request latency, by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter("crossdock_rate_limited_total", "Requests refused with 429, by limit", ["kind"])

QUEUE_DEPTH = Gauge("crossdock_queue_depth", "Jobs on the stream (waiting or in flight) plus jobs waiting to retry")
QUEUE_RETRYING = Gauge("crossdock_queue_retrying", "Jobs waiting for their next attempt")
QUEUE_OLDEST_AGE = Gauge(
    "crossdock_queue_oldest_age_seconds", "Age of the oldest job still queued, in flight or retrying (0: none)"
)
LANE_DEPTH = Gauge("crossdock_queue_lane_depth", "Jobs waiting, in flight or retrying, per lane", ["lane"])
LANE_OLDEST_AGE = Gauge(
    "crossdock_queue_lane_oldest_age_seconds", "Age of the lane's oldest unfinished job (0: none)", ["lane"]
)
DEAD_LETTERS = Gauge("crossdock_dead_letters", "Jobs in the dead-letter stream (failed every attempt)")
PENDING_REVIEWS = Gauge("crossdock_pending_reviews", "Decisions waiting for a planner (pending_review)")
PENDING_REVIEW_OLDEST_AGE = Gauge(
    "crossdock_pending_review_oldest_age_seconds", "Age of the oldest decision waiting for review (0: none)"
)
AWAITING_PLANNER = Gauge("crossdock_awaiting_planner", "Orders a planner must decide (awaiting_planner)")
DECISIONS_BY_STATUS = Gauge(
    "crossdock_decisions_by_status", "Decisions in the store, by their current status", ["status"]
)
SCRAPE_ERRORS = Counter("crossdock_metrics_refresh_errors_total", "Gauges that could not be read at scrape", ["source"])


def decision_figures(store: Any) -> dict[str, tuple[int, Any]]:
    """status -> (count, oldest created_at) over the store's decisions, in one query."""
    table = store.decisions
    stmt = sa.select(table.c.status, sa.func.count(), sa.func.min(table.c.created_at)).group_by(table.c.status)
    with store.engine.connect() as conn:
        return {str(status): (int(n), oldest) for status, n, oldest in conn.execute(stmt)}


def refresh(queue: Any, store: Any, now: float | None = None) -> None:
    """Set the gauges from Redis and the store; a source that fails leaves its gauges as they were
    and counts a refresh error (the scrape itself still answers)."""
    now = time.time() if now is None else now
    try:
        stats = queue.stats(now)
        QUEUE_DEPTH.set(stats["depth"])
        QUEUE_RETRYING.set(stats["retrying"])
        QUEUE_OLDEST_AGE.set(stats["oldest_age_s"] or 0)
        DEAD_LETTERS.set(stats["dead"])
        for lane, figures in stats["lanes"].items():
            LANE_DEPTH.labels(lane=lane).set(figures["depth"])
            LANE_OLDEST_AGE.labels(lane=lane).set(figures["oldest_age_s"] or 0)
    except Exception:  # noqa: BLE001 - a scrape must answer even when Redis is down
        SCRAPE_ERRORS.labels(source="redis").inc()
    try:
        figures = decision_figures(store)
    except Exception:  # noqa: BLE001 - likewise for the store
        SCRAPE_ERRORS.labels(source="store").inc()
        return
    DECISIONS_BY_STATUS.clear()
    for status, (count, _) in figures.items():
        DECISIONS_BY_STATUS.labels(status=status).set(count)
    pending, oldest = figures.get("pending_review", (0, None))
    PENDING_REVIEWS.set(pending)
    PENDING_REVIEW_OLDEST_AGE.set(_age(oldest, now))
    AWAITING_PLANNER.set(figures.get("awaiting_planner", (0, None))[0])


def _age(oldest: Any, now: float) -> float:
    """Seconds since ``oldest`` (a datetime, naive read as UTC, or its ISO text); 0 for none."""
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    if not isinstance(oldest, datetime):
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, now - float(oldest.timestamp()))
