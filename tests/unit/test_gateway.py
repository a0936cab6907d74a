"""The model gateway (agents/gateway.py): role aliases, fallbacks, no client retries, accounting,
fitting data to a context. litellm's completion is replaced: nothing here reaches a provider."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agents.gateway import Gateway, ModelNotConfigured, reply_of
from agents.prompts import fit_data
from agents.settings import AgentSettings


def _response(text: str, prompt: int = 120, completion: int = 8) -> Any:
    message = SimpleNamespace(content=text, tool_calls=None)
    usage = SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion)
    return SimpleNamespace(choices=[SimpleNamespace(message=message)], usage=usage)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from agents import gateway

    seen: list[dict[str, Any]] = []

    def completion(**kwargs: Any) -> Any:
        seen.append(kwargs)
        if kwargs["model"] == "openai/broken":
            raise RuntimeError("provider down")
        return _response('{"answer": "ok"}')

    monkeypatch.setattr(gateway._litellm(), "completion", completion)
    return seen


def test_aliases_per_role_and_environment_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSDOCK_LLM_MODEL", "openai/main")
    monkeypatch.setenv("CROSSDOCK_LLM_MODELS", "customer_service=openai/small, triage_supervisor=openai/big")
    monkeypatch.setenv("CROSSDOCK_LLM_FALLBACKS", "openai/spare,openai/main")
    gw = Gateway(AgentSettings())
    assert gw.model_for("customer_service") == "openai/small"
    assert gw.model_for("allocation") == "openai/main"
    assert gw.chain("triage_supervisor") == ["openai/big", "openai/spare", "openai/main"]


def test_a_failing_model_falls_back_with_its_reason_and_no_client_retries(calls: list[dict[str, Any]]) -> None:
    settings = AgentSettings(
        llm_model="openai/broken",
        llm_fallbacks=["openai/spare"],
        llm_base_url="http://127.0.0.1:9/v1",
        llm_input_cost_per_mtok=1.0,
        llm_output_cost_per_mtok=2.0,
        llm_reserve_tokens=256,
    )
    gw = Gateway(settings)
    response, call = gw.complete([{"role": "user", "content": "hi"}], role="allocation", timeout=7)
    assert reply_of(response) == '{"answer": "ok"}'
    assert [c["model"] for c in calls] == ["openai/broken", "openai/spare"]
    assert all(c["num_retries"] == 0 and c["max_retries"] == 0 and c["timeout"] == 7 for c in calls)
    assert all(c["max_tokens"] == 256 and c["api_base"] == "http://127.0.0.1:9/v1" for c in calls)
    failed, ok = gw.ledger.calls
    assert failed.error and "provider down" in failed.error
    assert (ok.fallback_from, ok.prompt_tokens, ok.completion_tokens) == ("openai/broken", 120, 8)
    assert ok.cost_usd == pytest.approx(120e-6 + 16e-6) and ok.priced
    totals = gw.ledger.totals(gw.ledger.calls)
    assert (totals["calls"], totals["errors"], totals["fallbacks"]) == (2, 1, 1)


def test_every_model_failing_raises_the_last_error(calls: list[dict[str, Any]]) -> None:
    gw = Gateway(AgentSettings(llm_model="openai/broken", llm_base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(RuntimeError, match="provider down"):
        gw.complete([{"role": "user", "content": "hi"}])


def test_a_missing_provider_key_is_refused_before_any_request(
    calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelNotConfigured, match="OPENAI_API_KEY"):
        Gateway(AgentSettings(llm_model="openai/gpt-4o-mini")).complete([{"role": "user", "content": "hi"}])
    assert calls == []


def test_the_token_ratio_is_learnt_from_reported_usage(calls: list[dict[str, Any]]) -> None:
    gw = Gateway(AgentSettings(llm_model="openai/spare", llm_base_url="http://127.0.0.1:9/v1"))
    messages = [{"role": "user", "content": "word " * 60}]
    raw = gw.count_tokens(messages)
    gw.complete(messages)  # the server reports 120 prompt tokens
    assert gw.ratio("openai/spare") == pytest.approx(120 / raw)
    assert gw.count_tokens(messages) == 120


def test_data_is_trimmed_by_whole_records_least_relevant_first() -> None:
    data = {
        "order": {"id": "SO-1", "note": "x"},
        "engine_proposals": [{"subject": "SO-1", "n": i} for i in range(3)],
        "history": [{"subject": f"SO-{9 + i}", "text": "y" * 40} for i in range(5)],
    }

    def count(d: Any) -> int:
        import json

        return len(json.dumps(d)) // 4

    fitted, dropped, size = fit_data(data, ["SO-1"], 80, count)
    assert size <= 80
    # records naming none of the subjects go first (SO-10 is not SO-1), the last of them first
    assert dropped["history"] == 5 or "engine_proposals" not in dropped
    assert dropped.get("history", 0) >= 1
    for record in fitted["history"]:
        assert record in data["history"]  # never cut mid-record
    assert fitted["_trimmed"]["records_dropped"] == dropped
    same, none, _ = fit_data(data, ["SO-1"], 10_000, count)
    assert none == {} and same == data
