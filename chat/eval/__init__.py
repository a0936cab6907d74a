"""The chat's realistic evaluation set (``realistic.yaml``), kept apart from the rules' unit tests.

``crossdock bench chat`` resolves each conversation against a replayed scenario and asks it over
HTTP (``bench.chat.realistic_questions``); this module only reads and validates the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, Field, field_validator

REALISTIC = Path(__file__).with_name("realistic.yaml")
Expect = Literal["answer", "offer", "act", "refuse", "decline"]
Slot = Literal["waved", "waved_multi", "unwaved", "unwaved_multi", "held", "split", "cancelled"]


class Turn(BaseModel):
    say: str = Field(min_length=1)
    expect: Expect
    intent: list[str] = []
    has: list[str] = []
    lacks: list[str] = []

    @field_validator("intent", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class EvalConversation(BaseModel):
    id: str
    slot: str | None = None  # "waved", "waved#3": the fourth order of that kind
    as_: Literal["customer", "rep", "planner"] = Field(default="customer", alias="as")
    turns: list[Turn] = Field(min_length=1)

    @property
    def slot_kind(self) -> Slot | None:
        return self.slot.split("#", 1)[0] if self.slot else None  # type: ignore[return-value]

    @property
    def slot_index(self) -> int:
        return int(self.slot.split("#", 1)[1]) if self.slot and "#" in self.slot else 0

    @property
    def acts(self) -> bool:
        return any(t.expect == "act" for t in self.turns)

    @field_validator("slot")
    @classmethod
    def _known_slot(cls, value: str | None) -> str | None:
        if value is not None:
            kind, _, index = value.partition("#")
            if kind not in get_args(Slot) or (index and not index.isdigit()):
                raise ValueError(f"unknown slot {value!r}")
        return value


class EvalSet(BaseModel):
    conversations: list[EvalConversation]


def load_realistic(path: Path = REALISTIC) -> list[EvalConversation]:
    """The conversations of the realistic set, validated."""
    return EvalSet.model_validate(yaml.safe_load(path.read_text())).conversations
