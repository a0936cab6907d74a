"""Scenario time: UTC normalisation and carrier cutoffs, shared by every engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


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
