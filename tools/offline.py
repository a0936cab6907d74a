"""Switches that keep CrewAI and litellm from reaching out; applied before either is imported."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

OFFLINE_ENV: dict[str, str] = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
}


def apply_offline_env() -> None:
    """Force telemetry, tracing, version checks and the price-list download off (idempotent)."""
    for name, value in OFFLINE_ENV.items():
        os.environ[name] = value


@contextmanager
def crewai_import() -> Iterator[None]:
    """Apply the offline switches, then import CrewAI with its import-time warnings silenced
    (e.g. an ``ImportWarning`` from its own package layout, which a strict warnings filter turns
    into an error)."""
    apply_offline_env()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
