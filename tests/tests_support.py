"""Helpers shared by test modules (conftest fixtures cannot be imported)."""

from __future__ import annotations

import pytest

from agent.core.model import Actor
from connectors.testkit.databases import in_ci


def require(reason: str | None) -> None:
    """Skip with the reason on a laptop; fail under CI=true, where a missing server is never a silent skip."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and a required server or driver is missing: {reason}", pytrace=False)
    pytest.skip(reason)


# The person the engine tests act as: the audit trail records every change under an actor.
STAFF = Actor("user", "test-clerk")
