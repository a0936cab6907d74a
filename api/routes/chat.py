"""Customer-service chat (deterministic mode) and the at-risk order list.

A request to change an order is never executed by the chat: it becomes a ``customer_service``
proposal that goes through the governance gate, the store and the executor exactly like a
decision the worker takes, and the rep's role decides whether it waits for review.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.deps import ContainerDep, OrderReader, Principal
from chat.conversations import Conversation, ConversationStore, new_id
from chat.facts import KnowledgeSearch
from chat.risk import at_risk, clock_of
from chat.service import ChatReply, ChatService, Outcome, Writer, chat_writer
from domain.decisions import Decision, Proposal, decision_id, live_key
from domain.errors import ConnectorError
from runtime.bootstrap import Container

router = APIRouter(tags=["chat"])


class ChatRequest(BaseModel):
    conversation_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    message: str = Field(min_length=1, max_length=4000)
    customer_id: str | None = Field(default=None, max_length=128)


def submit_through_gate(container: Container, actor: str) -> Any:
    """The chat's ``submit``: the decision service records it (gate → store → audit) and, when
    the gate lets it run now, executes it under the order's locks, as the pipeline does.
    ``actor`` names who asked (``cs_rep:alice``; a bare role is taken as ``<role>:chat``)."""
    service = container.pipeline.decisions
    if ":" not in actor:
        actor = f"{actor}:chat"

    def submit(proposal: Proposal, key: str) -> Decision:
        policy = container.store.get_policy()
        did = decision_id(key, proposal.workflow)
        skus = [f"sku:{s}" for s in proposal.evidence.get("skus", []) if isinstance(s, str)]
        with container.locks.hold(sorted(set(skus) | {f"decision:{did}"})):
            decision = service.record(
                proposal, policy, did, actor=actor, default_engine="chat", accepted_at=datetime.now(UTC)
            )
            if decision is None:  # the same change a planner refused on these facts: that refusal stands
                refused = service.store.latest(
                    live_key(proposal.workflow, proposal.subject, proposal.outcome), "rejected"
                )
                assert refused is not None
                return refused
            # Releases create waves under these locks: the service re-checks the policy's premise.
            return service.execute(decision, actor, verify_stock=False)

    return submit


@dataclass(frozen=True)
class Caller:
    """Who asks: the role, the API key's identity (a hash, never the key), and what the app holds."""

    role: str
    key_id: str
    knowledge: KnowledgeSearch | None
    writer: Writer | None
    who: Principal | None = None  # the key's holder: its name, and the customers a bound key sees


def _caller(request: Request, container: Container, who: Principal) -> Caller:
    """Built in a worker thread: the first LLM-mode writer imports CrewAI (3-4 s), once per app."""
    state = request.app.state
    if not hasattr(state, "chat_writer"):
        state.chat_writer = chat_writer(audit=container.store)
    kb = getattr(state, "knowledge", None) or getattr(container, "knowledge", None)
    return Caller(who.role, who.key_id, kb, state.chat_writer, who)


def _scope(caller: Caller, asked: str | None, conv: Conversation | None) -> str | None:
    """The customer a conversation is scoped to. A key bound to customers is scoped to one of them
    whatever the body says (the one asked for or the conversation's, if it is theirs; else the key's
    only customer), so another customer's order gets the same refusal as an unknown one."""
    bound = caller.who.customers if caller.who is not None else None
    if bound is None:
        return asked
    if conv is not None and conv.customer_id is not None and conv.customer_id not in bound:
        raise HTTPException(404, f"no conversation {conv.id} for this API key")
    for candidate in (asked, conv.customer_id if conv is not None else None):
        if candidate is not None and candidate in bound:
            return candidate
    if len(bound) == 1:
        return next(iter(bound))
    raise HTTPException(422, "customer_id: this API key is bound to several customers; name one of them")


def _converse(container: Container, caller: Caller, body: ChatRequest) -> Outcome:
    store = ConversationStore(container.redis, container.settings.stream_prefix)
    conv = store.load(body.conversation_id) if body.conversation_id else None
    if conv is not None and conv.owner not in (None, caller.key_id):
        # A conversation belongs to the API key that started it: another rep gets nothing of it.
        raise HTTPException(404, f"no conversation {conv.id} for this API key")
    customer_id = _scope(caller, body.customer_id, conv)
    if conv is None:
        conv = Conversation(id=body.conversation_id or new_id(), customer_id=customer_id, owner=caller.key_id)
    elif customer_id is not None and conv.customer_id not in (None, customer_id):
        raise HTTPException(409, f"conversation {conv.id} is scoped to another customer")
    elif conv.customer_id is None and customer_id is not None:
        conv.customer_id = customer_id
    service = ChatService(
        container.systems,
        container.store,
        knowledge=caller.knowledge,
        submit=submit_through_gate(container, caller.who.actor if caller.who is not None else caller.role),
        policy=container.store.get_policy,
        writer=caller.writer,
    )
    try:
        out = service.respond(conv, body.message, caller.role)
    except ConnectorError as exc:
        raise HTTPException(502, f"a system could not be reached: {exc}") from None
    store.save(conv)
    return out


@router.post("/v1/chat")
async def chat(body: ChatRequest, request: Request, container: ContainerDep, who: OrderReader) -> ChatReply:
    """Answer one message from live OMS/WMS/ERP data and the decision store, with citations."""
    caller = await run_in_threadpool(_caller, request, container, who)
    out = await run_in_threadpool(_converse, container, caller, body)
    return out.reply


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def chunks(text: str, size: int = 6) -> list[str]:
    """The answer in word groups (what a token stream would deliver)."""
    words = text.split(" ")
    return [" ".join(words[i : i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)]


@router.post("/v1/chat/stream")
async def chat_stream(
    body: ChatRequest, request: Request, container: ContainerDep, who: OrderReader
) -> StreamingResponse:
    """The same answer as Server-Sent Events: ``token`` events, then one ``final`` with citations."""
    caller = await run_in_threadpool(_caller, request, container, who)
    out = await run_in_threadpool(_converse, container, caller, body)

    async def events() -> AsyncIterator[str]:
        for piece in chunks(out.reply.answer):
            yield _sse("token", {"text": piece})
        yield _sse("final", out.reply.model_dump(mode="json"))

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/orders/at-risk", tags=["orders"])
async def orders_at_risk(
    container: ContainerDep, who: OrderReader, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Open orders whose promise is in danger (held, backordered, late supply, missed cutoff,
    open exceptions), each with a drafted customer message. ``now`` defaults to the latest
    clock an engine decided at (the scenario's), else the wall clock. A key bound to customers
    sees only their orders."""

    def run() -> list[dict[str, Any]]:
        when = now or clock_of(container.store) or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return [o for o in at_risk(container.systems, container.store, when) if who.may_see(o.get("customer_id"))]

    try:
        return await run_in_threadpool(run)
    except ConnectorError as exc:
        raise HTTPException(502, f"a system could not be reached: {exc}") from None
