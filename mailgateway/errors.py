"""The project's exception tree; third-party faults are translated into it at the boundary.

MailgatewayError
├── ConfigError            invalid configuration (names file and key; exit 2)
├── TemporaryError         retry later: SMTP 4xx, queue row stays queued/deferred
│   └── StoreUnavailable   the database could not be reached or written
└── PermanentError         retrying will not help: SMTP 5xx, queue row held
    └── RefusedError       a command refused by policy (exit 1)
"""

from __future__ import annotations


class MailgatewayError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(MailgatewayError):
    """The configuration is invalid; `str()` is one line naming the file and the key."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


class TemporaryError(MailgatewayError):
    """A fault that may go away: answer 4xx, keep the work queued."""


class StoreUnavailable(TemporaryError):
    """The database could not be reached or refused the write."""


class PermanentError(MailgatewayError):
    """A fault that retrying will not fix."""


class RefusedError(PermanentError):
    """A command that policy refuses; the message is the one-line reason."""
