"""Prometheus metrics shared by the API and the workers of one process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter("crossdock_events_total", "Events posted to intake, by result", ["result"])
JOBS = Counter("crossdock_jobs_total", "Jobs settled by workers, by status", ["status"])
DECISIONS = Counter("crossdock_decisions_total", "Decisions recorded", ["workflow", "outcome", "status"])
DECISION_LATENCY = Histogram(
    "crossdock_decision_latency_seconds",
    "Event accepted by the API to decision recorded",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS = Counter("crossdock_actions_total", "Actions executed through connectors", ["action", "result"])
