"""Fitting an agent's case data to the model's context, whole records at a time.

A case's data block is JSON; the lists in it (order lines, engine proposals, tool rows, SOP
passages) are records. When the prompt would not fit, records are dropped, least relevant first,
until it does: a record that names none of the case's subjects goes before one that does, and a
later one before an earlier one. A record is never cut in the middle, and what was dropped is said
in the block itself (``_trimmed``: path → records dropped), so the model knows the list is partial.
No CrewAI or litellm import here: the caller passes the token counter.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Path = tuple[str | int, ...]


def _lists(value: Any, path: Path = ()) -> list[tuple[Path, list[Any]]]:
    out: list[tuple[Path, list[Any]]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _lists(v, (*path, str(k)))
    elif isinstance(value, list):
        if value:
            out.append((path, value))
        for i, v in enumerate(value):
            out += _lists(v, (*path, i))
    return out


def _relevant(record: Any, subjects: Sequence[str]) -> bool:
    """True when the record names one of the subjects as a whole id (``SO-1`` is not in ``SO-10``)."""
    text = json.dumps(record, default=str)
    return any(s and re.search(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", text) for s in subjects)


def fit_data(
    data: Mapping[str, Any],
    subjects: Sequence[str],
    budget: int,
    count: Callable[[Mapping[str, Any]], int],
) -> tuple[dict[str, Any], dict[str, int], int]:
    """``data`` trimmed to at most ``budget`` tokens (as ``count`` measures the block); returns the
    data, what was dropped per list path, and its size. If dropping every record does not make it
    fit, the smallest it got is returned (the caller's context bound then trips)."""
    out: dict[str, Any] = copy.deepcopy(dict(data))
    dropped: dict[str, int] = {}
    size = count(out)
    while size > budget:
        candidates = []
        for path, items in _lists(out):
            for i, record in enumerate(items):
                # (relevant?, position from the start): the least relevant, then the last, goes first.
                candidates.append((_relevant(record, subjects), -i, -len(path), path, i))
        if not candidates:
            break
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        _, _, _, path, i = candidates[0]
        holder: Any = out
        for key in path:
            holder = holder[key]
        del holder[i]
        key = ".".join(str(p) for p in path) or "."
        dropped[key] = dropped.get(key, 0) + 1
        out["_trimmed"] = {"records_dropped": dict(dropped), "why": "the model's context is small"}
        size = count(out)
    return out, dropped, size
