""" "Did you mean SO-100003?": the order ids one typo away from an id nobody has.

Only ids the caller may see are candidates (the scoping customer's orders, or every order for an
unscoped rep), so a suggestion never reveals that another customer's order exists.
"""

from __future__ import annotations

import re

# Letters typed for digits in an order number.
_LOOKALIKE = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "L": "1"})
_PREFIX = re.compile(r"^S[O0][-_ –]?#?", re.IGNORECASE)


def number_of(order_id: str) -> str:
    """The number part of an order id as digits ("SO-100O3" → "10003")."""
    return _PREFIX.sub("", order_id.strip()).translate(_LOOKALIKE)


def distance(a: str, b: str) -> int:
    """Edit distance with adjacent transpositions (optimal string alignment)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


MIN_DIGITS = 4  # below this every number is one edit from many others: no guess is worth making


def near_misses(asked: str, visible: list[str], limit: int = 3) -> list[str]:
    """The visible ids closest to ``asked`` (at most one edit away in the number, letters read as
    the digits they look like), nearest first; empty when none is that close. Whether ``asked``
    exists (as another customer's order) plays no part, so the answer reveals nothing about it."""
    wanted = number_of(asked)
    if not wanted.isdigit():
        return []
    scored = []
    for oid in visible:
        if oid.upper() == asked.upper():
            continue
        d = distance(wanted, number_of(oid))
        if d <= 1:
            scored.append((d, oid))
    scored.sort()
    exact = [oid for d, oid in scored if d == 0]  # only letters read as digits: nothing else is as close
    if exact:
        return exact[:limit]
    return [oid for _, oid in scored[:limit]] if len(wanted) >= MIN_DIGITS else []
