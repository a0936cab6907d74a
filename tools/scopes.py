"""The scope each agent tool needs (no CrewAI import): the read tools of ``tools.context`` and knowledge search."""

from __future__ import annotations

from tools.context import SCOPES

KNOWLEDGE_SCOPE = "knowledge:read"

# Agent tool name -> the scopes it needs (space-separated, all required).
TOOL_SCOPES: dict[str, str] = {
    "read_order": SCOPES["read_order"],
    "read_stock": SCOPES["read_stock"],
    "read_books": SCOPES["read_books"],
    "read_waves": SCOPES["read_waves"],
    "held_orders": SCOPES["held_orders"],
    "substitutes_of": SCOPES["substitutes_of"],
    "search_knowledge": KNOWLEDGE_SCOPE,
}
