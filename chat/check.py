"""The claim check an LLM-written chat answer must pass before it replaces the template answer.

:func:`unsupported_claims` lists what a draft states that the records behind the answer do not
support. It runs :func:`chat.answers.check_answer` (order statuses, ISO and written dates,
quantities with a unit — the same check the chat bench counts) and adds what a rewrite can get
wrong that a template cannot:

- ids (orders, SKUs, waves, decisions, POs, customers): each must be in the facts, a citation or
  the template answer — anything else is a leak or a hallucination;
- any other number (a bare ``7``, ``1,200``, ``order #100002``, ``50%``) must be a quantity the
  facts hold or a number the template states;
- times of day must be ones the template states; other date forms (``Mar 14``, ``3/14``,
  ``the 14th``, ``Monday``, ``tomorrow``) must fall on a supported date (relative ones never do);
- more status words (``dispatched``, ``on its way``, ``refunded``, ``approved`` ...) and claims of
  having acted (``I cancelled``, ``we've updated``, ``has been refunded``): the chat's rewrites
  are of answers where nothing was done.

The template answer counts as support (it is built only from the cited records), except for a
status it mentions in a negated or conditional clause ("is not on hold", "can still be
cancelled"). Every deterministic template answer passes its own check. No CrewAI import here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from chat.answers import (
    _IDS,
    _ISO_DATE,
    _MONTH_DATE,
    _MONTHS,
    _NEGATION,
    _QTY,
    _STATUS_RE,
    _STATUS_WORDS,
    _TIME,
    check_answer,
    unsupported_statuses,
    words_re,
)
from chat.facts import Citation, Facts, as_date

# More ways to state a status than the templates use (canonical value on the right).
_MORE_STATUSES: dict[str, str] = {
    "dispatched": "shipped",
    "on its way": "shipped",
    "on the way": "shipped",
    "left the warehouse": "shipped",
    "fulfilled": "shipped",
    "completed": "shipped",
    "arrived": "delivered",
    "refunded": "refunded",
    "approved": "approved",
    "returned": "returned",
    "lost": "lost",
    "ready to ship": "packed",
    "ready for pickup": "packed",
    "allocated in full": "released",
    "fully allocated": "released",
}
_MORE_STATUS_RE = words_re(_MORE_STATUSES)
_ACTED = re.compile(
    r"\b(?:I|we)(?:'ve|’ve|\s+have|\s+had)?\s+(?:just\s+|already\s+|now\s+|also\s+|successfully\s+)?"
    r"(?:gone\s+ahead\s+and\s+)?"
    r"(cancell?ed|changed|updated|modified|refunded|approved|opened|raised|created|filed|logged|submitted|escalated"
    r"|expedited|moved|released|re-?routed|rescheduled|booked|issued|sent|shipped|placed|removed|added|reduced"
    r"|increased|processed|arranged|reserved|allocated|fixed|resolved|credited|upgraded|waived|overrid(?:den|e))\b"
    r"|\bhas\s+(?:now\s+|just\s+|already\s+)?been\s+"
    r"(refunded|approved|updated|changed|modified|escalated|expedited|re-?routed|rescheduled|processed|credited"
    r"|upgraded|waived|reserved)\b",
    re.IGNORECASE,
)
_ABBREV = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "sept": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_ABBREV_DATE = re.compile(
    r"\b(?:(\d{1,2})(?:st|nd|rd|th)?\s+(" + "|".join(_ABBREV) + r")\.?|(" + "|".join(_ABBREV) + r")\.?\s+(\d{1,2})"
    r"(?:st|nd|rd|th)?)(?:,?\s+(\d{4}))?\b",
    re.IGNORECASE,
)
_SLASH_DATE = re.compile(r"\b(\d{1,4})/(\d{1,2})(?:/(\d{2,4}))?\b")
_ORDINAL_DAY = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)\b", re.IGNORECASE)
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_WEEKDAY = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")\b", re.IGNORECASE)
_RELATIVE = re.compile(
    r"\b(today|tonight|tomorrow|yesterday|(?:this|next|last)\s+(?:week|weekend|month)|end\s+of\s+(?:the\s+)?"
    r"(?:day|week|month))\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\w)|(?<![\w.])\d+(?:\.\d+)?(?![\w])")
_SPELLED = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "twenty": 20,
    "fifty": 50,
    "hundred": 100,
}
_SPELLED_QTY = re.compile(
    r"\b(" + "|".join(_SPELLED) + r")\s+(?:more\s+)?(?:units?|pcs|pieces|items?|days?|cases?|boxes|pallets|weeks?)\b",
    re.IGNORECASE,
)


def _is_line_ref(token: str) -> bool:
    return token[:4].lower() == "line"


def ids_in(text: str) -> set[str]:
    """Order, SKU, wave, decision, PO, customer ids named in ``text`` (upper-cased)."""
    return {m.group(0).upper() for m in _IDS.finditer(text) if not _is_line_ref(m.group(0))}


def _strip_dates(text: str) -> str:
    for pattern in (_ISO_DATE, _MONTH_DATE, _ABBREV_DATE, _TIME, _SLASH_DATE, _ORDINAL_DAY):
        text = pattern.sub(" ", text)
    return text


def _numbers(text: str) -> list[tuple[str, float]]:
    """Numbers stated in ``text`` outside ids, line references, dates and times."""
    plain = _strip_dates(_IDS.sub(" ", text))
    found = [(m.group(0), float(m.group(0).replace(",", ""))) for m in _NUMBER.finditer(plain)]
    found += [(m.group(0), float(_SPELLED[m.group(1).lower()])) for m in _SPELLED_QTY.finditer(plain)]
    return found


def _asserted_statuses(text: str) -> set[str]:
    """Statuses ``text`` states outside a negated or conditional clause."""
    plain = _TIME.sub(" ", _ISO_DATE.sub(" ", _IDS.sub(" ", text)))
    out: set[str] = set()
    for regex, vocab in ((_STATUS_RE, _STATUS_WORDS), (_MORE_STATUS_RE, _MORE_STATUSES)):
        for m in regex.finditer(plain):
            if not _NEGATION.search(plain[: m.start()]):
                out.add(vocab[m.group(1).lower()])
    return out


def support(facts: Facts, citations: Iterable[Citation] = (), template: str = "") -> Facts:
    """What a draft may state: the facts, the cited ids, and what the template answer states."""
    plain = _IDS.sub(" ", template)
    extra = Facts(
        ids={i for c in citations for i in (c.id.upper(), c.id.split("#")[0].upper())} | ids_in(template),
        statuses=_asserted_statuses(template),
    )
    for m in _ISO_DATE.finditer(plain):
        extra.dates.add(m.group(0))
    for m in _MONTH_DATE.finditer(plain):
        if m.group(5):
            month = _MONTHS[(m.group(2) or m.group(3)).lower()]
            try:
                extra.add_date(date(int(m.group(5)), month, int(m.group(1) or m.group(4))))
            except ValueError:
                continue
    for m in _QTY.finditer(plain):
        extra.add_qty(float(m.group(1) or m.group(2)))
    for _, value in _numbers(template):
        extra.add_qty(value)
    return facts.merge(extra)


def _dates(facts: Facts) -> list[date]:
    return [d for d in (as_date(x) for x in facts.dates) if d is not None]


def _date_ok(dates: list[date], day: int, month: int | None, year: int | None) -> bool:
    return any(d.day == day and (month is None or d.month == month) and (year is None or d.year == year) for d in dates)


def _year(raw: str | None) -> int | None:
    if not raw:
        return None
    value = int(raw)
    return value + 2000 if value < 100 else value


def unsupported_claims(draft: str, facts: Facts, citations: Iterable[Citation] = (), template: str = "") -> list[str]:
    """Every status, date, time, quantity, id or action ``draft`` states that the facts behind
    the answer (``facts``, the ``citations``, the ``template`` answer built from them) do not
    support; empty when the draft may replace the template."""
    ok = support(facts, citations, template)
    problems = check_answer(draft, ok)
    known_ids = ok.ids
    for token in sorted(ids_in(draft) - known_ids):
        problems.append(f"unknown id {token}")
    dates = _dates(ok)
    text = _IDS.sub(" ", draft)
    # Times of day: only those the template states.
    template_times = {m.group(0) for m in _TIME.finditer(template)}
    for m in _TIME.finditer(text):
        if m.group(0) not in template_times:
            problems.append(f"unsupported time {m.group(0)}")
    rest = _TIME.sub(" ", _MONTH_DATE.sub(" ", _ISO_DATE.sub(" ", text)))
    for m in _ABBREV_DATE.finditer(rest):
        day = int(m.group(1) or m.group(4))
        if not _date_ok(dates, day, _ABBREV[(m.group(2) or m.group(3)).lower()], _year(m.group(5))):
            problems.append(f"unsupported date {m.group(0)}")
    rest = _ABBREV_DATE.sub(" ", rest)
    for m in _SLASH_DATE.finditer(rest):
        a, b, y = int(m.group(1)), int(m.group(2)), _year(m.group(3))
        if a > 31:  # 2026/03/14
            good = _date_ok(dates, int(m.group(3) or 0), b, a)
        else:
            good = _date_ok(dates, a, b, y) or _date_ok(dates, b, a, y)
        if not good:
            problems.append(f"unsupported date {m.group(0)}")
    rest = _SLASH_DATE.sub(" ", rest)
    for m in _ORDINAL_DAY.finditer(rest):
        if not _date_ok(dates, int(m.group(1)), None, None):
            problems.append(f"unsupported date {m.group(0)}")
    for m in _WEEKDAY.finditer(rest):
        if not any(d.weekday() == _WEEKDAYS.index(m.group(1).lower()) for d in dates):
            problems.append(f"unsupported date {m.group(0)}")
    for m in _RELATIVE.finditer(rest):
        problems.append(f"unsupported date {m.group(0)!r}")
    # Numbers not already judged as a quantity by ``check_answer``.
    judged = _QTY.sub(" ", _strip_dates(text))
    for raw, value in _numbers(judged):
        if round(value, 3) not in ok.quantities:
            problems.append(f"unsupported number {raw!r}")
    problems += unsupported_statuses(rest, _MORE_STATUS_RE, _MORE_STATUSES, ok.statuses)
    for m in _ACTED.finditer(draft):
        problems.append(f"unsupported action {m.group(0)!r}")
    return problems
