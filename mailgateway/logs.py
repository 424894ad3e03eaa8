"""structlog set-up: one JSON event per line on stderr, values escaped and truncated."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger

MAX_VALUE = 300


def truncate_values(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Cut long string values so one hostile header cannot flood the log."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_VALUE:
            event[key] = value[:MAX_VALUE] + f"...[{len(value) - MAX_VALUE} more]"
    return event


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Log structured events as JSON lines (control characters escaped by the JSON encoder)."""
    logging.basicConfig(stream=stream or sys.stderr, level=logging.WARNING, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            truncate_values,
            structlog.processors.JSONRenderer(ensure_ascii=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger whose events carry the module name."""
    logger: FilteringBoundLogger = structlog.get_logger(module=name)
    return logger
