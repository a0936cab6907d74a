"""Agent specifications from ``agents.yaml``: role, goal, backstory, scopes, tools, workflows, actions.

Checked when loaded: every tool must exist and be allowed by the agent's scopes, every action
must be in Crossdock's action vocabulary. No CrewAI import here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.scopes import TOOL_SCOPES

AgentName = Literal[
    "allocation", "reconciliation", "exception_triage", "customer_service", "backorder_prevention", "triage_supervisor"
]
AGENT_NAMES: tuple[AgentName, ...] = (
    "allocation",
    "reconciliation",
    "exception_triage",
    "customer_service",
    "backorder_prevention",
)
# Managers of hierarchical crews: no data tools, only CrewAI's delegation to the crew's specialists.
SUPERVISOR_NAMES: tuple[AgentName, ...] = ("triage_supervisor",)
DELEGATE_SCOPE = "crew:delegate"

# Every ``system.type`` an executor knows how to apply.
ACTION_VOCABULARY = frozenset(
    {
        "oms.allocate",
        "oms.hold_order",
        "oms.release_allocation",
        "oms.update_order_status",
        "oms.update_promise_date",
        "wms.create_wave",
        "wms.create_task",
        "erp.post_adjustment",
        "erp.close_po_line",
        "notify.ticket",
    }
)

SPEC_FILE = Path(__file__).with_name("agents.yaml")


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: AgentName
    role: str = Field(min_length=1)
    goal: str = Field(min_length=1)
    backstory: str = Field(min_length=1)
    scopes: frozenset[str]
    tools: tuple[str, ...]
    workflows: frozenset[str] = Field(min_length=1)
    actions: frozenset[str]

    @model_validator(mode="after")
    def _consistent(self) -> AgentSpec:
        for tool in self.tools:
            if tool not in TOOL_SCOPES:
                raise ValueError(f"agent {self.name}: unknown tool {tool!r}")
            if not allows(self.scopes, TOOL_SCOPES[tool]):
                raise ValueError(f"agent {self.name}: tool {tool!r} needs {TOOL_SCOPES[tool]!r}, beyond its scopes")
        unknown = self.actions - ACTION_VOCABULARY
        if unknown:
            raise ValueError(f"agent {self.name}: unknown actions {sorted(unknown)}")
        return self


def allows(scopes: frozenset[str] | set[str], needed: str) -> bool:
    """True when every scope in ``needed`` (space-separated) is held."""
    return set(needed.split()) <= set(scopes)


def load_specs(path: Path = SPEC_FILE) -> dict[str, AgentSpec]:
    raw = yaml.safe_load(path.read_text())
    specs = {name: AgentSpec(name=name, **body) for name, body in raw.items()}
    missing = set(AGENT_NAMES + SUPERVISOR_NAMES) - set(specs)
    if missing:
        raise ValueError(f"{path.name}: no agent for {sorted(missing)}")
    return specs


@cache
def default_specs() -> dict[str, AgentSpec]:
    return load_specs()
