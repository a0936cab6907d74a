"""Conversations kept in Redis (JSON per conversation, with a TTL) so follow-ups resolve.

A request the chat restated waits in its conversation (``Conversation.pending``) for a yes in the
next message, for at most ``PENDING_TTL_S``; any other message drops it.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal, Protocol

from pydantic import BaseModel

DEFAULT_TTL_S = 24 * 3600
MAX_TURNS = 20
PENDING_TTL_S = 10 * 60


class KeyValue(Protocol):
    """The Redis commands a conversation store uses (``redis.Redis`` satisfies it)."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: str, ex: int | None = None) -> Any: ...


class Turn(BaseModel):
    message: str
    intent: str
    answer: str
    order_id: str | None = None
    lines: list[int] = []
    decision_id: str | None = None


class Pending(BaseModel):
    """What the last answer offered to do, waiting for a yes in the next message.

    ``action``: a restated request (cancel, change, ...), done only after yes and only if it is
    still the same plan then. ``clarify``: "did you mean SO-100003?", where yes asks ``message``
    again with the suggested id."""

    kind: Literal["action", "clarify"]
    action: str | None = None
    order_id: str | None = None
    line: int | None = None
    qty: float | None = None
    detail: str = ""  # the request as the customer worded it
    summary: str = ""  # "cancel SO-4", for "OK, I won't cancel SO-4"
    plan: str = ""  # what yes would do (``plan_of``), compared again at the yes
    message: str | None = None  # clarify: the message to answer once confirmed
    words: list[str] = []  # words a yes may repeat ("yes, cancel it")
    turn: int = 0  # the turn that asked
    expires_at: float = 0.0  # epoch seconds


class Conversation(BaseModel):
    id: str
    owner: str | None = None  # the identity (a hash) of the API key that started it; None: older records
    customer_id: str | None = None
    order_id: str | None = None  # the order the conversation is about now
    lines: list[int] = []  # the lines the last answer talked about
    last_intent: str | None = None
    recent_orders: list[str] = []  # the orders the last answer was about when it named several
    pending: Pending | None = None  # what the last answer offered to do, waiting for a yes
    turns: list[Turn] = []

    @property
    def turn_count(self) -> int:
        return len(self.turns)


def new_id() -> str:
    return f"conv-{secrets.token_hex(8)}"


class ConversationStore:
    def __init__(self, kv: KeyValue, prefix: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.kv = kv
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, conversation_id: str) -> str:
        return f"{self.prefix}:chat:{conversation_id}"

    def load(self, conversation_id: str) -> Conversation | None:
        raw = self.kv.get(self.key(conversation_id))
        if raw is None:
            return None
        return Conversation.model_validate_json(raw)

    def save(self, conversation: Conversation) -> None:
        conversation.turns = conversation.turns[-MAX_TURNS:]
        self.kv.set(self.key(conversation.id), conversation.model_dump_json(), ex=self.ttl_s)


class MemoryKV:
    """An in-process stand-in for Redis (unit tests, the naive baseline)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def set(self, name: str, value: str, ex: int | None = None) -> Any:
        self.data[name] = value
        return True
