"""The LLM path: CrewAI agents built from ``agents.yaml``, bounded and scoped by code.

- Each agent gets only the tools its scopes allow, bound to a ``RunGuard`` for its run.
- Its model is wrapped in ``BoundedLLM``: before each call the wall time is checked; after it
  the tokens are counted (the model's usage, or an estimate); every tool call the model asks
  for is checked for scope, counted, and compared with earlier calls (same tool and arguments
  twice is a loop). A breach raises ``AgentBoundExceeded`` (audited) and ends the run.
- Case text (event data, order notes, exception reasons, SOP passages) reaches the model only
  inside a delimited data block, JSON-encoded, never as instructions.
- An agent's output is an ``AgentProposal`` (``output_pydantic``), validated and converted to a
  domain ``Proposal`` by ``agents.proposals``; a broken one becomes a ``RejectedProposal``.
  Nothing here writes: proposals go through the governance gate like an engine's.

Importing this module imports CrewAI: import it lazily, never on the API's import path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from domain.extras import needs
from tools.offline import crewai_import

with needs("agents"), crewai_import():
    from crewai import Agent, BaseLLM, Crew, Process, Task
    from crewai.events.types.llm_events import LLMCallType
    from crewai.utilities.converter import Converter, ConverterError
from pydantic import ConfigDict, Field  # noqa: E402

from agents.bounds import AgentBoundExceeded, Bounds, RunGuard, estimate_tokens  # noqa: E402
from agents.gateway import Gateway, reply_of  # noqa: E402
from agents.pricing import TokenPrices, token_prices  # noqa: E402
from agents.prompts import fit_data  # noqa: E402
from agents.proposals import AgentProposal, RejectedProposal, to_proposal  # noqa: E402
from agents.settings import AgentSettings, llm_mode  # noqa: E402
from agents.specs import DELEGATE_SCOPE, AgentSpec, default_specs  # noqa: E402
from domain.decisions import Proposal  # noqa: E402
from tools.agent_tools import tools_for  # noqa: E402
from tools.context import Systems  # noqa: E402
from tools.knowledge_port import KnowledgeSearch  # noqa: E402
from tools.scopes import TOOL_SCOPES  # noqa: E402

log = logging.getLogger("crossdock.agents")


class _BelowErrorFromCrewAI(logging.Filter):
    """Drops CrewAI's own warnings and info, which it logs on the root logger itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or f"{os.sep}crewai{os.sep}" not in record.pathname


def quiet_crewai_logging() -> None:
    """Keep CrewAI's log chatter (below ERROR) out of Crossdock's logs; called when an agent runtime
    starts, never at import. The root logger's level is left as the command line set it: the filter
    sits on the root logger itself, so it sees only records logged on it directly (CrewAI's bare
    ``logging.warning`` calls), not those of other loggers that propagate to its handlers."""
    logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, _BelowErrorFromCrewAI) for f in root.filters):
        root.addFilter(_BelowErrorFromCrewAI())


AgentResult = Proposal | RejectedProposal

# CrewAI's delegation tools as a hierarchical crew's manager sees them (native calls use the
# sanitised name): the only tools a supervisor has, each needing the delegate scope.
DELEGATION_TOOLS: dict[str, str] = {
    "delegate_work_to_coworker": DELEGATE_SCOPE,
    "ask_question_to_coworker": DELEGATE_SCOPE,
    "Delegate work to coworker": DELEGATE_SCOPE,
    "Ask question to coworker": DELEGATE_SCOPE,
}


class AuditSink(Protocol):
    def append_audit(self, kind: str, subject: str, actor: str, payload: dict[str, Any]) -> Any: ...


