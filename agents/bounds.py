"""Bounds on one agent run, enforced by code: wall time, tool calls, tokens, dollars, and a loop detector.

A ``RunGuard`` belongs to one agent run. The bounded model wrapper (``crews.agent_runtime``)
consults it before and after every model call and for every tool call the model asks for;
the scoped tools consult it again when they run. CrewAI turns a tool's exception into text for
the model, so a guard that trips stays tripped: the next model call raises, and the runtime
raises ``AgentBoundExceeded`` after the run whatever CrewAI did with the first exception.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Bound = Literal["wall_time", "tool_calls", "tokens", "cost", "loop", "scope", "cancelled", "context"]


class AgentBoundExceeded(RuntimeError):
    """An agent run hit a bound (or asked for a tool outside its scope); the run is stopped."""

    def __init__(self, bound: Bound, agent: str, detail: str) -> None:
        super().__init__(f"agent {agent}: {bound} bound exceeded: {detail}")
        self.bound = bound
        self.agent = agent
        self.detail = detail


class ToolScopeDenied(AgentBoundExceeded):
    """A tool was called by an agent whose scopes do not allow it."""

    def __init__(self, agent: str, tool: str, needed: str) -> None:
        super().__init__("scope", agent, f"tool {tool!r} needs {needed!r}")
        self.tool = tool


@dataclass(frozen=True)
class Bounds:
    max_seconds: float = 60.0
    max_tool_calls: int = 8
    max_tokens: int = 20_000
    # US dollars per run, priced from the model's token prices (``agents.pricing``); None: no cost bound.
    max_cost_usd: float | None = None


def estimate_tokens(value: Any) -> int:
    """About four characters per token: used when the model reports no usage."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return max(1, len(text) // 4)


AuditFn = Callable[[str, Mapping[str, Any]], None]


@dataclass
class RunGuard:
    agent: str
    scopes: frozenset[str]
    bounds: Bounds
    audit: AuditFn = lambda kind, data: None
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    tool_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    tripped: AgentBoundExceeded | None = None
    _seen: set[str] = field(default_factory=set)
    _announced: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.started = self.clock()

    # -- tripping -----------------------------------------------------------------------
    def trip(self, exc: AgentBoundExceeded) -> AgentBoundExceeded:
        with self._lock:
            first = self.tripped is None
            if first:
                self.tripped = exc
        if first:
            self.audit(
                "agent.scope_denied" if exc.bound == "scope" else "agent.bound_exceeded",
                {"agent": self.agent, "bound": exc.bound, "detail": exc.detail, **self.usage()},
            )
        return exc

    def raise_if_tripped(self) -> None:
        if self.tripped is not None:
            raise self.tripped

    def cancel(self, detail: str) -> AgentBoundExceeded:
        return self.trip(AgentBoundExceeded("wall_time", self.agent, detail))

    # -- checks -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.started

    def check_time(self) -> None:
        self.raise_if_tripped()
        if self.elapsed() > self.bounds.max_seconds:
            raise self.trip(
                AgentBoundExceeded("wall_time", self.agent, f"{self.elapsed():.2f}s > {self.bounds.max_seconds:g}s")
            )

    def add_tokens(self, n: int, cost_usd: float = 0.0) -> None:
        """Count one model call's tokens and what they cost; trips the token or the cost budget."""
        self.tokens += max(0, n)
        self.cost_usd += max(0.0, cost_usd)
        if self.tokens > self.bounds.max_tokens:
            raise self.trip(AgentBoundExceeded("tokens", self.agent, f"{self.tokens} > {self.bounds.max_tokens}"))
        limit = self.bounds.max_cost_usd
        if limit is not None and self.cost_usd > limit:
            raise self.trip(AgentBoundExceeded("cost", self.agent, f"${self.cost_usd:.4f} > ${limit:g}"))

    @staticmethod
    def _key(tool: str, args: Mapping[str, Any]) -> str:
        # An argument left out and the same argument given as null are one call: the tool
        # receives its schema's defaults filled in, the model's request does not carry them.
        given = {k: v for k, v in args.items() if v is not None}
        return f"{tool}:{json.dumps(given, sort_keys=True, default=str)}"

    def tool_call(self, tool: str, args: Mapping[str, Any], needed_scope: str | None) -> None:
        """Count one tool call the model asked for; refuse it when out of scope, over the count, or a repeat."""
        self.check_time()
        if needed_scope is None or not set(needed_scope.split()) <= self.scopes:
            raise self.trip(ToolScopeDenied(self.agent, tool, needed_scope or "<no such tool>"))
        key = self._key(tool, args)
        with self._lock:
            self._announced[key] = self._announced.get(key, 0) + 1
            repeat = key in self._seen
            self._seen.add(key)
            self.tool_calls += 1
            count = self.tool_calls
        if repeat:
            raise self.trip(AgentBoundExceeded("loop", self.agent, f"{tool} called twice with the same arguments"))
        if count > self.bounds.max_tool_calls:
            raise self.trip(
                AgentBoundExceeded("tool_calls", self.agent, f"{count} > {self.bounds.max_tool_calls} tool calls")
            )

    def tool_run(self, tool: str, args: Mapping[str, Any], needed_scope: str) -> None:
        """Checked by the tool itself as it runs: scope and time again, and counted here when the
        model wrapper did not already count this call (e.g. a text-format tool call)."""
        self.raise_if_tripped()
        key = self._key(tool, args)
        with self._lock:
            announced = self._announced.get(key, 0) > 0
            if announced:
                self._announced[key] -= 1
        if announced:
            self.check_time()
            if not set(needed_scope.split()) <= self.scopes:
                raise self.trip(ToolScopeDenied(self.agent, tool, needed_scope))
            return
        self.tool_call(tool, args, needed_scope)
        with self._lock:
            self._announced[key] -= 1

    def usage(self) -> dict[str, Any]:
        return {
            "tool_calls": self.tool_calls,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "llm_calls": self.llm_calls,
            "seconds": round(self.elapsed(), 3),
        }
