"""Plugins are verified when loaded (issue 29 item 2): a class left abstract, or a method that cannot be called as
the contract calls it, is refused at start naming the plugin and the method, not at its first use inside a job."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from importlib import resources
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent.core.errors import ConfigurationError
from agent.core.model import MerchantAccount
from agent.home.settings import load_settings
from agent.runtime import check_plugins, connector_options
from connectors import plugins
from connectors.database.contract import Capabilities as ConnectorCapabilities
from connectors.database.contract import Connector, EntityInfo, Window
from connectors.plugins import CONNECTOR_GROUP, PROVIDER_GROUP, available, contract_problems, load
from connectors.providers.contract import Capabilities as ProviderCapabilities
from connectors.providers.contract import CollectionStatus, LinkStatus, MandateStatus, PaymentMethod, Provider
from connectors.providers.gocardless import GoCardlessProvider
from connectors.providers.sandbox.provider import SandboxOptions, SandboxProvider
from connectors.providers.stripe import StripeOptions, StripeProvider
from mappings.format import json_schema, load_mapping


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


# --- declarations: capabilities and options (issue 29 item 2) -------------------------------------------------


class Lying(Complete):
    """Declares the bulk path and a rehearsal it does not implement."""

    capabilities = ConnectorCapabilities(bulk_read=True, rehearses_writes=True)


class Silent(SandboxProvider):
    """Keeps the Direct Debit and payouts contracts (inherited) but declares neither, and no options model."""

    capabilities = ProviderCapabilities(methods=(PaymentMethod.BANK,), max_expiry=dt.timedelta(days=1))
    Options = dict  # type: ignore[assignment]  # not a PluginOptions: the point


def test_a_connector_declaring_what_it_does_not_implement_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    registered(monkeypatch, Lying)
    with pytest.raises(ConfigurationError) as refused:
        load(CONNECTOR_GROUP, "thirdparty", Connector)
    message = str(refused.value)
    assert "Lying.capabilities declares bulk_read but does not implement Connector.bulk_read" in message
    assert "Lying.capabilities declares rehearses_writes but does not implement Connector.rehearse_write" in message


def test_a_provider_whose_capabilities_hide_what_it_keeps_is_refused() -> None:
    problems = contract_problems(Silent, Provider)
    assert "Silent.capabilities does not declare direct_debit but implements DirectDebitProvider" in problems
    assert "Silent.capabilities does not declare payouts but implements PayoutProvider" in problems
    assert "Silent.Options is not a connectors.plugins.PluginOptions" in problems


def test_a_provider_without_capabilities_is_refused() -> None:
    class Bare(SandboxProvider):  # every method, no declaration
        capabilities = None  # type: ignore[assignment]  # the point

    assert contract_problems(Bare, Provider) == [
        "Bare.capabilities is not a connectors.providers.contract.Capabilities"]


def test_declared_direct_debit_statuses_must_be_the_contracts_and_let_something_be_collected() -> None:
    """Capabilities.mandate_statuses / collection_statuses: non-empty sets of the contract's own values, one a
    mandate can be collected on and confirmed among a collection's; only on a Direct Debit provider."""
    def problems(**statuses: Any) -> list[str]:
        class Declared(SandboxProvider):
            capabilities = ProviderCapabilities(methods=(PaymentMethod.BANK,), max_expiry=dt.timedelta(days=1),
                                                direct_debit=True, payouts=True, **statuses)
        return contract_problems(Declared, Provider)

    assert problems(mandate_statuses=frozenset({MandateStatus.ACTIVE}),
                    collection_statuses=frozenset({CollectionStatus.CONFIRMED})) == []
    assert problems(mandate_statuses=frozenset()) == ["Declared.capabilities.mandate_statuses names no status"]
    assert problems(mandate_statuses=frozenset({MandateStatus.CANCELLED})) == [
        "Declared.capabilities.mandate_statuses names none of active, pending_submission, submitted: nothing could "
        "be collected"]
    assert problems(collection_statuses=frozenset({CollectionStatus.FAILED})) == [
        "Declared.capabilities.collection_statuses names none of confirmed: nothing could be collected"]
    assert problems(collection_statuses=frozenset({MandateStatus.ACTIVE})) == [
        "Declared.capabilities.collection_statuses is not a frozenset of CollectionStatus"]
    assert problems(collection_statuses={CollectionStatus.CONFIRMED}) == [
        "Declared.capabilities.collection_statuses is not a frozenset of CollectionStatus"]


def test_the_engines_and_the_kits_read_one_declaration() -> None:
    """What GoCardless and Stripe cannot do is said once, on their classes."""
    assert GoCardlessProvider.capabilities.stable_url is False
    assert GoCardlessProvider.capabilities.reports_expiry is False
    assert StripeProvider.capabilities.cancelled_status is LinkStatus.EXPIRED
    assert StripeProvider.capabilities.holds_collections is False
    assert StripeProvider.capabilities.mandate_statuses == frozenset({MandateStatus.ACTIVE, MandateStatus.CANCELLED})
    assert SandboxProvider.capabilities.webhooks is False and GoCardlessProvider.capabilities.webhooks is True


def test_a_mistyped_provider_option_is_refused_naming_it_and_what_there_is(home: Path) -> None:
    config = home / "ledgerlink.toml"
    config.write_text(config.read_text().replace("options = { payout_fees", "options = { payout_fee"))
    settings = load_settings(home)
    with pytest.raises(ConfigurationError) as refused:
        check_plugins(settings, load_mapping(settings.mapping_path, settings.trust_accounts))
    assert str(refused.value) == ("accounts.trust.options.payout_fee: is not an option of the sandbox provider "
                                  "(it has payout_fees)")


def test_a_bad_option_value_names_the_key_and_the_reason() -> None:
    account = MerchantAccount(name="trust", options={"payout_fees": "half"})
    with pytest.raises(ConfigurationError, match=r"^accounts\.trust\.options\.payout_fees: Input should be "):
        SandboxProvider.options_of(account)


def test_provider_keys_once_on_the_account_are_read_as_its_options() -> None:
    """A config written before options had their own table keeps working."""
    account = MerchantAccount.model_validate({"name": "web", "provider": "stripe",
                                              "success_url": "https://firm.example/paid"})
    assert account.options == {"success_url": "https://firm.example/paid"}
    assert StripeProvider.options_of(account) == StripeOptions(success_url="https://firm.example/paid")
    old = MerchantAccount.model_validate({"name": "x", "payout_fees": "net", "options": {}})
    assert SandboxProvider.options_of(old) == SandboxOptions(payout_fees="net")


def test_the_mapping_schema_holds_each_connectors_options() -> None:
    schema = json_schema(connector_options())
    validator = jsonschema.Draft202012Validator(schema)
    base = yaml.safe_load(resources.files("mappings").joinpath("demo.yaml").read_text())

    def errors(source: dict[str, object]) -> list[str]:
        return [e.message for e in validator.iter_errors({**base, "source": source})]
    assert errors({"connector": "odbc", "connection_string": "DSN=x", "options": {"paging": "top"}}) == []
    assert any("'qoute'" in m for m in errors({"connector": "odbc", "connection_string": "DSN=x",
                                                "options": {"qoute": "`"}}))
    assert errors({"url": "sqlite:///x.db", "options": {"pool_recycle": 60}}) == []  # sqlalchemy by default
    assert any("'paging'" in m for m in errors({"url": "sqlite:///x.db", "options": {"paging": "top"}}))