class ListAudit:
    """An in-memory audit sink (tests, dry runs)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append_audit(self, kind: str, subject: str, actor: str, payload: dict[str, Any]) -> None:
        self.entries.append({"kind": kind, "subject": subject, "actor": actor, "payload": payload})

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.entries]


# --------------------------------------------------------------------------------------------
# The bounded model
# --------------------------------------------------------------------------------------------
def _tool_call_parts(call: Any) -> tuple[str, dict[str, Any]]:
    fn = call.get("function", {}) if isinstance(call, dict) else getattr(call, "function", None)
    name = fn.get("name", "") if isinstance(fn, dict) else getattr(fn, "name", "")
    raw = fn.get("arguments", "{}") if isinstance(fn, dict) else getattr(fn, "arguments", "{}")
    if isinstance(raw, dict):
        return str(name), raw
    try:
        args = json.loads(raw or "{}")
    except (TypeError, ValueError):
        args = {"_unparsed": str(raw)}
    return str(name), args if isinstance(args, dict) else {"_value": args}


def _is_tool_calls(reply: Any) -> bool:
    return (
        isinstance(reply, list)
        and bool(reply)
        and all(isinstance(c, dict) and "function" in c or hasattr(c, "function") for c in reply)
    )


class BoundedLLM(BaseLLM):
    """Wraps the agent's model; every call and every requested tool call passes the run's guard."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: Any = Field(exclude=True)
    guard: Any = Field(exclude=True)
    allowed_tools: dict[str, str] = Field(default_factory=dict)
    prices: Any = Field(default=None, exclude=True)  # agents.pricing.TokenPrices, or None: unpriced
    # With a gateway (a real model): a prompt larger than the model's context trips the context bound
    # before the call, instead of a provider error the queue would retry.
    gateway: Any = Field(default=None, exclude=True)

    def supports_function_calling(self) -> bool:
        return bool(self.inner.supports_function_calling())

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
        guard: RunGuard = self.guard
        guard.check_time()
        if self.gateway is not None:
            self._check_context(guard, messages, tools)
        guard.llm_calls += 1
        before = _usage(self.inner)
        reply = self.inner.call(
            messages,
            tools=tools,
            callbacks=callbacks,
            available_functions=available_functions,
            from_task=from_task,
            from_agent=from_agent,
            response_model=response_model,
        )
        after = _usage(self.inner)
        prompt, completion = after[0] - before[0], after[1] - before[1]
        if prompt + completion <= 0:  # the model reports no usage: estimate it
            prompt, completion = estimate_tokens(messages), estimate_tokens(reply)
        prices: TokenPrices | None = self.prices
        guard.add_tokens(prompt + completion, prices.cost(prompt, completion) if prices is not None else 0.0)
        guard.check_time()
        if _is_tool_calls(reply):
            for call in reply:
                name, args = _tool_call_parts(call)
                guard.tool_call(name, args, self.allowed_tools.get(name))
        return reply

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)

    def _check_context(self, guard: RunGuard, messages: Any, tools: Any) -> None:
        gw: Gateway = self.gateway
        window = gw.context_window(str(self.inner.model))
        need = gw.count_tokens(messages, tools, model=str(self.inner.model)) + gw.settings.llm_reserve_tokens
        if need > window:
            raise guard.trip(
                AgentBoundExceeded(
                    "context",
                    guard.agent,
                    f"prompt of {need - gw.settings.llm_reserve_tokens} tokens + {gw.settings.llm_reserve_tokens} "
                    f"for the answer > the model's {window}",
                )
            )


