"""Error classes shared by every layer.

The CLI maps them to exit codes (2 for configuration, 1 for the rest) and the retry policy decides on the class
alone, so a plugin only has to raise the right one.
"""

from __future__ import annotations


class LedgerlinkError(Exception):
    """Base class: carries a message fit for a firm's IT admin."""


class ConfigurationError(LedgerlinkError):
    """Bad config, mapping or SQL: retrying cannot help; a person must fix something."""


class NotSetUp(ConfigurationError):
    """A feature the firm has not set up yet (email, SMS): the request is fine, an administrator must act first."""


class TransientError(LedgerlinkError):
    """A connection drop, deadlock, lock timeout or rate limit: retrying may help.

    ``retry_after`` (seconds) is honoured by the retry policy when the other side said how long to wait.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DataError(LedgerlinkError):
    """A row or value that cannot be used as it stands (bad amount, unknown matter)."""


class RuleError(LedgerlinkError):
    """A business rule refused the request (no payer email, amount above the balance, ...)."""
