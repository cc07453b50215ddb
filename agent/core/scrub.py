"""Secret scrubbing: every secret value handed out in this process is remembered, and removed from any text.

It lives in the core so that every layer (connector errors, logs, API answers) can scrub without importing the
keyring code that reveals the values.
"""

from __future__ import annotations

import logging
import threading

_revealed: set[str] = set()
_lock = threading.Lock()


def scrub(text: str) -> str:
    """Replace every secret value this process has handed out with ***."""
    with _lock:
        values = sorted(_revealed, key=len, reverse=True)
    for value in values:
        text = text.replace(value, "***")
    return text


class ScrubFilter(logging.Filter):
    """Logging filter that removes secret values from messages and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


def reveal(value: str) -> None:
    """Remember a secret value so that ``scrub`` removes it from logs and messages."""
    with _lock:
        _revealed.add(value)