class GatewayLLM(BaseLLM):
    """A CrewAI model whose calls go through the model gateway (``agents.gateway``): the role's model,
    then the fallbacks; no client retries; tokens, dollars and latency in the gateway's ledger."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    gateway: Any = Field(exclude=True)
    role: str = ""

    def supports_function_calling(self) -> bool:
        return True

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
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        self._emit_call_started_event(messages=messages, tools=tools, from_task=from_task, from_agent=from_agent)
        gw: Gateway = self.gateway
        timeout = gw.settings.agent_max_seconds
        response, call = gw.complete(messages, role=self.role, tools=tools or None, timeout=timeout)
        self._track_token_usage_internal(
            {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens,
            }
        )
        reply = reply_of(response)
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


class CaptureLLM(BaseLLM):
    """Records the prompts an agent would send (messages and tool schemas); answers an empty final answer."""

    prompts: list[tuple[Any, Any]] = Field(default_factory=list)

    def supports_function_calling(self) -> bool:
        return True

    def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.prompts.append((messages, tools))
        return "{}"

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)


def _usage(llm: Any) -> tuple[int, int]:
    """(prompt, completion) tokens the model has reported so far; a total alone counts as prompt."""
    try:
        summary = llm.get_token_usage_summary()
        prompt, completion = int(summary.prompt_tokens or 0), int(summary.completion_tokens or 0)
        total = int(summary.total_tokens or 0)
    except Exception:  # noqa: BLE001 - a model without usage accounting: estimate instead
        return 0, 0
    return (prompt, completion) if prompt + completion else (total, 0)


class ParseOnlyConverter(Converter):
    """Output that is not an ``AgentProposal`` stays raw text (then rejected by our validation):
    CrewAI's default converter would re-prompt the model to repair it, a model call outside the task."""

    def to_pydantic(self, current_attempt: int = 1) -> Any:
        return ConverterError("output is not an AgentProposal; not re-prompting the model")

    async def ato_pydantic(self, current_attempt: int = 1) -> Any:
        return self.to_pydantic(current_attempt)

    def to_json(self, current_attempt: int = 1) -> Any:
        return self.to_pydantic(current_attempt)


def make_model(settings: AgentSettings, role: str | None = None, gateway: Gateway | None = None) -> BaseLLM:
    """The configured model for ``role`` (any litellm model string), through the model gateway;
    credentials come from the provider's env vars. Retries have one owner, the queue: the
    gateway's client retries are off, so every attempt is audited."""
    if not settings.llm_enabled:
        raise RuntimeError("no CROSSDOCK_LLM_MODEL configured: deterministic mode")
    gw = gateway or Gateway(settings)
    return GatewayLLM(model=gw.model_for(role), gateway=gw, role=role or "")


# --------------------------------------------------------------------------------------------
# Cases and prompts
# --------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One piece of work for one agent: our instruction, the untrusted data, the subjects it may touch."""

    agent: str
    instruction: str
    data: Mapping[str, Any]
    subjects: Sequence[str]
    event_id: str | None = None
    extra_subjects: Sequence[str] = field(default_factory=tuple)


TASKS_FILE = Path(__file__).parents[1] / "agents" / "tasks.yaml"


@cache
def task_texts() -> dict[str, Any]:
    """``agents/tasks.yaml``: the case task's description and expected output, the judgement instructions."""
    texts: dict[str, Any] = yaml.safe_load(TASKS_FILE.read_text())
    return texts


INSTRUCTIONS: str = task_texts()["case"]["description"]
EXPECTED_OUTPUT: str = task_texts()["case"]["expected_output"]


def data_block(data: Mapping[str, Any], nonce: str) -> str:
    """The untrusted case as JSON between nonce-tagged markers it cannot forge or close."""
    body = json.dumps(data, sort_keys=True, default=str, ensure_ascii=True)
    body = body.replace("<<<", "< < <").replace(">>>", "> > >")
    return f"<<<CASE_DATA {nonce}>>>\n{body}\n<<<END_CASE_DATA {nonce}>>>"


def task_description(spec: AgentSpec, case: Case, nonce: str) -> str:
    # The case never goes through ``str.format`` or CrewAI's input interpolation (no inputs are passed).
    return INSTRUCTIONS.format(
        instruction=case.instruction,
        nonce=nonce,
        workflows=", ".join(sorted(spec.workflows)),
        subjects=", ".join(json.dumps(s) for s in case.subjects) or "(none)",
        actions=", ".join(sorted(spec.actions)) or "(none: propose no actions)",
        block=data_block(case.data, nonce),
    )


