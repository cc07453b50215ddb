"""Plugins are verified when loaded (issue 29 item 2): a class left abstract, or a method that cannot be called as
the contract calls it, is refused at start naming the plugin and the method, not at its first use inside a job."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from agent.core.errors import ConfigurationError
from connectors import plugins
from connectors.database.contract import Connector, EntityInfo, Window
from connectors.plugins import CONNECTOR_GROUP, PROVIDER_GROUP, available, contract_problems, load
from connectors.providers.contract import Provider


class Complete(Connector):
    name = "complete"

    def check(self) -> None: ...
    def discover(self) -> dict[str, EntityInfo]: return {}
    def read_raw(self, entity: str, window: Window, limit: int, *, hint: str | None = None) -> list[tuple[Any, ...]]:
        return []  # an extra keyword with a default is allowed
    def keys(self, entity: str, batch_size: int) -> Iterator[list[str]]: yield []
    def posting_exists(self, reference: str, section: str | None = None) -> bool: return False
    def write_posting(self, params: Mapping[str, Any]) -> bool: return True


class Abstract(Connector):  # forgot write_posting and keys
    name = "abstract"

    def check(self) -> None: ...
    def discover(self) -> dict[str, EntityInfo]: return {}
    def read_raw(self, entity: str, window: Window, limit: int) -> list[tuple[Any, ...]]: return []
    def posting_exists(self, reference: str, section: str | None = None) -> bool: return False


class WrongSignature(Complete):  # each wrong signature (type: ignore[override]) is the point
    def read_raw(self, entity: str, limit: int) -> list[tuple[Any, ...]]:  # type: ignore[override]
        return []

    def posting_exists(self, reference: str, section: str) -> bool:  # type: ignore[override]
        return False

    def write_posting(self, params: Mapping[str, Any], dry_run: bool) -> bool:  # type: ignore[override]
        return True


def registered(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    point = EntryPoint(name="thirdparty", value=f"{__name__}:{cls.__name__}", group=CONNECTOR_GROUP)
    monkeypatch.setattr(plugins, "available", lambda group: {"thirdparty": point})


def test_every_shipped_plugin_keeps_its_contract() -> None:
    for group, contract in ((CONNECTOR_GROUP, Connector), (PROVIDER_GROUP, Provider)):
        names = sorted(available(group))
        assert names, group
        for name in names:
            assert contract_problems(load(group, name, contract), contract) == [], name


def test_a_complete_plugin_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    registered(monkeypatch, Complete)
    assert load(CONNECTOR_GROUP, "thirdparty", Connector) is Complete


def test_an_abstract_plugin_is_refused_naming_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    registered(monkeypatch, Abstract)
    with pytest.raises(ConfigurationError) as refused:
        load(CONNECTOR_GROUP, "thirdparty", Connector)
    message = str(refused.value)
    assert message.startswith("plugin 'thirdparty' in ledgerlink.connectors (") and ":Abstract)" in message
    assert "Abstract.keys is not implemented" in message and "Abstract.write_posting is not implemented" in message


def test_a_method_the_contract_cannot_call_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    registered(monkeypatch, WrongSignature)
    with pytest.raises(ConfigurationError) as refused:
        load(CONNECTOR_GROUP, "thirdparty", Connector)
    message = str(refused.value)
    assert "WrongSignature.read_raw(self, entity, limit) has no parameter 'window'" in message
    assert "(the contract: read_raw(self, entity, window, limit))" in message
    assert "WrongSignature.posting_exists" in message and "requires 'section'" in message
    assert "WrongSignature.write_posting" in message and "requires 'dry_run'" in message


def test_a_class_that_is_not_a_connector_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "available", lambda group: {"thirdparty": EntryPoint(
        name="thirdparty", value="builtins:dict", group=CONNECTOR_GROUP)})
    with pytest.raises(ConfigurationError, match="is not a Connector"):
        load(CONNECTOR_GROUP, "thirdparty", Connector)
