"""Shared helpers for the agent tests: recording systems and proposal JSON."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import MagicMock

# Which port methods each read tool may call.
READS_BY_TOOL: dict[str, set[str]] = {
    "read_order": {"oms.order"},
    "read_stock": {"wms.stock"},
    "read_books": {"erp.sku", "erp.book_stock", "erp.planned_supply"},
    "read_waves": {"wms.waves"},
    "held_orders": {"oms.orders"},
    "substitutes_of": {"erp.sku"},
    "search_knowledge": set(),
}


def recording_systems() -> Any:
    """Systems whose ports are mocks: every call is recorded; reads answer small JSON-able values."""
    systems = MagicMock()
    systems.oms.order.side_effect = lambda order_id: {"id": order_id, "status": "held", "lines": []}
    systems.wms.stock.side_effect = lambda sku: [{"node": "DC-EAST", "sku": sku, "pickable": 3}]
    systems.wms.waves.return_value = []
    systems.oms.orders.return_value = []
    return systems


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
