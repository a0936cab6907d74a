"""What an agent's tokens cost, so a run can be held to a dollar budget.

Prices come from the settings (``CROSSDOCK_LLM_INPUT_COST_PER_MTOK`` and
``CROSSDOCK_LLM_OUTPUT_COST_PER_MTOK``) when given, else from litellm's price list, which
Crossdock always reads from the copy bundled with litellm (``LITELLM_LOCAL_MODEL_COST_MAP``),
never from the network. A model with no known price gets ``None``: the run is then bounded by
tokens only, and the runtime says so in its audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.settings import AgentSettings
from domain.extras import needs
from tools.offline import apply_offline_env


@dataclass(frozen=True)
class TokenPrices:
    input_per_token: float
    output_per_token: float
    source: str  # "settings" or "litellm"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return max(0, prompt_tokens) * self.input_per_token + max(0, completion_tokens) * self.output_per_token


def token_prices(model: str, settings: AgentSettings | None = None) -> TokenPrices | None:
    """The price of one input and one output token of ``model`` in US dollars, or None if unknown."""
    settings = settings or AgentSettings()
    given_in, given_out = settings.llm_input_cost_per_mtok, settings.llm_output_cost_per_mtok
    if given_in is not None or given_out is not None:
        return TokenPrices((given_in or 0.0) / 1e6, (given_out or 0.0) / 1e6, "settings")
    apply_offline_env()
    with needs("agents"):
        import litellm  # lazy: 3-4 s to import; only the LLM path pays it

    litellm.suppress_debug_info = True  # an unknown provider otherwise prints a banner to stdout
    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - litellm raises a bare Exception for a model it does not know
        return None
    price_in, price_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if price_in is None and price_out is None:
        return None
    return TokenPrices(float(price_in or 0.0), float(price_out or 0.0), "litellm")
