"""Test-wide guards: no network beyond loopback, no telemetry, no real LLM provider.

Any attempt to connect to a non-loopback address (an LLM provider, a telemetry endpoint,
anything on the internet) raises ``NetworkBlocked`` and fails the test that made it.

Servers: ``REDIS_URL`` and ``DATABASE_URL`` are taken out of the environment here; the tests use
those servers when they are set, else embedded ones (``tests/services.py``), stopped at the end of
the session. SIGTERM ends the session like Ctrl+C, so they are stopped then too.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests import services

services.take_env()  # before anything reads Settings from the environment

for _var, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "OTEL_SDK_DISABLED": "true",
    "LITELLM_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ[_var] = _value
for _var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CROSSDOCK_LLM_MODEL", "CROSSDOCK_API_KEYS"):
    os.environ.pop(_var, None)


class NetworkBlocked(RuntimeError):
    """A test tried to reach the network; only loopback and unix sockets are allowed."""


def _allowed(address: Any) -> bool:
    if isinstance(address, str | bytes):  # unix socket path
        return True
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost means a DNS lookup: not allowed


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _allowed(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _allowed(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host not in (None, "localhost", b"localhost") and not _allowed((host, 0)):
        raise NetworkBlocked(f"test tried to resolve {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


_session: pytest.Session | None = None


def _interrupt(signum: int, frame: Any) -> None:
    if _session is not None:  # should the interrupt be swallowed on its way up: stop after this test
        _session.shouldstop = f"signal {signum}"
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "network_guard: the network guard itself is under test")
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)  # pytest then tears down and stops the servers


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session
    _session = session


@pytest.fixture(scope="session", autouse=True)
def _stop_servers_at_session_end() -> Iterator[None]:
    """Set up first, torn down last: the embedded servers stop after every fixture that used them."""
    yield
    services.stop()


@pytest.fixture(autouse=True)
def _logging_stays_in_its_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A command run in-process (``CliRunner``) configures logging as the CLI does; here it does so
    without caching loggers, and the previous set-up comes back after the test, so a later test's
    ``capture_logs`` still sees every line and no handler writes to a closed stream."""
    import logging

    import structlog

    from runtime import logs

    real = logs.configure_logging

    def uncached(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(logs, "configure_logging", uncached)
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
