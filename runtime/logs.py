"""Logging set-up: one event per line, structlog and stdlib alike, with the job, event and decision
ids of the work in hand as context.

Called once at start-up (the command line); importing any module configures nothing. Context is
bound with ``structlog.contextvars`` where the work starts (the worker binds ``job_id``, the
pipeline ``event_id``, the decision service ``decision_id``), so every line logged during that
work carries them, whichever module logs it. Stdlib loggers (uvicorn, httpx, CrewAI) go through the
same processors, so their lines carry the context too and come out in the same format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(level: int, json_lines: bool = False) -> None:
    """Route structlog and stdlib logging to stderr through one chain of processors."""
    renderer: Any = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))  # one line per call to the systems is noise
