"""Governance policy versions: every change is recorded in the audit chain, nowhere else.

A change is one ``policy.changed`` entry (subject ``policy``) whose payload is
``{version, actor, reason, diff, policy}``; the entry's ``at`` says when. The policy in force is
what the store holds (``Store.get_policy``); the history is read back from the chain, so it is as
tamper-evident as the rest of the trail and needs no table of its own.

Versions are numbered 1, 2, … in the chain. Each number is claimed with the audit log's dedup key
(``policy.changed:v<n>``), so two processes changing the policy at once cannot record the same
version twice: the loser reads the chain again and takes the next number.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from domain.models import Policy
from runtime.store import AuditEntry

KIND = "policy.changed"
SUBJECT = "policy"
FIELDS: tuple[str, ...] = tuple(Policy.model_fields)
# Fields whose values are maps (per workflow): a PATCH merges them key by key.
MAP_FIELDS: frozenset[str] = frozenset({"modes", "four_eyes_cost_above", "outcome_modes", "autonomy_rules"})
_LOCK = threading.Lock()  # one change at a time in this process (the dedup key covers the others)


class AuditLog(Protocol):
    """The audit chain as a versioned setting (the policy, the network) keeps its versions in it."""

    def append_audit(
        self, kind: str, subject: str, actor: str, payload: dict[str, Any], dedup_key: str | None = None
    ) -> AuditEntry: ...

    def audit(
        self, *, subject: str | None = None, kind: str | None = None, limit: int = 500, after_seq: int = 0
    ) -> list[AuditEntry]: ...


def entries(store: AuditLog, kind: str, subject: str) -> list[AuditEntry]:
    """Every audit entry of ``kind`` about ``subject``, oldest first, page by page."""
    out: list[AuditEntry] = []
    after = 0
    while True:
        page = store.audit(kind=kind, subject=subject, after_seq=after, limit=500)
        out += page
        if len(page) < 500:
            return out
        after = page[-1].seq


class PolicyStore(AuditLog, Protocol):
    def get_policy(self) -> Policy: ...

    def set_policy(self, s: Policy) -> None: ...


class PolicyVersion(BaseModel):
    """One version of the policy as the audit chain records it."""

    version: int
    at: datetime
    actor: str
    reason: str | None
    diff: dict[str, dict[str, Any]]
    policy: dict[str, Any]
    seq: int  # the audit entry

    @classmethod
    def of(cls, entry: AuditEntry) -> PolicyVersion:
        p = entry.payload
        return cls(
            version=int(p["version"]),
            at=entry.at,
            actor=str(p.get("actor", entry.actor)),
            reason=p.get("reason"),
            diff=p.get("diff", {}),
            policy=p.get("policy", {}),
            seq=entry.seq,
        )


class PolicyError(ValueError):
    """A policy body that cannot be applied; ``errors`` name each field (pydantic's shape)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What changed, one entry per field (``review_cost_above``) or per workflow of a map field
    (``modes.allocation``): ``{"from": …, "to": …}``, None for a workflow that was not set."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if name in MAP_FIELDS:
            before, after = before or {}, after or {}
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    out[f"{name}.{key}"] = {"from": before.get(key), "to": after.get(key)}
        elif before != after:
            out[name] = {"from": before, "to": after}
    return out


def _check(body: dict[str, Any], *, complete: bool) -> None:
    errors: list[dict[str, Any]] = [
        {"loc": (name,), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        for name in body
        if name not in FIELDS
    ]
    if complete:
        errors += [{"loc": (name,), "msg": "Field required", "type": "missing"} for name in FIELDS if name not in body]
    for name in MAP_FIELDS & set(body):
        if not isinstance(body[name], dict):
            errors.append({"loc": (name,), "msg": "Input should be a valid dictionary", "type": "dict_type"})
    if errors:
        raise PolicyError(errors)


def _validated(data: dict[str, Any]) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]) from None


def replaced(body: dict[str, Any]) -> Policy:
    """The policy a PUT gives: every field must be there (a missing one is named)."""
    _check(body, complete=True)
    return _validated(body)


def merged(current: Policy, body: dict[str, Any]) -> Policy:
    """The policy a PATCH gives: only the fields (and, in ``modes`` and ``four_eyes_cost_above``,
    only the workflows) in ``body`` change; a workflow set to null is removed (``modes``: back to
    the default, observe)."""
    _check(body, complete=False)
    data = current.model_dump(mode="json")
    for name, value in body.items():
        if name in MAP_FIELDS:
            merged_map = {**data[name], **value}
            data[name] = {k: v for k, v in merged_map.items() if v is not None}
        else:
            data[name] = value
    return _validated(data)


def history(store: PolicyStore) -> list[PolicyVersion]:
    """Every version, oldest first, from the audit chain."""
    return [PolicyVersion.of(e) for e in entries(store, KIND, SUBJECT)]


def change(store: PolicyStore, new: Policy, actor: str, reason: str | None) -> PolicyVersion | None:
    """Put ``new`` in force as the next version, recorded in the audit chain; None when it changes
    nothing (no version is recorded then)."""
    with _LOCK:
        for _ in range(20):
            versions = history(store)
            latest = versions[-1] if versions else None
            before = store.get_policy().model_dump(mode="json")
            after = new.model_dump(mode="json")
            changes = diff(before, after)
            if not changes:
                return None
            number = (latest.version if latest else 0) + 1
            payload = {"version": number, "actor": actor, "reason": reason, "diff": changes, "policy": after}
            entry = store.append_audit(KIND, SUBJECT, actor, payload, dedup_key=f"{KIND}:v{number}")
            if entry.payload != json.loads(json.dumps(payload)):
                continue  # another process took this version number meanwhile: read the chain again
            store.set_policy(new)
            _converge(store, number)
            return PolicyVersion.of(entry)
    raise RuntimeError("could not claim a policy version after 20 attempts")


def _converge(store: PolicyStore, mine: int) -> None:
    """Another process may have recorded a newer version and set it before this one set its own:
    the store then holds the chain's latest policy, whoever wrote last."""
    versions = history(store)
    if versions and versions[-1].version > mine:
        store.set_policy(Policy.model_validate(versions[-1].policy))
