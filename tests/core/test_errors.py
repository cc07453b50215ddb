"""One error tree (issue 29 item 4): each class in agent.core.errors carries its exit code and HTTP status, and
the CLI and the API both answer from those attributes, so the same mistake is exit 2 and a 4xx everywhere."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agent.api.errors import install_error_handlers
from agent.cli.main import _explain
from agent.core import errors
from agent.core.errors import (
    ConfigurationError,
    DataError,
    LedgerlinkError,
    NotFound,
    NotSetUp,
    ProviderError,
    RuleError,
    TransientError,
)
from agent.state.lock import AlreadyRunning, Fenced
from connectors.providers import contract

TREE = [  # class, exit code, HTTP status, how the CLI's line starts
    (LedgerlinkError, 1, 500, "error: "), (ConfigurationError, 2, 500, "configuration error: "),
    (NotSetUp, 2, 409, "configuration error: "), (TransientError, 1, 503, "error: "), (DataError, 1, 422, "error: "),
    (NotFound, 2, 422, "error: "), (RuleError, 2, 422, "error: "), (ProviderError, 1, 502, "error: "),
    (contract.LinkNotFound, 1, 502, "error: "), (AlreadyRunning, 2, 500, "error: "), (Fenced, 3, 500, "error: "),
]


@pytest.mark.parametrize(("cls", "code", "status", "prefix"), TREE, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_class_says_its_exit_code_and_status_and_both_interfaces_use_them(
        cls: type[LedgerlinkError], code: int, status: int, prefix: str) -> None:
    assert (cls.exit_code, cls.http_status) == (code, status)
    assert _explain(cls("what went wrong")) == (code, f"{prefix}what went wrong")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise cls("what went wrong")

    answer = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert (answer.status_code, answer.json()) == (status, {"error": "what went wrong"})
    if cls is TransientError:
        assert answer.headers["Retry-After"] == "5"


def test_the_tree_is_one_module_and_the_provider_contract_re_exports_its_refusal() -> None:
    assert contract.ProviderError is errors.ProviderError
    assert set(errors.__all__) == {c.__name__ for c, *_ in TREE if c.__module__ == "agent.core.errors"}
