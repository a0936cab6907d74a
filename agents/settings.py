"""Agent settings (``CROSSDOCK_LLM_*``, ``CROSSDOCK_AGENT_*``) and the LLM mode the product runs in.

No CrewAI import here: ``llm_mode()`` is cheap enough for ``/readyz`` and startup logs.
Credentials are never settings: the model's client reads its provider's own variables
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...) from the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSDOCK_", extra="ignore")

    llm_model: str | None = Field(default=None, description="any litellm model string; unset = deterministic mode")
    llm_base_url: str | None = None
    # Per agent run, enforced by code (crews.agent_runtime), never by the prompt.
    agent_max_seconds: float = Field(default=60.0, gt=0)
    # The chat's LLM rewrite (one call) has its own, shorter bound: a rep is waiting for the answer.
    chat_max_seconds: float = Field(default=10.0, gt=0)
    agent_max_tool_calls: int = Field(default=8, ge=0)
    agent_max_tokens: int = Field(default=20_000, gt=0)
    agent_max_cost_usd: float | None = Field(default=0.25, gt=0, description="dollars per agent run; unset: none")
    # Token prices in US dollars per million tokens. Unset: litellm's bundled price list for the
    # model (read offline); a model it does not know has no cost bound, only the token budget.
    llm_input_cost_per_mtok: float | None = Field(default=None, ge=0)
    llm_output_cost_per_mtok: float | None = Field(default=None, ge=0)
    agent_max_output_chars: int = Field(default=4_000, gt=0, description="cap on one tool result fed back")
    # An LLM's proposal waits for a human unless this is switched off (the gate still applies).
    agent_review_required: bool = True

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_model and self.llm_model.strip())


def llm_mode(settings: AgentSettings | None = None) -> dict[str, Any]:
    """``{"mode": "deterministic"}`` or ``{"mode": "llm", "model": ...}``, for /readyz and logs."""
    settings = settings or AgentSettings()
    if not settings.llm_enabled:
        return {"mode": "deterministic"}
    return {"mode": "llm", "model": settings.llm_model}
