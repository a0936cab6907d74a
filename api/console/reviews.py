"""A planner's verdicts from the console, through the decision service the API's approve and reject
routes call (``container.pipeline.decisions``), each ending in one ``Verdict`` the pages can show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from api.routes.decisions import ApproveBody, Change, RejectBody
from domain.decisions import Decision
from domain.errors import ConnectorError
from runtime import lifecycle
from runtime.bootstrap import Container
from runtime.lifecycle import ChangeRejected, DecisionNotFound, ExecutionInterrupted, NotReviewable
from runtime.locks import LockTimeout

# Four-eyes (two approvers) where the lifecycle has it: the first approver may not give the second.
SAME_APPROVER: type[Exception] = getattr(lifecycle, "SameApprover", NotReviewable)


@dataclass
class Verdict:
    """How one approval or rejection ended. ``kind``: executed, rejected, stale, failed, interrupted,
    refused (a change broke a rule), not_pending, not_found, unreachable, invalid."""

    decision_id: str
    kind: str
    message: str
    ok: bool = False
    decision: Decision | None = None
    fresh: Decision | None = None
    reasons: list[str] = field(default_factory=list)
    undone: list[dict[str, Any]] = field(default_factory=list)


def parse_changes(decision: Decision, form: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The approve-with-changes form (``a<index>.<field>``) as the lifecycle's ``changes`` list:
    only the fields the planner changed, each checked by the API's own ``Change`` model."""
    from runtime.lifecycle import EDITABLE

    changes: list[dict[str, Any]] = []
    for i, action in enumerate(decision.actions):
        edits: dict[str, Any] = {}
        for name in sorted(EDITABLE.get(action.name, set())):
            raw = (form.get(f"a{i}.{name}") or [""])[0].strip()
            current = action.payload.get(name)
            if raw == "" or raw == _text(current):
                continue
            edits[name] = raw
        if not edits:
            continue
        try:
            change = Change.model_validate({"action": i, **edits})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ChangeRejected(f"action {i} ({action.name}): {where}: {first['msg']}") from None
        changes.append(change.edits())
    return changes


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def approve(
    container: Container, decision_id: str, actor: str, changes: list[dict[str, Any]] | None, note: str
) -> Verdict:
    """``POST /v1/decisions/{id}/approve``, as a verdict (call in a worker thread)."""
    try:
        ApproveBody.model_validate({"note": note})
    except ValidationError as exc:
        return Verdict(decision_id, "invalid", f"note: {exc.errors()[0]['msg']}")
    try:
        review = container.pipeline.decisions.approve(decision_id, actor, changes or None, note)
    except DecisionNotFound as exc:
        return Verdict(decision_id, "not_found", str(exc))
    except NotReviewable as exc:
        return Verdict(decision_id, "not_pending", str(exc))
    except ChangeRejected as exc:
        return Verdict(decision_id, "refused", f"The engine refused the change: {exc}")
    except SAME_APPROVER as exc:
        return Verdict(decision_id, "same_approver", f"Four-eyes: {exc}. A second planner must approve it.")
    except (ExecutionInterrupted, LockTimeout) as exc:
        return Verdict(
            decision_id,
            "interrupted",
            "A system failed part-way; the decision stays executing and is resumed "
            f"(approve again to retry now): {exc}",
        )
    except ConnectorError as exc:
        return Verdict(decision_id, "unreachable", f"A system could not be reached; nothing changed: {exc}")
    d = review.decision
    if review.outcome == "stale":
        return Verdict(
            decision_id,
            "stale",
            "The facts this proposal stood on have moved; nothing was executed.",
            decision=d,
            fresh=review.fresh,
            reasons=list(review.reasons),
        )
    if review.outcome == "pending_review":  # four-eyes: the first of two approvals
        return Verdict(
            decision_id,
            "first_approval",
            "Your approval is recorded. Above the policy's four-eyes amount a second planner, with another "
            "name, must approve it before anything runs.",
            ok=True,
            decision=d,
        )
    if d.status == "failed":
        return Verdict(
            decision_id, "failed", f"Approved but not executed: {d.error}", decision=d, undone=list(d.undone)
        )
    if d.status == "executed":
        return Verdict(decision_id, "executed", "Approved and executed.", ok=True, decision=d)
    # Any other end (a second approver still needed, for instance): say what the decision is now.
    return Verdict(
        decision_id, review.outcome or d.status, f"Recorded; the decision is now {d.status}.", ok=True, decision=d
    )


def reject(container: Container, decision_id: str, actor: str, reason: str) -> Verdict:
    """``POST /v1/decisions/{id}/reject``, as a verdict (call in a worker thread)."""
    if not reason.strip():
        return Verdict(decision_id, "invalid", "A rejection needs a reason: the engines decide again with it.")
    try:
        RejectBody.model_validate({"reason": reason})
    except ValidationError as exc:
        return Verdict(decision_id, "invalid", f"reason: {exc.errors()[0]['msg']}")
    try:
        review = container.pipeline.decisions.reject(decision_id, actor, reason.strip())
    except DecisionNotFound as exc:
        return Verdict(decision_id, "not_found", str(exc))
    except NotReviewable as exc:
        return Verdict(decision_id, "not_pending", str(exc))
    except ChangeRejected as exc:
        return Verdict(decision_id, "invalid", str(exc))
    except ConnectorError as exc:
        return Verdict(decision_id, "unreachable", f"A system could not be reached: {exc}")
    fresh = review.fresh
    if fresh is None:
        message = "Rejected. The engines have nothing else to offer on these facts."
    elif fresh.status == "awaiting_planner":
        message = "Rejected. The engines have no other plan: the order now awaits a planner."
    else:
        message = "Rejected. The engines proposed again without the refused plan."
    return Verdict(decision_id, "rejected", message, ok=True, decision=review.decision, fresh=fresh)
