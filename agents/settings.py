"""Agent settings (``CROSSDOCK_LLM_*``, ``CROSSDOCK_AGENT_*``) and the LLM mode the product runs in.

No CrewAI import here: ``llm_mode()`` is cheap enough for ``/readyz`` and startup logs.
Credentials are never settings: the model's client reads its provider's own variables
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...) from the environment.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSDOCK_", extra="ignore")

    llm_model: str | None = Field(default=None, description="any litellm model string; unset = deterministic mode")
    llm_base_url: str | None = None
    # The model gateway (agents.gateway): a model per role ("customer_service=openai/small,triage_supervisor=..."),
    # tried in order with the fallbacks ("openai/other,anthropic/...") when a call fails.
    llm_models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="role=model aliases; unset roles: llm_model"
    )
    llm_fallbacks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="models tried in order when a call fails"
    )
    # The model's context window in tokens; unset: litellm's model info, else 8,192. Prompts are fitted to it.
    llm_context_tokens: int | None = Field(default=None, gt=0)
    # litellm counts tokens with a generic tokenizer (cl100k) when it does not know the model's; a model
    # whose own tokenizer makes more tokens of the same text (SmolLM2: about 1.4x) needs this factor.
    # The gateway corrects it from each call's reported usage as it goes.
    llm_token_ratio: float = Field(default=1.0, gt=0)
    # Tokens kept free for the model's answer when a prompt is fitted to the context.
    llm_reserve_tokens: int = Field(default=768, gt=0)
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

    @field_validator("llm_models", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, str):  # CROSSDOCK_LLM_MODELS="role=model,role=model"
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("llm_fallbacks", mode="before")
    @classmethod
    def _fallbacks(cls, value: Any) -> Any:
        if isinstance(value, str):  # CROSSDOCK_LLM_FALLBACKS="model,model"
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_model and self.llm_model.strip())


def llm_mode(settings: AgentSettings | None = None) -> dict[str, Any]:
    """``{"mode": "deterministic"}`` or ``{"mode": "llm", "model": ...}``, for /readyz and logs."""
    settings = settings or AgentSettings()
    if not settings.llm_enabled:
        return {"mode": "deterministic"}
    return {"mode": "llm", "model": settings.llm_model}
