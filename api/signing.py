"""HMAC request signatures for event intake (``X-Crossdock-Signature: t=<unix>,v1=<hex>``)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable


class SignatureError(Exception):
    """The request's signature is missing, malformed, wrong or stale."""


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value a gateway sends: HMAC-SHA256 of ``"<t>.<raw body>"``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(header: str | None, body: bytes, secret: str, tolerance_s: int = 300, now: float | None = None) -> None:
    if not header:
        raise SignatureError("missing X-Crossdock-Signature header")
    parts = dict(p.strip().partition("=")[::2] for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise SignatureError("malformed X-Crossdock-Signature: expected t=<unix seconds>,v1=<hex>") from None
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        raise SignatureError(f"stale signature: timestamp is more than {tolerance_s}s from now")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not given.isascii() or not hmac.compare_digest(expected, given):
        raise SignatureError("signature does not match the body")


def canonical_source(source: str) -> str:
    """What a careless comparison would make of a source: trimmed, without a trailing slash, case-folded."""
    return source.strip().rstrip("/").casefold()


def lookalike(source: str, configured: Iterable[str]) -> str | None:
    """The configured source that ``source`` is not, but differs from only by case, surrounding
    whitespace or a trailing slash (``"OMS/signed"``, ``"oms/signed "``, ``"oms/signed/"`` for
    ``"oms/signed"``); None when there is none. Such a source is refused, never read as the other."""
    wanted = canonical_source(source)
    for name in configured:
        if name != source and canonical_source(name) == wanted:
            return name
    return None
