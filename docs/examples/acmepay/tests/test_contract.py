"""Acme Pay under Ledgerlink's provider contract kit, and loaded through its entry point as the agent loads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from acmepay_ledgerlink import AcmePayProvider
from acmepay_ledgerlink.fake import AcmeFake

from agent.core.errors import ConfigurationError, ProviderError, TransientError
from agent.core.model import MerchantAccount
from connectors import plugins
from connectors.providers.contract import EventKind, Provider
from connectors.testkit.provider import ProviderContract, drain, make_spec


class TestAcmePayContract(ProviderContract):
    """The kit reads what Acme cannot do from AcmePayProvider.capabilities: nothing to declare here."""


def test_the_entry_point_loads_and_passes_the_load_time_checks(installed: Path) -> None:
    # plugins.load takes ``type[T]``, which mypy refuses an abstract class for (type-abstract), yet the contract to
    # check against is abstract by nature.
    assert plugins.load(plugins.PROVIDER_GROUP, "acmepay", Provider) is AcmePayProvider  # type: ignore[type-abstract]


def test_an_unknown_option_is_refused_naming_the_ones_it_has(acme_fake: AcmeFake) -> None:
    account = MerchantAccount(name="acme", provider="acmepay", options={"retrun_url": "https://firm.example"})
    with pytest.raises(ConfigurationError, match=r"accounts\.acme\.options\.retrun_url: is not an option of the "
                                                 r"acmepay provider \(it has return_url, timeout\)"):
        AcmePayProvider(account, "key")


def test_a_wrong_api_key_is_refused_for_good(account: MerchantAccount) -> None:
    acme = AcmePayProvider(account, "not-the-key")
    try:
        with pytest.raises(ProviderError, match="401") as refused:
            acme.get_link("pl_0")
    finally:
        acme.close()
    assert not isinstance(refused.value, TransientError)


def test_created_events_are_not_followed_and_still_move_the_cursor(provider: AcmePayProvider,
                                                                    payer: AcmeFake) -> None:
    provider.create_link(make_spec(provider))
    events, cursor = drain(provider, None)
    assert events == [] and cursor == payer.events[-1]["id"]
    assert provider.event(payer.events[-1]["id"]) is None


def test_an_undocumented_event_type_is_unreadable_and_the_feed_reads_on(provider: AcmePayProvider,
                                                                        payer: AcmeFake) -> None:
    link = provider.create_link(make_spec(provider))
    payer._emit("payment.disputed", {"id": "py_x"})
    payment_ref = payer.pay(link)
    events, _ = drain(provider, None)
    assert [e.kind for e in events] == [EventKind.UNREADABLE, EventKind.PAYMENT_PENDING, EventKind.PAYMENT_CONFIRMED]
    assert events[0].error and "payment.disputed" in events[0].error
    assert events[-1].payment_ref == payment_ref
