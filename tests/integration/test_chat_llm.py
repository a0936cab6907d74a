"""LLM mode over a generated scenario: the chat bench's question set, asked of the chat service on
the real stack (twin over HTTP, Redis, store, gate). Every template answer passes the claim check,
and a model that rewrites each answer faithfully gets every factual answer through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agents.settings import AgentSettings
from api.routes.chat import submit_through_gate
from bench.chat import DemoSops, _World, build_questions
from bench.replay import load_scenario
from chat.check import unsupported_claims
from chat.conversations import Conversation, new_id
from chat.service import ChatService, Outcome, chat_writer
from tests.integration.conftest import Stack, close_stack, make_stack
from twin.generator import generate


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[Stack, list[Any]]]:
    """A generated scenario replayed through the stack, and the bench's questions about it (once for
    the module: its tests only ask questions)."""
    scenario, events = load_scenario(generate(7, "small"))
    stack = make_stack(tmp_path_factory.mktemp("chat-llm"), redis_url, scenario.model_dump(mode="json"))
    try:
        stack.set_policy(**scenario.settings.model_dump(mode="json"))
        for event in events:  # one at a time, as the bench does: each is handled before the next lands
            assert stack.publish(event.model_dump(mode="json", exclude_none=True)).status_code == 202
            assert stack.drain() == 1
        world = _World(stack.state, stack.container.store.list_decisions(limit=1_000_000))
        yield stack, build_questions(world, DemoSops())
    finally:
        close_stack(stack)


def ask_all(stack: Stack, questions: list[Any], writer: Any = None) -> list[tuple[Any, Outcome]]:
    threads: dict[str, Conversation] = {}
    out = []
    for q in questions:
        service = ChatService(
            stack.container.systems,
            stack.container.store,
            knowledge=DemoSops(),
            submit=submit_through_gate(stack.container, q.role),
            policy=stack.container.store.get_policy,
            writer=writer,
        )
        conv = threads.get(q.thread) if q.thread else None
        if conv is None:
            conv = Conversation(id=new_id(), customer_id=q.customer_id)
            if q.thread:
                threads[q.thread] = conv
        out.append((q, service.respond(conv, q.message, q.role)))
    return out


def test_every_template_answer_over_the_bench_questions_passes_the_check(generated: tuple[Stack, list[Any]]) -> None:
    stack, questions = generated
    answered = ask_all(stack, questions)
    kinds = {q.kind for q, _ in answered}
    assert len(answered) >= 60 and {"status", "why_held", "why_split", "availability", "sop", "cancel"} <= kinds
    failing = {
        q.message: claims
        for q, out in answered
        if (claims := unsupported_claims(out.reply.answer, out.facts, out.reply.citations, out.reply.answer))
    }
    assert failing == {}
    # Order answers name only ids the records hold, without the template's help.
    for q, out in answered:
        if out.reply.intent in ("status", "why_split", "why_late") and out.reply.citations:
            claims = unsupported_claims(out.reply.answer, out.facts, out.reply.citations)
            assert not [c for c in claims if c.startswith("unknown id")], (q.message, claims)


def test_a_faithful_model_gets_every_factual_answer_through(generated: tuple[Stack, list[Any]]) -> None:
    from crews.agent_runtime import ListAudit
    from crews.scripted_llm import ScriptedLLM

    stack, questions = generated
    llm = ScriptedLLM.replaying()

    def echo(out: Outcome, message: str) -> Outcome:
        """Script the model to hand back the template answer reworded only in its wrapping."""
        queue = llm.script.setdefault("*", [])
        queue.append(json.dumps({"answer": f"  {out.reply.answer}  "}))
        assert real is not None
        try:
            return real(out, message)
        finally:
            queue.clear()  # unused when the writer does not ask the model

    audit = ListAudit()
    real = chat_writer(AgentSettings(agent_max_seconds=10), model=llm, audit=audit)
    assert real is not None
    answered = ask_all(stack, questions, writer=echo)
    rewritten = [out for _, out in answered if out.reply.mode == "llm"]
    factual = [
        out
        for _, out in answered
        if out.reply.citations and not out.refused and out.decision is None and not out.offered
    ]
    assert [e for e in audit.entries if e["kind"] == "chat.llm_fallback"] == []
    # (answers that offer an action, like "can I still cancel it?", are code-worded, not sent)
    assert len(rewritten) == len(factual) == len(llm.calls) and len(factual) >= 35
    assert all(out.decision is None and not out.refused for out in rewritten)
