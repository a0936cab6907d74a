"""A scripted model: replays fixed replies (text, native tool calls, structured JSON) with no provider.

For tests and offline demos of the LLM path. Replies are queued per agent role (or in one shared
queue), so a multi-agent crew replays deterministically. A reply may be:
- a string (a final answer, e.g. an ``AgentProposal`` as JSON),
- a list of tool calls (``tool_call(name, **args)``),
- ``Slow(seconds, reply)``: sleep first (to test the wall-time bound),
- ``WithUsage(tokens, reply)``: report this many tokens used (to test the token budget).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from domain.extras import needs
from tools.offline import crewai_import

with needs("agents"), crewai_import():
    from crewai import BaseLLM
    from crewai.events.types.llm_events import LLMCallType
from pydantic import Field, PrivateAttr  # noqa: E402

_ids = itertools.count(1)


def tool_call(name: str, **args: Any) -> dict[str, Any]:
    """One OpenAI-style native tool call."""
    return {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


@dataclass(frozen=True)
class Slow:
    seconds: float
    reply: Any


@dataclass(frozen=True)
class WithUsage:
    tokens: int
    reply: Any


class ScriptedLLM(BaseLLM):
    """Replays replies; ``default`` answers when a queue runs dry (``None``: raise)."""

    model: str = "scripted/replay"
    script: dict[str, list[Any]] = Field(default_factory=dict)
    default: Any = None
    calls: list[dict[str, Any]] = Field(default_factory=list)
    _lock_free_counter: int = PrivateAttr(default=0)

    @classmethod
    def replaying(cls, *replies: Any, default: Any = None, **per_role: list[Any]) -> ScriptedLLM:
        script = {name.replace("_", " "): list(r) for name, r in per_role.items()}
        if replies:
            script["*"] = list(replies)
        return cls(model="scripted/replay", script=script, default=default)

    def supports_function_calling(self) -> bool:
        return True

    def _next(self, role: str | None) -> Any:
        """The next reply for the agent whose role contains a script key (``customer service``), else ``*``."""
        text = (role or "").lower()
        for key, queue in self.script.items():
            if key != "*" and key in text and queue:
                return queue.pop(0)
        if self.script.get("*"):
            return self.script["*"].pop(0)
        if self.default is not None:
            return self.default
        raise RuntimeError(f"scripted model: no reply left for {role!r}")

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        self._emit_call_started_event(messages=messages, tools=tools, from_task=from_task, from_agent=from_agent)
        role = getattr(from_agent, "role", None)
        reply = self._next(role)
        tokens = 0
        while isinstance(reply, Slow | WithUsage):
            if isinstance(reply, Slow):
                time.sleep(reply.seconds)
            else:
                tokens += reply.tokens
            reply = reply.reply
        if tokens:
            self._track_token_usage_internal({"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens})
        offered = [t.get("function", {}).get("name") for t in tools or [] if isinstance(t, dict)]
        self.calls.append({"role": role, "messages": messages, "tools": offered, "reply": reply})
        self._emit_call_completed_event(
            response=reply,
            call_type=LLMCallType.TOOL_CALL if isinstance(reply, list) else LLMCallType.LLM_CALL,
            from_task=from_task,
            from_agent=from_agent,
            messages=messages,
        )
        return reply

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)
