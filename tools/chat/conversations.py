"""Conversations kept in Redis (JSON per conversation, with a TTL) so follow-ups resolve."""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from pydantic import BaseModel

DEFAULT_TTL_S = 24 * 3600
MAX_TURNS = 20


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


class Conversation(BaseModel):
    id: str
    owner: str | None = None  # the identity (a hash) of the API key that started it; None: older records
    customer_id: str | None = None
    order_id: str | None = None  # the order the conversation is about now
    lines: list[int] = []  # the lines the last answer talked about
    last_intent: str | None = None
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
