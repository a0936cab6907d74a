"""The test run itself refuses the network: no LLM provider, no telemetry, nothing but loopback."""

from __future__ import annotations

import os
import socket

import httpx
import pytest

from tests.conftest import NetworkBlocked


def test_connecting_to_a_public_address_fails_the_test() -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("1.1.1.1", 443), timeout=1)


def test_resolving_a_provider_host_name_fails_the_test() -> None:
    with pytest.raises(NetworkBlocked):
        httpx.get("https://api.openai.com/v1/models", timeout=1)


def test_loopback_is_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()


def test_telemetry_is_off_and_no_provider_key_is_set() -> None:
    assert os.environ["CREWAI_DISABLE_TELEMETRY"] == "true"
    assert os.environ["OTEL_SDK_DISABLED"] == "true"
    assert "OPENAI_API_KEY" not in os.environ and "CROSSDOCK_LLM_MODEL" not in os.environ
