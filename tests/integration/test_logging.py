"""Logs carry the work's ids as context, whichever module logs, and importing sets up nothing."""

from __future__ import annotations

import subprocess
import sys

import structlog
from structlog.testing import capture_logs

from tests.integration.conftest import Stack, order_event


def test_every_line_logged_during_a_job_carries_its_job_and_event_ids(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "autonomous"})
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        stack.publish(order_event("SO-60", [("SKU-100", 1)]))
        stack.drain()
    # The executor names none of these ids itself: they come from the context the work bound.
    applied = [e for e in logs if e["event"] == "action.applied"]
    assert applied and all(e.get("job_id") and e.get("event_id") == "evt-SO-60" for e in applied)
    assert all(e.get("decision_id", "").startswith("dec-") for e in applied)
    done = [e for e in logs if e["event"] == "job.done"]
    assert done and "event_id" not in done[0]  # the context ends with the work


def test_importing_the_modules_configures_no_logger() -> None:
    code = (
        "import logging, structlog\n"
        "before = (logging.getLogger().level, list(logging.getLogger().handlers), structlog.is_configured())\n"
        "import api.main, runtime.bootstrap, runtime.pipeline, crossdock.cli, knowledge, crews.supervisor\n"
        "after = (logging.getLogger().level, list(logging.getLogger().handlers), structlog.is_configured())\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
