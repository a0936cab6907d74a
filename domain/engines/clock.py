"""Scenario time: UTC normalisation and carrier cutoffs, shared by every engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.models import Carrier, Node


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is read as UTC (the contract's times are UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def next_cutoff(now: datetime, cutoff: str) -> datetime:
    """The first carrier cutoff (HH:MM, UTC) at or after ``now``."""
    # Convert an aware time in another zone rather than reading its wall clock as UTC.
    now = as_utc(now)
    hh, mm = (int(x) for x in cutoff.split(":"))
    at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    return at if at >= now else at + timedelta(days=1)


def ship_carrier(node: Node | None, wanted: str | None, now: datetime) -> tuple[Carrier, datetime] | None:
    """The carrier a node ships an order with, and that carrier's next cutoff at/after ``now``.

    The order's own carrier when the node offers it, otherwise the node's carrier with the
    earliest next cutoff (ties by code). ``None`` when the node has no carrier. Every engine
    and the report use this one rule, so a decision and its KPI agree on when a node ships.
    """
    options = node.carriers if node is not None else []
    chosen = [c for c in options if c.code == wanted] or options
    if not chosen:
        return None
    at, carrier = min(((next_cutoff(now, c.cutoff), c) for c in chosen), key=lambda x: (x[0], x[1].code))
    return carrier, at
