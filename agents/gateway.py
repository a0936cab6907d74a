"""One model gateway on litellm for every model call Crossdock makes (agents, crew managers, the chat writer).

- **Aliases per role**: ``CROSSDOCK_LLM_MODELS="customer_service=openai/small,..."``; a role with no
  alias uses ``CROSSDOCK_LLM_MODEL``. ``CROSSDOCK_LLM_BASE_URL`` is the api base of every call.
- **Fallbacks**: ``CROSSDOCK_LLM_FALLBACKS`` are tried in order when a call fails; each fallback is
  recorded with its reason (``Ledger.calls``) so the caller can audit it.
- **Timeouts and retries**: each call's timeout is the agent's wall-time bound; the client's own
  retries are off (``num_retries=0``, ``max_retries=0``): the queue owns retries, so every attempt
  is audited.
- **Accounting**: prompt and completion tokens per call (the provider's usage, else litellm's
  token counter), dollars from litellm's cost functions (the settings' prices win when given; a
  model litellm does not price costs 0 and is marked unpriced), latency.
- **Context**: ``context_window`` (``CROSSDOCK_LLM_CONTEXT_TOKENS``, else litellm's model info, else
  8,192) and ``count_tokens`` (litellm's counter, offline) let prompts be fitted before a call.

Importing this module imports neither litellm nor CrewAI; ``GatewayLLM`` (a CrewAI ``BaseLLM``)
comes from :func:`gateway_llm`, which imports CrewAI.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from agents.settings import AgentSettings
from domain.extras import needs
from tools.offline import apply_offline_env

DEFAULT_CONTEXT_TOKENS = 8_192


@cache
def _litellm() -> Any:
    apply_offline_env()
    with needs("agents"):
        import litellm  # lazy: 3-4 s to import; only the LLM path pays it

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


class ModelNotConfigured(ValueError):
    """The model's provider needs credentials the environment does not hold (checked before any request)."""


@dataclass
class Call:
    """One model call as the gateway saw it."""

    role: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = False
    latency_s: float = 0.0
    error: str | None = None
    fallback_from: str | None = None  # the model that failed before this one was tried
    fallback_reason: str | None = None


@dataclass
class Ledger:
    """Every call through one gateway: tokens, dollars, latency, errors, fallbacks (thread-safe)."""

    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def mark(self) -> int:
        with self._lock:
            return len(self.calls)

    def since(self, mark: int) -> list[Call]:
        with self._lock:
            return list(self.calls[mark:])

    @staticmethod
    def totals(calls: list[Call]) -> dict[str, Any]:
        ok = [c for c in calls if c.error is None]
        return {
            "calls": len(calls),
            "errors": len(calls) - len(ok),
            "fallbacks": sum(1 for c in calls if c.fallback_from),
            "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "cost_usd": round(sum(c.cost_usd for c in calls), 6),
            "priced": all(c.priced for c in ok) if ok else False,
        }


