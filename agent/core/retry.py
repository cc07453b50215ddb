"""The one retry policy: only TransientError is retried, with jittered exponential backoff capped at 60 s,
honouring a server's Retry-After, and a bounded number of attempts. Everything else fails at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from agent.core.errors import TransientError

log = logging.getLogger("ledgerlink.retry")
T = TypeVar("T")

MAX_WAIT = 60.0


class _Wait:
    def __init__(self, initial: float, cap: float) -> None:
        self.backoff = wait_random_exponential(multiplier=initial, max=cap)
        self.cap = cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.cap)
        return self.backoff(state)


def _log(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("transient error (attempt %d), retrying in %.1fs: %s",
                state.attempt_number, state.upcoming_sleep, exc)


def retrying(attempts: int = 5, initial: float = 0.5, cap: float = MAX_WAIT) -> Retrying:
    """A tenacity controller; ``retrying()(fn, *args)`` calls fn under the policy and re-raises the last error."""
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=_Wait(initial, cap),
        stop=stop_after_attempt(attempts),
        before_sleep=_log,
        reraise=True,
    )


def call(fn: Callable[..., T], *args: Any, attempts: int = 5, initial: float = 0.5, **kwargs: Any) -> T:
    return retrying(attempts, initial)(fn, *args, **kwargs)
