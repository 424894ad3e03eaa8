"""structlog set-up: JSON events on stdout (for journald), a console renderer on a terminal."""

from __future__ import annotations

import enum
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

MAX_VALUE = 300
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class LogFormat(enum.StrEnum):
    """How events are written: JSON lines, aligned text for people, or by the stream's kind."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


# What configure() was last given: worker processes started by serve log the same way.
configured_level = "info"
configured_format = LogFormat.AUTO


def truncate_values(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Cut long string values so one hostile header cannot flood the log."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_VALUE:
            event[key] = value[:MAX_VALUE] + f"...[{len(value) - MAX_VALUE} more]"
    return event


def escape_controls(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Show control characters in string values as escapes, so no value can drive a terminal."""
    for key, value in event.items():
        if isinstance(value, str) and CONTROL.search(value):
            event[key] = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return event


def wants_console(log_format: LogFormat, stream: TextIO) -> bool:
    """Whether events are rendered for people: asked for, or auto on a terminal."""
    if log_format is LogFormat.AUTO:
        return stream.isatty()
    return log_format is LogFormat.CONSOLE


def renderers(console: bool, stream: TextIO) -> list[Processor]:
    """The last processors: aligned, escaped text for a terminal, or JSON lines (control
    characters escaped by the encoder)."""
    if console:
        return [escape_controls, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    json_lines = structlog.processors.JSONRenderer(ensure_ascii=True)
    return [structlog.processors.format_exc_info, json_lines]


def configure(
    level: str = "info", stream: TextIO | None = None, log_format: LogFormat = LogFormat.AUTO
) -> None:
    """Log structured events to stdout (or the given stream), one event per line."""
    global configured_level, configured_format
    configured_level, configured_format = level, log_format
    stream = stream or sys.stdout
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            truncate_values,
            *renderers(wants_console(log_format, stream), stream),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per event (message and newline together): serve and its worker processes
        # share stdout, and with PYTHONUNBUFFERED a separate newline could land between the
        # other process's line.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """A logger writing to whatever sys.stderr is at the time of the event."""
    return structlog.PrintLogger(sys.stderr)


def configure_for_commands(level: str = "warning") -> None:
    """Commands other than `serve` log to stderr: their stdout is their output (a token, a
    JSON document)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            truncate_values,
            *renderers(wants_console(LogFormat.AUTO, sys.stderr), sys.stderr),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=stderr_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger whose events carry the module name."""
    logger: FilteringBoundLogger = structlog.get_logger(module=name)
    return logger
