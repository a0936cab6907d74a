"""Shared helpers for the agent tests: recording systems and proposal JSON."""

from __future__ import annotations

import json
from typing import Any

from bench.agents_eval import READS_BY_TOOL, recording_systems  # noqa: F401 - shared with the eval


def port_calls(systems: Any) -> set[str]:
    """``port.method`` of every call made on the systems' ports."""
    out = set()
    for port in ("wms", "erp", "oms", "notify"):
        for call in getattr(systems, port).method_calls:
            out.add(f"{port}.{call[0].split('.')[0]}")
    return out


def proposal_json(**overrides: Any) -> str:
    body: dict[str, Any] = {
        "workflow": "customer_service",
        "subject": "SO-1",
        "outcome": "notify",
        "confidence": 0.9,
        "rationale": "The order is held for stock; the customer gets a ticket follow-up.",
        "cost_impact": 0.0,
        "actions": [
            {
                "system": "notify",
                "type": "ticket",
                "payload": {"team": "cs", "subject": "SO-1", "summary": "held for stock", "refs": ["SO-1"]},
            }
        ],
    }
    body.update(overrides)
    return json.dumps(body)
