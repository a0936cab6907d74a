"""Schemathesis against the live API (real HTTP, Redis, store and twin on loopback), bounded.

Each operation of the OpenAPI document gets up to ``EXAMPLES`` generated requests, sent with the
admin key (admin may call everything), within ``BUDGET_S`` seconds in all. Every answer must be
one the document declares: no server error, a declared status code, content type and headers,
and a body that fits the declared schema. Generating "valid" data that the server still refuses
(a line number used twice, an order the OMS does not know) is not a failure here: the declared
4xx answers say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.integration.conftest import Stack

EXAMPLES = 25
BUDGET_S = 60.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _fuzz(operation: Any, base_url: str, headers: dict[str, str], seen: dict[str, int]) -> Callable[[], None]:
    label = operation.label

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure here is reproducible
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure as it is
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        seen[label] = seen.get(label, 0) + 1
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS)

    return run


@pytest.mark.timeout(300)
def test_the_live_api_answers_every_generated_request_as_its_openapi_declares(stack: Stack) -> None:
    # Rate limits off: the fuzzer is one key sending as fast as it can.
    stack.container.settings.rate_limit_events_per_s = 0
    stack.container.settings.rate_limit_chat_per_min = 0
    schema = schemathesis.openapi.from_url(f"{stack.api.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid OpenAPI
        operations.append(result.ok())
    assert len(operations) >= 15
    headers = stack.headers("admin")
    seen: dict[str, int] = {}
    failures: dict[str, str] = {}
    started = time.monotonic()
    for operation in operations:
        if time.monotonic() - started > BUDGET_S:
            break
        try:
            _fuzz(operation, stack.api.url, headers, seen)()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a BaseExceptionGroup
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    elapsed = time.monotonic() - started
    total = sum(seen.values())
    print(f"\nschemathesis: {total} examples over {len(seen)} operations in {elapsed:.1f} s, {len(failures)} failures")
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert len(seen) == len(operations), f"budget ran out after {len(seen)} of {len(operations)} operations"
    assert elapsed < BUDGET_S + 30