# --------------------------------------------------------------------------------------------
# The runtime
# --------------------------------------------------------------------------------------------
class AgentRuntime:
    """Builds scoped, bounded agents and runs them on cases; returns validated proposals."""

    def __init__(
        self,
        settings: AgentSettings | None = None,
        *,
        systems: Systems | None = None,
        knowledge: KnowledgeSearch | None = None,
        audit: AuditSink | None = None,
        model: BaseLLM | None = None,
        specs: Mapping[str, AgentSpec] | None = None,
    ) -> None:
        quiet_crewai_logging()
        self.settings = settings or AgentSettings()
        self.systems = systems
        self.knowledge = knowledge
        self.audit: AuditSink = audit or ListAudit()
        self.specs = dict(specs or default_specs())
        self._model = model
        # Every model call of this runtime (agents, crew managers, the chat writer) goes through it.
        self.gateway = Gateway(self.settings)
        self._role_models: dict[str, BaseLLM] = {}
        self._overheads: dict[tuple[Any, ...], int] = {}
        self.bounds = Bounds(
            max_seconds=self.settings.agent_max_seconds,
            max_tool_calls=self.settings.agent_max_tool_calls,
            max_tokens=self.settings.agent_max_tokens,
            max_cost_usd=self.settings.agent_max_cost_usd,
        )
        self._prices: TokenPrices | None = None
        self._priced = False

    @property
    def model(self) -> BaseLLM:
        if self._model is None:
            self._model = make_model(self.settings, gateway=self.gateway)
        return self._model

    def model_for(self, role: str) -> BaseLLM:
        """The role's model: a model given to the runtime (tests), else the gateway's alias for the role."""
        if self._model is not None and not isinstance(self._model, GatewayLLM):
            return self._model
        if role not in self._role_models:
            self._role_models[role] = make_model(self.settings, role, gateway=self.gateway)
        return self._role_models[role]

    @property
    def fits_prompts(self) -> bool:
        """Prompts are measured and fitted to the context for a real model (the gateway's), or when
        a context size is configured; a scripted model is left alone."""
        return isinstance(self.model, GatewayLLM) or self.settings.llm_context_tokens is not None

    def bounded(self, spec: AgentSpec, guard: RunGuard, allowed: dict[str, str]) -> BoundedLLM:
        """The role's model wrapped in the run's guard (agents, crew managers, the chat writer)."""
        inner = self.model_for(spec.name)
        return BoundedLLM(
            model=str(inner.model),
            inner=inner,
            guard=guard,
            allowed_tools=allowed,
            prices=self.prices,
            gateway=self.gateway if self.fits_prompts else None,
        )

    def max_output_chars(self) -> int:
        """A tool result fed back is capped; a small context caps it further (half its size in characters)."""
        cap = self.settings.agent_max_output_chars
        return min(cap, self.gateway.context_window(self.model_name) // 2) if self.fits_prompts else cap

    @property
    def model_name(self) -> str:
        if self._model is not None:
            return str(self._model.model)
        return str(llm_mode(self.settings).get("model", "none"))

    @property
    def prices(self) -> TokenPrices | None:
        """The model's token prices (settings, else litellm's bundled list); None: unknown."""
        if not self._priced:
            self._priced = True
            self._prices = token_prices(self.model_name, self.settings)
            if self._prices is None and self.bounds.max_cost_usd is not None:
                self.audit.append_audit(
                    "agent.cost_unpriced",
                    self.model_name,
                    "crossdock-agents",
                    {
                        "model": self.model_name,
                        "detail": "no token price known: runs are bounded by tokens, not dollars; "
                        "set CROSSDOCK_LLM_INPUT_COST_PER_MTOK and CROSSDOCK_LLM_OUTPUT_COST_PER_MTOK",
                    },
                )
        return self._prices

    # -- building -------------------------------------------------------------------------
    def guard(self, spec: AgentSpec, subject: str) -> RunGuard:
        def audit(kind: str, data: Mapping[str, Any]) -> None:
            self.audit.append_audit(kind, subject, f"agent:{spec.name}", dict(data))

        return RunGuard(agent=spec.name, scopes=spec.scopes, bounds=self.bounds, audit=audit)

    def build_agent(self, spec: AgentSpec, guard: RunGuard) -> Agent:
        def denied(tool: str, needed: str) -> None:  # only reachable with a hand-edited spec
            guard.audit("agent.tool_withheld", {"agent": spec.name, "tool": tool, "needed": needed})

        tools = tools_for(
            spec.tools,
            spec.scopes,
            systems=self.systems,
            guard=guard,
            knowledge=self.knowledge,
            max_output_chars=self.max_output_chars(),
            on_denied=denied,
        )
        llm = self.bounded(spec, guard, {t.name: TOOL_SCOPES[t.name] for t in tools})
        return self._agent(spec, llm, tools, delegates=False)

    def _agent(self, spec: AgentSpec, llm: BaseLLM, tools: list[Any], *, delegates: bool) -> Agent:
        """A CrewAI agent with no memory, no cache, no retries; iterations capped by the tool-call bound."""
        return Agent(
            role=spec.role,
            goal=spec.goal,
            backstory=spec.backstory,
            llm=llm,
            tools=tools,
            allow_delegation=delegates,
            verbose=False,
            cache=False,
            memory=False,
            max_iter=self.bounds.max_tool_calls + 2,
            max_retry_limit=0,
        )

    def build_manager(self, spec: AgentSpec, guard: RunGuard) -> Agent:
        """A hierarchical crew's manager: no tools of its own; CrewAI hands it delegation tools,
        which its bounded model counts and checks like any tool call."""
        allowed = {name: scope for name, scope in DELEGATION_TOOLS.items() if scope in spec.scopes}
        return self._agent(spec, self.bounded(spec, guard, allowed), [], delegates=True)

    def _task(
        self, spec: AgentSpec, agent: Agent | None, case: Case, nonce: str, context: list[Task] | None = None
    ) -> Task:
        return Task(
            description=task_description(spec, case, nonce),
            expected_output=EXPECTED_OUTPUT,
            agent=agent,
            output_pydantic=AgentProposal,
            converter_cls=ParseOnlyConverter,
            context=context or [],
        )

    # -- prompts --------------------------------------------------------------------------
    def first_prompt(self, case: Case, manager: str | None = None) -> tuple[Any, Any]:
        """The first prompt (messages, tool schemas) CrewAI would send for ``case``: a dry run with a
        capturing model; nothing is called, audited or executed."""
        spec = self.specs[case.agent]
        quiet = RunGuard(agent=spec.name, scopes=spec.scopes, bounds=self.bounds, audit=lambda k, d: None)
        capture = CaptureLLM(model="capture")
        tools = tools_for(
            spec.tools, spec.scopes, systems=self.systems, guard=quiet, knowledge=self.knowledge, on_denied=None
        )
        worker = self._agent(spec, capture, tools, delegates=False)
        task = self._task(spec, None if manager else worker, case, "0" * 16)
        kwargs: dict[str, Any] = {"process": Process.sequential}
        if manager is not None:
            boss = self.specs[manager]
            kwargs = {"process": Process.hierarchical, "manager_agent": self._agent(boss, capture, [], delegates=True)}
        crew = Crew(agents=[worker], tasks=[task], verbose=False, memory=False, cache=False, **kwargs)
        with contextlib.suppress(Exception):  # only the prompt matters, not how the run ends
            crew.kickoff()
        if not capture.prompts:
            raise RuntimeError(f"dry run of {spec.name} sent no prompt")
        return capture.prompts[0]

    def prompt_sizes(self, case: Case, manager: str | None = None) -> dict[str, int]:
        """Tokens of ``case``'s first prompt: all of it, its data block, and the rest (role, task, tools)."""
        messages, tools = self.first_prompt(case, manager)
        total = self.gateway.count_tokens(messages, tools, model=self.model_name)
        block = self.gateway.count_tokens(data_block(case.data, "0" * 16), model=self.model_name)
        return {"total": total, "data": block, "fixed": total - block, "tools": len(tools or [])}

    def fit(self, case: Case, manager: str | None = None) -> Case:
        """``case`` with its data trimmed (whole records, least relevant first) so the first prompt
        leaves ``llm_reserve_tokens`` of the model's context for the answer; audited when trimmed."""
        key = (case.agent, manager, case.instruction, tuple(case.subjects))
        if key not in self._overheads:
            empty = Case(case.agent, case.instruction, {}, case.subjects, case.event_id, case.extra_subjects)
            try:
                self._overheads[key] = self.prompt_sizes(empty, manager)["fixed"]
            except RuntimeError as exc:  # the dry run could not capture a prompt: fit the data alone
                log.warning("agent.prompt_not_measured agent=%s error=%s", case.agent, exc)
                self._overheads[key] = 0
        window = self.gateway.context_window(self.model_name)
        budget = window - self.settings.llm_reserve_tokens - self._overheads[key]

        def count(data: Mapping[str, Any]) -> int:
            return self.gateway.count_tokens(data_block(data, "0" * 16), model=self.model_name)

        data, dropped, size = fit_data(case.data, [*case.subjects, *case.extra_subjects], budget, count)
        if dropped or size > budget:
            self.audit.append_audit(
                "agent.prompt_trimmed",
                case.subjects[0] if case.subjects else case.agent,
                f"agent:{case.agent}",
                {
                    "agent": case.agent,
                    "event_id": case.event_id,
                    "context_tokens": window,
                    "fixed_tokens": self._overheads[key],
                    "data_tokens": size,
                    "budget": budget,
                    "records_dropped": dropped,
                    "fits": size <= budget,
                },
            )
        return Case(case.agent, case.instruction, data, case.subjects, case.event_id, case.extra_subjects)

    # -- running --------------------------------------------------------------------------
    def run(self, case: Case) -> AgentResult:
        """One agent on one case; raises ``AgentBoundExceeded`` (audited) when a bound is hit."""
        return self.run_crew([case], strict=True)[0]

    def run_safely(self, case: Case) -> AgentResult:
        """Like ``run``, but a bound breach comes back as a rejected record to store, and a model
        failure (provider error, timeout, bad configuration) as a rejected record whose fallback to
        the engines' decision is audited with its reason (``agent.fallback``)."""
        try:
            return self.run(case)
        except AgentBoundExceeded as exc:
            spec = self.specs[case.agent]
            return RejectedProposal(
                agent=spec.name,
                workflow=sorted(spec.workflows)[0],  # type: ignore[arg-type]
                subject=case.subjects[0] if case.subjects else "unknown",
                reason=str(exc),
                evidence={"bound": exc.bound, "model": self.model_name},
            )
        except Exception as exc:  # noqa: BLE001 - a model failure costs the agent's answer, never the job
            return self._model_failed([case], {}, exc)[0]

    def run_crew(
        self,
        cases: Sequence[Case],
        context_from_previous: bool = False,
        *,
        manager: str | None = None,
        strict: bool = False,
    ) -> list[AgentResult]:
        """A crew with one task per case (agents may differ); one guard per agent.

        Sequential by default: each task goes to its case's agent. With ``manager`` (a supervisor
        spec such as ``triage_supervisor``) the crew is hierarchical: the manager gets every task
        and delegates it to the specialist it chooses; its answer is still validated against the
        case's agent (workflows, actions, subjects), so delegation cannot widen what is allowed.

        A bound breach raises ``AgentBoundExceeded``. A model failure comes back as one rejected
        record per case, its fallback audited (``agent.fallback``): the caller's engine decisions
        stand and its job is not failed for it. ``strict``: the failure is raised instead.
        """
        self.prices  # noqa: B018 - looked up (litellm's price list) before any run's clock starts
        if self.settings.llm_enabled:  # a configured provider without its key fails before any work
            self.gateway.check_credentials()
        if self.fits_prompts:
            cases = [self.fit(case, manager) for case in cases]
        nonce = secrets.token_hex(8)
        guards: dict[str, RunGuard] = {}
        agents: dict[str, Agent] = {}
        tasks: list[Task] = []
        for case in cases:
            spec = self.specs[case.agent]
            if spec.name not in agents:
                guards[spec.name] = self.guard(spec, case.subjects[0] if case.subjects else "crew")
                agents[spec.name] = self.build_agent(spec, guards[spec.name])
            context = list(tasks) if context_from_previous and tasks else None
            tasks.append(self._task(spec, None if manager else agents[spec.name], case, nonce, context))
        process_kwargs: dict[str, Any] = {"process": Process.sequential}
        if manager is not None:
            boss = self.specs[manager]
            guards[boss.name] = self.guard(boss, "crew")
            process_kwargs = {
                "process": Process.hierarchical,
                "manager_agent": self.build_manager(boss, guards[boss.name]),
            }
        crew = Crew(
            agents=list(agents.values()),
            tasks=tasks,
            verbose=False,
            memory=False,
            cache=False,
            **process_kwargs,
        )
        try:
            outputs = self._kickoff(crew, guards)
        except AgentBoundExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - a model failure costs the agent's answer, never the job
            if strict:
                raise
            return self._model_failed(cases, guards, exc)
        results: list[AgentResult] = []
        for case, task, out in zip(cases, tasks, outputs, strict=True):
            spec = self.specs[case.agent]
            guard = guards[spec.name]
            raw = out.pydantic if out is not None and out.pydantic is not None else (out.raw if out else None)
            if raw is None:
                raw = task.output.raw if task.output is not None else None
            result = to_proposal(
                spec,
                raw,
                [*case.subjects, *case.extra_subjects],
                model=self.model_name,
                review_required=self.settings.agent_review_required,
                usage=guard.usage() if manager is None else {**guard.usage(), "manager": guards[manager].usage()},
            )
            if isinstance(result, RejectedProposal):
                self.audit.append_audit(
                    "agent.proposal_rejected",
                    result.subject,
                    f"agent:{spec.name}",
                    {"agent": spec.name, "reason": result.reason, "event_id": case.event_id},
                )
            else:
                self.audit.append_audit(
                    "agent.proposed",
                    result.subject,
                    f"agent:{spec.name}",
                    {"agent": spec.name, "outcome": result.outcome, "actions": [a.name for a in result.actions]},
                )
            results.append(result)
        return results

    def _model_failed(
        self, cases: Sequence[Case], guards: Mapping[str, RunGuard], exc: BaseException
    ) -> list[AgentResult]:
        """The model (or CrewAI around it) failed: every case gets a rejected record, and the fallback
        to the engines' decision is audited with its reason. The queue does not retry the job for it:
        the engines' decisions are already recorded, and a retry would cost them nothing but time."""
        reason = f"model failed: {type(exc).__name__}: {str(exc)[:300]}"
        out: list[AgentResult] = []
        for case in cases:
            spec = self.specs[case.agent]
            subject = case.subjects[0] if case.subjects else "unknown"
            guard = guards.get(spec.name)
            self.audit.append_audit(
                "agent.fallback",
                subject,
                f"agent:{spec.name}",
                {
                    "agent": spec.name,
                    "event_id": case.event_id,
                    "reason": reason,
                    "fallback": "the engines' decision stands",
                    "model": self.model_name,
                    **(guard.usage() if guard is not None else {}),
                },
            )
            out.append(
                RejectedProposal(
                    agent=spec.name,
                    workflow=sorted(spec.workflows)[0],  # type: ignore[arg-type]
                    subject=subject,
                    reason=reason,
                    evidence={"fallback": "engine", "model": self.model_name},
                )
            )
        return out

    def _kickoff(self, crew: Crew, guards: Mapping[str, RunGuard]) -> list[Any]:
        """Run the crew in a worker thread so the wall-time bound holds even if a call hangs."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = crew.kickoff()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name="crossdock-agent-run", daemon=True)
        worker.start()
        worker.join(self.bounds.max_seconds * max(1, len(guards)) + 0.05)
        if worker.is_alive():
            for guard in guards.values():
                guard.cancel(f"run still going after {self.bounds.max_seconds:g}s per agent")
            raise next(iter(guards.values())).tripped or AgentBoundExceeded("wall_time", "crew", "timeout")
        for guard in guards.values():
            guard.raise_if_tripped()
        error = box.get("error")
        if isinstance(error, AgentBoundExceeded):
            raise error
        if error is not None:
            raise error
        return list(box["out"].tasks_output)