class Gateway:
    """Model choice, fallbacks, token counting, context windows and cost, from the agent settings."""

    def __init__(self, settings: AgentSettings | None = None, *, ledger: Ledger | None = None) -> None:
        self.settings = settings or AgentSettings()
        self.ledger = ledger or Ledger()
        # Per model: the model's tokens per litellm-counted token, learnt from reported usage.
        self._ratio: dict[str, float] = {}

    # -- models ---------------------------------------------------------------------------
    def model_for(self, role: str | None = None) -> str:
        """The model a role uses: its alias, else ``CROSSDOCK_LLM_MODEL``."""
        alias = self.settings.llm_models.get(role or "") if role else None
        model = alias or self.settings.llm_model
        if not model:
            raise RuntimeError("no CROSSDOCK_LLM_MODEL configured: deterministic mode")
        return model

    def chain(self, role: str | None = None) -> list[str]:
        """The role's model, then the fallbacks (each once)."""
        out = [self.model_for(role)]
        for m in self.settings.llm_fallbacks:
            if m not in out:
                out.append(m)
        return out

    def context_window(self, model: str | None = None) -> int:
        if self.settings.llm_context_tokens:
            return self.settings.llm_context_tokens
        try:
            info = _litellm().get_model_info(model or self.model_for())
        except Exception:  # noqa: BLE001 - a model litellm does not know
            return DEFAULT_CONTEXT_TOKENS
        return int(info.get("max_input_tokens") or info.get("max_tokens") or DEFAULT_CONTEXT_TOKENS)

    def count_tokens(self, messages: Any, tools: Any = None, model: str | None = None) -> int:
        """Tokens of a prompt (messages, plus tool schemas as the provider sees them), offline with
        litellm's counter, scaled by what the model's reported usage showed (``ratio``)."""
        model = model or self.model_for()
        return round(self._raw_count(messages, tools, model) * self.ratio(model))

    def ratio(self, model: str) -> float:
        return self._ratio.get(model, self.settings.llm_token_ratio)

    @staticmethod
    def _raw_count(messages: Any, tools: Any, model: str) -> int:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        n = int(_litellm().token_counter(model=model, messages=list(messages)))
        if tools:
            n += int(_litellm().token_counter(model=model, text=json.dumps(tools)))
        return n

    def _learn(self, model: str, messages: Any, tools: Any, reported: int) -> None:
        raw = self._raw_count(messages, tools, model)
        if raw > 50 and reported > 0:  # a ratio from a tiny prompt is mostly template noise
            self._ratio[model] = max(self.settings.llm_token_ratio, min(3.0, reported / raw))

    def check_credentials(self, role: str | None = None) -> None:
        """Raise ``ModelNotConfigured`` before any request when the role's model lacks its provider's
        key (a self-hosted server at ``CROSSDOCK_LLM_BASE_URL`` needs none)."""
        if self.settings.llm_base_url:
            return
        model = self.model_for(role)
        try:
            env = _litellm().validate_environment(model=model)
        except Exception:  # noqa: BLE001 - a provider litellm cannot check: let the call say
            return
        missing = env.get("missing_keys") or []
        if not env.get("keys_in_environment", True) and missing:
            raise ModelNotConfigured(
                f"{model}: set {', '.join(missing)} (the provider's key) or CROSSDOCK_LLM_BASE_URL"
            )

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> tuple[float, bool]:
        """Dollars for these tokens and whether the price is known (settings, else litellm's list)."""
        s = self.settings
        if s.llm_input_cost_per_mtok is not None or s.llm_output_cost_per_mtok is not None:
            return (
                prompt_tokens * (s.llm_input_cost_per_mtok or 0.0) / 1e6
                + completion_tokens * (s.llm_output_cost_per_mtok or 0.0) / 1e6,
                True,
            )
        try:
            p, c = _litellm().cost_per_token(
                model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        except Exception:  # noqa: BLE001 - unpriced model
            return 0.0, False
        return float(p) + float(c), True

    # -- calls ----------------------------------------------------------------------------
    def _kwargs(self, timeout: float) -> dict[str, Any]:
        # The answer is capped at the tokens kept free for it: a small model may otherwise ramble on.
        kwargs: dict[str, Any] = {
            "timeout": timeout,
            "num_retries": 0,
            "max_retries": 0,
            "max_tokens": self.settings.llm_reserve_tokens,
        }
        if self.settings.llm_base_url:
            kwargs["api_base"] = self.settings.llm_base_url
            # A self-hosted OpenAI-compatible server needs some key; it only goes to that base URL.
            if not os.environ.get("OPENAI_API_KEY"):
                kwargs["api_key"] = "sk-local"
        return kwargs

    def complete(
        self, messages: Any, *, role: str | None = None, tools: Any = None, timeout: float | None = None
    ) -> tuple[Any, Call]:
        """One completion through the role's model chain; returns (litellm response, its Call)."""
        litellm = _litellm()
        timeout = timeout if timeout is not None else self.settings.agent_max_seconds
        self.check_credentials(role)
        previous: tuple[str, str] | None = None
        last: BaseException | None = None
        for model in self.chain(role):
            call = Call(role=role or "", model=model)
            if previous is not None:
                call.fallback_from, call.fallback_reason = previous
            started = time.monotonic()
            try:
                kwargs = self._kwargs(timeout)
                if tools:
                    kwargs["tools"] = tools
                response = litellm.completion(model=model, messages=list(messages), **kwargs)
            except Exception as exc:  # noqa: BLE001 - recorded, then the next model (or re-raised)
                call.latency_s = time.monotonic() - started
                call.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self.ledger.add(call)
                previous, last = (model, call.error), exc
                continue
            call.latency_s = time.monotonic() - started
            usage = getattr(response, "usage", None)
            reported = int(getattr(usage, "prompt_tokens", 0) or 0)
            if reported:
                self._learn(model, messages, tools, reported)
            call.prompt_tokens = reported or self.count_tokens(messages, tools, model=model)
            call.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            call.cost_usd, call.priced = self.cost(model, call.prompt_tokens, call.completion_tokens)
            self.ledger.add(call)
            return response, call
        assert last is not None
        raise last


def reply_of(response: Any) -> Any:
    """What a CrewAI agent expects back: native tool calls as OpenAI-style dicts, else the text."""
    message = response.choices[0].message
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return [
            {
                "id": getattr(c, "id", None) or f"call_{n}",
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"},
            }
            for n, c in enumerate(calls)
        ]
    return message.content or ""


def gateway_llm(gateway: Gateway, role: str | None = None) -> Any:
    """A CrewAI model (``BaseLLM``) whose every call goes through ``gateway`` for ``role``."""
    from crews.agent_runtime import GatewayLLM  # CrewAI only on this path

    return GatewayLLM(model=gateway.model_for(role), gateway=gateway, role=role or "")
