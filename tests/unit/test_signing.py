"""HMAC signatures on event intake: ``X-Crossdock-Signature: t=<unix>,v1=<hex>``."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from api.signing import SignatureError, sign, verify

BODY = b'{"specversion":"1.0","id":"evt-1"}'
SECRET = "s3cret"
T = 1_774_080_000


def test_sign_produces_the_documented_header_format() -> None:
    header = sign(BODY, SECRET, timestamp=T)

    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)


def test_a_fresh_correct_signature_verifies() -> None:
    verify(sign(BODY, SECRET, timestamp=T), BODY, SECRET, now=T + 10)


def test_a_signature_without_a_timestamp_uses_the_current_time() -> None:
    verify(sign(BODY, SECRET), BODY, SECRET)


def test_whitespace_after_the_comma_is_accepted() -> None:
    header = sign(BODY, SECRET, timestamp=T).replace(",", ", ")
    verify(header, BODY, SECRET, now=T)


@pytest.mark.parametrize("age", [301, -301, 10_000])
def test_a_signature_more_than_300_seconds_from_now_is_stale(age: int) -> None:
    with pytest.raises(SignatureError, match="stale signature"):
        verify(sign(BODY, SECRET, timestamp=T), BODY, SECRET, now=T + age)


@pytest.mark.parametrize("age", [300, -300])
def test_a_signature_exactly_300_seconds_old_is_still_accepted(age: int) -> None:
    verify(sign(BODY, SECRET, timestamp=T), BODY, SECRET, now=T + age)


def test_a_signature_made_with_another_secret_is_wrong() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(sign(BODY, "other", timestamp=T), BODY, SECRET, now=T)


def test_a_tampered_body_fails_verification() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(sign(BODY, SECRET, timestamp=T), BODY + b" ", SECRET, now=T)


def test_a_signature_replayed_with_another_timestamp_fails() -> None:
    mac = sign(BODY, SECRET, timestamp=T).split("v1=")[1]
    with pytest.raises(SignatureError, match="does not match"):
        verify(f"t={T + 1},v1={mac}", BODY, SECRET, now=T)


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_signature_is_rejected(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing X-Crossdock-Signature"):
        verify(header, BODY, SECRET, now=T)


@pytest.mark.parametrize(
    "header",
    ["garbage", f"t={T}", "v1=abcd", "t=yesterday,v1=abcd", f"ts={T},sig=abcd"],
)
def test_a_malformed_signature_is_rejected_with_the_expected_format(header: str) -> None:
    with pytest.raises(SignatureError, match=r"malformed X-Crossdock-Signature: expected t=<unix seconds>,v1=<hex>"):
        verify(header, BODY, SECRET, now=T)


def test_a_non_ascii_signature_value_is_a_signature_error() -> None:
    with pytest.raises(SignatureError):
        verify(f"t={T},v1=\u00e9\u00e9", BODY, SECRET, now=T)
