"""The port agents search knowledge through; ``knowledge/`` provides the Qdrant implementation.

Only this Protocol is depended on here, so the agent tools work with any store that can answer
``search(query, k, **filters)`` with hit-like objects (a text, a score, a source, metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class HitLike(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def score(self) -> float: ...


@runtime_checkable
class KnowledgeSearch(Protocol):
    def search(self, query: str, k: int = 5, **filters: Any) -> Sequence[HitLike]: ...


@dataclass(frozen=True)
class Hit:
    text: str
    score: float
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class InMemoryKnowledge:
    """Word-overlap search over a few documents: for tests and for running without a knowledge base."""

    documents: list[Hit] = field(default_factory=list)

    def add(self, text: str, source: str = "", **metadata: Any) -> None:
        self.documents.append(Hit(text=text, score=0.0, source=source, metadata=metadata))

    def search(self, query: str, k: int = 5, **filters: Any) -> Sequence[HitLike]:
        words = {w for w in query.lower().split() if len(w) > 2}
        scored = []
        for doc in self.documents:
            if any(doc.metadata.get(key) != value for key, value in filters.items()):
                continue
            overlap = len(words & set(doc.text.lower().split()))
            if overlap:
                scored.append(Hit(doc.text, overlap / max(1, len(words)), doc.source, doc.metadata))
        scored.sort(key=lambda h: -h.score)
        return scored[:k]
