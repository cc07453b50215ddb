"""The project's one error tree: every layer raises these, and each class says what it means to a person.

``exit_code`` is what the CLI exits with (2: a mistake a person can fix; 1: anything else) and ``http_status``
what the API answers; both interfaces read them from here, and the retry policy decides on the class alone, so a
plugin only has to raise the right one.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ConfigurationError", "DataError", "LedgerlinkError", "NotFound", "NotSetUp", "ProviderError",
           "RuleError", "TransientError"]


class LedgerlinkError(Exception):
    """Base class: carries a message fit for a firm's IT admin."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    label: ClassVar[str] = "error"  # how the CLI starts its one line


class ConfigurationError(LedgerlinkError):
    """Bad config, mapping or SQL: retrying cannot help; a person must fix something."""

    exit_code = 2
    label = "configuration error"  # the API answers 500: the agent's set-up, not the request, is wrong


class NotSetUp(ConfigurationError):
    """A feature the firm has not set up yet (email, SMS): the request is fine, an administrator must act first."""

    http_status = 409


class TransientError(LedgerlinkError):
    """A connection drop, deadlock, lock timeout or rate limit: retrying may help.

    ``retry_after`` (seconds) is honoured by the retry policy when the other side said how long to wait.
    """

    http_status = 503

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DataError(LedgerlinkError):
    """A row or value that cannot be used as it stands (bad amount, unknown matter)."""

    http_status = 422


class NotFound(DataError):
    """What a person named does not exist (an unknown matter, link or posting): their mistake, to fix (exit 2)."""

    exit_code = 2


class RuleError(LedgerlinkError):
    """A business rule refused the request (no payer email, amount above the balance, ...)."""

    exit_code = 2
    http_status = 422


class ProviderError(LedgerlinkError):
    """The provider refused the request for good (validation error, unknown link): do not retry."""

    http_status = 502
